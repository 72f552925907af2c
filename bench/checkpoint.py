"""Checkpoint I/O shared by all plugins.

- Official checkpoints load with ``torch.load(..., map_location="cpu", weights_only=True)``
  or safetensors. A file that needs full unpickling is refused unless the user opts in with
  ``--allow-pickle`` (arbitrary code execution risk).
- Loads are strict: a mismatch raises a :class:`~bench.errors.UserError` listing the
  missing and unexpected keys.
- The harness's own format is a directory with ``model.safetensors`` and ``config.json``
  (the model name, configuration, options and training record).
"""

from __future__ import annotations

import json
import pickle
import re
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bench.errors import UserError

OUR_WEIGHTS = "model.safetensors"
OUR_CONFIG = "config.json"


UNREADABLE = (RuntimeError, EOFError, OSError, KeyError, ValueError, IndexError, TypeError, AttributeError,
              zipfile.BadZipFile, struct.error)
"""What ``torch.load`` raises on data that is no checkpoint (text, random bytes, a truncated archive)."""


def load_raw(path: Path, *, allow_pickle: bool = False, mmap: bool = False) -> Any:
    """Load a checkpoint object: safetensors → dict of tensors, else ``torch.load`` (weights only).

    ``mmap``: memory-map the tensor data of a torch zip archive (cheap when only the names are
    needed; ignored for the legacy non-zip format). Every failure is a one-line :class:`UserError`:
    missing or empty file, corrupt data, or a pickle that ``weights_only`` loading refuses (it names
    the refused class; ``--allow-pickle`` opts in).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Checkpoint file not found: {path}")
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty (0 bytes): not a checkpoint; download or copy it again")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    mmap = mmap and zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        refused = _refused_global(str(exc))
        if refused is None and not _is_pickle(path):
            raise UserError(f"{path} is not a readable PyTorch checkpoint (corrupt, truncated or another "
                            "format)") from exc
        if not allow_pickle:
            what = f"pickled Python objects ({refused})" if refused else "a pickle stream"
            raise UserError(
                f"{path} holds {what} that weights_only loading refuses (unpickling can run code). "
                "If you trust the file, pass --allow-pickle; otherwise use a plain state dict or .safetensors file."
            ) from exc
        return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)
    except UNREADABLE as exc:
        text = str(exc).strip()
        detail = text.splitlines()[0] if isinstance(exc, (RuntimeError, OSError)) and text else ""
        raise UserError(f"{path} is not a readable PyTorch checkpoint (corrupt, truncated or another format"
                        + (f": {detail})" if detail else ")")) from exc


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file's tensors on CPU; a corrupt file is a one-line UserError."""
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable safetensors file ({exc})") from exc


def _refused_global(message: str) -> str | None:
    """The class or function a weights-only load refused (``posix.system``, ``__main__.Net``), if named."""
    match = re.search(r"unsupported GLOBAL ([\w.]+)|Unsupported global: GLOBAL ([\w.]+)", message)
    if match:
        return match.group(1) or match.group(2)
    return "a class outside the allowed tensor types" if "Unsupported global" in message else None


def _is_pickle(path: Path) -> bool:
    """A torch zip archive holding a pickle, or a raw pickle (protocol 2+ starts with the PROTO opcode)."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            return any(name.endswith("data.pkl") for name in zf.namelist())
    with open(path, "rb") as fh:
        return fh.read(1) == b"\x80"


def tensors_only(obj: Any, source: Path | str) -> dict[str, torch.Tensor]:
    """Check that ``obj`` is a flat mapping of names to tensors."""
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{source}: expected a state dict (names → tensors), got {type(obj).__name__}")
    return dict(obj)


def pick(obj: Any, key: str, source: Path | str) -> dict[str, torch.Tensor]:
    """``obj[key]`` as a state dict, with an error that lists the keys present."""
    if not isinstance(obj, Mapping) or key not in obj:
        keys = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise UserError(f"{source}: expected a checkpoint with key {key!r}; found {keys}")
    return tensors_only(obj[key], source)


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key that has it (e.g. DataParallel's ``module.``)."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def load_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: Path | str,
                limit: int | None = 8) -> None:
    """``load_state_dict(strict=True)`` with an error naming missing/unexpected keys and shape clashes
    (the first ``limit`` of each kind and a count of the rest; ``limit=None`` names every one)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
            if keys:
                shown = keys if limit is None else keys[:limit]
                more = f" (+{len(keys) - len(shown)} more)" if len(keys) > len(shown) else ""
                parts.append(f"{label}: {', '.join(shown)}{more}")
        raise UserError(f"{source} does not match {type(module).__name__}: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def is_our_checkpoint(path: Path) -> bool:
    path = Path(path)
    return (path / OUR_WEIGHTS).is_file() if path.is_dir() else path.name == OUR_WEIGHTS


def save_checkpoint(out_dir: Path, state: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``out_dir`` (atomically per file)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    tmp = out_dir / (OUR_WEIGHTS + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(out_dir / OUR_WEIGHTS)
    tmp_cfg = out_dir / (OUR_CONFIG + ".tmp")
    tmp_cfg.write_text(json.dumps(dict(config), indent=2, sort_keys=True, default=str))
    tmp_cfg.replace(out_dir / OUR_CONFIG)
    return out_dir


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read the harness's own format: (state dict, config)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    state = read_safetensors(folder / OUR_WEIGHTS)
    cfg_path = folder / OUR_CONFIG
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{cfg_path} is not valid JSON ({exc}); it should be the config.json written with "
                        "the weights") from exc
    if not isinstance(config, dict):
        raise UserError(f"{cfg_path}: expected a JSON object (the model name, configuration and options)")
    return state, config


TRAINER_STATE = "trainer_state.pt"
"""Beside the weights in ``OUT/last``: the optimizer and schedule state a resumed training run continues from."""


def resume_run(out_dir: Path, resume: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The weights and the saved trainer state (``{"optimizer": ..., "state": ...}``, weights-only
    torch file) of ``OUT/last``, to continue a training run; None when ``OUT`` holds no run. A run
    there without ``resume`` is refused in one line (never overwritten)."""
    last = Path(out_dir) / "last"
    if not (last / TRAINER_STATE).is_file():
        return None
    if not resume:
        raise UserError(f"{out_dir} already holds a training run; pass --resume to continue it or choose another --out")
    weights, _ = load_checkpoint(last)
    return weights, torch.load(last / TRAINER_STATE, map_location="cpu", weights_only=True)


class _StubModule(torch.nn.Module):
    """Stands in for a class of an official source file that is not importable here: holds the
    unpickled parameters, buffers and children so that ``state_dict()`` works; never runs."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a module unpickled from a checkpoint only carries weights")


def _stub_pickle_module(stub_modules: tuple[str, ...]) -> Any:
    """A ``pickle``-like namespace for ``torch.load`` whose Unpickler maps every class of the
    named (official, not installed) source modules to :class:`_StubModule`."""
    import types

    class StubUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module in stub_modules or module.split(".")[-1] in stub_modules:
                return _StubModule
            return super().find_class(module, name)

    return types.SimpleNamespace(__name__="pickle", Unpickler=StubUnpickler, load=pickle.load)


def load_pickled_module_state(path: Path, stub_modules: tuple[str, ...], *, allow_pickle: bool) -> Any:
    """A checkpoint that may be a whole pickled ``nn.Module`` (e.g. Gram-Net's official files).

    Weights-only files (state dicts) load as :func:`load_raw`. A pickled module needs
    ``allow_pickle`` (full unpickling runs code from the file); its classes from
    ``stub_modules`` (the official source files, e.g. ``resnet18_gram``) are replaced by stubs,
    so the official code need not be importable, and its ``state_dict()`` is returned.
    """
    path = Path(path)
    try:
        return load_raw(path, allow_pickle=False)
    except UserError:
        if not allow_pickle or not path.is_file():
            raise
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_stub_pickle_module(stub_modules))
    except (pickle.UnpicklingError, AttributeError, ImportError, RuntimeError, EOFError, OSError) as exc:
        raise UserError(f"{path} could not be unpickled: {type(exc).__name__}: {exc}") from exc
    return dict(obj.state_dict()) if isinstance(obj, torch.nn.Module) else obj
