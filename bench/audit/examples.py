"""Thumbnails of the images whose verdict flips at the mildest strength.

The degraded image is re-made exactly as the run made it: decoded from the path recorded in the
row's meta, the protocol's ``neutralise`` step, then the condition's perturbation with the
runner's per-sample generator (:func:`bench.perturbations.base.sample_rng`). Predicted masks
(at the resolution of the image the model was given) are overlaid in red when the model
localizes. Thumbnails have a long side of at most :data:`THUMB` pixels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench import figures
from bench.audit.analysis import AuditRun
from bench.decode import DecodeError, decode_image
from bench.perturbations.base import sample_rng
from bench.evaluation.protocol import CLEAN
from bench.evaluation.store import decode_bool_mask, decode_prob_mask
from bench.types import LabelSpace

THUMB = 128


def thumbnail(image: np.ndarray) -> np.ndarray:
    """``image`` scaled (bilinear) so that its long side is at most :data:`THUMB` pixels."""
    h, w = image.shape[:2]
    scale = min(1.0, THUMB / max(h, w))
    if scale == 1.0:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def _fit(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if mask.shape == shape[:2]:
        return mask
    im = Image.fromarray((np.asarray(mask, dtype=np.float32) * 255).astype(np.uint8))
    return np.asarray(im.resize((shape[1], shape[0]), Image.Resampling.NEAREST)) / 255.0


def p_fake(row: dict[str, Any]) -> float | None:
    probs = row.get("probs")
    if not probs:
        return None
    return float(1.0 - probs[0]) if row["probs_space"] == LabelSpace.TERNARY.value else float(probs[1])


def _caption(name: str, row: dict[str, Any] | None, fake: bool | None) -> str:
    if row is None:
        return name
    p = p_fake(row)
    verdict = "" if fake is None else (" → fake" if fake else " → real")
    return f"{name}\nP(fake) {p:.3f}{verdict}" if p is not None else name


def example_grid(run: AuditRun, section: dict[str, Any], picked: list[dict[str, Any]], path: Path) -> dict[str, Any]:
    """Draw the picked flips (see :func:`bench.audit.analysis.earliest_flips`) into ``path``.

    Returns ``{"figure": path or None, "examples": [...], "note": ...}``."""
    if not picked:
        return {"figure": None, "examples": [], "note": "no verdict flips under any sweep"}
    ds, split = section["dataset"], section["split"]
    rows = {(r["sample_id"], r["perturbation"]): r
            for r in run.store.read_samples(ds, split, {p["sample_id"] for p in picked}).to_pylist()}
    by_key = {c.key: c.condition for c in run.conditions}
    names = run.protocol.label_space.class_names
    grid, examples, missing = [], [], 0
    for p in picked:
        clean_row, row = rows.get((p["sample_id"], CLEAN)), rows.get((p["sample_id"], p["key"]))
        cond = by_key[p["key"]]
        image = _source_image(clean_row)
        degraded = None
        if image is not None:
            seed = run.protocol.seed
            if cond.neutralise is not None:
                image, _ = cond.neutralise(image, None, sample_rng(seed, p["sample_id"], "neutralise"))
            degraded = cond.perturbation(image, None, sample_rng(seed, p["sample_id"], cond.key))[0] \
                if cond.perturbation is not None else image
        else:
            missing += 1
        cols: list[tuple[str, np.ndarray | None]] = [
            (_caption("clean", clean_row, p["clean_fake"]), thumbnail(image) if image is not None else None),
            (_caption(cond.label, row, not p["clean_fake"]), thumbnail(degraded) if degraded is not None else None),
        ]
        if row is not None and row.get("pred_mask") is not None and degraded is not None:
            mask = decode_prob_mask(row["pred_mask"], row["pred_mask_h"], row["pred_mask_w"])
            cols.append(("predicted mask (degraded)", thumbnail(figures.overlay(degraded, _fit(mask, degraded.shape)))))
        if clean_row is not None and clean_row.get("gt_mask") is not None and image is not None:
            gt = decode_bool_mask(clean_row["gt_mask"], clean_row["gt_mask_h"], clean_row["gt_mask_w"])
            cols.append(("ground-truth mask", thumbnail(figures.overlay(image, _fit(gt, image.shape)))))
        grid.append((f"{p['sample_id']}\n({names[p['label']]})", cols))
        examples.append({**p, "label_name": names[p["label"]], "condition": cond.label,
                         "p_fake_clean": p_fake(clean_row) if clean_row else None,
                         "p_fake_degraded": p_fake(row) if row else None})
    out = figures.image_grid(grid, path, f"Earliest verdict flips\n({ds}/{split})",
                             missing="image file\nnot found")
    note = f"{missing} image file(s) not found at the path recorded in the run" if missing else None
    return {"figure": out, "examples": examples, "note": note}


def _source_image(row: dict[str, Any] | None) -> np.ndarray | None:
    if row is None:
        return None
    path = json.loads(row.get("meta") or "{}").get("path")
    if not path or not Path(path).is_file():
        return None
    try:
        return decode_image(path)
    except DecodeError:
        return None
