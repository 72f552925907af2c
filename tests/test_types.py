import numpy as np
import pytest

from bench.types import LabelSpace, Prediction, Sample


def test_label_spaces():
    assert LabelSpace.TERNARY.class_names == ("real", "full_synthetic", "tampered")
    assert LabelSpace.BINARY.class_names == ("real", "fake")
    assert LabelSpace("ternary").num_classes == 3


def test_sample_validates_image_and_mask():
    img = np.zeros((4, 6, 3), dtype=np.uint8)
    Sample("a", img, 2, mask=np.zeros((4, 6), dtype=bool))
    with pytest.raises(ValueError, match="uint8"):
        Sample("a", img.astype(np.float32), 0)
    with pytest.raises(ValueError, match="mask shape"):
        Sample("a", img, 2, mask=np.zeros((6, 4), dtype=bool))
    with pytest.raises(ValueError, match="boolean"):
        Sample("a", img, 2, mask=np.zeros((4, 6), dtype=np.uint8))
    with pytest.raises(ValueError, match="no image and no error"):
        Sample("a", None, 0)
    failed = Sample("b", None, 1, error="truncated file")
    assert failed.error == "truncated file"


def test_failed_prediction_has_nan_probs():
    p = Prediction.failed(3, "boom")
    assert p.error == "boom" and p.probs.shape == (3,) and np.isnan(p.probs).all()


def test_a_confidence_map_is_checked_like_the_mask():
    probs, mask = np.array([0.4, 0.6]), np.full((4, 6), 0.5, np.float32)
    assert Prediction(probs, mask, confidence=np.ones((4, 6), np.float32)).problem(2, (4, 6)) is None
    assert "without a mask" in Prediction(probs, None, confidence=np.ones((4, 6))).problem(2, (4, 6))
    assert "confidence map of shape (6, 4)" in Prediction(probs, mask, confidence=np.ones((6, 4))).problem(2, (4, 6))
    bad = np.ones((4, 6))
    bad[0, 0] = 1.5
    assert "confidence map with values" in Prediction(probs, mask, confidence=bad).problem(2, (4, 6))
    bad[0, 0] = np.nan
    assert "confidence map with values" in Prediction(probs, mask, confidence=bad).problem(2, (4, 6))
