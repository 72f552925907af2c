"""``sida-bench submit score DIR --out RESULTS``: score a validated submission.

File submissions go through the same path as ``sida-bench score``
(:func:`bench.evaluation.predictions_import.import_predictions` → :func:`bench.scoring.score_store`),
one results folder per protocol: ``RESULTS/<protocol>/{results.json, predictions/, tables/}``.
The model record carries the submission's metadata (``model.submission``) and the sha256 of
each scored file. A run folder (``sida-bench run``) is checked and copied as it is, so plugin
runs and file submissions rank side by side.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from bench.errors import UserError
from bench.leaderboard.schema import MANIFEST
from bench.leaderboard.validate import ValidSubmission, validate_submission
from bench.evaluation.protocol import Protocol
from bench.evaluation.results import RESULTS_FILE, ResultsFile, load_results


def score_submission(root: str | Path, out: str | Path, data_roots: dict[str, Path] | None = None) -> list[Path]:
    """Validate ``root`` (all problems at once), then score it into ``out``; the results folders."""
    valid = validate_submission(root, data_roots)
    out_dir = Path(out)
    if valid.run:
        return [_copy_run(valid, out_dir)]
    return [_score_file(valid, pf.protocol, pf.path, out_dir / pf.protocol.name, data_roots) for pf in valid.files]


def _score_file(valid: ValidSubmission, protocol: Protocol, path: Path, out: Path,
                data_roots: dict[str, Path] | None) -> Path:
    from bench.evaluation.predictions_import import import_predictions
    from bench.scoring import score_store
    from bench.tables import write_tables

    manifest = valid.manifest
    if manifest is None:
        raise UserError(f"{valid.root}: no {MANIFEST}")
    method = manifest.method
    store, info = import_predictions(path, protocol, out, data_roots, method.name)
    manifest_sha = hashlib.sha256((valid.root / MANIFEST).read_bytes()).hexdigest()
    info = {**info, "file": path.relative_to(valid.root.resolve()).as_posix(), "spec": method.name,
            "display_name": f"{method.name} {method.version}", "weights_sha256": manifest.weights_sha256,
            "submission": {**manifest.model_dump(mode="json"), "manifest_sha256": manifest_sha}}
    run_info = {"seed": protocol.seed, "limit": None, "predictions": "predictions", "source": "submission"}
    results: ResultsFile = score_store(store, protocol, info, run_info, device="none")
    results.write(out)
    write_tables([results], out / "tables", kinds=[t.kind for t in protocol.tables] or None)
    return out


def _copy_run(valid: ValidSubmission, out_dir: Path) -> Path:
    results = load_results(valid.root)
    target = out_dir / results.protocol.name
    if target.exists():
        raise UserError(f"{target} already exists; choose a new --out")
    predictions = str(results.run.get("predictions") or "predictions")
    shutil.copytree(valid.root / predictions, target / predictions, symlinks=False)
    shutil.copy2(valid.root / RESULTS_FILE, target / RESULTS_FILE)
    return target
