"""Protocol loading: bundled files, include inheritance, deep merge, and errors with file:line + hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.errors import UserError
from bench.evaluation.protocol import load_protocol
from bench.evaluation.protocol_files import bundled_protocols

BUNDLED = ["sid_set_detection", "sid_set_localization", "sid_set_robustness", "dmimage_cross",
           "sid_mini_detection", "sid_mini_localization", "sid_mini_robustness", "dmimage_mini_cross",
           "sid_set_audit", "sid_mini_audit", "sid_set_explanation", "sid_mini_explanation"]


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


BASE = """\
version: 2
seed: 7
bootstrap: {n: 50, confidence: 0.9}
datasets:
  - {name: sid_mini, split: test}
metrics:
  - name: ternary_detection
"""


def test_every_bundled_protocol_validates_against_the_registries() -> None:
    assert sorted(bundled_protocols()) == sorted(BUNDLED)
    for name in BUNDLED:
        protocol = load_protocol(name)
        assert protocol.name == name and protocol.version >= 1


def test_robustness_grid_matches_table_4_and_names_the_noise_reading() -> None:
    p = load_protocol("sid_set_robustness")
    keys = [(s.name, s.params) for s in p.perturbations]
    assert keys == [("none", {}), ("jpeg", {"quality": 70}), ("jpeg", {"quality": 80}), ("resize", {"scale": 0.5}),
                    ("resize", {"scale": 0.75}), ("gaussian_noise", {"variance": 10}), ("gaussian_noise", {"variance": 5})]
    assert [m.name for m in p.metrics] == ["ternary_detection", "localization"]
    assert p.datasets[0].name == "sid_set" and p.datasets[0].split == "validation"


def test_include_is_relative_to_the_file_and_local_keys_win_with_deep_merge(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "_base.yaml", BASE)
    path = write(tmp_path, "child.yaml", "include: sub/_base.yaml\nname: child\nlabel_space: ternary\n"
                                          "bootstrap: {n: 5}\nmetrics:\n  - name: localization\n")
    p = load_protocol(path)
    assert p.version == 2 and p.seed == 7  # inherited
    assert p.bootstrap.n == 5 and p.bootstrap.confidence == 0.9  # nested mapping merged key by key
    assert [m.name for m in p.metrics] == ["localization"]  # lists are replaced, not appended


def test_include_chain_later_includes_override_earlier(tmp_path: Path) -> None:
    write(tmp_path, "_a.yaml", BASE)
    write(tmp_path, "_b.yaml", "seed: 9\n")
    path = write(tmp_path, "p.yaml", "include: [_a.yaml, _b.yaml]\nname: p\nlabel_space: ternary\n")
    assert load_protocol(path).seed == 9


def test_include_cycle_is_reported(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "include: b.yaml\nname: a\n")
    write(tmp_path, "b.yaml", "include: a.yaml\n")
    with pytest.raises(UserError, match=r"include cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_protocol(tmp_path / "a.yaml")


def test_missing_include_names_the_including_file(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", "include: nope.yaml\n")
    with pytest.raises(UserError, match=r"p\.yaml: protocol file not found: .*nope\.yaml"):
        load_protocol(path)


def test_unknown_top_level_key_names_file_line_and_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", BASE + "name: p\nlabel_space: ternary\nperturbation:\n  - {name: jpeg}\n")
    with pytest.raises(UserError) as err:
        load_protocol(path)
    assert f"{path}:10: unknown key 'perturbation'" in str(err.value)
    assert "Did you mean 'perturbations'?" in str(err.value)


def test_unknown_nested_key_in_an_included_file_points_at_that_file(tmp_path: Path) -> None:
    write(tmp_path, "_base.yaml", BASE.replace("  - name: ternary_detection", "  - name: ternary_detection\n    parms: {}"))
    path = write(tmp_path, "p.yaml", "include: _base.yaml\nname: p\nlabel_space: ternary\n")
    with pytest.raises(UserError) as err:
        load_protocol(path)
    assert f"{tmp_path / '_base.yaml'}:8: unknown key 'parms'" in str(err.value)
    assert "Did you mean 'params'?" in str(err.value)


@pytest.mark.parametrize("field,bad,good,line", [
    ("metrics", "ternary_detecton", "ternary_detection", 7),
    ("datasets", "sid_mni", "sid_mini", 5),
])
def test_unknown_plugin_names_give_line_and_closest_name(tmp_path: Path, field: str, bad: str, good: str, line: int) -> None:
    path = write(tmp_path, "p.yaml", BASE.replace(good, bad) + "name: p\nlabel_space: ternary\n")
    with pytest.raises(UserError) as err:
        load_protocol(path)
    assert f"{path}:{line}: unknown" in str(err.value) and f"{bad!r}" in str(err.value)
    assert f"Did you mean {good!r}?" in str(err.value)


def test_unknown_perturbation_and_bad_params(tmp_path: Path) -> None:
    text = BASE + "name: p\nlabel_space: ternary\nperturbations:\n  - {name: none}\n  - {name: jpg, params: {quality: 70}}\n"
    path = write(tmp_path, "p.yaml", text)
    with pytest.raises(UserError, match=rf"{path}:12: unknown perturbation 'jpg'\. Did you mean 'jpeg'\?"):
        load_protocol(path)
    path = write(tmp_path, "q.yaml", text.replace("jpg", "jpeg").replace("quality: 70", "quality: 700"))
    with pytest.raises(UserError, match=rf"{path}:12: invalid params for 'jpeg'"):
        load_protocol(path)


def test_version_is_required_and_types_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", BASE.replace("version: 2\n", "") + "name: p\nlabel_space: ternary\n")
    with pytest.raises(UserError, match=r"p\.yaml:1: invalid protocol value at version: Field required"):
        load_protocol(path)
    path = write(tmp_path, "q.yaml", BASE + "name: q\nlabel_space: quaternary\n")
    with pytest.raises(UserError, match=r"q\.yaml:9: invalid protocol value at label_space"):
        load_protocol(path)


def test_duplicate_perturbation_conditions_are_refused(tmp_path: Path) -> None:
    text = BASE + "name: p\nlabel_space: ternary\nperturbations:\n  - {name: jpeg, params: {quality: 70}}\n" \
                  "  - {name: jpeg, params: {quality: 70}, label: again}\n"
    with pytest.raises(UserError, match="duplicate perturbation conditions: jpeg"):
        load_protocol(write(tmp_path, "p.yaml", text))


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "p.yaml", "version: 1\nname: [unclosed\n")
    with pytest.raises(UserError, match=r"p\.yaml:\d+: invalid YAML"):
        load_protocol(path)
