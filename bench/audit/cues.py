"""Non-visual cues of an image file, read from its header (no pixel decoding).

Each cue is a small feature vector that a trivial classifier can use to predict the label
without looking at the picture (see :mod:`bench.audit.shortcut`):

- ``format``: the container read from the file's magic bytes and the file-name extension
  (one-hot over the values seen in the split);
- ``jpeg_quality``: is it a JPEG, and the estimated IJG quality of its quantisation tables
  (:mod:`bench.audit.jpeg_quality`; 0 for other formats);
- ``size``: height and width in pixels (as stored, before any EXIF rotation);
- ``aspect``: width / height;
- ``metadata``: EXIF present, ICC profile present;
- ``bytes_per_pixel``: file size / (height × width).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from bench.audit.jpeg_quality import estimate_quality
from bench.decode import Source

CUES = ("format", "jpeg_quality", "size", "aspect", "metadata", "bytes_per_pixel")
"""The cue names, in report order."""


@dataclass(frozen=True)
class FileCues:
    """The raw cue values of one file (``error`` set when its header cannot be read)."""

    format: str
    extension: str
    height: int
    width: int
    n_bytes: int
    jpeg_quality: int
    has_exif: bool
    has_icc: bool
    error: str | None = None

    def features(self, cue: str, categories: dict[str, list[str]]) -> list[float]:
        """The feature vector of ``cue`` (one-hot columns follow ``categories``)."""
        if cue == "format":
            return ([float(self.format == c) for c in categories["format"]]
                    + [float(self.extension == c) for c in categories["extension"]])
        if cue == "jpeg_quality":
            return [float(self.format == "JPEG"), float(self.jpeg_quality)]
        if cue == "size":
            return [float(self.height), float(self.width)]
        if cue == "aspect":
            return [self.width / self.height if self.height else 0.0]
        if cue == "metadata":
            return [float(self.has_exif), float(self.has_icc)]
        if cue == "bytes_per_pixel":
            pixels = self.height * self.width
            return [self.n_bytes / pixels if pixels else 0.0]
        raise ValueError(f"unknown cue {cue!r}; known: {', '.join(CUES)}")


def _extension(source: Source, name: str | None) -> str:
    if name is None and not isinstance(source, bytes):
        name = str(source)
    return Path(name).suffix.lower().lstrip(".") if name else ""


def read_cues(source: Source, name: str | None = None) -> FileCues:
    """The cues of a file path or encoded bytes (``name``: a file name for bytes, for the extension)."""
    ext = _extension(source, name)
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))  # the header only: no pixel is decoded
        with im:
            width, height = im.size
            fmt = str(im.format or "unknown")
            quality = 0
            if fmt == "JPEG" and getattr(im, "quantization", None):
                quality = estimate_quality({k: list(v) for k, v in im.quantization.items()}).quality
            exif = bool(im.info.get("exif")) or bool(im.getexif())
            icc = bool(im.info.get("icc_profile"))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        return FileCues("unreadable", ext, 0, 0, 0, 0, False, False, error=f"{type(exc).__name__}: {exc}")
    return FileCues(fmt, ext, int(height), int(width), len(data), quality, exif, icc)


def categories_of(cues: list[FileCues]) -> dict[str, list[str]]:
    """The format and extension values seen, sorted (the one-hot columns of ``format``)."""
    return {"format": sorted({c.format for c in cues}), "extension": sorted({c.extension for c in cues})}


def summary(cues: list[FileCues], labels: list[int], class_names: tuple[str, ...]) -> dict[str, Any]:
    """Per class: counts of formats and extensions, JPEG qualities, sizes, metadata, bytes per pixel."""
    out: dict[str, Any] = {}
    for k, name in enumerate(class_names):
        mine = [c for c, y in zip(cues, labels) if y == k]
        if not mine:
            continue
        bpp = [c.n_bytes / (c.height * c.width) for c in mine if c.height and c.width]
        out[name] = {
            "n": len(mine),
            "formats": _counts(c.format for c in mine),
            "extensions": _counts(c.extension for c in mine),
            "jpeg_qualities": _counts(str(c.jpeg_quality) for c in mine if c.format == "JPEG"),
            "sizes": dict(list(_counts(f"{c.height}x{c.width}" for c in mine).items())[:10]),
            "with_exif": sum(c.has_exif for c in mine),
            "with_icc": sum(c.has_icc for c in mine),
            "bytes_per_pixel_mean": round(sum(bpp) / len(bpp), 4) if bpp else None,
        }
    return out


def _counts(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
