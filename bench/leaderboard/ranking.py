"""Boards (one per protocol identity and dataset split), 95 % bootstrap intervals, and ranks
with ties decided by a paired bootstrap test.

Identity: entries share a board only if they agree on the protocol name, version and sha256
of the resolved protocol, the main metric's recorded conventions, and the evaluated sample set.
Otherwise they are shown on separate boards, each with the reason.

Intervals: percentile bootstrap over samples with the protocol's bootstrap settings (``n``
resamples, ``confidence``, ``seed``; 1000 resamples when the protocol sets ``n: 0``). All
entries of a board use the *same* resamples of the board's sample ids (an entry missing a
sample, e.g. a per-sample error, has weight 0 for it), so an interval of a single metric equals
``results.json``'s and a difference of two entries is a paired bootstrap
(:func:`bench.evaluation.bootstrap.paired_bootstrap`, same p-value formula).

Ranks: entries are sorted by the main metric (higher is better). Entry ``i`` has rank
``1 + #{j : main_j > main_i and p(i, j) < ALPHA}``: it is behind only the entries that are
significantly better. The test is two-sided, ``p = min(1, 2 min((#{d* <= 0} + 1) / (B + 1),
(#{d* >= 0} + 1) / (B + 1)))`` over the B resampled differences d*; no correction for multiple
comparisons is applied. Ranks are then made non-decreasing down the table (an entry never
ranks above one with a higher value). Entries with equal rank are tied.

Explanation boards rank by ROUGE-L (by class consistency with the model's verdict when no sample
has a reference; :mod:`bench.leaderboard.columns`) with the same per-sample resamples and test. An
entry whose model wrote no text is "not applicable" (as ``results.json`` records it): it is listed
on the board without values or rank, never ranked as zeros.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.evaluation.bootstrap import describe_bootstrap, percentile_interval, resample_weights
from bench.evaluation.metric_feed import NOT_APPLICABLE, reference_of
from bench.evaluation.protocol import CLEAN
from bench.explanation.parser import normalise
from bench.leaderboard.columns import BOARD_COLUMNS, MAIN_DESCRIPTION, NO_REFERENCE_KIND, Column, board_kind
from bench.leaderboard.entries import Entry, rebuild_metric, rebuild_streamed, sample_set_hash, slugify
from bench.metrics.base import SampleMetric, resampled
from bench.plugins import METRICS

ALPHA = 0.05
DEFAULT_RESAMPLES = 1000
TEST_NAME = "paired bootstrap over samples (two-sided)"


@dataclass
class Stat:
    value: float | None
    ci: tuple[float, float] | None

    @staticmethod
    def of(value: float, draws: np.ndarray, confidence: float) -> "Stat":
        lo, hi = percentile_interval(draws, confidence)
        v = float(value) if np.isfinite(value) else None
        return Stat(v, (lo, hi) if v is not None and np.isfinite(lo) and np.isfinite(hi) else None)

    @staticmethod
    def count(value: float) -> "Stat":
        """A sample count: the value, no interval."""
        return Stat(float(value) if np.isfinite(value) else None, None)


@dataclass
class Row:
    """One entry on a board."""

    entry: Entry
    columns: list[Stat]
    draws: np.ndarray = field(repr=False)
    breakdown: dict[str, Stat] = field(default_factory=dict)
    conditions: list[tuple[str, Stat]] = field(default_factory=list)
    rank: int = 0
    tied: bool = False
    behind: list[str] = field(default_factory=list)
    """Slugs of the entries significantly better than this one."""

    @property
    def main(self) -> Stat:
        return self.columns[0]


@dataclass
class Board:
    slug: str
    kind: str
    protocol: str
    version: int
    sha256: str
    dataset: str
    split: str
    convention: dict[str, Any]
    sample_hash: str
    n_samples: int
    bootstrap: dict[str, Any]
    columns: list[Column]
    rows: list[Row] = field(default_factory=list)
    p_values: dict[tuple[str, str], float] = field(default_factory=dict)
    apart: str | None = None
    """Why this board is not merged with the main board of the same protocol and split."""
    not_applicable: list[tuple[Entry, str]] = field(default_factory=list)
    """Entries on this board's identity whose ranking metric does not apply (no text), with the reason."""

    @property
    def title(self) -> str:
        return f"{self.protocol} v{self.version} — {self.dataset}/{self.split}"

    @property
    def main_description(self) -> str:
        return MAIN_DESCRIPTION[self.kind]


@dataclass
class _Candidate:
    entry: Entry
    kind: str
    dataset: str
    split: str
    metrics: list[tuple[str, SampleMetric]]
    convention: dict[str, Any]
    sample_hash: str
    n: int
    not_applicable: str | None = None

    @property
    def identity(self) -> tuple[Any, ...]:
        p = self.entry.results.protocol
        return (p.name, self.dataset, self.split, p.version, p.sha256,
                json.dumps(self.convention, sort_keys=True), self.sample_hash, self.kind)


def build_boards(entries: list[Entry]) -> tuple[list[Board], list[tuple[Entry, str]]]:
    """Boards of the entries, and the entries that cannot be ranked with the reason."""
    skipped: list[tuple[Entry, str]] = []
    by_identity: dict[tuple[Any, ...], list[_Candidate]] = {}
    for entry in entries:
        found = False
        for cand in _candidates(entry, skipped):
            by_identity.setdefault(cand.identity, []).append(cand)
            found = True
        if not found and not any(e is entry for e, _ in skipped):
            skipped.append((entry, "no clean predictions for a dataset of its protocol"))
    boards = [_board(cands) for _, cands in sorted(by_identity.items(), key=lambda kv: kv[0])]
    _mark_apart(boards)
    return boards, skipped


def _candidates(entry: Entry, skipped: list[tuple[Entry, str]]) -> Iterator[_Candidate]:
    protocol = entry.protocol
    kind = board_kind([t.kind for t in protocol.tables], [m.name for m in protocol.metrics])
    if kind is None:
        skipped.append((entry, f"protocol {protocol.name} has no metric a leaderboard ranks by"))
        return
    for spec in protocol.datasets:
        clean = entry.rows(spec.name, spec.split, CLEAN)
        if clean is None:
            continue
        layout = NO_REFERENCE_KIND[kind] if kind in NO_REFERENCE_KIND and not _has_reference(clean) else kind
        main = BOARD_COLUMNS[layout][0].metric
        scored = [e.perturbation.key for e in entry.results.entries if (e.dataset, e.split) == (spec.name, spec.split)]
        conditions = scored if layout == "robustness" else [CLEAN]
        metrics = []
        recorded = {e.perturbation.key: e.metrics.get(main) for e in entry.results.entries
                    if (e.dataset, e.split) == (spec.name, spec.split)}
        result = recorded.get(CLEAN)
        convention = dict(result.convention) if result is not None else {}
        for cond in conditions:
            metric = _rebuild(entry, main, (spec.name, spec.split, cond))
            if isinstance(metric, str) and metric == NOT_APPLICABLE:
                boot = protocol.bootstrap  # the interval convention a scored entry records, for the same board
                ci = {"ci": describe_bootstrap(boot.n, boot.confidence, boot.seed)} if boot.n > 0 else {}
                yield _Candidate(entry, layout, spec.name, spec.split, [], {**convention, **ci},
                                 sample_set_hash(clean), clean.num_rows, not_applicable=NOT_APPLICABLE)
                break
            if not isinstance(metric, SampleMetric):
                cond_result = recorded.get(cond)
                why = cond_result.skipped if cond_result is not None and cond_result.skipped else "no predictions"
                skipped.append((entry, f"{spec.name}/{spec.split} ({cond}): {main} not scored: {why}"))
                break
            metrics.append((cond, metric))
        else:
            yield _Candidate(entry, layout, spec.name, spec.split, metrics, convention,
                             sample_set_hash(clean), clean.num_rows)


def _rebuild(entry: Entry, name: str, group: tuple[str, str, str]) -> SampleMetric | str | None:
    """The per-sample state of metric ``name`` on one group: from the light rows, or streamed from
    the store for a metric that reads texts and masks (``explanation``); a reason string or None
    where scoring skips it."""
    if any(m.name == name for m in entry.protocol.metrics) and METRICS.get(name).task == "explanation":
        return rebuild_streamed(entry, name, group)
    rows = entry.rows(*group)
    return rebuild_metric(name, rows, entry.protocol) if rows is not None else None


def _has_reference(rows: Any) -> bool:
    """Whether any of these store rows has a non-empty reference description (``meta["explanation"]``)."""
    return any((ref := reference_of(m)) is not None and normalise(ref) for m in rows.column("meta").to_pylist())


def _board(cands: list[_Candidate]) -> Board:
    first = cands[0]
    proto = first.entry.protocol
    boot = proto.bootstrap
    n_resamples = boot.n if boot.n > 0 else DEFAULT_RESAMPLES
    columns = list(BOARD_COLUMNS[first.kind])
    ranked = [c for c in cands if c.not_applicable is None]
    board = Board(
        slug=slugify(f"{proto.name}-v{proto.version}-{first.dataset}-{first.split}-{first.sample_hash[:6]}"
                     f"-{first.entry.results.protocol.sha256[:8]}-{_short(first.convention)}"),
        kind=first.kind, protocol=proto.name, version=proto.version, sha256=first.entry.results.protocol.sha256,
        dataset=first.dataset, split=first.split, convention=first.convention, sample_hash=first.sample_hash,
        n_samples=first.n, bootstrap={"method": "percentile bootstrap over samples", "n_resamples": n_resamples,
                                      "confidence": boot.confidence, "seed": boot.seed},
        columns=columns, not_applicable=[(c.entry, c.not_applicable) for c in cands if c.not_applicable is not None])
    ids = sorted({s for c in ranked for _, m in c.metrics for s in (m.sample_ids() or [])})
    for cand in ranked:
        board.rows.append(_row(cand, columns, ids, n_resamples, boot.confidence, boot.seed))
    keep = [j for j, c in enumerate(columns) if not c.optional or any(r.columns[j].value is not None
                                                                       for r in board.rows)]
    board.columns = [columns[j] for j in keep]
    for r in board.rows:
        r.columns = [r.columns[j] for j in keep] if r.columns else r.columns
    _rank(board)
    return board


def _short(convention: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(convention, sort_keys=True).encode()).hexdigest()[:6]


def _weights(metric: SampleMetric, ids: list[str], n: int, seed: int,
             mask: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """The board's resamples (multiplicities over ``ids``) mapped onto ``metric``'s rows."""
    pos = {s: i for i, s in enumerate(ids)}
    own = metric.sample_ids() or []
    idx = np.array([pos[s] for s in own], dtype=np.int64)
    for w in resample_weights(len(ids), n, seed):
        mw = w[idx]
        yield mw * mask if mask is not None else mw


def _row(cand: _Candidate, columns: list[Column], ids: list[str], n: int, confidence: float, seed: int) -> Row:
    if cand.kind == "robustness":
        per_cond, draws_per_cond = [], []
        for cond, metric in cand.metrics:
            full = columns[0].value(metric.compute())
            draws = np.array([columns[0].value(v) for v in resampled(metric, _weights(metric, ids, n, seed))])
            per_cond.append((cond, Stat.of(full, draws, confidence)))
            draws_per_cond.append((full, draws))
        main_value = float(np.mean([f for f, _ in draws_per_cond]))
        main_draws = np.mean(np.stack([d for _, d in draws_per_cond]), axis=0)
        labels = {e.perturbation.key: e.perturbation.label for e in cand.entry.results.entries}
        return Row(cand.entry, [Stat.of(main_value, main_draws, confidence)], main_draws,
                   conditions=[(labels.get(c, c), s) for c, s in per_cond])
    _, metric = cand.metrics[0]
    full = metric.compute()
    draws_all = list(resampled(metric, _weights(metric, ids, n, seed)))
    stats, main_draws = [], np.zeros(0)
    for j, column in enumerate(columns):
        if column.count:
            stats.append(Stat.count(column.value(full)))
            continue
        draws = np.array([column.value(v) for v in draws_all])
        stats.append(Stat.of(column.value(full), draws, confidence))
        if j == 0:
            main_draws = draws
    return Row(cand.entry, stats, main_draws, breakdown=_breakdown(cand, metric, columns[0], ids, n, confidence, seed))


def _breakdown(cand: _Candidate, metric: SampleMetric, column: Column, ids: list[str], n: int,
               confidence: float, seed: int) -> dict[str, Stat]:
    """The main metric on the images of each source / generator (the store's ``group``)."""
    rows = cand.entry.rows(cand.dataset, cand.split, CLEAN)
    if rows is None:
        return {}
    group_of = dict(zip(rows.column("sample_id").to_pylist(), rows.column("group").to_pylist()))
    own = np.array([group_of.get(s) for s in (metric.sample_ids() or [])], dtype=object)
    out: dict[str, Stat] = {}
    for g in sorted({x for x in own if x is not None}, key=str):
        mask = (own == g).astype(np.int64)
        full = column.value(metric.compute_weighted(mask))
        draws = np.array([column.value(v) for v in resampled(metric, _weights(metric, ids, n, seed, mask))])
        out[str(g)] = Stat.of(full, draws, confidence)
    return out


def paired_p_value(draws_a: np.ndarray, draws_b: np.ndarray) -> float:
    """Two-sided p-value of the paired bootstrap differences ``a - b`` (undefined ones left out)."""
    d = np.asarray(draws_a, dtype=np.float64) - np.asarray(draws_b, dtype=np.float64)
    d = d[np.isfinite(d)]
    if not d.size:
        return float("nan")
    tail = min(np.sum(d <= 0) + 1, np.sum(d >= 0) + 1) / (d.size + 1)
    return float(min(1.0, 2 * tail))


def _rank(board: Board) -> None:
    def key(r: Row) -> tuple[float, str, str]:
        v = r.main.value
        return (-(v if v is not None else -np.inf), r.entry.label, r.entry.slug)

    board.rows.sort(key=key)
    for i, a in enumerate(board.rows):
        for b in board.rows[i + 1:]:
            p = paired_p_value(a.draws, b.draws)
            board.p_values[(a.entry.slug, b.entry.slug)] = p
    previous = 1
    for r in board.rows:
        r.behind = [o.entry.slug for o in board.rows if _better(o, r) and _significant(board, o, r)]
        r.rank = previous = max(previous, 1 + len(r.behind))
    ranks = [r.rank for r in board.rows]
    for r in board.rows:
        r.tied = ranks.count(r.rank) > 1


def _better(a: Row, b: Row) -> bool:
    va, vb = a.main.value, b.main.value
    return va is not None and (vb is None or va > vb)


def _significant(board: Board, a: Row, b: Row) -> bool:
    if b.main.value is None:
        return True
    p = board.p_values.get((a.entry.slug, b.entry.slug), board.p_values.get((b.entry.slug, a.entry.slug)))
    return p is not None and np.isfinite(p) and p < ALPHA


def _mark_apart(boards: list[Board]) -> None:
    """Name, for each board that shares a protocol name and split with a bigger one, what differs."""
    groups: dict[tuple[str, str, str], list[Board]] = {}
    for b in boards:
        groups.setdefault((b.protocol, b.dataset, b.split), []).append(b)
    for group in groups.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda b: (-len(b.rows), -b.version, b.slug))
        main = group[0]
        for other in group[1:]:
            reasons = []
            if other.version != main.version:
                reasons.append(f"protocol version {other.version} (the main board is version {main.version})")
            elif other.sha256 != main.sha256:
                reasons.append(f"different protocol content (sha256 {other.sha256[:12]} vs {main.sha256[:12]})")
            if other.convention != main.convention:
                diff = {k: v for k, v in other.convention.items() if main.convention.get(k) != v}
                reasons.append(f"different metric conventions ({json.dumps(diff, sort_keys=True)})")
            if other.sample_hash != main.sample_hash:
                reasons.append(f"a different sample set ({other.n_samples} vs {main.n_samples} samples)")
            other.apart = "; ".join(reasons) or "a different identity"
