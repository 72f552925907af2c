"""A tiny deterministic model, dataset and perturbations for runner, store and score tests.

Registered into the global registries on import (idempotent), under names that no built-in
plugin uses. Everything derives from image statistics only, so predictions do not depend on
batch composition, batch size, worker count or order.

- model ``runner_test`` (ternary, detect + localize). Configs: ``default``/``tiny``; ``binary`` (binary probabilities);
  ``localizer`` (mask only); ``confident`` (also a confidence map, ``sigmoid(6 (G - B))`` of the input);
  ``flaky`` (raises on images whose mean red value is odd, to test
  per-sample errors and the one-by-one retry). ``RUNNER_TEST_DELAY`` (seconds per image, read at
  prediction time so it is not part of the model's identity) slows it down to kill a run part-way.
- dataset ``runner_fake`` (ternary SID-Set-like, generated in memory): option ``n`` samples,
  ``broken`` ids that fail to decode, ``descriptions`` (even-numbered samples get a reference
  description in ``meta["explanation"]``, :func:`fake_description`).
- perturbations ``runner_noise`` (seeded additive noise, ``sigma``) and ``runner_half``
  (halves the size, mask co-transformed by nearest neighbour).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.datasets.base import Dataset
from bench.model import Capability, Detector, DetectorOutput
from bench.perturbations.base import Perturbation
from bench.plugins import DATASETS, MODELS, PERTURBATIONS
from bench.types import LabelSpace, Sample

SIDE = 16


class RunnerTestModel(Detector):
    name = "runner_test"
    label_space = LabelSpace.TERNARY
    capabilities = frozenset({Capability.DETECT, Capability.LOCALIZE})
    configs = {
        "default": {"space": "ternary", "detect": True, "flaky": False},
        "tiny": {"space": "ternary", "detect": True, "flaky": False},
        "binary": {"space": "binary", "detect": True, "flaky": False},
        "localizer": {"space": "binary", "detect": False, "flaky": False},
        "flaky": {"space": "ternary", "detect": True, "flaky": True},
        "confident": {"space": "ternary", "detect": True, "flaky": False, "confidence": True},
    }

    def build(self, config: Any, **options: Any) -> None:
        self.flaky = bool(config["flaky"])
        self.with_confidence = bool(config.get("confidence", False))
        self.label_space = LabelSpace(config["space"])
        if not config["detect"]:
            self.capabilities = frozenset({Capability.LOCALIZE})

    def load_weights(self, path: Path) -> None:
        raise NotImplementedError

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        h, w = image.shape[:2]
        rows = (np.arange(SIDE) * h) // SIDE
        cols = (np.arange(SIDE) * w) // SIDE
        small = image[rows][:, cols].astype(np.float32) / 255.0
        return torch.from_numpy(np.ascontiguousarray(small.transpose(2, 0, 1)))

    def predict_preprocessed(self, items: Any, sizes: Any) -> list[Any]:
        if self.flaky and len(items) > 1:
            raise RuntimeError("batch failure")
        return super().predict_preprocessed(items, sizes)

    def forward(self, batch: torch.Tensor) -> DetectorOutput:
        probs, masks, confs = [], [], []
        for x in batch:  # one image at a time: no dependence on the batch
            time.sleep(float(os.environ.get("RUNNER_TEST_DELAY", "0")))
            if self.flaky and int(round(float(x[0].mean()) * 255)) % 2:
                raise ValueError("odd red mean")
            means = x.mean(dim=(1, 2)).double()
            logits = (means - means.mean()) * 8.0
            p = torch.softmax(logits, dim=0)
            probs.append(p if self.label_space == LabelSpace.TERNARY else torch.stack([p[0], p[1] + p[2]]))
            masks.append(torch.sigmoid((x[0] - x[1]).double() * 6.0))
            confs.append(torch.sigmoid((x[1] - x[2]).double() * 6.0))
        mask = torch.stack(masks)
        conf = torch.stack(confs) if self.with_confidence else None
        if Capability.DETECT not in self.capabilities:
            return DetectorOutput(probs=torch.full((len(batch), 2), float("nan")), mask=mask)
        return DetectorOutput(probs=torch.stack(probs), mask=mask, confidence=conf)


@dataclass
class FakeEntry:
    id: str
    label: int


class FakeSidDataset(Dataset):
    """Ternary, in-memory: sample i has label i % 3; tampered samples have a rectangle mask."""

    name = "runner_fake"
    label_space = LabelSpace.TERNARY

    def __init__(self, root: str | Path | None = None, split: str = "test", n: int = 12,
                 broken: tuple[str, ...] = (), descriptions: bool = False, **options: Any) -> None:
        if descriptions:
            options["descriptions"] = True
        super().__init__(root or "memory", split, n=n, broken=list(broken), **options)
        self.descriptions = bool(descriptions)
        names = ("real", "full_synthetic", "tampered")
        self.entries = [FakeEntry(f"{names[i % 3]}/{i:04d}", i % 3) for i in range(n)]
        self.broken = set(broken)
        self.decoded: list[str] = []

    def __len__(self) -> int:
        return len(self.entries)

    def iter_samples(self, shard: int = 0, num_shards: int = 1, skip_ids: Set[str] = frozenset()) -> Iterator[Sample]:
        for i, e in enumerate(self.entries):
            if i % num_shards != shard or e.id in skip_ids:
                continue
            self.decoded.append(e.id)
            if e.id in self.broken:
                yield Sample(e.id, None, e.label, meta={"source": "fake"}, error="truncated file")
                continue
            rng = np.random.default_rng(i)
            h, w = 20 + (i % 4) * 4, 24 + (i % 3) * 4
            image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            image[..., e.label] = np.clip(image[..., e.label].astype(int) + 3, 0, 255).astype(np.uint8)
            mask = None
            if e.label == 2:
                mask = np.zeros((h, w), dtype=bool)
                mask[h // 4: h // 2, w // 4: w // 2] = True
                image[mask, 0] = 250
            meta: dict[str, Any] = {"source": f"gen{i % 2}"}
            if self.descriptions and i % 2 == 0:
                meta["explanation"] = fake_description(e.label)
            yield Sample(e.id, image, e.label, mask, meta)


def fake_description(label: int) -> str:
    """The reference description of a ``runner_fake`` sample of class ``label`` (the SIDA-description
    slots; a tampered sample's mask is in the upper left of the image)."""
    return ("Type: {real} Visual Inconsistencies:<lighting> The lighting is even across the whole picture.",
            "Type: {full synthetic} Visual Inconsistencies:<edges> The edges are too smooth for a photograph.",
            "Type: {part tampered} Areas:<tampered position> The tampered area is located in the upper left part of "
            "the image. Tampered Content:<Types of objects or parts> A bright red square. Visual Inconsistencies:"
            "<lighting> The square is brighter than its surroundings.")[label]


class RunnerNoise(Perturbation):
    name = "runner_noise"

    def __init__(self, sigma: float = 4.0) -> None:
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        super().__init__(sigma=float(sigma))

    def __call__(self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator):
        noisy = image.astype(np.float64) + rng.normal(0.0, self._params["sigma"], image.shape)
        return np.clip(np.rint(noisy), 0, 255).astype(np.uint8), mask


class RunnerHalf(Perturbation):
    name = "runner_half"

    def __call__(self, image: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator):
        return image[::2, ::2].copy(), (mask[::2, ::2].copy() if mask is not None else None)


def register() -> None:
    for registry, cls in ((MODELS, RunnerTestModel), (DATASETS, FakeSidDataset),
                          (PERTURBATIONS, RunnerNoise), (PERTURBATIONS, RunnerHalf)):
        if cls.name not in registry:
            registry.register(cls.name, cls)


register()

FAKE_PROTOCOL = """\
version: 1
name: runner_fake_robustness
label_space: ternary
seed: 3
datasets:
  - {name: runner_fake, split: test, options: {n: 12}}
perturbations:
  - {name: none, label: Clean}
  - {name: runner_noise, params: {sigma: 6}, label: "Noise 6"}
  - {name: runner_half, label: "Half"}
metrics:
  - name: ternary_detection
  - name: localization
bootstrap: {n: 20, seed: 0}
tables:
  - {kind: robustness}
"""


def write_protocol(folder: Path, text: str = FAKE_PROTOCOL, name: str = "fake.yaml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path
