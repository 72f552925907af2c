"""The leaderboard site in headless Chromium: no console errors, the ranking in the right
order, sorting works, every link and image resolves locally (skips with the reason when
Chromium or Playwright is missing; see tests/browser_support.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tests.leaderboard_fixtures as lf
from bench.leaderboard.site import build_site
from bench.leaderboard.submit import score_submission
from tests.browser_support import Browser, broken_references, dump_dom, require_browser

N = 24


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lb-site")
    with pytest.MonkeyPatch.context() as mp:
        lf.bundle(mp, root / "protocols", n=N)
        for name, quality, masks in (("Alpha", 0.9, True), ("Beta", 0.4, False), ("Gamma <b>", 0.6, False)):
            df = lf.frame(lf.probs(quality, seed=len(name), n=N), n=N)
            sub = root / "subs" / name
            if masks:
                df = lf.add_masks(sub, df, n=N)
            man = lf.manifest(method={"name": name.replace(" <b>", ""), "version": "1", "authors": ["T <script>"],
                                      "code": "https://example.org/code"})
            lf.write_submission(sub, df, man)
            score_submission(sub, root / "results" / name)
        build_site([root / "results"], root / "site")
    return root / "site"


def test_every_local_link_and_image_resolves(site: Path) -> None:
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 5
    assert {str(p.relative_to(site)): broken_references(p) for p in pages if broken_references(p)} == {}
    for p in pages:
        text = p.read_text(encoding="utf-8")
        assert "<script>alert" not in text and "T <script>" not in text  # submission text is escaped
        assert "cdn" not in text.lower()


def test_index_ranking_and_sorting_in_chromium(site: Path, tmp_path: Path) -> None:
    chromium = require_browser(playwright=True)
    data = json.loads((site / "leaderboard.json").read_text(encoding="utf-8"))
    expected = [e["slug"] for e in data["boards"][0]["entries"]]
    with Browser(chromium) as browser:
        page = browser.open(site / "index.html", screenshot=tmp_path / "index.png")
        assert page.report.console_errors == [] and page.report.failed_requests == []
        slugs = page.eval_on_selector_all("table.ranking tbody tr", "rows => rows.map(r => r.dataset.slug)")
        assert slugs == expected and len(slugs) == 3
        ranks = page.eval_on_selector_all("table.ranking tbody tr", "rows => rows.map(r => r.cells[0].dataset.v)")
        assert [int(r) for r in ranks] == [e["rank"] for e in data["boards"][0]["entries"]]
        page.click("table.ranking th:nth-child(2)")  # Method: descending first, then ascending
        page.click("table.ranking th:nth-child(2)")
        names = page.eval_on_selector_all("table.ranking tbody tr", "rows => rows.map(r => r.cells[1].dataset.v)")
        assert names == sorted(names)
        page.click("table.ranking th:nth-child(3)")  # ranking metric, descending: the ranking order again
        assert page.eval_on_selector_all("table.ranking tbody tr", "rows => rows.map(r => r.dataset.slug)") == expected
        assert page.report.console_errors == []
        assert (tmp_path / "index.png").stat().st_size > 10_000
        for html in sorted(site.rglob("*.html")):
            p = browser.open(html)
            broken = p.evaluate("() => Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
                                ".map(i => i.src)")
            assert broken == [] and p.report.console_errors == [] and p.report.failed_requests == [], html
            p.close()
        entry = next(site.glob("entries/*alpha*/index.html"))
        p = browser.open(entry)
        assert p.evaluate("() => Array.from(document.images).map(i => i.getAttribute('src'))") == [
            "roc_pr.png", "confusion.png", "robustness.png", "masks.png"]


def test_dump_dom_without_playwright(site: Path) -> None:
    chromium = require_browser()
    dom = dump_dom(chromium, site / "index.html")
    data = json.loads((site / "leaderboard.json").read_text(encoding="utf-8"))
    positions = [dom.index(f'data-slug="{e["slug"]}"') for e in data["boards"][0]["entries"]]
    assert positions == sorted(positions)


@pytest.fixture(scope="module")
def explanation_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Explanation entries: Echo (with masks), Half, Template, and Silent (no text: not applicable)."""
    root = tmp_path_factory.mktemp("lb-expl")
    texts = lf.explanation_texts(N)
    with pytest.MonkeyPatch.context() as mp:
        lf.bundle(mp, root / "protocols", n=N)
        lf.score_explanation(root, "Echo", texts["Echo"], N, masks=True)
        for name in ("Half", "Template"):
            lf.score_explanation(root, name, texts[name], N)
        lf.score_explanation(root, "Silent", None, N)
        build_site([root / "results"], root / "site")
    return root / "site"


def test_explanation_board_in_chromium(explanation_site: Path, tmp_path: Path) -> None:
    site = explanation_site
    assert {str(p.relative_to(site)): broken_references(p) for p in site.rglob("*.html") if broken_references(p)} == {}
    chromium = require_browser(playwright=True)
    [board] = json.loads((site / "leaderboard.json").read_text(encoding="utf-8"))["boards"]
    ranked = [e["slug"] for e in board["entries"]]
    [silent] = [e["slug"] for e in board["not_applicable"]]
    labels = [c["label"] for c in board["columns"]]
    with Browser(chromium) as browser:
        page = browser.open(site / "index.html", screenshot=tmp_path / "explanation.png")
        assert page.report.console_errors == [] and page.report.failed_requests == []
        slugs = "rows => rows.map(r => r.dataset.slug)"
        assert page.eval_on_selector_all("table.ranking tbody tr", slugs) == [*ranked, silent]
        head = page.eval_on_selector_all("table.ranking thead th", "hs => hs.map(h => h.textContent)")
        assert head[2:-1] == labels and labels[0] == "ROUGE-L"
        cells = page.eval_on_selector_all("table.ranking tbody.na td", "cs => cs.map(c => c.textContent)")
        assert cells[0] == "n/a" and cells[2:-1] == ["n/a"] * len(labels)  # never a number
        shown = page.eval_on_selector_all("table.ranking tbody:not(.na) tr", "rows => rows.map(r => r.cells[2]"
                                                                            ".dataset.v)")
        assert [float(v) for v in shown] == pytest.approx([e["columns"]["ROUGE-L"]["value"] for e in board["entries"]])
        page.click("table.ranking th:nth-child(3)")  # ROUGE-L descending, then ascending: n/a stays last
        page.click("table.ranking th:nth-child(3)")
        assert page.eval_on_selector_all("table.ranking tbody tr", slugs) == [*reversed(ranked), silent]
        assert page.report.console_errors == []
        for html in [site / "boards" / f"{board['slug']}.html", *sorted(site.glob("entries/*/index.html"))]:
            p = browser.open(html)
            assert p.report.console_errors == [] and p.report.failed_requests == [], html
            p.close()
