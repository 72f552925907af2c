"""FreDect: DCT log-spectrum standardisation against an explicit DCT matrix, the official
['netC'] + dct_mean/dct_var layout against torchvision's ResNet-50, and our checkpoint format."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms

from baselines.fredect import dct_log_spectrum
from bench.checkpoint import save_checkpoint
from bench.errors import UserError
from bench.plugins import create_model

torch.set_num_threads(1)


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: C[k, i] = s_k cos(pi (2i + 1) k / 2n)."""
    k, i = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    c = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * i + 1) * k / (2 * n))
    c[0] /= np.sqrt(2.0)
    return c


def _reference_input(image: np.ndarray, mean: np.ndarray, var: np.ndarray, load: int, crop: int) -> torch.Tensor:
    """processing_DCT by hand: torchvision Resize + CenterCrop on PIL, DCT as C X C^T, log, standardise."""
    pil = transforms.CenterCrop(crop)(transforms.Resize(load)(Image.fromarray(image)))
    x = np.asarray(pil).astype(np.float64)
    c = _dct_matrix(crop)
    spec = np.stack([c @ x[:, :, ch] @ c.T for ch in range(3)])  # (3, H, W)
    return torch.from_numpy((np.log(np.abs(spec) + 1e-12) - mean) / np.sqrt(var)).float()


def test_log_spectrum_matches_explicit_dct():
    image = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    c = _dct_matrix(12)
    expected = np.stack([c @ image[:, :, ch].astype(np.float64) @ c.T for ch in range(3)], axis=2)
    np.testing.assert_allclose(dct_log_spectrum(image), np.log(np.abs(expected) + 1e-12), atol=1e-9)


def test_official_layout_matches_torchvision_reference(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None)
    reference.fc = torch.nn.Linear(2048, 1)
    reference.eval()
    rng = np.random.default_rng(1)
    mean = rng.normal(5.0, 1.0, (3, 224, 224))
    var = rng.uniform(0.5, 2.0, (3, 224, 224))
    folder = tmp_path / "fredect"
    folder.mkdir()
    torch.save({"netC": {f"module.{k}": v for k, v in reference.state_dict().items()}}, folder / "FreDect.pth")
    torch.save(torch.from_numpy(mean), folder / "dct_mean")
    torch.save(torch.from_numpy(var), folder / "dct_var")

    model = create_model("fredect", weights=folder)
    image = rng.integers(0, 256, (240, 300, 3), dtype=np.uint8)
    expected_in = _reference_input(image, mean, var, 256, 224)
    ours_in = model.preprocess(image)
    torch.testing.assert_close(ours_in, expected_in, atol=1e-4, rtol=1e-5)
    with torch.inference_mode():
        expected = reference(expected_in[None])
        torch.testing.assert_close(model.logits(ours_in[None]), expected, atol=1e-3, rtol=1e-4)
    p = model.predict([image])[0].probs
    np.testing.assert_allclose(p[1], torch.sigmoid(expected[0, 0]).item(), atol=1e-4)
    # the same file given directly finds the statistics beside it
    create_model("fredect", weights=folder / "FreDect.pth")


def test_missing_statistics_and_bad_keys_are_user_errors(tmp_path):
    net = create_model("fredect:tiny").network
    torch.save({"netC": net.state_dict()}, tmp_path / "c.pth")
    with pytest.raises(UserError, match="dct_mean"):
        create_model("fredect:tiny", weights=tmp_path / "c.pth")
    torch.save(torch.zeros(3, 64, 64, dtype=torch.float64), tmp_path / "dct_mean")
    torch.save(torch.ones(3, 32, 32, dtype=torch.float64), tmp_path / "dct_var")
    with pytest.raises(UserError, match=r"dct_var has shape \(3, 32, 32\)"):
        create_model("fredect:tiny", weights=tmp_path / "c.pth")
    torch.save(torch.ones(3, 64, 64, dtype=torch.float64), tmp_path / "dct_var")
    torch.save({"model": net.state_dict()}, tmp_path / "c.pth")
    with pytest.raises(UserError, match="'netC'"):
        create_model("fredect:tiny", weights=tmp_path / "c.pth")
    state = dict(net.state_dict())
    state["fc.bias"] = torch.zeros(2)
    torch.save({"netC": state}, tmp_path / "c.pth")
    with pytest.raises(UserError, match=r"shape mismatches: fc\.bias"):
        create_model("fredect:tiny", weights=tmp_path / "c.pth")


def test_our_checkpoint_keeps_the_statistics(tmp_path):
    model = create_model("fredect:tiny")
    model.set_statistics(torch.full((3, 64, 64), 2.0, dtype=torch.float64),
                         torch.full((3, 64, 64), 4.0, dtype=torch.float64), "test")
    image = np.random.default_rng(2).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    save_checkpoint(tmp_path / "ck", model.state_for_checkpoint(), model.checkpoint_config())
    again = create_model("fredect:tiny", weights=tmp_path / "ck")
    torch.testing.assert_close(again.preprocess(image), model.preprocess(image))
    np.testing.assert_allclose(again.predict([image])[0].probs, model.predict([image])[0].probs, atol=1e-6)
