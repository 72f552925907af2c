"""``sida-bench data summary|build`` (filled in by the datasets work)."""

from __future__ import annotations

import argparse

from bench.cli.common import not_yet


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("data", parents=[common], help="inspect datasets and build the embedded benchmark")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    raise not_yet("data", "datasets")
