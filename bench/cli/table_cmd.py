"""``sida-bench table`` (its own issue fills it in)."""

from __future__ import annotations

import argparse

from bench.cli.common import not_yet


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("table", parents=[common], help="table")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    raise not_yet("table", "see the open issues")
