import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.cli import main
from bench.plugins import MODELS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def dummy_registered():
    from tests.dummy_plugins import DummyDetector

    if "dummy" not in MODELS:
        MODELS.register("dummy", DummyDetector)
    return DummyDetector


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )


def test_list_models_json_includes_registered_dummy(dummy_registered, capsys):
    assert main(["list", "models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert isinstance(rows, list)
    assert {"name": "dummy", "source": "decorator"} in rows


def test_list_all_json_has_every_kind(capsys):
    assert main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"models", "datasets", "perturbations", "metrics", "protocols"}


def test_misspelt_model_exits_2_with_suggestion():
    proc = run_cli("run", "sid_mini_detection", "--model", "cnnsopt", "--out", "unused")
    assert proc.returncode == 2
    assert "Did you mean 'cnnspot'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bad_model_spec_and_unknown_command_exit_2():
    proc = run_cli("run", "sid_mini_detection", "--model", "cnnspot:", "--out", "unused")
    assert proc.returncode == 2 and "NAME[:CONFIG]" in proc.stderr
    proc = run_cli("frobnicate")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_unknown_list_kind_exits_2():
    proc = run_cli("list", "modles")
    assert proc.returncode == 2


def test_entry_point_plugin_appears_in_list(tmp_path):
    site = tmp_path / "site"
    dist = site / "acme_detector-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-detector\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[sida_bench.models]\nacme = acme_detector:AcmeDetector\n")
    (site / "acme_detector.py").write_text(textwrap.dedent("""
        from tests.dummy_plugins import DummyDetector

        class AcmeDetector(DummyDetector):
            name = "acme"
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO)]))
    proc = run_cli("list", "models", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert {"name": "acme", "source": "entry point acme-detector"} in rows
    # and it can be created by name through the same registry
    code = "from bench.plugins import create_model; m = create_model('acme:tiny'); print(type(m).__name__, m.config_name)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.stdout.split() == ["AcmeDetector", "tiny"], proc.stderr
