"""The contract between SIDA's data side (prompts, tokenizer, training) and :class:`sida.model.SidaModel`.

Conventions:
- Labels: 0 real, 1 full synthetic, 2 tampered (SID-Set order).
- ``input_ids`` hold ONE ``IMAGE_TOKEN_INDEX`` (-200) per sample where the prompt has ``<image>``
  (LLaVA's ``tokenizer_image_token``); the model replaces it with the 256 projected CLIP patch
  features. ``<im_start>``/``<im_end>`` are ordinary tokens around it.
- Padding is on the right; ``attention_mask`` is 1 for real tokens, 0 for padding.
- ``labels`` (LM targets) use ``IGNORE_INDEX`` (-100) everywhere except the supervised answer.
- SAM images are RGB, ResizeLongestSide(sam size), normalised with SAM's mean/std on the
  0..255 scale and zero-padded bottom/right to a square; CLIP images are 224² centre crops
  normalised with CLIP's mean/std on the 0..1 scale (see :mod:`sida.preprocess`).
- Masks are (h, w) tensors at ``mask_sizes``; predicted masks are LOGITS (sigmoid → probability).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

IMAGE_TOKEN_INDEX = -200
IGNORE_INDEX = -100


@dataclass(frozen=True)
class SpecialTokenIds:
    """Ids of SIDA's added tokens in the checkpoint's tokenizer (never hard-coded).

    ``cls`` is the paper's <DET> (``[CLS]`` in the code; None for LISA, which has no such token),
    ``seg`` is <SEG> (``[SEG]``), ``end`` closes a description (``[END]``, description stage only;
    None when absent).
    """

    cls: int | None
    seg: int
    im_start: int
    im_end: int
    pad: int
    eos: int
    end: int | None = None


@dataclass
class SidaBatch:
    """One batch for :meth:`SidaModel.forward` (B samples, one conversation each).

    Attributes:
        images_sam: (B, 3, S, S) float, S = the SAM input size (1024 for the released models).
        images_clip: (B, 3, C, C) float, C = the CLIP input size (224; 96 in ``tiny``).
        input_ids: (B, L) long, right-padded, one ``IMAGE_TOKEN_INDEX`` per row.
        attention_mask: (B, L) bool or long.
        resize_sizes: per sample, the (h, w) of the image after ResizeLongestSide, before padding.
        mask_sizes: per sample, the (H, W) at which predicted masks are returned (the ground
            truth's resolution; official training/test.py: the resized size; chat: the original).
        labels: optional (B, L) long LM targets (``IGNORE_INDEX`` = not supervised); when given,
            the model returns ``lm_loss`` (transformers' shifted CE over the expanded sequence).
        cls_labels: optional (B,) long ground-truth classes (losses only; the model never reads them).
        masks: optional per-sample (n_seg_i, H, W) float targets in [0, 1] at ``mask_sizes``
            (losses only; the model never reads them).
    """

    images_sam: torch.Tensor
    images_clip: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    resize_sizes: list[tuple[int, int]]
    mask_sizes: list[tuple[int, int]]
    labels: torch.Tensor | None = None
    cls_labels: torch.Tensor | None = None
    masks: list[torch.Tensor] | None = None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "SidaBatch":
        """A copy on ``device``; floating images cast to ``dtype`` when given."""

        def move(t: torch.Tensor | None, cast: bool = False) -> torch.Tensor | None:
            if t is None:
                return None
            t = t.to(device)
            return t.to(dtype) if (cast and dtype is not None) else t

        return SidaBatch(
            images_sam=move(self.images_sam, True),  # type: ignore[arg-type]
            images_clip=move(self.images_clip, True),  # type: ignore[arg-type]
            input_ids=move(self.input_ids),  # type: ignore[arg-type]
            attention_mask=move(self.attention_mask),  # type: ignore[arg-type]
            resize_sizes=list(self.resize_sizes),
            mask_sizes=list(self.mask_sizes),
            labels=move(self.labels),
            cls_labels=move(self.cls_labels),
            masks=None if self.masks is None else [m.to(device) for m in self.masks],
        )

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass
class SidaOutput:
    """What :meth:`SidaModel.forward` returns.

    Attributes:
        cls_logits: (B, 3) detection logits from the state one position before each sample's
            LAST ``[CLS]`` (NaN rows for samples without ``[CLS]``; ``has_cls`` says which);
            (B, 0) for a LISA configuration (no detection head).
        has_cls: (B,) bool (all False for LISA).
        pred_masks: per sample, (n_seg_i, H_i, W_i) mask LOGITS at ``mask_sizes[i]``
            (n_seg_i = 0 when the sample has no ``[SEG]`` or masks were not requested).
        seg_embeddings: per sample, (n_seg_i, 256) prompt embeddings after the det→seg
            attention (what SAM's prompt encoder receives).
        lm_loss: scalar LM cross-entropy when ``batch.labels`` is given, else None.
        lm_logits: (B, L', V) over the expanded sequence (L' = L + 255 per image) when
            ``return_lm_logits=True``, else None.
    """

    cls_logits: torch.Tensor
    has_cls: torch.Tensor
    pred_masks: list[torch.Tensor] = field(default_factory=list)
    seg_embeddings: list[torch.Tensor] = field(default_factory=list)
    lm_loss: torch.Tensor | None = None
    lm_logits: torch.Tensor | None = None
