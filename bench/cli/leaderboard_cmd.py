"""``sida-bench leaderboard build RESULTS... --out SITE``: a static leaderboard site.

RESULTS are results folders (``sida-bench run``, ``score`` or ``submit score``) or folders
above them. The site needs no server and no network (see docs/leaderboard.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("leaderboard", parents=[common], help="rank results and build a static leaderboard site")
    actions = p.add_subparsers(dest="leaderboard_command", metavar="ACTION", required=True)
    b = actions.add_parser("build", parents=[common], help="build the site from results folders",
                           description="Rank entries per protocol identity with 95 % bootstrap intervals and "
                                       "paired bootstrap ties; write HTML, leaderboard.json and leaderboard.csv.")
    b.add_argument("results", nargs="+", type=Path, metavar="RESULTS", help="results folders or folders above them")
    b.add_argument("--out", type=Path, required=True, metavar="SITE", help="output folder (rebuilt in place)")
    b.set_defaults(handler=handle_build)


def handle_build(args: argparse.Namespace) -> int:
    from bench.leaderboard.site import build_site

    data = build_site(args.results, args.out)
    n = sum(len(b["entries"]) for b in data["boards"])
    na = sum(len(b["not_applicable"]) for b in data["boards"])
    print(f"{args.out / 'index.html'}: {len(data['boards'])} boards, {n} ranked entries, "
          f"{len(data['unranked']) + na} not ranked" + (f" ({na} not applicable)" if na else ""))
    return 0
