"""Official-layout SIDA checkpoints: key mapping, strict loading, identical outputs, memory estimate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from bench.checkpoint import save_checkpoint
from bench.errors import UserError
from bench.plugins import create_model
from sida.checkpoint_map import KEY_MAP, estimate_memory, from_official_key, save_clip_tower, save_official, to_official_key
from sida.config import CONFIGS, TINY
from sida.detector import SidaDetector
from sida.tokenizer import save_tokenizer

OFFICIAL_PREFIXES = ("model.layers.", "model.embed_tokens.", "model.norm.", "lm_head.", "model.mm_projector.",
                     "model.visual_model.image_encoder.", "model.visual_model.prompt_encoder.",
                     "model.visual_model.mask_decoder.", "model.cls_head.0.", "model.text_hidden_fcs.0.",
                     "model.sida_fc1.", "model.attention_layer.", "model.vision_tower.")


@pytest.fixture(scope="module")
def writer() -> SidaDetector:
    """A tiny detector with random weights different from the default seeded build."""
    det = create_model("sida:tiny", always_mask=True)
    net = det.ensure_model()
    with torch.no_grad():
        g = torch.Generator().manual_seed(123)
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return det


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), rng.integers(0, 256, (64, 40, 3), dtype=np.uint8)]


def write_official(det: SidaDetector, root: Path, drop_sam: bool = False) -> tuple[Path, Path]:
    folder, clip = root / "SIDA-tiny", root / "clip-vit-tiny"
    save_official(det.net, folder, vision_tower="openai/clip-vit-large-patch14")
    save_tokenizer(det.tokenizer, folder)
    save_clip_tower(det.net, clip)
    if drop_sam:
        state = torch.load(folder / "pytorch_model.bin", weights_only=True)
        sam = {k[len("model.visual_model."):]: state.pop(k) for k in list(state) if k.startswith("model.visual_model.")}
        torch.save(state, folder / "pytorch_model.bin")
        torch.save(sam, root / "sam_vit_h_4b8939.pth")
    return folder, clip


def assert_same_predictions(a: SidaDetector, b: SidaDetector, images: list[np.ndarray]) -> None:
    for pa, pb in zip(a.predict(images), b.predict(images)):
        np.testing.assert_array_equal(pa.probs, pb.probs)
        assert pa.mask is not None and pb.mask is not None
        np.testing.assert_array_equal(pa.mask, pb.mask)


def test_key_mapping_round_trips_with_the_documented_prefixes(writer: SidaDetector) -> None:
    keys = list(writer.net.state_dict())
    official = [to_official_key(k) for k in keys]
    assert all(k.startswith(OFFICIAL_PREFIXES) for k in official)
    assert [from_official_key(k) for k in official] == keys
    assert "model.cls_head.0.3.weight" in official and "lm_head.weight" in official
    assert "model.layers.0.self_attn.q_proj.weight" in official
    assert len(KEY_MAP) == 9
    with pytest.raises(UserError, match="Unexpected key"):
        from_official_key("transformer.h.0.weight")


def test_official_layout_loads_strictly_and_reproduces_outputs(writer: SidaDetector, images: list[np.ndarray],
                                                               tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder, clip = write_official(writer, tmp_path)
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    assert not any(k.startswith("model.vision_tower.") for k in state)  # as released
    assert json.loads((folder / "config.json").read_text())["mm_vision_select_layer"] == -2
    loaded = create_model("sida:tiny", weights=folder, vision_tower=clip, always_mask=True)
    assert "parameters" in capsys.readouterr().err  # memory estimate printed before loading
    assert_same_predictions(writer, loaded, images)


def test_sam_from_its_own_file_and_safetensors_shards(writer: SidaDetector, images: list[np.ndarray],
                                                      tmp_path: Path) -> None:
    folder, clip = write_official(writer, tmp_path, drop_sam=True)
    with pytest.raises(UserError, match="sam_checkpoint"):
        create_model("sida:tiny", weights=folder, vision_tower=clip)
    loaded = create_model("sida:tiny", weights=folder, vision_tower=clip, always_mask=True,
                          sam_checkpoint=tmp_path / "sam_vit_h_4b8939.pth")
    assert_same_predictions(writer, loaded, images)
    # the same weights as two safetensors shards with an index
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    (folder / "pytorch_model.bin").unlink()
    keys = sorted(state)
    halves = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2], "model-00002-of-00002.safetensors": keys[len(keys) // 2 :]}
    for name, part in halves.items():
        save_file({k: state[k].contiguous() for k in part}, str(folder / name))
    index = {"weight_map": {k: name for name, part in halves.items() for k in part}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    again = create_model("sida:tiny", weights=folder, vision_tower=clip, always_mask=True,
                         sam_checkpoint=tmp_path / "sam_vit_h_4b8939.pth")
    assert_same_predictions(writer, again, images)


def test_strictness_names_missing_and_unexpected_keys(writer: SidaDetector, tmp_path: Path) -> None:
    folder, clip = write_official(writer, tmp_path)
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    state.pop("model.sida_fc1.bias")
    state["model.cls_head.0.9.weight"] = torch.zeros(2)
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(UserError, match=r"missing: sida_fc1.bias.*unexpected: cls_head.0.9.weight"):
        create_model("sida:tiny", weights=folder, vision_tower=clip)


def test_missing_vision_tower_is_a_clear_error(writer: SidaDetector, tmp_path: Path) -> None:
    folder, _ = write_official(writer, tmp_path)
    with pytest.raises(UserError, match="vision_tower=PATH"):
        create_model("sida:tiny", weights=folder)


def test_dtype_option_casts_the_weights(writer: SidaDetector, images: list[np.ndarray], tmp_path: Path) -> None:
    folder, clip = write_official(writer, tmp_path)
    half = create_model("sida:tiny", weights=folder, vision_tower=clip, dtype="bf16")
    assert next(half.net.parameters()).dtype == torch.bfloat16
    probs = half.predict(images[:1])[0].probs
    np.testing.assert_allclose(probs, writer.predict(images[:1])[0].probs, atol=0.05)


def test_own_format_round_trip(writer: SidaDetector, images: list[np.ndarray], tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ours", writer.net.state_dict(), {"model": "sida", "config": "tiny"})
    loaded = create_model("sida:tiny", weights=tmp_path / "ours", always_mask=True)
    assert_same_predictions(writer, loaded, images)


def test_memory_estimate_of_the_released_sizes() -> None:
    seven = estimate_memory(CONFIGS["default"], 32004, "bf16")
    thirteen = estimate_memory(CONFIGS["13b"], 32004, "fp16")
    assert 6.5e9 < seven.parts["LLaMA"] < 7.0e9 and 0.6e9 < seven.parts["SAM"] < 0.7e9
    assert 0.29e9 < seven.parts["CLIP"] < 0.32e9
    assert 12.8e9 < thirteen.parts["LLaMA"] < 13.3e9
    assert seven.bytes == 2 * seven.total and "bf16" in str(seven)
    assert estimate_memory(TINY, 1004, "fp32").bytes == 4 * estimate_memory(TINY, 1004, "fp32").total


@pytest.mark.parametrize("problem", ["no_tower", "tower_sizes", "tower_heads", "no_tokenizer", "no_sam", "bad_sam",
                                     "bad_config"])
def test_cheap_checks_run_before_the_checkpoint_is_read(writer: SidaDetector, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch, problem: str) -> None:
    """Tower config, tokenizer files and SAM keys are checked before the (for 13B, ~27 GB) weights are read."""
    import sida.checkpoint_map as cm

    folder, clip = write_official(writer, tmp_path, drop_sam=problem in ("no_sam", "bad_sam"))
    options: dict = {"vision_tower": clip, "sam_checkpoint": tmp_path / "sam_vit_h_4b8939.pth"}
    expected = {"no_tower": "vision_tower=PATH", "tower_sizes": r"hidden_size 999 \(expected",
                "tower_heads": r"num_heads 7 \(expected", "no_tokenizer": "No tokenizer.json or tokenizer.model",
                "no_sam": "sam_checkpoint=PATH", "bad_sam": "not a SAM checkpoint", "bad_config": "not a readable JSON"}
    cfg_file = clip / "config.json"
    cfg = json.loads(cfg_file.read_text())
    if problem == "no_tower":
        options.pop("vision_tower")
    elif problem in ("tower_sizes", "tower_heads"):
        cfg.update({"hidden_size": 999} if problem == "tower_sizes" else {"num_attention_heads": 7})
        cfg_file.write_text(json.dumps(cfg))
    elif problem == "no_tokenizer":
        for name in ("tokenizer.json", "tokenizer.model"):
            (folder / name).unlink(missing_ok=True)
    elif problem == "no_sam":
        options.pop("sam_checkpoint")
    elif problem == "bad_sam":
        torch.save({"encoder.weight": torch.zeros(1)}, tmp_path / "sam_vit_h_4b8939.pth")
    elif problem == "bad_config":
        (folder / "config.json").write_text("{")

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the checkpoint was read before a cheap check failed")

    monkeypatch.setattr(cm, "read_official_state", never)
    monkeypatch.setattr(cm, "read_clip_tower", never)
    with pytest.raises(UserError, match=expected[problem]):
        create_model("sida:tiny", weights=folder, **options)


def test_plan_reads_tensor_names_only_and_estimates_from_the_tower_config(writer: SidaDetector, tmp_path: Path) -> None:
    from sida.checkpoint_map import plan_official_load, tensor_names

    folder, clip = write_official(writer, tmp_path, drop_sam=True)
    plan = plan_official_load(folder, TINY, dtype="fp32", vision_tower=clip, sam_checkpoint=tmp_path / "sam_vit_h_4b8939.pth")
    assert plan.tower == clip and plan.sam is not None
    assert plan.config.clip == writer.net.config.clip
    assert plan.estimate.total == sum(p.numel() for p in writer.net.parameters())
    names = tensor_names([folder / "pytorch_model.bin"])
    assert names == set(torch.load(folder / "pytorch_model.bin", weights_only=True))
