"""``sid-mini``: an embedded, deterministic benchmark built from photographs shipped by installed packages.

A plumbing and sanity benchmark (does a detector, the runner and the metrics work end to end;
does a fingerprint detector separate in-domain fakes from reals and degrade under JPEG or an
unseen generator?), never a substitute for SID-Set. See ``docs/datasets.md``.
"""

from bench.sidmini.build import (
    DEFAULT_PER_CLASS,
    DEFAULT_SIZE,
    SMALL_PER_CLASS,
    SMALL_SIZE,
    build_sid_mini,
    default_cache_dir,
    ensure_sid_mini,
)

__all__ = [
    "DEFAULT_PER_CLASS",
    "DEFAULT_SIZE",
    "SMALL_PER_CLASS",
    "SMALL_SIZE",
    "build_sid_mini",
    "default_cache_dir",
    "ensure_sid_mini",
]
