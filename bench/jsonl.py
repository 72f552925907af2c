"""Reading JSON-lines files (manifests, predictions) with line-numbered errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.safe_text import path_text


def read_jsonl(path: Path, what: str) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file, one per non-blank line.

    Bytes that are not UTF-8 (a file name written raw) are kept as surrogate escapes, so such a path
    still opens; a line that is not a JSON object is a UserError naming its line number.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {what} {path_text(path)}: {exc.strerror or exc}") from exc
    rows: list[dict[str, Any]] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        line = raw.decode("utf-8", "surrogateescape")
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{what} {path_text(path)}: line {number} is not valid JSON ({exc.msg} at column "
                            f"{exc.colno})") from None
        if not isinstance(row, dict):
            raise UserError(f"{what} {path_text(path)}: line {number}: expected a JSON object, "
                            f"got {type(row).__name__}")
        rows.append(row)
    return rows
