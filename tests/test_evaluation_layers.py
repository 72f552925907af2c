"""bench/evaluation imports run one way: each module imports only modules listed before it."""

from __future__ import annotations

import ast
from pathlib import Path

import bench.evaluation as evaluation

ORDER = ["protocol_files", "protocol", "conditions", "store", "run_record", "sharding", "runner", "predictions_import",
         "results", "bootstrap", "metric_feed", "scorer"]


def imported(path: Path) -> set[str]:
    """Every ``bench.*`` module a file imports, at module level or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n.startswith("bench")}


def test_every_module_is_in_the_layer_order() -> None:
    folder = Path(evaluation.__file__).parent
    assert sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__") == sorted(ORDER)


def test_imports_run_one_way_and_never_reach_the_cli() -> None:
    folder = Path(evaluation.__file__).parent
    for i, name in enumerate(ORDER):
        deps = imported(folder / f"{name}.py")
        assert not any(d.startswith("bench.cli") for d in deps), name
        inner = {d.split(".")[2] for d in deps if d.startswith("bench.evaluation.")}
        assert inner <= set(ORDER[:i]), f"{name} imports {sorted(inner - set(ORDER[:i]))}"
    assert "scorer" not in {d.split(".")[-1] for d in imported(folder / "runner.py")}


def test_old_top_level_modules_are_gone() -> None:
    bench_dir = Path(evaluation.__file__).parent.parent
    for old in ("runner", "scoring", "store", "results", "protocol", "protocol_files", "bootstrap",
                "predictions_import"):
        assert not (bench_dir / f"{old}.py").exists(), old


def test_workflows_sit_above_evaluation_and_below_the_cli() -> None:
    """bench/leaderboard and bench/audit use bench/evaluation; evaluation never imports them, and
    neither workflow imports the CLI."""
    bench_dir = Path(evaluation.__file__).parent.parent
    for path in (bench_dir / "evaluation").glob("*.py"):
        assert not any(d.startswith(("bench.leaderboard", "bench.audit")) for d in imported(path)), path.name
    for workflow in ("leaderboard", "audit"):
        files = sorted((bench_dir / workflow).glob("*.py"))
        assert files
        for path in files:
            assert not any(d.startswith("bench.cli") for d in imported(path)), f"{workflow}/{path.name}"
        assert any(d.startswith("bench.evaluation") for p in files for d in imported(p)), workflow
