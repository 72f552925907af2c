"""Class-homogeneous batches, as the official ``utils/batch_sampler.py``.

Each epoch: the indices of every class are shuffled and cut into complete batches (a class's last
incomplete batch is dropped), then all batches are shuffled together, and with several ranks each
rank takes its contiguous share. Every batch holds a single class, so the mask loss is computed
exactly on the tampered batches. Randomness comes from ``random.Random(seed + epoch)``, so a
resumed run sees the same order (the official sampler uses the global ``random`` state).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler

from bench.errors import UserError


class ClassHomogeneousBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices, one class per batch.

    Args:
        labels: the class of every dataset item (any hashable; SID-Set: 0 real, 1 full, 2 tampered).
        batch_size: items per batch.
        seed: base seed; epoch ``e`` shuffles with ``seed + e`` (call :meth:`set_epoch`).
        world_size, rank: distributed split of the shuffled batches.
    """

    def __init__(
        self, labels: Sequence[int], batch_size: int, *, seed: int = 0, world_size: int = 1, rank: int = 0
    ) -> None:
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise UserError(f"rank must be in [0, {world_size}), got {rank}")
        self.batch_size = batch_size
        self.seed = seed
        self.world_size = world_size
        self.rank = rank
        self.epoch = 0
        self.indices_by_class: dict[int, list[int]] = {}
        for index, label in enumerate(labels):
            self.indices_by_class.setdefault(int(label), []).append(index)
        if len(self) == 0:
            counts = {c: len(v) for c, v in sorted(self.indices_by_class.items())}
            raise UserError(f"No class has a full batch of {batch_size} items (class counts: {counts})")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        batches = []
        for label in sorted(self.indices_by_class):
            indices = list(self.indices_by_class[label])
            rng.shuffle(indices)
            full = len(indices) - len(indices) % self.batch_size
            batches += [indices[i : i + self.batch_size] for i in range(0, full, self.batch_size)]
        rng.shuffle(batches)
        per_rank = len(batches) // self.world_size
        return iter(batches[self.rank * per_rank : (self.rank + 1) * per_rank])

    def __len__(self) -> int:
        total = sum(len(v) // self.batch_size for v in self.indices_by_class.values())
        return total // self.world_size
