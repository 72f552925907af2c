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


class Payload:
    """A pickle that would run code (``os.system``) if fully unpickled."""

    def __reduce__(self):
        import os

        return (os.system, ("echo should-never-run",))


def test_code_pickle_is_refused_with_the_refused_global_and_allow_pickle(tmp_path):
    path = tmp_path / "payload.pth"
    torch.save({"model": Payload()}, path)
    with pytest.raises(UserError) as info:
        load_raw(path)
    msg = str(info.value)
    assert "pickled Python objects (posix.system)" in msg and "weights_only" in msg and "--allow-pickle" in msg
    assert "corrupt" not in msg and "\n" not in msg


def test_raw_pickle_stream_names_allow_pickle(tmp_path):
    import pickle

    path = tmp_path / "raw.pkl"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    with pytest.raises(UserError, match="holds a pickle stream that weights_only loading refuses.*--allow-pickle"):
        load_raw(path)


@pytest.mark.parametrize("data", [b"", b"hello world", bytes(range(256)) * 8, b"PK\x03\x04" + b"\x00" * 64, b"\x80\x02}q\x00"])
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_garbage_files_are_one_line_user_errors(tmp_path, data, suffix):
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(data)
    with pytest.raises(UserError) as info:
        load_raw(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_own_format_with_corrupt_files(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"garbage!" * 4)
    with pytest.raises(UserError, match="not a readable safetensors file"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, torch.nn.Linear(2, 1).state_dict(), {"model": "x"})
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="config.json is not valid JSON"):
        load_checkpoint(tmp_path)
