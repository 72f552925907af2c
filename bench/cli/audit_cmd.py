"""``sida-bench audit --model NAME[:CONFIG] --protocol P --out DIR`` (or ``--from RUN_DIR``).

Runs the robustness protocol into ``DIR/run/`` (the same options as ``run``), or re-uses a
finished run directory, then writes ``DIR/report.html``, ``DIR/report.json`` and ``DIR/figures/``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bench.cli.common import add_model_args, parse_data_roots, parse_model_options
from bench.errors import UserError

RUN_SUBDIR = "run"


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("audit", parents=[common], help="robustness audit of one model: sweeps, pipelines, report",
                       description="Run (or re-use with --from) a robustness protocol, then write DIR/report.html "
                                   "(static, self-contained) and DIR/report.json: sweeps with bootstrap bands and "
                                   "breaking points, paired comparisons with clean, flips per class, examples.")
    add_model_args(p, required=False)
    p.add_argument("--protocol", default="sid_mini_audit",
                   help="audit protocol name or YAML path (default: sid_mini_audit; sid_set_audit for SID-Set)")
    p.add_argument("--from", dest="from_run", type=Path, metavar="RUN_DIR",
                   help="re-use a finished run directory (results.json + predictions/) instead of running")
    p.add_argument("--data-root", action="append", metavar="DATASET=PATH", help="where a dataset lives (repeatable)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="report directory (the run goes to DIR/run)")
    p.add_argument("--limit", type=int, metavar="N", help="N samples of each split, evenly spaced (every class kept)")
    p.add_argument("--batch-size", type=int, default=8, metavar="B", help="inference batch size (default: 8)")
    p.add_argument("--workers", type=int, default=0, metavar="W", help="DataLoader workers (default: 0)")
    p.add_argument("--resume", action="store_true", help="continue the run in DIR/run, skipping stored predictions")
    p.add_argument("--flush-every", type=int, default=256, metavar="K", help="rows per prediction shard (default: 256)")
    p.add_argument("--break-fraction", type=float, default=0.9, metavar="F",
                   help="breaking point: first strength whose metric is below F × clean (default: 0.9)")
    p.add_argument("--examples", type=int, default=6, metavar="N", help="flip examples to show (default: 6)")
    p.add_argument("--compare", type=Path, metavar="RUN_DIR",
                   help="also compare every condition with the same condition of another finished run "
                        "(e.g. the protocol without neutralise), paired on the same images")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from bench.audit.report import REPORT_HTML, REPORT_JSON, build_report

    if args.examples < 0:
        raise UserError(f"--examples must be >= 0, got {args.examples}")
    if not 0.0 < args.break_fraction < 1.0:
        raise UserError(f"--break-fraction must be in (0, 1), got {args.break_fraction}")
    if args.from_run is not None:
        if args.model is not None or args.resume or args.limit is not None:
            raise UserError("--from re-uses a finished run: drop --model, --limit and --resume")
        run_dir = args.from_run
    else:
        if args.model is None:
            raise UserError("audit needs --model NAME[:CONFIG] (or --from RUN_DIR to re-use a run)")
        run_dir = args.out / RUN_SUBDIR
        _run(args, run_dir)
    command = "sida-bench " + shlex.join(sys.argv[1:]) if sys.argv[1:] else None
    report = build_report(run_dir, args.out, break_fraction=args.break_fraction, n_examples=args.examples,
                          command=command, compare=args.compare)
    n_breaks = sum(1 for s in report["sections"] for sw in s["sweeps"] for m in sw["metrics"].values()
                   if m["breaking_point"]["strength"] is not None)
    print(f"{args.out / REPORT_HTML}, {args.out / REPORT_JSON}: {len(report['sections'])} dataset split(s), "
          f"{len(report['figures'])} figures, {n_breaks} breaking points reached")
    return 0


def _run(args: argparse.Namespace, run_dir: Path) -> None:
    from bench.cli.compose import run_and_score
    from bench.evaluation.protocol import load_protocol
    from bench.plugins import create_model

    protocol = load_protocol(args.protocol)
    model = create_model(args.model, weights=args.weights, device=args.device, allow_pickle=args.allow_pickle,
                         **parse_model_options(args.option))
    run_and_score(protocol, model, run_dir, tables=False, device=args.device, allow_pickle=args.allow_pickle,
                  data_roots=parse_data_roots(args.data_root), limit=args.limit, batch_size=args.batch_size,
                  workers=args.workers, resume=args.resume, flush_every=args.flush_every)
