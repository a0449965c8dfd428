"""`cassava.client` without a real server: where a target string points, how images travel, and
(against a scripted local HTTP server) headers, the model name and retries."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from cassava.client import (
    CassavaClient,
    InferenceRequestError,
    Retry,
    ServerUnreachableError,
    Target,
    images_request_payload,
)
from cassava.pipeline import BatchResult


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param("http://localhost:8080", Target("rest", "localhost:8080"), id="http"),
        pytest.param("http://localhost:8080/", Target("rest", "localhost:8080"), id="trailing-slash"),
        pytest.param("localhost:8080", Target("rest", "localhost:8080"), id="no-scheme-is-http"),
        pytest.param(
            "https://models.example.com", Target("rest", "models.example.com", ssl=True), id="https"
        ),
        pytest.param("grpc://127.0.0.1:8081", Target("grpc", "127.0.0.1:8081"), id="grpc"),
        pytest.param(
            "http://localhost:8080/seldon/default/cassava",
            Target("rest", "localhost:8080/seldon/default/cassava"),
            id="seldon-ingress-path",
        ),
        pytest.param(
            "http://localhost:8080/v2/models/cassava/infer",
            Target("rest", "localhost:8080"),
            id="full-infer-url",
        ),
        pytest.param(
            "https://ingress.example.com/seldon/prod/cassava/v2/models/cassava/infer",
            Target("rest", "ingress.example.com/seldon/prod/cassava", ssl=True),
            id="full-seldon-infer-url",
        ),
        pytest.param("http://h:8080/v2/models/cassava", Target("rest", "h:8080"), id="model-url"),
        pytest.param("http://h:8080/v2", Target("rest", "h:8080"), id="v2-url"),
    ],
)
def test_target_parse(target: str, expected: Target) -> None:
    assert Target.parse(target) == expected


@pytest.mark.parametrize("target", ["ftp://host/model", "file:///tmp/model"])
def test_target_parse_refuses_other_schemes(target: str) -> None:
    with pytest.raises(ValueError, match="unsupported target"):
        Target.parse(target)


IMAGES = [b"\xff\xd8\xff\xe0 a jpeg", b"\x89PNG\r\n\x1a\n a png", b""]


def test_images_travel_as_raw_bytes_over_grpc() -> None:
    payload = images_request_payload(IMAGES, "grpc")
    assert payload.dtype == np.object_
    assert payload.shape == (len(IMAGES),)
    assert list(payload) == IMAGES


def test_images_travel_as_base64_text_over_rest() -> None:
    # MLServer speaks no binary-tensor extension: BYTES in JSON are strings, so the files are base64.
    payload = images_request_payload(IMAGES, "rest")
    assert payload.dtype == np.object_
    assert payload.shape == (len(IMAGES),)
    assert [base64.b64decode(item, validate=True) for item in payload] == IMAGES
    assert all(item.isascii() for item in payload)


# --- a fake V2 server: headers, retries ------------------------------------------------------------


@dataclass
class FakeServer:
    """A local HTTP server answering the V2 metadata and infer routes as MLServer does (the JSON shapes of
    MLServer 1.7.1's REST API, mlserver/rest/endpoints.py), with the statuses a test scripts; it keeps
    the headers and path of every request."""

    statuses: list[int] = field(default_factory=list)  # answered in turn; then 200
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0
    delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""


def _infer_answer(images: int) -> dict[str, Any]:
    probabilities = np.full((images, 6), 0.05, dtype=np.float32)
    probabilities[:, 3] = 0.75
    return {
        "model_name": "cassava",
        "outputs": [
            {"name": "class_index", "datatype": "INT64", "shape": [images], "data": [3] * images},
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": [images, 6],
                "data": probabilities.ravel().tolist(),
            },
        ],
    }


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    with running_fake_server() as server:
        yield server


@contextmanager
def running_fake_server() -> Iterator[FakeServer]:
    state = FakeServer()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            state.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            self._answer(200, {"name": "cassava", "parameters": {"max_images": 4}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            with state.lock:
                state.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                status = state.statuses.pop(0) if state.statuses else 200
                state.in_flight += 1
                state.most_in_flight = max(state.most_in_flight, state.in_flight)
            time.sleep(state.delay_s)
            with state.lock:
                state.in_flight -= 1
            if status != 200:
                self._answer(status, {"error": f"scripted {status}"})
                return
            images = [base64.b64decode(item) for item in body["inputs"][0]["data"]]
            if any(image.startswith(b"not") for image in images):
                self._answer(400, {"error": "an image is not a recognised image"})
                return
            self._answer(200, _infer_answer(body["inputs"][0]["shape"][0]))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


FAST_RETRY = Retry(attempts=4, first_delay_s=0.01, max_delay_s=0.02)


def test_headers_and_model_name_reach_the_server(fake_server: FakeServer) -> None:
    headers = {"Seldon-Model": "cassava-v2", "Authorization": "Bearer abc"}
    with CassavaClient(fake_server.url, model="other", headers=headers) as client:
        client.metadata()
        result = client.classify_images([b"jpeg"])
    assert result.codes == ["cmd"]
    assert isinstance(result, BatchResult)
    assert [path for path, _ in fake_server.seen] == ["/v2/models/other", "/v2/models/other/infer"]
    for _, seen in fake_server.seen:
        assert seen["seldon-model"] == "cassava-v2"
        assert seen["authorization"] == "Bearer abc"


def test_a_503_is_retried(fake_server: FakeServer) -> None:
    fake_server.statuses = [503, 503]
    retried: list[str] = []
    with CassavaClient(
        fake_server.url, retry=FAST_RETRY, on_retry=lambda err, _: retried.append(err.status)
    ) as client:
        result = client.classify_images([b"jpeg", b"jpeg"])
    assert len(result) == 2
    assert retried == ["503", "503"]
    assert len(fake_server.seen) == 3


@pytest.mark.parametrize("status", [400, 404, 413])
def test_a_4xx_is_never_retried(fake_server: FakeServer, status: int) -> None:
    fake_server.statuses = [status]
    with (
        CassavaClient(fake_server.url, retry=FAST_RETRY) as client,
        pytest.raises(InferenceRequestError) as err,
    ):
        client.classify_images([b"jpeg"])
    assert err.value.status == str(status)
    assert not err.value.retryable
    assert len(fake_server.seen) == 1


def test_retries_give_up_after_the_last_attempt(fake_server: FakeServer) -> None:
    fake_server.statuses = [503] * 10
    with CassavaClient(fake_server.url, retry=FAST_RETRY) as client, pytest.raises(InferenceRequestError):
        client.classify_images([b"jpeg"])
    assert len(fake_server.seen) == FAST_RETRY.attempts


def test_an_unreachable_server_is_retried_then_named() -> None:
    from cassava.server.process import free_port

    retried: list[float] = []
    with (
        CassavaClient(
            f"http://127.0.0.1:{free_port()}",
            retry=FAST_RETRY,
            on_retry=lambda _, delay: retried.append(delay),
        ) as client,
        pytest.raises(ServerUnreachableError),
    ):
        client.classify_images([b"jpeg"])
    assert len(retried) == FAST_RETRY.attempts - 1
    assert all(0 <= d <= FAST_RETRY.max_delay_s for d in retried)
