"""Every request limit at the limit and one past it, over REST and gRPC, on a server with small limits;
the server log never holds request content; and a crashed only-worker means 503s, not 500s.

Where each limit is enforced, and what the client sees, is docs/reliability.md's table.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
import pytest
import reliability_support as rs
from reliability_support import (
    ANSWERED,
    FAILED,
    UNAVAILABLE,
    LoadLoop,
    images_body,
    infer_url,
    jpeg,
    record_figures,
    wait_for,
    worker_pids,
)

from cassava.server.process import ServerProcess

pytestmark = pytest.mark.integration

MESSAGE_LIMIT = 1024 * 1024  # settings.json grpc_max_message_length: REST bodies and gRPC messages
MAX_BATCH = 4
MAX_PIXELS = 100_000
MAX_BYTES = 300_000
CALL = 120.0
MARKER = "CASSAVA-LOG-MARKER-5e1d"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[ServerProcess]:
    process = ServerProcess.for_model(
        tmp_path_factory.mktemp("limits"),
        model_dir=demo_model_dir,
        extra={"max_images": MAX_BATCH, "max_image_pixels": MAX_PIXELS, "max_image_bytes": MAX_BYTES},
        server={"grpc_max_message_length": MESSAGE_LIMIT, "parallel_workers": 1},
    )
    process.start(timeout=rs.START_TIMEOUT)
    yield process
    process.stop()


def post(server: ServerProcess, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        infer_url(server),
        content=content,
        headers={"content-type": "application/json", **headers},
        timeout=CALL,
    )


def error(response: httpx.Response) -> str:
    body = response.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str), body
    assert body["error"].strip()
    return str(body["error"])


def padded_body(images: list[bytes], size: int) -> bytes:
    """A valid images request of exactly `size` bytes: JSON allows any whitespace before its last `}`."""
    compact = json.dumps(images_body(images), separators=(",", ":")).encode()
    assert len(compact) <= size
    return compact[:-1] + b" " * (size - len(compact)) + b"}"


def padded_jpeg(size: int) -> bytes:
    """A JPEG of exactly `size` bytes: bytes after the end-of-image marker are ignored by decoders."""
    data = jpeg(64, 48)
    return data + b"\0" * (size - len(data))


# --- REST body / gRPC message -----------------------------------------------------------------------------


def test_rest_body_at_the_limit_is_served_and_one_byte_more_is_413(server: ServerProcess) -> None:
    at_limit = padded_body([jpeg(64, 48)], MESSAGE_LIMIT)
    response = post(server, at_limit)
    assert response.status_code == 200, response.text[:300]
    response = post(server, at_limit + b" ")
    assert response.status_code == 413
    assert f"{MESSAGE_LIMIT + 1:,} bytes; this server accepts at most {MESSAGE_LIMIT:,}" in error(response)
    assert rs.is_ready(server)


def test_rest_chunked_body_over_the_limit_is_413(server: ServerProcess) -> None:
    """No Content-Length: the body is counted as it arrives and refused once past the limit."""
    chunks = [b" " * 65536] * (MESSAGE_LIMIT // 65536 + 1)
    response = httpx.post(infer_url(server), content=iter(chunks), timeout=CALL)
    assert response.status_code == 413
    assert f"over {MESSAGE_LIMIT:,} bytes" in error(response)


def test_rest_declared_size_is_refused_before_the_body_is_read(server: ServerProcess) -> None:
    """A 10 GB Content-Length with no body: answered at once, the server never waits for the body."""
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=CALL) as sock:
        sock.sendall(
            b"POST /v2/models/cassava/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
        )
        answer = sock.recv(65536).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer[:200]
    assert "10,000,000,000 bytes" in answer


def test_rest_gzip_bomb_is_413_without_inflating_it(server: ServerProcess) -> None:
    bomb = gzip.compress(b" " * (200 * MESSAGE_LIMIT))  # 200 MiB of spaces in ~200 KB
    response = post(server, bomb, **{"content-encoding": "gzip"})
    assert response.status_code == 413
    assert "once decompressed" in error(response)
    small = gzip.compress(json.dumps(images_body([jpeg(64, 48)])).encode())
    assert post(server, small, **{"content-encoding": "gzip"}).status_code == 200


def test_grpc_message_at_the_limit_is_served_and_one_byte_more_is_refused(
    server: ServerProcess, grpc_pool: ProcessPoolExecutor
) -> None:
    # Four images (the batch limit) padded within the per-image limit make up exactly the message limit.
    images = [jpeg(64, 48, seed=i) for i in range(MAX_BATCH)]
    outcomes = {
        size: grpc_pool.submit(rs.infer_images_of_size, server.grpc_target, images, size, MAX_BYTES).result(
            CALL
        )
        for size in (MESSAGE_LIMIT, MESSAGE_LIMIT + 1)
    }
    at_limit, over = outcomes[MESSAGE_LIMIT], outcomes[MESSAGE_LIMIT + 1]
    assert (at_limit.ok, at_limit.size) == (True, MESSAGE_LIMIT), at_limit
    assert (over.ok, over.code, over.size) == (False, "RESOURCE_EXHAUSTED", MESSAGE_LIMIT + 1), over
    assert f"{MESSAGE_LIMIT + 1} vs. {MESSAGE_LIMIT}" in over.message
    assert grpc_pool.submit(rs.infer_images_of_size, server.grpc_target, images[:1]).result(CALL).ok


def test_grpc_raw_contents_that_do_not_match_the_shape_are_invalid_argument(
    server: ServerProcess, grpc_pool: ProcessPoolExecutor
) -> None:
    """MLServer unpacks raw_input_contents before any model code; a mismatch must not be INTERNAL."""
    cases = [
        ("payload", "FP32", [1, 224, 224, 3], b"\0" * 8),
        ("images", "BYTES", [1], (1000).to_bytes(4, "little") + b"short"),
        ("payload", "FP32", [-5, 224, 224, 3], b"\0" * 16),
    ]
    for name, datatype, shape, raw in cases:
        outcome = grpc_pool.submit(
            rs.infer_raw_contents, server.grpc_target, name, datatype, shape, raw
        ).result(CALL)
        assert (outcome.ok, outcome.code) == (False, "INVALID_ARGUMENT"), (name, shape, outcome)
        assert "raw_input_contents" in outcome.message


# --- per-request limits: batch, pixels, bytes per image -------------------------------------------------


def limit_cases() -> list[tuple[str, list[bytes], list[bytes], str]]:
    """(limit, images at the limit, images one past it, what the refusal says)."""
    return [
        (
            "max_images",
            [jpeg(64, 48, seed=i) for i in range(MAX_BATCH)],
            [jpeg(64, 48, seed=i) for i in range(MAX_BATCH + 1)],
            f"holds {MAX_BATCH + 1} images; at most {MAX_BATCH} are allowed",
        ),
        (
            "max_image_pixels",
            [jpeg(400, 250)],
            [jpeg(401, 250)],
            f"401x250 = 100,250 pixels; the limit is {MAX_PIXELS:,} pixels",
        ),
        (
            "max_image_bytes",
            [padded_jpeg(MAX_BYTES)],
            [padded_jpeg(MAX_BYTES + 1)],
            f"{MAX_BYTES + 1:,} bytes.*the limit is {MAX_BYTES:,} bytes per image",
        ),
    ]


@pytest.mark.parametrize("case", limit_cases(), ids=lambda c: c[0])
def test_request_limits_over_rest(
    server: ServerProcess, case: tuple[str, list[bytes], list[bytes], str]
) -> None:
    _, at_limit, over, words = case
    response = httpx.post(infer_url(server), json=images_body(at_limit), timeout=CALL)
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["outputs"][0]["data"]) == len(at_limit)
    response = httpx.post(infer_url(server), json=images_body(over), timeout=CALL)
    assert response.status_code == 400
    assert re.search(words, error(response)), error(response)


@pytest.mark.parametrize("case", limit_cases(), ids=lambda c: c[0])
def test_request_limits_over_grpc(
    server: ServerProcess, grpc_pool: ProcessPoolExecutor, case: tuple[str, list[bytes], list[bytes], str]
) -> None:
    _, at_limit, over, words = case
    outcome = grpc_pool.submit(rs.infer_images_of_size, server.grpc_target, at_limit).result(CALL)
    assert outcome.ok, outcome
    outcome = grpc_pool.submit(rs.infer_images_of_size, server.grpc_target, over).result(CALL)
    assert (outcome.ok, outcome.code) == (False, "INVALID_ARGUMENT"), outcome
    assert re.search(words, outcome.message), outcome.message


# --- logs ----------------------------------------------------------------------------------------------


def test_the_log_never_holds_request_content(server: ServerProcess, grpc_pool: ProcessPoolExecutor) -> None:
    """Accepted and rejected requests whose bytes carry a marker, as raw bytes, inside an image, as base64
    text and as float values: none of it reaches the server log (MLServer logs every rejection)."""
    assert server.log_path is not None
    start = server.log_path.stat().st_size
    secret = MARKER.encode()
    b64_marker = base64.b64encode(b"base64-" + secret).decode()  # a base64 string recognisable as such
    image = jpeg(64, 48)
    with_comment = image[:2] + b"\xff\xfe" + (len(secret) + 2).to_bytes(2, "big") + secret + image[2:]
    pixels: list[object] = [0] * (224 * 224 * 3 - 1) + [MARKER]
    rest_bodies = [
        images_body([with_comment]),  # accepted: the marker is inside a valid JPEG
        images_body([b"not an image " + secret]),  # rejected: not an image
        images_body([secret + image]),  # rejected: the marker where the signature should be
        {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [b64_marker]}]},
        {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [MARKER + "!"]}]},
        # One string among the pixels: numpy's error quotes it, the message must not.
        {"inputs": [{"name": "payload", "datatype": "FP32", "shape": [1, 224, 224, 3], "data": pixels}]},
    ]
    statuses = []
    for body in rest_bodies:
        response = httpx.post(infer_url(server), json=body, timeout=CALL)
        statuses.append(response.status_code)
        if response.status_code != 200:
            assert MARKER not in response.text
            assert b64_marker not in response.text
    assert statuses == [200, 400, 400, 400, 400, 400]
    for images in ([with_comment], [b"not an image " + secret], [secret + image]):
        grpc_pool.submit(rs.infer_images_of_size, server.grpc_target, images).result(CALL)
    time.sleep(1.0)  # the worker's log lines reach the file through the server's stdout
    with server.log_path.open("rb") as log:
        log.seek(start)
        written = log.read().decode(errors="replace")
    for needle in (MARKER, b64_marker, MARKER[:12], "5e1d"):
        assert needle not in written, f"{needle!r} is in the server log"
    # Rejections are logged, as one line each, not as an ERROR with a traceback per request.
    assert "rejected a request (status 400)" in written
    assert "Traceback" not in written


# --- the only worker crashes ----------------------------------------------------------------------------


@pytest.mark.slow
def test_while_the_only_worker_restarts_requests_get_503_and_readiness_is_false(
    server: ServerProcess,
) -> None:
    """Last in this module: it kills the module server's one worker. Without cassava.server.launcher every
    request in the restart window would be a 500 ("coroutine raised StopIteration")."""
    (victim,) = worker_pids(server)
    with LoadLoop(infer_url(server), images_body([jpeg()]), threads=2, max_seconds=rs.START_TIMEOUT) as load:
        wait_for(lambda: load.count() >= 3, CALL, "answers before the kill")
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: not rs.is_ready(server), 30, "readiness false after the kill")
        unready_after = time.monotonic() - killed
        recovered = wait_for(
            lambda: rs.is_ready(server) and load.count(ANSWERED, since=time.monotonic() - 5) > 0,
            rs.START_TIMEOUT,
            "served again after the restart",
            interval=0.5,
        )
    requests = load.snapshot()
    during = [r for r in requests if r.started >= killed]
    failed = [r for r in during if r.outcome == FAILED]
    # A 500 only for what the dead worker held: "Worker process stopped unexpectedly".
    assert all(r.started < killed + 1.0 and "stopped unexpectedly" in r.detail for r in failed), failed
    assert len(failed) <= 2
    assert any(r.outcome == UNAVAILABLE for r in during)
    assert all(r.outcome in (ANSWERED, UNAVAILABLE, FAILED) for r in during), {r.outcome for r in during}
    record_figures(
        "one_worker_sigkill",
        {
            "workers": 1,
            "load_threads": 2,
            "requests": load.tally(during),
            "unready_within_s": round(unready_after, 1),
            "serving_again_after_s": round(recovered + unready_after, 1),
        },
    )
