"""The embedded benchmarks: ``sid_mini`` (SID-Set folder layout) and ``dmimage_mini`` (DMImage layout).

Same loaders as ``sid_set`` and ``dmimage``; ``root`` defaults to the cached build
(:func:`bench.sidmini.ensure_sid_mini`, built on first use, about half a minute). Pass ``root``
to use a build made with ``sida-bench data build sid-mini --out DIR``: either the build root
or its ``sid_set``/``dmimage`` sub-folder.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from bench.datasets.dmimage import DMImage
from bench.datasets.sid_set import SidSetFolders

MINI_GENERATORS: dict[str, tuple[str, str]] = {
    "tconv": ("Transposed conv, unseen seeds", "same_architecture"),
    "nearest_conv": ("Nearest + conv", "other_architecture"),
}
"""dmimage-mini generator folders: the in-domain architecture with held-out seeds, and a
different up-sampler (the cross-generator analog)."""


@functools.lru_cache(maxsize=1)
def _default_build() -> Path:
    """The cached default build, checked (every file hashed) once per process."""
    from bench.sidmini import ensure_sid_mini

    return ensure_sid_mini()


def _mini_root(root: str | Path | None, sub: str) -> Path:
    if root is None:
        return _default_build() / sub
    path = Path(root).expanduser()
    return path / sub if (path / sub).is_dir() else path


class SidMini(SidSetFolders):
    """sid-mini in the SID-Set folder layout (ternary; see :mod:`bench.sidmini`)."""

    name = "sid_mini"

    def __init__(self, root: str | Path | None = None, split: str = "test", **options: Any) -> None:
        super().__init__(_mini_root(root, "sid_set"), split, **options)


class DMImageMini(DMImage):
    """dmimage-mini in the DMImage layout (binary; groups same_architecture / other_architecture)."""

    name = "dmimage_mini"

    def __init__(self, root: str | Path | None = None, split: str = "test", **options: Any) -> None:
        options.setdefault("generators", MINI_GENERATORS)
        super().__init__(_mini_root(root, "dmimage"), split, **options)
