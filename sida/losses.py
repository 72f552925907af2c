"""SIDA's training losses, as the official code computes them (LISA's mask losses unchanged).

- :func:`dice_loss`: sigmoid, flatten H×W, ``1 - (2·Σ(p/s·t) + ε) / (Σp/s + Σt/s + ε)`` with LISA's
  scale s = 1000 and ε = 1e-6, summed over masks ÷ ``num_masks``.
- :func:`sigmoid_bce_loss`: BCE-with-logits, mean over pixels per mask, summed ÷ ``num_masks``.
- :func:`mask_losses`: per sample, each loss × its mask count, summed over the batch ÷ total masks
  (masks of different samples may have different sizes).
- :func:`combine_losses`: ``mask = bce_w·bce + dice_w·dice``;
  ``loss = ce_w·lm + mask_w·mask + cls_w·cls`` (stage 1 has no LM term).
- :func:`combine_mask_losses`: LISA trained here: ``mask_w·mask`` over every image (no cls, no LM term).
Mask logits and targets are (n, H, W); targets are soft in [0, 1] (official: not thresholded).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from bench.errors import UserError

DICE_SCALE = 1000.0
DICE_EPS = 1e-6
_NUM_MASKS_EPS = 1e-8


def dice_loss(
    logits: torch.Tensor, targets: torch.Tensor, num_masks: float, scale: float = DICE_SCALE, eps: float = DICE_EPS
) -> torch.Tensor:
    """LISA's DICE loss of (n, H, W) mask logits against (n, H, W) targets, summed ÷ ``num_masks``."""
    probs = logits.sigmoid().flatten(1, 2)
    targets = targets.flatten(1, 2)
    numerator = 2 * (probs / scale * targets).sum(-1)
    denominator = (probs / scale).sum(-1) + (targets / scale).sum(-1)
    loss = 1 - (numerator + eps) / (denominator + eps)
    return loss.sum() / (num_masks + _NUM_MASKS_EPS)


def sigmoid_bce_loss(logits: torch.Tensor, targets: torch.Tensor, num_masks: float) -> torch.Tensor:
    """Per-mask mean BCE-with-logits of (n, H, W) tensors, summed ÷ ``num_masks``."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return loss.flatten(1, 2).mean(1).sum() / (num_masks + _NUM_MASKS_EPS)


def mask_losses(pred_masks: list[torch.Tensor], gt_masks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Unweighted (BCE, DICE) over a batch: Σ_i loss_i·n_i ÷ Σ_i n_i, n_i = masks of sample i."""
    if len(pred_masks) != len(gt_masks) or not pred_masks:
        raise ValueError(f"Expected matching non-empty mask lists, got {len(pred_masks)} and {len(gt_masks)}")
    bce = dice = pred_masks[0].new_zeros(())
    num_masks = 0
    for pred, gt in zip(pred_masks, gt_masks):
        if pred.shape != gt.shape:
            raise ValueError(f"Predicted mask {tuple(pred.shape)} and target {tuple(gt.shape)} differ")
        n = gt.shape[0]
        gt = gt.to(pred.dtype)
        bce = bce + sigmoid_bce_loss(pred, gt, num_masks=n) * n
        dice = dice + dice_loss(pred, gt, num_masks=n) * n
        num_masks += n
    return bce / (num_masks + _NUM_MASKS_EPS), dice / (num_masks + _NUM_MASKS_EPS)


@dataclass(frozen=True)
class LossWeights:
    """Loss weights of one training stage (``name`` is recorded in the saved config)."""

    name: str
    cls: float = 1.0
    mask: float = 1.0
    bce: float = 1.0
    dice: float = 1.0
    ce: float = 0.0  # LM cross-entropy (stage 2 only)

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)


# (stage, preset name) -> weights. Stage 1: train_SIDA.py defaults (all 1.0; ce parsed but unused) and
# the paper (§5 / Table 7: det 1, bce 2.0, dice 0.5). Stage 2: train_SIDA_description.py (ce 1,
# mask 0.5, cls 0.5) and the paper's Eq. 6 (det = txt = mask = 1.0, bce 2.0, dice 0.5).
LOSS_PRESETS: dict[tuple[int, str], LossWeights] = {
    (1, "official"): LossWeights("official"),
    (1, "paper"): LossWeights("paper", bce=2.0, dice=0.5),
    (2, "official"): LossWeights("official", cls=0.5, mask=0.5, ce=1.0),
    (2, "paper"): LossWeights("paper", bce=2.0, dice=0.5, ce=1.0),
}
"""The single source of truth for loss weights (configurations and training name a preset)."""
PRESET_NAMES: tuple[str, ...] = tuple(dict.fromkeys(name for _, name in LOSS_PRESETS))


def loss_preset(name: str, stage: int) -> LossWeights:
    """The named preset of ``stage`` (1 detection + localization, 2 explanations)."""
    weights = LOSS_PRESETS.get((stage, name))
    if weights is None:
        names = sorted({preset for s, preset in LOSS_PRESETS if s == stage})
        raise UserError(f"Unknown SIDA loss preset {name!r} for stage {stage}; available: {', '.join(names)}")
    return weights


@dataclass
class LossTerms:
    """The weighted total and its (detached) parts; ``mask``/``bce``/``dice`` include their weights."""

    total: torch.Tensor
    cls: torch.Tensor
    mask: torch.Tensor
    bce: torch.Tensor
    dice: torch.Tensor
    lm: torch.Tensor

    def scalars(self) -> dict[str, float]:
        return {k: float(getattr(self, k).detach()) for k in ("total", "cls", "mask", "bce", "dice", "lm")}


def combine_losses(
    weights: LossWeights,
    cls_logits: torch.Tensor,
    cls_labels: torch.Tensor,
    pred_masks: list[torch.Tensor] | None = None,
    gt_masks: list[torch.Tensor] | None = None,
    lm_loss: torch.Tensor | None = None,
) -> LossTerms:
    """Total loss of one batch as the official ``model_forward``.

    ``cls_logits`` (B, 3) and ``cls_labels`` (B,) give the CE. ``pred_masks``/``gt_masks`` are the
    tampered samples' (n_i, H_i, W_i) mask logits and targets; the mask loss is only added when
    the batch has a tampered sample (``cls_labels == 2``) and masks are given.
    """
    cls = F.cross_entropy(cls_logits, cls_labels)
    zero = cls.new_zeros(())
    bce = dice = zero
    if bool((cls_labels == 2).any()) and pred_masks:
        if gt_masks is None:
            raise ValueError("pred_masks given without gt_masks")
        raw_bce, raw_dice = mask_losses(pred_masks, gt_masks)
        bce, dice = weights.bce * raw_bce, weights.dice * raw_dice
    mask = bce + dice
    lm = lm_loss if lm_loss is not None else zero
    total = weights.mask * mask + weights.cls * cls
    if weights.ce:
        total = total + weights.ce * lm
    return LossTerms(
        total=total, cls=cls.detach(), mask=mask.detach(), bce=bce.detach(), dice=dice.detach(), lm=lm.detach()
    )


def combine_mask_losses(
    weights: LossWeights, pred_masks: list[torch.Tensor], gt_masks: list[torch.Tensor] | None
) -> LossTerms:
    """LISA's mask loss without its LM term: ``mask_w·(bce_w·BCE + dice_w·DICE)`` over every sample's
    (n_i, H_i, W_i) mask logits and targets (a real image's target is all zero); no detection loss."""
    if gt_masks is None:
        raise ValueError("pred_masks given without gt_masks")
    raw_bce, raw_dice = mask_losses(pred_masks, gt_masks)
    bce, dice = weights.bce * raw_bce, weights.dice * raw_dice
    mask = bce + dice
    zero = mask.new_zeros(())
    return LossTerms(total=weights.mask * mask, cls=zero, mask=mask.detach(), bce=bce.detach(), dice=dice.detach(),
                     lm=zero)
