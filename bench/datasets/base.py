"""Base class of dataset plugins: a split of a dataset on local disk that yields Samples."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Set
from pathlib import Path
from typing import Any, ClassVar

from bench.types import LabelSpace, Sample


class Dataset(abc.ABC):
    """One split of a dataset.

    Samples are listed in a fixed, deterministic order; shard ``k`` of ``n`` holds the samples
    whose position ``i`` satisfies ``i % n == k``, so workers and sharded runs cover every
    sample exactly once. A sample that cannot be decoded is yielded with ``error`` set,
    never skipped.

    Class attributes:
        name: registry name (``"sid_set"``).
        label_space: labels of its samples.
        splits: the split names it knows.
    """

    name: ClassVar[str]
    label_space: ClassVar[LabelSpace] = LabelSpace.TERNARY
    splits: ClassVar[tuple[str, ...]] = ("train", "validation", "test")

    def __init__(self, root: str | Path, split: str = "test", **options: Any) -> None:
        self.root = Path(root).expanduser()
        self.split = split
        self.options = options

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of samples in this split (cheap: no decoding)."""

    @abc.abstractmethod
    def iter_samples(
        self, shard: int = 0, num_shards: int = 1, skip_ids: Set[str] = frozenset()
    ) -> Iterator[Sample]:
        """Decode and yield the samples of one shard, skipping ids in ``skip_ids`` before decoding."""

    def __iter__(self) -> Iterator[Sample]:
        return self.iter_samples()

    def describe(self) -> dict[str, Any]:
        """Identity and policies of this split, written into results files."""
        return {"name": self.name, "root": str(self.root), "split": self.split, "options": dict(self.options)}
