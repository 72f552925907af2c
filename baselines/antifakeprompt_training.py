"""AntifakePrompt's prompt tuning (``lavis/projects/textual-inversion/textinv_train.yaml``, LAVIS ``RunnerBase``).

- Trainable: the Q-Former's and the LLM's ``[*]`` rows only (4,864 parameters at full size), AdamW
  (β1 0.9, β2 0.999; both rows are matrices, so LAVIS's ``get_optimizer_params`` gives them weight decay
  0.05), lr from LAVIS's ``LinearWarmupCosineLRScheduler.step(cur_epoch, cur_step)`` before every
  iteration (:func:`lavis_lr`): in epoch 0 ``min(lr, warmup_lr + (lr − warmup_lr)·step / max(warmup_steps, 1))``,
  later ``(lr − min_lr)·½(1 + cos(π·epoch / epochs)) + min_lr`` (constant within an epoch).
- Per image: Resize(S, bicubic, shorter side), RandomCrop S, horizontal flip (p = ½), the config's
  mean/std; label 0 → "yes</s>" (real), else "no</s>"; loss = the token-mean LM loss. The model is in
  train mode (the Q-Former's dropout 0.1 is active, as LAVIS's ``model.train()``), the ViT in eval mode.
- After every epoch: validation (the test policy) gives the teacher-forced LM loss (token mean over the
  split; LAVIS averages per-batch means) and the accuracy of the yes/no decision. ``OUT/best`` holds the
  epoch with the lowest validation loss (LAVIS selects ``agg_metrics = 1 / loss``), ``OUT/last`` the latest
  with ``trainer_state.pt`` for ``--resume``. Both store the two rows (``model.safetensors``) and
  ``config.json`` naming the base files (random ``tiny``: rebuilt from seed 0). The test split is refused.
- ``TrainOptions``: ``lr``, ``epochs``, ``batch_size``, ``max_steps``, ``seed``; ``extra`` may set any
  :class:`~baselines.antifakeprompt.PromptRecipe` field (e.g. ``warmup_steps``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from baselines import antifakeprompt_keymap as km
from baselines.antifakeprompt import (PromptRecipe, answer_token_losses, candidate_losses, image_prefix,
                                      probabilities, prompt_parameters, resize_bicubic)
from baselines.common import random_crop, to_tensor
from baselines.training import shuffled_images
from bench.checkpoint import TRAINER_STATE, resume_run, save_checkpoint
from bench.errors import UserError
from bench.model import TrainOptions
from bench.progress import make_progress

if TYPE_CHECKING:
    from baselines.antifakeprompt import AntifakePrompt



def lavis_lr(recipe: PromptRecipe, epoch: int, step: int) -> float:
    """The learning rate LAVIS's ``linear_warmup_cosine_lr`` sets before iteration ``step`` of ``epoch``."""
    if epoch == 0:
        return min(recipe.lr, recipe.warmup_lr + (recipe.lr - recipe.warmup_lr) * step / max(recipe.warmup_steps, 1))
    return (recipe.lr - recipe.min_lr) * 0.5 * (1.0 + math.cos(math.pi * epoch / recipe.epochs)) + recipe.min_lr


def resolve_recipe(base: PromptRecipe, options: TrainOptions) -> PromptRecipe:
    names = {f.name for f in fields(PromptRecipe)}
    unknown = sorted(set(options.extra) - names)
    if unknown:
        raise UserError(f"Unknown antifakeprompt training option(s) {unknown}; known: {', '.join(sorted(names))}")
    recipe = replace(base, **{k: type(getattr(base, k))(v) for k, v in options.extra.items()})
    given = {"lr": options.lr, "epochs": options.epochs, "batch_size": options.batch_size}
    return replace(recipe, **{k: v for k, v in given.items() if v is not None})


def lm_loss_sum(model: AntifakePrompt, batch: torch.Tensor, labels: list[int]) -> tuple[torch.Tensor, int]:
    """Σ CE over the answer tokens ("yes</s>" for label 0, else "no</s>") and their count."""
    tokens = model.tokens
    assert tokens is not None
    answers = [(*tokens.candidates[0 if int(y) == 0 else 1], tokens.eos) for y in labels]
    net = model.ensure_model()
    ce, _ = answer_token_losses(net, image_prefix(net, batch, tokens), tokens, answers)
    return ce.sum(), sum(len(a) for a in answers)


def evaluate(model: AntifakePrompt, dataset: Any, batch_size: int) -> dict[str, float]:
    """Validation LM loss (token mean) and yes/no accuracy (real iff label 0) under the test policy."""
    net = model.ensure_model()
    net.eval()
    loss_sum, n_tokens, correct, total = 0.0, 0, 0, 0
    items: list[torch.Tensor] = []
    labels: list[int] = []

    def flush() -> None:
        nonlocal loss_sum, n_tokens, correct, total
        x = torch.stack(items).to(model.device, model.dtype)
        s, n = lm_loss_sum(model, x, labels)
        loss_sum, n_tokens = loss_sum + float(s), n_tokens + n
        losses, seq_len = candidate_losses(net, x, model.tokens)  # type: ignore[arg-type]
        fake = probabilities(losses, seq_len)[0][:, 1].cpu().numpy() >= 0.5
        correct += int((fake == (np.asarray(labels) != 0)).sum())
        total += len(labels)
        items.clear()
        labels.clear()

    with torch.inference_mode():
        for sample in dataset.iter_samples():
            if sample.image is None:
                continue
            items.append(model.preprocess(sample.image))
            labels.append(int(sample.label))
            if len(items) == batch_size:
                flush()
        if items:
            flush()
    if total == 0:
        raise UserError("The validation split has no decodable images")
    return {"val_loss": loss_sum / n_tokens, "val_acc": correct / total, "val_images": float(total)}


def train_prompt(model: AntifakePrompt, train: Any, val: Any, options: TrainOptions) -> dict[str, Any]:
    """Prompt-tune ``model`` on ``train`` with selection on ``val``; returns the training report."""
    if getattr(val, "split", None) == "test":
        raise UserError("Model selection on the test split is not allowed")
    recipe = resolve_recipe(model.config.train, options)
    net = model.ensure_model()
    rows = prompt_parameters(net)
    optimizer = torch.optim.AdamW([{"params": rows, "weight_decay": recipe.weight_decay}], lr=recipe.lr,
                                  betas=(recipe.beta1, recipe.beta2))
    out = options.out_dir
    last, best = out / "last", out / "best"
    state: dict[str, Any] = {"epoch": 0, "step": 0, "best_val_loss": math.inf, "best_val_acc": None,
                             "best_epoch": -1, "stopped": "", "skipped_samples": 0, "last_loss": math.nan,
                             "history": []}
    resumed = resume_run(out, options.resume)
    if resumed is not None:
        weights, saved = resumed
        with torch.no_grad():
            for row, key in zip(rows, (km.QFORMER_PSEUDO, km.LLM_PSEUDO)):
                row.copy_(weights[key].to(row.dtype))
        optimizer.load_state_dict(saved["optimizer"])
        state.update(saved["state"], stopped="")
    start_epoch = state["epoch"]
    size, cfg = model.config.vision.image_size, model.config
    batch_size = recipe.batch_size
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = recipe.epochs * steps_per_epoch if options.max_steps is None else min(recipe.epochs * steps_per_epoch,
                                                                                  options.max_steps)
    torch.manual_seed(options.seed)
    with make_progress() as progress:
        task = progress.add_task("train", total=total, completed=state["step"])
        while state["epoch"] < recipe.epochs and not state["stopped"]:
            epoch = state["epoch"]
            net.train()
            net.vision_model.eval()
            torch.manual_seed(int(np.random.SeedSequence([options.seed, epoch, 11]).generate_state(1)[0]))
            items: list[torch.Tensor] = []
            labels: list[int] = []
            iteration = 0
            stream = shuffled_images(train, options.seed, epoch, recipe.shuffle_buffer, lambda im: resize_bicubic(im, size))
            for pos, (image, label) in enumerate(stream):
                if image is None:
                    state["skipped_samples"] += 1
                    continue
                rng = np.random.default_rng([options.seed, epoch, pos])
                view = random_crop(image, size, rng)
                if rng.random() < 0.5:
                    view = view[:, ::-1]
                items.append(to_tensor(np.ascontiguousarray(view), cfg.mean, cfg.std))
                labels.append(int(label))
                if len(items) == batch_size:
                    _step(model, optimizer, lavis_lr(recipe, epoch, iteration), items, labels, state)
                    iteration += 1
                    progress.update(task, advance=1, description=f"epoch {epoch + 1} loss {state['last_loss']:.4f}")
                    if options.max_steps is not None and state["step"] >= options.max_steps:
                        state["stopped"] = "max_steps"
                        break
            if items and not state["stopped"]:
                _step(model, optimizer, lavis_lr(recipe, epoch, iteration), items, labels, state)
                progress.advance(task)
            metrics = evaluate(model, val, batch_size)
            metrics.update(epoch=float(epoch), train_loss=state["last_loss"], lr=optimizer.param_groups[0]["lr"])
            state["history"].append(metrics)
            state["epoch"] = epoch + 1
            if metrics["val_loss"] < state["best_val_loss"]:
                state.update(best_val_loss=metrics["val_loss"], best_val_acc=metrics["val_acc"], best_epoch=epoch)
                _save(model, best, state, options, recipe, None)
            _save(model, last, state, options, recipe, optimizer)
    return {
        "out_dir": str(out), "best": str(best), "last": str(last), "epochs_run": state["epoch"] - start_epoch,
        "epoch": state["epoch"], "steps": state["step"], "best_val_loss": state["best_val_loss"],
        "best_val_acc": state["best_val_acc"], "best_epoch": state["best_epoch"],
        "stopped": state["stopped"] or "epochs", "skipped_samples": state["skipped_samples"],
        "history": state["history"], "recipe": asdict(recipe), "batch_size": batch_size,
        "trainable_parameters": sum(r.numel() for r in rows),
    }


def _step(model: AntifakePrompt, optimizer: torch.optim.Optimizer, lr: float, items: list[torch.Tensor],
          labels: list[int], state: dict[str, Any]) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss_sum, count = lm_loss_sum(model, torch.stack(items).to(model.device, model.dtype), labels)
    loss = loss_sum / count
    if not math.isfinite(float(loss.detach())):
        raise UserError(f"Training diverged: loss {float(loss)} at step {state['step']}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    state["step"] += 1
    state["last_loss"] = float(loss.detach())
    items.clear()
    labels.clear()


def _save(model: AntifakePrompt, folder: Any, state: dict[str, Any], options: TrainOptions, recipe: PromptRecipe,
          optimizer: torch.optim.Optimizer | None) -> None:
    history = state["history"]
    config = model.checkpoint_config()
    config.update(epoch=state["epoch"], step=state["step"], seed=options.seed, recipe=asdict(recipe),
                  val_loss=history[-1]["val_loss"] if history else None,
                  val_acc=history[-1]["val_acc"] if history else None)
    save_checkpoint(folder, model.prompt_state(), config)
    if optimizer is not None:
        torch.save({"optimizer": optimizer.state_dict(), "state": dict(state)}, folder / TRAINER_STATE)
