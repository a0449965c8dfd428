"""The diagnosis page in a real browser: headless Chromium, driven by Playwright, against real servers.

The browser is the system's (Debian's `chromium` package, which `.ci/run` installs): Playwright talks to
it over the Chrome DevTools Protocol through `executable_path` and never downloads a browser of its own
(playwright.dev/python/docs/api/class-browsertype#browser-type-launch). Without Chromium or the
`playwright` package these tests skip locally, and fail under CI=true so that CI cannot pass without
running them.

The servers are real `cassava serve` processes: the command people run, whose printed page URL is the
one the tests open. Each start costs 20-30 s, so they are shared by a module's tests.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from browser.webpage import Served, cassava_serve

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Nothing but the page's own requests leaves the browser: no update, sync or field-trial traffic.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def missing(reason: str) -> None:
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{reason}; under CI=true the browser tests must run, not skip", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    path = os.environ.get("CASSAVA_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path or not os.access(path, os.X_OK):
        missing(
            f"no Chromium ({path or 'none on PATH'}): install Debian's `chromium` package "
            "(apt-get install chromium; .ci/run does) or set CASSAVA_CHROMIUM to a Chromium executable"
        )
    assert path is not None
    return path


# Module scope, not session: Playwright's sync API keeps an asyncio loop running in this thread while
# it is open, and every later test that calls asyncio.run() would then fail.
@pytest.fixture(scope="module")
def browser(chromium_executable: str) -> Iterator[Browser]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("the `playwright` package is not installed (it is in the `dev` extra: make setup)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_executable, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def standin_served(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[Served]:
    with cassava_serve(tmp_path_factory.mktemp("serve-standin"), demo_model_dir) as served:
        yield served
