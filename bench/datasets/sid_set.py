"""SID-Set in the official folder layout (Google Drive release; hzlsaber/SIDA ``utils/SID_Set.py``).

Layout::

    <root>/<split>/{real,full_synthetic,tampered}/<name>.<ext>
    <root>/<split>/masks/<stem>_mask.png                       (tampered images only)
    <root>/<split>/description/{real,full_synthetic,tampered}_GT.json   (optional, ~3k images)

Labels come from the class folder: real 0, full_synthetic 1, tampered 2 (ternary). ``describe()``
counts and names what the listing could not pair: ``tampered_without_mask``, ``masks_without_image``
(a ``masks/*`` file no tampered image uses) and ``descriptions_without_image`` (a description entry
naming no listed image), besides the class-folder problems of :class:`~bench.datasets.common.ListingLog`.
Sample ids are ``"<class folder>/<stem>"``; samples are ordered by class, then file name.
The official loader globs ``real/*.jpg`` and ``*.png`` for the other classes; this one lists
every image extension in every class folder (case-insensitive), so re-encoded copies still load.
A description entry (dict keyed by image file name) becomes ``meta["explanation"]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.datasets.common import Entry, ListedDataset, list_images, list_subdirs
from bench.errors import UserError
from bench.types import TAMPERED, LabelSpace

CLASS_FOLDERS = ("real", "full_synthetic", "tampered")
"""Class folder names in label order (0, 1, 2)."""


def load_descriptions(split_dir: Path, class_name: str) -> dict[str, str]:
    """``description/<class>_GT.json`` as {image file name: text}; empty when absent."""
    path = split_dir / "description" / f"{class_name}_GT.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"SID-Set description file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"SID-Set description file {path}: expected an object keyed by image file name")
    return {str(k): str(v) for k, v in data.items()}


class SidSetFolders(ListedDataset):
    """SID-Set from the official folders (see module docstring for layout and conventions)."""

    name = "sid_set"
    label_space = LabelSpace.TERNARY

    def _list(self) -> list[Entry]:
        split_dir = self.root / self.split
        if not split_dir.is_dir():
            found = [d.name for d in list_subdirs(self.root) if any((d / c).is_dir() for c in CLASS_FOLDERS)]
            raise UserError(f"SID-Set has no split {self.split!r} under {self.root} (expected {split_dir}/"
                            f"{{{','.join(CLASS_FOLDERS)}}}); "
                            + (f"splits found: {', '.join(found)}" if found else "no split folder found there")
                            + " (set the dataset's split in the protocol, or --split for data summary)")
        missing = [c for c in CLASS_FOLDERS if not (split_dir / c).is_dir()]
        if len(missing) == len(CLASS_FOLDERS):
            raise UserError(f"SID-Set split folder {split_dir} has none of the class folders {CLASS_FOLDERS}")
        entries: list[Entry] = []
        without_mask = 0
        described = 0
        masks_used: set[str] = set()
        for label, class_name in enumerate(CLASS_FOLDERS):
            descriptions = load_descriptions(split_dir, class_name)
            images = list_images(split_dir / class_name, self.listing_log)
            for name in sorted(set(descriptions) - {p.name for p in images}):
                where = f"{split_dir / 'description'}/{class_name}_GT.json: {name}"
                self.listing_log.add("descriptions_without_image", where)
            for path in images:
                meta: dict[str, Any] = {"source": class_name, "path": str(path)}
                mask: Path | None = None
                if label == TAMPERED:
                    candidate = split_dir / "masks" / f"{path.stem}_mask.png"
                    if candidate.is_file() or candidate.is_symlink():  # a broken link fails when decoded
                        mask = candidate
                        meta["mask_path"] = str(candidate)
                        masks_used.add(candidate.name)
                    else:
                        without_mask += 1
                        self.listing_log.add("tampered_without_mask", path)
                        if self.decoder.missing_mask == "official":
                            continue
                if path.name in descriptions:
                    meta["explanation"] = descriptions[path.name]
                    described += 1
                entries.append(Entry(f"{class_name}/{path.stem}", label, path, mask, meta))
        masks_dir = split_dir / "masks"
        for orphan in (p for p in list_images(masks_dir) if p.name not in masks_used):
            self.listing_log.add("masks_without_image", orphan)
        self.listing_problems = {
            "missing_class_folders": len(missing),
            "tampered_without_mask": without_mask,
            "tampered_without_mask_dropped": without_mask if self.decoder.missing_mask == "official" else 0,
            "with_explanation": described,
        }
        return entries
