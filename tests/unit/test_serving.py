"""The pieces of `cassava.server.rest`, `.app`, `.patches` and `.launcher` that need no MLServer
process: the REST body limit and timeout, the gzip bound, error wording, the log filters, the
header deadline, worker selection and the preflight. tests/integration/ runs them in a server."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cassava.errors import CassavaError, ModelLoadError, ModelNotFoundError
from cassava.server.config import write_model_folder
from cassava.server.launcher import quick_preflight
from cassava.server.logfilter import MAX_LOGGED_PATH, AccessLogFilter, ClientErrorFilter
from cassava.server.rest import RequestBodyLimit, describe_validation_errors

LIMIT = 1000


async def _echo(scope: Any, receive: Any, send: Any) -> None:
    """The app behind the middleware: answers with the body it received and the headers it saw."""
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    payload = json.dumps({"size": len(body), "headers": headers}).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": payload})


def call(chunks: list[bytes], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """Send `chunks` as the request body through RequestBodyLimit(limit=LIMIT); return status and JSON."""
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v2/models/cassava/infer",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(RequestBodyLimit(_echo, max_bytes=LIMIT)(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body)


def test_a_body_at_the_limit_passes_and_one_byte_more_is_413() -> None:
    status, answer = call([b"x" * LIMIT], {"content-length": str(LIMIT)})
    assert (status, answer["size"]) == (200, LIMIT)
    status, answer = call([b"x" * (LIMIT + 1)], {"content-length": str(LIMIT + 1)})
    assert status == 413
    assert "1,001 bytes; this server accepts at most 1,000 bytes" in answer["error"]
    assert "grpc_max_message_length" in answer["error"]


def test_a_chunked_body_is_counted_as_it_arrives() -> None:
    status, answer = call([b"x" * 600, b"x" * 400], {})
    assert (status, answer["size"]) == (200, 1000)
    status, answer = call([b"x" * 600, b"x" * 401, b"never read"], {})
    assert status == 413
    assert "over 1,000 bytes" in answer["error"]


def test_gzip_is_decompressed_within_the_same_limit() -> None:
    status, answer = call([gzip.compress(b"y" * LIMIT)], {"content-encoding": "gzip"})
    assert (status, answer["size"]) == (200, LIMIT)
    # MLServer would decompress it again, without a bound: the header is gone and the length is true.
    assert "content-encoding" not in answer["headers"]
    assert answer["headers"]["content-length"] == str(LIMIT)
    two_members = gzip.compress(b"a" * 10) + gzip.compress(b"b" * 10)  # gzip allows several members
    status, answer = call([two_members], {"content-encoding": "gzip"})
    assert (status, answer["size"]) == (200, 20)


def test_a_gzip_bomb_is_413_without_inflating_it() -> None:
    bomb = gzip.compress(bytes(50_000_000))  # 50 MB of zeros in ~50 KB; the limit is 1 KB
    status, answer = call([bomb[i : i + 900] for i in range(0, 900, 900)], {"content-encoding": "gzip"})
    assert status in (400, 413)  # the first 900 bytes only: truncated gzip, or already over the limit
    status, answer = call([bomb[:LIMIT]], {"content-encoding": "gzip", "content-length": str(LIMIT)})
    assert status == 413
    assert "once decompressed" in answer["error"]


@pytest.mark.parametrize(
    ("headers", "body", "status", "words"),
    [
        ({"content-encoding": "gzip"}, b"not gzip at all", 400, "not valid gzip data"),
        # mtime=0: the same bytes at every collection (pytest-xdist's processes must collect alike).
        ({"content-encoding": "gzip"}, gzip.compress(b"{}", mtime=0)[:-6], 400, "truncated"),
        ({"content-encoding": "br"}, b"{}", 415, "Content-Encoding 'br' is not supported"),
        ({"content-length": "12abc"}, b"{}", 400, "Content-Length header is not a number"),
    ],
    ids=["not-gzip", "truncated-gzip", "brotli", "content-length-not-a-number"],
)
def test_malformed_bodies_are_4xx_with_a_message(
    headers: dict[str, str], body: bytes, status: int, words: str
) -> None:
    got, answer = call([body], headers)
    assert got == status
    assert words in answer["error"]


def test_validation_errors_say_where_without_echoing_the_value() -> None:
    errors = [
        {"type": "json_invalid", "loc": ("body", 0), "msg": "JSON decode error", "ctx": {"error": "EOF"}},
        {
            "type": "list_type",
            "loc": ("body", "inputs", 0, "shape"),
            "msg": "Input should be a valid list",
            "input": "SECRET-VALUE",
        },
    ]
    message = describe_validation_errors(errors)
    assert message == "the body is not valid JSON (EOF); inputs.0.shape: Input should be a valid list"
    assert "SECRET" not in message
    many = describe_validation_errors([errors[1]] * 8)
    assert many.endswith("and 3 more")


@pytest.mark.parametrize("logger_name", ["mlserver.parallel", "mlserver.grpc"])
def test_client_errors_are_logged_once_as_one_info_line(logger_name: str) -> None:
    """A rejection was logged twice: by the worker (`mlserver.parallel`) and by the server process (the
    access line, or `mlserver.grpc`). The worker's copy is dropped; the gRPC one is one INFO line."""

    class RejectedError(Exception):
        status_code = 400

    class BrokenError(Exception):
        status_code = 500

    records = []
    kept = []
    for exc in (RejectedError("image #2 is empty"), BrokenError("worker died")):
        try:
            raise exc
        except Exception:
            record = logging.getLogger(logger_name).makeRecord(
                logger_name, logging.ERROR, __file__, 1, "An error occurred", (), sys.exc_info()
            )
        kept.append(ClientErrorFilter().filter(record))
        records.append(record)
    rejected, broken = records
    assert kept == [logger_name != "mlserver.parallel", True]
    if logger_name == "mlserver.grpc":
        assert (rejected.levelno, rejected.exc_info) == (logging.INFO, None)
        assert rejected.getMessage() == "rejected a request (status 400): image #2 is empty"
    assert broken.levelno == logging.ERROR
    assert broken.exc_info is not None


def test_the_access_log_shows_no_query_string_and_a_bounded_path() -> None:
    """uvicorn's access line (uvicorn/protocols/http/h11_impl.py, 0.x: args = client, method, path with
    query string, HTTP version, status) logged `?token=...` and paths of any length."""
    secret = "/v2/models/cassava/infer?token=SECRET"
    long_path = "/v2/" + "x" * 100_000 + "\r\n"
    lines = []
    for path in (secret, long_path, "/v2/\x1b[31mred"):
        record = logging.getLogger("uvicorn.access").makeRecord(
            "uvicorn.access",
            logging.INFO,
            __file__,
            1,
            '%s - "%s %s HTTP/%s" %d',
            ("1.2.3.4:5", "POST", path, "1.1", 400),
            None,
        )
        assert AccessLogFilter().filter(record)
        lines.append(record.getMessage())
    assert "SECRET" not in lines[0]
    assert "/v2/models/cassava/infer" in lines[0]
    assert len(lines[1]) < MAX_LOGGED_PATH + 60
    assert "\x1b" not in lines[2]


# --- body and header timeouts, connection cap -------------------------------------------------------------


def test_a_body_that_does_not_arrive_in_time_is_408() -> None:
    """uvicorn has no body read timeout: a body one byte short was held open for as long as the client
    liked (16 such connections kept 992 MB resident)."""
    sent: list[dict[str, Any]] = []
    reached_app = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal reached_app
        reached_app = True

    async def trickle() -> dict[str, Any]:
        await asyncio.sleep(0.05)
        return {"type": "http.request", "body": b"x", "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", b"900")]}
    started = time.perf_counter()
    asyncio.run(RequestBodyLimit(app, max_bytes=LIMIT, timeout=0.5)(scope, trickle, send))
    elapsed = time.perf_counter() - started
    assert not reached_app
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert 0.4 < elapsed < 2.0


def test_a_body_within_the_timeout_passes() -> None:
    status, seen = call([b"x" * 10, b"y" * 10], {})
    assert (status, seen["size"]) == (200, 20)


def test_json_keys_are_counted_before_parsing() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the body reached the app")

    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": b'{"a":1,"b":2,"c":3}', "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [(b"content-type", b"application/json")],
    }
    asyncio.run(RequestBodyLimit(app, max_bytes=LIMIT, max_json_keys=2)(scope, receive, send))
    assert sent[0]["status"] == 400


def _serve_with_header_timeout(timeout: float, steps: Any) -> Any:
    """Run uvicorn with cassava's protocol class on a free port around `steps(port)` (a coroutine)."""
    import uvicorn

    from cassava.server.patches import GuardedH11Protocol
    from cassava.server.process import free_port

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main() -> Any:
        port = free_port()
        protocol = type("P", (GuardedH11Protocol,), {"header_timeout": timeout})
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, http=protocol, log_level="error", lifespan="off")
        )
        task = asyncio.ensure_future(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            return await steps(port)
        finally:
            server.should_exit = True
            await task

    return asyncio.run(main())


async def _closed_after(reader: asyncio.StreamReader, limit: float) -> float | None:
    started = time.perf_counter()
    try:
        data = await asyncio.wait_for(reader.read(), limit)
    except TimeoutError:
        return None
    return time.perf_counter() - started if data == b"" else None


def test_a_connection_that_never_finishes_its_headers_is_closed() -> None:
    """uvicorn 0.x has no header read timeout (`timeout_keep_alive` only covers idle time between
    requests): a half-sent request line stayed open for 300 s and more."""

    async def steps(port: int) -> tuple[float | None, float | None, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        await writer.drain()
        slow = await _closed_after(reader, 3.0)
        # A keep-alive connection that starts its next request and stalls is closed too.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        first = await reader.readuntil(b"ok")
        writer.write(b"GET / HTTP/1.1\r\nHo")
        await writer.drain()
        second = await _closed_after(reader, 3.0)
        return slow, second, first

    slow, second, first = _serve_with_header_timeout(0.5, steps)
    assert slow is not None
    assert slow < 1.5
    assert first.startswith(b"HTTP/1.1 200")
    assert second is not None
    assert second < 1.5


def test_a_slow_but_complete_request_is_served() -> None:
    async def steps(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for part in (b"GET / HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.1)
        return await reader.readuntil(b"ok")

    assert _serve_with_header_timeout(1.0, steps).startswith(b"HTTP/1.1 200")


def test_over_the_connection_cap_is_503_with_retry_after() -> None:
    """uvicorn's own answer over `limit_concurrency` (uvicorn/protocols/http/flow_control.py
    `service_unavailable`) is plain text without Retry-After; `patches.apply` replaces it."""
    from uvicorn.protocols.http import h11_impl

    from cassava.server import patches

    patches.apply()
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(h11_impl.service_unavailable({}, None, send))  # type: ignore[arg-type]
    headers = dict(sent[0]["headers"])
    assert sent[0]["status"] == 503
    assert headers[b"retry-after"] == b"1"
    assert b"max_connections" in sent[1]["body"]


# --- worker loss, gRPC bounds ------------------------------------------------------------------------------


class _Worker:
    """A real child process, as MLServer's workers are: `pid` is all the dispatcher patch reads."""

    def __init__(self, alive: bool) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)" if alive else ""]
        )
        self.pid = self.process.pid
        if not alive:
            # Exited, but not reaped: a zombie until someone waits for it, like a worker just killed.
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)

    def kill(self) -> None:
        self.process.kill()
        os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)


def test_a_dead_worker_still_in_the_rotation_is_skipped() -> None:
    """mlserver/parallel/dispatcher.py (1.7.1) keeps a dead worker in its round-robin until the pool
    notices the death; requests sent to it in between failed with 500. The check must not reap the
    dead worker: mlserver/parallel/registry.py replaces a worker only when its own SIGCHLD handler's
    `os.waitpid(-1)` finds it."""
    from itertools import cycle

    from cassava.server import patches

    workers = {1: _Worker(alive=False), 2: _Worker(alive=True)}

    class Dispatcher:
        def __init__(self) -> None:
            self._workers = workers
            self._workers_round_robin = cycle(workers)

        def _reset_round_robin(self) -> Any:
            self._workers_round_robin = cycle(self._workers)
            return self._workers_round_robin

        def _get_worker(self) -> Any:
            pid = next(self._workers_round_robin)
            return self._workers[pid], pid

    class Pool:
        _dispatcher = Dispatcher()

    counts: list[int] = []
    patches.watch_workers(Pool, counts.append)
    picked = [Pool._dispatcher._get_worker()[1] for _ in range(6)]
    assert picked == [2] * 6
    workers[2].kill()
    with pytest.raises(patches.NoWorkerReadyError) as caught:
        Pool._dispatcher._get_worker()
    assert caught.value.status_code == 503
    assert caught.value.retry_after == patches.RETRY_AFTER_SECONDS
    # Both are still there for MLServer's SIGCHLD handler to reap, and so to replace.
    for worker in workers.values():
        assert os.waitpid(worker.pid, os.WNOHANG)[0] == worker.pid


def test_grpc_parameters_and_ids_are_bounded_before_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlserver/grpc/converters.py (1.7.1) `ModelInferRequestConverter.to_types` converts every
    `parameters` entry before anything checks them (1 million entries: 10.7 s)."""
    from mlserver.grpc import converters
    from mlserver.grpc import dataplane_pb2 as pb

    from cassava.server import patches
    from cassava.server.protocol import InvalidRequestError, RequestBounds

    monkeypatch.setattr(patches, "_grpc_bounds", None)  # restored after the test
    patches.bound_grpc_requests(RequestBounds(max_id_chars=16, max_parameters=4, max_parameters_bytes=1000))
    request = pb.ModelInferRequest(model_name="cassava", id="ok")
    for i in range(4):
        request.parameters[f"k{i}"].int64_param = i
    assert converters.ModelInferRequestConverter.to_types(request).id == "ok"
    request.parameters["k4"].int64_param = 4
    with pytest.raises(InvalidRequestError, match="5 entries; at most 4"):
        converters.ModelInferRequestConverter.to_types(request)
    with pytest.raises(InvalidRequestError, match="printable ASCII"):
        converters.ModelInferRequestConverter.to_types(pb.ModelInferRequest(id="a\nb"))
    with pytest.raises(InvalidRequestError, match="17 characters long"):
        converters.ModelInferRequestConverter.to_types(pb.ModelInferRequest(id="x" * 17))


# --- the launcher: a port already in use ------------------------------------------------------------------


def test_a_port_in_use_is_named() -> None:
    import socket

    from cassava.server.launcher import ports_in_use
    from cassava.server.process import free_port

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        free = free_port()
        message = ports_in_use("127.0.0.1", {"REST (http_port)": free, "gRPC (grpc_port)": taken})
    assert message is not None
    assert f"port {taken}" in message
    assert "gRPC" in message
    assert ports_in_use("127.0.0.1", {"REST (http_port)": free}) is None


# --- serving profiles -----------------------------------------------------------------------------------


def test_a_profile_is_written_into_the_model_folder(tmp_path: Path) -> None:
    """The default (latency) profile: inference in the server process, no adaptive batching, MLServer's
    debug logging off; throughput: the adaptive batcher. Options given explicitly beat the profile."""
    from cassava.server.config import PROFILES

    def written(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        server = json.loads((folder / "settings.json").read_text())
        model = json.loads((folder / "model-settings.json").read_text())
        return server, model

    server, model = written(write_model_folder(tmp_path / "default"))
    assert server["parallel_workers"] == PROFILES["latency"].parallel_workers == 0
    assert server["debug"] is False
    assert "max_batch_size" not in model
    assert "max_batch_time" not in model
    server, model = written(write_model_folder(tmp_path / "throughput", extra={"profile": "throughput"}))
    assert server["parallel_workers"] == PROFILES["throughput"].parallel_workers
    assert (model["max_batch_size"], model["max_batch_time"]) == (8, 0.01)
    assert model["parameters"]["extra"]["profile"] == "throughput"
    _, model = written(write_model_folder(tmp_path / "explicit", extra={"profile": "throughput"}, options={}))
    assert "max_batch_size" not in model
    with pytest.raises(ValueError, match="unknown serving profile 'fast'; choose one of latency, throughput"):
        write_model_folder(tmp_path / "bad", extra={"profile": "fast"})


def test_cassava_serve_writes_its_profile_and_keeps_an_inherited_one_out(
    tmp_path: Path, demo_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cassava serve --profile throughput` (ServerProcess.for_model with those settings) writes the
    profile into the folder; a CASSAVA_PROFILE in the caller's environment must not reach the child,
    where the launcher would apply it over the folder (and over a test's explicit workers)."""
    from cassava.server.process import ServerProcess
    from cassava.settings import CassavaSettings

    monkeypatch.setenv("CASSAVA_PROFILE", "latency")
    # As `cassava serve` builds them: the variables, then the flags on top.
    settings = CassavaSettings().with_flags(profile="throughput")
    server = ServerProcess.for_model(tmp_path, settings=settings, model_dir=demo_model_dir)
    model = json.loads((server.folder / "model-settings.json").read_text())
    assert (model["max_batch_size"], model["max_batch_time"]) == (8, 0.01)
    assert "CASSAVA_PROFILE" not in server.child_env()
    assert server.child_env()["CASSAVA_MODEL_DIR"] == str(demo_model_dir)


def test_cassava_profile_overrides_the_folders_workers_and_batching(
    tmp_path: Path, demo_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a Kubernetes overlay's CASSAVA_PROFILE does to an image built with the default folder. The
    files are read by MLServer's own loader (mlserver/cli/serve.py `load_settings`, MLServer 1.7.1)."""
    from mlserver.cli.serve import load_settings
    from pydantic import ValidationError

    from cassava.server.app import apply_profile

    folder = write_model_folder(
        tmp_path / "model", extra={"model_dir": str(demo_model_dir)}, server={"parallel_workers": 2}
    )
    monkeypatch.delenv("CASSAVA_PROFILE", raising=False)
    settings, models = asyncio.run(load_settings(str(folder)))
    assert apply_profile(settings, models) is None  # unset: the files stand
    assert settings.parallel_workers == 2
    monkeypatch.setenv("CASSAVA_PROFILE", "throughput")
    said = apply_profile(settings, models)
    assert (
        said
        == "profile throughput (CASSAVA_PROFILE): 0 parallel workers, adaptive batching 8 requests / 10 ms"
    )
    assert settings.parallel_workers == 0
    (model,) = models
    assert (model.max_batch_size, model.max_batch_time) == (8, 0.01)
    monkeypatch.setenv("CASSAVA_PROFILE", "latency")
    assert (
        apply_profile(settings, models)
        == "profile latency (CASSAVA_PROFILE): 0 parallel workers, no batching"
    )
    assert model.max_batch_size == 1  # MLServer's "no adaptive batching"
    monkeypatch.setenv("CASSAVA_PROFILE", "fast")
    with pytest.raises(ValidationError, match="profile"):
        apply_profile(settings, models)


# --- preflight ------------------------------------------------------------------------------------------


def test_preflight_accepts_a_model_folder(tmp_path: Path, demo_model_dir: Path) -> None:
    folder = write_model_folder(tmp_path / "model", extra={"model_dir": str(demo_model_dir)})
    assert quick_preflight(folder) == [f"cassava: {demo_model_dir}"]


def test_preflight_refuses_a_folder_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(CassavaError, match=r"no model-settings.json under .*; MLServer would serve no model"):
        quick_preflight(tmp_path / "nowhere")
    with pytest.raises(CassavaError, match=r"no model-settings.json under"):
        quick_preflight(tmp_path)


def test_preflight_names_a_missing_model_directory(tmp_path: Path) -> None:
    missing = tmp_path / "weights"
    folder = write_model_folder(tmp_path / "model", extra={"model_dir": str(missing)})
    with pytest.raises(ModelNotFoundError, match=rf"the model directory {missing} does not exist"):
        quick_preflight(folder)


def test_preflight_finds_a_truncated_saved_model(tmp_path: Path, demo_model_dir: Path) -> None:
    import shutil

    broken = tmp_path / "weights"
    shutil.copytree(demo_model_dir, broken)
    pb = broken / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[: pb.stat().st_size // 2])
    folder = write_model_folder(tmp_path / "model", extra={"model_dir": str(broken)})
    with pytest.raises(ModelLoadError, match=rf"{pb} .* is not a valid protobuf file .*truncated"):
        quick_preflight(folder)


def test_preflight_refuses_unreadable_model_settings(tmp_path: Path) -> None:
    (tmp_path / "model-settings.json").write_text("{ not json")
    with pytest.raises(CassavaError, match=r"model-settings.json is not readable JSON"):
        quick_preflight(tmp_path)


def test_grpc_parameters_are_counted_on_the_wire_before_parsing() -> None:
    """The 1-million-entry message stalled the event loop in protobuf's parser (grpc.aio deserializes
    on the loop); the count reads the wire format (protobuf's encoding guide: tag = field << 3 | wire
    type; dataplane.proto's field numbers) and stops at the limit + 1."""
    from mlserver.grpc import dataplane_pb2 as pb

    from cassava.server.patches import count_parameters

    request = pb.ModelInferRequest(model_name="cassava", id="x")
    request.inputs.add(name="images", datatype="BYTES", shape=[1])
    request.outputs.add(name="class_index")
    request.raw_input_contents.append(b"\x03\x00\x00\x00abc")
    for i in range(4):
        request.parameters[f"k{i}"].int64_param = i
        request.inputs[0].parameters[f"k{i}"].string_param = "v"
        request.outputs[0].parameters[f"k{i}"].bool_param = True
    raw = request.SerializeToString()
    assert count_parameters(raw, 4) is None
    assert count_parameters(raw, 3) == "the request's"
    request.parameters.clear()
    assert count_parameters(request.SerializeToString(), 3) == "an input's"
    request.inputs[0].parameters.clear()
    assert count_parameters(request.SerializeToString(), 3) == "an output's"
    assert count_parameters(b"\xff\xff", 3) is None  # not protobuf: left to protobuf's parser
    huge = pb.ModelInferRequest()
    for i in range(200_000):
        huge.parameters[f"k{i}"].int64_param = i
    assert count_parameters(huge.SerializeToString(), 64) == "the request's"


def test_a_server_part_does_not_start_once_the_shutdown_has_begun() -> None:
    """A model that fails to load before the REST and gRPC start tasks have run (inference in the server
    process) must not leave a gRPC server that starts after its stop and serves for ever: grpc.aio
    (grpcio as locked in requirements/) lets a stopped server start, then waits on it for ever. The
    shutdown itself runs in tests/integration/test_faults.py
    (`test_a_model_that_fails_to_load_exits_1_and_is_never_ready`), where this raced."""
    from cassava.server import patches

    started: list[str] = []

    class Part:
        def __init__(self, name: str) -> None:
            self.name = name

        async def start(self) -> str:
            started.append(self.name)
            return self.name

    class Server:
        _rest_server = Part("rest")
        _grpc_server = Part("grpc")

    stopping = [False]
    server = Server()
    patches.no_start_once_stopping(server, lambda: stopping[0])
    assert asyncio.run(server._rest_server.start()) == "rest"
    stopping[0] = True
    assert asyncio.run(server._grpc_server.start()) is None
    assert started == ["rest"]
