"""The one place that composes the evaluation path: run → score → results.json and tables.

The runner (:mod:`bench.evaluation.runner`) only predicts into a run directory; the scorer
(:mod:`bench.evaluation.scorer`) only reads one. ``run``, ``score FILE`` and ``score RUN_DIR``
all end in :func:`score_and_write`, so they share the same streaming scoring path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.evaluation.protocol import Protocol
from bench.evaluation.results import ResultsFile
from bench.evaluation.sharding import Shard


def score_and_write(run_dir: str | Path, out_dir: str | Path, *, protocol: Protocol | str | Path | None = None,
                    metric_options: dict[str, dict[str, Any]] | None = None, tables: bool = True) -> ResultsFile:
    """Score the finished run in ``run_dir``; write ``out_dir/results.json`` and ``out_dir/tables/``."""
    from bench.evaluation.scorer import score_run
    from bench.tables import write_tables

    results = score_run(run_dir, protocol, metric_options)
    out = Path(out_dir)
    results.write(out)
    if tables:
        kinds = [t["kind"] for t in results.protocol.resolved.get("tables", [])]
        write_tables([results], out / "tables", kinds=kinds or None)
    return results


def run_and_score(protocol: Protocol | str | Path, model: Any, out_dir: str | Path, *, tables: bool = True,
                  shard: Shard | None = None, **run_options: Any) -> ResultsFile | None:
    """:func:`~bench.evaluation.runner.run_protocol`, then score once the whole run is complete.

    ``shard``: this process's share (``--shard I/K``); scored here when every shard of the run
    is complete, else left to the last shard to finish (or to ``sida-bench score DIR``).
    Under torchrun (WORLD_SIZE > 1, no ``shard``) every rank predicts its share, all ranks meet
    at a barrier, and rank 0 scores. Returns None where this process does not score.
    """
    from bench.evaluation.run_record import complete_records
    from bench.evaluation.runner import run_protocol
    from bench.evaluation.sharding import barrier, close_distributed, init_distributed, torchrun_shard

    distributed = torchrun_shard() if shard is None else None
    if distributed is not None:
        init_distributed(str(run_options.get("device", "cpu")))
    try:
        run_protocol(protocol, model, out_dir, shard=shard or distributed, **run_options)
        if distributed is not None:
            barrier()
            if distributed.index != 0:
                return None
        elif shard is not None and shard.count > 1:
            try:
                complete_records(Path(out_dir))
            except UserError:
                return None
        return score_and_write(out_dir, out_dir, tables=tables)
    finally:
        if distributed is not None:
            close_distributed()


def score_predictions_file(predictions: str | Path, protocol: Protocol | str | Path, out_dir: str | Path, *,
                           data_roots: dict[str, Path] | None = None, name: str | None = None) -> ResultsFile:
    """Import a predictions file (:mod:`bench.evaluation.predictions_import`) into ``out_dir`` as a
    run, then score it like any run."""
    from bench.evaluation.predictions_import import import_predictions
    from bench.evaluation.protocol import load_protocol

    proto = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    import_predictions(Path(predictions), proto, Path(out_dir), data_roots, name)
    return score_and_write(out_dir, out_dir)
