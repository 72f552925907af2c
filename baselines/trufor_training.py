"""TruFor's training recipe: phase 2 (localization) and phase 3 (confidence + detection).

Source: ``TruFor_train_test`` of grip-unina/TruFor (``lib/config/trufor_ph2.yaml``,
``trufor_ph3.yaml``, ``aug_res_comp.yaml``, ``lib/core/criterion*.py``, ``lib/utils.py``).
Phase 1 (Noiseprint++ training) is not released, so Noiseprint++ is always frozen here.

- Phase 2 trains ``backbone`` + ``decode_head`` with ``0.3 · CE(weights [0.5, 2.5]) + 0.7 · dice``
  (binary dice of the forged-class softmax, exponent 2, smooth 0; padding pixels (-1) ignored).
- Phase 3 freezes those and trains ``decode_head_conf`` + ``detection`` with
  ``1.0 · MSE(sigmoid(conf), TCP) + 0.5 · BCE(det)``: TCP = the softmax of the true class where
  the ground truth is at least 7 px inside (erosion 15×15) or 5 px outside (dilation 11×11) the
  forged region; the detection target is "more than 3 forged pixels", weighted 0.5/0.7 (fake)
  and 0.5/0.3 (real).
- SGD (momentum 0.9, weight decay 5e-4 on conv/linear weights, none on norms and biases, as
  ``group_weight``), lr 0.005 with the poly schedule ``lr · (1 − it/total)^0.9`` per iteration,
  100 epochs, batch 18, 512² random crops (smaller images padded, padding ignored).
- Augmentation (``aug_res_comp.yaml``): random rescale by U[0.5, 1.5] (p 0.5, bilinear image,
  nearest mask) then JPEG with quality U{30..100} (p 0.5), before the crop. Each sample's
  randomness derives from (seed, sample id, epoch).
- After each epoch the ``validation`` split (never test) is scored: mean per-image F1 of
  ``map > 0.5`` on tampered images (phase 2) or the balanced detection accuracy (phase 3);
  ``OUT/best`` keeps the best. Frozen modules stay in eval mode (their BatchNorm statistics are
  not updated: our reading of ``FIX_MODULES``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from baselines.pscc_training import shuffled
from bench.errors import UserError
from bench.model import TrainOptions
from bench.perturbations.base import sample_rng
from bench.progress import make_progress
from bench.types import REAL, Sample

if TYPE_CHECKING:
    from baselines.trufor import TruFor

IGNORE = -1
SHUFFLE_BUFFER = 1000  # samples held when a dataset has no random access (the shared pscc_training.shuffled)
TRAINED = {2: ("backbone", "decode_head"), 3: ("decode_head_conf", "detection")}


@dataclass(frozen=True)
class TruForRecipe:
    """Hyper-parameters of ``trufor_ph2.yaml`` / ``trufor_ph3.yaml`` (module docstring)."""

    phase: int = 2
    epochs: int = 100
    lr: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    batch_size: int = 18
    crop: int = 512
    class_weights: tuple[float, float] = (0.5, 2.5)
    scale_limit: float = 0.5
    scale_p: float = 0.5
    jpeg_quality: tuple[int, int] = (30, 100)
    jpeg_p: float = 0.5
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.phase not in TRAINED:
            raise UserError(f"trufor training phase must be 2 or 3 (phase 1, Noiseprint++, is not released), "
                            f"got {self.phase!r}")


#: recipe per configuration name; others train with the official ``TruForRecipe()``. ``tiny``: 32² crops,
#: batch 4, at most 6 steps per run (seconds on a CPU), a larger lr so a few steps move the weights.
RECIPES: dict[str, TruForRecipe] = {"tiny": TruForRecipe(epochs=2, lr=0.05, batch_size=4, crop=32, max_steps=6)}


# ---------------------------------------------------------------------- losses
def dice_entropy(score: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``0.3 · CE + 0.7 · (1 − dice)`` of the forged class; ``target`` (B, H, W) in {-1, 0, 1}."""
    ce = F.cross_entropy(score, target, weight=weight, ignore_index=IGNORE)
    prob = torch.softmax(score, dim=1)[:, 1].flatten(1)
    t = (target == 1).float().flatten(1)
    valid = (target != IGNORE).float().flatten(1)
    num = 2 * (prob * t * valid).sum(dim=1)
    den = (prob.pow(2) * valid + t.pow(2) * valid).sum(dim=1) + 1e-5
    return 0.3 * ce + 0.7 * (1 - (num / den).mean())


def tcp_targets(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(certainly pristine, certainly forged) masks: not dilate(gt, 11×11), erode(gt, 15×15)."""
    gt = (target == 1).float()[:, None]
    forged = 1 - F.max_pool2d(1 - gt, 15, stride=1, padding=7)[:, 0]
    pristine = 1 - F.max_pool2d(gt, 11, stride=1, padding=5)[:, 0]
    return pristine, forged


def confidence_mse(score: torch.Tensor, target: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
    """MSE between ``sigmoid(conf)`` and the true-class probability on the certain, non-padding pixels."""
    pristine, forged = tcp_targets(target)
    prob = torch.softmax(score, dim=1)
    tcp = prob[:, 1] * forged + prob[:, 0] * pristine
    valid = (target != IGNORE) & ((forged > 0) | (pristine > 0))
    return F.mse_loss(torch.sigmoid(conf[:, 0])[valid], tcp[valid])


def detection_bce(det: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE of the image logit; fake iff more than 3 forged pixels; weights 0.5/0.7 (fake), 0.5/0.3 (real)."""
    fake = (torch.count_nonzero(target * (target >= 0), dim=(-1, -2)) > 3).float()
    weights = fake * 0.5 / 0.7 + (1 - fake) * 0.5 / 0.3
    return F.binary_cross_entropy_with_logits(det[:, 0], fake, weight=weights)


def poly_lr(base: float, it: int, total: int, power: float) -> float:
    """``base · (1 − it / total)^power`` (``adjust_learning_rate`` of lib/utils.py)."""
    return base * (1 - min(it, total) / total) ** power


# ---------------------------------------------------------------------- data
def augment(image: np.ndarray, mask: np.ndarray, recipe: TruForRecipe,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random rescale (p, U[1 − l, 1 + l]) then JPEG (p, quality U{lo..hi}); the mask follows the rescale."""
    if rng.random() < recipe.scale_p:
        f = rng.uniform(1 - recipe.scale_limit, 1 + recipe.scale_limit)
        h, w = image.shape[:2]
        size = (max(1, round(w * f)), max(1, round(h * f)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        mask = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
    if rng.random() < recipe.jpeg_p:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=int(rng.integers(recipe.jpeg_quality[0],
                                                                                 recipe.jpeg_quality[1] + 1)))
        image = np.asarray(Image.open(buf).convert("RGB"))
    return image, mask


def training_item(sample: Sample, recipe: TruForRecipe, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(image (3, c, c) / 256, target (c, c) int64 in {-1 padding, 0, 1}) from one sample."""
    assert sample.image is not None
    mask = np.zeros(sample.image.shape[:2], np.uint8) if sample.mask is None else sample.mask.astype(np.uint8)
    image, mask = augment(sample.image, mask, recipe, rng)
    c = recipe.crop
    h, w = mask.shape
    top, left = int(rng.integers(max(h - c, 0) + 1)), int(rng.integers(max(w - c, 0) + 1))
    img = np.zeros((c, c, 3), np.uint8)
    tgt = np.full((c, c), IGNORE, np.int64)
    piece = image[top:top + c, left:left + c]
    img[:piece.shape[0], :piece.shape[1]] = piece
    tgt[:piece.shape[0], :piece.shape[1]] = mask[top:top + c, left:left + c]
    return torch.from_numpy(img).permute(2, 0, 1).float().div_(256.0), torch.from_numpy(tgt)


def batches(train: Any, recipe: TruForRecipe, seed: int, epoch: int,
            batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Seeded shuffled (images, targets) batches of one epoch (undecodable samples are skipped)."""
    items: list[tuple[torch.Tensor, torch.Tensor]] = []
    for sample in shuffled(train, seed, epoch, SHUFFLE_BUFFER):
        if sample.image is None:
            continue
        items.append(training_item(sample, recipe, sample_rng(seed, sample.id, f"trufor_train/{epoch}")))
        if len(items) == batch_size:
            yield torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])
            items = []
    if items:
        yield torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])


def parameter_groups(model: torch.nn.Module, modules: tuple[str, ...], lr: float, wd: float) -> list[dict[str, Any]]:
    """``group_weight``: conv/linear weights with weight decay; norm parameters and biases without."""
    decay, no_decay = [], []
    for name in modules:
        for m in getattr(model, name).modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                decay.append(m.weight)
                no_decay += [m.bias] if m.bias is not None else []
            elif isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm)):
                no_decay += [m.weight, m.bias]
    return [{"params": decay, "lr": lr, "weight_decay": wd}, {"params": no_decay, "lr": lr, "weight_decay": 0.0}]


def validate(model: TruFor, val: Any, phase: int) -> float:
    """Phase 2: mean F1 of ``map > 0.5`` over tampered validation images; phase 3: balanced detection accuracy."""
    model.eval()
    f1s, hits = [], {0: [], 1: []}
    for sample in val.iter_samples():
        if sample.image is None:
            continue
        pred = model.predict([sample.image])[0]
        fake = int(sample.label != REAL)
        hits[fake].append(float(int(pred.probs[1] >= 0.5) == fake))
        if sample.mask is not None and pred.mask is not None:
            p, g = pred.mask > 0.5, sample.mask.astype(bool)
            tp = np.count_nonzero(p & g)
            den = 2 * tp + np.count_nonzero(p & ~g) + np.count_nonzero(~p & g)
            f1s.append(2 * tp / den if den else 1.0)
    if phase == 2:
        if not f1s:
            raise UserError("trufor phase 2 validation needs tampered images with masks in the validation split")
        return float(np.mean(f1s))
    present = [np.mean(v) for v in hits.values() if v]
    if not present:
        raise UserError("The validation split has no decodable images")
    return float(np.mean(present))


def train_trufor(model: TruFor, train: Any, val: Any, options: TrainOptions, recipe: TruForRecipe) -> dict[str, Any]:
    """Train ``model`` in place for the recipe's phase; returns a report (best/last paths, history)."""
    if getattr(val, "split", None) == "test":
        raise UserError("Model selection on the test split is not allowed")
    out = options.out_dir
    if (out / "last").exists() and not options.resume:
        raise UserError(f"{out} already holds a training run; choose another --out (trufor training does not resume)")
    if options.resume:
        raise UserError("trufor training cannot resume; start a new run in another --out")
    epochs = options.epochs if options.epochs is not None else recipe.epochs
    max_steps = options.max_steps if options.max_steps is not None else recipe.max_steps
    batch_size = options.batch_size or recipe.batch_size
    base_lr = options.lr if options.lr is not None else recipe.lr
    torch.manual_seed(options.seed)
    net = model.net
    trained = TRAINED[recipe.phase]
    for name, module in net.named_children():
        module.requires_grad_(name in trained)
    optimizer = torch.optim.SGD(parameter_groups(net, trained, base_lr, recipe.weight_decay), lr=base_lr,
                                momentum=recipe.momentum)
    weight = torch.tensor(recipe.class_weights, device=model.device)
    per_epoch = math.ceil(len(train) / batch_size)
    total = epochs * per_epoch if max_steps is None else min(epochs * per_epoch, max_steps)
    history: list[dict[str, float]] = []
    best_score, best_epoch, step = -1.0, -1, 0
    with make_progress() as progress:
        task = progress.add_task("train", total=total)
        for epoch in range(epochs):
            net.eval()
            for name in trained:
                getattr(net, name).train()
            losses = []
            for images, targets in batches(train, recipe, options.seed, epoch, batch_size):
                lr = poly_lr(base_lr, step, total, recipe.poly_power)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                losses.append(_step(model, optimizer, images, targets, weight, recipe.phase))
                step += 1
                progress.update(task, advance=1, description=f"trufor phase {recipe.phase} epoch {epoch + 1}/{epochs} "
                                                             f"loss {losses[-1]:.4f}")
                if step >= total:
                    break
            score = validate(model, val, recipe.phase)
            history.append({"epoch": float(epoch), "step": float(step), "train_loss": float(np.mean(losses)),
                            "val_score": score})
            record = {"training": {"phase": recipe.phase, "epoch": epoch, "step": step, "seed": options.seed,
                                   "recipe": asdict(recipe)}}
            if score >= best_score:
                best_score, best_epoch = score, epoch
                model.save(out / "best", record)
            model.save(out / "last", record)
            if step >= total:
                break
    net.requires_grad_(True)
    net.dncnn.requires_grad_(False)
    model.eval()
    return {"out_dir": str(out), "best": str(out / "best"), "last": str(out / "last"), "steps": step,
            "best_val_score": best_score, "best_epoch": best_epoch, "history": history, "batch_size": batch_size,
            "recipe": asdict(recipe), "trained_modules": list(trained)}


def _step(model: TruFor, optimizer: torch.optim.Optimizer, images: torch.Tensor, targets: torch.Tensor,
          weight: torch.Tensor, phase: int) -> float:
    optimizer.zero_grad(set_to_none=True)
    out, conf, det, _ = model.net(images.to(model.device))
    targets = targets.to(model.device)
    if phase == 2:
        loss = dice_entropy(out, targets, weight)
    else:
        loss = confidence_mse(out, targets, conf) + 0.5 * detection_bce(det, targets)
    value = loss.detach().item()
    if not math.isfinite(value):
        raise UserError(f"Training diverged: loss {value}")
    loss.backward()
    optimizer.step()
    return value
