"""Argument helpers shared by subcommands (model spec, --data-root pairs, output dirs)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from bench.errors import UserError


def add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required, metavar="NAME[:CONFIG]",
                   help="model plugin, e.g. cnnspot (official configuration) or cnnspot:tiny")
    p.add_argument("--weights", type=Path, metavar="PATH", help="local checkpoint file or directory")
    p.add_argument("--allow-pickle", action="store_true",
                   help="allow checkpoints that need full unpickling (only for files you trust)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="model option (repeatable), e.g. crop=null for cnnspot, eval_mode=official for sida; "
                        "values are read as YAML scalars (true, 3, null, text)")


def parse_model_options(pairs: list[str] | None, flag: str = "--option") -> dict[str, Any]:
    """``["k=v", ...]`` → {k: YAML scalar of v} (``true`` → True, ``3`` → 3, ``null`` → None);
    ``flag`` names the option in errors."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"{flag} must be KEY=VALUE, got {pair!r}")
        try:
            options[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError as exc:
            raise UserError(f"{flag} {key}: cannot read value {value!r}: {exc}") from exc
    return options


def parse_data_roots(pairs: list[str] | None) -> dict[str, Path]:
    """``["sid_set=/data/sid", ...]`` → {dataset: path}."""
    roots: dict[str, Path] = {}
    for pair in pairs or []:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--data-root must be DATASET=PATH, got {pair!r}")
        roots[name] = Path(path).expanduser()
    return roots


def not_yet(command: str, issue: str) -> UserError:
    return UserError(f"'sida-bench {command}' is not available in this build yet ({issue})")
