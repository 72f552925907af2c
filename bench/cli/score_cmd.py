"""``sida-bench score RUN_DIR [--protocol P] [--metric-option M.K=V ...] --out DIR`` (re-score a finished
run, no model) and ``sida-bench score --predictions FILE --protocol P --out DIR`` (a predictions file)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.cli.common import parse_data_roots, parse_model_options
from bench.errors import UserError


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("score", parents=[common], help="re-score a finished run, or score a predictions file",
                       description="RUN_DIR: re-score the stored predictions of a finished run (another protocol, "
                                   "threshold, aggregation, polarity or subset) without loading the model. "
                                   "--predictions FILE: validate a file of per-image predictions from a method that "
                                   "is not a plugin against the protocol's datasets. Both write DIR/results.json and "
                                   "DIR/tables/ (see docs/running.md).")
    p.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR", help="a finished run directory")
    p.add_argument("--predictions", type=Path, metavar="FILE", help=".csv, .jsonl or .parquet")
    p.add_argument("--protocol", help="bundled protocol name or a YAML path (default for RUN_DIR: the run's own)")
    p.add_argument("--metric-option", action="append", default=[], metavar="METRIC.KEY=VALUE",
                   help="override a metric parameter (repeatable), e.g. localization.threshold=0.3; "
                        "values are read as YAML scalars")
    p.add_argument("--data-root", action="append", metavar="DATASET=PATH", help="where a dataset lives (repeatable)")
    p.add_argument("--name", help="the method's name in results and tables (default: the file name)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory")
    p.set_defaults(handler=handle)


def parse_metric_options(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """``["localization.threshold=0.3", ...]`` → ``{"localization": {"threshold": 0.3}}``."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in parse_model_options(pairs).items():
        metric, dot, param = key.partition(".")
        if not dot or not metric or not param:
            raise UserError(f"--metric-option must be METRIC.KEY=VALUE (e.g. localization.threshold=0.3), got {key!r}")
        out.setdefault(metric, {})[param] = value
    return out


def handle(args: argparse.Namespace) -> int:
    from bench.cli.compose import score_and_write, score_predictions_file
    from bench.evaluation.protocol import load_protocol
    from bench.evaluation.runner import check_data_roots

    options = parse_metric_options(args.metric_option)
    if (args.run_dir is None) == (args.predictions is None):
        raise UserError("Give either RUN_DIR (re-score a finished run) or --predictions FILE, not both")
    if args.run_dir is not None:
        if args.name or args.data_root:
            raise UserError("--name and --data-root apply to --predictions FILE only")
        results = score_and_write(args.run_dir, args.out, protocol=args.protocol, metric_options=options)
    else:
        if args.protocol is None:
            raise UserError("--predictions FILE needs --protocol P")
        if options:
            raise UserError("--metric-option applies to RUN_DIR; put metric parameters in the protocol")
        protocol = load_protocol(args.protocol)
        roots = parse_data_roots(args.data_root)
        check_data_roots(protocol, roots)
        results = score_predictions_file(args.predictions, protocol, args.out, data_roots=roots, name=args.name)
    print(f"{args.out / 'results.json'}: {len(results.entries)} result groups, "
          f"{sum(e.n for e in results.entries)} predictions")
    return 0
