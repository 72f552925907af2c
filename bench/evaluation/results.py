"""The typed schema of ``results.json`` (one file per run directory).

Every number in a table comes from here; everything needed to reproduce it is recorded next
to it. Metric values are fractions in [0, 1] (tables print percentages); ``ci`` holds the
percentile bootstrap interval over samples when the protocol asks for one.

Layout (``schema_version`` 1)::

    {schema_version, created, protocol: {name, version, source, sha256, resolved},
     model: {spec, describe() ..., adapters},
     environment: {git_commit, packages, python, platform, device, torch_threads, cuda,
                   scored_with_git_commit},  (where the predictions were made; the scoring commit)
     run: {seed, limit, limit_rule, batch_size, workers, predictions, rows, shards, elapsed_s},
     entries: [{dataset, split, perturbation: {key, name, params, label}, dataset_info,
                n, n_requested, n_errors, errors, adapter,
                metrics: {metric_name: {convention, values: {key: {value, ci}}, skipped}}}]}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench.errors import UserError

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricValue(_Model):
    """One number: ``value`` (fraction or count; None when undefined) and its bootstrap ``ci``."""

    value: float | None
    ci: tuple[float, float] | None = None


class MetricResult(_Model):
    """A metric's values with the conventions that define them, or why it was skipped."""

    convention: dict[str, Any] = Field(default_factory=dict)
    values: dict[str, MetricValue] = Field(default_factory=dict)
    skipped: str | None = None


class PerturbationInfo(_Model):
    key: str
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    label: str


class ResultEntry(_Model):
    """Scores of one model × dataset × split × perturbation.

    ``n``: rows scored (including errors); ``n_requested``: samples asked for (after --limit);
    ``n_errors``: rows with an error (their predictions count as wrong where a metric needs
    every sample; see the metric's convention); ``errors``: the first error messages by sample id.
    """

    dataset: str
    split: str
    perturbation: PerturbationInfo
    dataset_info: dict[str, Any] = Field(default_factory=dict)
    n: int
    n_requested: int | None = None
    n_errors: int
    errors: dict[str, str] = Field(default_factory=dict)
    adapter: str = "none"
    metrics: dict[str, MetricResult] = Field(default_factory=dict)


class ProtocolInfo(_Model):
    name: str
    version: int
    source: str
    sha256: str
    resolved: dict[str, Any]


class ResultsFile(_Model):
    schema_version: int = SCHEMA_VERSION
    created: str
    protocol: ProtocolInfo
    model: dict[str, Any]
    environment: dict[str, Any]
    run: dict[str, Any]
    entries: list[ResultEntry]

    def write(self, out_dir: Path) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / RESULTS_FILE
        tmp = out_dir / f".tmp-{RESULTS_FILE}-{os.getpid()}"  # two shards finishing at once each write whole files
        tmp.write_text(json.dumps(self.model_dump(mode="json"), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path

    @property
    def model_label(self) -> str:
        """How tables name this run's model (``display_name`` if set, else ``name[:config]``)."""
        m = self.model
        if m.get("display_name"):
            return str(m["display_name"])
        config = m.get("config")
        return f"{m.get('name', '?')}" + (f":{config}" if config and config != "default" else "")


def load_results(path: str | Path) -> ResultsFile:
    """Read a ``results.json`` (or a run directory holding one), checking the schema."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILE
    if not p.is_file():
        raise UserError(f"No results file at {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{p}: not valid JSON ({exc})") from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != SCHEMA_VERSION:
        raise UserError(f"{p}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
    try:
        return ResultsFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        raise UserError(f"{p}: invalid results file at {loc}: {err['msg']}") from None
