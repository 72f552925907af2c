"""AntifakePrompt: "Prompt-Tuned Vision-Language Models are Fake Image Detectors" (Chang, Lu, Chen, Wang et
al., arXiv:2310.17419). Official code: nctu-eva-lab/AntifakePrompt (LAVIS fork;
``lavis/models/blip2_models/blip2_vicuna_instruct_textinv.py``, ``test.py``).

- Network: InstructBLIP (EVA-CLIP ViT-g/14 at 224², 39 blocks; Q-Former, 32 queries; Vicuna-7B v1.3), built
  from ``transformers``' ``InstructBlipForConditionalGeneration``. Prompt tuning adds one pseudo-word ``[*]``
  to "Is this photo real [*]?": one trained embedding row in the Q-Former (768) and one in the LLM (4096);
  everything else is frozen (4,864 trainable parameters). The rows sit in :class:`PseudoWordEmbedding`
  (ids at or past the base rows read the trained rows, as the official ``train_word_embeddings`` /
  ``train_embed_tokens`` masks). Official files and key map: :mod:`baselines.antifakeprompt_keymap`.
- Exactness vs LAVIS: transformers' ViT stores EVA's ``q_bias``/``v_bias`` as one ``qkv.bias`` with a zero
  key part (same computation); ``ln_vision`` is the ViT's ``post_layernorm`` with LAVIS's eps 1e-5 (set on
  the module; transformers' config would give 1e-6); the LLM keeps the Vicuna file's ``lm_head`` rows (see
  the keymap docstring for the random ``[PAD]`` row the official adds). Official mixed precision (fp16
  ViT matmuls, fp32 residual stream and Q-Former, fp16 LLM under autocast) is not reproduced: ``dtype``
  (``fp32`` default, ``bf16``, ``fp16``) casts the whole network.
- Tokens (the slow LLaMA/BERT tokenizers of transformers 4.28-4.33 that LAVIS ran): LAVIS sets the LLM's
  bos to ``</s>``, adds ``[PAD]`` and then ``[*]``; added tokens strip the spaces around them and every
  text chunk gets sentencepiece's dummy prefix, so the prompt is ``</s> ▁Is ▁this ▁photo ▁real [*] ▁?``.
  The Q-Former reads ``[CLS] is this photo real [*] ? [SEP]`` (BERT uncased + ``[DEC]`` + ``[*]``).
- Test policy (``blip_image_eval_textinv``): Resize(224, bicubic, shorter side), CenterCrop 224, ToTensor,
  the dataset-specific mean/std of the config yaml (``default``: COCO+SD2+SD2IP; ``lama``: + LaMa).
- Score (``predict_class(candidates=["yes", "no"])``): for each answer the LM loss of its tokens after the
  prompt; the official per-image loss is ``Σ CE(answer tokens) / (T − 1)`` (``reduction="none"`` then a mean
  over all T − 1 shifted positions, ignored ones counting 0). The harness outputs ``[p_real, p_fake] =
  softmax(−(T − 1)·loss)`` = softmax of the answers' log-likelihoods, "yes" = real, and ``logits`` = those
  log-likelihoods. The decision is ``predict_class``'s: real iff loss(yes) ≤ loss(no) (argsort puts "yes"
  first on a tie); then p_fake is capped just below 0.5 so that the harness's ``p_fake >= 0.5`` agrees.
- Training (``lavis/projects/textual-inversion/textinv_train.yaml``; :mod:`baselines.antifakeprompt_training`):
  only the two rows train, AdamW
  (β 0.9/0.999, wd 0.05), lr 1e-5, LAVIS ``linear_warmup_cosine_lr`` (warm-up from 1e-8 over
  ``warmup_steps`` = 0 steps of epoch 0, then a per-epoch cosine to 0), 10 epochs, batch 6; Resize 224
  bicubic, RandomCrop 224, flip; loss = token-mean LM loss of "yes</s>" (real) / "no</s>" (fake); the
  Q-Former's dropout (0.1) is active; best epoch = lowest validation loss (``agg_metrics = 1/loss``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import (BertTokenizer, InstructBlipConfig, InstructBlipForConditionalGeneration,
                          InstructBlipQFormerConfig, InstructBlipVisionConfig, LlamaConfig, PreTrainedTokenizerBase)

from baselines import antifakeprompt_keymap as km
from baselines.common import center_crop, check_shorter_side_resize, to_tensor
from bench.checkpoint import OUR_CONFIG, is_our_checkpoint, load_checkpoint
from bench.errors import UserError
from bench.image_size import check_resized_size
from bench.model import Detector, DetectorOutput, InputPolicy, TrainOptions, file_sha256
from bench.types import LabelSpace

log = logging.getLogger(__name__)

PROMPT = "Is this photo real [*]?"
PSEUDO_WORD = "[*]"
CANDIDATES = ("yes", "no")
"""``predict_class``'s candidates: index 0 ("yes") = real, 1 ("no") = fake."""
QFORMER_BOS = "[DEC]"
LLM_PAD = "[PAD]"
LN_VISION_EPS = 1e-5
INIT_STD = 0.02  # BERT / LLaMA initializer_range: the official start of the pseudo rows (init_word None)
COCO_SD2_MEAN, COCO_SD2_STD = (0.4730, 0.4499, 0.4129), (0.2780, 0.2713, 0.2872)
LAMA_MEAN, LAMA_STD = (0.4722, 0.4490, 0.4117), (0.2772, 0.2708, 0.2867)
FILE_OPTIONS = {"eva": "eva_vit", "instructblip": "instructblip", "llm": "llm_model", "bert": "bert"}
DEFAULT_NAMES = {"eva": km.EVA_FILE, "instructblip": km.INSTRUCTBLIP_FILE, "llm": km.VICUNA_DIR,
                 "bert": km.BERT_DIR}


@dataclass(frozen=True)
class VisionShape:
    hidden: int = 1408
    layers: int = 39
    heads: int = 16
    intermediate: int = 6144
    image_size: int = 224
    patch: int = 14


@dataclass(frozen=True)
class QFormerShape:
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 3072
    max_positions: int = 512
    cross_attention_frequency: int = 2
    num_query_tokens: int = 32


@dataclass(frozen=True)
class LlmShape:
    hidden: int = 4096
    layers: int = 32
    heads: int = 32
    intermediate: int = 11008
    vocab: int = 32000
    rms_norm_eps: float = 1e-6
    max_positions: int = 2048


@dataclass(frozen=True)
class PromptRecipe:
    """LAVIS ``linear_warmup_cosine_lr`` + AdamW on the two pseudo-word rows (see the module docstring)."""

    lr: float = 1e-5
    min_lr: float = 0.0
    warmup_lr: float = 1e-8
    warmup_steps: int = 0
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.999
    epochs: int = 10
    batch_size: int = 6
    shuffle_buffer: int = 2048


@dataclass(frozen=True)
class AntifakePromptConfig:
    vision: VisionShape = field(default_factory=VisionShape)
    qformer: QFormerShape = field(default_factory=QFormerShape)
    llm: LlmShape = field(default_factory=LlmShape)
    mean: tuple[float, float, float] = COCO_SD2_MEAN
    std: tuple[float, float, float] = COCO_SD2_STD
    prompt_file: str = "COCO_150k_SD2_SD2IP.pth"
    random_base: bool = False  # tiny: random InstructBLIP weights and offline tokenizers when no files are given
    train: PromptRecipe = field(default_factory=PromptRecipe)
    weights_source: str = ("nctu-eva-lab/AntifakePrompt ckpt/download_checkpoints.sh + LAVIS eva_vit_g.pth, "
                           "instruct_blip_vicuna7b_trimmed.pth + lmsys Vicuna-7B v1.3 + bert-base-uncased vocab")


TINY = AntifakePromptConfig(
    vision=VisionShape(hidden=32, layers=2, heads=2, intermediate=64, image_size=56, patch=14),
    qformer=QFormerShape(hidden=32, layers=2, heads=2, intermediate=64, max_positions=64, num_query_tokens=4),
    llm=LlmShape(hidden=32, layers=2, heads=2, intermediate=64, vocab=1000, max_positions=128),
    random_base=True, weights_source="random",
    train=PromptRecipe(lr=5e-3, epochs=3, batch_size=16),
)


# ---------------------------------------------------------------------- tokenizers
_TINY_WORDS = ("is", "this", "photo", "real", "yes", "no", "image", "fake", "the")
TINY_BERT_VOCAB: tuple[str, ...] = (
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_TINY_WORDS, *"abcdefghijklmnopqrstuvwxyz0123456789",
    *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"), *".,?!'\"-:;()[]*",
)
"""The offline WordPiece vocabulary of ``tiny`` (BERT's five special tokens first)."""


def _added(token: str) -> Any:
    from tokenizers import AddedToken

    return AddedToken(token, lstrip=True, rstrip=True, normalized=False, special=True)


def bert_tokenizer(folder: Path | None) -> BertTokenizer:
    """bert-base-uncased's ``vocab.txt`` from a local folder (None: the tiny vocabulary), lower-casing."""
    if folder is None:
        return BertTokenizer(vocab={w: i for i, w in enumerate(TINY_BERT_VOCAB)}, do_lower_case=True)
    vocab = Path(folder) / "vocab.txt"
    if not vocab.is_file():
        raise UserError(f"{folder} has no vocab.txt (the Q-Former's tokenizer: a local copy of bert-base-uncased)")
    return BertTokenizer(vocab=str(vocab), do_lower_case=True)


def llm_tokenizer(folder: Path | None) -> PreTrainedTokenizerBase:
    """The LLaMA sentencepiece tokenizer of a local Vicuna folder (None: sida's offline tiny model)."""
    from sida.tokenizer import tokenizer_from_sentencepiece, train_tiny_sentencepiece

    if folder is None:
        return tokenizer_from_sentencepiece(train_tiny_sentencepiece())
    model = Path(folder) / "tokenizer.model"
    if not model.is_file():
        raise UserError(f"{folder} has no tokenizer.model (the Vicuna-7B v1.3 sentencepiece model)")
    return tokenizer_from_sentencepiece(model)


@dataclass(frozen=True)
class PromptTokens:
    """Token ids of the prompt and the answers (see the module docstring); ids >= ``*_base_rows`` are ``[*]``."""

    qformer_ids: tuple[int, ...]
    prompt_ids: tuple[int, ...]
    candidates: tuple[tuple[int, ...], ...]
    eos: int
    pad: int
    qformer_base_rows: int
    llm_base_rows: int


def prompt_tokens(bert: PreTrainedTokenizerBase, llm: PreTrainedTokenizerBase) -> PromptTokens:
    """Add LAVIS's tokens in its order (Q-Former: ``[DEC]``, ``[*]``; LLM: ``[PAD]``, ``[*]``) and encode."""
    if QFORMER_BOS not in bert.get_vocab():
        bert.add_special_tokens({"bos_token": _added(QFORMER_BOS)})
    llm.add_special_tokens({"pad_token": _added(LLM_PAD)})
    q_rows, l_rows = len(bert), len(llm)
    for tok in (bert, llm):
        if tok.add_special_tokens({"additional_special_tokens": [_added(PSEUDO_WORD)]}) != 1:
            raise UserError(f"The pseudo-word {PSEUDO_WORD!r} is already in a tokenizer's vocabulary")
    eos = int(llm.eos_token_id)
    candidates = tuple(tuple(llm(c, add_special_tokens=False).input_ids) for c in CANDIDATES)
    return PromptTokens(
        qformer_ids=tuple(bert(PROMPT).input_ids), prompt_ids=(eos, *llm(PROMPT, add_special_tokens=False).input_ids),
        candidates=candidates, eos=eos, pad=int(llm.pad_token_id), qformer_base_rows=q_rows, llm_base_rows=l_rows)


# ---------------------------------------------------------------------- network
class PseudoWordEmbedding(nn.Module):
    """An embedding table ``weight`` (frozen base rows) plus trainable ``pseudo`` rows for the ids from
    ``len(weight)`` on (the official ``train_word_embeddings`` / ``train_embed_tokens``)."""

    def __init__(self, base_rows: int, dim: int, pseudo_rows: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(base_rows, dim), requires_grad=False)
        self.pseudo = nn.Parameter(torch.empty(pseudo_rows, dim))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        base = self.weight.shape[0]
        if int(ids.max()) >= base + self.pseudo.shape[0] or int(ids.min()) < 0:
            raise ValueError(f"token id out of range [0, {base + self.pseudo.shape[0]})")
        is_pseudo = ids >= base
        embedded = F.embedding(ids.masked_fill(is_pseudo, 0), self.weight)
        pseudo = F.embedding((ids - base).clamp(min=0), self.pseudo)
        return torch.where(is_pseudo[..., None], pseudo, embedded)


def hf_config(config: AntifakePromptConfig, tokens: PromptTokens) -> InstructBlipConfig:
    v, q, lm = config.vision, config.qformer, config.llm
    cfg = InstructBlipConfig(
        vision_config=InstructBlipVisionConfig(
            hidden_size=v.hidden, intermediate_size=v.intermediate, num_hidden_layers=v.layers,
            num_attention_heads=v.heads, image_size=v.image_size, patch_size=v.patch, layer_norm_eps=1e-6,
            qkv_bias=True, initializer_range=INIT_STD),
        qformer_config=InstructBlipQFormerConfig(
            vocab_size=tokens.qformer_base_rows, hidden_size=q.hidden, num_hidden_layers=q.layers,
            num_attention_heads=q.heads, intermediate_size=q.intermediate, max_position_embeddings=q.max_positions,
            cross_attention_frequency=q.cross_attention_frequency, layer_norm_eps=1e-12),
        text_config=LlamaConfig(
            vocab_size=lm.vocab, hidden_size=lm.hidden, intermediate_size=lm.intermediate,
            num_hidden_layers=lm.layers, num_attention_heads=lm.heads, num_key_value_heads=lm.heads,
            max_position_embeddings=lm.max_positions, rms_norm_eps=lm.rms_norm_eps),
        num_query_tokens=q.num_query_tokens)
    cfg._attn_implementation = "eager"
    return cfg


def build_network(config: AntifakePromptConfig, tokens: PromptTokens, *, empty: bool
                  ) -> InstructBlipForConditionalGeneration:
    """InstructBLIP with the two :class:`PseudoWordEmbedding` tables; ``empty``: parameters on the meta device
    (fill with ``load_state_dict(assign=True)``), else seeded random weights (seed 0, N(0, 0.02))."""
    from accelerate import init_empty_weights

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if empty:
            with init_empty_weights(include_buffers=False):
                net = _assemble(config, tokens)
        else:
            net = _assemble(config, tokens)
            with torch.no_grad():
                for p in (net.query_tokens, net.qformer.embeddings.word_embeddings.weight,
                          net.qformer.embeddings.word_embeddings.pseudo,
                          net.language_model.get_input_embeddings().weight,
                          net.language_model.get_input_embeddings().pseudo):
                    p.normal_(0.0, INIT_STD)
    freeze_all_but_prompt(net)
    return net


def _assemble(config: AntifakePromptConfig, tokens: PromptTokens) -> InstructBlipForConditionalGeneration:
    net = InstructBlipForConditionalGeneration(hf_config(config, tokens))
    net.vision_model.post_layernorm.eps = LN_VISION_EPS
    net.qformer.set_input_embeddings(PseudoWordEmbedding(tokens.qformer_base_rows, config.qformer.hidden))
    net.language_model.set_input_embeddings(PseudoWordEmbedding(tokens.llm_base_rows, config.llm.hidden))
    return net


def freeze_all_but_prompt(net: nn.Module) -> None:
    for name, p in net.named_parameters():
        p.requires_grad_(name in (km.QFORMER_PSEUDO, km.LLM_PSEUDO))


def prompt_parameters(net: InstructBlipForConditionalGeneration) -> list[nn.Parameter]:
    return [net.qformer.embeddings.word_embeddings.pseudo, net.language_model.get_input_embeddings().pseudo]


# ---------------------------------------------------------------------- scoring
def image_prefix(net: InstructBlipForConditionalGeneration, pixel_values: torch.Tensor,
                 tokens: PromptTokens) -> torch.Tensor:
    """ViT → ``ln_vision`` → Q-Former (queries + the prompt) → ``llm_proj``: (B, queries, LLM width)."""
    ids = torch.tensor(tokens.qformer_ids, device=pixel_values.device).expand(pixel_values.shape[0], -1)
    return net.get_image_features(pixel_values=pixel_values, qformer_input_ids=ids,
                                  qformer_attention_mask=torch.ones_like(ids)).pooler_output


def answer_token_losses(net: InstructBlipForConditionalGeneration, prefix: torch.Tensor, tokens: PromptTokens,
                        answers: Sequence[Sequence[int]]) -> tuple[torch.Tensor, int]:
    """Per-token CE (N, L) of each answer after ``[prefix] + prompt`` (0 at right padding) and the
    sequence length T = queries + prompt + L, as LAVIS's ``concat_text_input_output`` lays it out."""
    device, n = prefix.device, prefix.shape[0]
    width = max(len(a) for a in answers)
    labels = torch.full((n, width), -100, dtype=torch.long, device=device)
    ids = torch.full((n, len(tokens.prompt_ids) + width), tokens.pad, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    ids[:, : len(tokens.prompt_ids)] = torch.tensor(tokens.prompt_ids, device=device)
    mask[:, : len(tokens.prompt_ids)] = 1
    for i, answer in enumerate(answers):
        ids[i, len(tokens.prompt_ids): len(tokens.prompt_ids) + len(answer)] = torch.tensor(answer, device=device)
        mask[i, len(tokens.prompt_ids): len(tokens.prompt_ids) + len(answer)] = 1
        labels[i, : len(answer)] = torch.tensor(answer, device=device)
    lm = net.language_model
    embeds = torch.cat([prefix.to(lm.dtype), lm.get_input_embeddings()(ids)], dim=1)
    attention = torch.cat([torch.ones(prefix.shape[:2], dtype=mask.dtype, device=device), mask], dim=1)
    logits = lm(inputs_embeds=embeds, attention_mask=attention, logits_to_keep=width + 1).logits[:, :-1]
    ce = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none")
    return ce, embeds.shape[1]


def candidate_losses(net: InstructBlipForConditionalGeneration, pixel_values: torch.Tensor,
                     tokens: PromptTokens) -> tuple[torch.Tensor, int]:
    """``predict_class``'s losses (B, 2) float32 for ("yes", "no") and the sequence length T."""
    b, c = pixel_values.shape[0], len(tokens.candidates)
    prefix = image_prefix(net, pixel_values, tokens).repeat_interleave(c, dim=0)
    ce, seq_len = answer_token_losses(net, prefix, tokens, list(tokens.candidates) * b)
    return (ce.sum(dim=1) / (seq_len - 1)).view(b, c), seq_len


BELOW_HALF = float(np.nextafter(np.float32(0.5), np.float32(0.0)))
"""The largest float32 below 0.5: p_fake of a "real" decision is at most this (the harness stores float32)."""


def probabilities(losses: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(probs [p_real, p_fake], answer log-likelihoods) in float64 from ``predict_class``'s losses (B, 2).

    probs = softmax(log-likelihoods), except that when ``predict_class`` says real (loss(yes) <= loss(no); a
    tie is real, argsort puts "yes" first) p_fake is capped at :data:`BELOW_HALF`, so the harness's
    ``p_fake >= 0.5`` gives the official decision even for ties and margins below float32's spacing."""
    loglik = -(losses.double() * (seq_len - 1))
    probs = torch.softmax(loglik, dim=1)
    real = losses[:, 0] <= losses[:, 1]
    p_fake = torch.where(real, probs[:, 1].clamp(max=BELOW_HALF), probs[:, 1])
    return torch.stack([1.0 - p_fake, p_fake], dim=1), loglik


# ---------------------------------------------------------------------- images
def resize_bicubic(image: np.ndarray, size: int) -> np.ndarray:
    """torchvision ``Resize(size, BICUBIC)`` on a PIL image: shorter side → ``size``, longer ``int(size·l/s)``."""
    check_shorter_side_resize(image, size)
    h, w = image.shape[:2]
    new_h, new_w = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    check_resized_size(f"resize (shorter side to {size}, bicubic)", (h, w), (new_h, new_w))
    return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BICUBIC))


# ---------------------------------------------------------------------- the plugin
class AntifakePrompt(Detector):
    """AntifakePrompt detector, binary ``[p_real, p_fake]``. Options: ``dtype`` (fp32 | bf16 | fp16);
    ``eva_vit``, ``instructblip``, ``llm_model``, ``bert`` (paths of the base files, see ``weights_help``)."""

    name = "antifakeprompt"
    label_space = LabelSpace.BINARY
    configs = {
        "default": AntifakePromptConfig(),
        "lama": AntifakePromptConfig(mean=LAMA_MEAN, std=LAMA_STD, prompt_file="COCO_150k_SD2_SD2IP_lama.pth"),
        "tiny": TINY,
    }
    weights_help = (
        "AntifakePrompt needs five local files: the prompt checkpoint (COCO_150k_SD2_SD2IP.pth, or "
        "COCO_150k_SD2_SD2IP_lama.pth for antifakeprompt:lama; ckpt/download_checkpoints.sh of "
        f"github.com/nctu-eva-lab/AntifakePrompt), LAVIS's {km.INSTRUCTBLIP_FILE} and {km.EVA_FILE} "
        "(storage.googleapis.com/sfr-vision-language-research/LAVIS/models/InstructBLIP/ and .../BLIP2/), a "
        f"Vicuna-7B v1.3 Hugging Face folder ({km.VICUNA_DIR}/, lmsys) and bert-base-uncased's vocab.txt "
        f"({km.BERT_DIR}/). Put them in one folder under these names and pass it with --weights, or pass the "
        "prompt checkpoint with --weights and the others with --option eva_vit=, instructblip=, llm_model=, "
        "bert=. See docs/baselines.md#antifakeprompt."
    )

    def build(self, config: AntifakePromptConfig, **options: Any) -> None:
        from sida.checkpoint_map import resolve_dtype

        known = {"dtype", "num_classes", *FILE_OPTIONS.values()}
        unknown = sorted(set(options) - known)
        if unknown:
            raise UserError(f"Unknown antifakeprompt option(s) {unknown}; known: {', '.join(sorted(known))}")
        if int(options.get("num_classes", 2)) != 2:
            raise UserError("antifakeprompt answers yes/no: it is binary only (num_classes=2)")
        self.dtype_name = str(options.get("dtype", "fp32"))
        self.dtype = resolve_dtype(self.dtype_name)
        self.base_files = self._option_files()
        self.net: InstructBlipForConditionalGeneration | None = None
        self.tokens: PromptTokens | None = None
        self.prompt_source: str = "random (N(0, 0.02), the official start)"
        self.loaded_files: dict[str, Path] | None = None
        self.base_sha256: dict[str, str] | None = None

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net} if self.net is not None else {}

    # ------------------------------------------------------------------ files
    def _option_files(self) -> dict[str, Path]:
        return {part: Path(self.options[opt]).expanduser() for part, opt in FILE_OPTIONS.items()
                if self.options.get(opt) is not None}

    def _base_set(self, folder: Path | None = None) -> dict[str, Path]:
        """The four base files: the options first, then the default names in ``folder``; each must exist."""
        files: dict[str, Path] = {}
        for part, name in DEFAULT_NAMES.items():
            path = self.base_files.get(part) or (folder / name if folder is not None else None)
            is_folder = part in ("llm", "bert")
            if path is None or not (path.is_dir() if is_folder else path.is_file()):
                raise UserError(f"antifakeprompt: {name} {'folder' if is_folder else 'file'} not found"
                                + (f": {path}" if path else "") + f" (put it in the weights folder or pass --option "
                                f"{FILE_OPTIONS[part]}=PATH). {self.weights_help}")
            files[part] = path
        return files

    def _official_set(self, path: Path) -> tuple[Path, dict[str, Path]]:
        prompt = path / self.config.prompt_file if path.is_dir() else path
        if not prompt.is_file():
            raise UserError(f"{path} has no {self.config.prompt_file} (antifakeprompt:{self.config_name}'s prompt "
                            f"checkpoint). {self.weights_help}")
        return prompt, self._base_set(path if path.is_dir() else path.parent)

    def check_weights(self, path: Path) -> None:
        self.base_files = self._option_files()
        if is_our_checkpoint(path):
            return
        if path.is_dir() and (path / OUR_CONFIG).is_file():
            raise UserError(f"{path} has {OUR_CONFIG} but no model.safetensors")
        self._official_set(path)

    # ------------------------------------------------------------------ building / loading
    def ensure_model(self) -> InstructBlipForConditionalGeneration:
        """The network; without ``--weights``: the base files of the options with fresh pseudo rows (the
        official training start), or, for ``tiny``, seeded random weights and the offline tokenizers."""
        if self.net is None:
            files = self._base_set() if self.base_files else None
            if files is None and not self.config.random_base:
                raise UserError(f"antifakeprompt:{self.config_name} has no random-weight mode: pass --weights, or "
                                f"the base files as options to train from the official start. {self.weights_help}")
            self._load(files, None, "")
        return self.net  # type: ignore[return-value]

    def load_weights(self, path: Path) -> None:
        if is_our_checkpoint(path):
            state, saved = load_checkpoint(path)
            if saved.get("model") not in (None, self.name):
                raise UserError(f"{path} holds a {saved.get('model')!r} checkpoint, not {self.name!r}")
            recorded = saved.get("base_files")
            if not self.base_files and recorded:
                self.base_files = {part: Path(p) for part, p in recorded.items()}
            files = self._base_set() if self.base_files else None
            if files is None and not self.config.random_base:
                raise UserError(f"{path} stores only the pseudo-word rows; pass the base files as options. "
                                f"{self.weights_help}")
            self._load(files, state, str(path))
            return
        prompt, files = self._official_set(path)
        raw, cfg = km.read_lavis_state(prompt, "prompt", allow_pickle=self.allow_pickle, hint=self._hint())
        mapped = km.map_official("prompt", raw, prompt, hint=self._hint()).state
        self._warn_recorded(cfg, prompt)
        self._load(files, mapped, str(prompt))

    def _hint(self) -> str:
        return f"Expected the antifakeprompt:{self.config_name} layout; see docs/baselines.md#antifakeprompt"

    def _load(self, files: dict[str, Path] | None, prompt_state: Mapping[str, torch.Tensor] | None,
              prompt_source: str) -> None:
        """Build the network from the base files (None: random ``tiny``), then the pseudo rows (None: fresh)."""
        tokens = prompt_tokens(bert_tokenizer(files["bert"] if files else None),
                               llm_tokenizer(files["llm"] if files else None))
        if files is None:
            net = build_network(self.config, tokens, empty=False)
        else:
            net = self._load_base(files, tokens)
        if prompt_state is not None:
            shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
            km.check_part("prompt", prompt_state, shapes, prompt_source, self._hint())
            with torch.no_grad():
                for key, param in zip((km.QFORMER_PSEUDO, km.LLM_PSEUDO), prompt_parameters(net)):
                    param.copy_(prompt_state[key].to(param.dtype))
            self.prompt_source = prompt_source
        self.tokens, self.net = tokens, net.to(self.dtype).to(self.device).eval()
        self.loaded_files = files
        self.base_sha256 = {part: file_sha256(p) for part, p in (files or {}).items()} or None

    def _load_base(self, files: dict[str, Path], tokens: PromptTokens) -> InstructBlipForConditionalGeneration:
        """The InstructBLIP base from the official files (strict key map), with fresh pseudo rows N(0, 0.02)."""
        self._check_llm_config(files["llm"])
        net = build_network(self.config, tokens, empty=True)
        shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        print(f"antifakeprompt: loading {self.config_name}: {km.estimate_memory(shapes, self.dtype)}", file=sys.stderr)
        state: dict[str, torch.Tensor] = {}
        for part in ("instructblip", "eva", "llm"):
            path = files[part]
            shards = (km.iter_llm_shards(path, allow_pickle=self.allow_pickle) if part == "llm" else
                      [km.read_lavis_state(path, part, allow_pickle=self.allow_pickle, hint=self._hint())[0]])
            mapped: dict[str, torch.Tensor] = {}
            for raw in shards:  # one Vicuna shard at a time: peak memory = the network + one shard
                mapped.update({k: v.to(self.dtype) for k, v in km.map_official(
                    part, raw, path, vision_depth=self.config.vision.layers, hint=self._hint()).state.items()})
                del raw
            if km.LLM_EMBED in mapped:
                if mapped[km.LLM_EMBED].shape[0] != self.config.llm.vocab:
                    km.fail(path, f"key 'model.embed_tokens.weight' has {mapped[km.LLM_EMBED].shape[0]} rows, the "
                                  f"configuration needs {self.config.llm.vocab}", 1, self._hint())
                mapped[km.LLM_EMBED] = km.pad_rows(mapped[km.LLM_EMBED], tokens.llm_base_rows)
            km.check_part(part, mapped, shapes, path, self._hint())
            state.update(mapped)
            del mapped
        for key in (km.QFORMER_PSEUDO, km.LLM_PSEUDO):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                state[key] = torch.randn(shapes[key]) * INIT_STD
        net.load_state_dict(state, strict=True, assign=True)
        net.vision_model.post_layernorm.eps = LN_VISION_EPS
        freeze_all_but_prompt(net)
        return net

    def _check_llm_config(self, folder: Path) -> None:
        from sida.checkpoint_map import read_json

        hf = read_json(folder / "config.json") if (folder / "config.json").is_file() else None
        if hf is None:
            raise UserError(f"{folder} has no config.json (a Hugging Face LLaMA folder). {self.weights_help}")
        want = self.config.llm
        for name, value in (("hidden_size", want.hidden), ("num_hidden_layers", want.layers),
                            ("num_attention_heads", want.heads), ("intermediate_size", want.intermediate),
                            ("vocab_size", want.vocab), ("rms_norm_eps", want.rms_norm_eps)):
            if name in ("rms_norm_eps",) and name not in hf:
                continue
            if hf.get(name) != value:
                raise UserError(f"{folder}/config.json: {name} is {hf.get(name)!r}, antifakeprompt:{self.config_name} "
                                f"needs {value!r} (Vicuna-7B v1.3)")
        if hf.get("num_key_value_heads", want.heads) != want.heads:
            raise UserError(f"{folder}/config.json: num_key_value_heads must equal num_attention_heads ({want.heads})")

    def _warn_recorded(self, cfg: Mapping[str, Any], source: Path) -> None:
        """The training config a LAVIS checkpoint records: warn when its prompt or eval mean/std differ."""
        model = cfg.get("model") if isinstance(cfg.get("model"), Mapping) else {}
        if model.get("prompt") not in (None, PROMPT):
            log.warning("%s was trained with the prompt %r; antifakeprompt scores %r", source, model["prompt"], PROMPT)
        for name, dataset in (cfg.get("datasets") or {}).items() if isinstance(cfg.get("datasets"), Mapping) else ():
            evaluation = ((dataset or {}).get("vis_processor") or {}).get("eval") or {}
            for key, ours in (("mean", self.config.mean), ("std", self.config.std)):
                if key in evaluation and not np.allclose(evaluation[key], ours):
                    log.warning("%s records %s %s=%s for dataset %s; antifakeprompt:%s uses %s", source,
                                "eval", key, list(evaluation[key]), name, self.config_name, list(ours))

    # ------------------------------------------------------------------ inference
    @property
    def input_policy(self) -> InputPolicy:
        size = self.config.vision.image_size
        return InputPolicy(resize=size, resize_mode="shorter_side", crop=size, mean=self.config.mean,
                           std=self.config.std, interpolation="bicubic",
                           notes=f"blip_image_eval_textinv: PIL bicubic, centre crop {size}; prompt {PROMPT!r}; "
                                 "p = softmax of the yes/no log-likelihoods, yes = real; dtype " + self.dtype_name)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        size = self.config.vision.image_size
        return to_tensor(center_crop(resize_bicubic(image, size), size), self.config.mean, self.config.std)

    def forward(self, batch: torch.Tensor) -> DetectorOutput:
        net = self.ensure_model()
        losses, seq_len = candidate_losses(net, batch.to(self.dtype), self.tokens)  # type: ignore[arg-type]
        probs, loglik = probabilities(losses, seq_len)
        return DetectorOutput(probs=probs, logits=loglik)

    def describe(self) -> dict[str, Any]:
        """Adds the base files (None: random ``tiny``), their sha256 and where the pseudo rows came from."""
        info = super().describe()
        info.update(base_files={p: str(f) for p, f in self.loaded_files.items()} if self.loaded_files else None,
                    base_sha256=self.base_sha256, prompt_rows=self.prompt_source)
        return info

    # ------------------------------------------------------------------ training
    def fit(self, train: Any, val: Any, options: TrainOptions) -> dict[str, Any]:
        from baselines.antifakeprompt_training import train_prompt

        return train_prompt(self, train, val, options)

    def train_option_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in fields(PromptRecipe))

    def prompt_state(self) -> dict[str, torch.Tensor]:
        """The two trained rows under our keys (what our checkpoints store)."""
        rows = prompt_parameters(self.ensure_model())
        return {km.QFORMER_PSEUDO: rows[0].detach().float().cpu().clone(),
                km.LLM_PSEUDO: rows[1].detach().float().cpu().clone()}

    def checkpoint_config(self) -> dict[str, Any]:
        """config.json of our checkpoints: the identity, including the base files read again at load time."""
        self.ensure_model()
        return {**self.describe(), "model": self.name}
