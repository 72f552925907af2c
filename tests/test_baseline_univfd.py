"""UnivFD: official fc file + OpenAI-layout CLIP weights against open_clip's own OpenAI loader,
the crop-only CLIP preprocessing, and the frozen backbone / fc-only checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg, build_model_from_openai_state_dict
from PIL import Image
from safetensors.torch import save_file
from torchvision import transforms

from baselines.univfd import UnivFD
from bench.checkpoint import save_checkpoint
from bench.errors import UserError
from bench.plugins import create_model

torch.set_num_threads(1)
TINY = UnivFD.configs["tiny"]
CLIP_NORM = dict(mean=[0.48145466, 0.4578275, 0.40821073], std=[0.26862954, 0.26130258, 0.27577711])


def _openai_state(seed: int) -> dict[str, torch.Tensor]:
    """A tiny CLIP (the `tiny` image tower + a small text tower) in OpenAI key layout, fp16 like OpenAI's files."""
    torch.manual_seed(seed)
    vision = CLIPVisionCfg(layers=TINY.layers, width=TINY.width, patch_size=TINY.patch_size, image_size=TINY.image_size)
    clip = open_clip.CLIP(TINY.embed_dim, vision,
                          CLIPTextCfg(context_length=8, vocab_size=50, width=64, heads=1, layers=1), quick_gelu=True)
    state = {k: v.half() for k, v in clip.state_dict().items()}
    with torch.no_grad():
        state["visual.proj"] = torch.randn_like(state["visual.proj"]) * 0.5
    return state


def _write_release(folder, seed=0, clip_name="open_clip_model.safetensors"):
    folder.mkdir(parents=True, exist_ok=True)
    state = _openai_state(seed)
    save_file(state, str(folder / clip_name)) if clip_name.endswith(".safetensors") else torch.save(state, folder / clip_name)
    g = torch.Generator().manual_seed(seed + 1)
    fc = {"weight": torch.randn(1, TINY.embed_dim, generator=g), "bias": torch.randn(1, generator=g)}
    torch.save(fc, folder / "fc_weights.pth")
    return state, fc


def test_official_files_match_open_clip_reference(tmp_path):
    state, fc = _write_release(tmp_path / "univfd", clip_name="ViT-L-14-state.pt")
    model = create_model("univfd:tiny", weights=tmp_path / "univfd")
    reference = build_model_from_openai_state_dict(dict(state), quick_gelu=True).float().eval()

    images = [np.random.default_rng(s).integers(0, 256, hw + (3,), dtype=np.uint8)
              for s, hw in enumerate([(90, 80), (40, 100)])]  # the second is padded vertically
    ref_tf = transforms.Compose([transforms.CenterCrop(TINY.crop), transforms.ToTensor(), transforms.Normalize(**CLIP_NORM)])
    ref_in = torch.stack([ref_tf(Image.fromarray(im)) for im in images])
    ours_in = torch.stack([model.preprocess(im) for im in images])
    torch.testing.assert_close(ours_in, ref_in, atol=1e-6, rtol=0)
    with torch.inference_mode():
        expected = reference.encode_image(ref_in) @ fc["weight"].T + fc["bias"]
        torch.testing.assert_close(model.logits(ours_in), expected, atol=1e-4, rtol=1e-4)
    probs = np.stack([p.probs for p in model.predict(images)])
    np.testing.assert_allclose(probs[:, 1], torch.sigmoid(expected[:, 0]).numpy(), atol=1e-5)
    assert model.network.visual.conv1.weight.dtype == torch.float32


def test_fc_file_with_clip_option_and_errors(tmp_path):
    _write_release(tmp_path / "r")
    clip = tmp_path / "r" / "open_clip_model.safetensors"
    create_model("univfd:tiny", weights=tmp_path / "r" / "fc_weights.pth", clip_weights=clip)
    with pytest.raises(UserError, match="needs the CLIP"):
        create_model("univfd:tiny", weights=tmp_path / "r" / "fc_weights.pth")
    torch.save({"weight": torch.zeros(1, TINY.embed_dim), "bias": torch.zeros(1), "extra": torch.zeros(1)}, tmp_path / "fc.pth")
    with pytest.raises(UserError, match="unexpected keys: extra"):
        create_model("univfd:tiny", weights=tmp_path / "fc.pth", clip_weights=clip)
    timm_like = tmp_path / "timm.safetensors"
    save_file({"blocks.0.attn.qkv.weight": torch.zeros(3, 3)}, str(timm_like))
    with pytest.raises(UserError, match="timm/Hugging Face key names"):
        create_model("univfd:tiny", clip_weights=timm_like)


def test_torchscript_clip_needs_allow_pickle(tmp_path):
    class Tower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x)

    path = tmp_path / "ViT-L-14.pt"
    torch.jit.save(torch.jit.script(Tower()), str(path))
    with pytest.raises(UserError, match="TorchScript archive"):
        create_model("univfd:tiny", clip_weights=path)
    with pytest.raises(UserError, match="missing keys"):  # read with opt-in, then strict key check
        create_model("univfd:tiny", clip_weights=path, allow_pickle=True)


def test_backbone_frozen_and_fc_only_checkpoint(tmp_path):
    _write_release(tmp_path / "r")
    model = create_model("univfd:tiny", weights=tmp_path / "r")
    assert [p.shape for p in model.trainable_parameters()] == [torch.Size([1, TINY.embed_dim]), torch.Size([1])]
    state = model.state_for_checkpoint()
    assert sorted(state) == ["fc.bias", "fc.weight"]
    save_checkpoint(tmp_path / "ck", state, model.checkpoint_config())
    again = create_model("univfd:tiny", weights=tmp_path / "ck")  # finds the CLIP file recorded in config.json
    image = np.random.default_rng(3).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    np.testing.assert_allclose(again.predict([image])[0].probs, model.predict([image])[0].probs, atol=1e-6)
    assert create_model("univfd:tiny").state_for_checkpoint().keys() >= {"visual.proj", "fc.weight"}


def test_tiny_uses_a_fixed_frozen_dct_patch_embedding():
    from bench.fixed_filters import dct_patch_filters

    conv = create_model("univfd:tiny").network.visual.conv1
    assert torch.equal(conv.weight, dct_patch_filters(4, 64, 0.1, 4.0))
    assert not conv.weight.requires_grad
    assert UnivFD.configs["default"].dct_patch_gains is None


OPENAI_FP16_TENSORS = ("conv1.weight", ".attn.in_proj_weight", ".attn.in_proj_bias", ".attn.out_proj.weight",
                       ".attn.out_proj.bias", ".mlp.c_fc.weight", ".mlp.c_fc.bias", ".mlp.c_proj.weight",
                       ".mlp.c_proj.bias")
"""Image-tower tensors OpenAI's convert_weights stores in fp16 (Conv/Linear, MultiheadAttention in_proj), plus `proj`."""


def _openai_rounded(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official build_model + clip.load(device="cpu") precision, by key name (independent of our module walk)."""
    def rounded(key: str) -> bool:
        return key == "visual.proj" or (key.startswith("visual.") and key.endswith(OPENAI_FP16_TENSORS))

    return {k: v.half().float() if rounded(k) else v for k, v in state.items()}


def test_fp32_clip_file_is_rounded_like_openai_build_model(tmp_path):
    """An fp32 CLIP state dict gives the official logits: the tensors convert_weights stores in fp16 are
    rounded, the embeddings and LayerNorms are not."""
    fp32 = {k: v.float() + 1e-3 * torch.randn(v.shape, generator=torch.Generator().manual_seed(i))
            for i, (k, v) in enumerate(_openai_state(3).items())}  # values that are not fp16-representable
    folder = tmp_path / "r"
    folder.mkdir()
    save_file(fp32, str(folder / "open_clip_model.safetensors"))
    fc = {"weight": torch.randn(1, TINY.embed_dim, generator=torch.Generator().manual_seed(9)), "bias": torch.zeros(1)}
    torch.save(fc, folder / "fc_weights.pth")
    model = create_model("univfd:tiny", weights=folder)
    official = _openai_rounded(fp32)
    ours = model.network.visual.state_dict()
    for key, value in ours.items():
        torch.testing.assert_close(value, official["visual." + key], atol=0, rtol=0, msg=key)
    assert not torch.equal(ours["ln_pre.weight"], fp32["visual.ln_pre.weight"].half().float())  # kept in fp32
    assert not torch.equal(ours["conv1.weight"], fp32["visual.conv1.weight"])  # rounded

    reference = build_model_from_openai_state_dict(dict(official), quick_gelu=True).float().eval()
    x = torch.stack([model.preprocess(np.random.default_rng(s).integers(0, 256, (70, 70, 3), dtype=np.uint8))
                     for s in range(2)])
    with torch.inference_mode():
        expected = reference.encode_image(x) @ fc["weight"].T + fc["bias"]
        torch.testing.assert_close(model.logits(x), expected, atol=1e-5, rtol=0)


def test_clip_problems_are_found_before_the_tower_is_built_and_the_file_is_hashed_once(tmp_path, monkeypatch):
    import baselines.univfd as univfd
    import bench.model

    _write_release(tmp_path / "r")
    (tmp_path / "r" / "open_clip_model.safetensors").unlink()

    def no_build(*args, **kwargs):
        raise AssertionError("the ViT was built before the missing CLIP file was noticed")

    with monkeypatch.context() as m:
        m.setattr(univfd, "UnivFDNet", no_build)
        with pytest.raises(UserError, match="expected exactly one CLIP file"):
            create_model("univfd:tiny", weights=tmp_path / "r")
        with pytest.raises(UserError, match="CLIP weights not found"):
            create_model("univfd:tiny", weights=tmp_path / "r" / "fc_weights.pth", clip_weights=tmp_path / "none.pt")
        with pytest.raises(UserError, match="needs the CLIP"):
            create_model("univfd:tiny", weights=tmp_path / "r" / "fc_weights.pth")
        hf_layout = tmp_path / "r" / "hf.safetensors"
        save_file({"vision_model.embeddings.patch_embedding.weight": torch.zeros(2, 3, 1, 1)}, str(hf_layout))
        with pytest.raises(UserError, match="timm/Hugging Face key names"):
            create_model("univfd:tiny", weights=tmp_path / "r")
        hf_layout.unlink()

    _write_release(tmp_path / "r")
    clip = (tmp_path / "r" / "open_clip_model.safetensors").resolve()
    opened = []
    real_open = open

    def counting_open(file, *args, **kwargs):
        if Path(file).resolve() == clip:
            opened.append(file)
        return real_open(file, *args, **kwargs)

    bench.model._FILE_DIGESTS.clear()
    monkeypatch.setattr(bench.model, "open", counting_open, raising=False)
    model = create_model("univfd:tiny", weights=tmp_path / "r")
    assert len(opened) == 1 and model.weights_sha256 and model.clip_sha256
