"""``sida-bench table DIR [DIR ...] [--format md|latex|csv] [--kind K] [--out DIR]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.evaluation.protocol import TABLE_KINDS


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("table", parents=[common], help="render paper-style tables from results files",
                       description="Merge one or more run directories (or results.json files) into the paper's "
                                   "tables, one row per model. Reads results files only.")
    p.add_argument("runs", nargs="+", type=Path, metavar="DIR", help="run directories or results.json files")
    p.add_argument("--format", choices=("md", "latex", "csv"), default="md", help="output format (default: md)")
    p.add_argument("--kind", action="append", choices=TABLE_KINDS,
                   help="table layout (repeatable; default: those the runs' protocols list)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="write <kind>.{md,tex,csv} (all formats) into DIR instead of printing")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from bench.errors import UserError
    from bench.evaluation.results import load_results
    from bench.tables import build_table, render, runs_for, table_kinds, write_tables

    results = [load_results(p) for p in args.runs]
    names = [(p.parent.name if p.is_file() else p.name) or str(p) for p in args.runs]
    runs = list(zip(names, results))
    kinds = args.kind or table_kinds(runs)
    if not kinds:
        raise UserError("The runs' protocols list no tables; choose one with --kind")
    if args.out is not None:
        for path in write_tables(results, args.out, kinds=kinds, names=names):
            print(path)
        return 0
    for i, kind in enumerate(kinds):
        print(("\n" if i else "") + render(build_table(kind, runs_for(kind, runs) or runs), args.format), end="")
    return 0
