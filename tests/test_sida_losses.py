"""SIDA losses against hand-computed values (LISA's DICE scaling, num_masks normalisation, weights)."""

import math

import pytest
import torch

from bench.errors import UserError
from sida.losses import combine_losses, dice_loss, loss_preset, mask_losses, sigmoid_bce_loss


def test_dice_uses_lisa_scale_and_smoothing():
    logits = torch.zeros(1, 2, 2)  # p = 0.5 everywhere
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
    # numerator 2·(0.5/1000) = 1e-3, denominator 2/1000 + 1/1000 = 3e-3
    expected = 1 - (1e-3 + 1e-6) / (3e-3 + 1e-6)
    assert dice_loss(logits, target, num_masks=1).item() == pytest.approx(expected, rel=1e-6)


def test_dice_scale_matters_for_empty_target():
    logits, target = torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)
    # 1 - 1e-6 / (2/1000 + 1e-6): the /1000 scaling makes ε weigh 1000× more than without it
    assert dice_loss(logits, target, num_masks=1).item() == pytest.approx(1 - 1e-6 / (2e-3 + 1e-6), rel=1e-6)
    unscaled = dice_loss(logits, target, num_masks=1, scale=1.0).item()
    assert unscaled == pytest.approx(1 - 1e-6 / (2 + 1e-6), abs=1e-7)
    assert unscaled > dice_loss(logits, target, num_masks=1).item() + 4e-4


def test_dice_is_zero_for_empty_prediction_and_target():
    loss = dice_loss(torch.full((1, 3, 3), -50.0), torch.zeros(1, 3, 3), num_masks=1)
    assert loss.item() == pytest.approx(0, abs=1e-6)


def test_bce_is_per_mask_mean_summed_over_num_masks():
    logits = torch.tensor([[[2.0, -1.0]], [[0.0, 0.0]]])  # two masks of 1×2
    target = torch.tensor([[[1.0, 0.0]], [[1.0, 0.0]]])
    first = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(-1.0))) / 2
    second = math.log(2.0)
    assert sigmoid_bce_loss(logits, target, num_masks=2).item() == pytest.approx((first + second) / 2, rel=1e-6)
    assert sigmoid_bce_loss(logits, target, num_masks=1).item() == pytest.approx(first + second, rel=1e-6)


def test_bce_accepts_soft_targets():
    logits, target = torch.zeros(1, 1, 1), torch.full((1, 1, 1), 0.25)
    assert sigmoid_bce_loss(logits, target, num_masks=1).item() == pytest.approx(math.log(2.0), rel=1e-6)


def test_mask_losses_weight_each_sample_by_its_mask_count():
    a = torch.tensor([[[3.0, -3.0]]])  # one mask, 1×2
    b = torch.tensor([[[0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]]])  # two masks, 1×3 (another size)
    ta, tb = torch.tensor([[[1.0, 0.0]]]), torch.ones(2, 1, 3)
    bce, dice = mask_losses([a, b], [ta, tb])
    per_mask_bce = [sigmoid_bce_loss(a, ta, 1), sigmoid_bce_loss(b[:1], tb[:1], 1), sigmoid_bce_loss(b[1:], tb[1:], 1)]
    per_mask_dice = [dice_loss(a, ta, 1), dice_loss(b[:1], tb[:1], 1), dice_loss(b[1:], tb[1:], 1)]
    assert bce.item() == pytest.approx(sum(x.item() for x in per_mask_bce) / 3, rel=1e-6)
    assert dice.item() == pytest.approx(sum(x.item() for x in per_mask_dice) / 3, rel=1e-6)


def test_mask_losses_reject_shape_mismatch():
    with pytest.raises(ValueError, match="differ"):
        mask_losses([torch.zeros(1, 2, 2)], [torch.zeros(1, 3, 3)])


def _batch():
    logits = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 2.0]])
    masks = [torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)]
    targets = [torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]), torch.zeros(1, 2, 2)]
    return logits, masks, targets


def test_stage1_official_and_paper_weights():
    logits, masks, targets = _batch()
    labels = torch.tensor([2, 2])
    ce = (math.log(3.0) + (math.log(math.e + 1 + math.e**2) - 2.0)) / 2
    bce = math.log(2.0)
    dice = ((1 - (1e-3 + 1e-6) / (3e-3 + 1e-6)) + (1 - 1e-6 / (2e-3 + 1e-6))) / 2
    official = combine_losses(loss_preset("official", 1), logits, labels, masks, targets)
    assert official.total.item() == pytest.approx(ce + bce + dice, rel=1e-5)
    paper = combine_losses(loss_preset("paper", 1), logits, labels, masks, targets)
    assert paper.total.item() == pytest.approx(ce + 2.0 * bce + 0.5 * dice, rel=1e-5)
    assert paper.bce.item() == pytest.approx(2.0 * bce, rel=1e-5)


def test_mask_loss_only_when_batch_has_tampered_samples():
    logits, masks, targets = _batch()
    terms = combine_losses(loss_preset("official", 1), logits, torch.tensor([0, 1]), masks, targets)
    assert terms.mask.item() == 0.0
    assert terms.total.item() == pytest.approx(terms.cls.item())


def test_stage1_ignores_lm_loss_and_stage2_weights_it():
    logits, masks, targets = _batch()
    labels = torch.tensor([2, 2])
    lm = torch.tensor(3.0)
    stage1 = combine_losses(loss_preset("official", 1), logits, labels, masks, targets, lm_loss=lm)
    stage2 = combine_losses(loss_preset("official", 2), logits, labels, masks, targets, lm_loss=lm)
    assert stage2.total.item() == pytest.approx(3.0 + 0.5 * stage1.mask.item() + 0.5 * stage1.cls.item(), rel=1e-6)
    eq6 = combine_losses(loss_preset("paper", 2), logits, labels, masks, targets, lm_loss=lm)
    paper1 = combine_losses(loss_preset("paper", 1), logits, labels, masks, targets)
    assert eq6.total.item() == pytest.approx(paper1.total.item() + 3.0, rel=1e-6)


def test_total_backpropagates_to_logits_and_masks():
    logits, masks, targets = _batch()
    logits.requires_grad_(True)
    masks = [m.requires_grad_(True) for m in masks]
    combine_losses(loss_preset("official", 1), logits, torch.tensor([2, 2]), masks, targets).total.backward()
    assert logits.grad is not None and masks[0].grad is not None and masks[0].grad.abs().sum() > 0


def test_unknown_preset_is_a_user_error():
    with pytest.raises(UserError, match="official, paper"):
        loss_preset("lisa", 1)


def test_configurations_name_presets_of_the_single_table():
    from sida.config import CONFIGS, SidaConfig
    from sida.losses import LOSS_PRESETS, PRESET_NAMES

    assert PRESET_NAMES == ("official", "paper")
    assert all((stage, name) in LOSS_PRESETS for stage in (1, 2) for name in PRESET_NAMES)
    assert {cfg.loss_preset for cfg in CONFIGS.values()} == {"official"}
    with pytest.raises(ValueError, match="loss preset"):
        SidaConfig(loss_preset="lisa")
