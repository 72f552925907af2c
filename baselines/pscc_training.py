"""PSCC-Net's training recipe (official ``train.py``, ``utils/config.py``, ``utils/load_tdata.py``).

Per image: resize to crop_size² (256², PIL bicubic) when the size differs, the mask likewise
(bicubic on 0/255, then > 0.5), one of the 8 dihedral transforms (rotations by 0/90/180/270°
counter-clockwise, each with or without a top-bottom flip), and ground-truth masks at 1, 1/2, 1/4
and 1/8 of the crop (PIL bicubic downscale of the 0/255 mask, then > 0.5). No mean/std.

Targets: detection label ``fake = label != 0`` (the official ``cls[cls != 0] = 1``; on SID-Set both
fully synthetic and tampered images are fake) or the ternary label with ``num_classes=3``. Masks
come from ``Sample.mask``; a sample without one (real, fully synthetic) gets an all-zero mask.

Loss: the sum over the 4 scales of the pixel-mean BCE weighted per batch by class balance
(forged pixels 0.5/p, authentic 0.5/(1-p), p = forged fraction; weights 1 when no pixel is forged)
plus the class-weighted cross-entropy of the detection head, weights 1/ratio_c. The official run
samples authentic:forged = 1:3, i.e. weights (4, 4/3); here ratios follow the dataset's label space
(SID-Set: 1/3 real, 2/3 fake → (3, 1.5)) unless ``class_ratios`` is given.

Optimisation: Adam, lr ``lr_strategy[epoch // max(1, epochs // 5)]`` = 2e-4, 1e-4, 5e-5, 2.5e-5,
1.25e-5 over 25 epochs (``--lr`` rescales the whole strategy), batch size 10. After every epoch the
``validation`` split (never test) is scored with the official criterion, (pixel accuracy of
mask > 0.5 + detection accuracy) / 2, at the model's inference resolution; ``OUT/best`` keeps the
best (ties go to the later epoch, as the official ``>=``). ``patience`` (None officially) stops
after that many epochs without improvement. An official epoch draws 100k samples with replacement;
here an epoch is one seeded shuffled pass over the ``train`` split.

``OUT/last`` holds the latest weights plus ``trainer_state.pt`` (optimizer, epoch, batches done in
that epoch, history); ``--resume`` continues exactly where it stopped (the epoch's order and every
augmentation derive from (seed, epoch, sample id), so the skipped batches are replayed identically).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from bench.checkpoint import TRAINER_STATE, load_strict, resume_run
from bench.errors import UserError
from bench.model import TrainOptions
from bench.perturbations.base import sample_rng
from bench.progress import make_progress
from bench.types import LabelSpace, Sample

if TYPE_CHECKING:
    from baselines.pscc_net import PSCCNet



@dataclass(frozen=True)
class PSCCRecipe:
    """Hyper-parameters of the official training (module docstring)."""

    epochs: int = 25
    lr_strategy: tuple[float, ...] = (2e-4, 1e-4, 5e-5, 2.5e-5, 1.25e-5)
    batch_size: int = 10
    class_ratios: tuple[float, ...] | None = None  # None: uniform over the dataset's label space
    patience: int | None = None
    shuffle_buffer: int = 1000
    max_steps: int | None = None  # None officially; ``--max-steps`` overrides
    random_crop: bool = False  # official False: resize to crop_size²; True: a seeded crop_size² window
    bn_momentum: float | None = None  # None: the network's own (official 0.01)
    val_batch_size: int = 32  # validation images predicted together (same size only)


#: recipe per configuration name; configurations not listed train with the official ``PSCCRecipe()``.
#: ``tiny`` (sid-mini-sized, ~1 CPU-minute): 2 epochs capped at 150 steps of 16 random 64² windows
#: (no resampling, so the pixel-level traces survive), 10x the official learning rate, and BatchNorm
#: momentum 0.1 so the running statistics settle within so few steps.
RECIPES: dict[str, PSCCRecipe] = {
    "tiny": PSCCRecipe(epochs=2, lr_strategy=(2e-3, 1e-3), batch_size=16, max_steps=150, random_crop=True,
                       bn_momentum=0.1),
}


@dataclass
class TrainState:
    """Progress saved beside ``OUT/last`` (plain types, loadable with weights_only=True)."""

    epoch: int = 0
    batches_done: int = 0  # optimizer steps taken in ``epoch`` (for an exact mid-epoch resume)
    step: int = 0
    best_score: float = -1.0
    best_epoch: int = -1
    bad_epochs: int = 0
    skipped_samples: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


# ---------------------------------------------------------------------- data
def dihedral(array: np.ndarray, index: int) -> np.ndarray:
    """Official ``data_aug``: rotate ``index % 4`` × 90° counter-clockwise, then flip top-bottom if index ≥ 4."""
    out = np.rot90(array, index % 4)
    return np.array(out[::-1] if index >= 4 else out)  # a writable, contiguous copy


def _bicubic(array: np.ndarray, size: int) -> np.ndarray:
    if array.shape[:2] == (size, size):
        return array
    return np.asarray(Image.fromarray(array).resize((size, size), resample=Image.Resampling.BICUBIC))


def mask_pyramid(mask: np.ndarray) -> list[torch.Tensor]:
    """A uint8 0/255 (S, S) mask → float 0/1 masks at S, S/2, S/4, S/8 (bicubic downscale, > 0.5)."""
    s = mask.shape[0]
    out = [torch.from_numpy((mask > 127.5).astype(np.float32))]
    for k in (1, 2, 3):
        small = np.asarray(Image.fromarray(mask).resize((s >> k, s >> k), resample=Image.Resampling.BICUBIC))
        out.append(torch.from_numpy((small > 127.5).astype(np.float32)))
    return out


def training_item(
    image: np.ndarray, mask: np.ndarray | None, size: int, aug_index: int,
    corner: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """RGB uint8 image + bool mask (None = nothing forged) → (image (3, S, S) float RGB/255,
    [mask (S, S), (S/2)², (S/4)², (S/8)²] float 0/1). ``corner`` = (top, left): take the S×S
    window there instead of resizing (the image must be at least S×S)."""
    mask = np.zeros(image.shape[:2], np.uint8) if mask is None else mask.astype(np.uint8) * 255
    if corner is not None:
        top, left = corner
        image, mask = image[top:top + size, left:left + size], mask[top:top + size, left:left + size]
    image = _bicubic(image, size)
    mask = _bicubic(mask, size)
    image, mask = dihedral(image, aug_index), dihedral(mask, aug_index)
    tensor = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
    return tensor, mask_pyramid(mask)


def detection_target(label: int, num_classes: int) -> int:
    if num_classes == 2:
        return int(label != 0)
    if not 0 <= label < num_classes:
        raise UserError(f"Label {label} does not fit a {num_classes}-class head")
    return int(label)


def class_weights(recipe: PSCCRecipe, train: Any, num_classes: int) -> torch.Tensor:
    """1 / class ratio; ratios default to uniform over the dataset's labels mapped to the head's classes."""
    if recipe.class_ratios is not None:
        ratios = np.asarray(recipe.class_ratios, dtype=np.float64)
    else:
        space = getattr(train, "label_space", LabelSpace.TERNARY)
        labels = range(LabelSpace(space).num_classes)
        ratios = np.bincount([detection_target(y, num_classes) for y in labels], minlength=num_classes) / len(labels)
    if len(ratios) != num_classes or (ratios <= 0).any():
        raise UserError(f"class_ratios must be {num_classes} positive numbers, got {ratios.tolist()}")
    return torch.tensor(1.0 / ratios, dtype=torch.float32)


# ---------------------------------------------------------------------- loss
def balanced_bce(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel-mean BCE with per-batch class balancing (official ``mask*_balance``)."""
    n = target.numel()
    pos = target.sum()
    weight = torch.ones_like(target)
    if pos > 0:
        pos_w = 0.5 / (pos / n)
        neg_w = 0.5 / ((n - pos).clamp(min=1) / n)
        weight = torch.where(target > 0.5, pos_w, neg_w)
    return (F.binary_cross_entropy(pred.float(), target, reduction="none") * weight).mean()


def pscc_loss(
    masks: tuple[torch.Tensor, ...], logits: torch.Tensor, gt_masks: list[torch.Tensor], labels: torch.Tensor,
    ce_weight: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(segmentation loss summed over 4 scales, weighted cross-entropy)."""
    seg = torch.stack([balanced_bce(p[:, 0], g) for p, g in zip(masks, gt_masks)]).sum()
    return seg, F.cross_entropy(logits.float(), labels, weight=ce_weight)


# ---------------------------------------------------------------------- validation
def _chunks(samples: Iterator[Sample], size: int) -> Iterator[list[Sample]]:
    chunk: list[Sample] = []
    for sample in samples:
        chunk.append(sample)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def validate(model: PSCCNet, val: Any, batch_size: int = 32) -> dict[str, float]:
    """Official score on ``val``: (pixel accuracy of mask > 0.5 + detection accuracy) / 2.
    Images are predicted ``batch_size`` at a time (the model batches equal sizes together)."""
    model.eval()
    pix_ok = pix_total = cls_ok = cls_total = 0
    for chunk in _chunks((s for s in val.iter_samples() if s.image is not None), batch_size):
        for sample, pred in zip(chunk, model.predict([s.image for s in chunk])):
            gt = np.zeros(sample.image.shape[:2], bool) if sample.mask is None else sample.mask
            assert pred.mask is not None
            pix_ok += int(((pred.mask > 0.5) == gt).sum())
            pix_total += gt.size
            cls_ok += int(pred.predicted_class == detection_target(sample.label, model.num_classes))
            cls_total += 1
    if cls_total == 0:
        raise UserError("The validation split has no decodable images")
    pix_acc, cls_acc = pix_ok / pix_total, cls_ok / cls_total
    return {"val_score": (pix_acc + cls_acc) / 2, "val_pixel_acc": pix_acc, "val_cls_acc": cls_acc}


# ---------------------------------------------------------------------- loop
def lr_at(recipe: PSCCRecipe, epoch: int, epochs: int, base_lr: float | None) -> float:
    """Official step schedule (``adjust_learning_rate``), the strategy rescaled to ``base_lr`` if given."""
    step = max(1, epochs // len(recipe.lr_strategy))
    lr = recipe.lr_strategy[min(epoch // step, len(recipe.lr_strategy) - 1)]
    return lr * (base_lr / recipe.lr_strategy[0]) if base_lr is not None else lr


def shuffled(dataset: Any, seed: int, epoch: int, buffer: int) -> Iterator[Sample]:
    """The samples of ``dataset`` in a seeded order: a full permutation when it has random access
    (``__getitem__``), else a shuffle buffer of ``buffer`` samples over ``iter_samples()``."""
    rng = np.random.default_rng([seed, epoch])
    if hasattr(dataset, "__getitem__"):
        for i in rng.permutation(len(dataset)):
            yield dataset[int(i)]
        return
    pool: list[Sample] = []
    for sample in dataset.iter_samples():
        pool.append(sample)
        if len(pool) >= buffer:
            yield pool.pop(int(rng.integers(len(pool))))
    while pool:
        yield pool.pop(int(rng.integers(len(pool))))


Batch = tuple[torch.Tensor, list[torch.Tensor], torch.Tensor, int]


def batches(model: PSCCNet, train: Any, seed: int, epoch: int, recipe: PSCCRecipe, batch_size: int) -> Iterator[Batch]:
    """Seeded shuffled batches of (images, [4 mask scales], labels, undecodable samples met since the last batch)."""
    size = model.config.crop_size
    items: list[tuple[torch.Tensor, list[torch.Tensor], int]] = []
    skipped = 0
    for sample in shuffled(train, seed, epoch, recipe.shuffle_buffer):
        if sample.image is None:
            skipped += 1
            continue
        rng = sample_rng(seed, sample.id, f"pscc_train/{epoch}")
        aug = int(rng.integers(8))
        h, w = sample.image.shape[:2]
        corner = None
        if recipe.random_crop and min(h, w) >= size:
            corner = (int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1)))
        image, masks = training_item(sample.image, sample.mask, size, aug, corner)
        items.append((image, masks, detection_target(sample.label, model.num_classes)))
        if len(items) == batch_size:
            yield (*_collate(items), skipped)
            items, skipped = [], 0
    if items:
        yield (*_collate(items), skipped)


def _collate(
    items: list[tuple[torch.Tensor, list[torch.Tensor], int]],
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    images = torch.stack([i for i, _, _ in items])
    masks = [torch.stack([m[k] for _, m, _ in items]) for k in range(4)]
    return images, masks, torch.tensor([y for _, _, y in items], dtype=torch.long)


def train_pscc(model: PSCCNet, train: Any, val: Any, options: TrainOptions,
               recipe: PSCCRecipe = PSCCRecipe()) -> dict[str, Any]:
    """Train ``model`` in place; returns a report (best/last paths, steps, history)."""
    if getattr(val, "split", None) == "test":
        raise UserError("Model selection on the test split is not allowed")
    out: Path = options.out_dir
    last, best = out / "last", out / "best"
    epochs = options.epochs if options.epochs is not None else recipe.epochs
    max_steps = options.max_steps if options.max_steps is not None else recipe.max_steps
    batch_size = options.batch_size or recipe.batch_size
    torch.manual_seed(options.seed)
    if model.weights_path is None:
        model.reinitialise(options.seed)
    net = model.net
    if recipe.bn_momentum is not None:
        for module in net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.momentum = recipe.bn_momentum
    optimizer = torch.optim.Adam(net.parameters(), lr=lr_at(recipe, 0, epochs, options.lr))
    ce_weight = class_weights(recipe, train, model.num_classes).to(model.device)
    state = TrainState()
    resumed = resume_run(out, options.resume)
    if resumed is not None:
        weights, saved = resumed
        load_strict(net, weights, last)
        optimizer.load_state_dict(saved["optimizer"])
        state = TrainState(**saved["state"])

    stopped = ""
    with make_progress() as progress:
        per_epoch = math.ceil(len(train) / batch_size)
        total = epochs * per_epoch if max_steps is None else min(epochs * per_epoch, max_steps)
        task = progress.add_task("train", total=total, completed=state.step)
        while state.epoch < epochs and not stopped:
            if max_steps is not None and state.step >= max_steps:
                stopped = "max_steps"
                break
            lr = lr_at(recipe, state.epoch, epochs, options.lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            net.train()
            losses: list[float] = []
            epoch_batches = batches(model, train, options.seed, state.epoch, recipe, batch_size)
            for b, (images, gt_masks, labels, skipped) in enumerate(epoch_batches):
                if b < state.batches_done:
                    continue  # replayed on resume: same order, same augmentation
                state.skipped_samples += skipped
                loss = _step(model, optimizer, images, gt_masks, labels, ce_weight)
                state.step += 1
                state.batches_done += 1
                losses.append(loss)
                description = f"pscc_net epoch {state.epoch + 1}/{epochs} loss {loss:.4f}"
                progress.update(task, advance=1, description=description)
                if max_steps is not None and state.step >= max_steps:
                    stopped = "max_steps"
                    break
            metrics = validate(model, val, recipe.val_batch_size)
            metrics.update(epoch=float(state.epoch), step=float(state.step), lr=lr,
                           train_loss=float(np.mean(losses)) if losses else float("nan"))
            state.history.append(metrics)
            if not stopped:
                state.epoch, state.batches_done = state.epoch + 1, 0
            if metrics["val_score"] >= state.best_score:
                state.best_score, state.best_epoch, state.bad_epochs = metrics["val_score"], int(metrics["epoch"]), 0
                model.save(best, {"training": _record(state, options, recipe)})
            elif not stopped:
                state.bad_epochs += 1
                if recipe.patience is not None and state.bad_epochs >= recipe.patience:
                    stopped = "early_stop"
            model.save(last, {"training": _record(state, options, recipe)})
            torch.save({"optimizer": optimizer.state_dict(), "state": asdict(state)}, last / TRAINER_STATE)
    model.eval()
    return {
        "out_dir": str(out), "best": str(best), "last": str(last), "epoch": state.epoch, "steps": state.step,
        "best_val_score": state.best_score, "best_epoch": state.best_epoch, "stopped": stopped or "epochs",
        "skipped_samples": state.skipped_samples, "history": state.history, "batch_size": batch_size,
        "class_weights": ce_weight.tolist(), "recipe": asdict(recipe),
    }


def _step(model: PSCCNet, optimizer: torch.optim.Optimizer, images: torch.Tensor, gt_masks: list[torch.Tensor],
          labels: torch.Tensor, ce_weight: torch.Tensor) -> float:
    device = model.device
    optimizer.zero_grad(set_to_none=True)
    masks, logits = model.net(images.to(device))
    seg, cls = pscc_loss(masks, logits, [m.to(device) for m in gt_masks], labels.to(device), ce_weight)
    loss = seg + cls
    value = loss.detach().item()
    if not math.isfinite(value):
        raise UserError(f"Training diverged: loss {value}")
    loss.backward()
    optimizer.step()
    return value


def _record(state: TrainState, options: TrainOptions, recipe: PSCCRecipe) -> dict[str, Any]:
    return {"epoch": state.epoch, "step": state.step, "seed": options.seed, "best_val_score": state.best_score,
            "best_epoch": state.best_epoch, "recipe": asdict(recipe)}
