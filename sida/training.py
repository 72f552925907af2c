"""SIDA training: stage 1 (detection + localization) and stage 2 (explanations), as the official scripts.

``sida-bench train --model sida[:CONFIG] --option stage=1|2 ...`` → :func:`train_sida`.

- Stage 1 (``train_SIDA.py``): the teacher-forced answer ``"[CLS] The image is <class> [SEG]?"``;
  CE on the detection logits + BCE/DICE on the tampered masks; no LM term. Trainable: LoRA,
  ``embed_tokens``, mask decoder, ``text_hidden_fcs``, ``cls_head``, ``sida_fc1``,
  ``attention_layer`` (``lm_head``, CLIP, projector and SAM's encoders frozen). A tampered image
  without a mask is left out (official loader).
- Stage 2 (``train_SIDA_description.py``): the description subset (samples whose
  ``meta["explanation"]`` holds the description GT), answer ``"... [SEG]? <description> [END]"``,
  ``[END]`` added to the tokenizer; LM CE + weighted detection and mask losses. Trainable: LoRA,
  ``lm_head``, mask decoder, ``cls_head``, and ``embed_tokens`` (the official script freezes it,
  but its ``resize_token_embeddings`` for ``[END]`` then builds a fresh, trainable embedding).
  Unlike the official script, the stage-1 heads are not re-initialised.
- Class-homogeneous batches (:mod:`sida.sampler`), gradient accumulation, AdamW (β 0.9/0.95,
  wd 0), DeepSpeed's WarmupDecayLR (linear warm-up from 0, then linear decay to 0), gradient
  clipping 1.0, fp32 masters. Options come from ``TrainOptions`` and ``options.extra``
  (see :data:`EXTRA_KEYS`); the ``tiny`` configuration uses :data:`TINY_RECIPE`.
- Validation as the official ``validate()``: teacher-forced, argmax accuracy over 3 classes,
  masks for ground-truth tampered images, gIoU (mean per image, logit > 0) and cIoU (Σ∩/Σ∪) at
  the ground truth's resolution. ``OUT/best`` is rewritten when accuracy or gIoU improves
  (official rule); ``OUT/last`` + ``trainer_state.pt`` after every epoch for ``--resume``.
  The test split is refused.
- LISA (``lisa`` plugin, no detection head): stage 1 only, on the tampered images with a mask (the
  only SID-Set answers with a [SEG]; real and fully synthetic images would add no mask gradient in
  SIDA's stage 1 either), each teacher-forced with the plugin's prompt and answer
  (``... ASSISTANT: [SEG].``); loss = mask loss only (``sida.losses.combine_mask_losses``, preset
  ``paper``: bce 2.0, dice 0.5 as LISA's ``train_ds.py``; LISA's LM term is left out). Validation on
  every image: gIoU/cIoU, plus ``val_binary_acc`` of the max-pooled mask (p ≥ 0.5 ⇔ not real);
  ``best`` follows gIoU (LISA's rule).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from bench.checkpoint import TRAINER_STATE, load_checkpoint, save_checkpoint
from bench.errors import UserError
from bench.model import TrainOptions
from bench.progress import make_progress
from bench.types import TAMPERED
from sida import prompts
from sida.batch import SidaBatch
from sida.losses import LossWeights, combine_losses, combine_mask_losses, loss_preset
from sida.preprocess import preprocess_image
from sida.sampler import ClassHomogeneousBatchSampler
from sida.tokenizer import add_sida_tokens, save_tokenizer

DESCRIPTION_KEYS = ("explanation", "description")
STAGE_TRAINABLE: dict[int, tuple[str, ...]] = {
    1: ("lora_", "embed_tokens", "mask_decoder", "text_hidden_fcs", "cls_head", "sida_fc1", "attention_layer"),
    2: ("lora_", "lm_head", "mask_decoder", "cls_head", "embed_tokens"),
}


@dataclass(frozen=True)
class SidaRecipe:
    """Training hyper-parameters. ``steps_per_epoch=None``: one pass over the class-wise batches."""

    lr: float = 1e-4  # README / paper (train_SIDA.py's argparse default is 1e-5)
    batch_size: int = 2
    grad_accumulation: int = 10
    epochs: int = 10
    steps_per_epoch: int | None = 1000
    warmup_steps: int = 100
    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    loss_preset: str | None = None  # None: the configuration's preset (SidaConfig.loss_preset)


OFFICIAL_RECIPE = SidaRecipe()
TINY_RECIPE = SidaRecipe(lr=3e-3, batch_size=4, grad_accumulation=1, epochs=1, steps_per_epoch=None, warmup_steps=10)
EXTRA_KEYS = ("stage", "description_only") + tuple(f.name for f in fields(SidaRecipe))


def trainable_parameter_names(net: torch.nn.Module, stage: int) -> list[str]:
    """Names of the parameters the official script of ``stage`` trains (``lm_head`` frozen in stage 1)."""
    if stage not in STAGE_TRAINABLE:
        raise UserError(f"SIDA training stage must be 1 or 2, got {stage!r}")
    parts = STAGE_TRAINABLE[stage]
    return [n for n, _ in net.named_parameters() if any(p in n for p in parts)]


def set_trainable(net: torch.nn.Module, stage: int) -> list[str]:
    """Set ``requires_grad`` to the official trainable set of ``stage``; returns the names."""
    names = set(trainable_parameter_names(net, stage))
    for name, param in net.named_parameters():
        param.requires_grad = name in names
    return sorted(names)


def warmup_decay_lr(step: int, total_steps: int, warmup_steps: int, max_lr: float) -> float:
    """DeepSpeed ``WarmupDecayLR`` (linear warm-up from 0, min_lr 0) at optimizer step ``step`` (0-based)."""
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    return max_lr * max(0.0, (total_steps - step) / max(1.0, total_steps - warmup_steps))


@dataclass
class TrainState:
    """What ``trainer_state.pt`` stores besides the optimizer (JSON-like values only)."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0
    best_acc: float = -1.0
    best_giou: float = -1.0
    history: list[dict[str, float]] = field(default_factory=list)
    losses: list[dict[str, float]] = field(default_factory=list)


# ---------------------------------------------------------------------- data
class TrainSet:
    """Labels up front, samples decoded on demand (folder datasets) or held in memory (others)."""

    def __init__(self, dataset: Any, stage: int, description_only: bool, tampered_only: bool = False) -> None:
        self.stage = stage
        self.skipped: dict[str, int] = {}
        self._decode: Callable[[int], Any]
        if hasattr(dataset, "entries") and hasattr(dataset, "decoder"):
            entries = dataset.entries
            self._decode = lambda i: dataset.decoder.decode(entries[i], entries[i].label == TAMPERED)
            rows = [(e.label, e.mask is not None, _description(e.meta)) for e in entries]
        else:
            samples = list(dataset.iter_samples())
            self._decode = samples.__getitem__
            rows = [(s.label, s.mask is not None, _description(s.meta)) for s in samples]
        keep = []
        for index, (label, has_mask, description) in enumerate(rows):
            if stage == 1 and label == TAMPERED and not has_mask:
                self._skip("tampered_without_mask")
            elif tampered_only and label != TAMPERED:
                self._skip("not_tampered")
            elif stage == 2 and description_only and not description:
                self._skip("without_description")
            else:
                keep.append(index)
        if not keep:
            raise UserError(f"No usable training samples for stage {stage} (left out: {self.skipped})")
        self.indices = keep
        self.labels = [int(rows[i][0]) for i in keep]

    def _skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def __len__(self) -> int:
        return len(self.indices)

    def sample(self, position: int) -> Any:
        return self._decode(self.indices[position])


def _description(meta: dict[str, Any]) -> str | None:
    return next((str(meta[k]) for k in DESCRIPTION_KEYS if meta.get(k)), None)


def target_mask(mask: np.ndarray | None, image_shape: tuple[int, int], sam_size: int) -> torch.Tensor:
    """(1, h, w) float target at the ResizeLongestSide size, bilinear on 0..255 then /255 (official)."""
    if mask is None:
        mask = np.zeros(image_shape, dtype=bool)
    resized = ResizeLongestSide(sam_size).apply_image((mask.astype(np.uint8) * 255)[:, :, None])
    return torch.from_numpy(np.ascontiguousarray(resized.reshape(resized.shape[:2]))).float()[None] / 255.0


def make_train_batch(samples: Sequence[Any], detector: Any, stage: int) -> SidaBatch:
    """Teacher-forced batch of ``stage``; masks at the resized size, as the official training."""
    cfg, tokenizer = detector.config, detector.tokenizer
    inputs, conversations, masks = [], [], []
    for sample in samples:
        item = preprocess_image(sample.image, cfg.sam.image_size, cfg.clip.image_size)
        inputs.append(item)
        if not cfg.has_detection_head:  # LISA: the same segmentation question for every image
            conv = prompts.encode_conversation(tokenizer, detector.question, detector.answer)
        elif stage == 1:
            conv = prompts.encode_conversation(tokenizer, prompts.QUESTION, prompts.detection_answer(sample.label))
        else:
            description = _description(sample.meta)
            answer = prompts.description_answer(sample.label, description)
            conv = prompts.encode_conversation(
                tokenizer, prompts.QUESTION_DESCRIPTION, answer, supervise=bool(description)
            )
        conversations.append(conv)
        masks.append(target_mask(sample.mask, sample.image.shape[:2], cfg.sam.image_size))
    ids, attention, labels = prompts.collate_conversations(
        conversations, tokenizer.pad_token_id, tokenizer.model_max_length - (cfg.clip.num_patches - 1)
    )
    return SidaBatch(
        images_sam=torch.stack([i.image_sam for i in inputs]), images_clip=torch.stack([i.image_clip for i in inputs]),
        input_ids=ids, attention_mask=attention, resize_sizes=[i.resize_size for i in inputs],
        mask_sizes=[i.resize_size for i in inputs], labels=labels if stage == 2 else None,
        cls_labels=torch.tensor([int(s.label) for s in samples]), masks=masks,
    )


# ---------------------------------------------------------------------- one step
def batch_loss(net: torch.nn.Module, batch: SidaBatch, weights: LossWeights) -> Any:
    """Forward one batch and combine the losses (:class:`sida.losses.LossTerms`)."""
    out = net(batch)
    if not net.config.has_detection_head:  # LISA: the (tampered) images' masks, no detection loss
        return combine_mask_losses(weights, out.pred_masks, batch.masks)
    labels = batch.cls_labels
    tampered = [i for i in range(batch.batch_size) if int(labels[i]) == TAMPERED]
    pred = [out.pred_masks[i] for i in tampered]
    gt = [batch.masks[i] for i in tampered] if batch.masks is not None else None
    return combine_losses(weights, out.cls_logits, labels, pred, gt, out.lm_loss)


def _to(batch: SidaBatch, device: torch.device, dtype: torch.dtype) -> SidaBatch:
    moved = batch.to(device, dtype)
    moved.masks = None if batch.masks is None else [m.to(device, dtype) for m in batch.masks]
    return moved


# ---------------------------------------------------------------------- validation
@torch.no_grad()
def validate(detector: Any, dataset: Any, batch_size: int, stage: int = 1) -> dict[str, float]:
    """Official ``validate()``: accuracy, gIoU and cIoU (an all-zero mask scores 0 on both)."""
    net = detector.net
    net.eval()
    correct = total = 0
    ious: list[float] = []
    inter_sum = union_sum = 0.0
    pending: list[Any] = []

    def flush() -> None:
        nonlocal correct, total, inter_sum, union_sum
        batch = make_train_batch(pending, detector, stage)
        batch.labels = None
        batch.mask_sizes = [tuple(s.image.shape[:2]) for s in pending]
        out = net(batch.to(detector.device, detector.dtype))
        if net.config.has_detection_head:
            pred = out.cls_logits.float().argmax(-1).cpu()
            correct += int((pred == batch.cls_labels).sum())
        else:  # LISA: binary verdict of the max-pooled mask (LocalizerAsDetector), p >= 0.5 is fake
            fake = torch.stack([m[0].float().max() >= 0 for m in out.pred_masks]).cpu()
            correct += int((fake == (batch.cls_labels != 0)).sum())
        total += len(pending)
        for i, sample in enumerate(pending):
            if sample.label == TAMPERED and sample.mask is not None:
                p = (out.pred_masks[i][0] > 0).cpu().numpy()
                inter, union = float((p & sample.mask).sum()), float((p | sample.mask).sum())
                ious.append(inter / union if union else 1.0)
                inter_sum, union_sum = inter_sum + inter, union_sum + union
        pending.clear()

    for sample in dataset.iter_samples():
        if sample.image is None:
            continue
        pending.append(sample)
        if len(pending) == batch_size:
            flush()
    if pending:
        flush()
    if total == 0:
        raise UserError("The validation split has no decodable images")
    accuracy = "val_acc" if net.config.has_detection_head else "val_binary_acc"
    return {
        accuracy: correct / total, "val_giou": float(np.mean(ious)) if ious else float("nan"),
        "val_ciou": inter_sum / union_sum if union_sum else float("nan"), "val_images": float(total),
        "val_tampered_with_mask": float(len(ious)),
    }


# ---------------------------------------------------------------------- the loop
def resolve_recipe(detector: Any, options: TrainOptions) -> tuple[SidaRecipe, int, bool]:
    """Recipe of the configuration, overridden by ``TrainOptions`` and ``options.extra``."""
    extra = dict(options.extra)
    unknown = sorted(set(extra) - set(EXTRA_KEYS))
    if unknown:
        raise UserError(f"Unknown SIDA training option(s) {unknown}; known: {', '.join(EXTRA_KEYS)}")
    stage = int(extra.pop("stage", 1))
    if not detector.config.has_detection_head and stage != 1:
        raise UserError(f"{detector.name} has one training stage (masks); got stage={stage}")
    description_only = str(extra.pop("description_only", True)).lower() not in ("0", "false", "no")
    recipe = TINY_RECIPE if detector.config_name == "tiny" else OFFICIAL_RECIPE
    types = {f.name: f.type for f in fields(SidaRecipe)}
    try:
        recipe = replace(recipe, **{k: _cast(v, str(types[k])) for k, v in extra.items()})
    except ValueError as exc:
        raise UserError(f"Bad SIDA training option: {exc}") from exc
    overrides = {"lr": options.lr, "batch_size": options.batch_size, "epochs": options.epochs}
    recipe = replace(recipe, **{k: v for k, v in overrides.items() if v is not None})
    if recipe.loss_preset is None:
        recipe = replace(recipe, loss_preset=detector.config.loss_preset)
    loss_preset(recipe.loss_preset, stage)  # fail early on an unknown preset
    return recipe, stage, description_only


def _cast(value: Any, type_name: str) -> Any:
    if value is None or value == "none":
        return None
    if "float" in type_name:
        return float(value)
    if "int" in type_name:
        return int(value)
    return str(value)


def _prepare_model(detector: Any, stage: int) -> list[str]:
    net = detector.net
    if stage == 2 and net.tokens.end is None:
        tokens = add_sida_tokens(detector.tokenizer, description=True)
        net.llama.resize_token_embeddings(len(detector.tokenizer))
        net.tokens = tokens
        detector.config = replace(detector.config, description=True)
        net.config = detector.config
    if not net.lora_enabled:
        net.add_lora()
    net.float()
    return set_trainable(net, stage)


def _save(detector: Any, folder: Path, state: TrainState, meta: dict[str, Any],
          optimizer: torch.optim.Optimizer | None) -> None:
    config = {**meta, "epoch": state.epoch, "step": state.step, "best_acc": state.best_acc,
              "best_giou": state.best_giou, "history": state.history}
    save_checkpoint(folder, detector.net.state_dict(), config)
    save_tokenizer(detector.tokenizer, folder)
    if optimizer is not None:
        torch.save({"optimizer": optimizer.state_dict(), "state": asdict(state),
                    "torch_rng": torch.get_rng_state()}, folder / TRAINER_STATE)


def train_sida(detector: Any, train_ds: Any, val_ds: Any, options: TrainOptions) -> dict[str, Any]:
    """Train ``detector`` (a built :class:`sida.detector.SidaDetector`) and return a report."""
    if val_ds is not None and getattr(val_ds, "split", None) == "test":
        raise UserError("Model selection on the test split is not allowed; pass the validation split")
    recipe, stage, description_only = resolve_recipe(detector, options)
    weights = loss_preset(recipe.loss_preset, stage)
    out = Path(options.out_dir)
    last, best = out / "last", out / "best"
    if (last / TRAINER_STATE).is_file() and not options.resume:
        raise UserError(f"{out} already holds a training run; pass --resume to continue it or choose another --out")
    random.seed(options.seed)
    np.random.seed(options.seed % 2**32)
    torch.manual_seed(options.seed)
    trainable = _prepare_model(detector, stage)
    net = detector.net.to(detector.device)
    detector.dtype = torch.float32
    data = TrainSet(train_ds, stage, description_only, tampered_only=not detector.config.has_detection_head)
    sampler = ClassHomogeneousBatchSampler(data.labels, recipe.batch_size, seed=options.seed)
    steps_per_epoch = recipe.steps_per_epoch or max(1, len(sampler) // recipe.grad_accumulation)
    total_steps = recipe.epochs * steps_per_epoch
    if options.max_steps is not None:
        total_steps = min(total_steps, options.max_steps)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, betas=(recipe.beta1, recipe.beta2),
                                  weight_decay=recipe.weight_decay)
    state = TrainState()
    if options.resume and (last / TRAINER_STATE).is_file():
        saved_weights, _ = load_checkpoint(last)
        net.load_state_dict(saved_weights, strict=True)
        saved = torch.load(last / TRAINER_STATE, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(saved["optimizer"])
        state = TrainState(**saved["state"])
        torch.set_rng_state(saved["torch_rng"])
    meta = {"model": detector.name, "config": detector.config_name, "stage": stage,
            "loss_preset": weights.name, "loss_weights": weights.as_dict(), "recipe": asdict(recipe),
            "seed": options.seed, "trainable": trainable, "description": detector.config.description,
            "left_out": data.skipped}
    batches: list[list[int]] = []
    with make_progress() as progress:
        task = progress.add_task(f"{detector.name} stage {stage}", total=total_steps, completed=state.step)
        while state.step < total_steps:
            net.train()
            sampler.set_epoch(state.epoch)
            batches = list(sampler)
            for _ in range(steps_per_epoch):
                if state.step >= total_steps:
                    break
                lr = warmup_decay_lr(state.step, total_steps, recipe.warmup_steps, recipe.lr)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                parts: dict[str, float] = {}
                for _ in range(recipe.grad_accumulation):
                    chosen = batches[state.batch_in_epoch % len(batches)]
                    state.batch_in_epoch += 1
                    batch = make_train_batch([data.sample(i) for i in chosen], detector, stage)
                    terms = batch_loss(net, _to(batch, detector.device, torch.float32), weights)
                    if not math.isfinite(float(terms.total.detach())):
                        loss_value = float(terms.total.detach())
                        raise UserError(f"SIDA training diverged: loss {loss_value} at step {state.step}")
                    (terms.total / recipe.grad_accumulation).backward()
                    for k, v in terms.scalars().items():
                        parts[k] = parts.get(k, 0.0) + v / recipe.grad_accumulation
                torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
                optimizer.step()
                state.step += 1
                state.losses.append({"step": float(state.step), "lr": lr, **parts})
                progress.update(task, advance=1, description=f"{detector.name} stage {stage} ep {state.epoch + 1} "
                                f"loss {parts['total']:.3f}")
            state.epoch += 1
            state.batch_in_epoch = 0
            metrics = validate(detector, val_ds, recipe.batch_size, stage) if val_ds is not None else {}
            metrics.update(epoch=float(state.epoch), step=float(state.step),
                           train_loss=state.losses[-1]["total"] if state.losses else float("nan"))
            state.history.append(metrics)
            improved = (val_ds is None or metrics.get("val_acc", -1.0) > state.best_acc  # LISA (no val_acc): gIoU only
                        or metrics["val_giou"] > state.best_giou)
            if val_ds is not None:
                state.best_acc = max(state.best_acc, metrics.get("val_acc", -1.0))
                if not math.isnan(metrics["val_giou"]):
                    state.best_giou = max(state.best_giou, metrics["val_giou"])
            if improved:
                _save(detector, best, state, meta, None)
            _save(detector, last, state, meta, optimizer)
    net.eval()
    return {
        "out_dir": str(out), "best": str(best), "last": str(last), "stage": stage, "loss_preset": weights.name,
        "steps": state.step, "epochs": state.epoch, "first_loss": state.losses[0] if state.losses else None,
        "last_loss": state.losses[-1] if state.losses else None, "history": state.history,
        "best_val_acc": state.best_acc, "best_val_giou": state.best_giou, "train_samples": len(data),
        "left_out": data.skipped, "recipe": asdict(recipe), "trainable_parameters": len(trainable),
    }
