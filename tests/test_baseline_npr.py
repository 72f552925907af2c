"""NPR: the residual against the official interpolate formula, the truncated ResNet against
torchvision's layers, the official checkpoint layout and test preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torchvision import transforms

from baselines.npr import NPRNet, npr_residual
from bench.errors import UserError
from bench.plugins import create_model

torch.set_num_threads(1)
IMAGENET = dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])


def _official_residual(x: torch.Tensor) -> torch.Tensor:
    """networks/resnet.py: x - interpolate(interpolate(x, 0.5), 2), nearest, recompute_scale_factor."""
    down = F.interpolate(x, scale_factor=0.5, mode="nearest", recompute_scale_factor=True)
    return x - F.interpolate(down, scale_factor=2.0, mode="nearest", recompute_scale_factor=True)


def _reference_logits(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Independent forward: functional stem + torchvision ResNet-50's layer1/layer2 with NPR's weights."""
    tv = torchvision.models.resnet50(weights=None)
    tv.load_state_dict({k: v for k, v in state.items() if k.startswith(("layer1.", "layer2."))}, strict=False)
    tv.eval()
    h = F.conv2d(_official_residual(x) * 2.0 / 3.0, state["conv1.weight"], stride=2, padding=1)
    h = F.batch_norm(h, state["bn1.running_mean"], state["bn1.running_var"], state["bn1.weight"], state["bn1.bias"])
    h = F.max_pool2d(F.relu(h), kernel_size=3, stride=2, padding=1)
    h = tv.layer2(tv.layer1(h)).mean(dim=(2, 3))
    return F.linear(h, state["fc1.weight"], state["fc1.bias"])


def test_residual_matches_official_interpolation():
    x = torch.randn(2, 3, 10, 14)
    torch.testing.assert_close(npr_residual(x), _official_residual(x))
    assert torch.count_nonzero(npr_residual(x)[:, :, ::2, ::2]) == 0


def test_parameter_count_is_the_official_1_44m():
    n = sum(p.numel() for p in NPRNet().parameters())
    assert 1.40e6 < n < 1.48e6


def test_official_checkpoint_matches_independent_forward(tmp_path):
    torch.manual_seed(0)
    net = NPRNet()
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    state = net.state_dict()
    path = tmp_path / "NPR.pth"
    torch.save(state, path)  # the released file is a raw state dict
    model = create_model("npr", weights=path)

    images = [np.random.default_rng(s).integers(0, 256, (h, w, 3), dtype=np.uint8)
              for s, (h, w) in enumerate([(300, 200), (97, 131)])]
    ref_tf = transforms.Compose([transforms.Resize((256, 256)), transforms.ToTensor(), transforms.Normalize(**IMAGENET)])
    ref_in = torch.stack([ref_tf(Image.fromarray(im)) for im in images])
    ours_in = torch.stack([model.preprocess(im) for im in images])
    torch.testing.assert_close(ours_in, ref_in, atol=1e-6, rtol=0)
    with torch.inference_mode():
        expected = _reference_logits(state, ref_in)
        torch.testing.assert_close(model.logits(ours_in), expected, atol=1e-4, rtol=1e-4)
    probs = np.stack([p.probs for p in model.predict(images)])
    np.testing.assert_allclose(probs[:, 1], torch.sigmoid(expected[:, 0]).numpy(), atol=1e-5)


def test_no_resize_crops_odd_sizes_to_even():
    image = np.random.default_rng(0).integers(0, 256, (101, 77, 3), dtype=np.uint8)
    model = create_model("npr:no_resize")
    x = model.preprocess(image)
    assert tuple(x.shape) == (3, 100, 76)
    expected = transforms.Normalize(**IMAGENET)(transforms.ToTensor()(Image.fromarray(image[:100, :76])))
    torch.testing.assert_close(x, expected, atol=1e-6, rtol=0)
    assert model.predict([image])[0].probs.shape == (2,)
    assert create_model("npr:tiny", resize=None).input_policy.resize is None


def test_too_small_image_is_a_clear_error():
    with pytest.raises(ValueError, match=r"NPR input .* cannot handle a 1x5 \(HxW\) image: it needs at least 2x2 pixels"):
        create_model("npr:no_resize").preprocess(np.zeros((1, 5, 3), np.uint8))


def test_strict_load_lists_missing_and_unexpected_keys(tmp_path):
    state = NPRNet(layers=(1, 1)).state_dict()
    state["fc.weight"] = state.pop("fc1.weight")
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(UserError, match=r"missing keys: fc1\.weight; unexpected keys: fc\.weight"):
        create_model("npr:tiny", weights=path)
