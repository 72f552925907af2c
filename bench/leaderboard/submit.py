"""``sida-bench submit score DIR --out RESULTS``: score a validated submission.

File submissions go through the same path as ``sida-bench score``
(:func:`bench.evaluation.predictions_import.import_predictions` → :func:`bench.evaluation.scorer.score_run`),
one results folder per protocol: ``RESULTS/<protocol>/{results.json, predictions/, ranks/, tables/}``.
The model record (in the run record and ``results.json``) carries the submission's metadata
(``model.submission``) and the sha256 of each scored file. A scored run folder (``sida-bench run``)
is checked and copied as it is, so plugin runs and file submissions rank side by side.
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
from bench.evaluation.run_record import RANKS_DIR
from bench.evaluation.store import PREDICTIONS_DIR


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
    from bench.evaluation.scorer import score_run
    from bench.tables import write_tables

    manifest = valid.manifest
    if manifest is None:
        raise UserError(f"{valid.root}: no {MANIFEST}")
    method = manifest.method
    record = import_predictions(path, protocol, out, data_roots, method.name)
    manifest_sha = hashlib.sha256((valid.root / MANIFEST).read_bytes()).hexdigest()
    record.model = {**record.model, "file": path.relative_to(valid.root.resolve()).as_posix(), "spec": method.name,
                    "display_name": f"{method.name} {method.version}", "weights_sha256": manifest.weights_sha256,
                    "submission": {**manifest.model_dump(mode="json"), "manifest_sha256": manifest_sha}}
    record.run = {**record.run, "source": "submission"}
    record.write(out)
    results: ResultsFile = score_run(out)
    results.write(out)
    write_tables([results], out / "tables", kinds=[t.kind for t in protocol.tables] or None)
    return out


def _copy_run(valid: ValidSubmission, out_dir: Path) -> Path:
    results = load_results(valid.root)
    target = out_dir / results.protocol.name
    if target.exists():
        raise UserError(f"{target} already exists; choose a new --out")
    predictions = str(results.run.get("predictions") or PREDICTIONS_DIR)
    shutil.copytree(valid.root / predictions, target / predictions, symlinks=False)
    if (valid.root / RANKS_DIR).is_dir():  # the run records: the copy can be re-scored
        shutil.copytree(valid.root / RANKS_DIR, target / RANKS_DIR, symlinks=False)
    shutil.copy2(valid.root / RESULTS_FILE, target / RESULTS_FILE)
    return target
