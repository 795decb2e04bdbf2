"""Browser tests, each opted into: the built site's (`pytest tests/browser --site _build/html`, or SAMPOT_SITE) and
the live app's (`pytest tests/browser --live`, or SAMPOT_LIVE=1; `make app-test`). Without the option they skip;
with it, a missing Chromium or Voila fails with what to install."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--site", default=None, help="folder of the built book (e.g. _build/html) for tests/browser")
    parser.addoption("--live", action="store_true", help="run tests/browser's live tests (they start Voila)")


#: Debian's chromium, headless, with nothing that phones home (the tests also block every request off the machine).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip


def _live_asked(config: pytest.Config) -> bool:
    return bool(config.getoption("--live", default=False) or os.environ.get("SAMPOT_LIVE") == "1")


def _site_given(config: pytest.Config) -> str | None:
    return config.getoption("--site", default=None) or os.environ.get("SAMPOT_SITE")


@pytest.fixture(scope="session")
def live(request: pytest.FixtureRequest) -> bool:
    """Skips unless the live tests were asked for; then Voila must be installed."""
    if not _live_asked(request.config):
        pytest.skip("live browser tests (the app, figure titles): `make app-test`, or pytest tests/browser --live")
    if shutil.which("voila") is None and importlib.util.find_spec("voila") is None:
        pytest.fail("Voila is not installed: pip install -e '.[app]' (the book extra includes it).")
    return True


@pytest.fixture(scope="session")
def site(request: pytest.FixtureRequest) -> Path:
    value = _site_given(request.config)
    if not value:
        pytest.skip("no built site given: build it with `make book`, then `pytest tests/browser --site _build/html`")
    root = Path(value).resolve()
    if not (root / "index.html").is_file():
        pytest.fail(f"{root} holds no built book (no index.html); run `make book` first.")
    return root


@pytest.fixture(scope="session")
def chromium_path(request: pytest.FixtureRequest) -> str:
    # The session-scoped browser is set up before the fixtures that skip (`live`, `site`), so a plain `pytest` skips
    # here, before Chromium starts: a browser left running for the whole session would keep its event loop marked as
    # running in the main thread (playwright 1.40's sync API does), which breaks later tests' asyncio.run().
    if not (_live_asked(request.config) or _site_given(request.config)):
        pytest.skip("no browser tests asked for (--live, --site)")
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("no Chromium found: `apt-get install -y chromium` (Debian), or set CHROMIUM=/path/to/chrome.")
    return path


@pytest.fixture(scope="session")
def browser(chromium_path: str):
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        # Debian's chromium, not a browser downloaded by playwright (there is no download offline).
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield b
        b.close()
