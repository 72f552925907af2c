import collections

import pytest
import torch

from bench.checkpoint import (
    is_our_checkpoint,
    load_checkpoint,
    load_raw,
    load_strict,
    pick,
    save_checkpoint,
    strip_prefix,
)
from bench.errors import UserError


class Unsafe:
    pass


def test_weights_only_refuses_pickled_objects(tmp_path):
    path = tmp_path / "unsafe.pth"
    torch.save({"model": Unsafe()}, path)
    with pytest.raises(UserError, match="--allow-pickle"):
        load_raw(path)
    assert isinstance(load_raw(path, allow_pickle=True)["model"], Unsafe)


def test_official_style_nested_and_prefixed(tmp_path):
    net = torch.nn.Linear(3, 2)
    path = tmp_path / "ck.pth"
    torch.save({"model": collections.OrderedDict(("module." + k, v) for k, v in net.state_dict().items()),
                "total_steps": 5}, path)
    state = strip_prefix(pick(load_raw(path), "model", path), "module.")
    other = torch.nn.Linear(3, 2)
    load_strict(other, state, path)
    assert torch.equal(other.weight, net.weight)
    with pytest.raises(UserError, match="expected a checkpoint with key 'netC'"):
        pick(load_raw(path), "netC", path)


def test_strict_load_lists_missing_and_unexpected():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2))
    state = {"0.weight": torch.zeros(2, 3), "extra.bias": torch.zeros(1)}
    with pytest.raises(UserError) as info:
        load_strict(net, state, "ck.pth")
    msg = str(info.value)
    assert "missing keys: 0.bias" in msg and "unexpected keys: extra.bias" in msg
    with pytest.raises(UserError, match=r"shape mismatches: 0.weight: checkpoint \(3, 3\)"):
        load_strict(net, {"0.weight": torch.zeros(3, 3), "0.bias": torch.zeros(2)}, "ck.pth")


def test_own_format_round_trip(tmp_path):
    net = torch.nn.Linear(4, 1)
    save_checkpoint(tmp_path / "run", net.state_dict(), {"model": "x", "config": "tiny"})
    assert is_our_checkpoint(tmp_path / "run")
    state, config = load_checkpoint(tmp_path / "run")
    assert config == {"config": "tiny", "model": "x"}
    assert torch.equal(state["weight"], net.weight.detach())


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_raw(tmp_path / "none.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        load_raw(bad)
