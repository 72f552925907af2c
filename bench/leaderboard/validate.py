"""``sida-bench submit validate DIR``: every problem of a submission, before anything is scored.

A submission is a folder (or a ``.zip`` / ``.tar`` / ``.tar.gz`` archive, see
:mod:`bench.leaderboard.archive`) with ``submission.yaml`` (:mod:`bench.leaderboard.schema`)
and one predictions file per protocol; or a run folder written by ``sida-bench run`` /
``sida-bench score`` (``results.json`` and ``predictions/``). Problems are collected, never
stopped at the first, and each names the file, the row and the column (or YAML key).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from bench.errors import UserError
from bench.leaderboard.predictions_check import Report, check_coverage, check_frame, check_mask, read_frame
from bench.leaderboard.safety import LIMITS, Limits, Problem, Refused, confined, read_utf8, scan_tree
from bench.leaderboard.schema import MANIFEST, SUBMISSION_SCHEMA_VERSION, ProtocolPredictions, Submission
from bench.evaluation.protocol import CLEAN, Protocol
from bench.evaluation.results import RESULTS_FILE
from bench.evaluation.run_record import RANKS_DIR

MAX_REPORTED = 500


class SubmissionInvalid(UserError):
    """A submission with problems; the message lists all of them (one per line)."""

    def __init__(self, folder: Path, problems: list[Problem]) -> None:
        self.problems = problems
        shown = [f"  {p}" for p in problems[:MAX_REPORTED]]
        if len(problems) > MAX_REPORTED:
            shown.append(f"  ... and {len(problems) - MAX_REPORTED} more problems")
        super().__init__(f"{folder}: {len(problems)} problem(s); the submission is refused:\n" + "\n".join(shown))


@dataclass
class ProtocolFile:
    """A protocol of a valid submission and the (confined) predictions file for it."""

    protocol: Protocol
    path: Path


@dataclass
class ValidSubmission:
    root: Path
    manifest: Submission | None
    files: list[ProtocolFile] = field(default_factory=list)
    run: bool = False
    """True for a run folder (``results.json`` + ``predictions/``) rather than a file submission."""


def validate_submission(root: str | Path, data_roots: dict[str, Path] | None = None,
                        limits: Limits = LIMITS) -> ValidSubmission:
    """Check a submission folder; raise :class:`SubmissionInvalid` listing every problem."""
    folder = Path(root)
    if not folder.is_dir():
        raise UserError(f"Submission folder not found: {folder}")
    if not (folder / MANIFEST).exists() and not (folder / MANIFEST).is_symlink() and (folder / RESULTS_FILE).is_file():
        return _validate_run(folder)
    if not (folder / MANIFEST).exists() and (folder / RANKS_DIR).is_dir() and not (folder / RANKS_DIR).is_symlink():
        raise UserError(f"{folder} is a run directory that is not scored yet (no {RESULTS_FILE}); "
                        f"score it first: sida-bench score {folder}")
    problems = scan_tree(folder, limits)
    manifest, items = _manifest(folder, problems, limits)
    valid = ValidSubmission(folder, manifest)
    for i, item in items:
        report = _reporter(problems, MANIFEST)
        protocol = _protocol(item.protocol, item.version, f"predictions.{i}", report)
        try:
            path = confined(folder, item.file)
        except Refused as exc:
            report(None, f"predictions.{i}.file", str(exc))
            continue
        if protocol is not None:
            _check_file(folder, item.file, path, protocol, data_roots or {}, problems, limits)
            valid.files.append(ProtocolFile(protocol, path))
    if problems:
        raise SubmissionInvalid(folder, sorted(set(problems), key=_order))
    return valid


def _order(p: Problem) -> tuple[str, int, str, str]:
    return (p.file, -1 if p.row is None else p.row, p.column or "", p.message)


def _reporter(problems: list[Problem], file: str) -> Report:
    def report(row: int | None, column: str | None, message: str) -> None:
        problems.append(Problem(file, row, column, message))
    return report


def _manifest(folder: Path, problems: list[Problem],
              limits: Limits) -> tuple[Submission | None, list[tuple[int, ProtocolPredictions]]]:
    """The manifest (None if invalid) and its readable ``predictions`` items, so that the files
    are checked even when another key of the manifest is wrong."""
    report = _reporter(problems, MANIFEST)
    try:
        text = read_utf8(confined(folder, MANIFEST), limits.manifest, MANIFEST)
    except Refused as exc:
        report(None, None, str(exc))
        return None, []
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        report(mark.line + 1 if mark else None, None, f"invalid YAML: {getattr(exc, 'problem', exc)}")
        return None, []
    if not isinstance(data, dict):
        report(None, None, "must be a mapping of keys (see docs/leaderboard.md)")
        return None, []
    if data.get("schema_version") != SUBMISSION_SCHEMA_VERSION:
        report(_line(node, ("schema_version",)), "schema_version",
               f"{data.get('schema_version')!r} is not supported (expected {SUBMISSION_SCHEMA_VERSION})")
        return None, []
    try:
        manifest = Submission.model_validate(data)
        return manifest, list(enumerate(manifest.predictions))
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            report(_line(node, loc), ".".join(str(x) for x in loc) or None, err["msg"])
    items = data.get("predictions") if isinstance(data.get("predictions"), list) else []
    readable = []
    for i, item in enumerate(items):
        try:
            readable.append((i, ProtocolPredictions.model_validate(item)))
        except ValidationError:
            continue  # already reported above
    return None, readable


def _line(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The YAML line (1-based) of the deepest key of ``loc`` that exists (reported as the row)."""
    line = None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == key]
            if not match:
                break
            line, node = match[0][0].start_mark.line + 1, match[0][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _protocol(name: str, version: int, where: str, report: Report) -> Protocol | None:
    from bench.evaluation.protocol import load_protocol
    from bench.evaluation.protocol_files import bundled_protocols

    bundled = bundled_protocols()
    if name not in bundled:
        hint = difflib.get_close_matches(name, list(bundled), n=1)
        report(None, f"{where}.protocol",
               f"unknown protocol {name!r}" + (f"; did you mean {hint[0]!r}?" if hint else ""))
        return None
    protocol = load_protocol(name)
    if protocol.version != version:
        report(None, f"{where}.version", f"protocol {name} is at version {protocol.version}; the submission "
                                         f"claims version {version} (predict again for version {protocol.version})")
        return None
    return protocol


def _check_file(root: Path, rel: str, path: Path, protocol: Protocol, data_roots: dict[str, Path],
                problems: list[Problem], limits: Limits) -> None:
    report = _reporter(problems, rel)
    frame = read_frame(path, report, limits)
    if frame is None:
        return
    keys = check_frame(frame, protocol, report)
    if keys is None:
        return
    masks = frame["mask_path"].tolist() if "mask_path" in frame.columns else [None] * len(keys)
    rows_of: dict[tuple[str, str, str], list[int]] = {}
    for i, key in enumerate(keys):
        if isinstance(masks[i], str) and masks[i]:
            rows_of.setdefault(key[:3], []).append(i)
    ids: dict[tuple[str, str], list[str]] = {}
    conditions = _conditions(protocol)
    rel_dir = Path(rel).parent
    for (ds, split), samples in _samples(protocol, data_roots):
        wanted: list[str] = []
        for sample in samples:
            wanted.append(sample.id)
            for i in rows_of.get((ds, split, sample.id), []):
                expected = _size(sample, conditions.get(keys[i][3]), protocol.seed)
                why = check_mask(root, rel_dir, masks[i], expected, limits)
                if why:
                    report(i + 1, "mask_path", why)
        ids[(ds, split)] = wanted
    check_coverage(keys, ids, list(conditions), report)


def _conditions(protocol: Protocol) -> dict[str, Any]:
    from bench.evaluation.runner import build_conditions

    return {c.key: c for c in build_conditions(protocol)}


def _samples(protocol: Protocol, data_roots: dict[str, Path]) -> Iterator[tuple[tuple[str, str], Iterator[Any]]]:
    from bench.plugins import create_dataset

    for spec in protocol.datasets:
        dataset = create_dataset(spec.name, root=data_roots.get(spec.name, spec.root), split=spec.split, **spec.options)
        yield (spec.name, spec.split), dataset.iter_samples()


def _size(sample: Any, cond: Any, seed: int) -> tuple[int, int] | None:
    """The (H, W) the model saw for ``sample`` under ``cond`` (as the import path computes it)."""
    from bench.perturbations.base import sample_rng

    if sample.image is None:
        return None
    if cond is None or cond.key == CLEAN or cond.perturbation is None:
        return (int(sample.image.shape[0]), int(sample.image.shape[1]))
    image, _ = cond.perturbation(sample.image, sample.mask, sample_rng(seed, sample.id, cond.key))
    return (int(image.shape[0]), int(image.shape[1]))


def _validate_run(folder: Path) -> ValidSubmission:
    """A run folder: a readable results file, a bundled protocol at its current version, a
    non-empty prediction store and no ``--limit``."""
    from bench.evaluation.protocol import load_protocol
    from bench.evaluation.protocol_files import bundled_protocols
    from bench.evaluation.results import load_results
    from bench.evaluation.store import PredictionStore

    problems: list[Problem] = []
    results = load_results(folder)
    name, version = results.protocol.name, results.protocol.version
    if name not in bundled_protocols():
        problems.append(Problem(RESULTS_FILE, None, "protocol.name", f"{name!r} is not a bundled protocol"))
    elif (current := load_protocol(name)).version != version or current.sha256() != results.protocol.sha256:
        problems.append(Problem(RESULTS_FILE, None, "protocol", f"scored under {name} v{version} "
                                f"(sha256 {results.protocol.sha256[:12]}); the bundled protocol is v{current.version} "
                                f"(sha256 {current.sha256()[:12]})"))
    if results.run.get("limit") is not None:
        problems.append(Problem(RESULTS_FILE, None, "run.limit", f"the run used --limit {results.run['limit']}; "
                                "a leaderboard entry needs every sample"))
    predictions = folder / str(results.run.get("predictions") or "predictions")
    if not PredictionStore(predictions):
        problems.append(Problem("predictions", None, None, "no prediction store (needed for intervals and tests)"))
    for e in results.entries:
        if e.n_requested is not None and e.n < e.n_requested:
            problems.append(Problem(RESULTS_FILE, None, "entries", f"{e.dataset}/{e.split} {e.perturbation.key}: "
                                    f"{e.n} of {e.n_requested} samples predicted"))
    if problems:
        raise SubmissionInvalid(folder, problems)
    return ValidSubmission(folder, None, [ProtocolFile(load_protocol(name), folder / RESULTS_FILE)], run=True)
