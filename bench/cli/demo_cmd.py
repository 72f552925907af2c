"""``sida-bench demo [--out DIR] [--quick]``: the paper's tables and figures on sid-mini."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("demo", parents=[common],
                       help="train small models on the embedded sid-mini benchmark and write Tables 2-5 and figures")
    p.add_argument("--out", type=Path, default=Path("results/demo"), metavar="DIR",
                   help="output directory (default: results/demo)")
    p.add_argument("--quick", action="store_true",
                   help="a smaller build and shorter training (about 2 minutes; used by CI)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from rich.console import Console

    from bench.demo import run_demo
    from bench.reproducibility.claims import format_claims

    device = "cpu" if args.device == "auto" else args.device
    result = run_demo(args.out, quick=args.quick, device=device, seed=args.seed)
    console = Console()
    for kind in ("detection", "robustness"):
        path = args.out / "tables" / f"{kind}.md"
        if path.is_file():
            console.print(path.read_text(encoding="utf-8"), markup=False, highlight=False)
    if result.claims:
        note = ("; --quick: a few training steps, most models near chance; the claims are recorded, not expected"
                " to hold" if args.quick else "")
        console.print(f"Claims (margins: bench/reproducibility/claims.py{note}):\n" + format_claims(result.claims),
                      markup=False, highlight=False)
    console.print(f"Tables:  {args.out / 'tables'} (md, tex, csv; sizes.json, claims.json)")
    console.print(f"Figures: {args.out / 'figures'}")
    console.print(f"Runs:    {args.out / 'runs'} (predictions, results.json per protocol and model)")
    console.print(f"Leaderboard: {args.out / 'leaderboard' / 'index.html'}")
    console.print(f"Done in {result.seconds:.0f} s.")
    return 0
