import numpy as np
import pytest

from bench.adapters import BinaryOnTernary, LocalizerAsDetector, TernaryToBinary, to_label_space
from bench.types import LabelSpace, Prediction


def test_ternary_to_binary_sums_fake_classes():
    pred = Prediction(probs=np.array([0.2, 0.5, 0.3]), text="t")
    out = TernaryToBinary()(pred)
    np.testing.assert_allclose(out.probs, [0.2, 0.8])
    assert out.text == "t"
    np.testing.assert_allclose(pred.probs, [0.2, 0.5, 0.3])  # input untouched


def test_ternary_to_binary_rejects_wrong_shape():
    with pytest.raises(ValueError, match="3 probabilities"):
        TernaryToBinary()(Prediction(probs=np.array([0.4, 0.6])))


def test_binary_on_ternary_rule_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5], [0.99, 0.01]])
    rule = BinaryOnTernary()
    # real correct iff predicted real; synthetic/tampered correct iff predicted fake (p_fake >= 0.5)
    np.testing.assert_array_equal(rule.correct(labels, probs), [True, False, True, False, True, False])
    np.testing.assert_array_equal(rule.binary_labels(labels), [0, 0, 1, 1, 1, 1])
    strict = BinaryOnTernary(threshold=0.75)
    np.testing.assert_array_equal(strict.correct(labels, probs), [True, True, True, False, False, False])


def test_localizer_as_detector_max_pools_mask():
    mask = np.zeros((4, 5), dtype=np.float32)
    mask[2, 3] = 0.7
    mask[0, 0] = 0.2
    out = LocalizerAsDetector()(Prediction(probs=np.array([]), mask=mask))
    np.testing.assert_allclose(out.probs, [0.3, 0.7], rtol=1e-6)


def test_localizer_with_own_detection_keeps_it():
    mask = np.ones((2, 2), dtype=np.float32)
    pred = Prediction(probs=np.array([0.9, 0.1]), mask=mask)
    np.testing.assert_allclose(LocalizerAsDetector()(pred).probs, [0.9, 0.1])


def test_to_label_space():
    pred = Prediction(probs=np.array([0.1, 0.1, 0.8]))
    np.testing.assert_allclose(to_label_space(pred, LabelSpace.TERNARY, LabelSpace.BINARY).probs, [0.1, 0.9])
    same = to_label_space(pred, LabelSpace.TERNARY, LabelSpace.TERNARY)
    assert same is pred


def test_ternary_to_binary_clips_float32_rounding():
    p = np.array([[np.float32(1e-9), np.float32(0.6), np.float32(0.40000004)]], dtype=np.float64)
    out = TernaryToBinary.apply(p)
    assert out.max() <= 1.0 and out[0, 1] == 1.0
