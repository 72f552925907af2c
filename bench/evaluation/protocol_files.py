"""Where protocol YAML files live: the bundled ones (package data) or a user's path."""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

from bench.errors import UserError


def bundled_protocols() -> dict[str, Path]:
    """Names (file stems, without leading underscore templates) → paths of bundled protocols."""
    root = Path(str(resources.files("protocols")))
    return {p.stem: p for p in root.glob("*.yaml") if not p.stem.startswith("_")}


def resolve_protocol(name_or_path: str) -> Path:
    """A bundled protocol name or a path to a YAML file."""
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"Protocol file not found: {path}")
        return path
    bundled = bundled_protocols()
    if name_or_path in bundled:
        return bundled[name_or_path]
    hints = difflib.get_close_matches(name_or_path, list(bundled), n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(map(repr, hints))}?" if hints else ""
    raise UserError(
        f"Unknown protocol {name_or_path!r}.{hint} Available: {', '.join(sorted(bundled)) or 'none'}"
    )
