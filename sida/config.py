"""SIDA configurations: frozen dataclasses for the vision tower, the language model, SAM and the heads.

``CONFIGS`` holds ``default`` (SIDA-7B: LLaMA-7B H 4096, CLIP ViT-L/14 at 224, SAM ViT-H at
1024), ``13b`` (SIDA-13B: LLaMA-2-13B H 5120) and ``tiny`` (random weights, a 2-layer LLaMA, a
2-layer CLIP tower at 96/6 and a 2-layer SAM at 96/8, random except a fixed DCT patch embedding
in both frozen encoders, see :mod:`sida.fixed_embedding`; runs on a 2-core CPU in a fraction of a second).
The language-model sizes of a released checkpoint are read from its ``config.json``; the
numbers here are the documented ones and are checked against it.

Ablation switches (paper Table 6 and the paper-vs-code difference of §1 of the reference notes):
- ``attention``: ``"official"`` (det→seg multi-head attention with residual), ``"fc"`` (the
  projected detection feature is added to each [SEG] embedding, no attention), ``"none"``
  ([SEG] embeddings go to SAM unchanged).
- ``fc_input``: ``"logits"`` (official ``sida_fc1 = Linear(3, 256)`` on the detection logits) or
  ``"hidden"`` (the paper's reading: ``Linear(H, 256)`` on the <DET> hidden state).

``LISA_CONFIGS`` (:class:`LisaConfig`, the ``lisa`` plugin) are the same sizes without the
detection parts (``has_detection_head`` False, no [CLS] token).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from sida.losses import PRESET_NAMES

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SAM_MEAN = (123.675, 116.28, 103.53)
SAM_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ClipConfig:
    """CLIP vision tower (transformers ``CLIPVisionModel``); 224/14 → 256 patch tokens."""

    image_size: int = 224
    patch_size: int = 14
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_layers: int = 24
    num_heads: int = 16
    select_layer: int = -2  # LLaVA v1 mm_vision_select_layer; patch tokens only (no CLS)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class LlmConfig:
    """LLaMA language model (transformers ``LlamaForCausalLM``)."""

    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_layers: int = 32
    num_heads: int = 32
    vocab_size: int = 32003  # resized to the tokenizer's length when the model is built
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6


@dataclass(frozen=True)
class SamConfig:
    """segment_anything SAM: ViT image encoder, prompt encoder, one-output mask decoder."""

    image_size: int = 1024
    patch_size: int = 16
    encoder_dim: int = 1280
    encoder_depth: int = 32
    encoder_heads: int = 16
    global_attn_indexes: tuple[int, ...] = (7, 15, 23, 31)
    window_size: int = 14
    prompt_dim: int = 256  # = out_dim of text_hidden_fcs
    decoder_mlp_dim: int = 2048
    decoder_depth: int = 2
    decoder_heads: int = 8
    iou_head_hidden_dim: int = 256

    @property
    def embedding_size(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True)
class LoraSettings:
    """peft LoRA on the language model only (official: r 8, α 16, dropout 0.05, q_proj/v_proj)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: tuple[str, ...] = ("q_proj", "v_proj")


@dataclass(frozen=True)
class SidaConfig:
    """A complete SIDA configuration.

    Attributes:
        clip, llm, sam, lora: component sizes.
        attention: ``"official"`` | ``"fc"`` | ``"none"`` (see module docstring).
        fc_input: ``"logits"`` | ``"hidden"``.
        loss_preset: name of the training loss preset (:data:`sida.losses.LOSS_PRESETS`; the
            training option ``loss_preset`` overrides it).
        num_classes: 3 (0 real, 1 full synthetic, 2 tampered).
        description: whether this is a description checkpoint (keeps generated text).
        max_new_tokens: generation budget for explanations.
        base: what the configuration corresponds to (documentation).
        dct_patch_gains: ``None`` (official: the patch embeddings come from the checkpoint) or
            (DC gain, highest-frequency gain) of the fixed DCT patch embeddings that the tiny
            configuration puts in its frozen CLIP and SAM encoders in place of pretrained weights.
    """

    clip: ClipConfig = field(default_factory=ClipConfig)
    llm: LlmConfig = field(default_factory=LlmConfig)
    sam: SamConfig = field(default_factory=SamConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    attention: str = "official"
    fc_input: str = "logits"
    loss_preset: str = "official"
    num_classes: int = 3
    description: bool = False
    max_new_tokens: int = 128
    base: str = "SIDA-7B (LISA-7B-v1 = LLaVA-7B v1 + SAM ViT-H)"
    dct_patch_gains: tuple[float, float] | None = None  # tiny only: (low, high) gains, see sida.fixed_embedding
    family: ClassVar[str] = "SIDA"
    has_detection_head: ClassVar[bool] = True  # [CLS] token, cls_head, sida_fc1, attention_layer

    def __post_init__(self) -> None:
        if self.attention not in ("official", "fc", "none"):
            raise ValueError(f"attention must be 'official', 'fc' or 'none', got {self.attention!r}")
        if self.fc_input not in ("logits", "hidden"):
            raise ValueError(f"fc_input must be 'logits' or 'hidden', got {self.fc_input!r}")
        if self.loss_preset not in PRESET_NAMES:
            raise ValueError(f"Unknown loss preset {self.loss_preset!r}; available: {', '.join(PRESET_NAMES)}")
        if self.clip.num_patches != 256:
            raise ValueError(f"the [CLS]/[SEG] offset rule assumes 256 image tokens, got {self.clip.num_patches}")

    @property
    def out_dim(self) -> int:
        return self.sam.prompt_dim



DEFAULT = SidaConfig()

SIDA_13B = SidaConfig(
    llm=LlmConfig(hidden_size=5120, intermediate_size=13824, num_layers=40, num_heads=40,
                  max_position_embeddings=4096, rms_norm_eps=1e-5),
    base="SIDA-13B (LISA-13B-llama2-v1 = LLaVA LLaMA-2-13B + SAM ViT-H)",
)

TINY = SidaConfig(
    clip=ClipConfig(image_size=96, patch_size=6, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=2),
    llm=LlmConfig(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, vocab_size=1024,
                  max_position_embeddings=1024, rms_norm_eps=1e-6),
    sam=SamConfig(image_size=96, patch_size=8, encoder_dim=32, encoder_depth=2, encoder_heads=2,
                  global_attn_indexes=(1,), window_size=4, prompt_dim=32, decoder_mlp_dim=64,
                  decoder_depth=2, decoder_heads=8, iou_head_hidden_dim=32),
    max_new_tokens=16,
    dct_patch_gains=(0.1, 4.0),
    base="random tiny configuration for tests and CPU smoke runs (fixed DCT patch embeddings in the frozen encoders)",
)

CONFIGS: dict[str, SidaConfig] = {"default": DEFAULT, "13b": SIDA_13B, "tiny": TINY}


@dataclass(frozen=True)
class LisaConfig(SidaConfig):
    """LISA (Lai et al., CVPR 2024): SIDA's network without the [CLS] token, the detection head,
    ``sida_fc1`` and the det→seg attention. The [SEG] state goes through ``text_hidden_fcs``
    straight to SAM's prompt encoder (``attention`` is always ``"none"``). The loss preset is
    ``paper`` (bce 2.0, dice 0.5: LISA's ``train_ds.py`` defaults); LISA trains no detection loss."""

    attention: str = "none"
    loss_preset: str = "paper"
    base: str = "LISA-7B-v1 (LLaVA-7B v1 + SAM ViT-H)"
    family: ClassVar[str] = "LISA"
    has_detection_head: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.attention != "none":
            raise ValueError(f"LISA has no det→seg attention: attention must be 'none', got {self.attention!r}")


def lisa_of(config: SidaConfig, base: str) -> LisaConfig:
    """The LISA configuration with ``config``'s component sizes (SIDA is fine-tuned from LISA)."""
    return LisaConfig(clip=config.clip, llm=config.llm, sam=config.sam, lora=config.lora,
                      max_new_tokens=config.max_new_tokens, dct_patch_gains=config.dct_patch_gains, base=base)


LISA_CONFIGS: dict[str, LisaConfig] = {
    "default": lisa_of(DEFAULT, "LISA-7B-v1 (LLaVA-7B v1 + SAM ViT-H)"),
    "13b": lisa_of(SIDA_13B, "LISA-13B-llama2-v1 (LLaVA LLaMA-2-13B + SAM ViT-H)"),
    "tiny": lisa_of(TINY, TINY.base),
}
"""LISA configurations: ``default`` (LISA-7B-v1, Table 3), ``13b`` (LISA-13B-llama2-v1), ``tiny``."""
