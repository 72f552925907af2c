"""``sida-bench data summary``: counts, problems, folders vs parquet, user errors (exit code 2)."""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from bench.sidmini import SMALL_PER_CLASS, SMALL_SIZE, build_sid_mini
from tests.data_fixtures import write_sid_set_tree


def summary_json(capsys, *argv):
    assert main(["data", "summary", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return build_sid_mini(tmp_path_factory.mktemp("cli") / "mini", per_class=SMALL_PER_CLASS, size=SMALL_SIZE)


def test_folders_and_parquet_give_the_same_counts(mini, capsys):
    for split, n in SMALL_PER_CLASS.items():
        a = summary_json(capsys, "sid_set", "--root", str(mini / "sid_set"), "--split", split)
        b = summary_json(capsys, "sid_set_parquet", "--root", str(mini / "parquet"), "--split", split)
        for key in ("total", "labels", "sources", "masks", "problems", "errors"):
            assert a[key] == b[key], key
        assert a["labels"] == {"real": n, "full_synthetic": n, "tampered": n}
        assert a["masks"] == {"found": n, "missing": 0}


def test_summary_reports_problems_and_policies(tmp_path, capsys):
    tree = write_sid_set_tree(tmp_path / "sid")
    report = summary_json(capsys, "sid_set", "--root", str(tree), "-o", "size_mismatch=error")
    assert report["total"] == 14 and report["labels"] == {"real": 7, "full_synthetic": 3, "tampered": 4}
    assert report["masks"] == {"found": 1, "missing": 1}
    assert {e["id"] for e in report["errors"]} == {"real/r_trunc", "real/r_zero", "full_synthetic/f_text",
                                                   "tampered/t_colourmask", "tampered/t_small"}
    assert report["policies"]["mask"]["size_mismatch"] == "error"
    assert report["listing"]["tampered_without_mask"] == 1
    assert main(["data", "summary", "sid_set", "--root", str(tree)]) == 0  # the table view
    out = capsys.readouterr().out
    assert "total=14" in out and "decode_errors" in out and "real/r_trunc" in out


def test_binary_summary_by_source(mini, capsys):
    report = summary_json(capsys, "dmimage_mini", "--root", str(mini))
    n = SMALL_PER_CLASS["test"]
    assert report["labels"] == {"real": n, "fake": 2 * n}
    assert report["sources"]["nearest_conv"] == {"fake": n}


@pytest.mark.parametrize("argv, message", [
    (["data", "summary", "sid_sett", "--root", "."], "Did you mean"),
    (["data", "summary", "sid_set", "--root", "/nonexistent/sid"], "does not exist"),
    (["data", "summary", "sid_set", "--root", ".", "-o", "binarize"], "KEY=VALUE"),
])
def test_user_mistakes_exit_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
