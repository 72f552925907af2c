"""Feed prediction-store rows to the ``explanation`` metric (texts, references, classes, masks).

The reference is ``meta["explanation"]`` as the dataset loaders set it (SID-Set
``description/<class>_GT.json``, the parquet ``description`` column, sid-mini). The predicted class
is the argmax of the stored probabilities in the ternary label space (-1 for binary models, whose
probabilities name no ternary class).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from bench.store import decode_bool_mask, decode_prob_mask

CHUNK = 32
NOT_APPLICABLE = "not applicable: the model produced no explanation text"


def reference_of(meta_json: str | None) -> str | None:
    """``meta["explanation"]`` of a stored row, or ``None``."""
    if not meta_json:
        return None
    value = json.loads(meta_json).get("explanation")
    return str(value) if value is not None else None


def feed_explanation(metric: Any, rows: pa.Table) -> str | None:
    """Update ``metric`` with every row; returns :data:`NOT_APPLICABLE` when no row has text."""
    if not any(t is not None for t in rows.column("text").to_pylist()):
        return NOT_APPLICABLE
    for start in range(0, rows.num_rows, CHUNK):
        chunk = rows.slice(start, CHUNK).to_pylist()
        predicted = [int(np.argmax(r["probs"])) if r["probs_space"] == "ternary" and r["probs"] else -1 for r in chunk]
        pred_masks = [decode_prob_mask(r["pred_mask"], r["pred_mask_h"], r["pred_mask_w"]) if r["pred_mask"] else None
                      for r in chunk]
        gt_masks = [decode_bool_mask(r["gt_mask"], r["gt_mask_h"], r["gt_mask_w"]) if r["gt_mask"] else None
                    for r in chunk]
        metric.update([r["text"] for r in chunk], [reference_of(r["meta"]) for r in chunk],
                      [r["label"] for r in chunk], predicted, pred_masks, gt_masks,
                      sample_ids=[r["sample_id"] for r in chunk])
    return None
