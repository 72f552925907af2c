"""The CNNDetection-family training recipe, shared by CNNSpot, UnivFD, NPR and FreDect.

One epoch: shuffle the ``train`` split, then per image: the model's frozen extractor
(``extractor_view``: LGrad's gradient image, LNP's noise image; identity for the others; a frozen
extractor's views are memoized across epochs, see :mod:`baselines.frozen_extractor`), resize (``load_size``), optional blur
(σ ~ U[blur_sigma]) and JPEG (quality ~ U{jpeg_quality}) each with its probability, random
crop (``crop_size``), horizontal flip, then the model's own tensor conversion (the model's
``train_item`` / ``eval_item`` / ``batch_logits`` hooks; a method with its own official
augmentation or a multi-view input, e.g. Gram-Net or Fusing, overrides them). Loss:
BCE-with-logits on the one logit (fake = label ≠ 0), or cross-entropy for a 3-class head.
After each epoch the model is scored on the ``validation`` split (resize + centre crop, no
augmentation) and the learning rate follows the recipe's schedule:

- ``plateau`` (CNNSpot, UnivFD, FreDect): when validation accuracy has not improved by more
  than ``min_delta`` for ``patience`` epochs, lr ×= ``lr_factor`` (1/10); training stops when
  lr falls below ``min_lr`` (the official ``EarlyStopping`` + ``adjust_learning_rate``);
- ``step`` (NPR): lr ×= ``lr_factor`` after every ``step_epochs``-th epoch (0-based, as the
  official loop), for ``epochs`` epochs.

The test split is never read. ``OUT/best`` holds the checkpoint with the best validation
accuracy, ``OUT/last`` the latest one plus ``trainer_state.pt`` (optimizer, epoch, step,
schedule state), from which ``--resume`` continues. Per-sample randomness is derived from
(seed, epoch, position) and torch's generator (dropout) is seeded per epoch, so a run resumed
at an epoch boundary makes the same choices as an uninterrupted one.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import gaussian_filter

from baselines.common import center_crop, random_crop, resize
from bench.checkpoint import TRAINER_STATE, resume_run, save_checkpoint
from bench.errors import UserError
from bench.model import TrainOptions
from bench.progress import make_progress



@dataclass(frozen=True)
class TrainRecipe:
    """Hyper-parameters of one method's official training (see the module docstring)."""

    optimizer: str = "adam"  # "adam" or "adamw"
    lr: float = 1e-4
    beta1: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 100
    schedule: str = "plateau"  # "plateau" or "step"
    patience: int = 5
    min_delta: float = 0.001
    lr_factor: float = 0.1
    step_epochs: int = 10
    min_lr: float = 1e-6
    load_size: int | None = 256
    resize_mode: str = "shorter_side"
    crop_size: int | None = 224
    flip: bool = True
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.0, 3.0)
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (30, 100)
    shuffle_buffer: int = 2048


class Trainable(Protocol):
    """What :func:`fit_detector` needs from a model (see :class:`baselines.common.SingleLogitDetector`)."""

    network: torch.nn.Module
    num_outputs: int
    device: torch.device

    def train_item(self, image: np.ndarray, recipe: "TrainRecipe", rng: np.random.Generator) -> Any: ...
    def eval_item(self, image: np.ndarray, recipe: "TrainRecipe") -> Any: ...
    def batch_logits(self, items: list[Any]) -> torch.Tensor: ...
    def extractor_view(self, image: np.ndarray) -> np.ndarray: ...
    def trainable_parameters(self) -> Iterator[torch.nn.Parameter]: ...
    def state_for_checkpoint(self) -> dict[str, torch.Tensor]: ...
    def load_our_state(self, state: Any, source: Any) -> None: ...
    def checkpoint_config(self) -> dict[str, Any]: ...
    def set_train_mode(self, training: bool) -> None: ...


# ---------------------------------------------------------------------- augmentation
def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Per-channel Gaussian blur (scipy ``gaussian_filter``) of a uint8 image."""
    out = np.empty_like(image)
    for c in range(image.shape[2]):
        out[:, :, c] = np.clip(np.rint(gaussian_filter(image[:, :, c].astype(np.float32), sigma)), 0, 255)
    return out


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip with PIL at ``quality``."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def load_resize(image: np.ndarray, recipe: TrainRecipe) -> np.ndarray:
    """The recipe's deterministic first step (``load_size``; identity when None)."""
    return image if recipe.load_size is None else resize(image, recipe.load_size, recipe.resize_mode)


def augment_crop(image: np.ndarray, recipe: TrainRecipe, rng: np.random.Generator) -> np.ndarray:
    """After :func:`load_resize`: blur (p) → JPEG (p) → random crop → flip (the official order)."""
    if rng.random() < recipe.blur_prob:
        image = gaussian_blur(image, float(rng.uniform(*recipe.blur_sigma)))
    if rng.random() < recipe.jpeg_prob:
        image = jpeg(image, int(rng.integers(recipe.jpeg_quality[0], recipe.jpeg_quality[1] + 1)))
    if recipe.crop_size is not None:
        image = random_crop(image, recipe.crop_size, rng)
    if recipe.flip and rng.random() < 0.5:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


def eval_geometry(image: np.ndarray, recipe: TrainRecipe) -> np.ndarray:
    """Validation view: resize and centre crop, no augmentation."""
    image = load_resize(image, recipe)
    return image if recipe.crop_size is None else center_crop(image, recipe.crop_size)


# ---------------------------------------------------------------------- data
def shuffled_images(dataset: Any, seed: int, epoch: int, buffer: int,
                   prepare: Callable[[np.ndarray], np.ndarray]) -> Iterator[tuple[np.ndarray | None, int]]:
    """(prepared image or None for an undecodable sample, label) in a seeded random order.

    The split is read as ``ceil(len / buffer)`` strided shards (``iter_samples(k, n)``) in
    random order, each held in memory after ``prepare`` and fully shuffled: every shard spans
    the whole (class-ordered) listing, so batches mix classes even for splits far larger than
    ``buffer``, and each image is decoded once per epoch.
    """
    rng = np.random.default_rng([seed, epoch, 7])
    num_shards = max(1, math.ceil(len(dataset) / buffer))
    for shard in rng.permutation(num_shards):
        pool = [(None if s.image is None else prepare(s.image), s.label)
                for s in dataset.iter_samples(shard=int(shard), num_shards=num_shards)]
        for i in rng.permutation(len(pool)):
            yield pool[i]


def target_of(label: int, num_outputs: int) -> float | int:
    """Binary head: fake = any non-real label; ternary head: the label itself."""
    if num_outputs == 1:
        return float(label != 0)
    if not 0 <= label < num_outputs:
        raise UserError(f"Label {label} does not fit a {num_outputs}-class head")
    return int(label)


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], targets.float())
    return F.cross_entropy(logits, targets.long())


# ---------------------------------------------------------------------- state
@dataclass
class TrainState:
    """Schedule state saved next to the last checkpoint (plain types: loadable weights-only)."""

    epoch: int = 0
    step: int = 0
    lr: float = 0.0
    best_acc: float = -1.0
    best_epoch: int = -1
    plateau_best: float = -1.0
    bad_epochs: int = 0
    stopped: str = ""
    skipped_samples: int = 0
    last_loss: float = float("nan")
    history: list[dict[str, float]] = field(default_factory=list)


def make_optimizer(params: list[torch.nn.Parameter], recipe: TrainRecipe, lr: float) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(recipe.beta1, 0.999), weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(recipe.beta1, 0.999), weight_decay=recipe.weight_decay)
    raise UserError(f"Unknown optimizer {recipe.optimizer!r}; expected adam or adamw")


def evaluate(model: Trainable, dataset: Any, recipe: TrainRecipe, batch_size: int) -> dict[str, float]:
    """Accuracy and mean loss on ``dataset`` (binary: p_fake > 0.5; ternary: argmax)."""
    model.set_train_mode(False)
    correct, total, loss_sum = 0, 0, 0.0
    batch: list[Any] = []
    targets: list[float | int] = []

    def flush() -> None:
        nonlocal correct, total, loss_sum
        y = torch.tensor(targets, device=model.device)
        logits = model.batch_logits(batch)
        loss_sum += float(loss_fn(logits, y)) * len(batch)
        pred = (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)
        correct += int((pred == y.long()).sum())
        total += len(batch)
        batch.clear()
        targets.clear()

    with torch.inference_mode():
        for sample in dataset.iter_samples():
            if sample.image is None:
                continue
            batch.append(model.eval_item(sample.image, recipe))
            targets.append(target_of(sample.label, model.num_outputs))
            if len(batch) == batch_size:
                flush()
        if batch:
            flush()
    if total == 0:
        raise UserError("The validation split has no decodable images")
    return {"val_acc": correct / total, "val_loss": loss_sum / total, "val_images": float(total)}


def _save(model: Trainable, folder: Any, state: TrainState, options: TrainOptions,
          recipe: TrainRecipe, optimizer: torch.optim.Optimizer | None) -> None:
    config = model.checkpoint_config()
    config.update(epoch=state.epoch, step=state.step, seed=options.seed, recipe=asdict(recipe),
                  val_acc=state.history[-1]["val_acc"] if state.history else None)
    save_checkpoint(folder, model.state_for_checkpoint(), config)
    if optimizer is not None:
        torch.save({"optimizer": optimizer.state_dict(), "state": asdict(state)}, folder / TRAINER_STATE)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def fit_detector(model: Trainable, train: Any, val: Any, options: TrainOptions, recipe: TrainRecipe) -> dict[str, Any]:
    """Train ``model`` on ``train`` with model selection / early stopping on ``val``; returns a report."""
    if getattr(val, "split", None) == "test":
        raise UserError("Model selection on the test split is not allowed")
    out = options.out_dir
    last, best = out / "last", out / "best"
    batch_size = options.batch_size or recipe.batch_size
    epochs = options.epochs if options.epochs is not None else recipe.epochs
    _seed_everything(options.seed)
    params = list(model.trainable_parameters())
    state = TrainState(lr=options.lr or recipe.lr)
    optimizer = make_optimizer(params, recipe, state.lr)
    resumed = resume_run(out, options.resume)
    if resumed is not None:
        weights, saved = resumed
        model.load_our_state(weights, last)
        optimizer.load_state_dict(saved["optimizer"])
        state = TrainState(**saved["state"])
        if state.stopped == "max_steps":  # a larger --max-steps (or none) continues the run
            state.stopped = ""
    for group in optimizer.param_groups:
        group["lr"] = state.lr

    start_epoch = state.epoch
    total_steps = epochs * math.ceil(len(train) / batch_size)
    if options.max_steps is not None:
        total_steps = min(total_steps, options.max_steps)
    with make_progress() as progress:
        task = progress.add_task("train", total=total_steps, completed=state.step)
        while state.epoch < epochs and not state.stopped:
            if options.max_steps is not None and state.step >= options.max_steps:
                state.stopped = "max_steps"
                break
            model.set_train_mode(True)
            # torch randomness in the forward (dropout) is seeded per epoch, so a resumed run matches
            torch.manual_seed(int(np.random.SeedSequence([options.seed, state.epoch, 11]).generate_state(1)[0]))
            progress.update(task, description=f"train epoch {state.epoch + 1}/{epochs}")
            batch: list[Any] = []
            targets: list[float | int] = []
            images = shuffled_images(train, options.seed, state.epoch, recipe.shuffle_buffer,
                                     lambda im: load_resize(model.extractor_view(im), recipe))
            for pos, (image, label) in enumerate(images):
                if image is None:
                    state.skipped_samples += 1
                    continue
                rng = np.random.default_rng([options.seed, state.epoch, pos])
                batch.append(model.train_item(image, recipe, rng))
                targets.append(target_of(label, model.num_outputs))
                if len(batch) < batch_size:
                    continue
                _step(model, optimizer, batch, targets, state)
                progress.update(task, advance=1, description=f"train epoch {state.epoch + 1} loss {state.last_loss:.4f}")
                if options.max_steps is not None and state.step >= options.max_steps:
                    state.stopped = "max_steps"
                    break
            if batch and not state.stopped:
                _step(model, optimizer, batch, targets, state)
                progress.advance(task)
            metrics = evaluate(model, val, recipe, batch_size)
            metrics.update(epoch=float(state.epoch), train_loss=state.last_loss, lr=state.lr)
            state.history.append(metrics)
            _schedule(state, recipe, metrics["val_acc"], optimizer)
            state.epoch += 1
            if metrics["val_acc"] > state.best_acc:
                state.best_acc, state.best_epoch = metrics["val_acc"], state.epoch - 1
                _save(model, best, state, options, recipe, None)
            _save(model, last, state, options, recipe, optimizer)
    return {
        "out_dir": str(out), "best": str(best), "last": str(last), "epochs_run": state.epoch - start_epoch,
        "epoch": state.epoch, "steps": state.step, "best_val_acc": state.best_acc, "best_epoch": state.best_epoch,
        "stopped": state.stopped or "epochs", "skipped_samples": state.skipped_samples, "history": state.history,
        "recipe": asdict(recipe), "batch_size": batch_size,
    }


def _step(model: Trainable, optimizer: torch.optim.Optimizer, batch: list[Any],
          targets: list[float | int], state: TrainState) -> None:
    y = torch.tensor(targets, device=model.device)
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model.batch_logits(batch), y)
    if not math.isfinite(float(loss.detach())):
        raise UserError(f"Training diverged: loss {float(loss)} at step {state.step}")
    loss.backward()
    optimizer.step()
    state.step += 1
    state.last_loss = float(loss.detach())
    batch.clear()
    targets.clear()


def _schedule(state: TrainState, recipe: TrainRecipe, acc: float, optimizer: torch.optim.Optimizer) -> None:
    """Apply the recipe's lr schedule after an epoch (see the module docstring)."""
    if recipe.schedule == "step":
        if state.epoch > 0 and state.epoch % recipe.step_epochs == 0:
            state.lr = max(state.lr * recipe.lr_factor, recipe.min_lr)
    elif recipe.schedule == "plateau":
        if acc > state.plateau_best + recipe.min_delta:
            state.plateau_best, state.bad_epochs = acc, 0
        else:
            state.bad_epochs += 1
            if state.bad_epochs >= recipe.patience:
                state.lr *= recipe.lr_factor
                state.bad_epochs = 0
                if state.lr < recipe.min_lr:
                    state.stopped = "early_stop"
    else:
        raise UserError(f"Unknown lr schedule {recipe.schedule!r}; expected plateau or step")
    for group in optimizer.param_groups:
        group["lr"] = state.lr
