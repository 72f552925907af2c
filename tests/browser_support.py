"""Headless Chromium for tests of generated HTML (leaderboard site, reports).

Prefers Playwright for Python driving the system Chromium (``/usr/bin/chromium`` or
``$SIDA_CHROMIUM``; Playwright's own browser download needs the network, so it is never used);
falls back to ``chromium --headless --dump-dom / --screenshot``. Tests call
:func:`require_browser`, which skips them with the reason when neither works, so CI says
clearly why it skipped (``.ci/run`` installs ``chromium`` and ``playwright``).

Offline checks that need no browser: :func:`local_references` lists every ``href``/``src`` of
a page and :func:`broken_references` the local ones that do not resolve to a file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
TIMEOUT_S = 60


def chromium_path() -> str | None:
    """The Chromium executable: ``$SIDA_CHROMIUM``, a standard path, or ``chromium`` on PATH."""
    env = os.environ.get("SIDA_CHROMIUM")
    for c in ([env] if env else []) + list(CANDIDATES):
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    return shutil.which("chromium")


def has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


def require_browser(playwright: bool = False) -> str:
    """The Chromium path, or skip the test with the reason (``playwright=True``: also need Playwright)."""
    path = chromium_path()
    if path is None:
        pytest.skip("browser test skipped: no Chromium (apt-get install chromium, or set SIDA_CHROMIUM)")
    if playwright and not has_playwright():
        pytest.skip("browser test skipped: Playwright for Python is not installed (pip install playwright)")
    return path


@dataclass
class PageReport:
    """What a page did when loaded: console errors, failed requests, and ``evaluate`` results."""

    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)


class Browser:
    """A Playwright Chromium session on the system executable, offline (every non-file request
    fails and is recorded)."""

    def __init__(self, executable: str) -> None:
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch(executable_path=executable, headless=True,
                                                 args=["--no-sandbox", "--disable-gpu"])

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self._browser.close()
        self._pw.stop()

    def open(self, path: Path, screenshot: Path | None = None, width: int = 1280, height: int = 900) -> Any:
        """A page at ``file://path`` with its :class:`PageReport` as ``page.report``."""
        page = self._browser.new_page(viewport={"width": width, "height": height})
        report = PageReport()
        page.on("console", lambda msg: report.console_errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: report.console_errors.append(str(exc)))
        page.on("requestfailed", lambda req: report.failed_requests.append(req.url))
        page.route(re.compile(r"^(?!file:).*"), lambda route: route.abort())
        page.goto(Path(path).resolve().as_uri(), wait_until="load", timeout=TIMEOUT_S * 1000)
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=False)
        page.report = report
        return page


def dump_dom(executable: str, path: Path) -> str:
    """The DOM after load (``chromium --headless --dump-dom``), without Playwright."""
    out = subprocess.run([executable, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          Path(path).resolve().as_uri()], capture_output=True, text=True, timeout=TIMEOUT_S)
    if out.returncode != 0:
        raise RuntimeError(f"chromium --dump-dom failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    return out.stdout


def screenshot(executable: str, path: Path, png: Path, size: str = "1280,900") -> Path:
    """A PNG of the page (``chromium --headless --screenshot``), without Playwright."""
    png.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([executable, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={png}",
                    f"--window-size={size}", "--hide-scrollbars", Path(path).resolve().as_uri()],
                   capture_output=True, timeout=TIMEOUT_S, check=True)
    return png


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.refs.append(value)


def local_references(html_file: Path) -> list[str]:
    """Every ``href`` / ``src`` of a page, in order."""
    parser = _Refs()
    parser.feed(Path(html_file).read_text(encoding="utf-8"))
    return parser.refs


def broken_references(html_file: Path) -> list[str]:
    """Local references (not http(s)/mailto, fragments ignored) that resolve to no file."""
    broken = []
    for ref in local_references(html_file):
        url = urlparse(ref)
        if url.scheme in ("http", "https", "mailto") or ref.startswith("#"):
            continue
        if url.scheme not in ("", "file"):
            broken.append(ref)
            continue
        target = (Path(html_file).parent / unquote(url.path)).resolve()
        if not target.is_file():
            broken.append(ref)
    return broken
