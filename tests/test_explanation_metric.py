"""The ``explanation`` metric: text scores equal the reference packages, CSS equals a hand computation
with a tiny random BERT, consistency on constructed cases, references counted and never zero-filled,
shards merge, and the bootstrap gives intervals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF

from bench.evaluation.bootstrap import bootstrap_ci
from bench.errors import UserError
from bench.metrics.explanation import Explanation

HYPS = ["the cat sat on the mat", "a red car is parked near the old house", "",
        "lighting is inconsistent around the edges of the pasted object"]
REFS = ["the cat is on the mat", "a blue car parked near the house", "something else entirely",
        "the edges of the pasted object show inconsistent lighting"]


def test_text_metrics_equal_rouge_score_and_sacrebleu() -> None:
    m = Explanation(rouge_stemmer=True)
    m.update(HYPS, REFS, [0, 1, 2, 2], [0, 1, 2, 2])
    v = m.compute()
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    assert v["rouge_l"] == pytest.approx(np.mean([scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(HYPS, REFS)]))
    for order in (1, 2, 4):
        expected = BLEU(max_ngram_order=order).corpus_score(HYPS, [REFS]).score / 100
        assert v[f"bleu{order}"] == pytest.approx(expected, abs=1e-12)
    assert v["chrf"] == pytest.approx(CHRF().corpus_score(HYPS, [REFS]).score / 100, abs=1e-12)
    # per ground-truth class: the tampered pair only
    assert v["tampered/bleu4"] == pytest.approx(BLEU().corpus_score(HYPS[2:], [REFS[2:]]).score / 100, abs=1e-12)
    assert v["tampered/n_scored"] == 2 and np.isnan(v["css"])  # no embedder named: no CSS


def test_markup_and_verdict_are_removed_before_scoring() -> None:
    m = Explanation()
    m.update(["<s> [CLS] The image is tampered. [SEG] " + REFS[3] + " [END] trailing"], [REFS[3]], [2], [2])
    v = m.compute()
    assert v["rouge_l"] == 1.0 and v["chrf"] == pytest.approx(1.0) and v["bleu4"] == pytest.approx(1.0)


def test_samples_without_reference_or_text_are_counted_never_zero_filled() -> None:
    m = Explanation()
    m.update([HYPS[0], HYPS[0], None], [REFS[0], None, REFS[0]], [0, 0, 0], [0, 0, 0])
    v = m.compute()
    only = Explanation()
    only.update([HYPS[0]], [REFS[0]], [0], [0])
    assert v["rouge_l"] == only.compute()["rouge_l"]
    assert (v["n"], v["n_scored"], v["n_no_reference"], v["n_no_text"]) == (3, 1, 1, 1)
    empty_ref = Explanation()
    empty_ref.update([HYPS[0]], ["  [END] "], [0], [0])
    assert empty_ref.compute()["n_no_reference"] == 1 and np.isnan(empty_ref.compute()["rouge_l"])


def _tiny_bert(folder: Path) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    words = sorted({w for t in HYPS + REFS for w in t.split()})
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=5 + len(words), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config).eval().save_pretrained(folder)
    return folder


def test_css_equals_a_hand_computation_with_a_tiny_random_bert(tmp_path: Path) -> None:
    import hashlib

    import torch
    from transformers import BertModel, BertTokenizer

    folder = _tiny_bert(tmp_path / "tiny-bert")
    m = Explanation(css_embedder="tiny-bert", css_path=str(folder))
    m.update(HYPS, REFS, [0, 1, 2, 2], [0, 1, 2, 2])
    v = m.compute()
    tok, model = BertTokenizer.from_pretrained(folder), BertModel.from_pretrained(folder).eval()

    def embed(text: str) -> np.ndarray:
        ids = tok(text, return_tensors="pt")  # one text: no padding, every token counts
        with torch.no_grad():
            return model(**ids).last_hidden_state[0].double().mean(0).numpy()

    cos = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in
           ((embed(h), embed(r)) for h, r in zip(HYPS, REFS))]
    assert v["css"] == pytest.approx(np.mean(cos), abs=1e-6)
    assert v["tampered/css"] == pytest.approx(np.mean(cos[2:]), abs=1e-6)
    css = m.convention()["css"]
    assert css["status"] == "computed" and css["pooling"] == "mean"
    assert css["config_sha256"] == hashlib.sha256((folder / "config.json").read_bytes()).hexdigest()
    assert set(css["weights_sha256"]) == {"model.safetensors"}
    with pytest.raises(UserError, match="css_config_sha256"):
        Explanation(css_embedder="tiny-bert", css_path=str(folder), css_config_sha256="0" * 64)


def test_css_without_the_embedder_folder_is_recorded_not_computed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SIDA_BENCH_MODELS", str(tmp_path))
    m = Explanation(css_embedder="sentence-transformers/all-MiniLM-L6-v2")
    m.update(HYPS[:1], REFS[:1], [0], [0])
    assert np.isnan(m.compute()["css"]) and m.convention()["css"]["status"].startswith("not available")
    _tiny_bert(tmp_path / "found")
    assert Explanation(css_embedder="found").convention()["css"]["status"] == "computed"  # via $SIDA_BENCH_MODELS


def _mask(rows: slice, cols: slice, prob: bool = False) -> np.ndarray:
    m = np.zeros((30, 30), dtype=bool)
    m[rows, cols] = True
    return m.astype(np.float32) if prob else m


UPPER_LEFT, LOWER_RIGHT = (slice(0, 10), slice(0, 10)), (slice(20, 30), slice(20, 30))


def test_consistency_on_constructed_cases() -> None:
    texts = [
        "[CLS] The image is real.",  # right class (pred = gt = real)
        "[CLS] The image is tampered.",  # wrong class vs gt (full synthetic), right vs pred (tampered)
        "[CLS] The image is tampered. [SEG] Type: {part tampered} Areas: in the upper left part of the image. "
        "Tampered Content: a cat.",  # region right vs pred and gt
        "[CLS] The image is tampered. [SEG] It is in the lower right corner of the image.",  # region right vs pred only
        "Something without a verdict.",  # class unstated
    ]
    labels, predicted = [0, 1, 2, 2, 2], [0, 2, 2, 2, 1]
    pred_masks = [None, _mask(*UPPER_LEFT, True), _mask(*UPPER_LEFT, True), _mask(*LOWER_RIGHT, True), None]
    gt_masks = [None, None, _mask(*UPPER_LEFT), _mask(*UPPER_LEFT), _mask(*UPPER_LEFT)]
    m = Explanation()
    m.update(texts, [None] * 5, labels, predicted, pred_masks, gt_masks)
    v = m.compute()
    assert v["class_vs_pred"] == pytest.approx(4 / 4) and v["class_vs_gt"] == pytest.approx(3 / 4)
    assert v["n_class_unstated"] == 1
    assert v["region_vs_pred"] == pytest.approx(2 / 2) and v["region_vs_gt"] == pytest.approx(1 / 2)
    assert v["n_region_unstated"] == 1  # text 2 says tampered and names no position
    assert v["parse_rate"] == pytest.approx(1 / 5) and v["n_unparseable"] == 4
    assert v["n_scored"] == 0 and np.isnan(v["rouge_l"])
    assert v["full_synthetic/class_vs_gt"] == 0.0 and v["real/class_vs_gt"] == 1.0


def test_slot_scores_against_a_parsed_reference() -> None:
    ref = ("Type: {part tampered} Areas:<tampered position> In the upper left part of the image. Tampered Content:"
           "<Types of objects or parts> A cat. Visual Inconsistencies:<lighting> Dark.<edges> Sharp.")
    good = ("[CLS] The image is tampered [SEG] Type: {part tampered} Areas:<tampered position> In the upper left part "
            "of the image. Tampered Content:<Types of objects or parts> A dog. Visual Inconsistencies:<lighting> Dark.")
    m = Explanation()
    m.update([good, "The image is tampered. garbage", good.replace("{part tampered}", "{real}")], [ref] * 3,
             [2, 2, 2], [2, 2, 2])
    v = m.compute()
    assert v["slot_type_acc"] == 0.5  # the first and third parse; the third's type {real} differs
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    assert v["slot_content_rouge_l"] == pytest.approx(scorer.score("A cat.", "A dog.")["rougeL"].fmeasure)
    assert v["slot_areas_rouge_l"] == 1.0 and v["slot_aspects_f1"] == pytest.approx(2 / 3)
    assert v["n_unparseable"] == 1


def test_shards_merge_to_one_pass_and_bootstrap_gives_intervals() -> None:
    args = (HYPS, REFS, [0, 1, 2, 2], [0, 1, 2, 1])
    whole = Explanation()
    whole.update(*args, sample_ids=["a", "b", "c", "d"])
    a, b = Explanation(), Explanation()
    a.update(HYPS[:2], REFS[:2], [0, 1], [0, 1], sample_ids=["a", "b"])
    b.update(HYPS[2:], REFS[2:], [2, 2], [2, 1], sample_ids=["c", "d"])
    a.merge(b)
    va, vw = a.compute(), whole.compute()
    assert va.keys() == vw.keys()
    assert all(va[k] == pytest.approx(vw[k], nan_ok=True) for k in vw)
    ci = bootstrap_ci(whole, n_resamples=50, seed=0)
    lo, hi = ci["rouge_l"]
    assert lo <= vw["rouge_l"] <= hi and "n_scored" not in ci
    with pytest.raises(UserError, match="conventions must match"):
        whole.merge(Explanation(mask_threshold=0.3))


def test_bad_inputs_fail_with_one_line() -> None:
    with pytest.raises(UserError, match="texts"):
        Explanation().update(["a"], [], [0], [0])
    with pytest.raises(UserError, match="classes"):
        Explanation().update(["a"], ["b"], [3], [0])
    with pytest.raises(UserError, match="css_pooling"):
        Explanation(css_pooling="max")
