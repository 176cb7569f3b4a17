"""Browser fixtures: Debian's chromium driven by Playwright (never `playwright install`: the
browser is the system's /usr/bin/chromium), against the session's ComfyUI (tests/conftest.py).

Skips with a reason when chromium or playwright is missing; in CI (CI=true) that is a failure.
Screenshots and each page's console log go to test-artifacts/.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
VIEWPORT = {"width": 1600, "height": 1000}


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.browser)


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the browser tests must run; scripts/test.sh installs it)")
    pytest.skip(reason)


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="session")
def browser():
    path = chromium_path()
    if path is None:
        _unavailable("no chromium (Debian: apt-get install chromium; scripts/setup.sh --browser does it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright Python package is not installed (pip install -e '.[test]')")
    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)
    except Exception:
        pw.stop()
        raise
    yield browser
    browser.close()
    pw.stop()


@pytest.fixture(scope="session")
def ui_server(comfy_server):
    """The session's server, with the frontend's first-run template dialog marked as seen (so it
    does not cover the canvas; the tests open the template browser themselves)."""
    settings = comfy_server.base_dir / "user" / "default" / "comfy.settings.json"
    settings.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(settings.read_text()) if settings.exists() else {}
    data.setdefault("Comfy.TutorialCompleted", True)
    settings.write_text(json.dumps(data, indent=2))
    return comfy_server


class Page:
    """A loaded ComfyUI page and what its console said."""

    def __init__(self, page, url: str, name: str):
        self.page = page
        self.url = url
        self.name = name
        self.console: list[tuple[str, str]] = []  # (type, text), page errors as type 'pageerror'
        self.failed_requests: list[str] = []
        page.on("console", lambda m: self.console.append((m.type, m.text)))
        page.on("pageerror", lambda e: self.console.append(("pageerror", f"{e}\n{getattr(e, 'stack', '')}")))
        page.on("requestfailed", lambda r: self.failed_requests.append(f"{r.method} {r.url} {r.failure}"))
        page.on("response", lambda r: r.status >= 400 and self.failed_requests.append(f"{r.status} {r.url}"))

    def load(self, timeout_s: float = 120):
        self.page.goto(self.url, wait_until="domcontentloaded", timeout=timeout_s * 1000)
        self.page.wait_for_function(
            "() => window.app && window.app.graph && window.app.canvas && document.querySelector('canvas')",
            timeout=timeout_s * 1000)
        self.page.wait_for_load_state("networkidle", timeout=timeout_s * 1000)
        self.close_dialogs()

    def close_dialogs(self):
        for _ in range(3):
            if self.page.locator(".p-dialog:visible").count() == 0:
                return
            self.page.keyboard.press("Escape")
            self.page.wait_for_timeout(300)

    def errors(self) -> list[str]:
        return [text for kind, text in self.console if kind in ("error", "pageerror")]

    def screenshot(self, label: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{self.name}-{label}.png"
        self.page.screenshot(path=str(path))
        return path

    def save_console(self):
        ARTIFACTS.mkdir(exist_ok=True)
        lines = [f"[{kind}] {text}" for kind, text in self.console]
        lines += [f"[request] {r}" for r in self.failed_requests]
        (ARTIFACTS / f"{self.name}-console.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def ui(browser, ui_server, request):
    """A fresh browser context on the server's UI, loaded and ready; screenshot + console log
    saved to test-artifacts/<test>-*.{png,txt} afterwards."""
    context = browser.new_context(viewport=VIEWPORT)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    page = Page(context.new_page(), ui_server.url, f"browser-{name}")
    page.load()
    try:
        yield page
    finally:
        try:
            page.screenshot("end")
        finally:
            page.save_console()
            context.close()
