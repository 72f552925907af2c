"""Sharded runs (--shard I/K and torchrun with gloo) equal one process; a killed rank resumes."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
import torch

import tests.runner_fixtures as fx
from bench.cli import main
from bench.cli.compose import run_and_score
from bench.errors import UserError
from bench.evaluation.results import load_results
from bench.evaluation.scorer import score_run
from bench.evaluation.sharding import Shard, parse_shard
from bench.evaluation.store import PredictionStore

torch.set_num_threads(1)

PROTOCOL = fx.FAKE_PROTOCOL.replace("options: {n: 12}", "options: {n: 15}").replace(
    "  - name: localization\n", "  - name: localization\n  - name: sida_legacy\n")


def entries(results) -> list[dict]:
    return [e.model_dump() for e in results.entries]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("shard")
    proto = fx.write_protocol(folder, PROTOCOL)
    single = run_and_score(proto, "runner_test", folder / "k1", tables=False)
    return proto, entries(single)


def test_every_sample_belongs_to_exactly_one_shard() -> None:
    ids = [f"{c}/{i:04d}" for c in ("real", "tampered") for i in range(200)]
    for k in (1, 2, 3, 5):
        owners = [[s for s in range(k) if Shard(s, k).owns(i)] for i in ids]
        assert all(len(o) == 1 for o in owners)
        if k > 1:
            sizes = [sum(o == [s] for o in owners) for s in range(k)]
            assert min(sizes) > len(ids) / k / 2  # roughly balanced
    assert parse_shard("2/3") == Shard(2, 3)
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(UserError, match="shard"):
            parse_shard(bad)


@pytest.mark.parametrize("k", [2, 3])
def test_shards_equal_one_process(setup, tmp_path: Path, k: int) -> None:
    proto, single = setup
    outs = [run_and_score(proto, "runner_test", tmp_path / "run", shard=Shard(i, k), tables=False) for i in range(k)]
    assert outs[:-1] == [None] * (k - 1)  # only the last shard to finish scores
    assert entries(outs[-1]) == single
    rows = PredictionStore(tmp_path / "run" / "predictions").read(["key"]).column("key").to_pylist()
    assert len(rows) == len(set(rows)) == 45


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so the per-sample error handling cannot catch it."""


def test_killed_rank_resumes_with_the_same_or_another_k(setup, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    proto, single = setup
    run = tmp_path / "run"
    run_and_score(proto, "runner_test", run, shard=Shard(0, 2), tables=False)
    calls = {"n": 0}
    forward = fx.RunnerTestModel.forward

    def dies(self, batch):
        calls["n"] += 1
        if calls["n"] > 9:
            raise Killed
        return forward(self, batch)

    with monkeypatch.context() as m:
        m.setattr(fx.RunnerTestModel, "forward", dies)
        with pytest.raises(Killed):
            run_and_score(proto, "runner_test", run, shard=Shard(1, 2), flush_every=2, batch_size=1, tables=False)
    with pytest.raises(UserError, match="ranks 1 of 2 have not completed"):
        score_run(run)
    with pytest.raises(UserError, match="pass --resume"):
        run_and_score(proto, "runner_test", run, shard=Shard(1, 2), tables=False)
    other_k = tmp_path / "other_k"
    shutil.copytree(run, other_k)

    same = run_and_score(proto, "runner_test", run, shard=Shard(1, 2), resume=True, tables=False)
    assert entries(same) == single
    outs = [run_and_score(proto, "runner_test", other_k, shard=Shard(i, 3), resume=True, tables=False)
            for i in range(3)]
    assert entries(outs[-1]) == single
    keys = PredictionStore(other_k / "predictions").read(["key"]).column("key").to_pylist()
    assert len(keys) == len(set(keys)) == 45


def test_a_run_of_another_model_is_refused(setup, tmp_path: Path) -> None:
    proto, _ = setup
    run_and_score(proto, "runner_test", tmp_path / "run", shard=Shard(0, 2), tables=False)
    with pytest.raises(UserError, match="another model or protocol"):
        run_and_score(proto, "runner_test:binary", tmp_path / "run", shard=Shard(1, 2), tables=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun_rank(rank: int, world: int, port: int, argv: list[str]) -> None:
    """One rank, with the environment torchrun would set."""
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    import tests.runner_fixtures  # noqa: F401  (registers the test plugins in the child)

    code = main(argv)
    if code:
        raise SystemExit(code)


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 3])
def test_torchrun_gloo_ranks_equal_one_process(setup, tmp_path: Path, world: int) -> None:
    proto, single = setup
    out = tmp_path / "run"
    argv = ["run", str(proto), "--model", "runner_test", "--out", str(out), "--device", "cpu"]
    torch.multiprocessing.spawn(_torchrun_rank, args=(world, _free_port(), argv), nprocs=world, join=True)
    assert entries(load_results(out)) == single
    assert sorted(p.name for p in (out / "ranks").iterdir()) == [f"rank-{i:03d}-of-{world:03d}.json"
                                                                  for i in range(world)]
