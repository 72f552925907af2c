"""Size limits of preprocessing steps, checked before the work (a per-sample error, never a crash)."""

from __future__ import annotations

from bench.errors import ImageSizeError

MAX_RESIZED_PIXELS = 250_000_000
"""The most pixels a preprocessing resize may make: an extreme aspect ratio resized by its short side
would otherwise take tens of GB for one sample (a 1x100000 image at short side 336 is 3.4e9 pixels);
250 M (750 MB as uint8) is above what SIDA's SAM branch accepts anyway (aspect ratio 2048:1)."""


def check_resized_size(step: str, size: tuple[int, int], new: tuple[int, int]) -> None:
    """Raise :class:`ImageSizeError` when resizing ``size`` to ``new`` (both H, W) is empty or too large."""
    if min(new) < 1:
        raise ImageSizeError(step, size, f"the resized image would be {new[0]}x{new[1]} pixels (empty)")
    if new[0] * new[1] > MAX_RESIZED_PIXELS:
        ratio = MAX_RESIZED_PIXELS // (min(new) ** 2)
        raise ImageSizeError(step, size, f"the resized image would be {new[0]}x{new[1]} pixels (more than "
                                         f"{MAX_RESIZED_PIXELS:,}); the aspect ratio must be at most about {ratio}:1")


def check_long_side_resize(step: str, size: tuple[int, int], long_side: int) -> None:
    """SAM's ``ResizeLongestSide``: the short side becomes ``int(short * L / long + 0.5)``, which must be >= 1."""
    h, w = int(size[0]), int(size[1])
    if min(h, w) < 1:
        raise ImageSizeError(step, size, "it needs at least 1x1 pixels")
    long = max(h, w)
    if int(min(h, w) * long_side / long + 0.5) < 1:
        need = -(-long // (2 * long_side))
        raise ImageSizeError(step, size, f"the short side would become 0 pixels; at a long side of {long} it "
                                         f"needs a short side of at least {need} pixels "
                                         f"(aspect ratio at most {2 * long_side}:1)")
