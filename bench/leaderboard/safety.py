"""Confined, bounded reading of an untrusted submission folder.

Rules (each a :class:`Problem`, never an exception that escapes validation):

- every path named by the submission is relative, stays inside the folder after resolving
  ``..`` and symlinks, and names a regular file (no FIFO, device or directory);
- a symlink anywhere in the folder that points outside it is refused;
- sizes are checked with ``stat`` before a byte is read (:data:`LIMITS`);
- text files must be UTF-8 (the line of the first bad byte is named);
- masks: the PNG header's width and height (or the ``.npy`` header's shape) must equal the
  image's size before anything is decoded, so a decompression bomb is never expanded.

Nothing is written: validation only reads, inside the folder.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Upper bounds, in bytes unless named otherwise."""

    manifest: int = 64 * 1024
    predictions: int = 512 * MiB
    mask: int = 32 * MiB
    total: int = 8 * 1024 * MiB
    files: int = 200_000
    mask_pixels: int = 64_000_000


LIMITS = Limits()


@dataclass(frozen=True, order=True)
class Problem:
    """One problem of a submission: the file (relative to the folder), the 1-based data row (the
    line, for YAML) and the column (or YAML key) when they apply, and what is wrong."""

    file: str
    row: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        unit = "line" if self.file.endswith((".yaml", ".yml")) else "row"
        where = self.file + (f": {unit} {self.row}" if self.row is not None else "")
        where += f", column {self.column}" if self.column else ""
        return f"{where}: {self.message}"


class Refused(Exception):
    """A path or file that must not be read; the message is one line for a :class:`Problem`."""


def confined(root: Path, relative: str) -> Path:
    """``root / relative`` resolved, if it stays inside ``root`` and is a regular file."""
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise Refused("an empty or invalid path")
    rel = Path(relative)
    if rel.is_absolute() or relative.startswith(("/", "\\")) or (len(relative) > 1 and relative[1] == ":"):
        raise Refused(f"{relative!r} is an absolute path; paths must be relative to the submission folder")
    if ".." in rel.parts:
        raise Refused(f"{relative!r} leaves the submission folder ('..' is not allowed)")
    base = root.resolve()
    target = (base / rel).resolve()
    if not target.is_relative_to(base):
        raise Refused(f"{relative!r} is a symlink that points outside the submission folder")
    try:
        st = os.stat(target)
    except FileNotFoundError:
        raise Refused(f"{relative!r} does not exist") from None
    except OSError as exc:
        raise Refused(f"{relative!r} cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise Refused(f"{relative!r} is not a regular file")
    return target


def check_size(path: Path, limit: int, what: str) -> None:
    size = path.stat().st_size
    if size > limit:
        raise Refused(f"{what} is {size:,} bytes; the limit is {limit:,}")


def read_utf8(path: Path, limit: int, what: str) -> str:
    """The file's text, after the size check; a non-UTF-8 byte names its line."""
    check_size(path, limit, what)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise Refused(f"{what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line})") from None


def scan_tree(root: Path, limits: Limits = LIMITS) -> list[Problem]:
    """Symlinks out of the folder, too many files, too many bytes (nothing is opened)."""
    problems: list[Problem] = []
    base = root.resolve()
    total = count = 0
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(base).as_posix()
            if path.is_symlink():
                if not path.resolve().is_relative_to(base):
                    problems.append(Problem(rel, None, None, "symlink points outside the submission folder; refused"))
                continue
            if name in filenames:
                count += 1
                total += path.lstat().st_size
    if count > limits.files:
        problems.append(Problem(".", None, None, f"{count:,} files; the limit is {limits.files:,}"))
    if total > limits.total:
        problems.append(Problem(".", None, None, f"{total:,} bytes in all; the limit is {limits.total:,}"))
    return problems


def mask_header(path: Path, limits: Limits = LIMITS) -> tuple[int, int]:
    """(H, W) of a mask from its header only (PNG/other Pillow formats or ``.npy``)."""
    check_size(path, limits.mask, "mask file")
    if path.suffix.lower() == ".npy":
        with open(path, "rb") as fh:
            try:
                major, _ = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(fh)
            except (ValueError, OSError) as exc:
                raise Refused(f"not a valid .npy file ({exc})") from None
        if dtype.hasobject or dtype.kind not in "fub":
            raise Refused(f".npy dtype {dtype} is not a number type")
        if len(shape) != 2:
            raise Refused(f".npy mask must be 2-D (H, W), got shape {shape}")
        return int(shape[0]), int(shape[1])
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
    except Image.DecompressionBombError as exc:
        raise Refused(f"refused as a decompression bomb ({exc})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise Refused(f"not a readable image ({exc})") from None
    if w * h > limits.mask_pixels:
        raise Refused(f"declares {w}x{h} pixels; the limit is {limits.mask_pixels:,}")
    return h, w
