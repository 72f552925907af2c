"""Submissions packed as ``.zip``, ``.tar``, ``.tar.gz`` / ``.tgz``: unpacked, member by member,
into a fresh temporary folder that is removed afterwards.

Refused (nothing is written outside the temporary folder): absolute member names, ``..``,
links and device members, more than ``Limits.files`` members, a member larger than
``Limits.predictions``, or a total larger than ``Limits.total`` or than ``MAX_RATIO`` times the
archive's own size (a zip bomb stops after a few bytes per byte of archive). Bytes are counted
while copying, so a lying header does not help.
"""

from __future__ import annotations

import contextlib
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from bench.errors import UserError
from bench.leaderboard.safety import LIMITS, Limits

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
CHUNK = 1 << 20
MAX_RATIO = 200
"""Largest accepted ratio of unpacked bytes to archive bytes (CSV compresses about 5-10x)."""


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


@contextlib.contextmanager
def opened(path: str | Path, limits: Limits = LIMITS) -> Iterator[Path]:
    """The submission folder: ``path`` itself, or an archive unpacked into a temporary folder."""
    p = Path(path)
    if not is_archive(p):
        yield p
        return
    tmp = Path(tempfile.mkdtemp(prefix="sida-submission-"))
    try:
        _unpack(p, tmp, limits)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _member_path(archive: Path, name: str, dest: Path) -> Path:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
        raise UserError(f"{archive}: member {name!r} would be written outside the submission folder; refused")
    return dest.joinpath(*pure.parts)


def _copy(src: IO[bytes], target: Path, archive: Path, name: str, budget: list[int], limits: Limits) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(target, "wb") as out:
        while chunk := src.read(CHUNK):
            written += len(chunk)
            budget[0] -= len(chunk)
            if written > limits.predictions or budget[0] < 0:
                raise UserError(f"{archive}: member {name!r} unpacks past the size limit ({limits.predictions:,} "
                                f"bytes per file; {MAX_RATIO}x the archive or {limits.total:,} in all); refused")
            out.write(chunk)


def _unpack(archive: Path, dest: Path, limits: Limits) -> None:
    budget = [min(limits.total, MAX_RATIO * archive.stat().st_size + CHUNK)]
    if archive.name.lower().endswith(".zip"):
        try:
            zf = zipfile.ZipFile(archive)
        except zipfile.BadZipFile as exc:
            raise UserError(f"{archive}: not a readable zip archive ({exc})") from None
        with zf:
            infos = zf.infolist()
            if len(infos) > limits.files:
                raise UserError(f"{archive}: {len(infos):,} members; the limit is {limits.files:,}")
            for info in infos:
                target = _member_path(archive, info.filename, dest)
                if (info.external_attr >> 16) & 0o170000 == 0o120000:
                    raise UserError(f"{archive}: member {info.filename!r} is a symlink; refused")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                with zf.open(info) as src:
                    _copy(src, target, archive, info.filename, budget, limits)
        return
    try:
        tf = tarfile.open(archive)
    except (tarfile.TarError, OSError) as exc:
        raise UserError(f"{archive}: not a readable tar archive ({exc})") from None
    with tf:
        for count, member in enumerate(tf, start=1):
            if count > limits.files:
                raise UserError(f"{archive}: more than {limits.files:,} members; refused")
            target = _member_path(archive, member.name, dest)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                src = tf.extractfile(member)
                if src is None:
                    raise UserError(f"{archive}: member {member.name!r} cannot be read")
                with src:
                    _copy(src, target, archive, member.name, budget, limits)
            else:
                raise UserError(f"{archive}: member {member.name!r} is a link or device; refused")
