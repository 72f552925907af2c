"""``run sid_mini_explanation`` end to end: SIDA template answers are scored and tabulated, class
consistency of a template equals the detection accuracy vs the ground truth, and a model without
text gets "not applicable"."""

from __future__ import annotations

from pathlib import Path

import pytest

import protocols
import tests.runner_fixtures  # noqa: F401  (registers runner_test)
from bench.cli import main
from bench.evaluation.results import load_results


@pytest.fixture(scope="module")
def sid_mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.sidmini import SMALL_PER_CLASS, SMALL_SIZE, build_sid_mini

    return build_sid_mini(tmp_path_factory.mktemp("sidmini"), per_class=SMALL_PER_CLASS, size=SMALL_SIZE)


@pytest.fixture(scope="module")
def protocol(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundled = Path(protocols.__file__).parent / "sid_mini_explanation.yaml"
    path = tmp_path_factory.mktemp("proto") / "explanation_fast.yaml"
    path.write_text(f"include: {bundled}\nname: explanation_fast\nbootstrap: {{n: 20}}\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_sida_template_answers_are_scored_into_the_explanation_table(tmp_path: Path, sid_mini_root: Path,
                                                                       protocol: Path) -> None:
    out = tmp_path / "run"
    assert main(["run", str(protocol), "--model", "sida:tiny", "--option", "explain=true",
                 "--data-root", f"sid_mini={sid_mini_root}", "--out", str(out)]) == 0
    entry = load_results(out).entries[0]
    values = entry.metrics["explanation"].values
    assert values["n"].value == 18 and values["n_scored"].value == 6 and values["n_no_reference"].value == 12
    assert values["class_vs_pred"].value == 1.0  # a template states the predicted class
    assert values["class_vs_gt"].value == pytest.approx(entry.metrics["ternary_detection"].values["accuracy"].value)
    assert values["parse_rate"].value == 0.0 and values["rouge_l"].ci is not None
    table = (out / "tables" / "explanation.md").read_text()
    assert "| sida:tiny |" in table and "CSS not available" in table
    assert (out / "tables" / "explanation.tex").is_file() and (out / "tables" / "explanation.csv").is_file()


def test_a_model_without_text_is_not_applicable(tmp_path: Path, sid_mini_root: Path, protocol: Path) -> None:
    out = tmp_path / "run"
    assert main(["run", str(protocol), "--model", "runner_test", "--data-root", f"sid_mini={sid_mini_root}",
                 "--out", str(out)]) == 0
    result = load_results(out).entries[0].metrics["explanation"]
    assert result.skipped is not None and result.skipped.startswith("not applicable") and not result.values
    table = (out / "tables" / "explanation.md").read_text()
    assert "not applicable" in table and "| runner_test | – |" in table


def echo_predictions(folder: Path, sid_mini_root: Path) -> Path:
    """A predictions file whose text states the true class and echoes the reference, with the true masks."""
    import json

    import numpy as np

    from bench.plugins import create_dataset

    words = ("real", "full synthetic", "tampered")
    records = []
    for s in create_dataset("sid_mini", root=sid_mini_root, split="test"):
        rec = {"sample_id": s.id, **{f"prob_{c}": float(s.label == i)
                                      for i, c in enumerate(("real", "full_synthetic", "tampered"))},
               "text": f"[CLS] The image is {words[s.label]}. {s.meta.get('explanation', '')} [END]"}
        if s.mask is not None:
            np.save(folder / f"{s.id.replace('/', '_')}.npy", s.mask.astype(np.float32))
            rec["mask_path"] = f"{s.id.replace('/', '_')}.npy"
        records.append(rec)
    path = folder / "preds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_a_predictions_file_that_echoes_the_references_scores_perfectly(tmp_path: Path, sid_mini_root: Path,
                                                                          protocol: Path) -> None:
    """``sida-bench score`` path: text, probabilities and masks from a file; sid-mini's references agree
    with their own masks by construction, so echoing them is perfect on every key."""
    from bench.cli.compose import score_predictions_file as score_file

    path = echo_predictions(tmp_path, sid_mini_root)
    res = score_file(path, protocol, tmp_path / "out", data_roots={"sid_mini": sid_mini_root}, name="echo")
    v = {k: m.value for k, m in res.entries[0].metrics["explanation"].values.items()}
    for key in ("rouge_l", "bleu1", "bleu4", "chrf", "slot_type_acc", "slot_areas_rouge_l", "slot_content_rouge_l",
                "slot_aspects_f1", "class_vs_pred", "class_vs_gt", "region_vs_pred", "region_vs_gt"):
        assert v[key] == pytest.approx(1.0), key
    assert v["parse_rate"] == pytest.approx(6 / 18) and v["n_unparseable"] == 12  # undescribed: a bare verdict
    assert v["n_region_unstated"] == 4 and v["tampered/n_scored"] == 2


def test_re_scoring_reads_texts_and_masks_from_the_store_alone(tmp_path: Path, sid_mini_root: Path,
                                                               protocol: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scored run re-scored from its store (texts, references in meta, masks), 5 rows a batch and in
    3 shards, gives the same numbers; with ``store_masks: stats`` region consistency has no sample."""
    import bench.evaluation.scorer as scorer
    from bench.cli.compose import score_predictions_file as score_file
    from bench.evaluation.store import PredictionStore

    path = echo_predictions(tmp_path, sid_mini_root)
    first = score_file(path, protocol, tmp_path / "out", data_roots={"sid_mini": sid_mini_root}, name="echo")
    first_values = first.entries[0].metrics["explanation"].model_dump()
    store = PredictionStore(tmp_path / "out" / "predictions")
    rows = store.read().to_pylist()
    for shard in store.shards():
        shard.unlink()
    resharded = PredictionStore(tmp_path / "out" / "predictions", flush_every=7)
    for r in rows:
        resharded.add(r)
    resharded.flush()
    assert len(resharded.shards()) == 3
    monkeypatch.setattr(scorer, "TEXT_FEED_ROWS", 5)
    again = scorer.score_run(tmp_path / "out").entries[0].metrics["explanation"].model_dump()
    assert again == first_values
    stats_proto = tmp_path / "stats.yaml"
    stats_proto.write_text(f"include: {protocol}\nname: explanation_stats\nstore_masks: stats\n", encoding="utf-8")
    res = score_file(path, stats_proto, tmp_path / "stats", data_roots={"sid_mini": sid_mini_root}, name="echo")
    v = res.entries[0].metrics["explanation"]
    assert v.values["region_vs_pred"].value is None and v.values["region_vs_gt"].value is None
    assert v.values["rouge_l"].value == pytest.approx(1.0) and "not stored" in v.convention["masks"]
