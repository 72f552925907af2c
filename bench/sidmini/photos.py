"""Real photographs shipped inside installed packages, and the sid-mini split by photograph.

Sources (all loaded offline): scikit-image ``data`` (astronaut, chelsea, coffee, rocket,
stereo motorcycle left/right, hubble_deep_field, retina, immunohistochemistry), scikit-learn
sample images (china, flower) and matplotlib's ``grace_hopper.jpg``. Each photograph belongs to
exactly one split, so no photograph's content leaks across splits (the motorcycle pair shows
one scene and stays together). Arrays are RGB uint8 (H, W, 3).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from bench.errors import UserError


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        return getattr(data, name)()

    return load


def _motorcycle(index: int) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        return data.stereo_motorcycle()[index]

    return load


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)

    return load


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as img:
        return np.asarray(img.convert("RGB"))


PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "motorcycle_left": _motorcycle(0),
    "motorcycle_right": _motorcycle(1),
    "china": _sklearn("china.jpg"),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "chelsea": _skimage("chelsea"),
    "flower": _sklearn("flower.jpg"),
    "retina": _skimage("retina"),
    "grace_hopper": _grace_hopper,
}

SPLIT_PHOTOS: dict[str, tuple[str, ...]] = {
    "train": ("astronaut", "coffee", "rocket", "motorcycle_left", "motorcycle_right", "china"),
    "validation": ("hubble_deep_field", "immunohistochemistry"),
    "test": ("chelsea", "flower", "retina", "grace_hopper"),
}
"""Photographs per split (disjoint)."""


@functools.cache
def load_photo(name: str) -> np.ndarray:
    """One packaged photograph as a read-only RGB uint8 array (cached per process)."""
    try:
        image = np.ascontiguousarray(np.asarray(PHOTOS[name]())[..., :3], dtype=np.uint8)
    except (ImportError, OSError) as exc:
        raise UserError(f"sid-mini needs the packaged photograph {name!r}, which failed to load: {exc}") from exc
    image.setflags(write=False)
    return image


def load_photos(names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Load the named photographs (read-only RGB uint8 arrays)."""
    return {name: load_photo(name) for name in names}


def random_crop(photo: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int]]:
    """A ``size`` x ``size`` crop at a uniformly random position; returns the crop and its (top, left)."""
    h, w = photo.shape[:2]
    if h < size or w < size:
        raise UserError(f"crop size {size} exceeds a packaged photograph ({h}x{w})")
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    return photo[top:top + size, left:left + size].copy(), (top, left)
