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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from bench.errors import UserError

OUR_WEIGHTS = "model.safetensors"
OUR_CONFIG = "config.json"


def load_raw(path: Path, *, allow_pickle: bool = False) -> Any:
    """Load a checkpoint object: safetensors → dict of tensors, else ``torch.load`` (weights only)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        return load_file(str(path), device="cpu")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):
            raise UserError(f"{path} is not a readable PyTorch checkpoint (corrupt or not a checkpoint)") from exc
        if not allow_pickle:
            raise UserError(
                f"{path} cannot be loaded with weights_only=True (it contains pickled objects). "
                "If you trust the file, pass --allow-pickle."
            ) from exc
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError) as exc:
        raise UserError(f"{path} is not a readable PyTorch checkpoint: {exc}") from exc


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
    state = load_file(str(folder / OUR_WEIGHTS), device="cpu")
    cfg_path = folder / OUR_CONFIG
    config = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    return state, config


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
