"""Robustness audit: strengths measured as applied, neutralise, the audit's numbers recomputed by
hand from the run, the CLI report, and the HTML page loaded in headless Chromium."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tests.runner_fixtures as fx
from bench.audit.analysis import breaking_point, earliest_flips, open_run
from bench.audit.report import build_report
from bench.cli.compose import run_and_score
from bench.errors import UserError
from bench.perturbations.base import sample_rng
from bench.evaluation.protocol import CLEAN, load_protocol
from bench.evaluation.results import load_results
from bench.evaluation.conditions import build_conditions
from bench.evaluation.store import PredictionStore
from tests.test_perturbations import photo, quality_from_tables

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
torch.set_num_threads(1)


def conditions_of(name: str) -> list:
    return [c for c in build_conditions(load_protocol(name)) if c.key != CLEAN]


AUDIT_CONDITIONS = [(p, c) for p in ("sid_mini_audit", "sid_set_audit") for c in conditions_of(p)]


def blur_sigma(out: np.ndarray) -> float:
    profile = out[20, :, 0].astype(np.float64)
    x = np.arange(profile.size) - profile.size // 2
    return float(np.sqrt(np.sum(profile * x**2) / np.sum(profile)))


@pytest.mark.parametrize(("protocol", "cond"), AUDIT_CONDITIONS, ids=[f"{p}:{c.label}" for p, c in AUDIT_CONDITIONS])
def test_every_audit_condition_applies_its_stated_strength(protocol: str, cond) -> None:
    pert, params = cond.perturbation, cond.params
    rng = sample_rng(0, "x", cond.key)
    if cond.name == "jpeg":
        with Image.open(io.BytesIO(pert.encode(photo()))) as im:
            assert quality_from_tables({k: list(v) for k, v in im.quantization.items()}) == params["quality"]
    elif cond.name == "webp":
        data = pert.encode(photo())
        assert data[8:12] == b"WEBP" and Image.open(io.BytesIO(data)).size == (64, 48)
    elif cond.name == "resize":
        out, mask = pert(photo(), np.ones((48, 64), bool), rng)
        expected = (48, 64) if params["restore"] else (math.floor(48 * params["scale"] + 0.5),
                                                        math.floor(64 * params["scale"] + 0.5))
        assert out.shape[:2] == expected and mask.shape == expected
    elif cond.name == "gaussian_noise":
        out, _ = pert(np.full((256, 256, 3), 128, np.uint8), None, rng)
        measured = (out.astype(np.float64) - 128).std()
        assert measured == pytest.approx(math.sqrt(params["sigma"] ** 2 + 1 / 12), rel=0.02)
    elif cond.name == "gaussian_blur":
        line = np.zeros((41, 101, 3), np.uint8)
        line[:, 50] = 255
        measured = blur_sigma(pert(line, None, rng)[0])
        sigma = params["sigma"]  # the std of the sampled kernel (radius int(4 sigma + 0.5)) is below sigma at 0.5
        x = np.arange(-int(4 * sigma + 0.5), int(4 * sigma + 0.5) + 1)
        kernel = np.exp(-(x**2) / (2 * sigma**2))
        assert measured == pytest.approx(np.sqrt(np.sum(kernel * x**2) / kernel.sum()), rel=0.03)
        assert measured == pytest.approx(sigma, rel=0.08)
    elif cond.name == "crop":
        out, _ = pert(photo(), None, rng)
        assert out.shape[:2] == (math.floor(48 * params["fraction"] + 0.5), math.floor(64 * params["fraction"] + 0.5))
    elif cond.name == "chain":  # an upload pipeline: long-side limit, then JPEG at the platform's quality
        resize, jpeg = pert.steps
        big = np.asarray(Image.fromarray(photo()).resize((2400, 1200)))
        limit = resize.params()["max_long_side"]
        resized, _ = resize(big, None, rng)
        assert resized.shape[:2] == ((1200, 2400) if limit >= 2400 else (round(1200 * limit / 2400), limit))
        with Image.open(io.BytesIO(jpeg.encode(resized))) as im:
            assert quality_from_tables({k: list(v) for k, v in im.quantization.items()}) == jpeg.params()["quality"]
            assert im.layer[0][1:3] == (2, 2)  # 4:2:0 chroma subsampling
        np.testing.assert_array_equal(pert(big, None, rng)[0], jpeg(resized, None, rng)[0])
    else:
        pytest.fail(f"no measurement for {cond.name}")


def test_sweeps_are_listed_mild_to_severe() -> None:
    for name in ("sid_mini_audit", "sid_set_audit"):
        sweeps: dict[str, list[float]] = {}
        for spec in load_protocol(name).perturbations:
            if spec.sweep:
                sweeps.setdefault(spec.sweep, []).append(spec.strength)
        assert len(sweeps) == 7
        for sweep, values in sweeps.items():
            milder_is_larger = "quality" in sweep or "scale" in sweep or "fraction" in sweep
            assert values == sorted(values, reverse=milder_is_larger), (name, sweep)


def test_resize_max_long_side_sizes_and_unchanged_keys() -> None:
    from bench.plugins import create_perturbation

    pert = create_perturbation("resize", max_long_side=100, interpolation="lanczos")
    for (h, w), expected in {(300, 200): (100, 67), (200, 300): (67, 100), (80, 90): (80, 90)}.items():
        img = np.zeros((h, w, 3), np.uint8)
        out, mask = pert(img, np.zeros((h, w), bool), np.random.default_rng(0))
        assert out.shape[:2] == expected and mask.shape == expected
    assert create_perturbation("resize", scale=0.5).key == "resize(interpolation=bilinear,restore=False,scale=0.5)"
    with pytest.raises(UserError, match="not both"):
        create_perturbation("resize", scale=0.5, max_long_side=10)
    with pytest.raises(UserError, match="positive integer"):
        create_perturbation("resize", max_long_side=0)


def test_png_reencoding_is_lossless() -> None:
    from bench.plugins import create_perturbation

    pert = create_perturbation("png")
    out, _ = pert(photo(), None, np.random.default_rng(0))
    np.testing.assert_array_equal(out, photo())
    assert pert.encode(photo())[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------------- neutralise
@pytest.mark.parametrize(("block", "match"), [("{format: jpeg}", "quality"), ("{format: png, quality: 90}", "quality"),
                                              ("{format: gif}", "neutralise")])
def test_bad_neutralise_is_a_user_error(tmp_path: Path, block: str, match: str) -> None:
    path = fx.write_protocol(tmp_path, fx.FAKE_PROTOCOL + f"neutralise: {block}\n")
    with pytest.raises(UserError, match=match):
        load_protocol(path)


def test_unset_audit_fields_leave_the_resolved_protocol_unchanged() -> None:
    data = load_protocol("sid_mini_robustness").to_dict()
    assert "neutralise" not in data and all("sweep" not in p and "strength" not in p for p in data["perturbations"])
    audit = load_protocol("sid_mini_audit").to_dict()
    assert audit["perturbations"][1]["sweep"] == "JPEG quality" and audit["perturbations"][1]["strength"] == 90


def test_neutralise_is_applied_and_recorded(tmp_path: Path) -> None:
    plain = fx.write_protocol(tmp_path, fx.FAKE_PROTOCOL, "plain.yaml")
    jpeg = fx.write_protocol(tmp_path, fx.FAKE_PROTOCOL + "neutralise: {format: jpeg, quality: 40}\n", "jpeg.yaml")
    png = fx.write_protocol(tmp_path, fx.FAKE_PROTOCOL + "neutralise: {format: png}\n", "png.yaml")
    runs = {n: run_and_score(p, "runner_test", tmp_path / n, tables=False) for n, p in
            (("plain", plain), ("jpeg", jpeg), ("png", png))}
    rows = {n: {(r["sample_id"], r["perturbation"]): r for r in PredictionStore(tmp_path / n / "predictions").read(
        ["key", "sample_id", "perturbation", "probs"]).to_pylist()} for n in runs}
    assert runs["jpeg"].run["neutralise"] == {"format": "jpeg", "quality": 40}
    assert runs["plain"].run["neutralise"] is None
    for entry in runs["jpeg"].entries:
        assert entry.perturbation.params["neutralise"]["quality"] == 40
    assert "neutralise" not in runs["plain"].entries[0].perturbation.params
    assert runs["jpeg"].protocol.resolved["neutralise"] == {"format": "jpeg", "quality": 40}
    assert all(rows["png"][k]["probs"] == rows["plain"][k]["probs"] for k in rows["plain"])  # lossless: same pixels
    assert any(rows["jpeg"][k]["probs"] != rows["plain"][k]["probs"] for k in rows["plain"])
    assert all(rows["png"][k]["key"] != rows["plain"][k]["key"] for k in rows["plain"])  # never a reuse
    # the neutralised image is what the perturbation sees: JPEG 40 first, then the noise
    from bench.perturbations.spec import perturbation_from_spec

    image = np.asarray(Image.open(io.BytesIO(perturbation_from_spec({"name": "jpeg", "quality": 40}).encode(photo()))))
    cond = next(c for c in build_conditions(load_protocol(jpeg)) if c.key != CLEAN)
    assert cond.neutralise is not None
    np.testing.assert_array_equal(cond.neutralise(photo(), None, np.random.default_rng(0))[0], image)


# ----------------------------------------------------------------------------------- analysis
AUDIT_PROTOCOL = """\
version: 1
name: tiny_audit
label_space: ternary
seed: 1
datasets:
  - {name: sid_mini, split: test}
perturbations:
  - {name: none, label: Clean}
  - {name: crop, params: {fraction: 0.9}, label: "Crop 0.9", sweep: "Crop", strength: 0.9}
  - {name: crop, params: {fraction: 0.6}, label: "Crop 0.6", sweep: "Crop", strength: 0.6}
  - {name: crop, params: {fraction: 0.3}, label: "Crop 0.3", sweep: "Crop", strength: 0.3}
  - {name: jpeg, params: {quality: 20}, label: "Upload"}
metrics:
  - name: ternary_detection
  - name: localization
bootstrap: {n: 50, seed: 0}
"""


@pytest.fixture(scope="module")
def sid_mini_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.sidmini import SMALL_PER_CLASS, SMALL_SIZE, build_sid_mini

    return build_sid_mini(tmp_path_factory.mktemp("sidmini"), per_class=SMALL_PER_CLASS, size=SMALL_SIZE)


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory, sid_mini_root: Path) -> tuple[Path, Path, dict]:
    tmp = tmp_path_factory.mktemp("audit")
    proto = fx.write_protocol(tmp, AUDIT_PROTOCOL, "audit.yaml")
    run_and_score(proto, "runner_test", tmp / "run", data_roots={"sid_mini": sid_mini_root}, tables=False)
    report = build_report(tmp / "run", tmp / "report", n_examples=4)
    return tmp / "run", tmp / "report", report


def _verdicts(run_dir: Path, key: str) -> dict[str, tuple[int, bool]]:
    rows = PredictionStore(run_dir / "predictions").read().to_pylist()
    return {r["sample_id"]: (r["label"], int(np.argmax(r["probs"])) != 0) for r in rows if r["perturbation"] == key}


def test_sweep_values_and_breaking_point_match_results(audited: tuple[Path, Path, dict]) -> None:
    run_dir, _, report = audited
    results = load_results(run_dir)
    acc = {e.perturbation.key: e.metrics["ternary_detection"].values["accuracy"] for e in results.entries}
    (section,) = report["sections"]
    assert section["metrics"] == ["ternary_detection.accuracy", "localization.pixel_f1"]
    (sweep,) = section["sweeps"]
    points = sweep["metrics"]["ternary_detection.accuracy"]["points"]
    assert [p["strength"] for p in points] == [0.9, 0.6, 0.3]
    assert [p["value"] for p in points] == [acc[k].value for k in sweep["keys"]]
    assert [tuple(p["ci"]) for p in points] == [acc[k].ci for k in sweep["keys"]]
    limit = 0.9 * acc[CLEAN].value
    first = next((p for p in points if p["value"] < limit), None)
    bp = sweep["metrics"]["ternary_detection.accuracy"]["breaking_point"]
    assert bp["limit"] == pytest.approx(limit) and bp["strength"] == (first["strength"] if first else None)


def test_breaking_point_by_hand() -> None:
    pts = [{"strength": s, "label": f"q{s}", "value": v} for s, v in ((90, 0.8), (70, 0.75), (50, 0.5), (30, 0.2))]
    assert breaking_point(pts, 0.8, 0.9)["strength"] == 50  # 0.75 >= 0.72, 0.5 < 0.72
    assert breaking_point(pts, 0.8, 0.2)["strength"] is None
    assert breaking_point(pts, None, 0.9)["strength"] is None


def test_flips_and_paired_differences_recomputed_from_the_store(audited: tuple[Path, Path, dict]) -> None:
    run_dir, _, report = audited
    results = load_results(run_dir)
    acc = {e.perturbation.key: e.metrics["ternary_detection"].values["accuracy"].value for e in results.entries}
    clean = _verdicts(run_dir, CLEAN)
    names = ("real", "full_synthetic", "tampered")
    for cond in report["sections"][0]["conditions"]:
        if cond["key"] == CLEAN:
            assert "paired" not in cond
            continue
        now = _verdicts(run_dir, cond["key"])
        for k, name in enumerate(names):
            ids = [s for s, (label, _) in clean.items() if label == k]
            assert cond["flips"][name]["n"] == len(ids)
            assert cond["flips"][name]["to_fake"] == sum(not clean[s][1] and now[s][1] for s in ids)
            assert cond["flips"][name]["to_real"] == sum(clean[s][1] and not now[s][1] for s in ids)
        paired = cond["paired"]["ternary_detection.accuracy"]
        assert paired["diff"] == pytest.approx(acc[cond["key"]] - acc[CLEAN])
        assert paired["n"] == len(clean) and paired["ci"][0] <= paired["diff"] <= paired["ci"][1]
        assert "localization.pixel_f1" not in cond["paired"]


def test_paired_interval_equals_a_direct_paired_bootstrap(audited: tuple[Path, Path, dict]) -> None:
    from bench.evaluation.bootstrap import paired_bootstrap
    from bench.metrics.detection import TernaryDetection

    run_dir, _, report = audited
    rows = PredictionStore(run_dir / "predictions").read(["sample_id", "perturbation", "label", "probs"]).to_pylist()
    key = report["sections"][0]["sweeps"][0]["keys"][-1]
    metrics = {}
    for k in (CLEAN, key):
        sub = sorted((r for r in rows if r["perturbation"] == k), key=lambda r: r["sample_id"])
        m = TernaryDetection()
        m.update([r["label"] for r in sub], [r["probs"] for r in sub], sample_ids=[r["sample_id"] for r in sub])
        metrics[k] = m
    direct = paired_bootstrap(metrics[key], metrics[CLEAN], "accuracy", n_resamples=50, seed=0)
    cond = next(c for c in report["sections"][0]["conditions"] if c["key"] == key)
    got = cond["paired"]["ternary_detection.accuracy"]
    assert got["ci"] == pytest.approx(list(direct["ci"])) and got["p_value"] == pytest.approx(direct["p_value"])


def test_examples_are_the_earliest_flips(audited: tuple[Path, Path, dict]) -> None:
    run_dir, report_dir, report = audited
    section = report["sections"][0]
    keys = section["sweeps"][0]["keys"]
    clean = _verdicts(run_dir, CLEAN)
    by_key = {k: _verdicts(run_dir, k) for k in keys}
    first = {}
    for sid in clean:
        for i, k in enumerate(keys):
            if by_key[k][sid][1] != clean[sid][1]:
                first[sid] = i
                break
    picked = section["examples"]
    assert first and len(picked) == min(4, len(first))
    assert sorted(first.values())[: len(picked)] == sorted(p["rank"] for p in picked)
    for p in picked:
        assert first[p["sample_id"]] == p["rank"] and p["key"] == keys[p["rank"]]
    assert section["examples_note"] is None  # every image file was found and re-degraded
    assert (report_dir / "figures" / "examples_sid_mini_test.png").is_file()
    assert earliest_flips(open_run(run_dir), section, 0) == []


def test_report_files_and_header(audited: tuple[Path, Path, dict]) -> None:
    run_dir, report_dir, report = audited
    html = (report_dir / "report.html").read_text(encoding="utf-8")
    on_disk = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    assert on_disk["figures"] == report["figures"] and len(report["figures"]) >= 4
    for fig in report["figures"]:
        assert (report_dir / fig["file"]).is_file() and f'data-figure="{fig["id"]}"' in html
    assert "http://" not in html and "https://" not in html and "<script" not in html  # static, no network
    h = report["header"]
    results = load_results(run_dir)
    assert h["protocol"]["sha256"] == results.protocol.sha256 and h["seed"] == 1
    assert h["model"]["spec"] == "runner_test:default" and h["bootstrap"]["n"] == 50
    assert h["environment"]["packages"]["numpy"] == np.__version__


def test_audit_needs_a_clean_condition(tmp_path: Path, sid_mini_root: Path) -> None:
    text = AUDIT_PROTOCOL.replace("  - {name: none, label: Clean}\n", "")
    proto = fx.write_protocol(tmp_path, text, "noclean.yaml")
    run_and_score(proto, "runner_test", tmp_path / "run", data_roots={"sid_mini": sid_mini_root}, limit=3, tables=False)
    with pytest.raises(UserError, match="no clean condition"):
        build_report(tmp_path / "run", tmp_path / "report")
    with pytest.raises(UserError, match="No results file"):
        build_report(tmp_path / "missing", tmp_path / "report")


def test_an_unscored_run_is_one_clear_error(tmp_path: Path) -> None:
    from bench.evaluation.runner import run_protocol
    from bench.leaderboard.validate import validate_submission

    run_protocol(fx.write_protocol(tmp_path, fx.FAKE_PROTOCOL), "runner_test", tmp_path / "run")  # predicts only
    with pytest.raises(UserError, match="not scored yet.*sida-bench score"):
        build_report(tmp_path / "run", tmp_path / "report")
    with pytest.raises(UserError, match="not scored yet.*sida-bench score"):
        validate_submission(tmp_path / "run")
    assert not (tmp_path / "report").exists()


# ----------------------------------------------------------------------------------- CLI + browser
def _browser_check(html: Path) -> tuple[list[str], list[list]]:
    """Console errors and [figure id, loaded, natural width] of every figure, from headless Chromium."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1600})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
        page.goto(html.resolve().as_uri(), wait_until="load")
        figs = page.eval_on_selector_all(
            "img.figure", "els => els.map(e => [e.dataset.figure, e.complete, e.naturalWidth])")
        browser.close()
    return errors, figs


@pytest.fixture(scope="module")
def cli_report(tmp_path_factory: pytest.TempPathFactory, sid_mini_root: Path) -> Path:
    """``python -m bench.cli audit --model npr:tiny --protocol sid_mini_audit --limit 6`` (about 30 s)."""
    out = tmp_path_factory.mktemp("cli") / "audit"
    proc = subprocess.run([sys.executable, "-m", "bench.cli", "audit", "--model", "npr:tiny", "--protocol",
                           "sid_mini_audit", "--limit", "6", "--data-root", f"sid_mini={sid_mini_root}", "--out",
                           str(out)], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.mark.slow
def test_cli_audit_npr_tiny_writes_the_report(cli_report: Path, tmp_path: Path) -> None:
    from bench.cli import build_parser, main
    from bench.cli.audit_cmd import handle

    report = json.loads((cli_report / "report.json").read_text(encoding="utf-8"))
    (section,) = report["sections"]
    assert len(section["sweeps"]) == 7 and len(section["conditions"]) == 22
    assert all(c["n"] == 6 and c["n_errors"] == 0 for c in section["conditions"])
    assert report["header"]["limit"] == 6 and report["header"]["command"].startswith("sida-bench audit")
    assert (cli_report / "report.html").is_file() and (cli_report / "run" / "results.json").is_file()
    assert main(["audit", "--from", str(cli_report / "run"), "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "report.json").read_text(encoding="utf-8"))
    assert again["sections"] == report["sections"]  # --from re-uses the run: the same numbers
    with pytest.raises(UserError, match="drop --model"):
        handle(build_parser().parse_args(["audit", "--from", str(cli_report / "run"), "--model", "npr:tiny",
                                          "--out", str(tmp_path / "x")]))


@pytest.mark.slow
def test_report_loads_in_headless_chromium_with_every_figure(cli_report: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium not installed at /usr/bin/chromium (apt-get install -y chromium)")
    pytest.importorskip("playwright.sync_api", reason="playwright for Python not installed (pip install playwright)")
    report = json.loads((cli_report / "report.json").read_text(encoding="utf-8"))
    errors, figs = _browser_check(cli_report / "report.html")
    assert errors == []
    assert [f[0] for f in figs] == [f["id"] for f in report["figures"]]
    assert all(loaded and width > 0 for _, loaded, width in figs)


def test_cli_audit_user_errors(tmp_path: Path) -> None:
    from bench.cli import main

    assert main(["audit", "--out", str(tmp_path / "x")]) == 2  # neither --model nor --from
    assert main(["audit", "--from", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert main(["audit", "--model", "npr:tiny", "--examples", "-1", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()  # refused before anything ran


def test_binary_protocol_audit_uses_auc_and_the_p_fake_verdict(tmp_path: Path, sid_mini_root: Path) -> None:
    text = AUDIT_PROTOCOL.replace("label_space: ternary", "label_space: binary").replace(
        "{name: sid_mini, split: test}", "{name: dmimage_mini, split: test}").replace(
        "  - name: ternary_detection\n  - name: localization\n", "  - name: binary_detection\n")
    proto = fx.write_protocol(tmp_path, text, "binary.yaml")
    run_and_score(proto, "runner_test", tmp_path / "run", data_roots={"dmimage_mini": sid_mini_root}, tables=False)
    report = build_report(tmp_path / "run", tmp_path / "report", n_examples=2)
    (section,) = report["sections"]
    assert section["metrics"] == ["binary_detection.auc"]
    rows = PredictionStore(tmp_path / "run" / "predictions").read().to_pylist()
    verdict = {(r["sample_id"], r["perturbation"]): 1.0 - r["probs"][0] >= 0.5 for r in rows}  # ternary probs
    for cond in section["conditions"][1:]:
        ids = [r["sample_id"] for r in rows if r["perturbation"] == CLEAN and r["label"] == 0]
        assert cond["flips"]["real"]["to_fake"] == sum(
            not verdict[(s, CLEAN)] and verdict[(s, cond["key"])] for s in ids)
        assert set(cond["flips"]) == {"real", "fake"}
        assert "binary_detection.auc" in cond["paired"]
    assert report["header"]["audit"]["verdict"] == "fake if P(fake) >= 0.5"


def test_a_protocol_without_sweeps_still_gets_a_report(tmp_path: Path) -> None:
    proto = fx.write_protocol(tmp_path, fx.FAKE_PROTOCOL)
    run_and_score(proto, "runner_test", tmp_path / "run", tables=False)
    report = build_report(tmp_path / "run", tmp_path / "report")
    (section,) = report["sections"]
    assert section["sweeps"] == [] and section["examples"] == []
    assert section["examples_note"] == "no verdict flips under any sweep"
    assert [c["label"] for c in section["conditions"]] == ["Clean", "Noise 6", "Half"]
    assert {f["id"].split("-")[0] for f in report["figures"]} == {"paired", "flips"}
    from bench.cli import main

    args = ["audit", "--from", str(tmp_path / "run"), "--break-fraction", "1.5", "--out", str(tmp_path / "r")]
    assert main(args) == 2


def test_compare_shows_each_condition_with_and_without_neutralise(tmp_path: Path) -> None:
    plain = fx.write_protocol(tmp_path, fx.FAKE_PROTOCOL, "plain.yaml")
    jpeg = fx.write_protocol(tmp_path, fx.FAKE_PROTOCOL + "neutralise: {format: jpeg, quality: 10}\n", "jpeg.yaml")
    a = run_and_score(jpeg, "runner_test", tmp_path / "jpeg", tables=False)
    b = run_and_score(plain, "runner_test", tmp_path / "plain", tables=False)
    report = build_report(tmp_path / "jpeg", tmp_path / "report", compare=tmp_path / "plain")
    compare = report["sections"][0]["compare"]
    assert compare["neutralise"] == {"format": "jpeg", "quality": 10} and compare["other_neutralise"] is None
    acc_a = {e.perturbation.key: e.metrics["ternary_detection"].values["accuracy"].value for e in a.entries}
    acc_b = {e.perturbation.key: e.metrics["ternary_detection"].values["accuracy"].value for e in b.entries}
    assert [c["label"] for c in compare["conditions"]] == ["Clean", "Noise 6", "Half"]
    for c in compare["conditions"]:
        paired = c["paired"]["ternary_detection.accuracy"]
        assert paired["diff"] == pytest.approx(acc_a[c["key"]] - acc_b[c["key"]]) and paired["n"] == 12
        assert (paired["this"], paired["other"]) == (pytest.approx(acc_a[c["key"]]), pytest.approx(acc_b[c["key"]]))
    html = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert "Against the compared run" in html
    assert 'data-figure="compare-runner_fake_test-ternary_detection_accuracy"' in html
