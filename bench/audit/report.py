"""Write an audit report: ``DIR/report.json``, ``DIR/report.html`` and ``DIR/figures/*.png``.

The HTML is static and self-contained (inline CSS, figures embedded as base64 PNG, no script,
no network). Every figure is an ``<img class="figure" data-figure="ID">`` whose ID is listed in
``report.json["figures"]``. The header records what reproduces the report: protocol name,
version and sha256, model spec, weights sha256 and input-policy hash, seeds and bootstrap
settings, --limit, neutralise, git commit, package versions, platform, and the command line.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from pathlib import Path
from typing import Any

from bench import figures
from bench.audit.analysis import (
    DEFAULT_BREAK_FRACTION,
    FAKE_THRESHOLD,
    AuditRun,
    analyse,
    compare_runs,
    earliest_flips,
    open_run,
)
from bench.audit.examples import example_grid
from bench.evaluation.protocol import CLEAN

REPORT_VERSION = 1
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
FIGURES_DIR = "figures"
DEFAULT_EXAMPLES = 6


def header(run: AuditRun, break_fraction: float, command: str | None) -> dict[str, Any]:
    """Everything needed to reproduce the report (see the module docstring)."""
    r = run.results
    boot = run.protocol.bootstrap
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "run_dir": str(run.run_dir),
        "run_created": r.created,
        "protocol": {"name": r.protocol.name, "version": r.protocol.version, "sha256": r.protocol.sha256},
        "model": {"spec": r.model.get("spec"), "weights": r.model.get("weights"),
                  "weights_sha256": r.model.get("weights_sha256"), "policy_hash": r.model.get("policy_hash"),
                  "label_space": r.model.get("label_space"), "adapters": r.model.get("adapters", {})},
        "seed": r.run.get("seed"),
        "bootstrap": {"n": boot.n, "confidence": boot.confidence, "seed": boot.seed},
        "limit": r.run.get("limit"), "limit_rule": r.run.get("limit_rule"),
        "neutralise": r.run.get("neutralise"),
        "audit": {"break_fraction": break_fraction,
                  "verdict": "fake if the argmax is not real" if run.protocol.label_space.value == "ternary"
                  and r.model.get("label_space") == "ternary" and not r.model.get("adapters")
                  else f"fake if P(fake) >= {FAKE_THRESHOLD}",
                  "paired": "paired bootstrap of degraded - clean on the images scored in both"},
        "environment": {k: r.environment.get(k) for k in ("git_commit", "python", "platform", "device", "packages")},
    }


def _sweep_figure(section: dict[str, Any], mk: str, path: Path, fraction: float) -> Path | None:
    clean = next(c for c in section["conditions"] if c["key"] == CLEAN)["metrics"][mk]
    panels = {s["name"]: [(p["strength"], p["value"], tuple(p["ci"]) if p["ci"] else None)
                          for p in s["metrics"][mk]["points"]] for s in section["sweeps"]}
    if not panels or clean["value"] is None:
        return None
    breaks = {s["name"]: s["metrics"][mk]["breaking_point"]["strength"] for s in section["sweeps"]}
    return figures.sweep_panels(panels, (clean["value"], tuple(clean["ci"]) if clean["ci"] else None), path,
                                f"{section['dataset']}/{section['split']}: {mk} against strength", mk,
                                limit=fraction * clean["value"], breaks=breaks)


def _paired_figure(section: dict[str, Any], mk: str, path: Path) -> Path | None:
    rows = [(c["label"], c["paired"][mk]) for c in section["conditions"] if mk in c.get("paired", {})]
    rows = [(label, p) for label, p in rows if p.get("diff") is not None]
    if not rows:
        return None
    return figures.paired_differences([label for label, _ in rows], [p["diff"] for _, p in rows],
                                      [tuple(p["ci"]) if None not in p["ci"] else None for _, p in rows], path,
                                      f"{section['dataset']}/{section['split']}: degraded − clean, paired",
                                      f"difference in {mk} (95% paired-bootstrap interval)")


def _compare_figure(section: dict[str, Any], mk: str, path: Path) -> Path | None:
    rows = [(c["label"], c["paired"][mk]) for c in section["compare"]["conditions"] if mk in c["paired"]]
    rows = [(label, p) for label, p in rows if p.get("diff") is not None]
    if not rows:
        return None
    return figures.paired_differences([label for label, _ in rows], [p["diff"] for _, p in rows],
                                      [tuple(p["ci"]) if None not in p["ci"] else None for _, p in rows], path,
                                      f"{section['dataset']}/{section['split']}: this run − compared run, paired",
                                      f"difference in {mk} (95% paired-bootstrap interval)")


def _compare_table(s: dict[str, Any]) -> str:
    c = s["compare"]
    keys = [mk for mk in s["metrics"] if not mk.startswith("localization.")]
    head = "<tr><th>condition</th>" + "".join(
        f"<th>{_e(mk)}: this (%)</th><th>compared (%)</th><th>Δ</th><th>Δ CI</th><th>p</th>" for mk in keys) + "</tr>"
    body = ""
    for row in c["conditions"]:
        cells = ""
        for mk in keys:
            p = row["paired"].get(mk, {})
            cells += (f"<td>{_num(p.get('this'))}</td><td>{_num(p.get('other'))}</td><td>{_num(p.get('diff'))}</td>"
                      f"<td>{_ci(p.get('ci'))}</td><td>{_num(p.get('p_value'), pct=False)}</td>")
        body += f"<tr><td>{_e(row['label'])}</td>{cells}</tr>"
    intro = (f"<p>Compared run: <code>{_e(c['other'])}</code> (model {_e(c['other_model'])}, neutralise "
             f"{_e(c['other_neutralise'] or 'off')}); this run: neutralise {_e(c['neutralise'] or 'off')}.</p>")
    return f"{intro}<table>{head}{body}</table>"


def _flip_figure(section: dict[str, Any], class_names: tuple[str, ...], path: Path) -> Path | None:
    conds = [c for c in section["conditions"] if "flips" in c]
    if not conds:
        return None
    series = {}
    for k, name in enumerate(class_names):
        field = "to_fake" if k == 0 else "to_real"
        arrow = f"{name}: real → fake" if k == 0 else f"{name}: fake → real"
        series[arrow] = [c["flips"][name][field] / max(1, c["flips"][name]["n"]) for c in conds]
    return figures.flip_bars([c["label"] for c in conds], series, path,
                             f"{section['dataset']}/{section['split']}: verdict flips per true class")


def build_report(run_dir: str | Path, out_dir: str | Path, *, break_fraction: float = DEFAULT_BREAK_FRACTION,
                 n_examples: int = DEFAULT_EXAMPLES, command: str | None = None,
                 compare: str | Path | None = None) -> dict[str, Any]:
    """Audit the finished run in ``run_dir``; write the report files into ``out_dir``; return the JSON.

    ``compare``: another finished run (e.g. the same protocol without ``neutralise``); each
    condition is then also compared with the same condition there (paired, same images)."""
    run = open_run(run_dir)
    out = Path(out_dir)
    fig_dir = out / FIGURES_DIR
    sections = analyse(run, break_fraction)
    if compare is not None:
        compare_runs(run, open_run(compare), sections)
    figs: list[dict[str, str]] = []

    def add(fig_id: str, path: Path | None, caption: str, section: dict[str, Any]) -> None:
        if path is not None:
            figs.append({"id": fig_id, "file": f"{FIGURES_DIR}/{path.name}", "caption": caption})
            section.setdefault("figures", []).append(fig_id)

    for s in sections:
        tag = f"{s['dataset']}_{s['split']}"
        for mk in s["metrics"]:
            slug = mk.replace(".", "_")
            add(f"sweeps-{tag}-{slug}", _sweep_figure(s, mk, fig_dir / f"sweeps_{tag}_{slug}.png", break_fraction),
                f"{mk} against strength per sweep, with bootstrap bands; dashed: clean; dotted: "
                f"{break_fraction:g} × clean; vertical line: breaking point.", s)
            add(f"paired-{tag}-{slug}", _paired_figure(s, mk, fig_dir / f"paired_{tag}_{slug}.png"),
                f"{mk}: each condition minus clean on the same images (paired bootstrap interval; red: "
                "significantly worse).", s)
        for mk in s["metrics"]:
            if "compare" in s:
                slug = mk.replace(".", "_")
                add(f"compare-{tag}-{slug}", _compare_figure(s, mk, fig_dir / f"compare_{tag}_{slug}.png"),
                    f"{mk}: each condition of this run minus the same condition of {s['compare']['other']} "
                    "(paired bootstrap interval on the images both runs scored).", s)
        add(f"flips-{tag}", _flip_figure(s, run.protocol.label_space.class_names, fig_dir / f"flips_{tag}.png"),
            "Share of each true class whose real/fake verdict differs from clean.", s)
        ex = example_grid(run, s, earliest_flips(run, s, n_examples), fig_dir / f"examples_{tag}.png")
        s["examples"] = ex["examples"]
        s["examples_note"] = ex["note"]
        add(f"examples-{tag}", ex["figure"], "Images whose verdict flips at the mildest strength of a sweep "
            "(clean and degraded thumbnails; masks where the model localizes).", s)
    report = {"report_version": REPORT_VERSION, "header": header(run, break_fraction, command),
              "sections": sections, "figures": figs}
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_JSON).write_text(json.dumps(report, indent=2, default=str, allow_nan=False) + "\n", encoding="utf-8")
    (out / REPORT_HTML).write_text(render_html(report, out), encoding="utf-8")
    return report


# ------------------------------------------------------------------------------------------ HTML
CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:.6em 0 1.4em;font-size:.85em}td,th{border:1px solid #ccc;padding:.25em .5em;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}figure{margin:1em 0}
img.figure{max-width:100%;border:1px solid #ddd}figcaption{font-size:.85em;color:#555}
table.header td{text-align:left}.worse{color:#b00020}.better{color:#1b7e2b}details{margin:.5em 0}code{font-size:.9em}"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def _num(v: Any, pct: bool = True) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f}" if pct else f"{v:.3g}"


def _ci(ci: Any) -> str:
    return "–" if not ci or None in ci else f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def _img(report_dir: Path, fig: dict[str, str]) -> str:
    data = base64.b64encode((report_dir / fig["file"]).read_bytes()).decode("ascii")
    return (f'<figure><img class="figure" data-figure="{_e(fig["id"])}" alt="{_e(fig["caption"])}" '
            f'src="data:image/png;base64,{data}"><figcaption>{_e(fig["caption"])}</figcaption></figure>')


def _header_html(h: dict[str, Any]) -> str:
    rows = [("protocol", f"{h['protocol']['name']} v{h['protocol']['version']}"),
            ("protocol sha256", h["protocol"]["sha256"]), ("model", h["model"]["spec"]),
            ("weights", h["model"]["weights"] or "none (random initialisation)"),
            ("weights sha256", h["model"]["weights_sha256"] or "–"), ("input-policy hash", h["model"]["policy_hash"]),
            ("seed", h["seed"]), ("bootstrap", f"{h['bootstrap']['n']} resamples, {h['bootstrap']['confidence']:.0%}, "
                                               f"seed {h['bootstrap']['seed']}"),
            ("limit", h["limit"] or "none (every image)"), ("neutralise", h["neutralise"] or "off"),
            ("breaking point", f"first strength below {h['audit']['break_fraction']:g} × clean"),
            ("verdict", h["audit"]["verdict"]), ("git commit", h["environment"]["git_commit"]),
            ("python / platform", f"{h['environment']['python']} / {h['environment']['platform']}"),
            ("device", h["environment"]["device"]), ("command", h["command"] or "–"), ("created", h["created"])]
    body = "".join(f"<tr><th>{_e(k)}</th><td><code>{_e(v)}</code></td></tr>" for k, v in rows)
    pkgs = ", ".join(f"{k} {v}" for k, v in (h["environment"]["packages"] or {}).items() if v)
    return (f"<table class=\"header\">{body}</table>"
            f"<details><summary>package versions</summary><p>{_e(pkgs)}</p></details>")


def _conditions_table(s: dict[str, Any]) -> str:
    head = "<tr><th>condition</th><th>sweep</th><th>strength</th><th>n</th><th>errors</th>"
    for mk in s["metrics"]:
        head += f"<th>{_e(mk)} (%)</th><th>95% CI</th>"
        if not mk.startswith("localization."):
            head += "<th>Δ vs clean (paired)</th><th>Δ CI</th><th>p</th>"
    head += "<th>flips real→fake</th><th>flips fake→real</th></tr>"
    body = []
    for c in s["conditions"]:
        strength = "" if c["strength"] is None else f"{c['strength']:g}"
        cells = [c["label"], c["sweep"] or "", strength, c["n"], c["n_errors"]]
        row = "".join(f"<td>{_e(v)}</td>" for v in cells)
        for mk in s["metrics"]:
            m = c["metrics"][mk]
            row += f"<td>{_num(m['value'])}</td><td>{_ci(m['ci'])}</td>"
            if not mk.startswith("localization."):
                p = c.get("paired", {}).get(mk, {})
                cls = "worse" if p.get("ci") and p["ci"][1] is not None and p["ci"][1] < 0 else \
                    "better" if p.get("ci") and p["ci"][0] is not None and p["ci"][0] > 0 else ""
                row += (f'<td class="{cls}">{_num(p.get("diff"))}</td><td>{_ci(p.get("ci"))}</td>'
                        f"<td>{_num(p.get('p_value'), pct=False)}</td>")
        flips = c.get("flips")
        if flips:
            names = list(flips)
            to_fake = flips[names[0]]["to_fake"]
            to_real = sum(flips[n]["to_real"] for n in names[1:])
            n_fake = sum(flips[n]["n"] for n in names[1:])
            row += f"<td>{to_fake}/{flips[names[0]]['n']}</td><td>{to_real}/{n_fake}</td>"
        else:
            row += "<td>–</td><td>–</td>"
        body.append(f"<tr>{row}</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _breaks_table(s: dict[str, Any]) -> str:
    head = "<tr><th>sweep</th>" + "".join(f"<th>{_e(mk)}: breaking point</th>" for mk in s["metrics"]) + "</tr>"
    body = ""
    for sw in s["sweeps"]:
        cells = []
        for mk in s["metrics"]:
            bp = sw["metrics"][mk]["breaking_point"]
            cells.append(f"{bp['label']} ({_num(bp['value'])} %)" if bp["label"] else "not reached")
        body += f"<tr><td>{_e(sw['name'])}</td>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>"
    return f"<table>{head}{body}</table>"


def render_html(report: dict[str, Any], report_dir: Path) -> str:
    """The static report page (see the module docstring)."""
    h = report["header"]
    by_id = {f["id"]: f for f in report["figures"]}
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Robustness audit: "
             f"{_e(h['model']['spec'])} on {_e(h['protocol']['name'])}</title><style>{CSS}</style></head><body>",
             f"<h1>Robustness audit: {_e(h['model']['spec'])} on {_e(h['protocol']['name'])}</h1>",
             "<h2>Reproducibility</h2>", _header_html(h)]
    for s in report["sections"]:
        parts.append(f"<h2>{_e(s['dataset'])} / {_e(s['split'])}</h2>")
        parts.append("<h3>Breaking points</h3>" + _breaks_table(s) if s["sweeps"] else "")
        parts.append("<h3>Every condition against clean</h3>" + _conditions_table(s))
        if "compare" in s:
            parts.append("<h3>Against the compared run</h3>" + _compare_table(s))
        for fig_id in s.get("figures", []):
            parts.append(_img(report_dir, by_id[fig_id]))
        if s.get("examples_note"):
            parts.append(f"<p>{_e(s['examples_note'])}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def audit_from_run(run_dir: str | Path, out_dir: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Alias of :func:`build_report` (the ``--from RUN_DIR`` path of ``sida-bench audit``)."""
    return build_report(run_dir, out_dir, **kwargs)
