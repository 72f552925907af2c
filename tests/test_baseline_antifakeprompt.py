"""AntifakePrompt: the official file layouts (written here from LAVIS's module definitions), strict loading,
the forward against an independent plain-torch re-computation of LAVIS's InstructBLIP / textual-inversion
equations, the predict_class decision, the test policy, the training recipe and the CLI paths."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from baselines.antifakeprompt import (TINY_BERT_VOCAB, AntifakePrompt, PseudoWordEmbedding, probabilities,
                                      resize_bicubic)
from baselines.antifakeprompt_training import lavis_lr
from bench.errors import UserError
from bench.plugins import create_model
from sida.tokenizer import train_tiny_sentencepiece

torch.set_num_threads(1)
CFG = AntifakePrompt.configs["tiny"]
V, Q, L = CFG.vision, CFG.qformer, CFG.llm
SP_VOCAB = 1000  # sida's tiny sentencepiece model stands in for Vicuna's tokenizer.model


# ---------------------------------------------------------------------- official layouts, from LAVIS's modules
def eva_layout(depth: int) -> dict[str, tuple[int, ...]]:
    """eva_vit.py VisionTransformer(use_mean_pooling=False, qkv_bias=True) at the tiny sizes."""
    d, m, n = V.hidden, V.intermediate, (V.image_size // V.patch) ** 2
    keys = {"cls_token": (1, 1, d), "pos_embed": (1, n + 1, d), "patch_embed.proj.weight": (d, 3, V.patch, V.patch),
            "patch_embed.proj.bias": (d,)}
    for i in range(depth):
        b = f"blocks.{i}."
        keys.update({b + "norm1.weight": (d,), b + "norm1.bias": (d,), b + "attn.q_bias": (d,), b + "attn.v_bias": (d,),
                     b + "attn.qkv.weight": (3 * d, d), b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
                     b + "norm2.weight": (d,), b + "norm2.bias": (d,), b + "mlp.fc1.weight": (m, d),
                     b + "mlp.fc1.bias": (m,), b + "mlp.fc2.weight": (d, m), b + "mlp.fc2.bias": (d,)})
    return keys


def instructblip_layout(qformer_rows: int) -> dict[str, tuple[int, ...]]:
    """What LAVIS's saver keeps of Blip2VicunaInstruct: ln_vision, Qformer.bert (cls = None), query_tokens, llm_proj."""
    h, i_, dv = Q.hidden, Q.intermediate, V.hidden
    keys = {"ln_vision.weight": (dv,), "ln_vision.bias": (dv,), "query_tokens": (1, Q.num_query_tokens, h),
            "llm_proj.weight": (L.hidden, h), "llm_proj.bias": (L.hidden,),
            "Qformer.bert.embeddings.word_embeddings.weight": (qformer_rows, h),
            "Qformer.bert.embeddings.position_embeddings.weight": (Q.max_positions, h),
            "Qformer.bert.embeddings.LayerNorm.weight": (h,), "Qformer.bert.embeddings.LayerNorm.bias": (h,)}

    def attention(prefix: str, kv_width: int) -> None:
        keys.update({prefix + "self.query.weight": (h, h), prefix + "self.query.bias": (h,),
                     prefix + "self.key.weight": (h, kv_width), prefix + "self.key.bias": (h,),
                     prefix + "self.value.weight": (h, kv_width), prefix + "self.value.bias": (h,),
                     prefix + "output.dense.weight": (h, h), prefix + "output.dense.bias": (h,),
                     prefix + "output.LayerNorm.weight": (h,), prefix + "output.LayerNorm.bias": (h,)})

    for layer in range(Q.layers):
        b = f"Qformer.bert.encoder.layer.{layer}."
        attention(b + "attention.", h)
        if layer % Q.cross_attention_frequency == 0:
            attention(b + "crossattention.", dv)
        for ffn in ("", "_query"):
            keys.update({b + f"intermediate{ffn}.dense.weight": (i_, h), b + f"intermediate{ffn}.dense.bias": (i_,),
                         b + f"output{ffn}.dense.weight": (h, i_), b + f"output{ffn}.dense.bias": (h,),
                         b + f"output{ffn}.LayerNorm.weight": (h,), b + f"output{ffn}.LayerNorm.bias": (h,)})
    return keys


def llama_layout() -> dict[str, tuple[int, ...]]:
    """A Hugging Face LlamaForCausalLM state dict (Vicuna's files)."""
    d, m = L.hidden, L.intermediate
    keys = {"model.embed_tokens.weight": (SP_VOCAB, d), "model.norm.weight": (d,), "lm_head.weight": (SP_VOCAB, d)}
    for i in range(L.layers):
        b = f"model.layers.{i}."
        keys.update({b + f"self_attn.{p}_proj.weight": (d, d) for p in "qkvo"})
        keys.update({b + "mlp.gate_proj.weight": (m, d), b + "mlp.up_proj.weight": (m, d),
                     b + "mlp.down_proj.weight": (d, m), b + "input_layernorm.weight": (d,),
                     b + "post_attention_layernorm.weight": (d,)})
    return keys


def random_state(layout: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in layout.items():
        norm = "norm" in key.lower() or key.startswith("ln_vision")
        if norm and key.endswith("weight"):
            out[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            out[key] = torch.randn(shape, generator=g) * (0.1 if norm or key.endswith("bias") else 0.3)
    return out


def inv_freq() -> torch.Tensor:
    dim = L.hidden // L.heads
    return 1.0 / (10000 ** (torch.arange(0, dim, 2).float() / dim))


def write_official(folder: Path, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """The five official files of the tiny configuration, with the buffers LAVIS's saver keeps."""
    folder.mkdir(parents=True, exist_ok=True)
    eva = random_state(eva_layout(V.layers + 1), seed)  # + EVA-CLIP's last block, which BLIP-2 drops
    eva.update({"norm.weight": torch.ones(V.hidden), "norm.bias": torch.zeros(V.hidden)})
    torch.save(eva, folder / "eva_vit_g.pth")
    blip = random_state(instructblip_layout(len(TINY_BERT_VOCAB) + 1), seed + 1)
    buffers = {"Qformer.bert.embeddings.position_ids": torch.arange(Q.max_positions)[None],
               **{f"llm_model.model.layers.{i}.self_attn.rotary_emb.inv_freq": inv_freq() for i in range(L.layers)}}
    torch.save({"model": {**blip, **buffers}, "epoch": 9}, folder / "instruct_blip_vicuna7b_trimmed.pth")
    llm = random_state(llama_layout(), seed + 2)
    (folder / "vicuna-7b-v1.3").mkdir(exist_ok=True)
    torch.save({**llm, "model.layers.0.self_attn.rotary_emb.inv_freq": inv_freq()},
               folder / "vicuna-7b-v1.3" / "pytorch_model.bin")
    (folder / "vicuna-7b-v1.3" / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "hidden_size": L.hidden, "intermediate_size": L.intermediate,
        "num_attention_heads": L.heads, "num_hidden_layers": L.layers, "rms_norm_eps": L.rms_norm_eps,
        "vocab_size": SP_VOCAB, "max_position_embeddings": L.max_positions, "model_type": "llama"}))
    (folder / "vicuna-7b-v1.3" / "tokenizer.model").write_bytes(train_tiny_sentencepiece())
    (folder / "bert-base-uncased").mkdir(exist_ok=True)
    (folder / "bert-base-uncased" / "vocab.txt").write_text("\n".join(TINY_BERT_VOCAB) + "\n")
    g = torch.Generator().manual_seed(seed + 3)
    prompt = {"Qformer.bert.embeddings.train_word_embeddings.weight": torch.randn(1, Q.hidden, generator=g),
              "llm_model.model.train_embed_tokens.weight": torch.randn(1, L.hidden, generator=g) * 0.3}
    torch.save({"model": {**prompt, **buffers}, "optimizer": {"state": {}, "param_groups": []},
                "config": {"model": {"prompt": "Is this photo real [*]?"}}, "scaler": None, "epoch": 4},
               folder / "COCO_150k_SD2_SD2IP.pth")
    return {"eva": eva, "blip": blip, "llm": llm, "prompt": prompt}


# ---------------------------------------------------------------------- independent LAVIS forward (plain torch)
def ln(x, w, b, eps):
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def heads_attention(q, k, v, n_heads, mask=None):
    b, tq, d = q.shape
    split = lambda t: t.view(b, t.shape[1], n_heads, d // n_heads).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // n_heads)
    if mask is not None:
        scores = scores + mask
    return (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, tq, d)


def lavis_vit(s, image):
    """eva_vit.py VisionTransformer.forward (depth V.layers), then Blip2Base's ln_vision (LayerNorm eps 1e-5)."""
    x = F.conv2d(image, s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=V.patch)
    x = torch.cat([s["cls_token"].expand(x.shape[0], -1, -1), x.flatten(2).transpose(1, 2)], 1) + s["pos_embed"]
    for i in range(V.layers):
        b = f"blocks.{i}."
        h = ln(x, s[b + "norm1.weight"], s[b + "norm1.bias"], 1e-6)
        bias = torch.cat([s[b + "attn.q_bias"], torch.zeros_like(s[b + "attn.v_bias"]), s[b + "attn.v_bias"]])
        q, k, v = F.linear(h, s[b + "attn.qkv.weight"], bias).chunk(3, dim=-1)
        x = x + F.linear(heads_attention(q, k, v, V.heads), s[b + "attn.proj.weight"], s[b + "attn.proj.bias"])
        h = ln(x, s[b + "norm2.weight"], s[b + "norm2.bias"], 1e-6)
        x = x + F.linear(F.gelu(F.linear(h, s[b + "mlp.fc1.weight"], s[b + "mlp.fc1.bias"])), s[b + "mlp.fc2.weight"],
                         s[b + "mlp.fc2.bias"])
    return x


def lavis_qformer(s, pseudo, image_embeds, text_ids):
    """Qformer.py BertModelTextualInversion(query_embeds=query_tokens, encoder_hidden_states=image_embeds)."""
    pre = "Qformer.bert."
    words = s[pre + "embeddings.word_embeddings.weight"]
    rows = words.shape[0]
    text = torch.where((text_ids >= rows)[..., None], pseudo[(text_ids - rows).clamp(min=0)], words[text_ids.clamp(max=rows - 1)])
    text = text + s[pre + "embeddings.position_embeddings.weight"][: text_ids.shape[1]]
    b, nq = image_embeds.shape[0], Q.num_query_tokens
    x = torch.cat([s["query_tokens"].expand(b, -1, -1), text.expand(b, -1, -1)], 1)
    x = ln(x, s[pre + "embeddings.LayerNorm.weight"], s[pre + "embeddings.LayerNorm.bias"], 1e-12)

    def attn(p, hidden, kv):
        q = F.linear(hidden, s[p + "self.query.weight"], s[p + "self.query.bias"])
        k = F.linear(kv, s[p + "self.key.weight"], s[p + "self.key.bias"])
        v = F.linear(kv, s[p + "self.value.weight"], s[p + "self.value.bias"])
        out = F.linear(heads_attention(q, k, v, Q.heads), s[p + "output.dense.weight"], s[p + "output.dense.bias"])
        return ln(out + hidden, s[p + "output.LayerNorm.weight"], s[p + "output.LayerNorm.bias"], 1e-12)

    def ffn(p, hidden, suffix):
        inter = F.gelu(F.linear(hidden, s[p + f"intermediate{suffix}.dense.weight"], s[p + f"intermediate{suffix}.dense.bias"]))
        out = F.linear(inter, s[p + f"output{suffix}.dense.weight"], s[p + f"output{suffix}.dense.bias"])
        return ln(out + hidden, s[p + f"output{suffix}.LayerNorm.weight"], s[p + f"output{suffix}.LayerNorm.bias"], 1e-12)

    for layer in range(Q.layers):
        p = pre + f"encoder.layer.{layer}."
        a = attn(p + "attention.", x, x)
        query = a[:, :nq]
        if layer % Q.cross_attention_frequency == 0:
            query = attn(p + "crossattention.", query, image_embeds)
        x = torch.cat([ffn(p, query, "_query"), ffn(p, a[:, nq:], "")], 1)
    return F.linear(x[:, :nq], s["llm_proj.weight"], s["llm_proj.bias"])


def lavis_llama(s, pseudo, prefix, ids, attention):
    """modeling_llama.py LlamaForCausalLMTextualInversion on [inputs_llm, embed(ids)] (logits over the file's rows;
    the official's extra random [PAD] embedding row is only read at masked positions: zeros here)."""
    rows = s["model.embed_tokens.weight"].shape[0] + 1  # + [PAD] (LAVIS resize_token_embeddings)
    table = torch.cat([s["model.embed_tokens.weight"], torch.zeros(1, L.hidden)])
    emb = torch.where((ids >= rows)[..., None], pseudo[(ids - rows).clamp(min=0)], table[ids.clamp(max=rows - 1)])
    x = torch.cat([prefix, emb], 1)
    t, dh = x.shape[1], L.hidden // L.heads
    freqs = torch.arange(t).float()[:, None] * inv_freq()[None]
    cos, sin = torch.cat([freqs, freqs], -1).cos(), torch.cat([freqs, freqs], -1).sin()
    keep = torch.cat([torch.ones(prefix.shape[:2]), attention.float()], 1)
    mask = torch.full((t, t), torch.finfo(torch.float32).min).triu(1)[None, None] + \
        (1 - keep)[:, None, None, :] * torch.finfo(torch.float32).min

    def rms(h, w):
        return w * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + L.rms_norm_eps))

    def rope(h):
        h = h.view(h.shape[0], t, L.heads, dh).transpose(1, 2)
        rotated = torch.cat([-h[..., dh // 2:], h[..., : dh // 2]], -1)
        return h * cos + rotated * sin

    for i in range(L.layers):
        b = f"model.layers.{i}."
        h = rms(x, s[b + "input_layernorm.weight"])
        q, k = rope(F.linear(h, s[b + "self_attn.q_proj.weight"])), rope(F.linear(h, s[b + "self_attn.k_proj.weight"]))
        v = F.linear(h, s[b + "self_attn.v_proj.weight"]).view(x.shape[0], t, L.heads, dh).transpose(1, 2)
        att = ((q @ k.transpose(-1, -2) / math.sqrt(dh) + mask).softmax(-1) @ v).transpose(1, 2).reshape(x.shape)
        x = x + F.linear(att, s[b + "self_attn.o_proj.weight"])
        h = rms(x, s[b + "post_attention_layernorm.weight"])
        x = x + F.linear(F.silu(F.linear(h, s[b + "mlp.gate_proj.weight"])) * F.linear(h, s[b + "mlp.up_proj.weight"]),
                         s[b + "mlp.down_proj.weight"])
    return F.linear(rms(x, s["model.norm.weight"]), s["lm_head.weight"])


def official_ids():
    """The token ids of the slow tokenizers LAVIS ran (sentencepiece per chunk, BERT word lookup)."""
    sp = spm.SentencePieceProcessor(model_proto=train_tiny_sentencepiece())
    pad, pseudo = SP_VOCAB, SP_VOCAB + 1
    prompt = [sp.eos_id(), *sp.encode("Is this photo real"), pseudo, *sp.encode("?")]
    vocab = {w: i for i, w in enumerate(TINY_BERT_VOCAB)}
    qformer = [vocab["[CLS]"], *(vocab[w] for w in ("is", "this", "photo", "real")), len(vocab) + 1, vocab["?"],
               vocab["[SEP]"]]
    return prompt, [sp.encode("yes"), sp.encode("no")], qformer, pad, sp.eos_id()


def official_predict_class(files, images, answers=None):
    """_predict_class(candidates=["yes", "no"]) → the per-image losses (B, 2) (mean over the T − 1 positions);
    with ``answers`` (one token list per image): forward()'s token-mean training loss instead."""
    prompt, cands, qids, pad, eos = official_ids()
    tf = transforms.Compose([transforms.Resize(V.image_size, interpolation=transforms.InterpolationMode.BICUBIC),
                             transforms.CenterCrop(V.image_size), transforms.ToTensor(),
                             transforms.Normalize(CFG.mean, CFG.std)])
    x = torch.stack([tf(Image.fromarray(im)) for im in images])
    inputs_llm = lavis_qformer(files["blip"], files["prompt"]["Qformer.bert.embeddings.train_word_embeddings.weight"],
                               ln(lavis_vit(files["eva"], x), files["blip"]["ln_vision.weight"],
                                  files["blip"]["ln_vision.bias"], 1e-5), torch.tensor([qids]))
    seqs = [cands] * len(images) if answers is None else [[a] for a in answers]
    flat = [a for per_image in seqs for a in per_image]
    width = max(len(a) for a in flat)
    ids = torch.tensor([prompt + a + [pad] * (width - len(a)) for a in flat])
    att = torch.tensor([[1] * len(prompt) + [1] * len(a) + [0] * (width - len(a)) for a in flat])
    targets = torch.tensor([[-100] * (Q.num_query_tokens + len(prompt)) + a + [-100] * (width - len(a)) for a in flat])
    prefix = inputs_llm.repeat_interleave(len(seqs[0]), 0)
    logits = lavis_llama(files["llm"], files["prompt"]["llm_model.model.train_embed_tokens.weight"], prefix, ids, att)
    ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), targets[:, 1:], ignore_index=-100, reduction="none")
    if answers is not None:
        return ce.sum() / (targets != -100).sum(), inputs_llm
    return ce.mean(1).view(len(images), len(cands)), inputs_llm


def images(n: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [(70, 90), (90, 64), (56, 56), (120, 80)]
    return [(rng.random((*sizes[i % 4], 3)) * 255).astype(np.uint8) for i in range(n)]


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("antifake") / "w"
    return folder, write_official(folder)


@pytest.fixture(scope="module")
def loaded(official) -> AntifakePrompt:
    return create_model("antifakeprompt:tiny", weights=official[0])  # type: ignore[return-value]


# ---------------------------------------------------------------------- parity
def test_forward_matches_the_independent_lavis_computation(official, loaded):
    ims = images(3)
    want, prefix = official_predict_class(official[1], ims)
    x = torch.stack([loaded.preprocess(im) for im in ims])
    from baselines.antifakeprompt import candidate_losses, image_prefix

    with torch.no_grad():
        ours, seq_len = candidate_losses(loaded.net, x, loaded.tokens)
        np.testing.assert_allclose(image_prefix(loaded.net, x, loaded.tokens).numpy(), prefix.numpy(), atol=5e-7)
    assert torch.max(torch.abs(ours - want)) < 1e-5
    preds = loaded.predict(ims)
    loglik = np.stack([p.logits for p in preds])
    np.testing.assert_allclose(loglik, -(seq_len - 1) * want.double().numpy(), atol=1e-4)
    # decision as predict_class + test.py: candidates[list(argsort(loss)).index(0)] == "yes" → real
    official_real = [int(torch.argsort(row)[0]) == 0 for row in want]
    assert [p.probs[1] < 0.5 for p in preds] == official_real
    np.testing.assert_allclose([p.probs for p in preds], torch.softmax(-(seq_len - 1) * want.double(), 1), atol=1e-6)


def test_training_loss_matches_lavis_forward(official, loaded):
    from baselines.antifakeprompt_training import lm_loss_sum

    ims, labels = images(3, seed=1), [0, 2, 1]
    prompt, cands, _, _, eos = official_ids()
    want, _ = official_predict_class(official[1], ims, answers=[cands[0 if y == 0 else 1] + [eos] for y in labels])
    with torch.no_grad():
        s, n = lm_loss_sum(loaded, torch.stack([loaded.preprocess(im) for im in ims]), labels)
    assert abs(float(s / n) - float(want)) < 1e-5


def test_tokens_are_the_slow_tokenizer_ids(loaded):
    prompt, cands, qids, pad, eos = official_ids()
    t = loaded.tokens
    assert list(t.prompt_ids) == prompt and [list(c) for c in t.candidates] == cands and list(t.qformer_ids) == qids
    assert (t.pad, t.eos, t.llm_base_rows, t.qformer_base_rows) == (pad, eos, SP_VOCAB + 1, len(TINY_BERT_VOCAB) + 1)


def test_pseudo_word_embedding_reads_the_trained_row_past_the_base():
    emb = PseudoWordEmbedding(5, 3, 2)
    torch.nn.init.normal_(emb.weight)
    torch.nn.init.normal_(emb.pseudo)
    ids = torch.tensor([[0, 4, 5, 6, 2]])
    want = torch.stack([emb.weight[0], emb.weight[4], emb.pseudo[0], emb.pseudo[1], emb.weight[2]])[None]
    assert torch.equal(emb(ids), want)
    with pytest.raises(ValueError, match="out of range"):
        emb(torch.tensor([[7]]))


def test_tie_is_real_as_argsort_and_probabilities_are_softmax_of_loglik():
    losses = torch.tensor([[0.7, 0.7], [0.2, 0.9], [0.9, 0.2]])
    probs, loglik = probabilities(losses, seq_len=11)
    assert probs[0, 0] >= probs[0, 1] and np.float32(probs[0, 1]) < 0.5 and int(torch.argsort(losses[0])[0]) == 0
    assert torch.allclose(loglik, -10 * losses.double())
    assert torch.allclose(probs[1:], torch.softmax(-10 * losses[1:].double(), 1))
    assert probs[1, 1] < 0.5 < probs[2, 1]


def test_exact_tie_in_the_network_is_real(official):
    model = create_model("antifakeprompt:tiny", weights=official[0])
    head = model.net.language_model.lm_head.weight
    yes, no = model.tokens.candidates
    model.tokens = type(model.tokens)(**{**model.tokens.__dict__, "candidates": (yes[:1], no[:1])})
    with torch.no_grad():
        head[no[0]] = head[yes[0]]
    pred = model.predict(images(1))[0]
    assert pred.logits[0] == pred.logits[1] and pred.probs[1] < 0.5 and pred.predicted_class == 0


# ---------------------------------------------------------------------- strict loading
def _break(folder: Path, name: str, change) -> None:
    path = folder / name
    obj = torch.load(path, weights_only=True)
    change(obj["model"] if isinstance(obj, dict) and "model" in obj else obj)
    torch.save(obj, path)


BAD = [
    ("eva_vit_g.pth", lambda s: s.pop("blocks.1.attn.v_bias"), "blocks.1.attn.v_bias"),
    ("eva_vit_g.pth", lambda s: s.__setitem__("blocks.0.attn.k_bias", torch.zeros(V.hidden)), "blocks.0.attn.k_bias"),
    ("eva_vit_g.pth", lambda s: s.__setitem__("pos_embed", torch.zeros(1, 5, V.hidden)), "pos_embed"),
    ("instruct_blip_vicuna7b_trimmed.pth", lambda s: s.pop("ln_vision.bias"), "ln_vision.bias"),
    ("instruct_blip_vicuna7b_trimmed.pth", lambda s: s.__setitem__("Qformer.cls.predictions.bias", torch.zeros(3)),
     "Qformer.cls.predictions.bias"),
    ("instruct_blip_vicuna7b_trimmed.pth", lambda s: s.pop("Qformer.bert.encoder.layer.0.crossattention.self.key.bias"),
     "Qformer.bert.encoder.layer.0.crossattention.self.key.bias"),
    ("vicuna-7b-v1.3/pytorch_model.bin", lambda s: s.pop("model.norm.weight"), "model.norm.weight"),
    ("vicuna-7b-v1.3/pytorch_model.bin", lambda s: s.__setitem__("model.layers.0.self_attn.q_proj.bias",
                                                                  torch.zeros(L.hidden)), "q_proj.bias"),
    ("COCO_150k_SD2_SD2IP.pth", lambda s: s.pop("llm_model.model.train_embed_tokens.weight"),
     "llm_model.model.train_embed_tokens.weight"),
    ("COCO_150k_SD2_SD2IP.pth", lambda s: s.__setitem__("Qformer.bert.embeddings.train_word_embeddings.weight",
                                                         torch.zeros(2, Q.hidden)), "train_word_embeddings"),
    ("COCO_150k_SD2_SD2IP.pth", lambda s: s.__setitem__("ln_vision.weight", torch.ones(V.hidden)), "ln_vision.weight"),
]


@pytest.mark.parametrize("name, change, key", BAD, ids=[f"{b[0].split('/')[0]}-{b[2]}" for b in BAD])
def test_a_wrong_file_is_refused_with_one_line_naming_the_key(tmp_path, name, change, key):
    write_official(tmp_path / "w")
    _break(tmp_path / "w", name, change)
    with pytest.raises(UserError) as err:
        create_model("antifakeprompt:tiny", weights=tmp_path / "w")
    message = str(err.value)
    assert "\n" not in message and key in message and name.split("/")[0] in message


def test_missing_companion_files_are_named_before_building(tmp_path):
    write_official(tmp_path / "w")
    (tmp_path / "w" / "eva_vit_g.pth").unlink()
    with pytest.raises(UserError, match="eva_vit_g.pth file not found.*--option eva_vit=PATH"):
        create_model("antifakeprompt:tiny", weights=tmp_path / "w")
    with pytest.raises(UserError, match="COCO_150k_SD2_SD2IP_lama.pth"):
        create_model("antifakeprompt:lama", weights=tmp_path / "w")
    with pytest.raises(UserError, match="no random-weight mode"):
        create_model("antifakeprompt:default").predict(images(1))
    with pytest.raises(UserError, match="binary only"):
        create_model("antifakeprompt:tiny", num_classes=3)


def test_options_path_prints_the_memory_estimate_and_records_files(tmp_path, official, loaded, capsys):
    folder = official[0]
    elsewhere = tmp_path / "prompt.pth"
    elsewhere.write_bytes((folder / "COCO_150k_SD2_SD2IP.pth").read_bytes())
    model = create_model("antifakeprompt:tiny", weights=elsewhere, eva_vit=folder / "eva_vit_g.pth",
                         instructblip=folder / "instruct_blip_vicuna7b_trimmed.pth",
                         llm_model=folder / "vicuna-7b-v1.3", bert=folder / "bert-base-uncased")
    assert "parameters" in capsys.readouterr().err
    ims = images(2)
    np.testing.assert_allclose([p.probs for p in model.predict(ims)], [p.probs for p in loaded.predict(ims)], atol=1e-7)
    info = model.describe()
    assert info["base_files"]["eva"].endswith("eva_vit_g.pth") and len(info["base_sha256"]) == 4
    assert info["prompt_rows"] == str(elsewhere) and info["input_policy"]["interpolation"] == "bicubic"


def test_bf16_option_casts_the_network(official):
    model = create_model("antifakeprompt:tiny", weights=official[0], dtype="bf16")
    assert next(model.net.parameters()).dtype == torch.bfloat16
    assert np.isfinite(model.predict(images(1))[0].probs).all()


# ---------------------------------------------------------------------- input policy
def test_test_policy_is_torchvision_bicubic_resize_centre_crop():
    for im in images(4, seed=3):
        want = transforms.Compose([transforms.Resize(V.image_size, interpolation=transforms.InterpolationMode.BICUBIC),
                                   transforms.CenterCrop(V.image_size), transforms.ToTensor(),
                                   transforms.Normalize(CFG.mean, CFG.std)])(Image.fromarray(im))
        model = create_model("antifakeprompt:tiny")
        assert torch.allclose(model.preprocess(im), want, atol=1e-6)
        h, w = resize_bicubic(im, 224).shape[:2]
        assert min(h, w) == 224
    assert AntifakePrompt.configs["lama"].mean == (0.4722, 0.4490, 0.4117)
    assert AntifakePrompt.configs["default"].std == (0.2780, 0.2713, 0.2872)


def test_full_size_has_4864_trainable_parameters():
    from baselines.antifakeprompt import PromptTokens, build_network, prompt_parameters
    from baselines.antifakeprompt_keymap import estimate_memory

    tokens = PromptTokens((101,), (2,), ((4874,), (694,)), 2, 32000, 30523, 32001)
    net = build_network(AntifakePrompt.configs["default"], tokens, empty=True)
    assert sum(p.numel() for p in prompt_parameters(net)) == 4864
    assert [n for n, p in net.named_parameters() if p.requires_grad] == [
        "qformer.embeddings.word_embeddings.pseudo", "language_model.model.embed_tokens.pseudo"]
    estimate = estimate_memory({k: tuple(v.shape) for k, v in net.state_dict().items()}, torch.float16)
    assert 7.8e9 < estimate.total < 8.0e9 and estimate.parts["LLM"] > 6.7e9


# ---------------------------------------------------------------------- training
def test_lavis_schedule():
    from baselines.antifakeprompt import PromptRecipe

    r = PromptRecipe()
    assert lavis_lr(r, 0, 0) == pytest.approx(1e-8) and lavis_lr(r, 0, 1) == pytest.approx(1e-5)
    assert lavis_lr(r, 5, 0) == pytest.approx(0.5e-5) and lavis_lr(r, 9, 7) == pytest.approx(1e-5 * 0.5 * (1 + math.cos(0.9 * math.pi)))
    w = PromptRecipe(warmup_steps=4)
    assert [lavis_lr(w, 0, i) for i in (0, 2, 4, 9)] == pytest.approx([1e-8, 1e-8 + (1e-5 - 1e-8) / 2, 1e-5, 1e-5])


@pytest.fixture(scope="module")
def sid_mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.sidmini import SMALL_PER_CLASS, SMALL_SIZE, build_sid_mini

    return build_sid_mini(tmp_path_factory.mktemp("sidmini"), per_class=SMALL_PER_CLASS, size=SMALL_SIZE)


def test_fit_trains_only_the_two_rows_and_round_trips(tmp_path, sid_mini_root):
    from bench.model import TrainOptions
    from bench.plugins import create_dataset

    model = create_model("antifakeprompt:tiny")
    before = {k: v.clone() for k, v in model.ensure_model().state_dict().items()}
    train = create_dataset("sid_mini", root=sid_mini_root, split="train")
    val = create_dataset("sid_mini", root=sid_mini_root, split="validation")
    report = model.fit(train, val, TrainOptions(out_dir=tmp_path / "run", epochs=2, batch_size=4))
    after = model.net.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["language_model.model.embed_tokens.pseudo", "qformer.embeddings.word_embeddings.pseudo"]
    assert report["trainable_parameters"] == Q.hidden + L.hidden and report["epoch"] == 2
    assert report["best_val_loss"] == min(h["val_loss"] for h in report["history"])
    back = create_model("antifakeprompt:tiny", weights=report["last"])
    ims = images(2)
    np.testing.assert_allclose([p.probs for p in back.predict(ims)], [p.probs for p in model.predict(ims)], atol=1e-7)
    with pytest.raises(UserError, match="--resume"):
        create_model("antifakeprompt:tiny").fit(train, val, TrainOptions(out_dir=tmp_path / "run", epochs=2))
    resumed = create_model("antifakeprompt:tiny").fit(train, val, TrainOptions(out_dir=tmp_path / "run", epochs=3,
                                                                              batch_size=4, resume=True))
    assert resumed["epochs_run"] == 1 and resumed["steps"] > report["steps"]
    with pytest.raises(UserError, match="test split"):
        model.fit(train, create_dataset("sid_mini", root=sid_mini_root, split="test"),
                  TrainOptions(out_dir=tmp_path / "x"))


def test_fit_on_official_files_records_them(tmp_path, official, sid_mini_root):
    from bench.model import TrainOptions
    from bench.plugins import create_dataset

    folder = official[0]
    opts = dict(eva_vit=folder / "eva_vit_g.pth", instructblip=folder / "instruct_blip_vicuna7b_trimmed.pth",
                llm_model=folder / "vicuna-7b-v1.3", bert=folder / "bert-base-uncased")
    model = create_model("antifakeprompt:tiny", **opts)  # the official training start: fresh rows on the base
    train = create_dataset("sid_mini", root=sid_mini_root, split="train")
    val = create_dataset("sid_mini", root=sid_mini_root, split="validation")
    report = model.fit(train, val, TrainOptions(out_dir=tmp_path / "run", max_steps=2, batch_size=4))
    assert report["steps"] == 2 and report["stopped"] == "max_steps"
    saved = json.loads((Path(report["best"]) / "config.json").read_text())
    assert saved["base_files"]["llm"] == str(folder / "vicuna-7b-v1.3")
    back = create_model("antifakeprompt:tiny", weights=report["best"])
    ims = images(2)
    np.testing.assert_allclose([p.probs for p in back.predict(ims)], [p.probs for p in model.predict(ims)], atol=1e-7)


# ---------------------------------------------------------------------- CLI
@pytest.mark.parametrize("protocol", ["sid_mini_detection", "dmimage_mini_cross"])
def test_tiny_runs_the_bundled_protocols(tmp_path, sid_mini_root, protocol):
    from bench.cli import main

    out = tmp_path / protocol
    dataset = "dmimage_mini" if protocol.startswith("dmimage") else "sid_mini"
    assert main(["run", protocol, "--model", "antifakeprompt:tiny", "--data-root", f"{dataset}={sid_mini_root}",
                 "--limit", "6", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["entries"] and all(e["n"] == 6 and e["n_errors"] == 0 for e in results["entries"])
    assert results["model"]["label_space"] == "binary" and results["model"]["input_policy"]["crop"] == V.image_size


def test_cli_predict_with_official_layout_files(tmp_path, official, loaded):
    from bench.cli import main

    image = images(1)[0]
    Image.fromarray(image).save(tmp_path / "img.png")
    expected = loaded.predict([image])[0].probs
    assert main(["predict", "--model", "antifakeprompt:tiny", "--weights", str(official[0]), "--out",
                 str(tmp_path / "out"), str(tmp_path / "img.png")]) == 0
    probs = json.loads((tmp_path / "out" / "img.json").read_text())["probabilities"]
    assert list(probs.values()) == pytest.approx(list(expected), abs=1e-6)
