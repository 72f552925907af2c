"""Submissions, protocols and scored entries for the leaderboard tests (runner_fake data).

``bundle(monkeypatch, folder)`` writes three tiny protocols and makes them "bundled" for the
test (``lb_fake`` v1: ternary detection + localization, clean + ``runner_half``, Table 2 layout;
``lb_fake_v2``: the same at version 2; ``lb_fake_robustness`` and ``lb_fake_localization``: the
same in the Table 4 and Table 3 layouts; ``lb_fake_explanation``: the explanation metric on
runner_fake with reference descriptions on even samples, ``lb_fake_explanation_noref``: the same
without references). Sample i of runner_fake has label i % 3 and size
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


EXPLANATION_PROTOCOL = """\
version: 1
name: {name}
label_space: ternary
seed: 3
datasets:
  - {{name: runner_fake, split: test, options: {{n: {n}, descriptions: {descriptions}}}}}
metrics:
  - name: explanation
    params: {{{params}}}
  - name: ternary_detection
bootstrap: {{n: 200, seed: 0}}
tables:
  - {{kind: explanation}}
"""


def size(i: int, half: bool = False) -> tuple[int, int]:
    h, w = 20 + (i % 4) * 4, 24 + (i % 3) * 4
    return ((h + 1) // 2, (w + 1) // 2) if half else (h, w)


def bundle(monkeypatch: Any, folder: Path, n: int = N, explanation_params: str = "") -> dict[str, Path]:
    """Make the protocols above bundled protocols for this test (``explanation_params``: the
    explanation metric's parameters, a YAML flow mapping's inside, e.g. ``"css_path: X"``)."""
    import bench.evaluation.protocol_files as pf

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, version, kind in (("lb_fake", 1, "detection"), ("lb_fake_v2", 2, "detection"),
                                ("lb_fake_robustness", 1, "robustness"), ("lb_fake_localization", 1, "localization")):
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(PROTOCOL.format(version=version, name=name, n=n, kind=kind), encoding="utf-8")
    for name, descriptions in (("lb_fake_explanation", "true"), ("lb_fake_explanation_noref", "false")):
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(EXPLANATION_PROTOCOL.format(name=name, n=n, descriptions=descriptions,
                                                           params=explanation_params), encoding="utf-8")
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


def add_masks(folder: Path, df: pd.DataFrame, n: int = N, fill: float = 0.5, seed: int = 0,
              half: bool = True) -> pd.DataFrame:
    """``df`` with a ``mask_path`` for every tampered sample (clean and, with ``half``, half), PNGs
    written under ``folder/masks``: the top-left ``fill`` fraction of each side set to 230, plus
    seeded noise. ``df``'s rows: the n clean samples, then (``half``) the n halved ones."""
    rng = np.random.default_rng(seed)
    df = df.copy()
    df["mask_path"] = None
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(2, n, 3):
        for half, row in ((False, i), (True, n + i))[:2 if half else 1]:
            rel = f"masks/{i}{'h' if half else ''}.png"
            h, w = size(i, half)
            m = rng.integers(0, 100, size=(h, w)).astype(np.uint8)
            m[: int(h * fill), : int(w * fill)] = 230
            Image.fromarray(m).save(folder / rel)
            df.loc[row, "mask_path"] = rel
    return df


VERDICT = ("real", "full synthetic", "tampered")
TEMPLATE = "[CLS] The image is {}. [SEG] A mask highlighting the tampered region is provided. [END]"
"""A SIDA-like fixed answer: a verdict and no description (unparseable by design)."""


def echo(i: int, label: int | None = None) -> str:
    """Sample i's true verdict and the reference description of class ``label`` (default: its own)."""
    from tests.runner_fixtures import fake_description

    own = i % 3
    return f"[CLS] The image is {VERDICT[own]}. {fake_description(own if label is None else label)} [END]"


def explanation_texts(n: int = N) -> dict[str, list[str | None]]:
    """Texts of four methods: ``Echo`` (repeats the references: perfect), ``Twin`` (the same),
    ``Half`` (every fourth sample echoed, the others describe another class) and ``Template``."""
    return {"Echo": [echo(i) for i in range(n)], "Twin": [echo(i) for i in range(n)],
            "Half": [echo(i) if i % 4 == 0 else echo(i, (i % 3 + 1) % 3) for i in range(n)],
            "Template": [TEMPLATE.format(VERDICT[i % 3]) for i in range(n)]}


def score_explanation(root: Path, name: str, texts: list[str | None] | None, n: int = N,
                      protocol: str = "lb_fake_explanation", masks: bool = False) -> Path:
    """Score a submission ``name`` of clean predictions that are right with p = 0.933 and these
    ``texts`` (None: no ``text`` column) into ``root/results/name``; ``masks``: with the masks of
    :func:`add_masks` (upper-left). The results folder."""
    from bench.leaderboard.submit import score_submission

    labels = np.arange(n) % 3
    df = frame(np.eye(3)[labels] * 0.9 + 0.1 / 3, n=n, perturbations=("none",))
    if texts is not None:
        df["text"] = texts
    sub = root / "subs" / name
    if masks:
        df = add_masks(sub, df, n=n, fill=0.5, half=False)
    man = manifest(method={"name": name, "version": "1", "authors": ["T"], "code": "https://example.org/x"},
                   predictions=[{"protocol": protocol, "version": 1, "file": "preds.csv"}])
    write_submission(sub, df, man)
    [out] = score_submission(sub, root / "results" / name)
    return out
