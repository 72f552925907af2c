"""Protocol files: the declarative definition of an evaluation suite.

A protocol (YAML) names the datasets and splits, the label space, the perturbation grid,
the metrics with their conventions, the tables to render, the bootstrap settings and the
seed. Loading rules (see docs/protocols.md):

- ``include:`` (a path or a list of paths, relative to the including file) pulls in parent
  files first; includes are resolved recursively and a cycle is an error.
- Merging is deep for mappings (a local key wins over the included one, nested mappings are
  merged key by key) and wholesale for lists (a local list replaces the included list).
- ``version`` (an integer ≥ 1) is required; bump it whenever the meaning of a number changes.
- Unknown keys, and unknown dataset, metric or perturbation names, fail with a
  :class:`~bench.errors.UserError` that names the file, the line and the closest valid name.
No YAML tag executes code (``yaml.SafeLoader``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.errors import UserError
from bench.evaluation.protocol_files import resolve_protocol
from bench.types import LabelSpace

CLEAN = "none"
"""The perturbation name of the unperturbed (clean) condition."""

TABLE_KINDS = ("detection", "localization", "robustness", "cross_dataset", "explanation")
"""Paper layouts: Table 2 (detection), 3 (localization), 4 (robustness), 5 (cross_dataset); and the
explanation table (no paper counterpart: docs/explanations.md)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(_Strict):
    """One dataset split to evaluate.

    ``root``: default location (None = the plugin's default, e.g. the sid_mini cache);
    ``--data-root NAME=PATH`` overrides it. ``options``: keyword policies of the plugin.
    """

    name: str
    split: str = "test"
    root: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class PerturbationSpec(_Strict):
    """One condition of the perturbation grid; name ``none`` is the clean condition.

    ``label``: how tables name the row (e.g. "JPEG 70"); defaults to the perturbation key.
    ``sweep`` / ``strength`` (audit protocols): the sweep this condition belongs to (its axis
    title, e.g. "JPEG quality") and its position on that axis; a sweep's conditions are listed
    from the mildest to the most severe. Left out of the resolved protocol when unset.
    """

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None
    sweep: str | None = None
    strength: float | None = None

    @property
    def key(self) -> str:
        """Stable identifier used in the prediction store and results (``jpeg(quality=70)``)."""
        if self.name == CLEAN:
            return CLEAN
        inner = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.name}({inner})"

    @property
    def display(self) -> str:
        return self.label or ("clean" if self.name == CLEAN else self.key)


class MetricSpec(_Strict):
    """A metric plugin and its conventions (keyword arguments of its constructor)."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class BootstrapSpec(_Strict):
    """Percentile bootstrap over samples: ``n`` resamples (0 = no intervals), ``confidence``."""

    n: int = Field(default=1000, ge=0)
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    seed: int = 0


class NeutraliseSpec(_Strict):
    """Re-encode every decoded image before its perturbation and the model, so that the source
    files' format and compression no longer differ between classes: ``format: png`` (lossless:
    the pixels are unchanged, only the file-level cues go) or ``format: jpeg`` at one ``quality``
    (every image then carries the same JPEG history). Recorded in each condition's params."""

    format: Literal["png", "jpeg"]
    quality: int | None = Field(default=None, ge=1, le=100)

    @model_validator(mode="after")
    def _quality_for_jpeg(self) -> "NeutraliseSpec":
        if (self.format == "jpeg") != (self.quality is not None):
            raise ValueError("neutralise: give a quality for format jpeg, and none for png")
        return self

    def step(self) -> dict[str, Any]:
        """The perturbation spec that performs it (``{"name": ..., **params}``)."""
        return {"name": "png"} if self.format == "png" else {"name": "jpeg", "quality": self.quality}


class TableSpec(_Strict):
    """A table to render from the results: a paper layout and its caption."""

    kind: Literal["detection", "localization", "robustness", "cross_dataset", "explanation"]
    caption: str = ""


class Protocol(_Strict):
    """A validated protocol. Every field is documented in docs/protocols.md."""

    version: int = Field(ge=1)
    name: str
    description: str = ""
    label_space: LabelSpace
    seed: int = 0
    datasets: list[DatasetSpec] = Field(min_length=1)
    perturbations: list[PerturbationSpec] = Field(default_factory=lambda: [PerturbationSpec(name=CLEAN)])
    metrics: list[MetricSpec] = Field(min_length=1)
    bootstrap: BootstrapSpec = Field(default_factory=BootstrapSpec)
    tables: list[TableSpec] = Field(default_factory=list)
    neutralise: NeutraliseSpec | None = None
    store_masks: Literal["full", "stats"] = "full"
    """What the prediction store keeps of masks: ``full`` (8-bit predicted masks, ground truths,
    per-image statistics) or ``stats`` (per-image statistics only; see bench/evaluation/store.py)."""

    @field_validator("perturbations")
    @classmethod
    def _unique_perturbations(cls, value: list[PerturbationSpec]) -> list[PerturbationSpec]:
        keys = [p.key for p in value]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"duplicate perturbation conditions: {', '.join(dupes)}")
        return value

    def to_dict(self) -> dict[str, Any]:
        """The resolved protocol as plain JSON-able data (written into results files).

        Unset audit fields (``sweep``, ``strength``, ``neutralise``) are left out, so protocols
        that do not use them keep their sha256."""
        data = self.model_dump(mode="json")
        for pert in data["perturbations"]:
            for key in ("sweep", "strength"):
                if pert[key] is None:
                    del pert[key]
        if data["neutralise"] is None:
            del data["neutralise"]
        return data

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class _Origin:
    file: Path
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


Path_ = tuple[Any, ...]


def load_protocol(name_or_path: str | Path, check_names: bool = True) -> Protocol:
    """Load, merge and validate a bundled protocol name or a YAML path.

    ``check_names``: also check dataset, metric and perturbation names against the registries.
    """
    path = resolve_protocol(str(name_or_path)).resolve()
    data, origins = _load_merged(path, stack=())
    data.pop("include", None)
    _check_keys(data, Protocol, (), origins, path)
    try:
        protocol = Protocol.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        where = _origin_of(loc, origins, path)
        field = ".".join(str(x) for x in loc) or "(top level)"
        raise UserError(f"{where}: invalid protocol value at {field}: {err['msg']}") from None
    if check_names:
        _check_names(protocol, origins, path)
    return protocol


def _load_merged(path: Path, stack: tuple[Path, ...]) -> tuple[dict[str, Any], dict[Path_, _Origin]]:
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise UserError(f"{stack[-1]}: include cycle: {chain}")
    if not path.is_file():
        where = f"{stack[-1]}: " if stack else ""
        raise UserError(f"{where}protocol file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{path}:1: a protocol must be a mapping of keys, got {type(data).__name__}")
    origins: dict[Path_, _Origin] = {}
    _record_lines(node, (), path, origins)
    includes = data.get("include", [])
    includes = [includes] if isinstance(includes, str) else includes
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise UserError(f"{origins.get(('include',), _Origin(path, 1))}: include must be a path or a list of paths")
    merged: dict[str, Any] = {}
    merged_origins: dict[Path_, _Origin] = {}
    for inc in includes:
        parent, parent_origins = _load_merged((path.parent / inc).resolve(), (*stack, path))
        parent.pop("include", None)
        merged = _deep_merge(merged, parent, (), merged_origins, parent_origins)
    merged = _deep_merge(merged, data, (), merged_origins, origins)
    return merged, merged_origins


def _record_lines(node: yaml.Node, path: Path_, file: Path, out: dict[Path_, _Origin]) -> None:
    out[path] = _Origin(file, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, key.value)
            _record_lines(value, child, file, out)
            out[child] = _Origin(file, key.start_mark.line + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _record_lines(item, (*path, i), file, out)


def _deep_merge(
    base: dict[str, Any], local: dict[str, Any], path: Path_,
    origins: dict[Path_, _Origin], local_origins: dict[Path_, _Origin],
) -> dict[str, Any]:
    """Merge ``local`` over ``base``: mappings merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in local.items():
        child = (*path, key)
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value, child, origins, local_origins)
        else:
            out[key] = value
            for p in [p for p in origins if p[: len(child)] == child]:
                del origins[p]
            origins.update({p: o for p, o in local_origins.items() if p[: len(child)] == child})
        if child in local_origins:
            origins[child] = local_origins[child]
    return out


def _origin_of(loc: Path_, origins: dict[Path_, _Origin], default: Path) -> str:
    for n in range(len(loc), -1, -1):
        if loc[:n] in origins:
            return str(origins[loc[:n]])
    return f"{default}:1"


def _hint(name: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def _model_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(model class, is_list) for ``Model``, ``list[Model]`` annotations; (None, False) otherwise."""
    origin = typing.get_origin(annotation)
    if origin is list:
        inner = typing.get_args(annotation)[0]
        return (inner, True) if isinstance(inner, type) and issubclass(inner, BaseModel) else (None, False)
    if origin in (typing.Union, types.UnionType):
        return None, False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    return None, False


def _check_keys(data: Any, model: type[BaseModel], path: Path_, origins: dict[Path_, _Origin], file: Path) -> None:
    """Unknown keys → UserError with file:line and the closest valid key."""
    if not isinstance(data, dict):
        return
    fields = model.model_fields
    for key, value in data.items():
        if key not in fields:
            where = _origin_of((*path, key), origins, file)
            valid = sorted(fields)
            raise UserError(
                f"{where}: unknown key {key!r} in {'.'.join(map(str, path)) or 'protocol'}.{_hint(str(key), valid)} "
                f"Valid keys: {', '.join(valid)}"
            )
        sub, is_list = _model_of(fields[key].annotation)
        if sub is None:
            continue
        if is_list and isinstance(value, list):
            for i, item in enumerate(value):
                _check_keys(item, sub, (*path, key, i), origins, file)
        elif not is_list:
            _check_keys(value, sub, (*path, key), origins, file)


def _check_names(protocol: Protocol, origins: dict[Path_, _Origin], file: Path) -> None:
    from bench.plugins import DATASETS, METRICS, PERTURBATIONS, create_metric, create_perturbation

    groups: list[tuple[str, str, list[Any], list[str]]] = [
        ("datasets", "dataset", protocol.datasets, DATASETS.names()),
        ("metrics", "metric", protocol.metrics, METRICS.names()),
        ("perturbations", "perturbation", protocol.perturbations, [CLEAN, *PERTURBATIONS.names()]),
    ]
    for field, kind, specs, valid in groups:
        for i, spec in enumerate(specs):
            if spec.name not in valid:
                where = _origin_of((field, i, "name"), origins, file)
                raise UserError(
                    f"{where}: unknown {kind} {spec.name!r}.{_hint(spec.name, valid)} "
                    f"Available: {', '.join(valid) or 'none'}"
                )
    factories = (("metrics", create_metric, protocol.metrics), ("perturbations", create_perturbation, protocol.perturbations))
    for field, factory, specs in factories:
        for i, spec in enumerate(specs):
            if spec.name == CLEAN:
                continue
            try:
                factory(spec.name, **spec.params)
            except (TypeError, ValueError, UserError) as exc:
                where = _origin_of((field, i, "params"), origins, file)
                raise UserError(f"{where}: invalid params for {spec.name!r}: {exc}") from None
