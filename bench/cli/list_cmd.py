"""``sida-bench list [models|datasets|perturbations|metrics|protocols] [--json]``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

KINDS = ("models", "datasets", "perturbations", "metrics", "protocols")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("list", parents=[common], help="list registered plugins and bundled protocols")
    p.add_argument("kind", nargs="?", choices=KINDS, help="what to list (default: everything)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler=handle)


def collect(kind: str) -> list[dict[str, Any]]:
    """Rows for one kind; imports no plugin code."""
    if kind == "protocols":
        from bench.evaluation.protocol_files import bundled_protocols

        return [{"name": name, "source": str(path)} for name, path in sorted(bundled_protocols().items())]
    from bench.plugins import REGISTRIES

    return [{"name": e.name, "source": e.source} for e in REGISTRIES[kind].entries()]


def handle(args: argparse.Namespace) -> int:
    kinds = [args.kind] if args.kind else list(KINDS)
    if args.json:
        data: Any = collect(kinds[0]) if args.kind else {k: collect(k) for k in kinds}
        print(json.dumps(data, indent=2))
        return 0
    console = Console()
    for kind in kinds:
        table = Table(title=kind, show_lines=False)
        table.add_column("name")
        table.add_column("source")
        for row in collect(kind):
            table.add_row(row["name"], row["source"])
        console.print(table)
    return 0
