"""``sida-bench score --predictions FILE --protocol P --out DIR [--data-root D=PATH] [--name NAME]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.common import parse_data_roots


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("score", parents=[common], help="score a predictions file (CSV/JSONL/parquet) on a protocol",
                       description="Validate a file of per-image predictions from a method that is not a plugin "
                                   "against the protocol's datasets, then write DIR/results.json and DIR/tables/. "
                                   "Columns: sample_id, prob_<class> (or prob_fake), optional dataset, split, "
                                   "perturbation, mask_path (see docs/running.md).")
    p.add_argument("--predictions", type=Path, required=True, metavar="FILE", help=".csv, .jsonl or .parquet")
    p.add_argument("--protocol", required=True, help="bundled protocol name or a YAML path")
    p.add_argument("--data-root", action="append", metavar="DATASET=PATH", help="where a dataset lives (repeatable)")
    p.add_argument("--name", help="the method's name in results and tables (default: the file name)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from bench.protocol import load_protocol
    from bench.runner import check_data_roots
    from bench.scoring import score_file

    protocol = load_protocol(args.protocol)
    roots = parse_data_roots(args.data_root)
    check_data_roots(protocol, roots)
    results = score_file(args.predictions, protocol, args.out, data_roots=roots, name=args.name)
    print(f"{args.out / 'results.json'}: {len(results.entries)} result groups, "
          f"{sum(e.n for e in results.entries)} predictions")
    return 0
