"""Browser-test fixtures: the real app on loopback over a seeded SQLite database, and Debian's
Chromium driven by Playwright (the system browser; nothing is downloaded)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest

from support import ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
LAPTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 740}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A SQLite database filled by ``web_seed.seed``: its URL and the ids the tests visit."""
    from hpscale.db.engine import Database
    from web_seed import seed

    tmp = tmp_path_factory.mktemp("web")
    url = f"sqlite:///{tmp / 'hpscale.db'}"
    db = Database(url)
    db.ensure_schema()
    ids = seed(db, tmp)
    db.dispose()
    return {"url": url, **ids}


class Server:
    """``hpscale serve`` on a free loopback port, as a user runs it (a subprocess, so that the
    server's start-up path is the one users run)."""

    def __init__(self, database_url: str, log: Path) -> None:
        self.log = log
        port = _free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "HPSCALE_DATABASE_URL": database_url, "HPSCALE_LOAD_DEMO": "false"}
        env.pop("HPSCALE_API_KEY", None)
        hpscale = Path(sys.executable).with_name("hpscale")
        with log.open("w") as out:
            self.proc = subprocess.Popen(
                [str(hpscale), "serve", "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
                 "--log-level", "warning"],
                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            )

    def ready(self, timeout: float = 30) -> str:
        """Wait until /healthz answers; the base URL."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urlopen(f"{self.url}/healthz", timeout=1):  # noqa: S310 - loopback only
                    return self.url
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"hpscale serve did not start:\n{self.log.read_text()}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="session")
def empty_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The app on a new, empty database (only the published laws, stored at startup). Started
    before the seeding (see ``base_url``) so that its start-up overlaps it."""
    tmp = tmp_path_factory.mktemp("empty")
    server = Server(f"sqlite:///{tmp / 'hpscale.db'}", tmp / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def empty_base_url(empty_server: Server) -> str:
    return empty_server.ready()


@pytest.fixture(scope="session")
def base_url(empty_server: Server, seeded: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app serving the seeded database."""
    server = Server(seeded["url"], tmp_path_factory.mktemp("serve") / "server.log")
    try:
        yield server.ready()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium. Missing browser: a failure that says how to install it (CI
    installs it; a skipped UI suite would pass while proving nothing)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: the browser tests need Debian's Chromium; run `apt-get install chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


class Page:
    """A browser page that records console errors and uncaught exceptions."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.set_default_timeout(15_000)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.page, name)

    def shot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def assert_clean(self, allow: tuple[str, ...] = ()) -> None:
        """No console error and no uncaught exception, except messages containing ``allow``."""
        bad = [e for e in self.errors if not any(a in e for a in allow)]
        assert not bad, "browser errors:\n" + "\n".join(bad)


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    """A fresh laptop-sized page (own context: no state leaks between tests)."""
    context = browser.new_context(viewport=LAPTOP)
    yield Page(context.new_page())
    context.close()


@pytest.fixture
def phone(browser: Any) -> Iterator[Page]:
    """A fresh phone-sized page (touch; device scale 1 keeps the full-page screenshots small)."""
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    yield Page(context.new_page())
    context.close()
