"""Load (and write) SIDA checkpoints in the official Hugging Face layout (hzlsaber/SIDA, LISA).

A released checkpoint folder (``saberzl/SIDA-7B``, ``SIDA-13B``, ``*-description``) holds
``config.json`` (LLaVA-LLaMA config: sizes, ``vocab_size``, ``vision_tower``,
``mm_vision_select_layer``, ``out_dim``), the tokenizer files and the weights as
``pytorch_model*.bin`` shards (+ ``pytorch_model.bin.index.json``) or ``*.safetensors`` (+ index).
``.bin`` files are read with ``torch.load(weights_only=True)``.

Key mapping (official → this package's :class:`~sida.model.SidaModel`), first match wins:

=================================  ===============================  ==========================
official key prefix                SidaModel prefix                 part
=================================  ===============================  ==========================
``model.mm_projector.``            ``mm_projector.``                LLaVA v1 Linear projector
``model.visual_model.``            ``visual_model.``                SAM (image/prompt enc, dec)
``model.text_hidden_fcs.``         ``text_hidden_fcs.``             [SEG] projection
``model.cls_head.``                ``cls_head.``                    detection head
``model.sida_fc1.``                ``sida_fc1.``                    logits → 256
``model.attention_layer.``         ``attention_layer.``             det→seg attention
``model.vision_tower.vision_tower   ``vision_tower.``                CLIP (absent in released
.vision_model.``                                                    files; LLaVA's wrapper)
``lm_head.``                       ``lm.lm_head.``                  LLaMA output layer
``model.``                         ``lm.model.``                    LLaMA layers/embed/norm
=================================  ===============================  ==========================

Dropped on load: ``*.rotary_emb.inv_freq`` (a buffer older transformers saved). The CLIP tower
comes from a local ``vision_tower`` folder (a ``CLIPModel`` or ``CLIPVisionModel`` in HF
layout: ``vision_model.*`` (or, as transformers 5 saves a ``CLIPVisionModel``, unprefixed
``embeddings.*``/``encoder.*``/``pre_layrnorm.*``/``post_layernorm.*``) → ``vision_tower.*``; text
parts ignored); SAM from
``sam_vit_h_4b8939.pth`` (``image_encoder.*`` etc. → ``visual_model.*``) when the checkpoint has
no ``model.visual_model.*`` keys. Loads are strict; the model is built without allocating
parameters (``accelerate.init_empty_weights``) and filled with ``assign=True``.

LISA's released folders (``xinlai/LISA-7B-v1``; :class:`~sida.config.LisaConfig`) have the same
layout without ``model.cls_head.*``, ``model.sida_fc1.*`` and ``model.attention_layer.*``; the tensor
names are checked against the model's keys before any weight is read, so either layout given to the
other model is refused in one line naming the bad keys (with a hint to the right ``--model``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from bench.checkpoint import load_raw, tensors_only
from bench.errors import UserError
from sida.batch import SpecialTokenIds
from sida.config import ClipConfig, SidaConfig
from sida.model import SidaModel

KEY_MAP: tuple[tuple[str, str], ...] = (
    ("model.mm_projector.", "mm_projector."),
    ("model.visual_model.", "visual_model."),
    ("model.text_hidden_fcs.", "text_hidden_fcs."),
    ("model.cls_head.", "cls_head."),
    ("model.sida_fc1.", "sida_fc1."),
    ("model.attention_layer.", "attention_layer."),
    ("model.vision_tower.vision_tower.vision_model.", "vision_tower."),
    ("lm_head.", "lm.lm_head."),
    ("model.", "lm.model."),
)
DROPPED_SUFFIXES = ("rotary_emb.inv_freq",)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SAM_FILE = "sam_vit_h_4b8939.pth"
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
"""Shard indexes of an HF folder, in the order :func:`weight_files` prefers them."""
CLIP_VISION_PARTS = ("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")


def from_official_key(key: str) -> str:
    for official, ours in KEY_MAP:
        if key.startswith(official):
            return ours + key[len(official):]
    raise UserError(f"Unexpected key {key!r} in a SIDA checkpoint (no official prefix matches)")


def to_official_key(key: str) -> str:
    for official, ours in sorted(KEY_MAP, key=lambda pair: -len(pair[1])):
        if key.startswith(ours):
            return official + key[len(ours):]
    raise ValueError(f"No official name for SidaModel key {key!r}")


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise UserError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


# ---------------------------------------------------------------------- reading files
def weight_files(folder: Path) -> list[Path]:
    """The weight shards of an HF folder (index json first, then single files, then globbed shards)."""
    for index_name in INDEX_FILES:
        index = folder / index_name
        if index.is_file():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise UserError(f"{index} has no weight_map object (not a Hugging Face shard index)")
            names = sorted(set(weight_map.values()))
            files = [folder / n for n in names]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise UserError(f"{index} lists shards that are missing: {', '.join(missing[:4])}")
            return files
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (folder / single).is_file():
            return [folder / single]
    shards = sorted(folder.glob("pytorch_model-*.bin")) or sorted(folder.glob("model-*.safetensors"))
    if not shards:
        raise UserError(f"No pytorch_model*.bin or *.safetensors weights in {folder} (see docs/sida.md)")
    return shards


def iter_tensors(files: list[Path], allow_pickle: bool = False) -> Iterator[tuple[Path, dict[str, torch.Tensor]]]:
    """Yield (file, state) one shard at a time (bounded memory)."""
    for f in files:
        obj = load_raw(f, allow_pickle=allow_pickle)
        yield f, tensors_only(obj, f)


def read_official_state(folder: Path, dtype: torch.dtype, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """All tensors of an official folder, renamed to SidaModel keys and cast to ``dtype``."""
    state: dict[str, torch.Tensor] = {}
    for _, shard in iter_tensors(weight_files(folder), allow_pickle):
        for key in list(shard):
            tensor = shard.pop(key)
            if key.endswith(DROPPED_SUFFIXES):
                continue
            state[from_official_key(key)] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    return state


CLIP_CONFIG_FIELDS = (("hidden_size", "hidden_size"), ("num_hidden_layers", "num_layers"), ("image_size", "image_size"),
                      ("patch_size", "patch_size"), ("num_attention_heads", "num_heads"),
                      ("intermediate_size", "intermediate_size"))
"""config.json field of a CLIP vision tower → :class:`~sida.config.ClipConfig` field (all must agree)."""


def check_clip_tower(folder: Path, clip: ClipConfig) -> ClipConfig:
    """The tower folder's own sizes (``config.json``), checked against ``clip``, and its weight files
    present; nothing large is read. Returns ``clip`` with the sizes read from the folder."""
    folder = Path(folder)
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise UserError(f"No config.json in the vision tower folder {folder} (expected openai/clip-vit-large-patch14)")
    cfg = read_json(cfg_file)
    vcfg = cfg.get("vision_config", cfg)
    found = {ours: vcfg.get(theirs) for theirs, ours in CLIP_CONFIG_FIELDS}
    wanted = {ours: getattr(clip, ours) for _, ours in CLIP_CONFIG_FIELDS}
    bad = [f"{k} {found[k]} (expected {wanted[k]})" for k in wanted if found[k] is not None and found[k] != wanted[k]]
    absent = [theirs for theirs, ours in CLIP_CONFIG_FIELDS[:4] if found[ours] is None]
    if bad or absent:
        raise UserError(f"{cfg_file}: not the CLIP vision tower this SIDA configuration needs: "
                        + "; ".join(bad + [f"no {a}" for a in absent]) + " (expected openai/clip-vit-large-patch14)")
    weight_files(folder)
    return replace(clip, **{k: int(v) for k, v in found.items() if v is not None})


def read_clip_tower(folder: Path, clip: ClipConfig, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """CLIP vision weights from a local HF folder → ``vision_tower.*``; sizes checked."""
    folder = Path(folder)
    check_clip_tower(folder, clip)
    state = {}
    for _, shard in iter_tensors(weight_files(folder)):
        for key, tensor in shard.items():
            if key.endswith("position_ids"):
                continue
            if key.startswith("vision_model."):
                state["vision_tower." + key[len("vision_model."):]] = tensor.to(dtype)
            elif key.startswith(CLIP_VISION_PARTS):
                state["vision_tower." + key] = tensor.to(dtype)
    if not state:
        raise UserError(f"{folder} has no CLIP vision weights (vision_model.* or embeddings.*/encoder.*)")
    return state


def read_sam(path: Path, dtype: torch.dtype, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """SAM weights (``sam_vit_h_4b8939.pth`` layout) → ``visual_model.*``."""
    state = tensors_only(load_raw(Path(path), allow_pickle=allow_pickle), path)
    return {"visual_model." + k: v.to(dtype) for k, v in state.items()}


# ---------------------------------------------------------------------- config + memory
def config_from_hf(hf: Mapping[str, object], base: SidaConfig) -> SidaConfig:
    """``base`` with the language-model sizes and CLIP layer read from a checkpoint's config.json."""
    try:
        llm = replace(
            base.llm,
            hidden_size=int(hf["hidden_size"]), intermediate_size=int(hf["intermediate_size"]),  # type: ignore[arg-type]
            num_layers=int(hf["num_hidden_layers"]), num_heads=int(hf["num_attention_heads"]),  # type: ignore[arg-type]
            vocab_size=int(hf["vocab_size"]),  # type: ignore[arg-type]
            max_position_embeddings=int(hf.get("max_position_embeddings", base.llm.max_position_embeddings)),  # type: ignore[arg-type]
            rms_norm_eps=float(hf.get("rms_norm_eps", base.llm.rms_norm_eps)),  # type: ignore[arg-type]
        )
    except KeyError as exc:
        raise UserError(f"config.json lacks the LLaMA field {exc}") from exc
    clip = replace(base.clip, select_layer=int(hf.get("mm_vision_select_layer", base.clip.select_layer)))  # type: ignore[arg-type]
    out_dim = int(hf.get("out_dim", base.out_dim))  # type: ignore[arg-type]
    if out_dim != base.out_dim:
        raise UserError(f"config.json out_dim {out_dim} != {base.out_dim} of the chosen configuration")
    return replace(base, llm=llm, clip=clip)


@dataclass(frozen=True)
class MemoryEstimate:
    """Parameter counts per part and the bytes they take at one dtype."""

    parts: dict[str, int]
    dtype: str

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def bytes(self) -> int:
        return self.total * torch.tensor([], dtype=DTYPES[self.dtype]).element_size()

    def __str__(self) -> str:
        parts = ", ".join(f"{k} {_count(v)}" for k, v in self.parts.items())
        return (f"{_count(self.total)} parameters ({parts}) → about {self.bytes / 2**30:.1f} GiB of weights "
                f"in {self.dtype}; add activations (a few GiB at 1024² for SAM ViT-H) and, while loading, "
                f"one checkpoint shard")


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"


def empty_model(config: SidaConfig, tokens: SpecialTokenIds, vocab_size: int) -> SidaModel:
    """A SidaModel whose parameters are on the meta device (buffers real); fill with assign=True."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return SidaModel(config, tokens, vocab_size)


def estimate_memory(config: SidaConfig, vocab_size: int, dtype: str) -> MemoryEstimate:
    """Count parameters without allocating them."""
    return model_memory(empty_model(config, SpecialTokenIds(0, 0, 0, 0, 0, 0), vocab_size), dtype)


def model_memory(model: SidaModel, dtype: str) -> MemoryEstimate:
    """Parameter counts of a (possibly meta-device) model per part."""
    groups = {"LLaMA": "lm.", "CLIP": "vision_tower.", "SAM": "visual_model."}
    parts = {name: 0 for name in (*groups, "heads+projector")}
    for name, p in model.named_parameters():
        part = next((g for g, prefix in groups.items() if name.startswith(prefix)), "heads+projector")
        parts[part] += p.numel()
    return MemoryEstimate(parts, dtype)


# ---------------------------------------------------------------------- load / save
HEAD_PREFIXES = ("cls_head.", "sida_fc1.", "attention_layer.")
"""SidaModel parts that SIDA has and LISA lacks (with the [CLS] token)."""


def _mismatch(model: SidaModel, source: Path | str, missing: list[str], unexpected: list[str],
              shapes: list[str]) -> UserError | None:
    """One line naming the sorted bad keys (six per kind), or None when there are none."""
    if not (missing or unexpected or shapes):
        return None
    parts = [f"{label}: {', '.join(keys[:6])}" + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")
             for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)) if keys]
    message = f"{source} does not match {model.config.family} ({model.config.base}): " + "; ".join(parts)
    bad = missing or unexpected  # a hint only when the bad keys are exactly the detection parts on one side
    heads_only = all(k.startswith(HEAD_PREFIXES) for k in bad)
    if heads_only and not shapes and not (missing and unexpected) and \
            {p for k in bad for p in HEAD_PREFIXES if k.startswith(p)} == set(HEAD_PREFIXES):
        other = "LISA" if missing else "SIDA"
        message += f" (the layout of a {other} checkpoint: use --model {other.lower()})"
    return UserError(message)


def assign_strict(model: SidaModel, state: dict[str, torch.Tensor], source: Path | str) -> None:
    """Strict load by assignment: every key present, no extra key, equal shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in set(own) & set(state)
                    if tuple(state[k].shape) != tuple(own[k].shape))
    error = _mismatch(model, source, missing, unexpected, shapes)
    if error is not None:
        raise error
    model.load_state_dict(state, strict=True, assign=True)


def check_tensor_names(model: SidaModel, names: set[str], folder: Path, *, tower_separate: bool,
                       sam_separate: bool) -> None:
    """The official tensor names of a folder against ``model``'s keys, before any weight is read
    (the CLIP tower and SAM parts are left out when they come from their own files)."""
    given = {from_official_key(k) for k in names if not k.endswith(DROPPED_SUFFIXES)}
    own = {k for k in model.state_dict() if not (tower_separate and k.startswith("vision_tower."))
           and not (sam_separate and k.startswith("visual_model."))}
    error = _mismatch(model, folder, sorted(own - given), sorted(given - own), [])
    if error is not None:
        raise error


SAM_PREFIXES = ("image_encoder.", "prompt_encoder.", "mask_decoder.")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


@dataclass(frozen=True)
class OfficialPlan:
    """What loading an official folder will read, found by cheap checks (:func:`plan_official_load`)."""

    folder: Path
    hf: dict[str, object]
    config: SidaConfig
    files: list[Path]
    tower: Path | None
    sam: Path | None
    estimate: MemoryEstimate


def read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise UserError(f"{path} is not a readable JSON file ({exc})") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def tensor_names(files: list[Path], allow_pickle: bool = False, index: Path | None = None) -> set[str]:
    """The tensor names of weight files without reading their data: the shard ``index``'s ``weight_map``
    when given, else each safetensors header, or a torch archive's pickle with the storages memory-mapped."""
    if index is not None:
        weight_map = read_json(index).get("weight_map")
        return set(weight_map) if isinstance(weight_map, dict) else set()
    names: set[str] = set()
    for f in files:
        if f.suffix == ".safetensors":
            try:
                with safe_open(str(f), framework="pt") as handle:
                    names |= set(handle.keys())
            except (SafetensorError, OSError) as exc:
                raise UserError(f"{f} is not a readable safetensors file ({exc})") from exc
        else:
            names |= set(tensors_only(load_raw(f, allow_pickle=allow_pickle, mmap=True), f))
    return names


def check_sam(path: Path | None, folder: Path, allow_pickle: bool = False) -> Path:
    """The SAM file is given, present and in the ``sam_vit_h_4b8939.pth`` layout (keys read memory-mapped)."""
    if path is None:
        raise UserError(f"{folder} has no SAM weights: pass sam_checkpoint=PATH to {SAM_FILE} (see docs/sida.md)")
    path = Path(path)
    names = tensor_names([path], allow_pickle)
    if not names or not all(k.startswith(SAM_PREFIXES) for k in names):
        odd = sorted(k for k in names if not k.startswith(SAM_PREFIXES))[:3]
        raise UserError(f"{path} is not a SAM checkpoint in the {SAM_FILE} layout (keys {', '.join(SAM_PREFIXES)}*); "
                        f"found {odd or 'no tensors'}")
    return path


def plan_official_load(
    folder: Path, base: SidaConfig, *, dtype: str = "bf16", vision_tower: Path | None = None,
    sam_checkpoint: Path | None = None, allow_pickle: bool = False,
) -> OfficialPlan:
    """Every cheap check of an official folder before its weights are read (for 13B, ~27 GB): config.json,
    tokenizer files, weight shards, the tensor names (CLIP tower and SAM present or given; every other
    name must be one of the model's keys, so a SIDA folder given to LISA or the reverse fails here), the
    tower's own config, the SAM file's keys, and the memory estimate from the real sizes."""
    folder = Path(folder)
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise UserError(f"No config.json in {folder}; expected a SIDA checkpoint folder (see docs/sida.md)")
    hf = read_json(cfg_file)
    config = config_from_hf(hf, base)
    resolve_dtype(dtype)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(f"No tokenizer.json or tokenizer.model in {folder} (expected a SIDA/LISA checkpoint folder)")
    files = weight_files(folder)
    index = next((folder / n for n in INDEX_FILES if (folder / n).is_file()), None)
    names = tensor_names(files, allow_pickle, index)
    tower = None
    if not any(k.startswith("model.vision_tower.") for k in names):
        tower = vision_tower or _local_path(hf.get("vision_tower"))
        if tower is None:
            raise UserError(
                f"{folder} has no CLIP tower weights and config.json's vision_tower "
                f"({hf.get('vision_tower')!r}) is not a local folder: pass vision_tower=PATH to a local "
                "copy of openai/clip-vit-large-patch14 (see docs/sida.md)"
            )
        config = replace(config, clip=check_clip_tower(tower, config.clip))
    has_sam = any(k.startswith("model.visual_model.") for k in names)
    sam = None if has_sam else check_sam(sam_checkpoint, folder, allow_pickle)
    model = empty_model(config, SpecialTokenIds(0, 0, 0, 0, 0, 0), config.llm.vocab_size)
    check_tensor_names(model, names, folder, tower_separate=tower is not None, sam_separate=sam is not None)
    estimate = model_memory(model, dtype)
    return OfficialPlan(folder, hf, config, files, tower, sam, estimate)


def memory_warning(estimate: MemoryEstimate) -> str | None:
    """A warning when the weights alone exceed the memory available now (psutil), else None."""
    import psutil

    available = psutil.virtual_memory().available
    if estimate.bytes <= available:
        return None
    return (f"sida: warning: the weights need about {estimate.bytes / 2**30:.1f} GiB but only "
            f"{available / 2**30:.1f} GiB of memory is available; loading may swap or be killed (try dtype=bf16)")


def load_official(
    folder: Path, base: SidaConfig, tokens: SpecialTokenIds, *, dtype: str = "bf16",
    vision_tower: Path | None = None, sam_checkpoint: Path | None = None, allow_pickle: bool = False,
    plan: OfficialPlan | None = None,
) -> SidaModel:
    """Build a SidaModel from an official checkpoint folder (+ local CLIP folder and SAM file).

    The cheap checks of :func:`plan_official_load` run first (pass ``plan`` when already made)."""
    plan = plan or plan_official_load(folder, base, dtype=dtype, vision_tower=vision_tower,
                                      sam_checkpoint=sam_checkpoint, allow_pickle=allow_pickle)
    print(f"{base.family.lower()}: loading {plan.folder}: {plan.estimate}", file=sys.stderr)
    warning = memory_warning(plan.estimate)
    if warning:
        print(warning, file=sys.stderr)
    torch_dtype = resolve_dtype(dtype)
    state = read_official_state(plan.folder, torch_dtype, allow_pickle)
    if plan.tower is not None:
        state.update(read_clip_tower(plan.tower, plan.config.clip, torch_dtype))
    if plan.sam is not None:
        state.update(read_sam(plan.sam, torch_dtype, allow_pickle))
    model = empty_model(plan.config, tokens, plan.config.llm.vocab_size)
    assign_strict(model, state, plan.folder)
    return model


def _local_path(value: object) -> Path | None:
    if isinstance(value, str) and Path(value).expanduser().is_dir():
        return Path(value).expanduser()
    return None


def hf_config(model: SidaModel, vision_tower: str) -> dict[str, object]:
    """The config.json fields the official layout carries (LLaVA-LLaMA + SIDA)."""
    c = model.config
    return {
        "architectures": [f"{c.family}ForCausalLM"], "model_type": "llava",
        "hidden_size": c.llm.hidden_size, "intermediate_size": c.llm.intermediate_size,
        "num_hidden_layers": c.llm.num_layers, "num_attention_heads": c.llm.num_heads,
        "max_position_embeddings": c.llm.max_position_embeddings, "rms_norm_eps": c.llm.rms_norm_eps,
        "vocab_size": model.llama.get_input_embeddings().weight.shape[0],
        "vision_tower": vision_tower, "mm_vision_select_layer": c.clip.select_layer,
        "mm_hidden_size": c.clip.hidden_size, "mm_use_im_start_end": True, "mm_use_im_patch_token": False,
        "out_dim": c.out_dim, "train_mask_decoder": True, "torch_dtype": "float32",
    }


def save_official(model: SidaModel, folder: Path, *, vision_tower: str, with_vision_tower: bool = False) -> Path:
    """Write ``model`` in the official layout: ``pytorch_model.bin`` (a plain dict) + ``config.json``.

    As the merge script saves it, the CLIP tower is left out unless ``with_vision_tower``; LoRA
    must be merged first. (The tokenizer is saved separately, e.g. ``sida.tokenizer.save_tokenizer``.)
    """
    if model.lora_enabled:
        raise ValueError("merge LoRA (model.merge_lora()) before saving the official layout")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {to_official_key(k): v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if with_vision_tower or not k.startswith("vision_tower.")}
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(hf_config(model, vision_tower), indent=2))
    return folder


def save_clip_tower(model: SidaModel, folder: Path) -> Path:
    """Write the CLIP tower as an HF ``CLIPVisionModel`` folder (config.json + model.safetensors)."""
    model.vision_tower.save_pretrained(str(folder))
    return Path(folder)
