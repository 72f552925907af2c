"""Shared machinery of the dataset plugins: options, per-sample decoding, problem counts, listings.

A listing is a deterministic list of :class:`Entry` (id, label, where the image and mask are);
:class:`ListedDataset` shards it by position (``i % num_shards == shard``), skips ids before
decoding and turns every decoding problem into a per-sample error or a counted note.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from bench.datasets.base import Dataset
from bench.decode import DEFAULT_MAX_PIXELS, DecodeError, MaskPolicy, Source, decode_image, decode_mask
from bench.errors import UserError
from bench.types import TAMPERED, LabelSpace, Sample

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
"""Extensions (matched case-insensitively) that folder datasets list as images."""

MissingMask = Literal["keep", "error", "official"]

PROBLEM_KINDS = (
    "decode_errors",
    "mask_errors",
    "masks_missing",
    "masks_resized",
    "masks_soft",
    "masks_rescaled_01",
)


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (empty when the folder is absent)."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if is_image_file(p)), key=lambda p: p.name)


def list_subdirs(folder: Path) -> list[Path]:
    """Visible sub-folders of ``folder``, sorted by name."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def list_images_recursive(folder: Path) -> list[Path]:
    """Image files anywhere below ``folder``, sorted by relative path."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.rglob("*") if is_image_file(p)), key=lambda p: p.relative_to(folder).as_posix())


@dataclass
class Entry:
    """One listed sample before decoding: where its image (and mask) live."""

    id: str
    label: int
    image: Source
    mask: Source | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class SampleDecoder:
    """Options shared by every dataset, plus per-sample decoding with problem bookkeeping.

    Options (all recorded by ``describe()``):
        max_pixels: decompression-bomb limit per image (default 100 M pixels).
        binarize / size_mismatch / non_binary: the :class:`~bench.decode.MaskPolicy` fields.
        missing_mask: a tampered sample without a mask: ``"keep"`` (default: yielded with
            ``mask=None``, counted as ``masks_missing``), ``"error"`` (per-sample error), or
            ``"official"`` (left out of the listing, as the official loader does, and counted
            under ``listing.tampered_without_mask_dropped``).
    """

    def __init__(
        self,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        binarize: str = "gt127",
        size_mismatch: str = "resize",
        non_binary: str = "threshold",
        missing_mask: str = "keep",
    ) -> None:
        try:
            self.mask_policy = MaskPolicy(binarize=binarize, size_mismatch=size_mismatch, non_binary=non_binary)  # type: ignore[arg-type]
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        if missing_mask not in ("keep", "error", "official"):
            raise UserError(f"Expected `missing_mask` to be one of keep, error, official, but got {missing_mask!r}")
        if int(max_pixels) <= 0:
            raise UserError(f"Expected `max_pixels` to be a positive integer, but got {max_pixels!r}")
        self.max_pixels = int(max_pixels)
        self.missing_mask: MissingMask = missing_mask  # type: ignore[assignment]
        self.problem_ids: dict[str, set[str]] = {kind: set() for kind in PROBLEM_KINDS}

    def policies(self) -> dict[str, Any]:
        return {"max_pixels": self.max_pixels, "missing_mask": self.missing_mask, "mask": self.mask_policy.describe()}

    def problem_counts(self) -> dict[str, int]:
        """Per-split counts of problems seen while iterating (each sample counted once)."""
        return {kind: len(ids) for kind, ids in self.problem_ids.items()}

    def _note(self, kind: str, sample_id: str, meta: dict[str, Any]) -> None:
        self.problem_ids[kind].add(sample_id)
        meta.setdefault("problems", []).append(kind)

    def decode(self, entry: Entry, wants_mask: bool) -> Sample:
        """Decode one entry into a Sample; any failure becomes ``Sample.error`` (never raised)."""
        meta = dict(entry.meta)
        try:
            image = decode_image(entry.image, max_pixels=self.max_pixels)
        except DecodeError as exc:
            self._note("decode_errors", entry.id, meta)
            meta["original_size"] = None
            return Sample(entry.id, None, entry.label, None, meta, error=f"image: {exc}")
        size = (int(image.shape[0]), int(image.shape[1]))
        meta["original_size"] = size
        if not wants_mask:
            return Sample(entry.id, image, entry.label, None, meta)
        if entry.mask is None:
            self._note("masks_missing", entry.id, meta)
            if self.missing_mask == "error":
                return Sample(entry.id, None, entry.label, None, meta, error="mask: tampered image has no mask")
            return Sample(entry.id, image, entry.label, None, meta)
        try:
            mask, note = decode_mask(entry.mask, size, self.mask_policy, self.max_pixels)
        except DecodeError as exc:
            self._note("mask_errors", entry.id, meta)
            return Sample(entry.id, None, entry.label, None, meta, error=f"mask: {exc}")
        meta["mask_original_size"] = note.original_size
        for flag, kind in ((note.resized, "masks_resized"), (note.soft, "masks_soft"),
                           (note.rescaled_01, "masks_rescaled_01")):
            if flag:
                self._note(kind, entry.id, meta)
        return Sample(entry.id, image, entry.label, mask, meta)


def split_options(options: Mapping[str, Any], extra: tuple[str, ...] = ()) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate decoder options from a plugin's own ``extra`` options; unknown names are a UserError."""
    decoder_keys = ("max_pixels", "binarize", "size_mismatch", "non_binary", "missing_mask")
    unknown = sorted(set(options) - set(decoder_keys) - set(extra))
    if unknown:
        raise UserError(f"Unknown dataset option(s) {unknown}; known: {sorted(decoder_keys + extra)}")
    return ({k: v for k, v in options.items() if k in decoder_keys},
            {k: v for k, v in options.items() if k in extra})


class ListedDataset(Dataset):
    """A dataset whose samples come from a deterministic listing of :class:`Entry`.

    Subclasses implement :meth:`_list` (sorted entries, no decoding) and may declare
    ``extra_options``. Ternary datasets decode masks for tampered samples only; binary ones
    decode a mask whenever an entry has one.
    """

    extra_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, root: str | Path | None = None, split: str = "test", **options: Any) -> None:
        if root is None:
            raise UserError(f"Dataset {self.name!r} needs a root folder: --data-root {self.name}=PATH for run/score, "
                            "--root PATH for data/train")
        super().__init__(root, split, **options)
        decoder_opts, self.extra = split_options(options, self.extra_options)
        self.decoder = SampleDecoder(**decoder_opts)
        self.listing_problems: dict[str, int] = {}
        self._entries: list[Entry] | None = None

    @abc.abstractmethod
    def _list(self) -> list[Entry]:
        """All entries of the split in their fixed order (may fill ``self.listing_problems``)."""

    @property
    def entries(self) -> list[Entry]:
        if self._entries is None:
            if not self.root.exists():
                raise UserError(f"Dataset {self.name!r}: root {self.root} does not exist")
            self._entries = disambiguate(self._list())
        return self._entries

    def __len__(self) -> int:
        return len(self.entries)

    def _wants_mask(self, entry: Entry) -> bool:
        if self.label_space is LabelSpace.TERNARY:
            return entry.label == TAMPERED
        return entry.mask is not None

    def iter_samples(
        self, shard: int = 0, num_shards: int = 1, skip_ids: Set[str] = frozenset()
    ) -> Iterator[Sample]:
        check_shard(shard, num_shards)
        for i, entry in enumerate(self.entries):
            if i % num_shards != shard or entry.id in skip_ids:
                continue
            yield self.decoder.decode(entry, self._wants_mask(entry))

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            label_space=self.label_space.value,
            policies=self.decoder.policies(),
            listing=dict(self.listing_problems),
            problems=self.decoder.problem_counts(),
        )
        return info


def disambiguate(entries: list[Entry]) -> list[Entry]:
    """Make ids unique: entries whose id collides (``a.jpg`` and ``a.png``) keep their file extension."""
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry.id] = counts.get(entry.id, 0) + 1
    for entry in entries:
        if counts[entry.id] > 1 and isinstance(entry.image, Path):
            entry.id = f"{entry.id}{entry.image.suffix}"
    return entries


def check_shard(shard: int, num_shards: int) -> None:
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise UserError(f"Expected 0 <= shard < num_shards, but got shard={shard}, num_shards={num_shards}")


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise UserError(f"{what}: expected a folder at {path}")
    return path
