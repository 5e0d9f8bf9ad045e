"""Fixtures of the UI tests: a registry of real fine-tunes (built once per session), the UI
served by ``tvc ui`` and by ``tvc server`` as real processes on loopback, and a headless
Debian Chromium driven by Playwright that records every request a page makes."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from server_helpers import running_server, token
from ui_helpers import copy_registry, running_ui

CHROMIUM = "/usr/bin/chromium"

sys.path.insert(0, str(Path(__file__).parent))
import finetunes  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if not os.access(CHROMIUM, os.X_OK):  # `make test` installs it (Debian chromium)
        skip = pytest.mark.skip(reason=f"{CHROMIUM} missing: make chromium")
        for item in items:
            if "/tests/ui/" in str(item.fspath) and "browser" in getattr(item, "fixturenames", ()):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def finetuned(tmp_path_factory) -> Path:
    """The registry of fine-tunes (read-only: tests that act on it copy it first)."""
    return finetunes.build(tmp_path_factory.mktemp("ft"))


@pytest.fixture(scope="module")
def local_ui(finetuned):
    with running_ui(finetuned) as (url, _proc):
        yield url


@pytest.fixture(scope="module")
def server_ui(finetuned, tmp_path_factory):
    """``tvc server`` over a copy of the fine-tunes with tokens: admin, write, read, and one
    that may read only ``mlp-base``."""
    data = copy_registry(finetuned, tmp_path_factory.mktemp("srv") / "reg")
    toks = {
        "writer": token(data, "writer", "write"),
        "reader": token(data, "reader", "read"),
        "base-only": token(data, "base-only", "write", models=["mlp-base"]),
    }
    with running_server(data) as (url, _proc):
        yield {"url": url, "tokens": toks, "data": data}


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


class Tab:
    """A browser page that records the host of every request it makes (none may leave
    loopback) and saves a screenshot of each page it is asked to."""

    def __init__(self, page, shots: Path) -> None:
        self.page = page
        self.shots = shots
        self.hosts: list[str] = []
        page.on("request", lambda req: self.hosts.append(urlsplit(req.url).hostname or req.url))
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", self._console)
        page.on("response", self._response)

    def _console(self, msg) -> None:
        # a page answered 404 on purpose logs "Failed to load resource": _response judges those
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            self.errors.append(msg.text)

    def _response(self, resp) -> None:
        """A style, script or image of a page that fails is an error; a page may 404."""
        if resp.status >= 400 and resp.request.resource_type != "document":
            self.errors.append(f"{resp.status} {resp.url}")

    def open(self, url: str, shot: str | None = None):
        resp = self.page.goto(url)
        if shot:
            self.shot(shot)
        return resp

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def tab(browser, tmp_path, request):
    """A fresh context (no cookies) at laptop width; light unless the test asks for dark."""
    scheme = getattr(request, "param", "light")
    ctx = browser.new_context(viewport={"width": 1366, "height": 800}, color_scheme=scheme)
    shots = Path(os.environ.get("TVC_UI_SHOTS", tmp_path / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    t = Tab(ctx.new_page(), shots)
    yield t
    ctx.close()
    outside = [h for h in t.hosts if h != "127.0.0.1"]
    assert not outside, f"requests left loopback: {outside}"
    assert not t.errors, f"the page reported errors: {t.errors}"
