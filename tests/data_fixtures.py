"""Writers of small fixture files and trees in the exact official dataset layouts (used by dataset tests)."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

H, W = 20, 30  # fixture image size (rows, columns)


def rgb(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_bytes(image: Image.Image | np.ndarray) -> bytes:
    img = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(image: Image.Image | np.ndarray, **kw: object) -> bytes:
    img = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def exif_rotated_jpeg() -> bytes:
    """A stored W x H JPEG (left half red, right half blue) with EXIF orientation 6 (rotate 90° CW)."""
    arr = np.zeros((H, W, 3), np.uint8)
    arr[:, : W // 2] = (255, 0, 0)
    arr[:, W // 2:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg_bytes(arr, exif=exif.tobytes())


def cmyk_jpeg(cmyk: tuple[int, int, int, int] = (0, 0, 0, 0)) -> bytes:
    return jpeg_bytes(Image.new("CMYK", (W, H), cmyk))


def png16(values: np.ndarray) -> bytes:
    return png_bytes(Image.fromarray(values.astype(np.uint16)))


def palette_png(transparent_index: int | None = None) -> tuple[bytes, np.ndarray]:
    """A palette PNG of indices 0..3 with a 4-colour palette; returns bytes and the expected RGB."""
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], np.uint8)
    idx = (np.arange(H * W).reshape(H, W) % 4).astype(np.uint8)
    img = Image.fromarray(idx, mode="P")
    img.putpalette(palette.ravel().tolist())
    kw = {} if transparent_index is None else {"transparency": transparent_index}
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue(), palette[idx]


def truncated_jpeg() -> bytes:
    data = jpeg_bytes(rgb(1))
    return data[: len(data) // 2]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` (a decompression-bomb header), no pixel data."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def grey_mask(values: np.ndarray) -> bytes:
    return png_bytes(values.astype(np.uint8))


def box_mask(h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[h // 4: h // 2, w // 4: w // 2] = 255
    return m


# SID-Set fixture: file name -> (bytes, expected outcome) ------------------------------------------------

EXPECTED_ERRORS = {"real/r_trunc", "real/r_zero", "full_synthetic/f_text", "tampered/t_colourmask"}


def write_sid_set_tree(root: Path, split: str = "test") -> Path:
    """Write ``root/<split>/...`` in the official SID-Set folder layout with one of every problem.

    real: r_ok.jpg, r_cmyk.jpg, r_exif.jpg (EXIF 6), r_trunc.jpg (truncated), r_zero.jpg (0 bytes),
          r_16bit.png, r_palette.png
    full_synthetic: f_ok.png, f_rgba.png, f_text.png (not an image)
    tampered: t_ok.png (+mask), t_nomask.png (no mask), t_small.png (+half-size mask),
              t_colourmask.png (+RGB mask with differing channels)
    description/tampered_GT.json describes t_ok.png.
    """
    d = root / split
    files: dict[str, bytes] = {
        "real/r_ok.jpg": jpeg_bytes(rgb(0)),
        "real/r_cmyk.jpg": cmyk_jpeg(),
        "real/r_exif.jpg": exif_rotated_jpeg(),
        "real/r_trunc.jpg": truncated_jpeg(),
        "real/r_zero.jpg": b"",
        "real/r_16bit.png": png16(np.full((H, W), 257 * 100)),
        "real/r_palette.png": palette_png()[0],
        "full_synthetic/f_ok.png": png_bytes(rgb(2)),
        "full_synthetic/f_rgba.png": png_bytes(np.dstack([rgb(3), np.full((H, W), 128, np.uint8)])),
        "full_synthetic/f_text.png": b"this is not an image",
        "tampered/t_ok.png": png_bytes(rgb(4)),
        "tampered/t_nomask.png": png_bytes(rgb(5)),
        "tampered/t_small.png": png_bytes(rgb(6)),
        "tampered/t_colourmask.png": png_bytes(rgb(7)),
        "masks/t_ok_mask.png": grey_mask(box_mask()),
        "masks/t_small_mask.png": grey_mask(box_mask(H // 2, W // 2)),
        "masks/t_colourmask_mask.png": png_bytes(rgb(8)),
        "description/tampered_GT.json": json.dumps({"t_ok.png": "The box was pasted."}).encode(),
    }
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    return root


HF_SCHEMA = pa.schema([
    ("img_id", pa.string()),
    ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
    ("mask", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
    ("width", pa.int64()),
    ("height", pa.int64()),
    ("label", pa.int64()),
])


def folder_rows(split_dir: Path) -> list[dict]:
    """HF SID_Set rows for the images of a folder split (class folders in label order, sorted names)."""
    rows = []
    for label, cls in enumerate(("real", "full_synthetic", "tampered")):
        for path in sorted((split_dir / cls).iterdir()):
            mask = split_dir / "masks" / f"{path.stem}_mask.png"
            rows.append({
                "img_id": path.name,
                "image": {"bytes": path.read_bytes(), "path": path.name},
                "mask": {"bytes": mask.read_bytes(), "path": mask.name} if mask.is_file() else None,
                "width": W, "height": H, "label": label,
            })
    return rows


def write_parquet_shards(root: Path, split: str, rows: list[dict], shards: int = 2, row_group_size: int = 3,
                         schema: pa.Schema = HF_SCHEMA) -> list[Path]:
    """Write ``rows`` as ``root/data/<split>-0000k-of-0000n.parquet`` (the HF layout)."""
    paths = []
    per = -(-len(rows) // shards)
    for k in range(shards):
        path = root / "data" / f"{split}-{k:05d}-of-{shards:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(rows[k * per:(k + 1) * per], schema=schema)
        pq.write_table(table, path, row_group_size=row_group_size)
        paths.append(path)
    return paths
