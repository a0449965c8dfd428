"""Helpers for the browser tests: `cassava serve` processes, pages that record their requests, images."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
from PIL import Image

from cassava.contract import MODEL_NAME
from cassava.server.process import free_port
from cassava.server.webui import CONTENT_SECURITY_POLICY
from conftest import make_leaf_image

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page, Request

CASSAVA = Path(sys.executable).with_name("cassava")
#: The page's own selectors the tests wait for (static/index.html, static/app.js).
RESULT = "#results .result"
DONE_RESULT = "#results .result[data-class-code], #results .result.failed"
SERVER_START_SECONDS = 180

# --- servers ------------------------------------------------------------------------------------------


@dataclass
class Served:
    """A running `cassava serve` and the page URL it printed."""

    process: subprocess.Popen[bytes]
    log_path: Path
    http_port: int
    page_url: str = ""

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def origin(self) -> str:
        return self.api_url

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metadata(self) -> dict[str, Any]:
        response = httpx.get(f"{self.api_url}/v2/models/{MODEL_NAME}", timeout=10)
        response.raise_for_status()
        return dict(response.json())


def _wait_ready(served: Served, url: str) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if served.process.poll() is not None:
            raise RuntimeError(f"the server exited with {served.process.returncode}:\n{served.log()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the server was not ready within {SERVER_START_SECONDS} s:\n{served.log()[-3000:]}")


@contextlib.contextmanager
def running(command: list[str], workdir: Path, http_port: int, env: dict[str, str]) -> Iterator[Served]:
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the stop below reaches MLServer's workers
        )
        served = Served(process, log_path, http_port)
        try:
            _wait_ready(served, f"{served.api_url}/v2/models/{MODEL_NAME}/ready")
            yield served
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def cassava_serve(workdir: Path, model_dir: Path) -> Iterator[Served]:
    http_port = free_port()
    command = [
        str(CASSAVA), "serve", "--model", str(model_dir), "--host", "127.0.0.1",
        "--http-port", str(http_port), "--grpc-port", str(free_port()), "--metrics-port", str(free_port()),
    ]  # fmt: skip
    with running(command, workdir, http_port, {}) as served:
        found = re.search(r"diagnosis page: (http://\S+)", served.log())
        assert found, f"`cassava serve` printed no page URL:\n{served.log()[-2000:]}"
        served.page_url = found.group(1)
        yield served


# --- pages --------------------------------------------------------------------------------------------


@dataclass
class Recorder:
    """Everything a page asked for and complained about, to check after the test."""

    requests: list[Request] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("request", lambda request: self.requests.append(request))
        # Playwright turns on file-chooser interception when the first listener is added; added only
        # inside `expect_file_chooser`, a key press can beat it, and the dialog opens unseen (2 in 15
        # tries here, with the page's click event fired every time). A listener from the start avoids it.
        page.on("filechooser", lambda chooser: None)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        page.on(
            "console",
            lambda message: (
                self.errors.append(message.text)
                if message.type == "error" and "Content Security Policy" in message.text
                else None
            ),
        )

    def infer_bodies(self) -> list[dict[str, Any]]:
        return [
            json.loads(request.post_data_buffer or b"{}")
            for request in self.requests
            if request.method == "POST" and request.url.endswith("/infer")
        ]

    def check(self, origin: str) -> None:
        foreign = [r.url for r in self.requests if not r.url.startswith((f"{origin}/", "blob:"))]
        assert not foreign, f"the page asked another origin than {origin}: {foreign}"
        assert not self.errors, f"the page reported errors: {self.errors}"


@dataclass
class OpenPage:
    page: Page
    recorder: Recorder


@contextlib.contextmanager
def open_page(
    browser: Browser, served: Served, *, viewport: dict[str, int] | None = None, scale: float = 1
) -> Iterator[OpenPage]:
    context: BrowserContext = browser.new_context(
        viewport=viewport or {"width": 1000, "height": 900}, device_scale_factor=scale
    )
    try:
        page = context.new_page()
        recorder = Recorder()
        recorder.attach(page)
        response = page.goto(served.page_url)
        # As the server sent it, through MLServer's middleware: the policy Chromium enforced in the test.
        assert response is not None
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        yield OpenPage(page, recorder)
        recorder.check(served.origin)
    finally:
        context.close()


def wait_for_results(page: Page, count: int, timeout_ms: float = 120_000) -> None:
    page.wait_for_function(
        "([selector, count]) => document.querySelectorAll(selector).length === count",
        arg=[DONE_RESULT, count],
        timeout=timeout_ms,
    )


# --- images and the CLI's answers ---------------------------------------------------------------------


def photo_12mp(seed: int = 0) -> bytes:
    """A 4000x3000 JPEG with a phone photo's fine texture (sensor noise), so that its size is realistic:
    a smooth synthetic image would compress ~20x better than any photo of a leaf."""
    rng = np.random.default_rng(seed)
    pixels = np.asarray(make_leaf_image(seed, (4000, 3000)), dtype=np.int16)
    pixels = np.clip(pixels + rng.normal(0, 6, pixels.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def sent_images(body: dict[str, Any]) -> list[bytes]:
    return [base64.b64decode(item) for item in body["inputs"][0]["data"]]


def cassava_predict(model_dir: Path, files: list[Path]) -> dict[str, dict[str, Any]]:
    """`cassava predict --json` on the files, by file name."""
    done = subprocess.run(
        [str(CASSAVA), "predict", "--model", str(model_dir), "--json", *map(str, files)],
        capture_output=True,
        check=False,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return {Path(row["input"]).name: row for row in json.loads(done.stdout)}
