"""SIDA network: head shapes, det→seg attention wiring, hidden-state position rule, eval modes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.errors import UserError
from sida.batch import IMAGE_TOKEN_INDEX, SidaBatch, SpecialTokenIds
from sida.checkpoint_map import empty_model
from sida.config import CONFIGS, TINY
from sida.model import SidaModel, token_state_positions

TOKENS = SpecialTokenIds(cls=1000, seg=1001, im_start=1002, im_end=1003, pad=0, eos=2)
VOCAB = 1010
S, C = TINY.sam.image_size, TINY.clip.image_size  # SAM and CLIP input sizes of the tiny configuration


@pytest.fixture(scope="module")
def net() -> SidaModel:
    torch.manual_seed(0)
    return SidaModel(TINY, TOKENS, VOCAB).eval()


def make_batch(rows: list[list[int]], seed: int = 0) -> SidaBatch:
    g = torch.Generator().manual_seed(seed)
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), TOKENS.pad)
    attention = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        attention[i, : len(r)] = True
    n = len(rows)
    return SidaBatch(torch.randn(n, 3, S, S, generator=g), torch.randn(n, 3, C, C, generator=g), ids,
                     attention, [(S * 3 // 4, S)] * n, [(48, 64)] * n)


PROMPT = [1, 5, 1002, IMAGE_TOKEN_INDEX, 1003, 7, 8, 9]
TAMPERED_ROW = PROMPT + [1000, 11, 12, 13, 1001, 2]
REAL_ROW = PROMPT + [1000, 11, 12, 14, 2]


@pytest.mark.parametrize("name, hidden", [("default", 4096), ("13b", 5120), ("tiny", 64)])
def test_head_shapes_follow_the_official_code(name: str, hidden: int) -> None:
    model = empty_model(CONFIGS[name], TOKENS, 32004 if name != "tiny" else VOCAB)
    out = CONFIGS[name].out_dim
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["cls_head.0.0.weight"] == (hidden // 2, hidden)
    assert shapes["cls_head.0.3.weight"] == (3, hidden // 2)
    assert shapes["text_hidden_fcs.0.0.weight"] == (hidden, hidden)
    assert shapes["text_hidden_fcs.0.2.weight"] == (out, hidden)
    assert shapes["sida_fc1.weight"] == (out, 3)
    assert shapes["attention_layer.in_proj_weight"] == (3 * out, out)
    assert model.attention_layer.num_heads == 8 and model.attention_layer.batch_first
    assert shapes["mm_projector.weight"] == (hidden, CONFIGS[name].clip.hidden_size)
    assert out == (256 if name != "tiny" else 32)


def hand_attention(mha: torch.nn.MultiheadAttention, query: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
    """Multi-head attention written out: q (d,), k = v = seg (n, d) → (d,)."""
    d, heads = query.shape[0], mha.num_heads
    w, b = mha.in_proj_weight, mha.in_proj_bias
    q = query @ w[:d].T + b[:d]
    k = seg @ w[d : 2 * d].T + b[d : 2 * d]
    v = seg @ w[2 * d :].T + b[2 * d :]
    hd = d // heads
    outs = []
    for h in range(heads):
        sl = slice(h * hd, (h + 1) * hd)
        weights = torch.softmax(k[:, sl] @ q[sl] / math.sqrt(hd), dim=0)
        outs.append(weights @ v[:, sl])
    return torch.cat(outs) @ mha.out_proj.weight.T + mha.out_proj.bias


def test_attention_matches_a_hand_written_computation(net: SidaModel) -> None:
    g = torch.Generator().manual_seed(1)
    seg, query = torch.randn(3, 32, generator=g), torch.randn(32, generator=g)
    expected = seg + hand_attention(net.attention_layer, query, seg)
    torch.testing.assert_close(net.fuse(seg, query), expected, rtol=1e-5, atol=1e-6)
    other = net.fuse(seg, torch.randn(32, generator=g))
    assert not torch.allclose(other, expected)  # with 3 [SEG] tokens the query matters


def test_one_seg_token_makes_the_query_irrelevant(net: SidaModel) -> None:
    g = torch.Generator().manual_seed(2)
    seg = torch.randn(1, 32, generator=g)
    a, b = net.fuse(seg, torch.randn(32, generator=g)), net.fuse(seg, 100 * torch.randn(32, generator=g))
    mha = net.attention_layer
    v = seg @ mha.in_proj_weight[64:].T + mha.in_proj_bias[64:]
    torch.testing.assert_close(a, seg + mha.out_proj(v), rtol=1e-5, atol=1e-6)
    assert torch.equal(a, b)


def test_detection_cannot_change_a_one_seg_mask_end_to_end() -> None:
    torch.manual_seed(0)
    model = SidaModel(TINY, TOKENS, VOCAB).eval()
    batch = make_batch([TAMPERED_ROW])
    with torch.no_grad():
        before = model(batch)
        model.sida_fc1.weight.mul_(-7.0).add_(1.0)
        after = model(batch)
    assert torch.equal(before.pred_masks[0], after.pred_masks[0])
    assert before.pred_masks[0].shape == (1, 48, 64)


def test_fc_ablation_lets_detection_reach_the_mask() -> None:
    from dataclasses import replace

    torch.manual_seed(0)
    model = SidaModel(replace(TINY, attention="fc"), TOKENS, VOCAB).eval()
    batch = make_batch([TAMPERED_ROW])
    with torch.no_grad():
        before = model(batch).pred_masks[0]
        model.sida_fc1.weight.add_(1.0)
        after = model(batch).pred_masks[0]
    assert not torch.equal(before, after)


def official_mask(input_ids: torch.Tensor, token: int) -> torch.Tensor:
    """The official rule: cat(zeros(255), ids[:, 1:] == token, zeros(1))."""
    hit = input_ids[:, 1:] == token
    zeros = torch.zeros
    return torch.cat([zeros((hit.shape[0], 255), dtype=torch.bool), hit, zeros((hit.shape[0], 1), dtype=torch.bool)], 1)


def test_hidden_state_is_the_one_before_the_token(net: SidaModel) -> None:
    from dataclasses import replace

    batch = make_batch([TAMPERED_ROW, REAL_ROW])
    with torch.no_grad():
        embeds, attention, _ = net.embed(batch)
        last = net.lm(inputs_embeds=embeds, attention_mask=attention, output_hidden_states=True).hidden_states[-1]
        out = net(batch)
        head = net.cls_head[0]
        expected = head(last[official_mask(batch.input_ids, TOKENS.cls)])
        torch.testing.assert_close(out.cls_logits, expected)
        at_token = head(last[:, [len(PROMPT) + 255, len(PROMPT) + 255]].diagonal(dim1=0, dim2=1).T)
        assert not torch.allclose(out.cls_logits, at_token)
        plain = SidaModel(replace(TINY, attention="none"), TOKENS, VOCAB).eval()
        plain.load_state_dict(net.state_dict())
        seg = plain(batch).seg_embeddings[0]
        torch.testing.assert_close(seg, net.text_hidden_fcs[0](last[official_mask(batch.input_ids, TOKENS.seg)]))
    positions = token_state_positions(batch.input_ids, TOKENS.seg, 256)
    assert positions[0].tolist() == [len(PROMPT) + 4 + 255 - 1] and positions[1].tolist() == []


def test_right_padding_and_batch_composition_do_not_change_results(net: SidaModel) -> None:
    both = make_batch([TAMPERED_ROW, REAL_ROW])
    with torch.no_grad():
        joint = net(both)
        for i in range(2):
            single = SidaBatch(both.images_sam[i : i + 1], both.images_clip[i : i + 1],
                               both.input_ids[i : i + 1], both.attention_mask[i : i + 1], [(S * 3 // 4, S)], [(48, 64)])
            alone = net(single)
            torch.testing.assert_close(alone.cls_logits, joint.cls_logits[i : i + 1], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(alone.pred_masks[0], joint.pred_masks[i], rtol=1e-5, atol=1e-5)
    assert joint.pred_masks[1].shape == (0, 48, 64)


def test_lora_wraps_only_q_and_v_and_lm_loss_is_returned() -> None:
    torch.manual_seed(0)
    model = SidaModel(TINY, TOKENS, VOCAB)
    model.add_lora()
    names = model.set_official_trainable()
    assert any("q_proj.lora_A" in n for n in names) and any("v_proj.lora_B" in n for n in names)
    assert not any("k_proj.lora" in n or "o_proj.lora" in n for n in dict(model.named_parameters()))
    assert not any("lm_head" in n or "vision_tower" in n or "image_encoder" in n for n in names)
    assert any("embed_tokens" in n for n in names) and any("mask_decoder" in n for n in names)
    batch = make_batch([TAMPERED_ROW])
    batch.labels = torch.where(torch.arange(batch.input_ids.shape[1]) >= len(PROMPT), batch.input_ids, -100)
    out = model(batch)
    assert out.lm_loss is not None and torch.isfinite(out.lm_loss)
    (out.lm_loss + out.cls_logits.sum() + out.pred_masks[0].mean()).backward()
    assert model.cls_head[0][0].weight.grad is not None


# ---------------------------------------------------------------------- detector modes
@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((60, 80), (64, 64), (90, 50), (70, 70))]


def _detector(**options: object):  # noqa: ANN202
    from bench.plugins import create_model

    return create_model("sida:tiny", **options)


@pytest.mark.parametrize("favoured", [0, 2])
def test_honest_and_official_modes_differ_only_where_they_should(images: list[np.ndarray], favoured: int) -> None:
    labels = [2, 0, 1, 2]
    honest, official = _detector(eval_mode="honest"), _detector(eval_mode="official")
    for det in (honest, official):
        net = det.ensure_model()
        with torch.no_grad():
            net.cls_head[0][3].bias.zero_()
            net.cls_head[0][3].bias[favoured] = 5.0
    h, o = honest.predict(images), official.predict(images, labels=labels)
    for i, (ph, po) in enumerate(zip(h, o)):
        np.testing.assert_array_equal(ph.probs, po.probs)
        assert (ph.mask is not None) == (ph.predicted_class == 2)
        assert (po.mask is not None) == (labels[i] == 2)
        if ph.mask is not None and po.mask is not None:
            np.testing.assert_array_equal(ph.mask, po.mask)
            assert ph.mask.shape == images[i].shape[:2] and 0.0 <= ph.mask.min() <= ph.mask.max() <= 1.0
        np.testing.assert_allclose(ph.probs.sum(), 1.0, rtol=1e-9)
    assert all(p.predicted_class == favoured for p in h)
    assert official.describe()["options"]["eval_mode"] == "official"


def test_official_mode_needs_labels(images: list[np.ndarray]) -> None:
    with pytest.raises(UserError, match="ground-truth label"):
        _detector(eval_mode="official").predict(images[:1])


def test_bad_options_are_user_errors() -> None:
    with pytest.raises(UserError, match="eval_mode"):
        _detector(eval_mode="cheat")
    with pytest.raises(UserError, match="Unknown sida option"):
        _detector(colour="red")
    with pytest.raises(UserError, match="attention"):
        _detector(attention="transformer")


def test_explanations_template_and_generated(images: list[np.ndarray]) -> None:
    from sida.detector import TEMPLATES

    template = _detector(explain=True).predict(images[:2])
    assert [p.text for p in template] == [TEMPLATES[p.predicted_class] for p in template]
    generated = _detector(explain=True, text="generated").predict(images[:1])
    assert isinstance(generated[0].text, str)
    assert _detector().predict(images[:1])[0].text is None
