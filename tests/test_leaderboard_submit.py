"""`sida-bench submit validate|score`: every problem reported at once (file, row, column),
hostile submissions refused without touching anything outside the folder, scores equal to
`sida-bench score` on the same file."""

from __future__ import annotations

import io
import json
import os
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tests.leaderboard_fixtures as lf
from bench.cli import main
from bench.cli.compose import score_predictions_file as score_file
from bench.errors import UserError
from bench.leaderboard.archive import opened
from bench.leaderboard.submit import score_submission
from bench.leaderboard.validate import SubmissionInvalid, validate_submission
from bench.evaluation.results import load_results


@pytest.fixture
def protos(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Path]:
    return lf.bundle(monkeypatch, tmp_path / "protocols")


def problems_of(folder: Path) -> list[str]:
    with pytest.raises(SubmissionInvalid) as info:
        validate_submission(folder)
    return [str(p) for p in info.value.problems]


def test_valid_submission_scores_like_score_command(protos: dict[str, Path], tmp_path: Path) -> None:
    sub = lf.write_submission(tmp_path / "sub", lf.frame(lf.probs(0.7)))
    [out] = score_submission(sub, tmp_path / "out")
    ref = score_file(sub / "preds.csv", protos["lb_fake"], tmp_path / "ref")
    got = load_results(out)
    assert got.model["submission"]["method"]["name"] == "TestNet" and got.model_label == "TestNet 1.0"
    for a, b in zip(got.entries, ref.entries):
        assert a.metrics["ternary_detection"].values == b.metrics["ternary_detection"].values


def test_every_problem_is_reported_with_file_row_and_column(protos: dict[str, Path], tmp_path: Path) -> None:
    df = lf.frame(lf.probs(0.7))
    df.loc[3, "prob_real"] = 1.5                     # row 4
    df.loc[5, "sample_id"] = "real/9999"             # row 6
    df.loc[7, "perturbation"] = "runner_halff()"     # row 8
    df.loc[9, "prob_tampered"] = np.nan              # row 10
    df.loc[10, "prob_tampered"] = 0.9                # row 11: sum != 1
    df = df.assign(extra=1)
    man = lf.manifest(weights_sha256="not-a-hash")
    lf.write_submission(tmp_path / "sub", df, man)
    found = problems_of(tmp_path / "sub")
    expected = [
        "preds.csv: row 4, column prob_real: 1.5 is outside [0, 1]",
        "preds.csv: row 6, column sample_id: 'real/9999' is not in runner_fake/test",
        "preds.csv: row 8, column perturbation: 'runner_halff()' is not a condition of the protocol; "
        "did you mean 'runner_half()'?",
        "preds.csv: row 10, column prob_tampered: nan is empty or not a finite number",
        "preds.csv: row 11, column prob_real,prob_full_synthetic,prob_tampered: probabilities sum to",
        "preds.csv, column extra: unknown column",
        "submission.yaml: line 8, column weights_sha256: Value error, must be 64 lowercase hex digits",
    ]
    for text in expected:
        assert any(p.startswith(text) for p in found), (text, found)
    missing = [p for p in found if "have no prediction under" in p]
    assert missing and missing == ["preds.csv, column sample_id: 2 of 12 samples of runner_fake/test have no "
                                  "prediction under 'none' (e.g. 'tampered/0005', 'full_synthetic/0007')"]


def test_cli_exits_2_and_prints_all_problems(protos: dict[str, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    df = lf.frame(lf.probs(0.7))
    df.loc[0, "prob_real"], df.loc[1, "prob_real"] = -1.0, 2.0
    lf.write_submission(tmp_path / "sub", df)
    assert main(["submit", "validate", str(tmp_path / "sub")]) == 2
    err = capsys.readouterr().err
    assert "problem(s); the submission is refused" in err
    assert "row 1, column prob_real: -1.0 is outside" in err and "row 2, column prob_real: 2.0 is outside" in err
    assert main(["submit", "validate", str(tmp_path / "sub"), "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is False
    expected = {"file": "preds.csv", "row": 1, "column": "prob_real", "message": "-1.0 is outside [0, 1]"}
    assert expected in report["problems"]
    lf.write_submission(tmp_path / "ok", lf.frame(lf.probs(0.7)))
    assert main(["submit", "validate", str(tmp_path / "ok")]) == 0


@pytest.mark.parametrize("edit,expected", [
    (lambda m: m.update(schema_version=2), "column schema_version: 2 is not supported (expected 1)"),
    (lambda m: m["method"].pop("code"), "column method: Value error, give a paper or a code link"),
    (lambda m: m["method"].update(authors=[]), "column method.authors: List should have at least 1 item"),
    (lambda m: m.update(colour="red"), "column colour: Extra inputs are not permitted"),
    (lambda m: m["method"].update(code="javascript:alert(1)"),
     "column method.code: Value error, must be an http(s) URL"),
    (lambda m: m["predictions"][0].update(protocol="lb_fakee"), "unknown protocol 'lb_fakee'; did you mean 'lb_fake'?"),
    (lambda m: m["predictions"][0].update(version=2),
     "protocol lb_fake is at version 1; the submission claims version 2"),
    (lambda m: m.pop("used_test_data"), "column used_test_data: Field required"),
])
def test_manifest_errors(protos: dict[str, Path], tmp_path: Path, edit, expected: str) -> None:
    man = lf.manifest()
    edit(man)
    lf.write_submission(tmp_path / "sub", lf.frame(lf.probs(0.7)), man)
    found = problems_of(tmp_path / "sub")
    assert any(expected in p and p.startswith("submission.yaml") for p in found), found


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares width x height 8-bit grey pixels, with a tiny compressed body."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    body = zlib.compress(b"\x00" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def _with_mask(df, row: int, value: str):
    df = df.copy()
    df["mask_path"] = None
    df.loc[row, "mask_path"] = value
    return df


def _write_mask(path: Path, shape: tuple[int, int], value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)


def test_masks_are_checked_and_scored(protos: dict[str, Path], tmp_path: Path) -> None:
    df = lf.frame(lf.probs(0.7))
    df["mask_path"] = None
    for i in range(2, 12, 3):  # tampered samples, clean and half
        _write_mask(tmp_path / "sub" / "masks" / f"{i}.png", lf.size(i))
        _write_mask(tmp_path / "sub" / "masks" / f"{i}h.png", lf.size(i, half=True))
        df.loc[i, "mask_path"] = f"masks/{i}.png"
        df.loc[12 + i, "mask_path"] = f"masks/{i}h.png"
    lf.write_submission(tmp_path / "sub", df)
    [out] = score_submission(tmp_path / "sub", tmp_path / "out")
    loc = load_results(out).entries[0].metrics["localization"]
    assert loc.skipped is None and loc.values["n_images"].value == 4
    _write_mask(tmp_path / "sub" / "masks" / "2.png", (5, 5))
    found = problems_of(tmp_path / "sub")
    assert found == [f"preds.csv: row 3, column mask_path: mask masks/2.png is 5x5 (H x W); the image is "
                     f"{lf.size(2)[0]}x{lf.size(2)[1]}"]


def test_hostile_masks_are_refused_and_nothing_outside_is_touched(protos: dict[str, Path], tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    _write_mask(outside, lf.size(2))
    before = (outside.read_bytes(), outside.stat().st_mtime_ns)
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "link.png").symlink_to(outside)
    _png_header_only(sub / "bomb.png", 100_000, 100_000)
    df = lf.frame(lf.probs(0.7))
    df["mask_path"] = None
    df.loc[2, "mask_path"] = "../outside.png"
    df.loc[5, "mask_path"] = str(outside)
    df.loc[8, "mask_path"] = "link.png"
    df.loc[11, "mask_path"] = "bomb.png"
    lf.write_submission(sub, df)
    found = problems_of(sub)
    assert ("preds.csv: row 3, column mask_path: mask '../outside.png' leaves the submission folder "
            "('..' is not allowed)") in found
    assert any(p.startswith("preds.csv: row 6, column mask_path: mask") and "is an absolute path" in p for p in found)
    assert ("preds.csv: row 9, column mask_path: mask 'link.png' is a symlink that points outside the "
            "submission folder") in found
    assert any(p.startswith("preds.csv: row 12, column mask_path: mask bomb.png: ") and
               ("decompression bomb" in p or "limit" in p) for p in found), found
    assert "link.png: symlink points outside the submission folder; refused" in found
    assert (outside.read_bytes(), outside.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside.png", "protocols", "sub"]


def test_oversized_non_utf8_and_special_files_are_refused(protos: dict[str, Path], tmp_path: Path) -> None:
    sub = lf.write_submission(tmp_path / "sub", lf.frame(lf.probs(0.7)))
    with open(sub / "preds.csv", "r+b") as fh:  # a sparse 10 GB "CSV": refused from its size, never read
        fh.truncate(10 * 1024 ** 3)
    assert any("predictions file is 10,737,418,240 bytes; the limit is" in p for p in problems_of(sub))
    text = (lf.frame(lf.probs(0.7)).to_csv(index=False)).encode().replace(b"real/0000", b"real/\xff000")
    (sub / "preds.csv").write_bytes(text)
    assert problems_of(sub) == ["preds.csv: predictions file is not UTF-8 text (byte 0xff at line 2)"]
    (sub / "submission.yaml").write_bytes(b"schema_version: 1\nmethod: \xe9\n")
    assert "submission.yaml: submission.yaml is not UTF-8 text (byte 0xe9 at line 2)" in problems_of(sub)
    fifo = tmp_path / "fifo"
    lf.write_submission(fifo, lf.frame(lf.probs(0.7)))
    (fifo / "preds.csv").unlink()
    os.mkfifo(fifo / "preds.csv")
    assert "submission.yaml, column predictions.0.file: 'preds.csv' is not a regular file" in problems_of(fifo)


def test_archives_are_unpacked_safely(protos: dict[str, Path], tmp_path: Path) -> None:
    sub = lf.write_submission(tmp_path / "sub", lf.frame(lf.probs(0.7)))
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        for p in sub.iterdir():
            zf.write(p, p.name)
    with opened(good) as folder:
        assert validate_submission(folder).files[0].protocol.name == "lb_fake"
        unpacked = folder
    assert not unpacked.exists()
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tf:
        data = b"pwned"
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(UserError, match=r"member '../../escaped.txt' would be written outside the submission folder"):
        with opened(evil):
            pass
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("preds.csv", b"0" * (64 * 1024 * 1024))  # 64 MiB of zeros in about 64 KiB
    with pytest.raises(UserError, match=r"member 'preds.csv' unpacks past the size limit"):
        with opened(bomb):
            pass
    link = tmp_path / "link.tar"
    with tarfile.open(link, "w") as tf:
        info = tarfile.TarInfo("preds.csv")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(UserError, match="is a link or device; refused"):
        with opened(link):
            pass


def test_run_folder_is_a_submission(protos: dict[str, Path], tmp_path: Path) -> None:
    from bench.cli.compose import run_and_score

    run_and_score("lb_fake", "runner_test", tmp_path / "run", tables=False)
    assert validate_submission(tmp_path / "run").run
    [out] = score_submission(tmp_path / "run", tmp_path / "out")
    assert load_results(out).model["name"] == "runner_test" and (out / "predictions").is_dir()
    limited = tmp_path / "limited"
    run_and_score("lb_fake", "runner_test", limited, tables=False, limit=6)
    assert any("run.limit" in p for p in problems_of(limited))
