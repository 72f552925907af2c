"""Submissions, protocols and scored entries for the leaderboard tests (runner_fake data).

``bundle(monkeypatch, folder)`` writes three tiny protocols and makes them "bundled" for the
test (``lb_fake`` v1: ternary detection + localization, clean + ``runner_half``, Table 2 layout;
``lb_fake_v2``: the same at version 2; ``lb_fake_robustness`` and ``lb_fake_localization``: the
same in the Table 4 and Table 3 layouts). Sample i of runner_fake has label i % 3 and size
(20 + (i % 4) * 4, 24 + (i % 3) * 4); tampered samples have a mask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from PIL import Image

import tests.runner_fixtures  # noqa: F401  (registers runner_fake and runner_half)

N = 12
IDS = [f"{('real', 'full_synthetic', 'tampered')[i % 3]}/{i:04d}" for i in range(N)]
LABELS = np.arange(N) % 3
PROTOCOL = """\
version: {version}
name: {name}
label_space: ternary
seed: 3
datasets:
  - {{name: runner_fake, split: test, options: {{n: {n}}}}}
perturbations:
  - {{name: none, label: Clean}}
  - {{name: runner_half, label: Half}}
metrics:
  - name: ternary_detection
  - name: localization
bootstrap: {{n: 200, seed: 0}}
tables:
  - {{kind: {kind}}}
"""


def size(i: int, half: bool = False) -> tuple[int, int]:
    h, w = 20 + (i % 4) * 4, 24 + (i % 3) * 4
    return ((h + 1) // 2, (w + 1) // 2) if half else (h, w)


def bundle(monkeypatch: Any, folder: Path, n: int = N) -> dict[str, Path]:
    """Make ``lb_fake`` (v1) and ``lb_fake_v2`` (v2) bundled protocols for this test."""
    import bench.evaluation.protocol_files as pf

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, version, kind in (("lb_fake", 1, "detection"), ("lb_fake_v2", 2, "detection"),
                                ("lb_fake_robustness", 1, "robustness"), ("lb_fake_localization", 1, "localization")):
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(PROTOCOL.format(version=version, name=name, n=n, kind=kind), encoding="utf-8")
    real = pf.bundled_protocols
    monkeypatch.setattr(pf, "bundled_protocols", lambda: {**real(), **paths})
    return paths


def probs(quality: float, seed: int = 0, n: int = N) -> np.ndarray:
    """(N, 3) probabilities; ``quality`` in [0, 1] is the chance that the argmax is the true class."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    out = rng.dirichlet(np.ones(3), size=n) * 0.4
    right = rng.random(n) < quality
    cls = np.where(right, labels, (labels + 1 + rng.integers(0, 2, n)) % 3)
    out[np.arange(n), cls] += 0.6
    return out / out.sum(1, keepdims=True)


def frame(p: np.ndarray, n: int = N, perturbations: tuple[str, ...] = ("none", "runner_half()")) -> pd.DataFrame:
    ids = [f"{('real', 'full_synthetic', 'tampered')[i % 3]}/{i:04d}" for i in range(n)]
    rows = []
    for pert in perturbations:
        for i in range(n):
            rows.append({"sample_id": ids[i], "perturbation": pert, "prob_real": p[i, 0],
                         "prob_full_synthetic": p[i, 1], "prob_tampered": p[i, 2]})
    return pd.DataFrame(rows)


def manifest(**over: Any) -> dict[str, Any]:
    data = {"schema_version": 1,
            "method": {"name": "TestNet", "version": "1.0", "authors": ["A. Tester"],
                       "code": "https://example.org/testnet"},
            "weights_sha256": "closed", "training_data": "runner_fake train", "used_test_data": False,
            "predictions": [{"protocol": "lb_fake", "version": 1, "file": "preds.csv"}]}
    data.update(over)
    return data


def write_submission(folder: Path, df: pd.DataFrame, man: dict[str, Any] | None = None,
                     file: str = "preds.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "submission.yaml").write_text(yaml.safe_dump(man or manifest(), sort_keys=False), encoding="utf-8")
    df.to_csv(folder / file, index=False)
    return folder


def add_masks(folder: Path, df: pd.DataFrame, n: int = N, fill: float = 0.5, seed: int = 0) -> pd.DataFrame:
    """``df`` with a ``mask_path`` for every tampered sample (clean and half), PNGs written under
    ``folder/masks``: the top-left ``fill`` fraction of each side set to 230, plus seeded noise."""
    rng = np.random.default_rng(seed)
    df = df.copy()
    df["mask_path"] = None
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(2, n, 3):
        for half, row in ((False, i), (True, n + i)):
            rel = f"masks/{i}{'h' if half else ''}.png"
            h, w = size(i, half)
            m = rng.integers(0, 100, size=(h, w)).astype(np.uint8)
            m[: int(h * fill), : int(w * fill)] = 230
            Image.fromarray(m).save(folder / rel)
            df.loc[row, "mask_path"] = rel
    return df
