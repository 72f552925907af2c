"""Reference-based text scores, computed with the reference packages (per-sample, summable).

- ROUGE-L: ``rouge_score.rouge_scorer.RougeScorer(["rougeL"], use_stemmer=...)`` F-measure per
  sample (its tokenizer lower-cases and keeps ``[a-z0-9]`` runs); the set score is the mean.
- BLEU-n (n = 1, 2, 4): ``sacrebleu`` corpus BLEU (tokenizer ``13a``, ``exp`` smoothing, as
  ``sacrebleu.metrics.BLEU(max_ngram_order=n).corpus_score``): each sample contributes its n-gram
  matches and totals and its hypothesis and reference lengths; the set score is
  ``BLEU.compute_bleu`` of the sums, so it equals corpus BLEU over the same samples, and a
  bootstrap resample is a weighted sum.
- chrF: ``sacrebleu`` corpus chrF (character order 6, word order 0, beta 2) from the summed
  per-sample character n-gram statistics, equal to ``CHRF().corpus_score``.
All scores are fractions in [0, 1] (sacrebleu's 0–100 divided by 100).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

BLEU_ORDERS = (1, 2, 4)
MAX_ORDER = max(BLEU_ORDERS)
BLEU_STATS = 2 * MAX_ORDER + 2
"""Per-sample BLEU statistics: matches (orders 1..4), totals (1..4), hypothesis length, reference length."""


class TextScorer:
    """ROUGE-L, BLEU statistics and chrF statistics of (hypothesis, reference) pairs."""

    def __init__(self, use_stemmer: bool = True, bleu_tokenize: str = "13a", chrf_char_order: int = 6,
                 chrf_word_order: int = 0) -> None:
        self.use_stemmer = use_stemmer
        self.bleu_tokenize = bleu_tokenize
        self.chrf_char_order = chrf_char_order
        self.chrf_word_order = chrf_word_order

    @cached_property
    def _rouge(self) -> Any:
        from rouge_score import rouge_scorer

        return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=self.use_stemmer)

    @cached_property
    def _bleu(self) -> Any:
        from sacrebleu.metrics import BLEU

        return BLEU(max_ngram_order=MAX_ORDER, tokenize=self.bleu_tokenize)

    @cached_property
    def _chrf(self) -> Any:
        from sacrebleu.metrics import CHRF

        return CHRF(char_order=self.chrf_char_order, word_order=self.chrf_word_order)

    @property
    def chrf_stats_size(self) -> int:
        return 3 * (self.chrf_char_order + self.chrf_word_order)

    def rouge_l(self, hypothesis: str, reference: str) -> float:
        return float(self._rouge.score(reference, hypothesis)["rougeL"].fmeasure)

    def bleu_stats(self, hypothesis: str, reference: str) -> np.ndarray:
        score = self._bleu.corpus_score([hypothesis], [[reference]])
        return np.array([*score.counts, *score.totals, score.sys_len, score.ref_len], dtype=np.float64)

    def chrf_stats(self, hypothesis: str, reference: str) -> np.ndarray:
        stats = self._chrf._extract_corpus_statistics([hypothesis], [[reference]])[0]
        return np.asarray(stats, dtype=np.float64)

    def bleu(self, summed: np.ndarray, order: int) -> float:
        """Corpus BLEU-``order`` (a fraction) from summed :meth:`bleu_stats` rows."""
        from sacrebleu.metrics import BLEU

        counts = [int(round(v)) for v in summed[:order]]
        totals = [int(round(v)) for v in summed[MAX_ORDER:MAX_ORDER + order]]
        sys_len, ref_len = int(round(summed[-2])), int(round(summed[-1]))
        if sys_len == 0:
            return 0.0
        return float(BLEU.compute_bleu(counts, totals, sys_len, ref_len, smooth_method="exp",
                                       max_ngram_order=order).score) / 100.0

    def chrf(self, summed: np.ndarray) -> float:
        """Corpus chrF (a fraction) from summed :meth:`chrf_stats` rows."""
        return float(self._chrf._compute_score_from_stats([int(round(v)) for v in summed]).score) / 100.0

    def convention(self) -> dict[str, Any]:
        return {"rouge_l": f"rouge_score rougeL F-measure per sample, mean; use_stemmer={self.use_stemmer}",
                "bleu": f"sacrebleu corpus BLEU-1/2/4 from summed per-sample statistics; tokenize={self.bleu_tokenize}, "
                        "smooth=exp",
                "chrf": f"sacrebleu corpus chrF from summed statistics; char_order={self.chrf_char_order}, "
                        f"word_order={self.chrf_word_order}, beta=2"}
