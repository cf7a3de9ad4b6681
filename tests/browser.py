"""Open a report in a real headless browser (Debian's chromium, driven by Playwright) and say what
a person would see go wrong: console errors, uncaught page errors, failed or refused loads, and
images that did not decode.

The page is served over HTTP on 127.0.0.1 from its own folder (as a person serving a copied report
folder would), so relative image links resolve as they do for them. Playwright never downloads a
browser here: it launches the system chromium by path.
"""

from __future__ import annotations

import os
import shutil
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import pytest

from tests.loopback import http_server

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
# As the machine's own probe starts it: root needs --no-sandbox; the background-networking flags keep
# Chromium from dialling Google's hosts (a closed network refuses them, noisily).
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync")
INSTALL = "apt-get install -y chromium && .venv/bin/pip install -e '.[dev]'"


@dataclass
class PageCheck:
    """What loading one page showed. ``problems`` is empty for a page that renders cleanly."""

    title: str = ""
    images: dict[str, tuple[int, int]] = field(default_factory=dict)  # src -> natural width, height
    problems: list[str] = field(default_factory=list)


def chromium() -> str:
    """The system chromium, or skip saying how to get one (fail in CI, where nothing may skip)."""
    found = os.environ.get("INFERBOX_CHROMIUM") or next((p for p in CHROMIUM_CANDIDATES if Path(p).is_file()), None)
    found = found or shutil.which("chromium")
    try:
        import playwright  # noqa: F401
    except ImportError:
        found = None
    if found:
        return found
    why = f"no headless browser: the report check needs Debian's chromium and playwright ({INSTALL})"
    if os.environ.get("INFERBOX_TESTENV_REQUIRED") == "1":
        pytest.fail(why)
    pytest.skip(why)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def served(folder: Path) -> AbstractContextManager[str]:
    """``folder`` over HTTP on 127.0.0.1 (a free port) for the duration of the block."""
    return http_server(partial(_QuietHandler, directory=str(folder)))


def check_page(page_file: Path, *, timeout_s: float = 30.0) -> PageCheck:
    """Load ``page_file`` in headless chromium and report what went wrong (see :class:`PageCheck`)."""
    from playwright.sync_api import sync_playwright

    result = PageCheck()
    with served(page_file.parent) as base, sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium(), args=list(CHROMIUM_ARGS), headless=True)
        try:
            page = browser.new_page()
            page.on("console", lambda m: result.problems.append(f"console {m.type}: {m.text} ({m.location.get('url')})")
                    if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda exc: result.problems.append(f"page error: {exc}"))
            page.on("requestfailed", lambda r: result.problems.append(f"load failed: {r.url} ({r.failure})"))
            page.on("response", lambda r: result.problems.append(f"HTTP {r.status}: {r.url}")
                    if r.status >= 400 else None)
            response = page.goto(f"{base}/{page_file.name}", wait_until="load", timeout=timeout_s * 1000)
            if response is None or not response.ok:
                result.problems.append(f"the page itself: {response.status if response else 'no response'}")
            result.title = page.title()
            shown = "imgs => imgs.map(i => [i.getAttribute('src'), i.complete, i.naturalWidth, i.naturalHeight])"
            for src, complete, width, height in page.eval_on_selector_all("img", shown):
                result.images[src] = (width, height)
                if not complete or width == 0 or height == 0:
                    result.problems.append(f"image {src} did not load or decode ({width}x{height})")
        finally:
            browser.close()
    return result
