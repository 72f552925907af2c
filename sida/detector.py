"""The ``sida`` model plugin: ternary detection, tampered-region masks and explanations.

Configurations: ``default`` (SIDA-7B), ``13b`` (SIDA-13B), ``tiny`` (random weights, CPU tests).

Options (``create_model("sida[:CONFIG]", weights=..., **options)``; on the CLI ``--option K=V``):
- ``eval_mode``: ``"honest"`` (default) — the predicted class decides whether a mask is made and
  nothing from the ground truth enters the prompt; ``"official"`` — as the official ``test.py``:
  a mask for every ground-truth tampered image with the teacher-forced answer. Official mode
  needs the labels: ``predict_preprocessed(items, sizes, labels=[...])`` (``wants_labels`` is True).
  Detection probabilities are identical in both modes (the state before ``[CLS]`` only sees the
  prompt, causal attention); the [SEG] state is the same teacher-forced "… tampered [SEG]" answer.
- ``always_mask`` (bool): also return the mask when the predicted class is not tampered (a map of
  where the model would localise; recorded in the results). Off by default.
- ``explain`` (bool) and ``text``: ``"template"`` (the official SIDA behaviour: a fixed sentence per
  predicted class), ``"generated"`` (greedy LLM text, for description checkpoints), ``"auto"``
  (generated for description configurations, else template).
- ``dtype``: ``"fp32"`` | ``"bf16"`` | ``"fp16"``; ``vision_tower``: local CLIP ViT-L/14 folder;
  ``sam_checkpoint``: local ``sam_vit_h_4b8939.pth`` (only when the checkpoint lacks SAM weights).

Weights: a released checkpoint folder in the official HF layout (:mod:`sida.checkpoint_map`), or
this harness's own ``model.safetensors`` + ``config.json`` folder written by ``sida-bench train``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.checkpoint import is_our_checkpoint, load_checkpoint
from bench.errors import UserError
from bench.model import Capability, Detector, InputPolicy, TrainOptions
from bench.types import TAMPERED, LabelSpace, Prediction
from sida import prompts
from sida.batch import SidaBatch
from sida.checkpoint_map import assign_strict, estimate_memory, load_official, plan_official_load, resolve_dtype
from sida.config import CLIP_MEAN, CLIP_STD, CONFIGS, SidaConfig
from sida.losses import PRESET_NAMES
from sida.model import SidaModel
from sida.preprocess import SidaInput, preprocess_image
from sida.tokenizer import build_tiny_tokenizer, load_tokenizer, special_token_ids

TEMPLATES = (
    "[CLS] This image is classified as real. It shows no signs of tampering or synthesis.",
    "[CLS] This image is classified as full synthetic. It appears entirely artificially generated.",
    "[CLS] This image is classified as tampered. It has been altered. [SEG] "
    "A mask highlighting the tampered region is provided.",
)
"""The official SIDA's fixed answer per predicted class (``model/SIDA.py`` ``evaluate``)."""

EVAL_MODES = ("honest", "official")
TEXT_MODES = ("auto", "template", "generated")


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.lower() in ("1", "true", "yes", "on")
    raise UserError(f"sida option {name} must be true or false, got {value!r}")


def _choice(value: Any, name: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise UserError(f"sida option {name} must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


class SidaDetector(Detector):
    """SIDA (CVPR 2025) as the official code runs it; see the module docstring for the options."""

    name = "sida"
    label_space = LabelSpace.TERNARY
    capabilities = frozenset({Capability.DETECT, Capability.LOCALIZE, Capability.EXPLAIN})
    configs = CONFIGS
    weights_help = (
        "Use a local copy of saberzl/SIDA-7B or saberzl/SIDA-13B (HF folder with config.json, tokenizer "
        "and pytorch_model*.bin), plus vision_tower=<local openai/clip-vit-large-patch14>; see docs/sida.md."
    )

    def build(self, config: SidaConfig, **options: Any) -> None:
        known = {"eval_mode", "always_mask", "explain", "text", "dtype", "vision_tower", "sam_checkpoint",
                 "loss_preset", "attention", "fc_input"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise UserError(f"Unknown sida option(s) {unknown}; known: {', '.join(sorted(known))}")
        self.eval_mode = _choice(options.get("eval_mode", "honest"), "eval_mode", EVAL_MODES)
        self.always_mask = _flag(options.get("always_mask", False), "always_mask")
        self.explain = _flag(options.get("explain", False), "explain")
        self.text_option = _choice(options.get("text", "auto"), "text", TEXT_MODES)
        self.text_mode = self._text_mode(config)
        self.dtype_name = str(options.get("dtype", "fp32"))
        self.dtype = resolve_dtype(self.dtype_name)
        self.vision_tower = Path(options["vision_tower"]).expanduser() if options.get("vision_tower") else None
        self.sam_checkpoint = Path(options["sam_checkpoint"]).expanduser() if options.get("sam_checkpoint") else None
        switches = {k: options[k] for k in ("attention", "fc_input", "loss_preset") if k in options}
        if "loss_preset" in switches:
            _choice(switches["loss_preset"], "loss_preset", PRESET_NAMES)
        if switches:
            try:
                self.config = config = replace(config, **switches)
            except ValueError as exc:
                raise UserError(f"sida: {exc}") from exc
        self.net: SidaModel | None = None
        self.tokenizer: Any = None

    def _text_mode(self, config: SidaConfig) -> str:
        if self.text_option == "auto":
            return "generated" if config.description else "template"
        return self.text_option

    # ------------------------------------------------------------------ model life cycle
    def modules(self) -> dict[str, torch.nn.Module]:
        return {"net": self.net} if self.net is not None else {}

    def _install(self, net: SidaModel, tokenizer: Any) -> None:
        self.net, self.tokenizer = net.to(self.dtype), tokenizer
        self.net.to(self.device).eval()

    def ensure_model(self) -> SidaModel:
        """The network; without weights it is built on first use with seeded random weights and the tiny tokenizer."""
        if self.net is None:
            cls = self.config.has_detection_head  # LISA's tokenizer has no [CLS]
            tokenizer = build_tiny_tokenizer(description=self.config.description, cls=cls)
            estimate = estimate_memory(self.config, len(tokenizer), self.dtype_name)
            if estimate.total > 1e8:
                print(f"{self.name}: building random {self.config_name}: {estimate}", file=sys.stderr)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # random weights are the same on every build
                net = SidaModel(self.config, special_token_ids(tokenizer, cls=cls), len(tokenizer))
            self._install(net, tokenizer)
        return self.net  # type: ignore[return-value]

    def load_weights(self, path: Path) -> None:
        path = Path(path)
        if is_our_checkpoint(path):
            self._load_ours(path)
            return
        if not path.is_dir():
            raise UserError(f"{self.config.family} weights must be a checkpoint folder, got the file {path}. "
                            f"{self.weights_help}")
        plan = plan_official_load(path, self.config, dtype=self.dtype_name, vision_tower=self.vision_tower,
                                  sam_checkpoint=self.sam_checkpoint, allow_pickle=self.allow_pickle)
        cls = self.config.has_detection_head
        tokenizer = load_tokenizer(path, description=self.config.description, cls=cls)
        net = load_official(path, self.config, special_token_ids(tokenizer, cls=cls), dtype=self.dtype_name,
                            allow_pickle=self.allow_pickle, plan=plan)
        self._install(net, tokenizer)

    def _load_ours(self, path: Path) -> None:
        state, saved = load_checkpoint(path)
        if saved.get("description"):  # a stage-2 (description) checkpoint keeps its generated text
            self.config = replace(self.config, description=True)
            self.text_mode = self._text_mode(self.config)
        folder = path if path.is_dir() else path.parent
        has_tokenizer = (folder / "tokenizer.json").is_file() or (folder / "tokenizer.model").is_file()
        description, cls = self.config.description, self.config.has_detection_head
        tokenizer = (load_tokenizer(folder, description=description, cls=cls) if has_tokenizer
                     else build_tiny_tokenizer(description=description, cls=cls))
        vocab = state["lm.model.embed_tokens.weight"].shape[0] if "lm.model.embed_tokens.weight" in state else len(tokenizer)
        net = SidaModel(self.config, special_token_ids(tokenizer, cls=cls), vocab)
        if any("lora_" in k for k in state):
            net.add_lora()
        assign_strict(net, {k: v.to(self.dtype).clone() if v.is_floating_point() else v for k, v in state.items()}, path)
        self._install(net, tokenizer)

    # ------------------------------------------------------------------ inference
    @property
    def input_policy(self) -> InputPolicy:
        return InputPolicy(
            resize=self.config.sam.image_size, resize_mode="longest_side", mean=CLIP_MEAN, std=CLIP_STD,
            interpolation="bilinear",
            notes=(f"two branches: SAM ResizeLongestSide({self.config.sam.image_size}) bilinear, SAM mean/std "
                   f"(0..255), zero-pad bottom/right; CLIP shorter side {self.config.clip.image_size} bicubic + "
                   f"centre crop, CLIP mean/std (listed); eval_mode={self.eval_mode}"),
        )

    @property
    def wants_labels(self) -> bool:
        """True when ``predict_preprocessed`` needs the ground-truth labels (official mode)."""
        return self.eval_mode == "official"

    def preprocess(self, image: np.ndarray) -> SidaInput:
        return preprocess_image(image, self.config.sam.image_size, self.config.clip.image_size)

    def make_batch(self, items: Sequence[SidaInput], question: str, answer: str | None) -> SidaBatch:
        """Same conversation for every item; masks returned at each image's original size."""
        encoded = [prompts.encode_conversation(self.tokenizer, question, answer) for _ in items]
        ids, attention, _ = prompts.collate_conversations(encoded, self.tokenizer.pad_token_id)
        return SidaBatch(
            images_sam=torch.stack([it.image_sam for it in items]), images_clip=torch.stack([it.image_clip for it in items]),
            input_ids=ids, attention_mask=attention, resize_sizes=[it.resize_size for it in items],
            mask_sizes=[it.original_size for it in items],
        ).to(self.device, self.dtype)

    def predict(self, images: Sequence[np.ndarray], labels: Sequence[int] | None = None) -> list[Prediction]:
        items = [self.preprocess(img) for img in images]
        return self.predict_preprocessed(items, [img.shape[:2] for img in images], labels=labels)

    def predict_preprocessed(self, items: Sequence[Any], sizes: Sequence[tuple[int, int]],
                             labels: Sequence[int] | None = None) -> list[Prediction]:
        """Probabilities, masks (forgery probabilities at each image's size) and optional text.

        ``labels`` (0 real, 1 full synthetic, 2 tampered) are read only in ``official`` mode.
        """
        if self.wants_labels and (labels is None or len(labels) != len(items)):
            raise UserError("sida eval_mode=official needs the ground-truth label of every image "
                            "(predict_preprocessed(..., labels=[...])); use eval_mode=honest otherwise")
        if not items:
            return []
        net = self.ensure_model()
        batch = self.make_batch(items, prompts.QUESTION, prompts.detection_answer(TAMPERED))
        def mask_for(cls_logits: torch.Tensor) -> list[bool]:
            if labels is not None and self.wants_labels:
                return [int(label) == TAMPERED for label in labels]
            return [self.always_mask or int(c) == TAMPERED for c in cls_logits.argmax(dim=-1)]

        with torch.inference_mode():
            # One LM pass: the [CLS] state sees only the prompt (causal), so the teacher-forced
            # "... tampered [SEG]" answer does not change detection; SAM runs only where needed.
            out = net(batch, mask_for=mask_for)
            logits = out.cls_logits.double().cpu().numpy()
            probs = torch.softmax(out.cls_logits.double(), dim=-1).cpu().numpy()
            masks = [torch.sigmoid(m[0].float()).cpu().numpy().astype(np.float32) if len(m) else None
                     for m in out.pred_masks]
            texts = self._texts(items, probs.argmax(axis=1)) if self.explain else [None] * len(items)
        return [Prediction(probs=probs[i], mask=masks[i], text=texts[i], logits=logits[i]) for i in range(len(items))]

    def _texts(self, items: Sequence[SidaInput], predicted: np.ndarray) -> list[str | None]:
        if self.text_mode == "template":
            return [TEMPLATES[int(p)] for p in predicted]
        net = self.ensure_model()
        stop = tuple(t for t in (net.tokens.eos, net.tokens.end) if t is not None)
        texts: list[str | None] = []
        for item in items:
            batch = self.make_batch([item], prompts.QUESTION_DESCRIPTION, None)
            new = net.greedy_generate(batch, self.config.max_new_tokens, stop)[0]
            texts.append(self.tokenizer.decode(new, skip_special_tokens=True).strip())
        return texts

    # ------------------------------------------------------------------ training
    def fit(self, train: Any, val: Any, options: TrainOptions) -> dict[str, Any]:
        """Stage 1 / stage 2 training (``sida.training.train_sida``)."""
        from sida.training import train_sida

        self.ensure_model()
        return train_sida(self, train, val, options)

    def train_option_names(self) -> tuple[str, ...]:
        from sida.training import EXTRA_KEYS

        return EXTRA_KEYS

