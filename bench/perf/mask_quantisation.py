"""Effect of the store's 8-bit mask quantisation (and of binned AUC) on every localization number.

For three kinds of predicted masks, scores the same images twice: with the float64 masks as
a model returns them, and with the masks the prediction store keeps (8-bit codes, decoded
``code / 255``). Prints, per metric key, the largest absolute difference over the kinds, and
the per-image pixel AUC error of the binned AUC (1000 bins) against scikit-learn's exact AUC,
for float and for quantised masks. Kinds:

- ``model``: a SAM-style decoder output (256² logits, background about -8, tampered region
  about +6, noise σ 1.5, bilinear upsampling, sigmoid): mostly saturated probabilities;
- ``soft``: an uncertain model (logits ±1 plus smooth noise σ 2): probabilities spread over (0, 1);
- ``noise``: uniform noise shifted by 0.35 on the tampered pixels (worst case for ties).

Usage::

    python -m bench.perf.mask_quantisation --images 24 --side 512
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from bench.evaluation.store import decode_prob_mask, encode_prob_mask
from bench.plugins import create_metric

LOCALIZATION = {
    "per_image@0.5": {},
    "global@0.5": {"aggregation": "global"},
    "per_image@best": {"threshold": "best"},
    "global@best": {"aggregation": "global", "threshold": "best"},
    "per_image@0.3": {"threshold": 0.3},
    "per_image@0.25": {"threshold": 0.25},
}


def masks(kind: str, rng: np.random.Generator, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(float64 probabilities, bool ground truth) of one image."""
    import torch

    low = 256
    cy, cx, ry, rx = rng.uniform(0.3, 0.7, 2).tolist() + rng.uniform(0.08, 0.25, 2).tolist()

    def ellipse(n: int) -> np.ndarray:
        yy, xx = (np.mgrid[:n, :n] + 0.5) / n
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1.0

    gt = ellipse(side)
    if kind == "noise":
        return np.clip(rng.random((side, side)) * 0.65 + 0.35 * gt, 0, 1), gt
    if kind == "model":
        logits = np.where(ellipse(low), 6.0, -8.0) + rng.normal(0, 1.5, (low, low))
    else:
        logits = np.where(ellipse(low), 1.0, -1.0) + rng.normal(0, 2.0, (low, low))
    up = torch.nn.functional.interpolate(torch.from_numpy(logits[None, None]), size=(side, side), mode="bilinear",
                                         align_corners=False)
    return torch.sigmoid(up)[0, 0].numpy().astype(np.float64), gt


def scores(gts: list[np.ndarray], preds: list[np.ndarray]) -> dict[str, float]:
    labels = [2] * len(gts)
    out: dict[str, float] = {}
    for name, params in LOCALIZATION.items():
        metric = create_metric("localization", **params)
        metric.update(gts, preds, labels)
        out.update({f"{name}/{k}": v for k, v in metric.compute().items() if k.startswith("pixel_")})
    legacy = create_metric("sida_legacy")
    legacy.update(labels, np.tile([0.0, 0.0, 1.0], (len(gts), 1)), gts, preds)
    out.update({k: v for k, v in legacy.compute().items() if k in ("legacy_ciou", "legacy_giou")})
    return out


def main() -> None:
    from sklearn.metrics import roc_auc_score

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--side", type=int, default=512)
    args = parser.parse_args()
    worst: dict[str, float] = {}
    auc_err: dict[str, list[float]] = {"float": [], "quantised": []}
    for kind in ("model", "soft", "noise"):
        rng = np.random.default_rng(0)
        pairs = [masks(kind, rng, args.side) for _ in range(args.images)]
        gts = [g for _, g in pairs]
        floats = [p for p, _ in pairs]
        quant = [decode_prob_mask(encode_prob_mask(p), *p.shape) for p in floats]
        a, b = scores(gts, floats), scores(gts, quant)
        line: list[str] = []
        for key in a:
            diff = abs(a[key] - b[key])
            worst[key] = max(worst.get(key, 0.0), diff)
            line.append(f"{key}={a[key]:.4f}/{b[key]:.4f}")
        print(f"[{kind}] float/quantised: " + " ".join(line))
        for name, preds in (("float", floats), ("quantised", quant)):
            metric = create_metric("localization")
            for g, p in zip(gts, preds):
                metric.update([g], [p], [2])
            binned: Any = metric.table()["auc"]
            exact = [roc_auc_score(g.ravel(), p.ravel()) for g, p in zip(gts, preds)]
            auc_err[name].append(float(np.max(np.abs(binned - exact))))
    print(f"images={args.images} side={args.side}: largest |float - quantised| per key")
    for key, value in worst.items():
        print(f"  {key:28s} {value:.2e}")
    for name, errs in auc_err.items():
        print(f"per-image |binned AUC (1000 bins) - exact AUC|, {name} masks: max {max(errs):.2e}")


if __name__ == "__main__":
    main()
