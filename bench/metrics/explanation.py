"""Explanation quality (issue 18): text vs reference, SIDA-description slots, and consistency.

``update(texts, references, labels, predicted, pred_masks=None, gt_masks=None, sample_ids=None)``:
per sample, the model's text (``None`` = no text), the reference description (``None`` = none),
the ground-truth class and the predicted class (0 real, 1 full synthetic, 2 tampered; -1 = no
prediction), and optional predicted (float, forgery probability) and ground-truth (bool) masks.

Conventions (all in ``convention()``):

- Hypothesis = the text with ``[CLS]``/``[SEG]``/``<s>``/``</s>`` removed, cut at ``[END]``, and
  without its leading verdict clause ("The image is tampered."); reference = the same
  normalisation of the description (:mod:`bench.explanation.parser`).
- **Text metrics** (``rouge_l``, ``bleu1``, ``bleu2``, ``bleu4``, ``chrf``, ``css``) use the samples
  with a text and a non-empty reference; samples without a reference are counted
  (``n_no_reference``), never scored as zero. ROUGE-L and CSS are per-sample means; BLEU and chrF
  are corpus scores of the summed statistics (:mod:`bench.explanation.text_scores`). CSS is
  computed only when the protocol names an embedder that is found (:mod:`bench.explanation.embedder`).
- **Slots** (both answer and reference parsed): ``slot_type_acc`` (type values equal),
  ``slot_areas_rouge_l``, ``slot_content_rouge_l``, ``slot_inconsistencies_rouge_l`` (ROUGE-L of
  the slot texts, where both have the slot) and ``slot_aspects_f1`` (F1 of the sets of
  ``<aspect>`` tags). ``parse_rate`` = parsed texts / texts; ``n_unparseable`` counts the rest.
- **Consistency** (no reference needed): ``class_vs_pred`` / ``class_vs_gt`` = the class the text
  states equals the predicted / ground-truth class, over texts that state exactly one class
  (``n_class_unstated`` counts the others, contradictory ones included). ``region_vs_pred`` /
  ``region_vs_gt``: over texts that state "tampered" and name image positions, every named
  region contains the centroid of the predicted mask (``p > mask_threshold``) / of the
  ground-truth mask (ground-truth tampered images); a missing or empty mask leaves the sample out.
  ``n_region_unstated`` counts tampered-stating texts that name no position.
- Every key also exists per ground-truth class as ``<class>/<key>``. Values are fractions
  (CSS is a cosine in [-1, 1]); undefined values (no sample) are NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.errors import UserError
from bench.explanation.embedder import POOLINGS, SentenceEmbedder, resolve_embedder
from bench.explanation.parser import ParsedAnswer, normalise, parse_answer
from bench.explanation.regions import mask_centroid
from bench.explanation.text_scores import BLEU_ORDERS, BLEU_STATS, TextScorer
from bench.metrics.base import SampleMetric
from bench.types import LABEL_NAMES, TAMPERED, LabelSpace

CLASS_NAMES = LABEL_NAMES[LabelSpace.TERNARY]
SLOT_KEYS = ("areas", "content", "inconsistencies")
NAN = float("nan")


def _mean(values: np.ndarray, w: np.ndarray) -> float:
    ok = np.isfinite(values) & (w > 0)
    total = w[ok].sum()
    return float((values[ok] * w[ok]).sum() / total) if total else NAN


def _set_f1(a: Sequence[str], b: Sequence[str]) -> float:
    sa, sb = set(a), set(b)
    if not sa and not sb:
        return 1.0
    return 2 * len(sa & sb) / (len(sa) + len(sb))


class Explanation(SampleMetric):
    """Explanation text scores, slot scores and consistency rates (see the module docstring).

    Args:
        css_embedder: the embedder's name (``None`` = no CSS); css_path: its local folder
            (else ``$SIDA_BENCH_MODELS/<name>``); css_config_sha256: the pinned sha256 of its
            ``config.json`` (a mismatch is an error); css_pooling: ``mean`` | ``cls``;
            css_max_length: token limit. rouge_stemmer: Porter stemming in ROUGE-L.
            mask_threshold: a predicted-mask pixel is positive iff ``p > mask_threshold``.
    """

    name = "explanation"
    task = "explanation"

    def __init__(self, css_embedder: str | None = None, css_path: str | None = None,
                 css_config_sha256: str | None = None, css_pooling: str = "mean", css_max_length: int = 256,
                 rouge_stemmer: bool = True, mask_threshold: float = 0.5) -> None:
        super().__init__()
        if css_pooling not in POOLINGS:
            raise UserError(f"explanation: css_pooling must be one of {', '.join(POOLINGS)}, got {css_pooling!r}")
        if not 0.0 <= float(mask_threshold) < 1.0:
            raise UserError(f"explanation: mask_threshold must be in [0, 1), got {mask_threshold!r}")
        self.scorer = TextScorer(use_stemmer=bool(rouge_stemmer))
        self.mask_threshold = float(mask_threshold)
        self.css_embedder = css_embedder
        self.embedder: SentenceEmbedder | None = None
        self.css_status = "not computed: the protocol names no embedder (css_embedder)"
        if css_embedder:
            folder = resolve_embedder(css_embedder, css_path)
            if folder is None:
                self.css_status = (f"not available: embedder {css_embedder!r} not found (css_path or "
                                   f"$SIDA_BENCH_MODELS/{css_embedder})")
            else:
                self.embedder = SentenceEmbedder(folder, css_pooling, css_max_length,
                                                 expected_config_sha256=css_config_sha256)
                self.css_status = "computed"

    def convention(self) -> dict[str, Any]:
        return {
            **self.scorer.convention(),
            "hypothesis": "text without [CLS]/[SEG]/<s>/</s>, cut at [END], leading verdict clause removed",
            "css": {"status": self.css_status, "embedder": self.css_embedder,
                    **(self.embedder.describe() if self.embedder is not None else {})},
            "slots": "docs/explanations.md grammar; unparseable answers counted, never guessed",
            "class_consistency": "stated class (verdict, else type slot) == predicted / ground-truth class",
            "region_consistency": f"every named region contains the mask centroid; pred mask p > {self.mask_threshold}",
            "per_class": "by ground-truth class",
            "missing_reference": "counted in n_no_reference, not scored",
        }

    def _row_spec(self) -> dict[str, tuple[tuple[int, ...], Any]]:
        spec: dict[str, tuple[tuple[int, ...], Any]] = {
            k: ((), np.int8) for k in ("label", "pred", "has_text", "has_ref", "parsed", "stated")}
        spec.update({k: ((), np.float64) for k in ("rouge_l", "css", "slot_type", "slot_aspects", "region_pred",
                                                    "region_gt", "region_unstated")})
        spec.update({f"slot_{k}": ((), np.float64) for k in SLOT_KEYS})
        spec["bleu"] = ((BLEU_STATS,), np.float64)
        spec["chrf"] = ((self.scorer.chrf_stats_size,), np.float64)
        return spec

    # ------------------------------------------------------------------------------ update
    def update(self, texts: Sequence[str | None], references: Sequence[str | None], labels: Any, predicted: Any,
               pred_masks: Sequence[np.ndarray | None] | None = None,
               gt_masks: Sequence[np.ndarray | None] | None = None, sample_ids: Any = None) -> None:
        n = len(texts)
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
        pred = np.asarray(predicted, dtype=np.int64).reshape(-1)
        if len(references) != n or len(y) != n or len(pred) != n:
            raise UserError(f"explanation: got {n} texts, {len(references)} references, {len(y)} labels and "
                            f"{len(pred)} predicted classes")
        if np.any((y < 0) | (y > 2)) or np.any((pred < -1) | (pred > 2)):
            raise UserError("explanation: classes must be 0 real, 1 full synthetic, 2 tampered (-1 = no prediction)")
        pred_masks = list(pred_masks) if pred_masks is not None else [None] * n
        gt_masks = list(gt_masks) if gt_masks is not None else [None] * n
        if len(pred_masks) != n or len(gt_masks) != n:
            raise UserError(f"explanation: mask lists must have {n} entries")
        spec = self._row_spec()
        rows = {k: np.zeros((n, *shape), dtype) for k, (shape, dtype) in spec.items()}
        for k in ("rouge_l", "css", "slot_type", "slot_aspects", "region_pred", "region_gt", "region_unstated",
                  *(f"slot_{s}" for s in SLOT_KEYS)):
            rows[k][:] = NAN
        rows["label"], rows["pred"] = y.astype(np.int8), pred.astype(np.int8)
        pairs: list[tuple[int, str, str]] = []
        for i in range(n):
            text, ref = texts[i], references[i]
            if text is None:
                rows["parsed"][i], rows["stated"][i] = -1, -1
                continue
            answer = parse_answer(text)
            reference = parse_answer(ref) if ref is not None and normalise(ref) else None
            rows["has_text"][i], rows["has_ref"][i] = 1, int(reference is not None)
            rows["parsed"][i] = int(answer.parsed)
            stated = answer.stated_class
            rows["stated"][i] = -1 if stated is None else stated
            if reference is not None:
                pairs.append((i, answer.description, reference.description))
                self._slot_scores(rows, i, answer, reference)
            if stated == TAMPERED:
                self._region_scores(rows, i, answer, pred_masks[i], gt_masks[i] if y[i] == TAMPERED else None)
        for i, hyp, ref in pairs:
            rows["rouge_l"][i] = self.scorer.rouge_l(hyp, ref)
            rows["bleu"][i] = self.scorer.bleu_stats(hyp, ref)
            rows["chrf"][i] = self.scorer.chrf_stats(hyp, ref)
        if self.embedder is not None and pairs:
            idx = [i for i, _, _ in pairs]
            rows["css"][idx] = self.embedder.similarity([h for _, h, _ in pairs], [r for _, _, r in pairs])
        self._append(rows, sample_ids)

    def _slot_scores(self, rows: dict[str, np.ndarray], i: int, answer: ParsedAnswer, reference: ParsedAnswer) -> None:
        if not (answer.parsed and reference.parsed):
            return
        rows["slot_type"][i] = float(answer.slots["type"] == reference.slots["type"])
        for key in SLOT_KEYS:
            if key in answer.slots and key in reference.slots:
                rows[f"slot_{key}"][i] = self.scorer.rouge_l(answer.slots[key], reference.slots[key])
        if "inconsistencies" in answer.slots and "inconsistencies" in reference.slots:
            rows["slot_aspects"][i] = _set_f1(answer.aspects, reference.aspects)

    def _region_scores(self, rows: dict[str, np.ndarray], i: int, answer: ParsedAnswer,
                       pred_mask: np.ndarray | None, gt_mask: np.ndarray | None) -> None:
        rows["region_unstated"][i] = float(not answer.regions)
        if not answer.regions:
            return
        for key, mask in (("region_pred", pred_mask), ("region_gt", gt_mask)):
            point = mask_centroid(mask, self.mask_threshold) if mask is not None else None
            if point is not None:
                rows[key][i] = float(all(r.contains(point) for r in answer.regions))

    # ------------------------------------------------------------------------------ compute
    def _compute(self, table: dict[str, np.ndarray], w: np.ndarray) -> dict[str, float]:
        out = self._values(table, w)
        for c, name in enumerate(CLASS_NAMES):
            out.update({f"{name}/{k}": v for k, v in self._values(table, w * (table["label"] == c)).items()})
        return out

    def _values(self, t: dict[str, np.ndarray], w: np.ndarray) -> dict[str, float]:
        has_text, has_ref = t["has_text"] == 1, t["has_ref"] == 1
        scored = w * (has_text & has_ref)
        out: dict[str, float] = {"n": float(w.sum()), "n_no_text": float(w[~has_text].sum()),
                                 "n_no_reference": float(w[has_text & ~has_ref].sum()), "n_scored": float(scored.sum())}
        out["rouge_l"] = _mean(t["rouge_l"], scored)
        bleu = (t["bleu"] * scored[:, None]).sum(0)
        for order in BLEU_ORDERS:
            out[f"bleu{order}"] = self.scorer.bleu(bleu, order) if scored.sum() else NAN
        out["chrf"] = self.scorer.chrf((t["chrf"] * scored[:, None]).sum(0)) if scored.sum() else NAN
        out["css"] = _mean(t["css"], scored) if self.embedder is not None else NAN
        texts = w * has_text
        out["parse_rate"] = _mean(t["parsed"].astype(np.float64), texts)
        out["n_unparseable"] = float(texts[t["parsed"] == 0].sum())
        out["slot_type_acc"] = _mean(t["slot_type"], w)
        for key in SLOT_KEYS:
            out[f"slot_{key}_rouge_l"] = _mean(t[f"slot_{key}"], w)
        out["slot_aspects_f1"] = _mean(t["slot_aspects"], w)
        stated = t["stated"].astype(np.int64)
        known = w * (has_text & (stated >= 0))
        out["class_vs_gt"] = _mean((stated == t["label"]).astype(np.float64), known)
        out["class_vs_pred"] = _mean((stated == t["pred"]).astype(np.float64), known * (t["pred"] >= 0))
        out["n_class_unstated"] = float(texts[stated < 0].sum())
        out["region_vs_pred"] = _mean(t["region_pred"], w)
        out["region_vs_gt"] = _mean(t["region_gt"], w)
        out["n_region_unstated"] = float(w[t["region_unstated"] == 1].sum())
        return out
