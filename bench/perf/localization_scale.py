"""Scale of the evaluation path on masks: store rows, re-score a run, memory and disk per row.

Writes ``--masks`` tampered images' predictions at ``--side`` × ``--side`` into a run directory
through the same code as ``run`` and ``score FILE`` (:func:`~bench.evaluation.store.prediction_row`
→ :class:`~bench.evaluation.store.PredictionStore`), then scores it as ``sida-bench score RUN_DIR``
does (:func:`~bench.evaluation.scorer.score_run`; metrics ``localization`` + ``sida_legacy``,
bootstrap ``--bootstrap`` resamples). Each phase runs in its own process, so its peak RSS is its own.
A second run of ``--detection-rows`` detection-only rows measures re-scoring speed for detection.

Predicted masks are model-like: 256 × 256 logits (background about -8, a tampered ellipse about
+6, noise σ = 1.5) bilinearly upsampled and passed through a sigmoid, as a SAM-style decoder's
output; ground truths are the ellipses at full resolution. Prints masks/s, rows/s, peak RSS and
bytes per row. Targets (issue 12): 10,000 masks at 1024² scored with peak RSS < 1 GB and >= 50
masks/s on 2 cores; <= 200 KB per 1024² row; >= 5,000 detection rows/s. Usage::

    python -m bench.perf.localization_scale --masks 10000 --side 1024 --threads 2
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.evaluation.run_record import RunRecord
from bench.evaluation.store import PREDICTIONS_DIR, PredictionStore, RunIdentity, prediction_row

LOW_RES = 256


def _protocol(metrics: list[dict[str, Any]], bootstrap: int, store_masks: str) -> dict[str, Any]:
    return {"version": 1, "name": "perf_scale", "label_space": "ternary", "seed": 0,
            "datasets": [{"name": "perf_synthetic", "split": "test"}], "perturbations": [{"name": "none"}],
            "metrics": metrics, "bootstrap": {"n": bootstrap, "seed": 0}, "store_masks": store_masks}


def model_like_mask(rng: np.random.Generator, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(float32 probabilities, bool ground truth), both ``side`` × ``side``."""
    import torch

    cy, cx, ry, rx = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.08, 0.25), rng.uniform(0.08, 0.25)

    def ellipse(n: int) -> np.ndarray:
        yy, xx = (np.mgrid[:n, :n] + 0.5) / n
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1.0

    logits = np.where(ellipse(LOW_RES), 6.0, -8.0) + rng.normal(0.0, 1.5, (LOW_RES, LOW_RES))
    up = torch.nn.functional.interpolate(torch.from_numpy(logits[None, None].astype(np.float32)), size=(side, side),
                                         mode="bilinear", align_corners=False)
    return torch.sigmoid(up)[0, 0].numpy(), ellipse(side)


def write_phase(run_dir: str, n: int, side: int, masks: bool, store_masks: str, bootstrap: int,
                queue: Any) -> None:
    """Write ``n`` rows (mask rows when ``masks``) and a complete run record; report timings."""
    rng = np.random.default_rng(0)
    run = RunIdentity("perf:synthetic", None, "perf", 0)
    out = Path(run_dir)
    store = PredictionStore(out / PREDICTIONS_DIR, flush_every=256)
    generate_s = write_s = 0.0
    for i in range(n):
        t0 = time.perf_counter()
        label = 2 if masks else int(rng.integers(0, 3))
        pred, gt = model_like_mask(rng, side) if masks else (None, None)
        probs = rng.dirichlet(np.ones(3))
        t1 = time.perf_counter()
        store.add(prediction_row(run, dataset="perf_synthetic", split="test", sample_id=f"img{i:07d}",
                                 perturbation="none", params_json="{}", label=label, probs=probs,
                                 probs_space="ternary", size=(side, side) if masks else (1, 1), pred_mask=pred,
                                 gt_mask=gt, meta={}, error=None, text=None, store_masks=store_masks))
        t2 = time.perf_counter()
        generate_s, write_s = generate_s + t1 - t0, write_s + t2 - t1
    t0 = time.perf_counter()
    store.flush()
    write_s += time.perf_counter() - t0
    metrics = ([{"name": "localization"}, {"name": "sida_legacy"}] if masks else
               [{"name": "ternary_detection"}])
    RunRecord(protocol=_protocol(metrics, bootstrap, store_masks), protocol_source="perf", model={"name": "perf"},
              run={"seed": 0}, device="cpu", requested={"perf_synthetic/test": n}, complete=True).write(out)
    queue.put({"generate_s": generate_s, "write_s": write_s, "peak_rss": _peak_rss()})


def score_phase(run_dir: str, queue: Any) -> None:
    from bench.evaluation.scorer import score_run

    t0 = time.perf_counter()
    results = score_run(run_dir)
    seconds = time.perf_counter() - t0
    values = {name: {k: v.value for k, v in m.values.items()} for name, m in results.entries[0].metrics.items()}
    queue.put({"score_s": seconds, "peak_rss": _peak_rss(), "values": values})


def _peak_rss() -> int:
    """Peak resident set size of this process, bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _in_process(target: Any, *args: Any, threads: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_with_threads, args=(threads, target, *args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def _with_threads(threads: int, target: Any, *args: Any) -> None:
    import torch

    torch.set_num_threads(threads)
    target(*args)


def _store_bytes(run_dir: Path) -> int:
    return sum(p.stat().st_size for p in PredictionStore(run_dir / PREDICTIONS_DIR).shards())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--masks", type=int, default=500, help="tampered images with masks (default 500)")
    parser.add_argument("--side", type=int, default=1024, help="mask side in pixels (default 1024)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--store-masks", choices=("full", "stats"), default="full")
    parser.add_argument("--detection-rows", type=int, default=100_000, help="detection-only rows (0: skip)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per phase (default 2)")
    parser.add_argument("--keep", type=Path, help="write the runs here instead of a temporary folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        masks_dir, det_dir = root / "masks", root / "detection"
        w = _in_process(write_phase, str(masks_dir), args.masks, args.side, True, args.store_masks, args.bootstrap,
                        threads=args.threads)
        s = _in_process(score_phase, str(masks_dir), threads=args.threads)
        size = _store_bytes(masks_dir)
        print(f"masks={args.masks} side={args.side} store_masks={args.store_masks} bootstrap={args.bootstrap} "
              f"threads={args.threads}")
        print(f"store (encode + write):  {args.masks / w['write_s']:9.1f} masks/s   peak RSS {w['peak_rss'] / 2**20:7.0f} MB"
              f"   (mask generation {w['generate_s']:.1f} s, not counted)")
        print(f"score RUN_DIR:           {args.masks / s['score_s']:9.1f} masks/s   peak RSS {s['peak_rss'] / 2**20:7.0f} MB")
        print(f"store + score:           {args.masks / (w['write_s'] + s['score_s']):9.1f} masks/s")
        print(f"bytes per mask row:      {size / args.masks / 1024:9.1f} KB   (store {size / 2**20:.1f} MB)")
        loc = s["values"]["localization"]
        print(f"pixel_auc={loc['pixel_auc']:.4f} pixel_f1={loc['pixel_f1']:.4f} pixel_iou={loc['pixel_iou']:.4f}")
        if args.detection_rows:
            _in_process(write_phase, str(det_dir), args.detection_rows, 0, False, "full", args.bootstrap,
                        threads=args.threads)
            d = _in_process(score_phase, str(det_dir), threads=args.threads)
            print(f"score RUN_DIR detection: {args.detection_rows / d['score_s']:9.0f} rows/s    peak RSS "
                  f"{d['peak_rss'] / 2**20:7.0f} MB   ({args.detection_rows} rows, {_store_bytes(det_dir) / args.detection_rows:.0f} B/row)")


if __name__ == "__main__":
    main()
