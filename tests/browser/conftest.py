"""The browser test needs a built site: `pytest tests/browser --site _build/html` (or SAMPOT_SITE=_build/html)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--site", default=None, help="folder of the built book (e.g. _build/html) for tests/browser")


@pytest.fixture(scope="session")
def site(request: pytest.FixtureRequest) -> Path:
    value = request.config.getoption("--site", default=None) or os.environ.get("SAMPOT_SITE")
    if not value:
        pytest.skip("no built site given: build it with `make book`, then `pytest tests/browser --site _build/html`")
    root = Path(value).resolve()
    if not (root / "index.html").is_file():
        pytest.fail(f"{root} holds no built book (no index.html); run `make book` first.")
    return root


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("no Chromium found: `apt-get install -y chromium` (Debian), or set CHROMIUM=/path/to/chrome.")
    return path


@pytest.fixture(scope="session")
def browser(chromium_path: str):
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        # Debian's chromium, not a browser downloaded by playwright (there is no download offline).
        b = p.chromium.launch(executable_path=chromium_path, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()
