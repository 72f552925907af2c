"""Cost of a robustness audit: ``python -m bench.perf.audit_cost [--model npr:tiny] [--limit 90]``.

Prints the seconds of the run (``sid_mini_audit``, 22 conditions), of scoring it, and of the report
(analysis, paired bootstraps, figures, examples), and the run's cost per prediction; the demo's audit step
(bench/demo.py, ``AUDIT_LIMIT`` images) costs about their sum.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    from bench.audit.report import build_report
    from bench.evaluation.runner import run_protocol
    from bench.evaluation.scorer import score_run

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="npr:tiny")
    parser.add_argument("--limit", type=int, default=90)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_dir = Path(tmp) / "run"
        run_protocol("sid_mini_audit", args.model, run_dir, limit=args.limit)
        t1 = time.perf_counter()
        results = score_run(run_dir)
        results.write(run_dir)
        t2 = time.perf_counter()
        build_report(run_dir, Path(tmp) / "report")
        t3 = time.perf_counter()
    n = sum(e.n for e in results.entries)
    print(f"{args.model} on sid_mini_audit, limit {args.limit}, {args.threads} thread(s)")
    print(f"  run     {t1 - t0:7.1f} s  ({n} predictions, {1000 * (t1 - t0) / max(1, n):.1f} ms each)")
    print(f"  score   {t2 - t1:7.1f} s")
    print(f"  report  {t3 - t2:7.1f} s")
    print(f"  total   {t3 - t0:7.1f} s")


if __name__ == "__main__":
    main()
