"""The diagnosis page in headless Chromium against a real `cassava serve`: the page must show what
`cassava predict` says about the same file, and only what the public V2 API answered."""

from __future__ import annotations

import base64
import io
import math
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from PIL import Image

from browser.webpage import (
    RESULT,
    Served,
    cassava_predict,
    cassava_serve,
    open_page,
    photo_12mp,
    running,
    sent_images,
    wait_for_results,
)
from cassava import contract
from cassava.labels import LABELS
from cassava.server import webui
from cassava.server.patches import NoWorkerReadyError
from cassava.server.process import free_port
from conftest import encode, make_leaf_image

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "img" / "webui.png"
PHONE = {"width": 360, "height": 780}
BY_CODE = {label.code: label for label in LABELS}


def _percent(p: float) -> str:
    # JavaScript's Math.round: halves round up (Python's round() rounds them to even).
    return f"{math.floor(p * 100 + 0.5)}%"


def _expected_verdict(row: dict[str, Any]) -> str:
    uncertain = row["class_code"] == webui.UNKNOWN_CODE or row["confidence"] < webui.UNCERTAIN_BELOW
    return webui.UNCERTAIN_TEXT if uncertain else BY_CODE[row["class_code"]].name


def _check_card(card: Locator, row: dict[str, Any]) -> None:
    """One result card against `cassava predict --json`'s row for the same file."""
    assert card.get_attribute("data-class-code") == row["class_code"]
    assert card.locator(".verdict").inner_text() == _expected_verdict(row)
    shown = {
        bar.get_attribute("data-code"): bar.locator(".pct").inner_text()
        for bar in card.locator(".bars li").all()
    }
    assert shown == {code: _percent(p) for code, p in row["probabilities"].items()}
    if _expected_verdict(row) != webui.UNCERTAIN_TEXT:
        assert BY_CODE[row["class_code"]].description in card.locator(".about").inner_text()


def _write(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def _choose(page: Page, files: list[Path]) -> None:
    page.locator("#photos").set_input_files([str(f) for f in files])


def test_one_jpeg_shows_what_cassava_predict_says(
    browser: Browser, standin_served: Served, demo_model_dir: Path, tmp_path: Path
) -> None:
    photo = _write(tmp_path, "leaf.jpg", encode(make_leaf_image(11), "JPEG", quality=90))
    expected = cassava_predict(demo_model_dir, [photo])["leaf.jpg"]
    with open_page(browser, standin_served) as opened:
        _choose(opened.page, [photo])
        wait_for_results(opened.page, 1)
        card = opened.page.locator(RESULT).first
        _check_card(card, expected)
        assert card.locator(".preview").evaluate("img => img.complete && img.naturalWidth > 0")
        # A photo under the downscale size is sent byte for byte: the server judged exactly this file.
        (body,) = opened.recorder.infer_bodies()
        assert sent_images(body) == [photo.read_bytes()]


def test_the_stand_in_says_so_in_a_banner_and_on_every_result(
    browser: Browser, standin_served: Served, sample_jpegs: list[bytes], tmp_path: Path
) -> None:
    warning = standin_served.metadata()["parameters"]["warning"]
    assert warning, "the stand-in's metadata carries a warning"
    files = [_write(tmp_path, f"leaf{i}.jpg", data) for i, data in enumerate(sample_jpegs[:3])]
    with open_page(browser, standin_served) as opened:
        page = opened.page
        banner = page.locator("#standin")
        banner.wait_for(state="visible")
        assert banner.inner_text() == warning
        _choose(page, files)
        wait_for_results(page, len(files))
        notes = page.locator(f"{RESULT} .standin-note")
        assert notes.count() == len(files)
        assert all(note.is_visible() for note in notes.all())


def test_twenty_photos_at_once_each_match_cassava_predict(
    browser: Browser, standin_served: Served, demo_model_dir: Path, tmp_path: Path
) -> None:
    files = [
        _write(tmp_path / "twenty", f"leaf{i:02d}.jpg", encode(make_leaf_image(100 + i), "JPEG", quality=85))
        for i in range(20)
    ]
    expected = cassava_predict(demo_model_dir, files)
    with open_page(browser, standin_served) as opened:
        page = opened.page
        _choose(page, files)
        wait_for_results(page, len(files))
        cards = page.locator(RESULT).all()
        assert [card.locator(".file").inner_text() for card in cards] == [f.name for f in files]
        for card, path in zip(cards, files, strict=True):
            _check_card(card, expected[path.name])
        assert page.locator("#status").inner_text() == f"{len(files)} of {len(files)} photos done."
        assert len(opened.recorder.infer_bodies()) == len(files)


def test_a_non_image_shows_the_servers_message_and_what_to_do(
    browser: Browser, standin_served: Served, tmp_path: Path
) -> None:
    text_file = _write(tmp_path, "notes.txt", b"these are field notes, not a photo\n")
    # What the API itself answers for these bytes: the page must pass it on, not invent its own.
    answer = httpx.post(
        f"{standin_served.api_url}/v2/models/{contract.MODEL_NAME}/infer",
        json={
            "inputs": [
                {
                    "name": contract.IMAGES_INPUT,
                    "datatype": "BYTES",
                    "shape": [1],
                    "data": [base64.b64encode(text_file.read_bytes()).decode()],
                }
            ]
        },
        timeout=30,
    )
    assert answer.status_code == 400
    with open_page(browser, standin_served) as opened:
        _choose(opened.page, [text_file])
        wait_for_results(opened.page, 1)
        card = opened.page.locator(RESULT).first
        assert card.get_attribute("data-status") == "400"
        assert card.locator(".verdict").inner_text() == "The server could not use this file"
        error = card.locator(".error").inner_text()
        assert answer.json()["error"] in error
        assert "Choose a JPEG or PNG photo" in error
        assert not card.locator(".retry").is_visible(), "retrying the same file cannot help"


@pytest.mark.parametrize("status", [413, 503])
def test_other_server_errors_in_plain_words(
    browser: Browser, standin_served: Served, demo_model_dir: Path, tmp_path: Path, status: int
) -> None:
    """413 and 503 need a 64 MiB body or a crashed worker to happen for real (tests/integration covers
    both); here Playwright answers the page's request with the server's error shape, MLServer's
    `{"error": message}` (mlserver/rest/errors.py, 1.7.1), and the 503 with our own worker message."""
    message = {
        413: "the request body is 70,000,000 bytes; this server accepts at most 67,108,864 bytes per request",
        503: str(NoWorkerReadyError()),
    }[status]
    photo = _write(tmp_path, "leaf.jpg", encode(make_leaf_image(31), "JPEG", quality=90))
    with open_page(browser, standin_served) as opened:
        page = opened.page
        page.route("**/infer", lambda route: route.fulfill(status=status, json={"error": message}))
        _choose(page, [photo])
        wait_for_results(page, 1)
        card = page.locator(RESULT).first
        assert card.get_attribute("data-status") == str(status)
        assert message in card.locator(".error").inner_text()
        retry = card.locator(".retry")
        # A worker comes back; the same request that was too large stays too large.
        assert retry.is_visible() == (status == 503)
        if status == 503:
            page.unroute("**/infer")
            retry.focus()
            page.keyboard.press("Enter")
            wait_for_results(page, 1)
            expected = cassava_predict(demo_model_dir, [photo])["leaf.jpg"]
            _check_card(card, expected)
            assert not card.locator(".error").is_visible()


def test_a_12mp_photo_is_downscaled_in_the_browser(
    browser: Browser, standin_served: Served, demo_model_dir: Path, tmp_path: Path
) -> None:
    original = photo_12mp()
    photo = _write(tmp_path, "phone.jpg", original)
    with open_page(browser, standin_served) as opened:
        _choose(opened.page, [photo])
        wait_for_results(opened.page, 1)
        request = next(r for r in opened.recorder.requests if r.url.endswith("/infer"))
        body_bytes = len(request.post_data_buffer or b"")
        (body,) = opened.recorder.infer_bodies()
        (sent,) = sent_images(body)
        card = opened.page.locator(RESULT).first
        # What the model saw is the downscaled JPEG: the page must show what `cassava predict` says of it.
        sent_path = _write(tmp_path / "sent", "phone.jpg", sent)
        _check_card(card, cassava_predict(demo_model_dir, [sent_path])["phone.jpg"])
    with Image.open(io.BytesIO(sent)) as image:
        assert (image.format, max(image.size)) == ("JPEG", webui.UPLOAD_MAX_SIDE)
        assert image.size == (webui.UPLOAD_MAX_SIDE, round(3000 * webui.UPLOAD_MAX_SIDE / 4000))
    unchanged_body = math.ceil(len(original) / 3) * 4  # the file alone, base64, without the JSON around it
    print(
        f"\n12 MP photo (4000x3000 JPEG q90): file {len(original):,} B, would send >= {unchanged_body:,} B "
        f"as base64; sent {body_bytes:,} B (request body, {len(sent):,} B JPEG at "
        f"{webui.UPLOAD_MAX_SIDE} px): {unchanged_body / body_bytes:.0f}x less"
    )
    assert body_bytes * 10 < len(original)


def test_phone_screen_and_keyboard_only(
    browser: Browser, standin_served: Served, demo_model_dir: Path, sample_jpegs: list[bytes], tmp_path: Path
) -> None:
    files = [_write(tmp_path, f"leaf-{i}.jpg", data) for i, data in enumerate(sample_jpegs[3:6])]
    expected = cassava_predict(demo_model_dir, files)
    with open_page(browser, standin_served, viewport=PHONE, scale=2) as opened:
        page = opened.page
        page.locator("#standin").wait_for(state="visible")
        # Keyboard only: Tab reaches the photo picker, Enter opens the system's file chooser.
        for _ in range(5):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.id") == "photos":
                break
        assert page.evaluate("document.activeElement.id") == "photos", "Tab never reached the photo picker"
        with page.expect_file_chooser() as chooser:
            page.keyboard.press("Enter")
        chooser.value.set_files([str(f) for f in files])
        wait_for_results(page, len(files))
        for card, path in zip(page.locator(RESULT).all(), files, strict=True):
            _check_card(card, expected[path.name])
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than a {PHONE['width']}-px phone screen"
        # The banner, the pickers and two results: what the README shows.
        second = page.locator(RESULT).nth(1).bounding_box()
        assert second is not None
        clip = {"x": 0, "y": 0, "width": PHONE["width"], "height": second["y"] + second["height"] + 12}
        _save_screenshot(page.screenshot(full_page=True, clip=clip), tmp_path)


def _save_screenshot(png: bytes, tmp_path: Path) -> None:
    """Into the test's folder; into docs/img/ (what the README shows) only when asked, so that a test
    run leaves the checkout as it was."""
    (tmp_path / SCREENSHOT.name).write_bytes(png)
    if os.environ.get("CASSAVA_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / SCREENSHOT.name, SCREENSHOT)


def test_the_real_cropnet_graph_shows_what_cassava_predict_says(
    browser: Browser,
    cropnet_graph_dir: Path,
    sample_jpegs: list[bytes],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    folder = tmp_path_factory.mktemp("cropnet-photos")
    files = [_write(folder, f"leaf{i}.jpg", data) for i, data in enumerate(sample_jpegs)]
    expected = cassava_predict(cropnet_graph_dir, files)
    with cassava_serve(tmp_path_factory.mktemp("serve-cropnet"), cropnet_graph_dir) as served:
        untrained = served.metadata()["parameters"]["untrained"]
        with open_page(browser, served) as opened:
            _choose(opened.page, files)
            wait_for_results(opened.page, len(files))
            for card, path in zip(opened.page.locator(RESULT).all(), files, strict=True):
                _check_card(card, expected[path.name])
            assert opened.page.locator("#standin").is_visible() == bool(untrained)


def test_plain_mlserver_start_serves_the_page(
    browser: Browser, demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The tutorial's `mlserver start model/` on the repository's own folder: MLServer 1.7.1 adds a
    runtime's `@custom_handler` methods as REST routes when the model loads (mlserver/server.py
    `add_custom_handlers`, mlserver/rest/server.py), so the page needs no launcher."""
    workdir = tmp_path_factory.mktemp("mlserver-start")
    photo = _write(workdir, "leaf.jpg", encode(make_leaf_image(21), "JPEG", quality=90))
    expected = cassava_predict(demo_model_dir, [photo])["leaf.jpg"]
    http_port = free_port()
    env = {
        "CASSAVA_MODEL_DIR": str(demo_model_dir),
        "MLSERVER_HOST": "127.0.0.1",
        "MLSERVER_HTTP_PORT": str(http_port),
        "MLSERVER_GRPC_PORT": str(free_port()),
        "MLSERVER_METRICS_PORT": str(free_port()),
        "MLSERVER_METRICS_DIR": str(workdir / "metrics"),
    }
    command = [str(Path(sys.executable).with_name("mlserver")), "start", str(REPO / "model")]
    with running(command, workdir, http_port, env) as served:
        served.page_url = f"{served.api_url}/"
        with open_page(browser, served) as opened:
            _choose(opened.page, [photo])
            wait_for_results(opened.page, 1)
            _check_card(opened.page.locator(RESULT).first, expected)
