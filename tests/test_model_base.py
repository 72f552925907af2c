import numpy as np
import pytest
import torch

from bench.errors import UserError
from bench.model import parse_model_name, resize_mask
from bench.registry import UnknownNameError
from tests.dummy_plugins import DummyDetector


def test_parse_model_name():
    assert parse_model_name("cnnspot") == ("cnnspot", None)
    assert parse_model_name("cnnspot:tiny") == ("cnnspot", "tiny")
    for bad in ("", ":tiny", "cnnspot:"):
        with pytest.raises(UserError):
            parse_model_name(bad)


def test_unknown_config_suggests():
    with pytest.raises(UnknownNameError, match="Did you mean 'tiny'"):
        DummyDetector("tiyn")


def test_missing_weights_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        DummyDetector(weights=tmp_path / "nope.pth")


def test_predict_batches_mixed_sizes_and_resizes_masks():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in ((8, 10, 3), (6, 6, 3), (8, 10, 3))]
    model = DummyDetector("tiny")
    preds = model.predict(images)
    assert len(preds) == 3
    for img, pred in zip(images, preds):
        p = img.mean() / 255.0 * 0.5
        np.testing.assert_allclose(pred.probs, [1 - p, p], rtol=1e-5)
        assert pred.mask.shape == img.shape[:2] and pred.mask.dtype == np.float32
    # one-at-a-time gives the same numbers as the batched call
    single = [model.predict([img])[0] for img in images]
    for a, b in zip(preds, single):
        np.testing.assert_allclose(a.probs, b.probs, rtol=1e-6)
        np.testing.assert_allclose(a.mask, b.mask, rtol=1e-6)


def test_resize_mask_bilinear_matches_torch():
    m = torch.rand(4, 4)
    out = resize_mask(m, (8, 8))
    ref = torch.nn.functional.interpolate(m[None, None], size=(8, 8), mode="bilinear", align_corners=False)[0, 0]
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-6)
    assert resize_mask(m, (4, 4)).shape == (4, 4)


def test_describe_records_identity():
    d = DummyDetector("tiny").describe()
    assert d["name"] == "dummy" and d["config"] == "tiny" and d["label_space"] == "binary"
    assert d["capabilities"] == ["detect", "localize"] and d["input_policy"]["notes"] == "test model"
