"""Build the embedded ``sid-mini`` benchmark (SID-Set layout) and ``dmimage-mini`` (DMImage layout).

Output tree (``root``)::

    manifest.json                      builder version, parameters, counts, sha256 of every file
    sid_set/<split>/{real,full_synthetic,tampered}/<class>_<i>.png
    sid_set/<split>/masks/tampered_<i>_mask.png        (0/255 grey PNG)
    sid_set/<split>/description/<class>_GT.json          (reference descriptions of a subset, SIDA format)
    parquet/data/<split>-<k>-of-<n>.parquet             (HF SID_Set columns, same images and ids)
    dmimage/{real_sidmini,tconv_heldout_seeds,nearest_conv}/<i>.png
    provenance/<split>.csv, provenance/dmimage.csv       (photo, crop, fingerprint, strength, area)

Every sample is drawn from its own generator seeded by (seed, split, class, index), so the bytes
are identical on every run with the same package versions. Every image is a lossless PNG
(unlike SID-Set, whose reals are JPEG), so the file format is no cue, and an *uncompressed* one
(zlib level 0), so the file size depends on the image size only: compressed PNGs of fakes are
larger (their up-sampling trace is high-frequency detail), a shortcut that ``sida-bench data
audit`` flagged in builder version 1 (bytes-per-pixel AUC 0.61-0.66).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from bench.errors import UserError
from bench.progress import make_progress
from bench.sidmini.descriptions import describe, is_described
from bench.sidmini.generator import Fingerprint, draw_strength, make_family, synthesize
from bench.sidmini.photos import SPLIT_PHOTOS, load_photos, random_crop
from bench.sidmini.tamper import blend, object_region

BUILDER_VERSION = 3
"""2: uncompressed image PNGs (zlib level 0, :data:`IMAGE_COMPRESS_LEVEL`), so the file size is no cue;
3: reference descriptions in the SIDA-description format for a subset (images and masks as in version 2)."""
DEFAULT_SIZE = 96
DEFAULT_PER_CLASS: dict[str, int] = {"train": 400, "validation": 100, "test": 300}
SMALL_PER_CLASS: dict[str, int] = {"train": 6, "validation": 3, "test": 6}
SMALL_SIZE = 32
FAMILY_SIZE = 16
ROWS_PER_SHARD = 256
ROW_GROUP_SIZE = 32
CLASSES = ("real", "full_synthetic", "tampered")
DMIMAGE_FOLDERS = ("real_sidmini", "tconv_heldout_seeds", "nearest_conv")
MANIFEST = "manifest.json"


@dataclass
class Item:
    """One generated image with its folder, file stem, optional mask and provenance."""

    folder: str
    stem: str
    image: np.ndarray
    mask: np.ndarray | None = None
    description: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)


IMAGE_COMPRESS_LEVEL = 0
"""zlib level of image PNGs: 0 (stored), so bytes per pixel is the same for every class."""
MASK_COMPRESS_LEVEL = 1


def encode_png(array: np.ndarray, compress_level: int = MASK_COMPRESS_LEVEL) -> bytes:
    """Deterministic PNG bytes (no metadata, fixed compression level)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def families(seed: int) -> dict[str, list[Fingerprint]]:
    """The in-domain family and the two held-out ones (disjoint seeds)."""
    base = seed * 10_000
    return {
        "train": make_family("tconv", range(base, base + FAMILY_SIZE)),
        "tconv_heldout_seeds": make_family("tconv", range(base + 1000, base + 1000 + FAMILY_SIZE)),
        "nearest_conv": make_family("nearest_conv", range(base + 2000, base + 2000 + FAMILY_SIZE)),
    }


def _fake(crop: np.ndarray, family: list[Fingerprint], rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    fp = family[int(rng.integers(len(family)))]
    strength = draw_strength(rng)
    return synthesize(crop, fp, strength), {"fingerprint": fp.name, "strength": round(strength, 4)}


def make_item(split_index: int, label: int, index: int, size: int, seed: int,
              photos: dict[str, np.ndarray], family: list[Fingerprint]) -> Item:
    """Sample ``index`` of class ``label`` (0 real, 1 full synthetic, 2 tampered) of one split."""
    rng = np.random.default_rng([seed, split_index, label, index])
    names = sorted(photos)
    photo = names[index % len(names)]
    crop, (top, left) = random_crop(photos[photo], size, rng)
    cls = CLASSES[label]
    prov: dict[str, Any] = {"photo": photo, "top": top, "left": left}
    stem = f"{cls}_{index:05d}"
    if label == 0:
        return Item(cls, stem, crop, None, describe(0, photo) if is_described(index) else "", prov)
    generated, fake_prov = _fake(crop, family, rng)
    prov.update(fake_prov)
    if label == 1:
        return Item(cls, stem, generated, None, describe(1, photo) if is_described(index) else "", prov)
    mask = object_region(crop, rng)
    prov["area"] = round(float(mask.mean()), 4)
    text = describe(2, photo, mask) if is_described(index) else ""
    return Item(cls, stem, blend(crop, generated, mask), mask, text, prov)


def make_dmimage_item(folder_index: int, index: int, size: int, seed: int,
                      photos: dict[str, np.ndarray], fams: dict[str, list[Fingerprint]]) -> Item:
    rng = np.random.default_rng([seed, 99, folder_index, index])
    names = sorted(photos)
    photo = names[index % len(names)]
    crop, (top, left) = random_crop(photos[photo], size, rng)
    folder = DMIMAGE_FOLDERS[folder_index]
    prov: dict[str, Any] = {"photo": photo, "top": top, "left": left}
    if folder_index == 0:
        return Item(folder, f"{index:05d}", crop, provenance=prov)
    image, fake_prov = _fake(crop, fams[folder], rng)
    prov.update(fake_prov)
    return Item(folder, f"{index:05d}", image, provenance=prov)


# ------------------------------------------------------------------------------------------ writing


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_provenance(path: Path, items: list[Item]) -> None:
    columns = ["folder", "stem", "photo", "top", "left", "fingerprint", "strength", "area"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        for it in items:
            writer.writerow([it.folder, it.stem] + [it.provenance.get(c, "") for c in columns[2:]])


def _write_parquet(out: Path, split: str, rows: list[dict[str, Any]]) -> None:
    schema = pa.schema([
        ("img_id", pa.string()),
        ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("mask", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("label", pa.int64()),
        ("description", pa.string()),
    ])
    shards = max(1, -(-len(rows) // ROWS_PER_SHARD))
    for k in range(shards):
        chunk = rows[k * ROWS_PER_SHARD:(k + 1) * ROWS_PER_SHARD]
        table = pa.Table.from_pylist(chunk, schema=schema)
        path = out / "data" / f"{split}-{k:05d}-of-{shards:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, row_group_size=ROW_GROUP_SIZE, compression="snappy")


def _write_split(root: Path, split: str, items: list[Item]) -> None:
    split_dir = root / "sid_set" / split
    rows: list[dict[str, Any]] = []
    descriptions: dict[str, dict[str, str]] = {c: {} for c in CLASSES}
    for it in items:
        png = encode_png(it.image, IMAGE_COMPRESS_LEVEL)
        _write(split_dir / it.folder / f"{it.stem}.png", png)
        mask_png = None
        if it.mask is not None:
            mask_png = encode_png(it.mask.astype(np.uint8) * 255)
            _write(split_dir / "masks" / f"{it.stem}_mask.png", mask_png)
        if it.description:
            descriptions[it.folder][f"{it.stem}.png"] = it.description
        rows.append({
            "img_id": it.stem, "image": {"bytes": png, "path": f"{it.stem}.png"},
            "mask": {"bytes": mask_png, "path": f"{it.stem}_mask.png"} if mask_png else None,
            "width": int(it.image.shape[1]), "height": int(it.image.shape[0]),
            "label": CLASSES.index(it.folder), "description": it.description or None,
        })
    for cls, table in descriptions.items():
        _write(split_dir / "description" / f"{cls}_GT.json", json.dumps(table, indent=1, sort_keys=True).encode())
    _write_parquet(root / "parquet", split, rows)
    _write_provenance(root / "provenance" / f"{split}.csv", items)


def tree_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` except the manifest, keyed by POSIX relative path."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel != MANIFEST:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def combined_hash(files: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{k}\0{v}\n" for k, v in sorted(files.items())).encode()).hexdigest()


def build_params(per_class: dict[str, int] | None, size: int, seed: int) -> dict[str, Any]:
    counts = dict(DEFAULT_PER_CLASS if per_class is None else per_class)
    unknown = sorted(set(counts) - set(SPLIT_PHOTOS))
    if unknown or any(int(n) < 1 for n in counts.values()):
        raise UserError(f"per_class must map splits {sorted(SPLIT_PHOTOS)} to positive counts, got {counts}")
    if size < 16 or size % 2:
        raise UserError(f"sid-mini crop size must be an even number >= 16, got {size}")
    return {"builder_version": BUILDER_VERSION, "per_class": {k: int(v) for k, v in sorted(counts.items())},
            "size": int(size), "seed": int(seed), "dmimage_per_folder": int(counts.get("test", max(counts.values())))}


def _generate_into(tmp: Path, params: dict[str, Any]) -> dict[str, Any]:
    size, seed = params["size"], params["seed"]
    fams = families(seed)
    splits = list(params["per_class"].items())
    total = sum(3 * n for _, n in splits) + 3 * params["dmimage_per_folder"]
    counts: dict[str, Any] = {}
    with make_progress(transient=True) as progress:
        task = progress.add_task("building sid-mini", total=total)
        for split, n in splits:
            photos = load_photos(SPLIT_PHOTOS[split])
            split_index = list(SPLIT_PHOTOS).index(split)
            items = []
            for label in range(3):
                for i in range(n):
                    items.append(make_item(split_index, label, i, size, seed, photos, fams["train"]))
                    progress.advance(task)
            _write_split(tmp, split, items)
            counts[split] = {c: n for c in CLASSES}
        photos = load_photos(SPLIT_PHOTOS["test"])
        dm_items = []
        for f in range(len(DMIMAGE_FOLDERS)):
            for i in range(params["dmimage_per_folder"]):
                it = make_dmimage_item(f, i, size, seed, photos, fams)
                _write(tmp / "dmimage" / it.folder / f"{it.stem}.png", encode_png(it.image, IMAGE_COMPRESS_LEVEL))
                dm_items.append(it)
                progress.advance(task)
        _write_provenance(tmp / "provenance" / "dmimage.csv", dm_items)
        counts["dmimage"] = {folder: params["dmimage_per_folder"] for folder in DMIMAGE_FOLDERS}
    return counts


def read_manifest(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def build_sid_mini(out_dir: Path, *, per_class: dict[str, int] | None = None, size: int = DEFAULT_SIZE,
                   seed: int = 0) -> Path:
    """Build sid-mini and dmimage-mini into ``out_dir`` (replacing an earlier build there) and return it.

    ``per_class``: images per class for each split (default 400/100/300 for train/validation/test;
    dmimage-mini gets the test count per folder); ``size``: square crop side in pixels (even);
    ``seed``: selects crops, fingerprints and strengths. Raises UserError if ``out_dir`` holds
    something that is not a sid-mini build.
    """
    out_dir = Path(out_dir).expanduser()
    params = build_params(per_class, size, seed)
    if out_dir.exists() and any(out_dir.iterdir()) and read_manifest(out_dir) is None:
        raise UserError(f"{out_dir} exists and is not a sid-mini build; choose an empty or new folder")
    tmp = out_dir.with_name(f".{out_dir.name}.building-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        counts = _generate_into(tmp, params)
        files = tree_hashes(tmp)
        manifest = {"name": "sid-mini", "params": params, "counts": counts,
                    "tree_sha256": combined_hash(files), "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out_dir


def default_cache_dir() -> Path:
    """``$SIDA_BENCH_CACHE``, else the platform's user cache folder + ``sida-bench``."""
    env = os.environ.get("SIDA_BENCH_CACHE")
    if env:
        return Path(env).expanduser()
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "sida-bench" / "Cache"
    if os.uname().sysname == "Darwin":
        return Path.home() / "Library" / "Caches" / "sida-bench"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sida-bench"


def is_valid_build(root: Path, params: dict[str, Any]) -> bool:
    """True when ``root`` holds a complete build with these parameters and unmodified files."""
    manifest = read_manifest(root)
    if manifest is None or manifest.get("params") != params:
        return False
    return combined_hash(tree_hashes(root)) == manifest.get("tree_sha256")


def ensure_sid_mini(cache_dir: Path | None = None, *, per_class: dict[str, int] | None = None,
                    size: int = DEFAULT_SIZE, seed: int = 0) -> Path:
    """The root of a valid sid-mini build under ``cache_dir`` (default :func:`default_cache_dir`),
    building it first when it is missing, incomplete, modified or built with other parameters."""
    params = build_params(per_class, size, seed)
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / f"sid-mini-v{BUILDER_VERSION}-{key}"
    if is_valid_build(target, params):
        return target
    return build_sid_mini(target, per_class=params["per_class"], size=size, seed=seed)
