"""DMImage (Corvi et al., ICASSP 2023; grip-unina/DMimageDetection) test layout, and its
``operations.csv`` processing.

Layout: one flat folder per source directly under the root. A folder whose name contains
``real`` is real (label 0); every other folder is one generator (label 1, binary).
``meta["source"]`` is the folder name, ``meta["generator"]`` a readable alias and
``meta["group"]`` the paper's family (``"real"``, ``"gan"``, ``"diffusion"``, or ``"other"`` for
unknown folders). Ids are ``"<folder>/<stem>"``; order is folder name, then file name.

``operations.csv`` (columns ``src, cropsize, x1, y1, qf``) describes the paper's
"social network" scenario: crop the square (x1, y1, x1+cropsize, y1+cropsize), resize to 200x200
(LANCZOS when cropsize > 200, else BICUBIC: the original ``ANTIALIAS``/``CUBIC`` names no longer
exist in Pillow) and save as PIL JPEG at quality ``qf``. :func:`apply_operations` regenerates it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from bench.datasets.common import Entry, ListedDataset, list_images, list_subdirs, require_dir
from bench.errors import UserError
from bench.progress import track
from bench.types import LabelSpace

# folder-name prefix -> (readable generator name, group); the longest matching prefix wins.
GENERATORS: dict[str, tuple[str, str]] = {
    "progan": ("ProGAN", "gan"),
    "stylegan2": ("StyleGAN2", "gan"),
    "stylegan3": ("StyleGAN3", "gan"),
    "biggan": ("BigGAN", "gan"),
    "eg3d": ("EG3D", "gan"),
    "taming-transformers": ("Taming Transformers", "gan"),
    "dalle-mini": ("DALL·E Mini", "diffusion"),
    "dalle_2": ("DALL·E 2", "diffusion"),
    "glide": ("GLIDE", "diffusion"),
    "latent-diffusion": ("Latent Diffusion", "diffusion"),
    "stable_diffusion": ("Stable Diffusion", "diffusion"),
    "guided-diffusion": ("ADM", "diffusion"),
}
"""Folder prefixes of the DMImage test set with their readable names and paper groups
(Taming Transformers and DALL·E Mini follow the paper's split of GAN-like vs diffusion-like
generators; DALL·E Mini is a VQGAN-based transformer listed among the non-GAN models)."""

OUTPUT_SIZE = 200


def generator_info(folder: str, generators: Mapping[str, tuple[str, str]] = GENERATORS) -> tuple[str, str]:
    """(readable name, group) of a source folder; real folders give (folder, "real")."""
    if "real" in folder.lower():
        return folder, "real"
    matches = [prefix for prefix in generators if folder.lower().startswith(prefix)]
    if not matches:
        return folder, "other"
    return generators[max(matches, key=len)]


class DMImage(ListedDataset):
    """DMImage-style flat folders (see module docstring). The split argument is recorded only:
    the released test set has no split folders. Option ``generators`` overrides the alias table."""

    name = "dmimage"
    label_space = LabelSpace.BINARY
    splits = ("test",)
    extra_options = ("generators",)

    def _list(self) -> list[Entry]:
        root = require_dir(self.root, "DMImage root")
        generators = self.extra.get("generators") or GENERATORS
        folders = list_subdirs(root)
        if not folders:
            raise UserError(f"DMImage root {root} has no source folders")
        entries: list[Entry] = []
        for folder in folders:
            alias, group = generator_info(folder.name, generators)
            label = 0 if group == "real" else 1
            for path in list_images(folder, self.listing_log):
                meta = {"source": folder.name, "generator": alias, "group": group, "path": str(path)}
                entries.append(Entry(f"{folder.name}/{path.stem}", label, path, None, meta))
        return entries


# ----------------------------------------------------------------------------- operations.csv


@dataclass(frozen=True)
class Operation:
    """One row of ``operations.csv``: crop a square at (x1, y1), resize to 200, JPEG at ``qf``."""

    src: str
    cropsize: int
    x1: int
    y1: int
    qf: int


def read_operations(csv_path: Path) -> list[Operation]:
    """Parse ``operations.csv`` (header row, positional columns ``src, cropsize, x1, y1, qf``)."""
    try:
        with open(csv_path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise UserError(f"cannot read operations file {csv_path}: {exc}") from exc
    ops = []
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            ops.append(Operation(row[0], int(row[1]), int(row[2]), int(row[3]), int(row[4])))
        except (IndexError, ValueError) as exc:
            raise UserError(f"{csv_path}:{n}: expected 'src,cropsize,x1,y1,qf', got {row!r}") from exc
    return ops


def process_image(image: Image.Image, op: Operation) -> bytes:
    """Apply one operation to a PIL image and return the JPEG bytes (RGB, 200x200)."""
    crop = image.convert("RGB").crop((op.x1, op.y1, op.x1 + op.cropsize, op.y1 + op.cropsize))
    resample = Image.Resampling.LANCZOS if op.cropsize > OUTPUT_SIZE else Image.Resampling.BICUBIC
    out = crop.resize((OUTPUT_SIZE, OUTPUT_SIZE), resample)
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=op.qf)
    return buf.getvalue()


def _find_source(src_root: Path, src: str) -> Path | None:
    """The file named in ``src``, retrying ``.png`` then ``.tif`` as the official script does."""
    path = src_root / src
    for candidate in (path, path.with_suffix(".png"), path.with_suffix(".tif")):
        if candidate.is_file():
            return candidate
    return None


def apply_operations(csv_path: Path, src_root: Path, out_root: Path) -> dict[str, Any]:
    """Regenerate the processed DMImage test set from raw images.

    Writes ``out_root/<src folder>/<stem>.jpg`` for every CSV row whose source exists under
    ``src_root``; returns counts and the list of missing sources (never silently skipped).
    """
    ops = read_operations(csv_path)
    missing: list[str] = []
    written = 0
    for op in track(ops, "processing operations.csv"):
        path = _find_source(src_root, op.src)
        if path is None:
            missing.append(op.src)
            continue
        with Image.open(path) as img:
            data = process_image(img, op)
        target = out_root / Path(op.src).parent / f"{Path(op.src).stem}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written += 1
    return {"rows": len(ops), "written": written, "missing": missing}
