"""``sida-bench run PROTOCOL --model NAME[:CONFIG] ... --out DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.common import add_model_args, not_yet


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", parents=[common], help="run a protocol with a model and write results")
    p.add_argument("protocol", nargs="?", help="bundled protocol name or a YAML path")
    add_model_args(p)
    p.add_argument("--data-root", action="append", metavar="DATASET=PATH", help="where a dataset lives (repeatable)")
    p.add_argument("--out", type=Path, help="output directory")
    p.add_argument("--limit", type=int, help="evaluate at most N samples per dataset split")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--resume", action="store_true")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from bench.model import parse_model_name
    from bench.plugins import MODELS

    name, _ = parse_model_name(args.model)
    MODELS.get(name)
    raise not_yet("run", "runner")
