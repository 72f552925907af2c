"""AntifakePrompt's official files → the keys of ``transformers``' ``InstructBlipForConditionalGeneration``.

The official model (``blip2_vicuna_instruct_textinv`` of nctu-eva-lab/AntifakePrompt, built on LAVIS) is
assembled from four files (``from_config``: ``load_from_pretrained(pretrained)`` then ``(finetuned)``; the
ViT from ``create_eva_vit_g``; the LLM from ``llm_model``):

==========================================  =====================================================================
file (its layout)                            official key → our key (``vision_model.``, ``qformer.``, ... prefixes)
==========================================  =====================================================================
``eva_vit_g.pth`` (LAVIS ``eva_vit.py``,      ``cls_token`` → ``vision_model.embeddings.class_embedding``;
raw state dict)                               ``pos_embed`` → ``…embeddings.position_embedding``;
                                              ``patch_embed.proj.*`` → ``…embeddings.patch_embedding.*``;
                                              ``blocks.N.norm1/norm2.*`` → ``…encoder.layers.N.layer_norm1/2.*``;
                                              ``blocks.N.attn.qkv.weight`` → ``…self_attn.qkv.weight``;
                                              ``blocks.N.attn.q_bias`` + ``v_bias`` → ``…self_attn.qkv.bias`` =
                                              ``cat(q_bias, 0, v_bias)`` (EVA's key bias is the constant 0);
                                              ``blocks.N.attn.proj.*`` → ``…self_attn.projection.*``;
                                              ``blocks.N.mlp.fc1/fc2.*`` → ``…mlp.fc1/fc2.*``
``instruct_blip_vicuna7b_trimmed.pth``        ``ln_vision.*`` → ``vision_model.post_layernorm.*``; ``query_tokens``;
(``{'model': state_dict}``: the parameters   ``llm_proj.*`` → ``language_projection.*``;
InstructBLIP trained, no ViT, no LLM)         ``Qformer.bert.embeddings.word_embeddings/position_embeddings.weight`` →
                                              ``qformer.embeddings.…``; ``….LayerNorm.*`` → ``….layernorm.*``;
                                              ``Qformer.bert.encoder.layer.N.{attention,crossattention}.self.*`` →
                                              ``qformer.encoder.layer.N.{…}.attention.*``; every other
                                              ``Qformer.bert.encoder.layer.N.*`` keeps its name under
                                              ``qformer.encoder.layer.N.``
Vicuna-7B v1.3 (Hugging Face LLaMA folder)    ``model.*`` → ``language_model.model.*``; ``lm_head.weight`` →
                                              ``language_model.lm_head.weight``
``COCO_150k_SD2_SD2IP[_lama].pth``            ``Qformer.bert.embeddings.train_word_embeddings.weight`` (1, 768) →
(``{'model', 'optimizer', 'config', …}``)    ``qformer.embeddings.word_embeddings.pseudo``;
                                              ``llm_model.model.train_embed_tokens.weight`` (1, 4096) →
                                              ``language_model.model.embed_tokens.pseudo``
==========================================  =====================================================================

Ignored, explicitly (:data:`IGNORED`): buffers LAVIS's checkpoint saver keeps (it drops only frozen
*parameters*): ``Qformer.bert.embeddings.position_ids`` (the constant ``arange``) and
``*.rotary_emb.inv_freq`` (recomputed from the config); in ``eva_vit_g.pth`` the blocks past the ViT's depth
(BLIP-2 drops EVA-CLIP's last block) and the modules LAVIS's ``VisionTransformer`` comments out
(``norm``, ``fc_norm``, ``head``). Every other key must map onto a key of the network, and every key of the
network must come from its file: a violation is one line naming the first bad key (sorted), its file, and
how many more there are.

Rows the official code creates at random and never saves: the LLM's ``[PAD]`` embedding row (LAVIS
``resize_token_embeddings``; only read at masked padding positions) is zero here, and ``lm_head`` keeps the
Vicuna file's rows (the official appends a random ``[PAD]`` row, which enters every softmax but cancels in
the yes/no comparison of one-token answers).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.checkpoint import load_raw, tensors_only
from bench.errors import UserError

EVA_FILE = "eva_vit_g.pth"
INSTRUCTBLIP_FILE = "instruct_blip_vicuna7b_trimmed.pth"
VICUNA_DIR = "vicuna-7b-v1.3"
BERT_DIR = "bert-base-uncased"
PARTS = ("eva", "instructblip", "llm", "prompt")
PART_NAMES = {"eva": f"EVA ViT-g ({EVA_FILE})", "instructblip": f"InstructBLIP ({INSTRUCTBLIP_FILE})",
              "llm": "Vicuna-7B v1.3 (Hugging Face LLaMA folder)", "prompt": "AntifakePrompt prompt checkpoint"}
QFORMER_PSEUDO = "qformer.embeddings.word_embeddings.pseudo"
LLM_PSEUDO = "language_model.model.embed_tokens.pseudo"
LLM_EMBED = "language_model.model.embed_tokens.weight"

_L = r"(\d+)"
RULES: dict[str, tuple[tuple[str, str], ...]] = {
    "eva": (
        (r"cls_token", "vision_model.embeddings.class_embedding"),
        (r"pos_embed", "vision_model.embeddings.position_embedding"),
        (r"patch_embed\.proj\.(weight|bias)", r"vision_model.embeddings.patch_embedding.\1"),
        (rf"blocks\.{_L}\.norm([12])\.(weight|bias)", r"vision_model.encoder.layers.\1.layer_norm\2.\3"),
        (rf"blocks\.{_L}\.attn\.qkv\.weight", r"vision_model.encoder.layers.\1.self_attn.qkv.weight"),
        (rf"blocks\.{_L}\.attn\.proj\.(weight|bias)", r"vision_model.encoder.layers.\1.self_attn.projection.\2"),
        (rf"blocks\.{_L}\.mlp\.(fc[12])\.(weight|bias)", r"vision_model.encoder.layers.\1.mlp.\2.\3"),
    ),
    "instructblip": (
        (r"ln_vision\.(weight|bias)", r"vision_model.post_layernorm.\1"),
        (r"query_tokens", "query_tokens"),
        (r"llm_proj\.(weight|bias)", r"language_projection.\1"),
        (r"Qformer\.bert\.embeddings\.(word_embeddings|position_embeddings)\.weight", r"qformer.embeddings.\1.weight"),
        (r"Qformer\.bert\.embeddings\.LayerNorm\.(weight|bias)", r"qformer.embeddings.layernorm.\1"),
        (rf"Qformer\.bert\.encoder\.layer\.{_L}\.(attention|crossattention)\.self\.(.+)",
         r"qformer.encoder.layer.\1.\2.attention.\3"),
        (rf"Qformer\.bert\.encoder\.layer\.{_L}\.(.+)", r"qformer.encoder.layer.\1.\2"),
    ),
    "llm": (
        (r"lm_head\.weight", "language_model.lm_head.weight"),
        (r"model\.(.+)", r"language_model.model.\1"),
    ),
    "prompt": (
        (r"Qformer\.bert\.embeddings\.train_word_embeddings\.weight", QFORMER_PSEUDO),
        (r"llm_model\.model\.train_embed_tokens\.weight", LLM_PSEUDO),
    ),
}
"""Official key (full match) → our key, first match wins; ``q_bias``/``v_bias`` are merged separately."""

_QV_BIAS = re.compile(rf"blocks\.{_L}\.attn\.([qv])_bias")
_INV_FREQ = r"(.+\.)?rotary_emb\.inv_freq"
_POSITION_IDS = r"Qformer\.bert\.embeddings\.position_ids"
IGNORED: dict[str, tuple[str, ...]] = {
    "eva": (r"(norm|fc_norm|head)\.(weight|bias)",),  # + blocks at or past the depth (see ignored_eva_block)
    "instructblip": (_POSITION_IDS, _INV_FREQ),
    "llm": (_INV_FREQ,),
    "prompt": (_POSITION_IDS, _INV_FREQ),
}
"""Official keys that are read and dropped (see the module docstring)."""

OWNER_PREFIXES: tuple[tuple[str, str], ...] = (
    (QFORMER_PSEUDO, "prompt"), (LLM_PSEUDO, "prompt"),
    ("vision_model.post_layernorm.", "instructblip"), ("vision_model.", "eva"),
    ("query_tokens", "instructblip"), ("language_projection.", "instructblip"), ("qformer.", "instructblip"),
    ("language_model.", "llm"),
)
"""Which official file supplies each key of the network (first prefix match)."""


def owner(key: str) -> str:
    for prefix, part in OWNER_PREFIXES:
        if key.startswith(prefix):
            return part
    raise ValueError(f"no official file supplies {key!r}")


def _match(patterns: Iterable[str], key: str) -> bool:
    return any(re.fullmatch(p, key) for p in patterns)


REVERSE: tuple[tuple[str, str], ...] = (
    (r"vision_model\.embeddings\.class_embedding", "cls_token"),
    (r"vision_model\.embeddings\.position_embedding", "pos_embed"),
    (r"vision_model\.embeddings\.patch_embedding\.(weight|bias)", r"patch_embed.proj.\1"),
    (rf"vision_model\.encoder\.layers\.{_L}\.layer_norm([12])\.(weight|bias)", r"blocks.\1.norm\2.\3"),
    (rf"vision_model\.encoder\.layers\.{_L}\.self_attn\.qkv\.weight", r"blocks.\1.attn.qkv.weight"),
    (rf"vision_model\.encoder\.layers\.{_L}\.self_attn\.qkv\.bias", r"blocks.\1.attn.q_bias + v_bias"),
    (rf"vision_model\.encoder\.layers\.{_L}\.self_attn\.projection\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (rf"vision_model\.encoder\.layers\.{_L}\.mlp\.(fc[12])\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    (r"vision_model\.post_layernorm\.(weight|bias)", r"ln_vision.\1"),
    (r"query_tokens", "query_tokens"),
    (r"language_projection\.(weight|bias)", r"llm_proj.\1"),
    (re.escape(QFORMER_PSEUDO), "Qformer.bert.embeddings.train_word_embeddings.weight"),
    (r"qformer\.embeddings\.(word_embeddings|position_embeddings)\.weight", r"Qformer.bert.embeddings.\1.weight"),
    (r"qformer\.embeddings\.layernorm\.(weight|bias)", r"Qformer.bert.embeddings.LayerNorm.\1"),
    (rf"qformer\.encoder\.layer\.{_L}\.(attention|crossattention)\.attention\.(.+)",
     r"Qformer.bert.encoder.layer.\1.\2.self.\3"),
    (rf"qformer\.encoder\.layer\.{_L}\.(.+)", r"Qformer.bert.encoder.layer.\1.\2"),
    (re.escape(LLM_PSEUDO), "llm_model.model.train_embed_tokens.weight"),
    (r"language_model\.lm_head\.weight", "lm_head.weight"),
    (r"language_model\.model\.(.+)", r"model.\1"),
)
"""Our key → the official key(s) it comes from (the inverse of :data:`RULES`), first match wins."""


def official_name(key: str) -> str:
    """The official key(s) a key of our network comes from (for error messages; inverse of :data:`RULES`)."""
    for pattern, target in REVERSE:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, target, key)
    raise ValueError(f"no official name for {key!r}")


@dataclass(frozen=True)
class Mapped:
    """One official file mapped onto our keys."""

    state: dict[str, torch.Tensor]
    ignored: tuple[str, ...]


def map_official(part: str, state: Mapping[str, torch.Tensor], source: Path | str, *, vision_depth: int = 0,
                 hint: str = "") -> Mapped:
    """Rename the keys of one official file (``part`` in :data:`PARTS`); unknown keys are an error."""
    out: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    unknown: list[str] = []
    qv: dict[str, dict[str, torch.Tensor]] = {}
    for key in sorted(state):
        value = state[key]
        if _match(IGNORED[part], key) or (part == "eva" and _ignored_eva_block(key, vision_depth)):
            ignored.append(key)
            continue
        bias = _QV_BIAS.fullmatch(key) if part == "eva" else None
        if bias:
            qv.setdefault(bias.group(1), {})[bias.group(2)] = value
            continue
        for pattern, target in RULES[part]:
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, target, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        fail(source, f"unexpected key {unknown[0]!r} (not in the {PART_NAMES[part]} layout)", len(unknown), hint)
    for layer, biases in sorted(qv.items(), key=lambda item: int(item[0])):
        if set(biases) != {"q", "v"}:
            missing = "v_bias" if "q" in biases else "q_bias"
            fail(source, f"missing key 'blocks.{layer}.attn.{missing}' (the {PART_NAMES[part]} layout)", 1, hint)
        q, v = biases["q"], biases["v"]
        out[f"vision_model.encoder.layers.{layer}.self_attn.qkv.bias"] = torch.cat([q, torch.zeros_like(v), v])
    return Mapped(out, tuple(ignored))


def _ignored_eva_block(key: str, depth: int) -> bool:
    m = re.match(rf"blocks\.{_L}\.", key)
    return bool(m) and int(m.group(1)) >= depth


def fail(source: Path | str, problem: str, count: int, hint: str = "") -> None:
    more = f" (+{count - 1} more)" if count > 1 else ""
    raise UserError(f"{source}: {problem}{more}." + (f" {hint}" if hint else ""))


def check_part(part: str, mapped: Mapping[str, torch.Tensor], expected: Mapping[str, tuple[int, ...]],
               source: Path | str, hint: str = "") -> None:
    """Every key of ``part`` present with its shape, and nothing else (one-line error on the first bad key)."""
    own = {k: s for k, s in expected.items() if owner(k) == part}
    extra = sorted(set(mapped) - set(own))
    if extra:
        fail(source, f"unexpected key {official_name_or(extra[0])!r} (the network has no {extra[0]!r})",
             len(extra), hint)
    missing = sorted(set(own) - set(mapped))
    if missing:
        fail(source, f"missing key {official_name(missing[0])!r} (for {missing[0]})", len(missing), hint)
    bad = sorted(k for k in own if tuple(mapped[k].shape) != tuple(own[k]))
    if bad:
        fail(source, f"key {official_name(bad[0])!r} has shape {tuple(mapped[bad[0]].shape)}, the configuration "
                     f"needs {tuple(own[bad[0]])}", len(bad), hint)


def official_name_or(key: str) -> str:
    try:
        return official_name(key)
    except ValueError:
        return key


# ---------------------------------------------------------------------- reading the files
def read_lavis_state(path: Path, part: str, *, allow_pickle: bool = False, hint: str = ""
                     ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A LAVIS checkpoint (``{'model': state_dict, ...}`` or a raw state dict) → (state dict, its ``config``)."""
    raw = load_raw(path, allow_pickle=allow_pickle)
    if not isinstance(raw, Mapping):
        fail(path, f"expected a {PART_NAMES[part]} state dict, got {type(raw).__name__}", 1, hint)
    config = raw.get("config") if isinstance(raw.get("config"), Mapping) else {}
    state = raw["model"] if "model" in raw else raw
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        fail(path, f"expected {PART_NAMES[part]} tensors (a state dict or {{'model': state_dict}})", 1, hint)
    return tensors_only(state, path), dict(config)


def iter_llm_shards(folder: Path, *, allow_pickle: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """The tensors of a Hugging Face LLaMA folder, one ``pytorch_model*.bin`` / ``*.safetensors`` shard at a time."""
    from sida.checkpoint_map import iter_tensors, weight_files

    for _, shard in iter_tensors(weight_files(folder), allow_pickle):
        yield shard


def pad_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """Append zero rows (the tokens a tokenizer adds, e.g. LAVIS's ``[PAD]``) up to ``rows``."""
    if weight.shape[0] >= rows:
        return weight
    return torch.cat([weight, weight.new_zeros(rows - weight.shape[0], *weight.shape[1:])])


@dataclass(frozen=True)
class MemoryEstimate:
    """Parameter counts per part and the bytes of the weights at one dtype."""

    parts: dict[str, int]
    dtype: torch.dtype

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def bytes(self) -> int:
        return self.total * torch.tensor([], dtype=self.dtype).element_size()

    def __str__(self) -> str:
        def count(n: int) -> str:
            return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"

        parts = ", ".join(f"{k} {count(v)}" for k, v in self.parts.items())
        return (f"{count(self.total)} parameters ({parts}) → about {self.bytes / 2**30:.1f} GiB of weights in "
                f"{str(self.dtype).removeprefix('torch.')}; add while loading the largest file (a Vicuna shard is "
                "about 10 GB in fp16) and a few GiB of activations")


def estimate_memory(shapes: Mapping[str, tuple[int, ...]], dtype: torch.dtype) -> MemoryEstimate:
    groups: tuple[tuple[str, Callable[[str], bool]], ...] = (
        ("EVA ViT-g", lambda k: k.startswith("vision_model.")),
        ("Q-Former", lambda k: k.startswith(("qformer.", "query_tokens", "language_projection."))),
        ("LLM", lambda k: k.startswith("language_model.")),
    )
    parts = {name: 0 for name, _ in groups}
    for key, shape in shapes.items():
        name = next(n for n, test in groups if test(key))
        parts[name] += int(torch.Size(shape).numel())
    return MemoryEstimate(parts, dtype)
