"""The ``lisa`` model plugin: LISA-7B-v1 as the LLM localizer of the SIDA paper's Table 3.

Lai et al., *LISA: Reasoning Segmentation via Large Language Model*, CVPR 2024; official code
dvlab-research/LISA (``model/LISA.py``, ``chat.py``, ``train_ds.py``). SIDA is fine-tuned from
LISA, so LISA is SIDA's network without the detection parts (:class:`sida.config.LisaConfig`): the
same :class:`sida.model.SidaModel` code, checkpoint loader (:mod:`sida.checkpoint_map`: official HF
layout, strict, memory estimate before any weight is read), preprocessing and training code.

Inference (LISA's own evaluation, ``train_ds.py`` ``validate`` with ``ValDataset``): the llava_v1
conversation ``"<system> USER: <im_start><image><im_end>\\n<prompt> ASSISTANT: [SEG].</s>"`` is
teacher-forced; the last-layer state one position before ``[SEG]`` (it sees only the prompt,
causal attention) goes through ``text_hidden_fcs`` to SAM's prompt encoder as its only sparse
token (dense: ``no_mask_embed``); the mask decoder's single output (256²) is upsampled bilinearly
to the SAM input, cropped to the resized image and upsampled bilinearly to the image's own size;
sigmoid gives the forgery probabilities. Every image gets a mask.

Label space: a localizer (capability ``localize`` only). Its predictions carry no class
probabilities (NaN); the harness scores detection through
:class:`~bench.adapters.LocalizerAsDetector` (p_fake = max of the mask), as Table 3 scores LISA.

Options (``create_model("lisa[:CONFIG]", weights=..., **options)``; on the CLI ``--option K=V``):
- ``prompt``: the segmentation question (default :data:`sida.prompts.LISA_PROMPT`, the SIDA
  paper's wording); ``"<image>\\n"`` is put before it, as ``chat.py`` does.
- ``answer``: the teacher-forced answer, with exactly one ``[SEG]`` (default ``"[SEG]."``).
- ``dtype``, ``vision_tower``, ``sam_checkpoint``: as for ``sida`` (docs/sida.md).

Configurations: ``default`` (LISA-7B-v1), ``13b`` (LISA-13B-llama2-v1), ``tiny`` (random weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from bench.errors import UserError
from bench.model import Capability, InputPolicy
from bench.types import LabelSpace, Prediction
from sida import prompts
from sida.config import LISA_CONFIGS, LisaConfig
from sida.detector import SidaDetector
from sida.preprocess import SidaInput
from sida.tokenizer import SEG_TOKEN

SHARED_OPTIONS = ("dtype", "vision_tower", "sam_checkpoint")
"""Options handled as by the ``sida`` plugin."""


def _text_option(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"lisa option {name} must be a non-empty text, got {value!r}")
    if prompts.IMAGE_TOKEN in value:
        raise UserError(f"lisa option {name} must not contain {prompts.IMAGE_TOKEN} (it is put before the prompt)")
    return value


class LisaLocalizer(SidaDetector):
    """LISA (CVPR 2024) as a tampered-region localizer; see the module docstring for the options."""

    name = "lisa"
    label_space = LabelSpace.BINARY
    capabilities = frozenset({Capability.LOCALIZE})
    configs = LISA_CONFIGS
    weights_help = (
        "Use a local copy of xinlai/LISA-7B-v1 (HF folder with config.json, tokenizer and pytorch_model*.bin), "
        "plus vision_tower=<local openai/clip-vit-large-patch14>; see docs/lisa.md."
    )

    def build(self, config: LisaConfig, **options: Any) -> None:
        known = {"prompt", "answer", *SHARED_OPTIONS}
        unknown = sorted(set(options) - known)
        if unknown:
            raise UserError(f"Unknown lisa option(s) {unknown}; known: {', '.join(sorted(known))}")
        self.prompt = _text_option(options.get("prompt", prompts.LISA_PROMPT), "prompt")
        if SEG_TOKEN in self.prompt:
            raise UserError(f"lisa option prompt must not contain {SEG_TOKEN} (the answer holds it)")
        self.answer = _text_option(options.get("answer", prompts.LISA_ANSWER), "answer")
        if self.answer.count(SEG_TOKEN) != 1:
            raise UserError(f"lisa option answer must contain exactly one {SEG_TOKEN}, got {self.answer!r}")
        self.question = prompts.lisa_question(self.prompt)
        super().build(config, **{k: options[k] for k in SHARED_OPTIONS if k in options})

    @property
    def input_policy(self) -> InputPolicy:
        return replace(
            super().input_policy,
            notes=(f"two branches as sida: SAM ResizeLongestSide({self.config.sam.image_size}) bilinear, SAM "
                   f"mean/std (0..255), zero-pad bottom/right; CLIP shorter side {self.config.clip.image_size} "
                   f"bicubic + centre crop, CLIP mean/std (listed); prompt {self.prompt!r}, teacher-forced "
                   f"answer {self.answer!r}; mask = sigmoid of SAM's output, every image"),
        )

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:  # type: ignore[override]
        items = [self.preprocess(img) for img in images]
        return self.predict_preprocessed(items, [img.shape[:2] for img in images])

    def predict_preprocessed(self, items: Sequence[SidaInput],  # type: ignore[override]
                             sizes: Sequence[tuple[int, int]]) -> list[Prediction]:
        """Forgery-probability masks at each image's size; ``probs`` NaN (scored through the mask)."""
        if not items:
            return []
        net = self.ensure_model()
        batch = self.make_batch(items, self.question, self.answer)
        with torch.inference_mode():
            out = net(batch)
            masks = [torch.sigmoid(m[0].float()).cpu().numpy().astype(np.float32) for m in out.pred_masks]
        return [Prediction(probs=np.full(self.num_classes, np.nan), mask=mask) for mask in masks]
