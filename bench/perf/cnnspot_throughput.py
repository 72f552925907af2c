"""Throughput of CNNSpot (full ResNet-50, official 224 centre crop) on CPU: the harness path
(``bench.cli.compose.run_and_score`` on ``sid_mini_detection``: decode, store, scoring, tables) against a
bare decode → preprocess → forward loop over the same images with the same batch size.

Prints images/s of both and their ratio (target: harness / bare ≥ 0.9). Usage::

    python -m bench.perf.cnnspot_throughput --images 64 --batch-size 16 --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.cli.compose import run_and_score
from bench.plugins import create_dataset, create_model


def bare_loop(model, paths: list[Path], batch_size: int) -> float:
    """Seconds to decode, preprocess and classify ``paths`` in batches (no store, no metrics)."""
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(paths), batch_size):
            items = [model.preprocess(np.asarray(Image.open(p).convert("RGB"))) for p in paths[i:i + batch_size]]
            model.forward(torch.stack(items))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48, help="number of sid_mini test images (default 48)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--config", default="default", help="cnnspot configuration (default: full ResNet-50)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = create_model(f"cnnspot:{args.config}", device="cpu")
    dataset = create_dataset("sid_mini", split="test")
    paths = []
    for sample in dataset.iter_samples():  # N images of the same size as the runner's --limit N subset
        if len(paths) == args.images:
            break
        paths.append(Path(sample.meta["path"]))
    bare_loop(model, paths[: args.batch_size], args.batch_size)  # warm-up
    bare_s = bare_loop(model, paths, args.batch_size)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        run_and_score("sid_mini_detection", model, out, limit=args.images, batch_size=args.batch_size, tables=True)
        harness_s = time.perf_counter() - start
    bare_ips, harness_ips = len(paths) / bare_s, len(paths) / harness_s
    print(f"cnnspot:{args.config} cpu threads={args.threads} images={len(paths)} batch={args.batch_size}")
    print(f"bare loop:      {bare_ips:8.2f} images/s")
    print(f"sida-bench run: {harness_ips:8.2f} images/s")
    print(f"ratio harness/bare: {harness_ips / bare_ips:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
