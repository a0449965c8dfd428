"""Hostile clients against a real server (issue 9): what needs sockets, processes and signals. The
request-level checks (ids, parameters, headers, metric labels, strictness) run in-process in
tests/server/test_hostile_app.py; here they are sent over the wire while a second client polls
`/v2/health/live`, so a stalled event loop shows as a slow liveness answer.

Figures (worst liveness latency per attack) are printed and recorded for docs/reliability.md.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import grpc_calls
import httpx
import pytest
import reliability_support as rs
from support import CALL_TIMEOUT

from cassava.bench import generate_images
from cassava.server.process import ServerProcess, free_port

pytestmark = pytest.mark.integration

#: The worst /v2/health/live latency allowed while an attack runs. The target is 100 ms; this machine
#: has 2 cores shared with the attacking client (which builds 57 MB requests) and other test runs, so
#: the bound is looser. Before the fixes the same attacks stalled liveness for 4-13 s.
LIVENESS_BOUND = 0.5
#: the lame-duck period of the SIGTERM test's server, in seconds
LAME_DUCK = 2.0


def grpc_call(pool: ProcessPoolExecutor, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return pool.submit(func, *args, **kwargs).result(timeout=CALL_TIMEOUT)


#: The poller's program: GET the URL on one keep-alive connection every 10 ms until stdin closes, then
#: print the worst latency and the failures as JSON.
_POLLER = """
import http.client, json, sys, threading, time, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
connect = lambda: http.client.HTTPConnection(url.hostname, url.port, timeout=30)
conn, worst, failures, polls = connect(), 0.0, 0, 0
print("polling", flush=True)
while not stop.is_set():
    started = time.perf_counter()
    try:
        conn.request("GET", url.path)
        answer = conn.getresponse()
        answer.read()
        ok = answer.status == 200
    except (OSError, http.client.HTTPException):
        ok = False
        conn.close()
        conn = connect()
    worst = max(worst, time.perf_counter() - started)
    failures += not ok
    polls += 1
    time.sleep(0.01)
print(json.dumps({"worst": worst, "failures": failures, "polls": polls}), flush=True)
"""


class LivenessPoller:
    """Polls /v2/health/live every 10 ms and keeps the worst latency seen, from a process of its own: a
    thread of this one shared the GIL with the attacking client (httpx sending 50 MB), whose turns it
    counted as the server's."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.worst = 0.0
        self.failures = 0
        self.polls = 0
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> LivenessPoller:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _POLLER, self.url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        assert self._process.stdout.readline().strip() == "polling"
        time.sleep(0.1)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.1)
        assert self._process is not None
        out, _ = self._process.communicate(timeout=60)
        found = json.loads(out.strip().splitlines()[-1])
        self.worst, self.failures, self.polls = found["worst"], found["failures"], found["polls"]


@pytest.fixture(scope="module")
def jpeg_b64() -> str:
    (jpeg,) = generate_images(1, (64, 48), seed=9)
    return base64.b64encode(jpeg).decode()


def _images_json(jpeg_b64: str) -> str:
    return '{"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["' + jpeg_b64 + '"]}]'


def big_parameters_gzip(jpeg_b64: str, keys: int) -> bytes:
    """Issue 9 finding 2's request: an images request with `keys` entries in `parameters`, gzipped."""
    params = b",".join(b'"k%d":%d' % (i, i) for i in range(keys))
    return gzip.compress(
        _images_json(jpeg_b64).encode() + b', "parameters": {' + params + b"}}", compresslevel=1
    )


def _attacks(
    server: ServerProcess, jpeg_b64: str, grpc_pool: ProcessPoolExecutor
) -> dict[str, Callable[[], Any]]:
    url = rs.infer_url(server)
    json_headers = {"content-type": "application/json"}
    big = big_parameters_gzip(jpeg_b64, 3_000_000)

    def rest(**kwargs: Any) -> Callable[[], Any]:
        def send() -> Any:
            try:
                return httpx.post(url, timeout=120, **kwargs).status_code
            except httpx.HTTPError as err:
                return type(err).__name__

        return send

    def many_headers() -> Any:
        """Finding 3's request, written to the socket as is (an HTTP client library would spend seconds
        building 18,500 headers); the answer's status, or how the server ended the connection."""
        head = b"POST /v2/models/cassava/infer HTTP/1.1\r\nHost: x\r\n"
        head += b"".join(b"X-H%d: v\r\n" % i for i in range(18_500))
        content = (_images_json(jpeg_b64) + "}").encode()
        head += b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(content)
        with socket.create_connection(("127.0.0.1", server.http_port), timeout=60) as sock:
            try:
                sock.sendall(head + content)
                answer = sock.recv(4096)
            except OSError as err:
                return type(err).__name__
        return int(answer.split()[1]) if answer else "closed"

    return {
        "parameters: 3 M keys (50 MB), gzip": rest(
            content=big, headers={**json_headers, "content-encoding": "gzip"}
        ),
        "18,500 headers (125 KB)": many_headers,
        "8 MB request id": rest(
            content=_images_json(jpeg_b64) + ', "id": "' + "x" * 8_000_000 + '"}', headers=json_headers
        ),
        "gRPC: 1 M parameters": lambda: (
            grpc_call(
                grpc_pool,
                grpc_calls.infer_images,
                server.grpc_target,
                [base64.b64decode(jpeg_b64)],
                parameters={f"k{i}": i for i in range(1_000_000)},
            ).status
        ),
    }


def test_liveness_stays_fast_while_hostile_requests_are_refused(
    standin_server: ServerProcess, jpeg_b64: str, grpc_pool: ProcessPoolExecutor
) -> None:
    live = f"{standin_server.http_url}/v2/health/live"
    figures = {}
    for name, attack in _attacks(standin_server, jpeg_b64, grpc_pool).items():
        with LivenessPoller(live) as poller:
            started = time.perf_counter()
            outcome = attack()
            took = time.perf_counter() - started
        figures[name] = {
            "outcome": outcome,
            "seconds": round(took, 2),
            "worst_live_ms": round(poller.worst * 1000),
        }
        print(f"{name}: {outcome} after {took:.2f} s; worst liveness {poller.worst * 1000:.0f} ms")
        assert outcome not in (200, "StatusCode.OK"), name
        assert poller.failures == 0, name
        assert poller.polls >= 3, (name, poller.polls)  # it did poll
    rs.record_figures("hostile_liveness", figures)
    for name, figure in figures.items():
        assert figure["worst_live_ms"] < LIVENESS_BOUND * 1000, (name, figures)
    assert standin_server.is_ready()


def test_the_repository_api_is_off_over_rest_and_grpc(
    standin_server: ServerProcess, grpc_pool: ProcessPoolExecutor, jpeg_b64: str
) -> None:
    """Issue 9 finding 1: an anonymous unload gave 200 (REST) / OK (gRPC), then 404 for every inference
    while readiness stayed true. MLServer 1.7.1 routes: mlserver/rest/app.py, mlserver/grpc/server.py."""
    for path in ("unload", "load"):
        response = httpx.post(f"{standin_server.http_url}/v2/repository/models/cassava/{path}", timeout=30)
        assert response.status_code == 404
    found = grpc_call(grpc_pool, grpc_calls.repository_calls, standin_server.grpc_target)
    assert set(found.values()) == {"StatusCode.UNIMPLEMENTED"}, found
    assert standin_server.is_ready()
    body = _images_json(jpeg_b64) + "}"
    assert httpx.post(rs.infer_url(standin_server), content=body, timeout=60).status_code == 200


def test_grpc_requests_built_by_tritonclient_as_n_by_1_and_with_outputs(
    standin_server: ServerProcess, grpc_pool: ProcessPoolExecutor
) -> None:
    """tritonclient sends BYTES of whatever shape its array has; [N, 1] is what MLServer's codecs and
    KServe's examples build (issue 13 item 6). Requested outputs are honoured; unknown ones refused."""
    jpegs = generate_images(2, (64, 48), seed=10)
    flat = grpc_call(grpc_pool, grpc_calls.infer_images, standin_server.grpc_target, jpegs)
    column = grpc_call(grpc_pool, grpc_calls.infer_images, standin_server.grpc_target, jpegs, shape=[2, 1])
    assert flat.ok
    assert column.ok, column.message
    assert list(column.indices) == list(flat.indices)
    subset = grpc_call(
        grpc_pool, grpc_calls.infer_images, standin_server.grpc_target, jpegs, outputs=["probabilities"]
    )
    assert subset.outputs == ("probabilities",)
    unknown = grpc_call(
        grpc_pool, grpc_calls.infer_images, standin_server.grpc_target, jpegs, outputs=["logits"]
    )
    assert unknown.status == "StatusCode.INVALID_ARGUMENT"
    assert "unknown output 'logits'" in unknown.message
    bad_id = grpc_call(
        grpc_pool, grpc_calls.infer_images, standin_server.grpc_target, jpegs, request_id="a\nb"
    )
    assert bad_id.status == "StatusCode.INVALID_ARGUMENT"


def test_the_log_holds_no_query_string_or_long_id_and_one_line_per_rejection(
    standin_server: ServerProcess, jpeg_b64: str
) -> None:
    marker = "Q7e1c0ffee"
    url = rs.infer_url(standin_server) + f"?token={marker}"
    body = _images_json(jpeg_b64) + f', "id": "{marker}' + "y" * 10_000 + '"}'
    assert httpx.post(url, content=body, timeout=60).status_code == 400
    not_an_image = '{"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["aGVsbG8="]}]}'
    assert (
        httpx.post(
            rs.infer_url(standin_server) + "?n=" + marker, content=not_an_image, timeout=60
        ).status_code
        == 400
    )
    time.sleep(0.5)
    log = rs.log_text(standin_server)
    assert marker not in log
    assert max(len(line) for line in log.splitlines()) < 2000
    assert log.count("not a recognised image (5 bytes of text)") <= 1  # the worker's copy is gone


def _held_port() -> tuple[socket.socket, int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder, holder.getsockname()[1]


@pytest.mark.parametrize("which", ["REST", "gRPC"])
def test_a_port_in_use_exits_non_zero_within_5_s_naming_it(
    tmp_path: Path, demo_model_dir: Path, which: str
) -> None:
    """Before: REST failed to bind, gRPC bound anyway (SO_REUSEPORT) and the process hung for over 60 s,
    ignoring SIGTERM."""
    holder, taken = _held_port()
    with holder:
        ports = (taken, free_port(), free_port()) if which == "REST" else (free_port(), taken, free_port())
        process = ServerProcess.for_model(tmp_path, model_dir=demo_model_dir, ports=ports)
        started = time.monotonic()
        done = subprocess.run(
            process.command(), env=process.child_env(), capture_output=True, text=True, timeout=60
        )
        took = time.monotonic() - started
    print(f"{which} port in use: exit {done.returncode} after {took:.1f} s")
    assert done.returncode != 0
    assert f"port {taken}" in done.stderr
    assert took < 5


@pytest.fixture
def lame_duck_server(tmp_path: Path, demo_model_dir: Path) -> Iterator[ServerProcess]:
    process = ServerProcess.for_model(
        tmp_path,
        model_dir=demo_model_dir,
        extra={"lame_duck_seconds": LAME_DUCK, "shutdown_grace_seconds": 10},
    )
    process.start(timeout=rs.START_TIMEOUT)
    yield process
    process.stop()


def test_after_sigterm_a_lame_duck_answers_closes_keep_alive_then_stops(
    lame_duck_server: ServerProcess, jpeg_b64: str
) -> None:
    """8 keep-alive clients while SIGTERM arrives: before, 1-4 requests per run were reset at that
    moment. Now the server keeps answering for `lame_duck_seconds`, not ready, with `Connection: close`,
    then refuses new connections and drains: no request fails at SIGTERM or while the server drains."""
    server = lame_duck_server
    body = _images_json(jpeg_b64) + "}"
    url = rs.infer_url(server)
    outcomes: list[tuple[float, str, bool]] = []  # (sent at, outcome, connection: close)
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=30) as session:
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    response = session.post(url, content=body)
                    closing = response.headers.get("connection", "").lower() == "close"
                    outcomes.append((sent, str(response.status_code), closing))
                except httpx.ConnectError:
                    outcomes.append((sent, "refused", False))
                    time.sleep(0.05)
                except httpx.HTTPError as err:
                    outcomes.append((sent, type(err).__name__, False))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        assert server.process is not None
        signalled = time.monotonic()
        os.kill(server.pid, signal.SIGTERM)
        time.sleep(0.5)
        ready_during = httpx.get(f"{server.http_url}/v2/health/ready", timeout=5).status_code
        code = server.process.wait(30)
        exited = time.monotonic()
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    lame = LAME_DUCK
    during = [o for o in outcomes if signalled + 0.2 < o[0] < signalled + lame - 0.3]
    failed = [(round(o[0] - signalled, 2), o[1]) for o in outcomes if o[1] not in ("200", "refused")]
    # When a listening socket closes, the kernel resets connections still in its accept queue: a client
    # that keeps opening connections to a pod that already reports not-ready can see that (nothing was
    # read). In a cluster the endpoint is gone by then; here the clients never stop. Each client has at
    # most one connection in that queue (its next attempt is refused), so as many as 8 can be reset: 4
    # were on a clean-clone CI run. What matters is that they are resets, not errors or timeouts.
    at_close = [f for f in failed if lame - 0.3 <= f[0] <= lame + 1.0]
    rs.record_figures(
        "lame_duck",
        {
            "clients": len(threads),
            "requests": len(outcomes),
            "answered_during_lame_duck": len(during),
            "failed": failed,
            "exit_after_s": round(exited - signalled, 1),
        },
    )
    assert ready_during != 200
    assert during, "no request was sent during the lame-duck period"
    assert all(o[1] == "200" and o[2] for o in during), during
    assert failed == at_close, failed  # none at SIGTERM (the finding), none while draining
    assert all(kind in ("ReadError", "WriteError", "RemoteProtocolError") for _, kind in at_close), failed
    assert code == 0
    assert lame <= exited - signalled < 15


def test_invented_model_names_do_not_grow_the_metrics(standin_server: ServerProcess, jpeg_b64: str) -> None:
    """Issue 9 finding 5: MLServer 1.7.1 (mlserver/handlers/dataplane.py `_infer_contextmanager`)
    labels `model_infer_request_*` with the URL's name and version before looking the model up:
    10,000 invented names grew /metrics from 194 KB to 123 MB for good."""
    body = _images_json(jpeg_b64) + "}"
    before = len(httpx.get(standin_server.metrics_url, timeout=30).text)
    with httpx.Client(timeout=30) as client:
        for i in range(300):
            invented = f"{standin_server.http_url}/v2/models/invented-{i}/infer"
            assert client.post(invented, content=body).status_code == 404
            versioned = f"{standin_server.http_url}/v2/models/cassava/versions/v{i}/infer"
            assert client.post(versioned, content=body).status_code == 404
    scraped = httpx.get(standin_server.metrics_url, timeout=30).text
    print(
        f"/metrics: {before:,} bytes before 600 requests to invented names and versions, "
        f"{len(scraped):,} after"
    )
    assert "invented-" not in scraped
    assert 'version="v1' not in scraped
