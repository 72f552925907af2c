"""The run record: what the runner knew that the prediction store does not hold.

Each process of a run (one rank of ``--shard I/K`` or of ``torchrun``; ``0/1`` for a plain run)
writes ``DIR/ranks/rank-<I>-of-<K>.json`` when it starts (``complete: false``) and again when its
share of the samples is stored (``complete: true``). It holds the resolved protocol, the model's
``describe()``, the run settings, the requested sample counts and the datasets' descriptions, so
that a finished run is scored from ``DIR`` alone (``sida-bench score DIR``), with no model.

A run is complete when, for some K, every rank ``0..K-1`` of K is complete (a run resumed with
another K leaves the old K's records incomplete; they are ignored).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.evaluation.store import PREDICTIONS_DIR

RANKS_DIR = "ranks"
RECORD_VERSION = 1
PACKAGES = ("sida-bench", "torch", "torchvision", "timm", "open_clip_torch", "transformers", "peft",
            "numpy", "pandas", "pyarrow", "Pillow", "scikit-learn", "scikit-image", "pydantic")


@dataclass
class RunRecord:
    """One rank's record (see the module docstring). ``requested`` / ``dataset_info`` are keyed
    ``"dataset/split"``; ``shard`` is ``(index, count)``; ``identity``: what the row keys hash
    (model, weights, input policy, seed) and the protocol's sha256: every rank of a run agrees;
    ``environment``: where the predictions were made (:func:`environment`)."""

    protocol: dict[str, Any]
    protocol_source: str
    model: dict[str, Any]
    run: dict[str, Any]
    device: str
    shard: tuple[int, int] = (0, 1)
    requested: dict[str, int] = field(default_factory=dict)
    dataset_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    complete: bool = False
    record_version: int = RECORD_VERSION

    def write(self, run_dir: Path) -> Path:
        """Write atomically (temporary file, then rename) into ``run_dir/ranks/``."""
        folder = Path(run_dir) / RANKS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        index, count = self.shard
        path = folder / f"rank-{index:03d}-of-{count:03d}.json"
        tmp = folder / f".tmp-{path.name}-{os.getpid()}"
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
        tmp.replace(path)
        return path


def split_key(dataset: str, split: str) -> str:
    return f"{dataset}/{split}"


def read_records(run_dir: Path) -> list[RunRecord]:
    """Every rank record of ``run_dir`` (any K), in file-name order."""
    folder = Path(run_dir) / RANKS_DIR
    out = []
    for path in sorted(folder.glob("rank-*-of-*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            data["shard"] = tuple(data["shard"])
            out.append(RunRecord(**data))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise UserError(f"{path}: not a run record ({exc})") from None
    return out


def complete_records(run_dir: Path) -> list[RunRecord]:
    """The records of the K whose ranks 0..K-1 are all complete (the largest such K).

    Raises a :class:`UserError` naming the missing ranks when no K is complete.
    """
    records = read_records(run_dir)
    if not records and (Path(run_dir) / PREDICTIONS_DIR).is_dir():
        raise UserError(f"{run_dir} holds predictions but no run records ({RANKS_DIR}/rank-*.json): it was written "
                        "by an older sida-bench; run it again with this version")
    if not records:
        raise UserError(f"{run_dir} is not a run directory (no {RANKS_DIR}/rank-*.json); "
                        "score a predictions file with --predictions FILE --protocol P")
    by_count: dict[int, dict[int, RunRecord]] = {}
    for rec in records:
        if rec.complete:
            by_count.setdefault(rec.shard[1], {})[rec.shard[0]] = rec
    done = [k for k, ranks in by_count.items() if set(ranks) == set(range(k))]
    if not done:
        counts = sorted({r.shard[1] for r in records})
        k = counts[-1]
        missing = sorted(set(range(k)) - set(by_count.get(k, {})))
        raise UserError(f"{run_dir}: the run is not finished (ranks {', '.join(map(str, missing))} of {k} have not "
                        "completed); finish it with `sida-bench run ... --resume` (any --shard count)")
    k = max(done)
    return [by_count[k][i] for i in range(k)]


def environment(device: str) -> dict[str, Any]:
    """Git commit (None outside a repository), package versions, Python, platform, device."""
    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    torch = sys.modules.get("torch")  # recorded where the run imported it; never imported for this
    return {"git_commit": git_commit(), "packages": packages, "python": sys.version.split()[0],
            "platform": platform.platform(), "device": device,
            "torch_threads": torch.get_num_threads() if torch is not None else None,
            "cuda": torch.version.cuda if torch is not None else None}


def git_commit() -> str | None:
    """The commit of the checkout holding this package, with ``+dirty`` when it has changes."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None
