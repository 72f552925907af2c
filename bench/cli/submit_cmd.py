"""``sida-bench submit validate DIR`` and ``sida-bench submit score DIR --out RESULTS``.

DIR is a submission folder or archive (``submission.yaml`` + predictions files, see
docs/leaderboard.md) or a run folder from ``sida-bench run``. ``validate`` lists every problem
(file, row, column) and exits 2 if there is any; ``score`` validates, then writes one results
folder per protocol under RESULTS.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.cli.common import parse_data_roots


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("submit", parents=[common], help="validate and score leaderboard submissions")
    actions = p.add_subparsers(dest="submit_command", metavar="ACTION", required=True)
    v = actions.add_parser("validate", parents=[common], help="check a submission; list every problem",
                           description="Check submission.yaml, protocols and versions, every sample id, "
                                       "probabilities, masks and file sizes. Exit 2 when anything is wrong.")
    v.add_argument("submission", type=Path, metavar="DIR", help="submission folder, .zip/.tar(.gz), or run folder")
    v.add_argument("--data-root", action="append", metavar="DATASET=PATH", help="where a dataset lives (repeatable)")
    v.add_argument("--json", action="store_true",
                   help="print the result (or every problem: file, row, column, message) as JSON; exit 2 if invalid")
    v.set_defaults(handler=handle_validate)
    s = actions.add_parser("score", parents=[common], help="validate, then score a submission",
                           description="Write RESULTS/<protocol>/{results.json, predictions/, tables/} per protocol.")
    s.add_argument("submission", type=Path, metavar="DIR", help="submission folder, .zip/.tar(.gz), or run folder")
    s.add_argument("--out", type=Path, required=True, metavar="RESULTS", help="output folder")
    s.add_argument("--data-root", action="append", metavar="DATASET=PATH", help="where a dataset lives (repeatable)")
    s.set_defaults(handler=handle_score)


def handle_validate(args: argparse.Namespace) -> int:
    from bench.leaderboard.archive import opened
    from bench.leaderboard.validate import SubmissionInvalid, validate_submission

    with opened(args.submission) as folder:
        try:
            valid = validate_submission(folder, parse_data_roots(args.data_root))
        except SubmissionInvalid as exc:
            if not args.json:
                raise
            problems = [{"file": p.file, "row": p.row, "column": p.column, "message": p.message} for p in exc.problems]
            print(json.dumps({"valid": False, "problems": problems}, indent=2))
            return 2
        protocols = [f"{pf.protocol.name} v{pf.protocol.version}" for pf in valid.files]
    if args.json:
        print(json.dumps({"valid": True, "run_folder": valid.run, "protocols": protocols}, indent=2))
    else:
        print(f"{args.submission}: valid ({', '.join(protocols)})")
    return 0


def handle_score(args: argparse.Namespace) -> int:
    from bench.leaderboard.archive import opened
    from bench.leaderboard.submit import score_submission

    with opened(args.submission) as folder:
        for path in score_submission(folder, args.out, parse_data_roots(args.data_root)):
            print(path / "results.json")
    return 0
