"""IMDLBenCo's MVSS-Net training recipe: a labelled **non-official** recipe.

MVSS-Net's authors released no training code (dong03/MVSS-Net issues #5, #24, #32). IMDLBenCo
(scu-zjz/IMDLBenCo, the ``MVSSNet`` of its model zoo) publishes a retraining recipe; this module
re-writes it. Sources, named in the comments by these short names: ``mvssnet.py``
(``IMDLBenCo/model_zoo/mvss_net/mvssnet.py``: the loss), ``demo_train_mvss.sh``
(``IMDLBenCo/statics/model_zoo/runs/``: the arguments), ``train.py``, ``trainer.py`` and
``cos_lr_schedular.py`` (``IMDLBenCo/training_scripts/``: augmentation, optimizer, schedule,
accumulation, selection), ``abstract_dataset.py``, ``edge_mask_generator.py`` and
``iml_transforms.py`` (``IMDLBenCo/datasets|transforms/``: targets and resizing).

Targets, per image, after augmentation and at the augmented image's own resolution:
- mask: ``Sample.mask``; an image without one (real, fully synthetic) gets an all-zero mask, as in
  ``pscc_training`` and ``trufor_training``;
- image label: 1 iff the mask has a forged pixel (``abstract_dataset.py`` recomputes it after
  augmentation, so a copy-move augmentation makes a real image fake). A fully synthetic image is
  therefore label 0 with an empty mask, like ``trufor_training.detection_bce`` (PSCC-Net's separate
  detection head learns ``label != 0`` instead; MVSS-Net's image score is the maximum of its mask, so
  label 1 with an empty target mask would contradict the segmentation loss);
- edge: ``dilate(mask) ∧ dilate(¬mask)`` with a plus-shaped structuring element 7 px wide (arm
  3 px) and zero padding (``EdgeMaskGenerator(7)``), so the image border is no edge.
Then the image goes through the model's own input policy (BGR, cv2 bilinear resize to S², ImageNet
mean/std) and both masks are resized nearest-neighbour to S² (``albu.Resize``).

Loss (``predict_loss`` with ``if_label=True``, the constructor default ``train.py`` keeps): with
``p = sigmoid(seg)`` (S²) and ``e = sigmoid(edge)`` upsampled bilinearly (align_corners=True) to S²,
``0.16 · dice(p, mask) + 0.04 · BCEWithLogits(max p, label) + 0.80 · dice(e, edge)``, where
``dice(x, g) = 1 − (2 Σxg + 1) / (Σg² + Σx² + 1)`` over the whole micro-batch (not per image). The
classification term feeds a probability (the global max of ``p``) to BCE-*with-logits*: an
IMDLBenCo quirk kept as published (its "probability" is ``sigmoid(max p) ∈ [0.5, 0.731]``).

Optimisation: AdamW, betas (0.9, 0.999), weight decay 0.05 except on 1-d parameters and biases
(timm ``create_optimizer``); micro-batch 1, gradients accumulated over 8 micro-batches (effective
batch 8); lr per optimizer step at the fractional epoch ``t``: linear warm-up ``2e-5 · t / 2`` for
2 epochs, then half-cosine from 2e-5 to 5e-7 at epoch 200; fp32 (``--if_not_amp``). An epoch is one
seeded shuffled pass over ``train`` with ``floor(N / 8)`` optimizer steps (IMDLBenCo computes and
then discards the gradients of the remaining images: ``optimizer.zero_grad()`` after each epoch).

Augmentation (``train.py``'s ``train_transform``, in this order): rescale by U[0.8, 1.2] (p 1,
bilinear image, nearest mask), copy-move (p 0.1) and inpainting (p 0.1, cv2 Telea or Navier-Stokes)
of a random window of 5-80 % of each side, marked forged in the mask; horizontal and vertical
flips (p 0.5 each); brightness and contrast ±0.1 (p 1); JPEG quality U{70..100} (p 0.2); a random
multiple of 90° rotation (p 0.5); Gaussian blur with a 3, 5 or 7 px kernel (p 0.2). Each sample's
randomness derives from (seed, sample id, epoch); dropout is seeded per optimizer step.

Selection: every 4th epoch (0, 4, …) and the last, the ``validation`` split (never test) is scored
with IMDLBenCo's ``PixelF1(threshold=0.5, mode="origin")``: the mean over tampered images (those
with a forged pixel) of the per-image F1 of ``mask > 0.5``; ``OUT/best`` keeps the best
(strictly greater, as ``train.py``) among validations after epoch 20, or the run's final one.

Deviations: the network input is the plugin's official BGR policy (IMDLBenCo loads RGB with PIL
into a network whose ``rgb2gray`` reads channel 0 as blue), so a trained checkpoint is evaluated
as it was trained; validation runs in eval mode at the image's resolution through ``predict``
(IMDLBenCo: ``--no_model_eval``, at 512²); IMDLBenCo selects on its test set (CASIA v1), we on
``validation``; ``OUT/last`` is written every epoch with ``trainer_state.pt`` (optimizer, epoch,
optimizer steps done in it, history) and ``--resume`` continues exactly, even mid-epoch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import binary_dilation

from baselines.pscc_training import shuffled
from bench.checkpoint import TRAINER_STATE, load_strict, resume_run
from bench.errors import UserError
from bench.model import TrainOptions
from bench.perturbations.base import sample_rng
from bench.progress import make_progress
from bench.types import Sample

if TYPE_CHECKING:
    from baselines.mvss_net import MVSSNet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MVSSRecipe:
    """IMDLBenCo's MVSS-Net recipe (module docstring); each default names its source."""

    name: str = "imdlbenco (non-official)"  # recorded in the report and every checkpoint
    epochs: int = 200  # demo_train_mvss.sh --epochs 200
    lr: float = 2e-5  # demo_train_mvss.sh --lr 2e-5 (absolute: --blr is then unused)
    min_lr: float = 5e-7  # demo_train_mvss.sh --min_lr 5e-7
    warmup_epochs: float = 2.0  # demo_train_mvss.sh --warmup_epochs 2
    weight_decay: float = 0.05  # demo_train_mvss.sh --weight_decay 0.05
    betas: tuple[float, float] = (0.9, 0.999)  # train.py args.betas, args.opt = 'AdamW'
    batch_size: int = 1  # demo_train_mvss.sh --batch_size 1 (micro-batch)
    accum_iter: int = 8  # demo_train_mvss.sh --accum_iter 8
    edge_width: int = 7  # demo_train_mvss.sh --edge_mask_width 7
    seg_weight: float = 0.16  # mvssnet.py predict_loss: alpha
    clf_weight: float = 0.04  # mvssnet.py predict_loss: beta (if_label=True); edge: 1 - alpha - beta
    dice_smooth: float = 1.0  # mvssnet.py dice_loss(smooth=1.0)
    scale_limit: float = 0.2  # train.py RandomScale(scale_limit=0.2, p=1)
    copy_move_p: float = 0.1  # train.py RandomCopyMove(p=0.1)
    inpaint_p: float = 0.1  # train.py RandomInpainting(p=0.1)
    window: tuple[float, float] = (0.05, 0.8)  # iml_transforms.py min_h/min_w, max_h/max_w defaults
    hflip_p: float = 0.5  # train.py HorizontalFlip(p=0.5)
    vflip_p: float = 0.5  # train.py VerticalFlip(p=0.5)
    brightness_limit: float = 0.1  # train.py RandomBrightnessContrast(brightness_limit=(-0.1, 0.1), p=1)
    contrast_limit: float = 0.1  # train.py RandomBrightnessContrast(contrast_limit=0.1)
    jpeg_p: float = 0.2  # train.py ImageCompression(p=0.2)
    jpeg_quality: tuple[int, int] = (70, 100)  # train.py ImageCompression(quality_lower=70, quality_upper=100)
    rot90_p: float = 0.5  # train.py RandomRotate90(p=0.5)
    blur_p: float = 0.2  # train.py GaussianBlur(p=0.2)
    blur_kernel: tuple[int, int] = (3, 7)  # train.py GaussianBlur(blur_limit=(3, 7)); odd sizes, sigma from size
    test_period: int = 4  # demo_train_mvss.sh --test_period 4
    best_after_epoch: int = 20  # train.py: "Save the best only after 20 epoch" (epoch > 20)
    f1_threshold: float = 0.5  # train.py PixelF1(threshold=0.5, mode="origin")
    val_batch_size: int = 2  # train.py --test_batch_size default 2
    imagenet_init: bool = True  # mvssnet.py: both ResNet-50 streams start from ImageNet (resnet50-19c8e357.pth)
    max_steps: int | None = None  # None in IMDLBenCo; --max-steps overrides
    shuffle_buffer: int = 1000  # samples held when a dataset has no random access

    @property
    def edge_weight(self) -> float:
        return 1.0 - self.seg_weight - self.clf_weight


#: recipe per configuration name; others train with IMDLBenCo's ``MVSSRecipe()``. ``tiny`` (the 64²
#: network on sid-mini, seconds on a CPU): the same targets, losses and augmentation; micro-batch 4
#: without accumulation, lr 1e-3 (50× IMDLBenCo) without warm-up, 2 epochs capped at 40 optimizer
#: steps, validation every epoch, every validation a selection candidate, random initialisation.
RECIPES: dict[str, MVSSRecipe] = {
    "tiny": MVSSRecipe(name="imdlbenco (non-official), tiny budget", epochs=2, lr=1e-3, min_lr=1e-5,
                       warmup_epochs=0.0, batch_size=4, accum_iter=1, test_period=1, best_after_epoch=-1,
                       val_batch_size=16, imagenet_init=False, max_steps=40),
}


@dataclass
class TrainState:
    """Progress saved beside ``OUT/last`` (plain types, loadable with weights_only=True)."""

    epoch: int = 0
    batches_done: int = 0  # optimizer steps taken in ``epoch`` (for an exact mid-epoch resume)
    step: int = 0
    best_score: float = -1.0
    best_epoch: int = -1
    skipped_samples: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


# ---------------------------------------------------------------------- targets
def cross(width: int) -> np.ndarray:
    """The plus-shaped ``width × width`` structuring element of ``EdgeMaskGenerator`` (width odd)."""
    if width < 1 or width % 2 == 0:
        raise UserError(f"edge_width must be a positive odd number, got {width}")
    element = np.zeros((width, width), bool)
    element[width // 2, :] = element[:, width // 2] = True
    return element


def edge_target(mask: np.ndarray, width: int) -> np.ndarray:
    """Boolean (H, W) band around the mask boundary: ``dilate(mask) ∧ dilate(¬mask)``, cross element,
    pixels outside the image neither forged nor pristine (zero padding of both dilations)."""
    element = cross(width)
    mask = mask.astype(bool)
    return binary_dilation(mask, element, border_value=0) & binary_dilation(~mask, element, border_value=0)


# ---------------------------------------------------------------------- augmentation
def _window(h: int, w: int, recipe: MVSSRecipe, rng: np.random.Generator) -> tuple[int, int]:
    """A window size of ``RandomCopyMove`` / ``RandomInpainting``: each side in [5 %, 80 %) of the image."""
    lo, hi = recipe.window
    sizes = []
    for n in (h, w):
        low = max(1, int(n * lo))
        sizes.append(min(int(rng.integers(low, max(low + 1, int(n * hi)))), n))
    return sizes[0], sizes[1]


def _corner(h: int, w: int, wh: int, ww: int, rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(h - wh + 1)), int(rng.integers(w - ww + 1))


def augment(image: np.ndarray, mask: np.ndarray, recipe: MVSSRecipe,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``train.py``'s ``train_transform`` on an RGB uint8 image and a uint8 0/255 mask (module docstring)."""
    scale = rng.uniform(1 - recipe.scale_limit, 1 + recipe.scale_limit)
    h, w = image.shape[:2]
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    h, w = mask.shape
    if rng.random() < recipe.copy_move_p:
        wh, ww = _window(h, w, recipe, rng)
        (sy, sx), (ty, tx) = _corner(h, w, wh, ww, rng), _corner(h, w, wh, ww, rng)
        image = image.copy()
        image[ty:ty + wh, tx:tx + ww] = image[sy:sy + wh, sx:sx + ww].copy()
        mask = mask.copy()
        mask[ty:ty + wh, tx:tx + ww] = 255
    if rng.random() < recipe.inpaint_p:
        wh, ww = _window(h, w, recipe, rng)
        ty, tx = _corner(h, w, wh, ww, rng)
        flag = cv2.INPAINT_TELEA if rng.random() > 0.5 else cv2.INPAINT_NS
        hole = np.zeros((h, w), np.uint8)
        hole[ty:ty + wh, tx:tx + ww] = 1
        image = cv2.inpaint(np.ascontiguousarray(image), hole, 3, flag)
        mask = mask.copy()
        mask[ty:ty + wh, tx:tx + ww] = 255
    if rng.random() < recipe.hflip_p:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if rng.random() < recipe.vflip_p:
        image, mask = image[::-1], mask[::-1]
    alpha = 1.0 + rng.uniform(-recipe.contrast_limit, recipe.contrast_limit)
    beta = rng.uniform(-recipe.brightness_limit, recipe.brightness_limit)
    lut = np.clip(np.arange(256, dtype=np.float32) * alpha + beta * 255.0, 0, 255).astype(np.uint8)
    image = lut[image]
    if rng.random() < recipe.jpeg_p:
        quality = int(rng.integers(recipe.jpeg_quality[0], recipe.jpeg_quality[1] + 1))
        ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image), [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise UserError("JPEG augmentation failed to encode an image")
        image = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if rng.random() < recipe.rot90_p:
        k = int(rng.integers(4))
        image, mask = np.rot90(image, k), np.rot90(mask, k)
    if rng.random() < recipe.blur_p:
        k = int(rng.choice(np.arange(recipe.blur_kernel[0], recipe.blur_kernel[1] + 1, 2)))
        image = cv2.GaussianBlur(np.ascontiguousarray(image), (k, k), 0)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


class Item(NamedTuple):
    image: torch.Tensor  # (3, S, S) float32: the model's preprocess of the augmented image
    mask: torch.Tensor  # (S, S) float32 0/1
    edge: torch.Tensor  # (S, S) float32 0/1
    label: float  # 1.0 iff the augmented mask has a forged pixel


def training_item(model: MVSSNet, sample: Sample, recipe: MVSSRecipe, rng: np.random.Generator) -> Item:
    """Augment one decoded sample and build its targets at the network resolution (module docstring)."""
    assert sample.image is not None
    mask = np.zeros(sample.image.shape[:2], np.uint8) if sample.mask is None else sample.mask.astype(np.uint8) * 255
    image, mask = augment(sample.image, mask, recipe, rng)
    forged = mask > 127
    edge = edge_target(forged, recipe.edge_width)
    s = model.config.input_size

    def nearest(m: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(cv2.resize(m.astype(np.uint8), (s, s), interpolation=cv2.INTER_NEAREST)).float()

    return Item(model.preprocess(image), nearest(forged), nearest(edge), float(forged.any()))


def sample_groups(train: Any, seed: int, epoch: int, size: int, buffer: int) -> Iterator[tuple[list[Sample], int]]:
    """(``size`` decodable samples, undecodable ones met on the way) in the epoch's seeded order; an
    incomplete last group is dropped and only its undecodable count is yielded (with no samples)."""
    group: list[Sample] = []
    skipped = 0
    for sample in shuffled(train, seed, epoch, buffer):
        if sample.image is None:
            skipped += 1
            continue
        group.append(sample)
        if len(group) == size:
            yield group, skipped
            group, skipped = [], 0
    if skipped:
        yield [], skipped


# ---------------------------------------------------------------------- loss
def dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """``1 − (2 Σ p·g + smooth) / (Σ g² + Σ p² + smooth)`` over every element of the batch."""
    p, g = prob.flatten(), target.flatten()
    return 1.0 - (2.0 * (p * g).sum() + smooth) / (g.square().sum() + p.square().sum() + smooth)


class MVSSLoss(NamedTuple):
    total: torch.Tensor
    seg: torch.Tensor
    edge: torch.Tensor
    clf: torch.Tensor


def mvss_loss(edge_logits: torch.Tensor, seg_logits: torch.Tensor, mask: torch.Tensor, edge: torch.Tensor,
              label: torch.Tensor, recipe: MVSSRecipe) -> MVSSLoss:
    """IMDLBenCo's ``predict_loss``: edge logits (B, 1, h, w), seg logits (B, 1, S, S), mask and edge
    targets (B, S, S) in {0, 1}, labels (B,) in {0, 1}."""
    size = seg_logits.shape[-2:]
    prob = torch.sigmoid(seg_logits.float())
    edge_prob = torch.sigmoid(F.interpolate(edge_logits.float(), size=size, mode="bilinear", align_corners=True))
    seg = dice_loss(prob[:, 0], mask, recipe.dice_smooth)
    edg = dice_loss(edge_prob[:, 0], edge, recipe.dice_smooth)
    clf = F.binary_cross_entropy_with_logits(prob.flatten(1).max(dim=1).values, label)  # max of probabilities
    total = recipe.seg_weight * seg + recipe.clf_weight * clf + recipe.edge_weight * edg
    return MVSSLoss(total, seg, edg, clf)


# ---------------------------------------------------------------------- schedule and optimizer
def lr_at(recipe: MVSSRecipe, t: float, epochs: int, peak: float) -> float:
    """``cos_lr_schedular.adjust_learning_rate`` at the fractional epoch ``t``."""
    if t < recipe.warmup_epochs:
        return peak * t / recipe.warmup_epochs
    progress = (t - recipe.warmup_epochs) / (epochs - recipe.warmup_epochs)
    return recipe.min_lr + (peak - recipe.min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def parameter_groups(net: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """timm's filter: no weight decay on 1-d parameters (norms, attention scales) and biases; frozen
    parameters (the Sobel kernels) are left out."""
    decay, no_decay = [], []
    for name, param in net.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# ---------------------------------------------------------------------- validation
def pixel_f1(pred: np.ndarray, gt: np.ndarray, threshold: float = 0.5) -> float:
    """IMDLBenCo's per-image ``PixelF1`` (mode origin): P, R and F1 with 1e-8 in each denominator."""
    p, g = pred > threshold, gt.astype(bool)
    tp, fp, fn = np.count_nonzero(p & g), np.count_nonzero(p & ~g), np.count_nonzero(~p & g)
    precision, recall = tp / (tp + fp + 1e-8), tp / (tp + fn + 1e-8)
    return float(2 * precision * recall / (precision + recall + 1e-8))


def validate(model: MVSSNet, val: Any, recipe: MVSSRecipe) -> dict[str, float]:
    """Mean per-image pixel F1 over the validation images with a forged pixel (eval mode, ``predict``)."""
    model.eval()
    scores: list[float] = []
    chunk: list[Sample] = []

    def flush() -> None:
        for sample, pred in zip(chunk, model.predict([s.image for s in chunk])):
            assert pred.mask is not None and sample.mask is not None
            scores.append(pixel_f1(pred.mask, sample.mask, recipe.f1_threshold))
        chunk.clear()

    for sample in val.iter_samples():
        if sample.image is not None and sample.mask is not None and sample.mask.any():
            chunk.append(sample)
            if len(chunk) == recipe.val_batch_size:
                flush()
    if chunk:
        flush()
    if not scores:
        raise UserError("mvss_net validation needs tampered images with masks in the validation split")
    return {"val_pixel_f1": float(np.mean(scores)), "val_images": float(len(scores))}


# ---------------------------------------------------------------------- loop
def train_mvss(model: MVSSNet, train: Any, val: Any, options: TrainOptions, recipe: MVSSRecipe) -> dict[str, Any]:
    """Train ``model`` in place; returns a report (best/last paths, steps, history, the recipe's name)."""
    if getattr(val, "split", None) == "test":
        raise UserError("Model selection on the test split is not allowed")
    out = options.out_dir
    last, best = out / "last", out / "best"
    epochs = options.epochs if options.epochs is not None else recipe.epochs
    max_steps = options.max_steps if options.max_steps is not None else recipe.max_steps
    batch_size = options.batch_size or recipe.batch_size
    peak = options.lr if options.lr is not None else recipe.lr
    group_size = batch_size * recipe.accum_iter
    micro_per_epoch = len(train) // batch_size  # len(data_loader) with drop_last
    steps_per_epoch = micro_per_epoch // recipe.accum_iter
    if steps_per_epoch == 0:
        raise UserError(f"mvss_net training needs at least batch_size x accum_iter = {group_size} images in the "
                        f"train split, got {len(train)}")
    torch.manual_seed(options.seed)
    if model.weights_path is None:
        model.reinitialise(options.seed)
        if recipe.imagenet_init:
            log.warning("mvss_net: training from random weights; the recipe (%s) starts both ResNet-50 streams "
                        "from ImageNet: pass --weights resnet50-19c8e357.pth", recipe.name)
    init = model.weights_format if model.weights_path is not None else f"random (seed {options.seed})"
    net = model.net
    optimizer = torch.optim.AdamW(parameter_groups(net, recipe.weight_decay), lr=peak, betas=recipe.betas)
    state = TrainState()
    resumed = resume_run(out, options.resume)
    if resumed is not None:
        weights, saved = resumed
        load_strict(net, weights, last)
        optimizer.load_state_dict(saved["optimizer"])
        state = TrainState(**saved["state"])

    stopped = ""
    total = epochs * steps_per_epoch if max_steps is None else min(epochs * steps_per_epoch, max_steps)
    with make_progress() as progress:
        task = progress.add_task("train", total=total, completed=state.step)
        while state.epoch < epochs and not stopped:
            if max_steps is not None and state.step >= max_steps:
                stopped = "max_steps"
                break
            net.train()
            parts: list[list[float]] = []
            lr = float("nan")
            for g, (samples, skipped) in enumerate(sample_groups(train, options.seed, state.epoch, group_size,
                                                                 recipe.shuffle_buffer)):
                if g < state.batches_done:
                    continue  # replayed on resume: same order, augmentation derived per sample
                state.skipped_samples += skipped
                if not samples:
                    continue
                lr = lr_at(recipe, state.epoch + g * recipe.accum_iter / micro_per_epoch, epochs, peak)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                torch.manual_seed(int(np.random.SeedSequence([options.seed, state.epoch, g, 13]).generate_state(1)[0]))
                items = [training_item(model, s, recipe, sample_rng(options.seed, s.id, f"mvss_train/{state.epoch}"))
                         for s in samples]
                parts.append(_step(model, optimizer, items, batch_size, recipe))
                state.step += 1
                state.batches_done += 1
                progress.update(task, advance=1, description=f"mvss_net epoch {state.epoch + 1}/{epochs} "
                                                             f"loss {parts[-1][0]:.4f}")
                if max_steps is not None and state.step >= max_steps:
                    stopped = "max_steps"
                    break
            means = np.mean(parts, axis=0) if parts else np.full(4, np.nan)
            metrics: dict[str, float] = {"epoch": float(state.epoch), "step": float(state.step), "lr": lr,
                                         "train_loss": float(means[0]), "train_seg": float(means[1]),
                                         "train_edge": float(means[2]), "train_clf": float(means[3])}
            final = bool(stopped) or state.epoch + 1 == epochs
            if state.epoch % recipe.test_period == 0 or final:
                metrics.update(validate(model, val, recipe))
                candidate = state.epoch > recipe.best_after_epoch or final
                if candidate and metrics["val_pixel_f1"] > state.best_score:
                    state.best_score, state.best_epoch = metrics["val_pixel_f1"], state.epoch
                    model.save(best, {"training": _record(state, options, recipe)})
            state.history.append(metrics)
            if not stopped:
                state.epoch, state.batches_done = state.epoch + 1, 0
            model.save(last, {"training": _record(state, options, recipe)})
            torch.save({"optimizer": optimizer.state_dict(), "state": asdict(state)}, last / TRAINER_STATE)
    model.eval()
    return {
        "out_dir": str(out), "best": str(best), "last": str(last), "epoch": state.epoch, "steps": state.step,
        "best_val_score": state.best_score, "best_epoch": state.best_epoch, "stopped": stopped or "epochs",
        "skipped_samples": state.skipped_samples, "history": state.history, "batch_size": batch_size,
        "accum_iter": recipe.accum_iter, "init": init, "recipe_name": recipe.name, "recipe": asdict(recipe),
    }


def _step(model: MVSSNet, optimizer: torch.optim.Optimizer, items: list[Item], batch_size: int,
          recipe: MVSSRecipe) -> list[float]:
    """One optimizer step over ``accum_iter`` micro-batches; returns the mean [total, seg, edge, clf]."""
    device = model.device
    optimizer.zero_grad(set_to_none=True)
    values = []
    for k in range(0, len(items), batch_size):
        chunk = items[k:k + batch_size]
        model.net.constrain_conv.project_()  # the official bayarConstraint write-back, at every forward
        edge, seg = model.net(torch.stack([i.image for i in chunk]).to(device))
        loss = mvss_loss(edge, seg, torch.stack([i.mask for i in chunk]).to(device),
                         torch.stack([i.edge for i in chunk]).to(device),
                         torch.tensor([i.label for i in chunk], device=device), recipe)
        value = loss.total.detach().item()
        if not math.isfinite(value):
            raise UserError(f"Training diverged: loss {value}")
        (loss.total / recipe.accum_iter).backward()
        values.append([float(v.detach()) for v in loss])
    optimizer.step()
    return np.mean(values, axis=0).tolist()


def _record(state: TrainState, options: TrainOptions, recipe: MVSSRecipe) -> dict[str, Any]:
    return {"epoch": state.epoch, "step": state.step, "seed": options.seed, "best_val_score": state.best_score,
            "best_epoch": state.best_epoch, "recipe_name": recipe.name, "recipe": asdict(recipe)}
