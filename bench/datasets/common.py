"""Shared machinery of the dataset plugins: options, per-sample decoding, problem counts, listings.

A listing is a deterministic list of :class:`Entry` (id, label, where the image and mask are);
:class:`ListedDataset` shards it by position (``i % num_shards == shard``), skips ids before
decoding and turns every decoding problem into a per-sample error or a counted note.
"""

from __future__ import annotations

import abc
import stat
from collections.abc import Iterator, Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from bench.datasets.base import Dataset
from bench.decode import DEFAULT_MAX_PIXELS, DecodeError, MaskPolicy, Source, decode_image, decode_mask
from bench.errors import UserError
from bench.safe_text import path_text, printable
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


MAX_LISTED_NAMES = 20
"""How many names of each listing problem ``describe()`` records (all are counted)."""


@dataclass
class ListingLog:
    """Directory entries a listing did not turn into a readable image, by kind, with their names.

    Kinds: ``unreadable_files`` (an image-like name that is no readable regular file: a broken
    symbolic link, a symlink loop, a FIFO...; still listed as a sample, whose decoding then fails
    with the reason), ``skipped_not_image`` (an extension outside :data:`IMAGE_EXTENSIONS`),
    ``skipped_hidden`` (names starting with ``.``, e.g. macOS ``._*`` files), ``skipped_folders``
    (a folder inside a flat image folder); plugins add their own (e.g. SID-Set's ``masks_without_image``).
    """

    names: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, path: Path | str) -> None:
        self.names.setdefault(kind, []).append(path_text(path))

    def counts(self) -> dict[str, int]:
        return {kind: len(names) for kind, names in self.names.items()}

    def examples(self) -> dict[str, list[str]]:
        return {kind: names[:MAX_LISTED_NAMES] for kind, names in self.names.items()}


def entry_kind(path: Path) -> str:
    """``"image"``, ``"unreadable"`` (image-like name, no readable regular file), ``"hidden"``,
    ``"not_image"`` or ``"folder"``; symbolic links are followed."""
    if path.name.startswith("."):
        return "hidden"
    try:
        mode = path.stat().st_mode
    except OSError:  # broken symbolic link, symlink loop, vanished entry
        return "unreadable" if path.suffix.lower() in IMAGE_EXTENSIONS else "not_image"
    if stat.S_ISDIR(mode):
        return "folder"
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return "not_image"
    return "image" if stat.S_ISREG(mode) else "unreadable"


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise UserError(f"cannot list the folder {path_text(folder)}: {exc.strerror or exc}") from exc


def _keep_image(path: Path, kind: str, log: ListingLog | None, folders: bool = True) -> bool:
    """Whether a listing keeps ``path`` as a sample; everything else is logged by kind."""
    if kind in ("image", "unreadable"):
        if kind == "unreadable" and log is not None:
            log.add("unreadable_files", path)
        return True
    if log is not None and (folders or kind != "folder"):
        log.add(f"skipped_{kind if kind != 'folder' else 'folders'}", path)
    return False


def list_images(folder: Path, log: ListingLog | None = None) -> list[Path]:
    """Image-like entries directly inside ``folder``, sorted by name (empty when the folder is absent).

    Entries that look like images but cannot be read (broken links, loops) are kept, so they become
    samples with a decoding error, and logged; other entries are logged as skipped (see :class:`ListingLog`).
    """
    if not folder.is_dir():
        return []
    return [p for p in _children(folder) if _keep_image(p, entry_kind(p), log)]


def list_subdirs(folder: Path) -> list[Path]:
    """Visible sub-folders of ``folder``, sorted by name (files there are not samples in any layout)."""
    return [p for p in _children(folder) if entry_kind(p) == "folder"]


def list_images_recursive(folder: Path, log: ListingLog | None = None) -> list[Path]:
    """Image-like entries anywhere below ``folder``, sorted by relative path (see :func:`list_images`)."""
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.rglob("*") if _keep_image(p, entry_kind(p), log, folders=False)),
                  key=lambda p: p.relative_to(folder).as_posix())


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
        self.listing_log = ListingLog()
        self._entries: list[Entry] | None = None

    @abc.abstractmethod
    def _list(self) -> list[Entry]:
        """All entries of the split in their fixed order (may fill ``self.listing_problems``)."""

    @property
    def entries(self) -> list[Entry]:
        if self._entries is None:
            if not self.root.exists():
                raise UserError(f"Dataset {self.name!r}: root {self.root} does not exist")
            self.listing_log = ListingLog()
            entries = self._list()
            self.listing_problems.update(self.listing_log.counts())
            self._entries = disambiguate(entries)
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
            listing_names=self.listing_log.examples(),
            problems=self.decoder.problem_counts(),
        )
        return info


def disambiguate(entries: list[Entry]) -> list[Entry]:
    """Make ids valid UTF-8 text and unique.

    An undecodable byte of a file name shows as ``\\xNN`` in the id (:func:`~bench.safe_text.printable`;
    the path itself is kept). Entries whose id collides (``a.jpg`` and ``a.png``) keep their file
    extension; ids that still collide get ``~2``, ``~3``... in listing order.
    """
    for entry in entries:
        entry.id = printable(entry.id)
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry.id] = counts.get(entry.id, 0) + 1
    for entry in entries:
        if counts[entry.id] > 1 and isinstance(entry.image, Path):
            entry.id = f"{entry.id}{printable(entry.image.suffix)}"
    seen: dict[str, int] = {}
    for entry in entries:
        n = seen[entry.id] = seen.get(entry.id, 0) + 1
        if n > 1:
            entry.id = f"{entry.id}~{n}"
    return entries


def check_shard(shard: int, num_shards: int) -> None:
    if num_shards < 1 or not 0 <= shard < num_shards:
        raise UserError(f"Expected 0 <= shard < num_shards, but got shard={shard}, num_shards={num_shards}")


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise UserError(f"{what}: expected a folder at {path}")
    return path
