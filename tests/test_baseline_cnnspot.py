"""CNNSpot: official checkpoint layout, test preprocessing and head conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision import transforms

from bench.checkpoint import save_checkpoint
from bench.errors import UserError
from bench.plugins import create_model
from bench.types import LabelSpace

torch.set_num_threads(1)
IMAGENET = dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])


def _randomise_bn(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def _image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_official_checkpoint_matches_torchvision_reference(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None, num_classes=1)
    _randomise_bn(reference, 1)
    reference.eval()
    path = tmp_path / "blur_jpg_prob0.5.pth"
    torch.save({"model": reference.state_dict(), "optimizer": {}, "total_steps": 3}, path)

    model = create_model("cnnspot", weights=path, device="cpu")
    images = [_image(250, 300, 2), _image(120, 180, 3)]  # the second is smaller than the crop: zero-padded
    ref_tf = transforms.Compose([transforms.CenterCrop(224), transforms.ToTensor(), transforms.Normalize(**IMAGENET)])
    ref_in = torch.stack([ref_tf(Image.fromarray(im)) for im in images])
    ours_in = torch.stack([model.preprocess(im) for im in images])
    torch.testing.assert_close(ours_in, ref_in, atol=1e-6, rtol=0)
    with torch.inference_mode():
        expected = reference(ref_in)
        logits = model.logits(ours_in)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    probs = np.stack([p.probs for p in model.predict(images)])
    np.testing.assert_allclose(probs[:, 1], torch.sigmoid(expected[:, 0]).numpy(), atol=1e-5)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    assert model.weights_sha256 and model.describe()["input_policy"]["crop"] == 224


def test_strict_load_lists_missing_and_unexpected_keys(tmp_path):
    state = create_model("cnnspot:tiny").network.state_dict()
    state.pop("layer1.0.conv1.weight")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save({"model": state}, path)
    with pytest.raises(UserError, match=r"missing keys: layer1\.0\.conv1\.weight.*unexpected keys: extra\.weight"):
        create_model("cnnspot:tiny", weights=path)


def test_file_without_model_key_or_tensors_is_rejected(tmp_path):
    path = tmp_path / "weird.pth"
    torch.save({"netC": {"a": 1}}, path)
    with pytest.raises(UserError, match="expected a state dict"):
        create_model("cnnspot:tiny", weights=path)


def test_no_crop_variants_keep_the_full_image():
    image = _image(90, 70, 4)
    for model in (create_model("cnnspot:no_crop"), create_model("cnnspot:tiny")):
        assert tuple(model.preprocess(image).shape) == (3, 90, 70)
        assert model.input_policy.crop is None
    assert tuple(create_model("cnnspot").preprocess(image).shape) == (3, 224, 224)  # official: centre crop 224
    assert tuple(create_model("cnnspot:tiny", crop=64).preprocess(image).shape) == (3, 64, 64)


def test_imagenet_classifier_is_a_training_start_point(tmp_path):
    torch.manual_seed(0)
    imagenet = torchvision.models.resnet50(weights=None)
    path = tmp_path / "resnet50-imagenet.pth"
    torch.save(imagenet.state_dict(), path)
    model = create_model("cnnspot", weights=path)
    torch.testing.assert_close(model.network.layer4[2].conv3.weight, imagenet.layer4[2].conv3.weight)
    assert model.network.fc.weight.shape == (1, 2048)
    assert 0.01 < float(model.network.fc.weight.detach().std()) < 0.03


def test_ternary_head_and_our_checkpoint_round_trip(tmp_path):
    model = create_model("cnnspot:tiny", num_classes=3)
    assert model.label_space is LabelSpace.TERNARY
    image = _image(80, 80, 5)
    pred = model.predict([image])[0]
    assert pred.probs.shape == (3,) and abs(pred.probs.sum() - 1) < 1e-6
    save_checkpoint(tmp_path / "ck", model.state_for_checkpoint(), model.checkpoint_config())
    again = create_model("cnnspot:tiny", num_classes=3, weights=tmp_path / "ck")
    np.testing.assert_allclose(again.predict([image])[0].probs, pred.probs, atol=1e-6)
    with pytest.raises(UserError, match="num_classes=3"):
        create_model("cnnspot:tiny", weights=tmp_path / "ck")
    with pytest.raises(UserError, match="holds a 'cnnspot' checkpoint, not 'npr'"):
        create_model("npr:tiny", num_classes=3, weights=tmp_path / "ck")


def test_unknown_option_is_a_user_error():
    with pytest.raises(UserError, match="Unknown option"):
        create_model("cnnspot:tiny", crop_size=3)
