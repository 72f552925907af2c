"""Object-shaped tampering regions (grown SLIC superpixels) and feathered blending.

A region is grown from a random superpixel by adding random neighbouring superpixels until it
covers a target fraction of the image drawn uniformly in [2 %, 40 %]; regions follow image
content, not rectangles (on flat areas SLIC cells are boxy). Masks are boolean (H, W).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

AREA_RANGE = (0.02, 0.40)
FEATHER_SIGMA = 1.0


def _neighbours(labels: np.ndarray) -> dict[int, set[int]]:
    pairs = np.concatenate([
        np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], axis=1),
        np.stack([labels[:-1, :].ravel(), labels[1:, :].ravel()], axis=1),
    ])
    pairs = np.unique(pairs[pairs[:, 0] != pairs[:, 1]], axis=0)
    graph: dict[int, set[int]] = {int(v): set() for v in np.unique(labels)}
    for a, b in pairs:
        graph[int(a)].add(int(b))
        graph[int(b)].add(int(a))
    return graph


def object_region(image: np.ndarray, rng: np.random.Generator, segments: int = 30) -> np.ndarray:
    """A boolean (H, W) region covering 2-40 % of ``image`` (RGB uint8), grown from SLIC superpixels."""
    from skimage.segmentation import slic

    labels = slic(image, n_segments=segments, compactness=10.0, max_num_iter=5, start_label=0)
    areas = np.bincount(labels.ravel()).astype(np.float64) / labels.size
    graph = _neighbours(labels)
    lo, hi = AREA_RANGE
    target = float(rng.uniform(lo, hi))
    order = [int(s) for s in rng.permutation(len(areas)) if areas[s] > 0]
    for seed in order:
        if areas[seed] > hi:
            continue
        chosen, area = {seed}, areas[seed]
        while area < target:
            frontier = sorted(set().union(*(graph[s] for s in chosen)) - chosen)
            frontier = [s for s in frontier if area + areas[s] <= hi]
            if not frontier:
                break
            pick = frontier[int(rng.integers(len(frontier)))]
            chosen.add(pick)
            area += areas[pick]
        if area >= lo:
            return np.isin(labels, sorted(chosen))
    # every superpixel is too big or too small: fall back to a centred ellipse of the target area
    h, w = labels.shape
    yy, xx = np.mgrid[0:h, 0:w]
    radius = np.sqrt(target / np.pi)
    return ((yy / h - 0.5) ** 2 + (xx / w - 0.5) ** 2) <= radius ** 2


def blend(real: np.ndarray, generated: np.ndarray, mask: np.ndarray, sigma: float = FEATHER_SIGMA) -> np.ndarray:
    """Paste ``generated`` into ``real`` inside ``mask`` with a Gaussian-feathered edge (uint8 RGB)."""
    alpha = np.clip(gaussian_filter(mask.astype(np.float64), sigma), 0.0, 1.0)
    alpha = np.maximum(alpha, mask)[..., None]
    out = real.astype(np.float64) * (1.0 - alpha) + generated.astype(np.float64) * alpha
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
