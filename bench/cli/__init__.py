"""The ``sida-bench`` command line.

Each subcommand lives in its own module with ``register(subparsers)``, which adds its parser
and sets ``handler``. User mistakes raise :class:`~bench.errors.UserError`; ``main`` prints
them as one line and exits with status 2 (argparse does the same for bad options).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from bench import __version__
from bench.errors import UserError

COMMANDS = ("list", "data", "run", "score", "submit", "leaderboard", "table", "predict", "train", "audit", "demo")


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default = (lambda value: argparse.SUPPRESS) if suppress else (lambda value: value)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=default("auto"),
                        help="where models run (default: auto = cuda if available)")
    parser.add_argument("--seed", type=int, default=default(0), help="global seed (default: 0)")
    parser.add_argument("--log-level", default=default("WARNING"),
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="logging level (default: WARNING)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sida-bench",
        description="Detect, localize and explain deepfakes in social-media images; regenerate the SIDA paper's tables.",
    )
    parser.add_argument("--version", action="version", version=f"sida-bench {__version__}")
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    for name in COMMANDS:
        module = importlib.import_module(f"bench.cli.{name}_cmd")
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
