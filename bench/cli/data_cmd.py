"""``sida-bench data summary|audit|build|operations``: inspect datasets, check them for shortcuts,
build sid-mini, regenerate DMImage.

- ``data summary DATASET --root PATH [--split S] [--option KEY=VALUE] [--json]`` decodes every
  sample of a split (no model) and reports counts per label and per source, masks found and
  missing, and every per-sample problem.
- ``data audit DATASET --root PATH [--split S] [--threshold T] [--json]`` reads every file's
  header (no decoding) and reports how well each non-visual cue predicts the label
  (:mod:`bench.audit.shortcut`).
- ``data build sid-mini [--out DIR] [--small]`` builds sid-mini and dmimage-mini (default: the
  user cache, ``$SIDA_BENCH_CACHE`` or ``~/.cache/sida-bench``).
- ``data operations CSV --src RAW_ROOT --out DIR`` applies DMImage's ``operations.csv``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.errors import UserError
from bench.progress import track
from bench.safe_text import path_text

MAX_LISTED_PROBLEMS = 20


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("data", parents=[common], help="inspect datasets and build the embedded benchmark")
    actions = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    s = actions.add_parser("summary", parents=[common], help="count labels, sources, masks and problems of a split")
    s.add_argument("dataset", help="dataset plugin name (see `sida-bench list datasets`)")
    s.add_argument("--root", type=Path, help="dataset root (optional for sid_mini and dmimage_mini)")
    s.add_argument("--split", default="test", help="split name (default: test)")
    s.add_argument("-o", "--option", action="append", metavar="KEY=VALUE", default=[],
                   help="dataset option, e.g. binarize=official, size_mismatch=error, real_root=PATH")
    s.add_argument("--json", action="store_true", help="print JSON instead of tables")
    s.set_defaults(handler=handle_summary)

    a = actions.add_parser("audit", parents=[common],
                           help="shortcut check: how well do non-visual file cues predict the label?")
    a.add_argument("dataset", help="dataset plugin name (see `sida-bench list datasets`)")
    a.add_argument("--root", type=Path, help="dataset root (optional for sid_mini and dmimage_mini)")
    a.add_argument("--split", default="test", help="split name (default: test)")
    a.add_argument("-o", "--option", action="append", metavar="KEY=VALUE", default=[], help="dataset option")
    a.add_argument("--threshold", type=float, default=0.6, help="flag a cue whose AUC exceeds this (default: 0.6)")
    a.add_argument("--json", action="store_true", help="print JSON (per cue: name, auc, ci, flagged, ...)")
    a.set_defaults(handler=handle_audit)

    b = actions.add_parser("build", parents=[common], help="build an embedded benchmark")
    b.add_argument("name", choices=("sid-mini",), help="sid-mini (also builds dmimage-mini)")
    b.add_argument("--out", type=Path, help="output folder (default: the user cache; reused when valid)")
    b.add_argument("--small", action="store_true", help="tiny build (32 px, a few images per class) for tests")
    b.add_argument("--size", type=int, help="crop size in pixels (even; default 96)")
    b.add_argument("--per-class", type=int, metavar="N", help="images per class in every split")
    b.set_defaults(handler=handle_build)

    o = actions.add_parser("operations", parents=[common], help="regenerate DMImage test images from operations.csv")
    o.add_argument("csv", type=Path, help="operations.csv (src, cropsize, x1, y1, qf)")
    o.add_argument("--src", type=Path, required=True, help="folder with the raw images named in the CSV")
    o.add_argument("--out", type=Path, required=True, help="output folder")
    o.set_defaults(handler=handle_operations)


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["max_pixels=5", "binarize=official"]`` -> {"max_pixels": 5, "binarize": "official"}."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--option must be KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def summarize(dataset: Any) -> dict[str, Any]:
    """Decode every sample of ``dataset`` and collect counts and problems (JSON-ready)."""
    names = dataset.label_space.class_names
    labels: Counter[str] = Counter()
    sources: dict[str, Counter[str]] = defaultdict(Counter)
    masks_found = 0
    errors: list[dict[str, str]] = []
    notes: list[dict[str, Any]] = []
    for sample in track(dataset.iter_samples(), f"reading {dataset.name}/{dataset.split}", total=len(dataset)):
        label = names[sample.label]
        labels[label] += 1
        sources[str(sample.meta.get("source", "?"))][label] += 1
        masks_found += sample.mask is not None
        if sample.error:
            errors.append({"id": sample.id, "error": sample.error})
        elif sample.meta.get("problems"):
            notes.append({"id": sample.id, "problems": list(sample.meta["problems"])})
    info = dataset.describe()
    return {
        "dataset": dataset.name,
        "root": path_text(dataset.root),
        "split": dataset.split,
        "label_space": dataset.label_space.value,
        "total": sum(labels.values()),
        "labels": {n: labels.get(n, 0) for n in names},
        "sources": {src: dict(sorted(c.items())) for src, c in sorted(sources.items())},
        "masks": {"found": masks_found, "missing": info["problems"].get("masks_missing", 0)},
        "problems": info["problems"],
        "listing": info.get("listing", {}),
        "listing_names": info.get("listing_names", {}),
        "policies": info.get("policies", {}),
        "errors": errors,
        "notes": notes,
    }


def _print_summary(report: dict[str, Any]) -> None:
    console = Console()
    masks = report["masks"]
    console.print(f"[bold]{report['dataset']}[/] split={report['split']} root={report['root']} "
                  f"total={report['total']} masks found={masks['found']} missing={masks['missing']}")
    names = list(report["labels"])
    table = Table(title="samples per source and label")
    table.add_column("source")
    for n in names:
        table.add_column(n, justify="right")
    for src, counts in report["sources"].items():
        table.add_row(src, *(str(counts.get(n, 0)) for n in names))
    table.add_row("[bold]total", *(str(report["labels"][n]) for n in names))
    console.print(table)
    problems = Table(title="problems")
    problems.add_column("kind")
    problems.add_column("count", justify="right")
    for kind, count in {**report["listing"], **report["problems"]}.items():
        problems.add_row(kind, str(count))
    console.print(problems)
    for kind, names_of_kind in report["listing_names"].items():
        for name in names_of_kind[:MAX_LISTED_PROBLEMS]:
            console.print(f"  {kind}: {name}", markup=False)
    for err in report["errors"][:MAX_LISTED_PROBLEMS]:
        console.print(f"  error {err['id']}: {err['error']}", markup=False)
    if len(report["errors"]) > MAX_LISTED_PROBLEMS:
        console.print(f"  ... {len(report['errors']) - MAX_LISTED_PROBLEMS} more errors (use --json)")


def handle_summary(args: argparse.Namespace) -> int:
    from bench.plugins import create_dataset

    dataset = create_dataset(args.dataset, root=args.root, split=args.split, **parse_options(args.option))
    report = summarize(dataset)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_summary(report)
    return 0


def handle_audit(args: argparse.Namespace) -> int:
    from bench.audit.shortcut import audit_dataset
    from bench.plugins import create_dataset

    dataset = create_dataset(args.dataset, root=args.root, split=args.split, **parse_options(args.option))
    report = audit_dataset(dataset, threshold=args.threshold, seed=args.seed)
    if args.json:
        print(json.dumps(report, indent=2))
        if report["flagged"]:
            print(f"warning: shortcut cues above AUC {report['threshold']}: {', '.join(report['flagged'])}",
                  file=sys.stderr)
        return 0
    console = Console(stderr=False)
    table = Table(title=f"shortcut check of {report['dataset']}/{report['split']} ({report['n']} files)")
    for col in ("cue", "AUC real vs fake", "95% CI", *report["cues"][0]["per_class"], "flagged"):
        table.add_column(col, justify="left" if col == "cue" else "right")
    for cue in report["cues"]:
        per = [f"{v['auc']:.3f}" for v in cue["per_class"].values()]
        flag = "[bold red]YES[/]" if cue["flagged"] else "no"
        table.add_row(cue["name"], f"{cue['auc']:.3f}", f"[{cue['ci'][0]:.3f}, {cue['ci'][1]:.3f}]", *per, flag)
    console.print(table)
    console.print(f"classifier: {report['classifier']}", markup=False)
    if report["flagged"]:
        console.print(f"[bold red]WARNING[/]: {', '.join(report['flagged'])} predict the label above AUC "
                      f"{report['threshold']}: a detector can score well without looking at the picture. Neutralise "
                      "them (protocol `neutralise:`, docs/audit.md) or report results per cue value.")
    return 0


def handle_build(args: argparse.Namespace) -> int:
    from bench.sidmini import (
        DEFAULT_PER_CLASS,
        DEFAULT_SIZE,
        SMALL_PER_CLASS,
        SMALL_SIZE,
        build_sid_mini,
        ensure_sid_mini,
    )

    per_class = dict(SMALL_PER_CLASS if args.small else DEFAULT_PER_CLASS)
    if args.per_class is not None:
        per_class = {split: args.per_class for split in per_class}
    size = args.size if args.size is not None else (SMALL_SIZE if args.small else DEFAULT_SIZE)
    if args.out is not None:
        root = build_sid_mini(args.out, per_class=per_class, size=size, seed=args.seed)
    else:
        root = ensure_sid_mini(per_class=per_class, size=size, seed=args.seed)
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    summary = {"root": str(root), "tree_sha256": manifest["tree_sha256"], "counts": manifest["counts"]}
    print(json.dumps(summary, indent=2))
    return 0


def handle_operations(args: argparse.Namespace) -> int:
    from bench.datasets.dmimage import apply_operations

    report = apply_operations(args.csv, args.src, args.out)
    print(json.dumps({**report, "missing": report["missing"][:MAX_LISTED_PROBLEMS],
                      "missing_count": len(report["missing"])}, indent=2))
    return 0
