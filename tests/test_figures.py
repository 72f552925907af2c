import numpy as np
from PIL import Image

from bench import figures


def _is_png(path):
    with Image.open(path) as im:
        return im.format == "PNG" and im.size[0] > 100


def test_overlay_blends_red_only_inside_mask():
    img = np.full((2, 2, 3), 100, dtype=np.uint8)
    mask = np.array([[True, False], [False, False]])
    out = figures.overlay(img, mask, alpha=0.5)
    np.testing.assert_array_equal(out[0, 0], [178, 50, 50])  # 100*0.5 + 255*0.5 = 177.5 -> 178
    np.testing.assert_array_equal(out[1, 1], [100, 100, 100])


def test_figures_are_written(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 50)
    s = rng.random(50)
    assert _is_png(figures.roc_curves({"m": (y, s)}, tmp_path / "roc.png", "ROC"))
    assert _is_png(figures.robustness_curves({"m": [("clean", 0.9), ("jpeg 70", 0.6)]},
                                             tmp_path / "rob.png", "Robustness", "accuracy"))
    assert _is_png(figures.confusion_matrix_plot(np.array([[5, 1], [2, 7]]), ["real", "fake"], ["real", "fake"],
                                                 tmp_path / "cm.png", "CM"))
    three_by_two = np.array([[5, 1], [2, 7], [0, 9]])
    assert _is_png(figures.confusion_matrix_plot(three_by_two, ["real", "full_synthetic", "tampered"],
                                                 ["real", "fake"], tmp_path / "cm32.png", "binary on ternary"))
    img = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    grid = figures.mask_grid([("a", img, [("GT", img[..., 0] > 128), ("model", None)])], tmp_path / "g.png", "Masks")
    assert _is_png(grid)
