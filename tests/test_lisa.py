"""LISA (``lisa``): parity with an independent re-computation of the official forward at tiny size,
strict loading of the official HF layout (and refusal of SIDA's), the prompt option, training, CLI.

The official-layout folder is written here from reference modules (transformers' ``LlamaForCausalLM``
and ``CLIPVisionModel``, segment_anything's ``Sam``) under the official key names of
dvlab-research/LISA (``model.layers.*``, ``lm_head.*``, ``model.mm_projector.*``,
``model.visual_model.*``, ``model.text_hidden_fcs.0.*``), never through this package's writer.
The independent forward follows ``model/LISA.py``, ``chat.py`` and ``utils/dataset.py`` in plain
torch: CLIP tower, LLaMA, the official [SEG] mask construction, ``text_hidden_fcs``, and SAM.
"""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.utils.transforms import ResizeLongestSide
from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from bench.errors import UserError
from bench.model import TrainOptions
from bench.plugins import create_model
from bench.types import Sample
from sida.checkpoint_map import HEAD_PREFIXES, estimate_memory, save_clip_tower, save_official
from sida.config import CONFIGS, LISA_CONFIGS, TINY
from sida.tokenizer import build_tiny_tokenizer, save_tokenizer

CFG = LISA_CONFIGS["tiny"]
SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the human's questions.")
PAPER_PROMPT = ("Can you identify if this image is real, fully synthetic, or tampered? "
                "Please mask the tampered object/part if it is tampered.")
SAM_MEAN, SAM_STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


# ---------------------------------------------------------------------- the official folder
def reference_sam() -> Sam:
    s = CFG.sam
    return Sam(
        image_encoder=ImageEncoderViT(depth=s.encoder_depth, embed_dim=s.encoder_dim, img_size=s.image_size,
                                      mlp_ratio=4, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                                      num_heads=s.encoder_heads, patch_size=s.patch_size, qkv_bias=True,
                                      use_rel_pos=True, global_attn_indexes=s.global_attn_indexes,
                                      window_size=s.window_size, out_chans=s.prompt_dim),
        prompt_encoder=PromptEncoder(embed_dim=s.prompt_dim, image_embedding_size=(s.embedding_size,) * 2,
                                     input_image_size=(s.image_size,) * 2, mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(
            depth=s.decoder_depth, embedding_dim=s.prompt_dim, mlp_dim=s.decoder_mlp_dim, num_heads=s.decoder_heads),
            transformer_dim=s.prompt_dim, iou_head_depth=3, iou_head_hidden_dim=s.iou_head_hidden_dim),
        pixel_mean=list(SAM_MEAN), pixel_std=list(SAM_STD),
    ).eval()


def jitter(module: torch.nn.Module, generator: torch.Generator, scale: float = 0.05) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A LISA-tiny folder in the released layout + its CLIP folder, and the reference modules."""
    root = tmp_path_factory.mktemp("lisa")
    folder, tower_dir = root / "LISA-tiny", root / "clip-tiny"
    folder.mkdir()
    tokenizer = build_tiny_tokenizer(cls=False)
    save_tokenizer(tokenizer, folder)
    g = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    c, m = CFG.clip, CFG.llm
    clip_cfg = CLIPVisionConfig(hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                                num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
                                image_size=c.image_size, patch_size=c.patch_size, hidden_act="quick_gelu")
    tower = CLIPVisionModel(clip_cfg).eval()
    jitter(tower, g)
    tower.save_pretrained(str(tower_dir))
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=m.hidden_size,
                                         intermediate_size=m.intermediate_size, num_hidden_layers=m.num_layers,
                                         num_attention_heads=m.num_heads,
                                         max_position_embeddings=m.max_position_embeddings,
                                         rms_norm_eps=m.rms_norm_eps)).eval()
    jitter(llama, g, 0.02)
    sam = reference_sam()
    jitter(sam, g)
    jitter(sam.mask_decoder, g, 0.2)  # a mask with more contrast than SAM's initialisation gives
    h, out = m.hidden_size, CFG.out_dim
    heads = {"model.mm_projector.weight": torch.randn(h, c.hidden_size, generator=g) / math.sqrt(c.hidden_size),
             "model.mm_projector.bias": 0.1 * torch.randn(h, generator=g),
             "model.text_hidden_fcs.0.0.weight": torch.randn(h, h, generator=g) / math.sqrt(h),
             "model.text_hidden_fcs.0.0.bias": 0.1 * torch.randn(h, generator=g),
             "model.text_hidden_fcs.0.2.weight": torch.randn(out, h, generator=g) / math.sqrt(h),
             "model.text_hidden_fcs.0.2.bias": 0.1 * torch.randn(out, generator=g)}
    state = {**{k: v.clone() for k, v in llama.state_dict().items()},
             **{f"model.visual_model.{k}": v.clone() for k, v in sam.state_dict().items()}, **heads}
    torch.save(state, folder / "pytorch_model.bin")
    config = {"architectures": ["LISAForCausalLM"], "model_type": "llava", "hidden_size": h,
              "intermediate_size": m.intermediate_size, "num_hidden_layers": m.num_layers,
              "num_attention_heads": m.num_heads, "max_position_embeddings": m.max_position_embeddings,
              "rms_norm_eps": m.rms_norm_eps, "vocab_size": len(tokenizer),
              "vision_tower": "openai/clip-vit-large-patch14", "mm_vision_tower": "openai/clip-vit-large-patch14",
              "mm_vision_select_layer": -2, "mm_hidden_size": c.hidden_size, "mm_use_im_start_end": True,
              "mm_use_im_patch_token": False, "out_dim": out, "train_mask_decoder": True}
    (folder / "config.json").write_text(json.dumps(config))
    return {"folder": folder, "tower": tower_dir, "state": state, "tokenizer": tokenizer, "sam": sam,
            "clip": {k.removeprefix("vision_model."): v for k, v in tower.state_dict().items()}}


def load_lisa(official: dict, **options: object):  # noqa: ANN201
    return create_model("lisa:tiny", weights=official["folder"], vision_tower=official["tower"], **options)


# ---------------------------------------------------------------------- the independent forward
def sam_branch(image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    resized = ResizeLongestSide(CFG.sam.image_size).apply_image(image)
    x = (torch.from_numpy(resized).permute(2, 0, 1).float() - torch.tensor(SAM_MEAN)[:, None, None]) \
        / torch.tensor(SAM_STD)[:, None, None]
    h, w = resized.shape[:2]
    return F.pad(x, (0, CFG.sam.image_size - w, 0, CFG.sam.image_size - h)), (h, w)


def clip_branch(image: np.ndarray) -> torch.Tensor:
    """transformers 4.31 CLIPImageProcessor: shorter side to C (PIL bicubic), centre crop, /255, mean/std."""
    size = CFG.clip.image_size
    h, w = image.shape[:2]
    nh, nw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    x = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BICUBIC))
    top, left = int((nh - size) / 2), int((nw - size) / 2)
    x = torch.from_numpy(x[top:top + size, left:left + size].copy()).permute(2, 0, 1).float() / 255
    return (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]


def linear(x: torch.Tensor, s: dict, name: str) -> torch.Tensor:
    return x @ s[f"{name}.weight"].T + (s[f"{name}.bias"] if f"{name}.bias" in s else 0)


def clip_patch_features(pixels: torch.Tensor, s: dict) -> torch.Tensor:
    """CLIP ViT on one (3, C, C) image: patch tokens of the second-to-last hidden state, (256, D)."""
    p = CFG.clip.patch_size
    x = F.conv2d(pixels[None], s["embeddings.patch_embedding.weight"], stride=p).flatten(2)[0].T
    x = torch.cat([s["embeddings.class_embedding"][None], x]) + s["embeddings.position_embedding.weight"]
    ln = partial(F.layer_norm, normalized_shape=(x.shape[-1],), eps=1e-5)
    x = ln(x, weight=s["pre_layrnorm.weight"], bias=s["pre_layrnorm.bias"])
    states, heads = [x], CFG.clip.num_heads
    for i in range(CFG.clip.num_layers):
        pre = f"encoder.layers.{i}."
        y = ln(x, weight=s[pre + "layer_norm1.weight"], bias=s[pre + "layer_norm1.bias"])
        q, k, v = (linear(y, s, pre + f"self_attn.{n}_proj").view(len(y), heads, -1).transpose(0, 1) for n in "qkv")
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(q.shape[-1]), -1) @ v
        x = x + linear(att.transpose(0, 1).reshape(len(y), -1), s, pre + "self_attn.out_proj")
        y = linear(ln(x, weight=s[pre + "layer_norm2.weight"], bias=s[pre + "layer_norm2.bias"]), s, pre + "mlp.fc1")
        x = x + linear(y * torch.sigmoid(1.702 * y), s, pre + "mlp.fc2")  # quick_gelu
        states.append(x)
    return states[-2][1:]  # mm_vision_select_layer -2, patch tokens only


def llama_last_state(x: torch.Tensor, s: dict) -> torch.Tensor:
    """LLaMA (RMSNorm, RoPE θ 10000, causal attention, SwiGLU) over (L, H) embeddings; final-norm output."""
    m = CFG.llm
    rms = lambda t, w: w * t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + m.rms_norm_eps)  # noqa: E731
    n, d = len(x), m.hidden_size // m.num_heads
    freqs = torch.outer(torch.arange(n).float(), 1.0 / 10000 ** (torch.arange(0, d, 2).float() / d))
    cos, sin = torch.cat([freqs, freqs], -1).cos(), torch.cat([freqs, freqs], -1).sin()
    rope = lambda t: t * cos + torch.cat([-t[..., d // 2:], t[..., : d // 2]], -1) * sin  # noqa: E731
    causal = torch.full((n, n), float("-inf")).triu(1)
    for i in range(m.num_layers):
        pre = f"model.layers.{i}."
        y = rms(x, s[pre + "input_layernorm.weight"])
        q, k, v = (linear(y, s, pre + f"self_attn.{c}_proj").view(n, m.num_heads, d).transpose(0, 1) for c in "qkv")
        att = torch.softmax(rope(q) @ rope(k).transpose(1, 2) / math.sqrt(d) + causal, -1) @ v
        x = x + linear(att.transpose(0, 1).reshape(n, -1), s, pre + "self_attn.o_proj")
        y = rms(x, s[pre + "post_attention_layernorm.weight"])
        gated = F.silu(linear(y, s, pre + "mlp.gate_proj")) * linear(y, s, pre + "mlp.up_proj")
        x = x + linear(gated, s, pre + "mlp.down_proj")
    return rms(x, s["model.norm.weight"])


def tokenizer_image_token(prompt: str, tokenizer) -> list[int]:  # noqa: ANN001
    """LLaVA's ``tokenizer_image_token``: one -200 per ``<image>``, the first chunk's BOS kept once."""
    chunks = [tokenizer(c).input_ids for c in prompt.split("<image>")]
    offset = 1 if chunks[0] and chunks[0][0] == tokenizer.bos_token_id else 0
    ids = chunks[0][:offset]
    for i, chunk in enumerate(chunks):
        ids += ([-200] if i else []) + chunk[offset:]
    return ids


def official_lisa(image: np.ndarray, official: dict, prompt: str = PAPER_PROMPT, answer: str = "[SEG].",
                  before: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask probabilities at the image's size, [SEG] prompt embedding) as ``LISAForCausalLM.model_forward``
    in inference with LISA's ``ValDataset`` conversation. ``before=0`` takes the state AT [SEG] instead."""
    s, tok = official["state"], official["tokenizer"]
    text = f"{SYSTEM} USER: <im_start><image><im_end>\n{prompt} ASSISTANT: {answer}</s>"
    ids = torch.tensor(tokenizer_image_token(text, tok))
    with torch.no_grad():
        feats = linear(clip_patch_features(clip_branch(image), official["clip"]), s, "model.mm_projector")
        where = int((ids == -200).nonzero())
        emb = s["model.embed_tokens.weight"]
        x = torch.cat([emb[ids[:where]], feats, emb[ids[where + 1:]]])
        last = llama_last_state(x, s)
        seg_id = tok.convert_tokens_to_ids("[SEG]")
        seg_mask = torch.cat([torch.zeros(255, dtype=torch.bool), ids[1:] == seg_id, torch.zeros(1, dtype=torch.bool)])
        if before == 0:
            seg_mask = torch.cat([torch.zeros(1, dtype=torch.bool), seg_mask[:-1]])
        hidden = F.relu(linear(last, s, "model.text_hidden_fcs.0.0"))
        embedding = linear(hidden, s, "model.text_hidden_fcs.0.2")[seg_mask]
        sam = official["sam"]
        pixels, resized = sam_branch(image)
        e = CFG.sam.embedding_size
        low_res, _ = sam.mask_decoder(
            image_embeddings=sam.image_encoder(pixels[None]), image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=embedding[:, None],
            dense_prompt_embeddings=sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, e, e),
            multimask_output=False)
        logits = sam.postprocess_masks(low_res, input_size=resized, original_size=image.shape[:2])[0, 0]
    return torch.sigmoid(logits), embedding


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    return [rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), rng.integers(0, 256, (72, 40, 3), dtype=np.uint8)]


def test_forward_matches_the_independent_official_computation(official: dict, images: list[np.ndarray]) -> None:
    lisa = load_lisa(official)
    preds = lisa.predict(images)
    for image, pred in zip(images, preds):
        expected, embedding = official_lisa(image, official)
        assert pred.mask is not None and pred.mask.shape == image.shape[:2]
        np.testing.assert_allclose(pred.mask, expected.numpy(), rtol=0, atol=1e-5)
        assert float(expected.max() - expected.min()) > 0.05  # a mask with structure, not a constant
        assert np.all(np.isnan(pred.probs)) and pred.probs.shape == (2,)  # scored through the mask
    batch = lisa.make_batch([lisa.preprocess(images[0])], lisa.question, lisa.answer)
    with torch.no_grad():
        ours = lisa.net(batch).seg_embeddings[0]
    torch.testing.assert_close(ours, official_lisa(images[0], official)[1], rtol=0, atol=1e-5)
    at_token, _ = official_lisa(images[0], official, before=0)  # the offset rule matters
    assert np.abs(preds[0].mask - at_token.numpy()).max() > 1e-3


def test_the_prompt_option_reaches_the_conversation(official: dict, images: list[np.ndarray]) -> None:
    prompt = "Please segment the tampered region in this image."
    lisa = load_lisa(official, prompt=prompt, answer="Sure, [SEG].")
    expected, _ = official_lisa(images[0], official, prompt=prompt, answer="Sure, [SEG].")
    mask = lisa.predict(images[:1])[0].mask
    np.testing.assert_allclose(mask, expected.numpy(), rtol=0, atol=1e-5)
    assert np.abs(mask - load_lisa(official).predict(images[:1])[0].mask).max() > 1e-4
    default = create_model("lisa:tiny")
    assert default.prompt == PAPER_PROMPT and default.answer == "[SEG]."
    assert prompt in lisa.input_policy.notes and PAPER_PROMPT in default.input_policy.notes  # in the policy hash


@pytest.mark.parametrize("options, message", [
    ({"answer": "It is tampered."}, "exactly one \\[SEG\\]"), ({"answer": "[SEG] and [SEG]"}, "exactly one"),
    ({"prompt": "<image> where?"}, "must not contain <image>"),
    ({"prompt": "mask [SEG]"}, "must not contain \\[SEG\\]"),
    ({"prompt": ""}, "non-empty"), ({"eval_mode": "official"}, "Unknown lisa option"),
])
def test_bad_options_are_one_line_user_errors(options: dict, message: str) -> None:
    with pytest.raises(UserError, match=message) as err:
        create_model("lisa:tiny", **options)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------- strict loading
def test_lisa_folder_loads_with_the_memory_estimate(official: dict, capsys: pytest.CaptureFixture) -> None:
    lisa = load_lisa(official)
    err = capsys.readouterr().err
    assert "lisa: loading" in err and "parameters" in err and "GiB" in err
    own = {k for k in lisa.net.state_dict() if not k.startswith("vision_tower.")}
    assert not any(k.startswith(HEAD_PREFIXES) for k in own) and lisa.net.tokens.cls is None
    assert len(lisa.tokenizer) == 1003 and lisa.tokenizer.convert_tokens_to_ids("[SEG]") == lisa.net.tokens.seg


def _refusal(tmp_path: Path, official: dict, state: dict, model: str, monkeypatch: pytest.MonkeyPatch) -> str:
    import sida.checkpoint_map as cm

    folder = tmp_path / "ckpt"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (official["folder"] / name).is_file():
            (folder / name).write_bytes((official["folder"] / name).read_bytes())
    torch.save(state, folder / "pytorch_model.bin")

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the weights were read before the key layout was checked")

    monkeypatch.setattr(cm, "read_official_state", never)
    with pytest.raises(UserError) as err:
        create_model(model, weights=folder, vision_tower=official["tower"])
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_sida_layout_is_refused_by_lisa_naming_the_first_bad_key(official: dict, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    sida = create_model("sida:tiny")
    sida_state = {k: v for k, v in official["state"].items()}
    for k, v in sida.ensure_model().state_dict().items():
        if k.startswith(HEAD_PREFIXES):
            sida_state[f"model.{k}"] = v
    message = _refusal(tmp_path, official, sida_state, "lisa:tiny", monkeypatch)
    assert "does not match LISA" in message and "unexpected: attention_layer.in_proj_bias," in message
    assert "missing" not in message and message.endswith("use --model sida)")


def test_a_lisa_layout_is_refused_by_sida(official: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    message = _refusal(tmp_path, official, dict(official["state"]), "sida:tiny", monkeypatch)
    assert "does not match SIDA" in message and "missing: attention_layer.in_proj_bias," in message
    assert message.endswith("use --model lisa)")


def test_a_missing_and_an_extra_key_are_named(official: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = dict(official["state"])
    state.pop("model.text_hidden_fcs.0.2.bias")
    state["model.text_hidden_fcs.0.4.weight"] = torch.zeros(1)
    message = _refusal(tmp_path, official, state, "lisa:tiny", monkeypatch)
    assert "missing: text_hidden_fcs.0.2.bias; unexpected: text_hidden_fcs.0.4.weight" in message
    assert "use --model" not in message


def test_shape_mismatch_is_refused_after_reading(official: dict, tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for f in official["folder"].iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    state = dict(official["state"])
    state["model.text_hidden_fcs.0.2.bias"] = torch.zeros(5)
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(UserError, match=r"shape mismatch: text_hidden_fcs.0.2.bias: \(5,\) vs \(32,\)"):
        create_model("lisa:tiny", weights=folder, vision_tower=official["tower"])


def test_own_layout_round_trip_and_official_writer(official: dict, images: list[np.ndarray], tmp_path: Path) -> None:
    lisa = load_lisa(official)
    save_official(lisa.net, tmp_path / "rewritten", vision_tower="openai/clip-vit-large-patch14")
    save_tokenizer(lisa.tokenizer, tmp_path / "rewritten")
    save_clip_tower(lisa.net, tmp_path / "tower")
    written = torch.load(tmp_path / "rewritten" / "pytorch_model.bin", weights_only=True)
    assert set(written) == set(official["state"])  # our writer produces LISA's key layout
    assert json.loads((tmp_path / "rewritten" / "config.json").read_text())["architectures"] == ["LISAForCausalLM"]
    again = create_model("lisa:tiny", weights=tmp_path / "rewritten", vision_tower=tmp_path / "tower")
    for a, b in zip(lisa.predict(images), again.predict(images)):
        np.testing.assert_array_equal(a.mask, b.mask)


def test_memory_estimate_of_lisa_7b_is_sida_7b_without_the_heads() -> None:
    lisa = estimate_memory(LISA_CONFIGS["default"], 32003, "bf16")
    sida = estimate_memory(CONFIGS["default"], 32004, "bf16")
    h = 4096
    heads = (h * h // 2 + h // 2) + (h // 2 * 3 + 3) + (3 * 256 + 256) + (3 * 256 * 256 + 3 * 256 + 256 * 256 + 256)
    assert sida.total - lisa.total == heads + h * 2  # the heads, and [CLS]'s rows in embed_tokens and lm_head
    assert lisa.parts["LLaMA"] == 6_738_415_616 + 3 * h * 2 and 7.6e9 < lisa.total < 7.8e9
    assert lisa.bytes == 2 * lisa.total
    assert estimate_memory(LISA_CONFIGS["default"], 32003, "fp32").bytes == 4 * lisa.total
    assert LISA_CONFIGS["tiny"].llm == TINY.llm and LISA_CONFIGS["tiny"].sam == TINY.sam


# ---------------------------------------------------------------------- training and CLI
class ListDataset:
    def __init__(self, samples: list[Sample], split: str) -> None:
        self.samples, self.split = samples, split

    def __len__(self) -> int:
        return len(self.samples)

    def iter_samples(self, shard: int = 0, num_shards: int = 1, skip_ids: frozenset = frozenset()):  # noqa: ANN201
        yield from self.samples


def make_samples(seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    out = []
    for label in range(3):
        for i in range(2):
            mask = None
            if label == 2:
                mask = np.zeros((40, 48), dtype=bool)
                mask[5:25, 10:30] = True
            out.append(Sample(f"{label}/{i}", rng.integers(0, 255, (40, 48, 3), dtype=np.uint8), label, mask, {}))
    return out


def test_training_uses_mask_losses_only_and_reloads(tmp_path: Path) -> None:
    from sida.losses import loss_preset
    from sida.training import batch_loss, make_train_batch

    lisa = create_model("lisa:tiny")
    lisa.ensure_model()
    samples = make_samples()
    batch = make_train_batch(samples[4:], lisa, 1)  # the two tampered images
    assert all(float(m.sum()) > 0 for m in batch.masks)
    ids = batch.input_ids[0]
    assert PAPER_PROMPT in lisa.tokenizer.decode(ids[ids >= 0]) and int((ids == lisa.net.tokens.seg).sum()) == 1
    terms = batch_loss(lisa.net, batch, loss_preset("paper", 1))
    assert terms.cls == 0 and terms.lm == 0 and float(terms.mask) > 0
    assert torch.isclose(terms.total, terms.bce + terms.dice)
    report = lisa.fit(ListDataset(samples, "train"), ListDataset(make_samples(1), "validation"),
                      TrainOptions(out_dir=tmp_path / "run", epochs=2, batch_size=2,
                                   extra={"warmup_steps": 0, "grad_accumulation": 1}))
    assert report["loss_preset"] == "paper" and report["steps"] == 2 and report["last_loss"]["cls"] == 0
    assert report["train_samples"] == 2 and report["left_out"] == {"not_tampered": 4}  # masks of tampered images
    history = report["history"][0]
    assert "val_acc" not in history and 0 <= history["val_binary_acc"] <= 1 and history["val_giou"] >= 0
    trained = json.loads((tmp_path / "run" / "best" / "config.json").read_text())["trainable"]
    assert not any(k.startswith(HEAD_PREFIXES) or "lm_head" in k for k in trained)
    assert any("mask_decoder" in k for k in trained) and any("text_hidden_fcs" in k for k in trained)
    loaded = create_model("lisa:tiny", weights=tmp_path / "run" / "last")
    np.testing.assert_allclose(loaded.predict([samples[0].image])[0].mask, lisa.predict([samples[0].image])[0].mask,
                               rtol=0, atol=1e-6)
    with pytest.raises(UserError, match="one training stage"):
        lisa.fit(ListDataset(samples, "train"), None, TrainOptions(out_dir=tmp_path / "s2", extra={"stage": 2}))


@pytest.fixture(scope="module")
def sid_mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.sidmini import SMALL_PER_CLASS, SMALL_SIZE, build_sid_mini

    return build_sid_mini(tmp_path_factory.mktemp("sidmini"), per_class=SMALL_PER_CLASS, size=SMALL_SIZE)


def test_cli_runs_sid_mini_localization_into_the_table_3_layout(tmp_path: Path, sid_mini_root: Path) -> None:
    from bench.cli import main

    out = tmp_path / "run"
    assert main(["run", "sid_mini_localization", "--model", "lisa:tiny", "--data-root", f"sid_mini={sid_mini_root}",
                 "--out", str(out), "--limit", "6"]) == 0
    results = json.loads((out / "results.json").read_text())
    entry = results["entries"][0]
    assert entry["n"] == 6 and entry["n_errors"] == 0
    values = entry["metrics"]["localization"]["values"]
    assert 0.0 <= values["pixel_auc"]["value"] <= 1.0 and values["n_images"]["value"] == 2
    assert results["model"]["adapters"]["detection"].startswith("LocalizerAsDetector")
    assert results["model"]["capabilities"] == ["localize"]
    table = (out / "tables" / "localization.md").read_text()
    assert "**Table 3.**" in table and "\n| lisa:tiny | " in table


def test_cli_predict_gives_the_verdict_of_the_max_pooled_mask(tmp_path: Path, images: list[np.ndarray]) -> None:
    from bench.cli import main

    photo = tmp_path / "photo.png"
    Image.fromarray(images[0]).save(photo)
    assert main(["predict", "--model", "lisa:tiny", "--save-mask-npy", "--out", str(tmp_path / "out"), str(photo)]) == 0
    record = json.loads((tmp_path / "out" / "photo.json").read_text())
    mask = np.load(tmp_path / "out" / "photo_mask.npy")
    assert record["probabilities"]["fake"] == pytest.approx(float(mask.max()))
    assert record["verdict"] == ("fake" if mask.max() >= 0.5 else "real") and record["label_space"] == "binary"
    assert (tmp_path / "out" / "photo_overlay.png").is_file()
