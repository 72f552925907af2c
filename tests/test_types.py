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
