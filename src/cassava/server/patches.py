"""Every change cassava makes to MLServer's internals, in one module, checked against the installed version.

MLServer 1.7.1 has no public hook for any of these; each one is written against that release's source and
commented with the upstream behaviour it fixes (measured in docs/reliability.md). `apply()` makes the
process-wide ones, once per process (the server process and every parallel worker import the runtime,
which calls it), and refuses to run on an MLServer release they were not checked against. The functions
below it are the per-server ones `cassava.server.app.CassavaMLServer` uses, and the only places that
reach into MLServer's private attributes.

Upgrading MLServer: re-read each upstream function named below in the new release, run the integration
tests (tests/integration/test_faults.py and test_limits.py exercise every patch), then add the release
to `TESTED_MLSERVER`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections.abc import Awaitable, Callable, Iterator
from importlib import metadata
from typing import Any

import grpc
from mlserver.errors import MLServerError
from mlserver.grpc import converters as grpc_converters
from mlserver.grpc import server as grpc_server_module
from mlserver.grpc import servicers as grpc_servicers
from mlserver.grpc import utils as grpc_utils
from uvicorn.protocols.http import h11_impl

from cassava.errors import InputError, safe_reason
from cassava.server.protocol import InvalidRequestError, RequestBounds, check_request_id

#: seconds a client is asked to wait (`Retry-After`) when the server is over its connection cap or has
#: no inference worker ready
RETRY_AFTER_SECONDS = 1

#: MLServer releases whose internals these patches were written and tested against.
TESTED_MLSERVER = frozenset({"1.7.1"})

_applied = False
_grpc_bounds: RequestBounds | None = None


class UntestedMLServerError(RuntimeError):
    """The installed MLServer is not a release the patches were checked against."""


class NoWorkerReadyError(MLServerError):  # type: ignore[misc]
    retry_after = RETRY_AFTER_SECONDS

    def __init__(self) -> None:
        super().__init__(
            "no inference worker is ready: one crashed and is being replaced; retry in a few seconds "
            "(the server reports not-ready until then)",
            status_code=503,
        )


def check_version(installed: str | None = None) -> str:
    """The installed MLServer version; raises `UntestedMLServerError` if the patches do not know it."""
    version = installed or metadata.version("mlserver")
    if version not in TESTED_MLSERVER:
        raise UntestedMLServerError(
            f"MLServer {version} is installed, but cassava's fixes to MLServer internals were checked "
            f"only against {', '.join(sorted(TESTED_MLSERVER))}; install mlserver=={max(TESTED_MLSERVER)} "
            "(the locked version), or review cassava/server/patches.py against the new release first"
        )
    return version


def apply() -> None:
    """Check the MLServer version and make the process-wide patches (idempotent)."""
    global _applied
    if _applied:
        return
    check_version()
    # mlserver/grpc/converters.py `inject_raw`: gRPC `raw_input_contents` are unpacked before any model
    # code runs, and contents that do not match the declared shapes raise `struct.error`, answered as
    # INTERNAL. They are the client's mistake: 400 / INVALID_ARGUMENT.
    grpc_converters.inject_raw = _reject_malformed_raw_contents(grpc_converters.inject_raw)
    # mlserver/grpc/utils.py `STATUS_CODE_MAPPING` maps only 400/404/422/500; our 503 (no worker ready)
    # would reach gRPC clients as UNKNOWN instead of the retryable UNAVAILABLE.
    grpc_utils.STATUS_CODE_MAPPING.setdefault(503, grpc.StatusCode.UNAVAILABLE)
    # uvicorn/protocols/http/h11_impl.py answers a request over `limit_concurrency` with a plain-text
    # 503 that gives no `Retry-After`: clients and proxies then retry at once, or not at all.
    h11_impl.service_unavailable = _service_unavailable  # type: ignore[attr-defined]
    _applied = True


async def _service_unavailable(scope: Any, receive: Any, send: Any) -> None:
    body = b'{"error":"the server is at its connection limit (max_connections); retry shortly"}'
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


# --- gRPC ---------------------------------------------------------------------------------------------


class _NoRepositoryServicer(grpc_servicers.InferenceServicer):  # type: ignore[misc]
    """mlserver/grpc/servicers.py `InferenceServicer` serves RepositoryModelLoad/Unload/Index to anyone:
    one anonymous call unloads the model. Here they answer UNIMPLEMENTED, as an absent method would."""

    async def _off(self, request: Any, context: Any) -> Any:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "the model repository API is off on this server (CASSAVA_REPOSITORY_API=true turns it on)",
        )

    RepositoryIndex = RepositoryModelLoad = RepositoryModelUnload = _off


def disable_grpc_repository_api() -> None:
    """mlserver/grpc/server.py `GRPCServer._create_server` registers MLServer's InferenceServicer and
    the separate `ModelRepositoryService` from its module globals when the server starts: swap them for
    a servicer without the repository methods and no repository service. Call before the server starts."""
    grpc_server_module.InferenceServicer = _NoRepositoryServicer
    grpc_server_module.add_ModelRepositoryServiceServicer_to_server = lambda servicer, server: None


def bound_grpc_requests(bounds: RequestBounds | None) -> None:
    """mlserver/grpc/converters.py `ModelInferRequestConverter.to_types` turns every `parameters` map
    entry into Python objects and a pydantic model before anything checks it: 1 million entries (13 MB,
    under the message limit) took 10.7 s of the event loop. The entries are counted on the wire bytes,
    before protobuf parses them (`_TooManyParameters`, see `bound_grpc_parsing`), and the id is checked
    before converting; the size of what is left is checked after, with REST's. Wrapped once per
    process; later calls only change the bounds (None: no checks)."""
    global _grpc_bounds
    _grpc_bounds = bounds
    converter = grpc_converters.ModelInferRequestConverter
    if getattr(converter.to_types, "_cassava_bounded", False):
        return
    to_types = converter.to_types.__func__

    def checked(cls: Any, pb_object: Any) -> Any:
        if isinstance(pb_object, _TooManyParameters):
            raise InvalidRequestError(pb_object.message)
        if _grpc_bounds is not None:
            _check_grpc_request(pb_object, _grpc_bounds)
        return to_types(cls, pb_object)

    checked._cassava_bounded = True  # type: ignore[attr-defined]
    converter.to_types = classmethod(checked)


def _check_grpc_request(pb_object: Any, bounds: RequestBounds) -> None:
    try:
        check_request_id(pb_object.id or None, bounds.max_id_chars)
    except InputError as err:
        raise InvalidRequestError(str(err)) from None
    # Parsed already (when `bound_grpc_parsing` is not in place): the map sizes are O(1) to read.
    maps = [("the request's", pb_object.parameters)]
    maps += [(f"input #{i}'s", inp.parameters) for i, inp in enumerate(pb_object.inputs)]
    maps += [(f"output #{i}'s", out.parameters) for i, out in enumerate(pb_object.outputs)]
    for where, entries in maps:
        if len(entries) > bounds.max_parameters:
            raise InvalidRequestError(
                f"{where} parameters hold {len(entries):,} entries; at most {bounds.max_parameters:,} are "
                "allowed"
            )


class _TooManyParameters:
    """Stands in for a ModelInferRequest refused before parsing: MLServer's servicer reads
    `raw_input_contents` and then hands it to the (patched) converter, which raises the 400."""

    raw_input_contents: tuple[()] = ()
    model_name = model_version = ""

    def __init__(self, message: str) -> None:
        self.message = message


# dataplane.proto (the OIP's gRPC spec): the field numbers of the maps counted before parsing.
_REQUEST_PARAMETERS, _REQUEST_INPUTS, _REQUEST_OUTPUTS = 4, 5, 6
_INPUT_PARAMETERS, _OUTPUT_PARAMETERS = 4, 2


def _fields(data: bytes | memoryview) -> Iterator[tuple[int, int, memoryview]]:
    """Top-level protobuf fields as (number, wire type, bytes of a length-delimited value)."""
    view = memoryview(data)
    pos, end = 0, len(view)

    def varint() -> int:
        nonlocal pos
        result = shift = 0
        while True:
            if pos >= end or shift > 63:
                raise ValueError("truncated varint")
            byte = view[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7

    while pos < end:
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            varint()
            yield number, wire, view[0:0]
        elif wire == 2:
            size = varint()
            yield number, wire, view[pos : pos + size]
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
            yield number, wire, view[0:0]
        else:
            raise ValueError(f"wire type {wire}")


def count_parameters(raw: bytes, limit: int) -> str | None:
    """Where a serialised ModelInferRequest has more than `limit` parameters entries (the request's,
    an input's or an output's), without parsing it; stops at entry `limit + 1`. None if within."""

    def over(fields: Iterator[tuple[int, int, memoryview]], number: int) -> bool:
        count = 0
        for field, _, _ in fields:
            count += field == number
            if count > limit:
                return True
        return False

    try:
        if over(_fields(raw), _REQUEST_PARAMETERS):
            return "the request's"
        for field, wire, value in _fields(raw):
            if wire == 2 and field == _REQUEST_INPUTS and over(_fields(value), _INPUT_PARAMETERS):
                return "an input's"
            if wire == 2 and field == _REQUEST_OUTPUTS and over(_fields(value), _OUTPUT_PARAMETERS):
                return "an output's"
    except ValueError:
        return None  # not valid protobuf: protobuf's own parser reports it
    return None


def bound_grpc_parsing(limit: Callable[[], int | None]) -> None:
    """mlserver/grpc/dataplane_pb2_grpc.py `add_GRPCInferenceServiceServicer_to_server` registers
    `ModelInferRequest.FromString` as ModelInfer's deserializer, which grpc.aio runs on the event loop:
    a 13 MB message of 1 million parameters entries stalled it for seconds before any code of ours ran.
    The handlers are re-registered with a deserializer that counts the entries on the wire first (a
    scan that stops at `limit() + 1` entries). `limit` is read per request. Call before the server
    starts (it swaps the function mlserver/grpc/server.py calls)."""
    from mlserver.grpc import dataplane_pb2 as pb
    from mlserver.grpc import dataplane_pb2_grpc

    register = dataplane_pb2_grpc.add_GRPCInferenceServiceServicer_to_server

    def deserialize(raw: bytes) -> Any:
        bound = limit()
        where = count_parameters(raw, bound) if bound is not None else None
        if where is not None:
            return _TooManyParameters(
                f"{where} parameters hold more than {bound:,} entries; at most {bound:,} are allowed"
            )
        return pb.ModelInferRequest.FromString(raw)

    class _Capture:
        """Receives what the generated function registers, to change one handler."""

        def __init__(self) -> None:
            self.handlers: dict[str, Any] = {}

        def add_generic_rpc_handlers(self, handlers: Any) -> None:
            pass

        def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
            self.service, self.handlers = service, dict(handlers)

    def bounded_register(servicer: Any, server: Any) -> None:
        capture = _Capture()
        register(servicer, capture)
        handlers = capture.handlers
        for method in ("ModelInfer", "ModelStreamInfer"):
            if method in handlers:
                handlers[method] = handlers[method]._replace(request_deserializer=deserialize)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(capture.service, handlers),))
        server.add_registered_method_handlers(capture.service, handlers)

    grpc_server_module.add_GRPCInferenceServiceServicer_to_server = bounded_register


def _reject_malformed_raw_contents(inject_raw: Callable[..., Any]) -> Callable[..., Any]:
    def checked(elems: list[Any], raw_contents: list[bytes]) -> Any:
        try:
            return inject_raw(elems, raw_contents)
        except (struct.error, IndexError, ValueError, KeyError) as err:
            described = ", ".join(f"{e.name!r} {e.datatype} {list(e.shape)}" for e in elems)
            raise InvalidRequestError(
                f"the request's raw_input_contents do not match its inputs ({described}): "
                f"{safe_reason(err)}; each input needs product(shape) values of its datatype"
            ) from None

    return checked


# --- per server: used by cassava.server.app.CassavaMLServer -------------------------------------------


def default_pool(server: Any) -> Any | None:
    """The parallel inference pool of an `mlserver.MLServer`, or None with `parallel_workers: 0`."""
    registry = server._inference_pool_registry
    return None if registry is None else registry._default_pool


def _has_exited(pid: int | None) -> bool:
    """Whether a child process has exited, WITHOUT reaping it.

    mlserver/parallel/registry.py notices a dead worker only through SIGCHLD and `os.waitpid(-1)`, and
    replaces it from there. `Process.is_alive()` reaps the child itself (waitpid on its PID), after which
    MLServer's waitpid finds nothing and the worker is never replaced (seen: a SIGKILLed worker under
    load, no replacement in 300 s). WNOWAIT leaves the exited child for MLServer to reap.
    """
    if pid is None:
        return True
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True  # already reaped: gone


def watch_workers(pool: Any, on_count: Callable[[int], None]) -> None:
    """Report the number of workers in the dispatcher's rotation, and answer 503 when there is none.

    mlserver/parallel/dispatcher.py: the dispatcher rebuilds its round-robin (`_reset_round_robin`) when
    a worker dies and when its replacement is ready; with an empty rotation `_get_worker`'s `next()`
    raises StopIteration, which surfaces as a 500 "coroutine raised StopIteration", and until the
    rebuild a dead worker stays in the rotation. Both methods are wrapped on this one dispatcher
    instance.
    """
    dispatcher = pool._dispatcher
    reset, get_worker = dispatcher._reset_round_robin, dispatcher._get_worker

    def counted_reset() -> Iterator[int]:
        rotation = reset()
        on_count(len(dispatcher._workers))
        return rotation  # type: ignore[no-any-return]

    def worker_or_503() -> Any:
        # Between a worker's death and MLServer noticing it (its `_on_worker_stop`, tens to hundreds of
        # ms later), the rotation still hands that worker requests, which then fail with 500: skip a
        # worker whose process is gone.
        for _ in range(max(1, len(dispatcher._workers))):
            try:
                worker, pid = get_worker()
            except (StopIteration, KeyError):
                break
            if not _has_exited(worker.pid):
                return worker, pid
        raise NoWorkerReadyError()

    dispatcher._reset_round_robin = counted_reset
    dispatcher._get_worker = worker_or_503
    on_count(len(dispatcher._workers))


def release_dead_worker_queues(pool: Any) -> None:
    """Let the process exit although a dead worker's queues still hold requests.

    mlserver/parallel/pool.py calls `_on_worker_stop` callbacks with every worker that stopped. Requests
    dispatched to a worker between its death and MLServer noticing it stay in its queue; once the pipe is
    full, the queue's feeder thread blocks on it for good, and at exit multiprocessing joins that thread:
    the server process never exits (measured: a SIGKILLed worker under load, then SIGTERM).
    `cancel_join_thread` is multiprocessing's own remedy for a queue whose reader is gone.
    """

    async def release(worker: Any) -> None:
        for queue in (getattr(worker, "_requests", None), getattr(worker, "_model_updates", None)):
            if queue is not None:
                queue.cancel_join_thread()

    pool._on_worker_stop.append(release)


def rest_app(server: Any) -> Any:
    """The FastAPI app of MLServer's REST server (mlserver/rest/server.py `RESTServer._app`)."""
    return server._rest_server._app


class GuardedH11Protocol(h11_impl.H11Protocol):
    """uvicorn's h11 protocol with a deadline for request headers.

    uvicorn 0.x has `timeout_keep_alive` (idle time between requests) but no timeout for reading a
    request's headers: a connection that sends half a request line stays open for ever (measured: 300 s,
    and 20,600 such connections exhausted the file descriptors). Here a connection that is waiting for
    headers (a new one, or a keep-alive one that started sending the next request) gets
    `header_timeout` seconds to complete them, then it is closed.
    """

    header_timeout = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._arm_header_timer()
        super().data_received(data)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's headers arrived
            self._disarm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def tune_rest_server(
    server: Any,
    *,
    max_connections: int,
    keep_alive_seconds: int,
    header_timeout: float,
    max_header_bytes: int,
) -> None:
    """Set uvicorn's own knobs on MLServer's REST server, which passes only host, port, root path and
    access log to `uvicorn.Config` (mlserver/rest/server.py `RESTServer._get_config`; its only other
    route, `_custom_rest_server_settings`, logs "out of support" on every start):
    `limit_concurrency` (503 over the cap), `timeout_keep_alive`, `h11_max_incomplete_event_size`
    (bytes of headers still arriving), and the protocol class with the header deadline above."""
    rest = server._rest_server
    get_config = rest._get_config
    protocol = type("GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout": header_timeout})

    def tuned() -> Any:
        config = get_config()
        config.limit_concurrency = max_connections
        config.timeout_keep_alive = keep_alive_seconds
        config.h11_max_incomplete_event_size = max_header_bytes
        config.http = protocol
        return config

    rest._get_config = tuned


def leave_signals_to_mlserver() -> None:
    """mlserver/rest/server.py `_NoSignalServer` overrides uvicorn's `install_signal_handlers`, which
    uvicorn 0.29+ no longer calls: its `Server.capture_signals` takes SIGINT/SIGTERM with
    `signal.signal` while it serves, so uvicorn alone saw SIGTERM, closed the REST listener at once and
    re-raised the signal only after its own shutdown. Then no lame-duck period was possible (REST
    refused connections while gRPC still served). Without it, the signal reaches MLServer's handler,
    i.e. `CassavaMLServer.stop`, which stops uvicorn itself when its turn comes."""
    from mlserver.rest import server as rest_server_module

    rest_server_module._NoSignalServer.capture_signals = lambda self: contextlib.nullcontext()


def uvicorn_server(server: Any) -> Any | None:
    """The running `uvicorn.Server` behind MLServer's REST server, once started."""
    return getattr(server._rest_server, "_server", None)


def no_start_once_stopping(server: Any, stopping: Callable[[], bool]) -> None:
    """Make MLServer's REST and gRPC `start()` return at once when the shutdown has already begun.

    mlserver/server.py `MLServer.start` (1.7.1) creates the servers' start tasks, then loads the models;
    when a load fails it calls `stop()` and awaits those tasks. With inference in the server process a
    load can fail before a task has run: a gRPC server stopped before it started then starts anyway and
    serves for ever (grpc.aio allows start after stop), so the process never exits."""
    for name in ("_rest_server", "_grpc_server"):
        part = getattr(server, name)
        start = part.start

        async def start_unless_stopping(start: Callable[[], Awaitable[Any]] = start) -> Any:
            if stopping():
                return None
            return await start()

        part.start = start_unless_stopping


def listeners(uvicorn: Any) -> list[Any]:
    """The sockets uvicorn listens on: none until its startup has bound them. With inference in the
    server process a model can fail to load (and the shutdown begin) before that."""
    return list(getattr(uvicorn, "servers", ()))


def grpc_aio_server(server: Any) -> Any | None:
    """The `grpc.aio.Server` behind MLServer's gRPC server, once started."""
    return getattr(server._grpc_server, "_server", None)


def connections_without_request(uvicorn: Any) -> int:
    """Connections uvicorn accepted that have not delivered their request headers yet (no `cycle`):
    uvicorn's own shutdown closes those at once, so a client that connected just before SIGTERM would
    see "disconnected without a response"."""
    return sum(getattr(c, "cycle", True) is None for c in uvicorn.server_state.connections)


def open_connections(uvicorn: Any) -> int:
    return len(uvicorn.server_state.connections)


def running_requests(uvicorn: Any) -> int:
    return len(uvicorn.server_state.tasks)


def stop_metrics_server(server: Any) -> None:
    """mlserver/metrics/server.py `MetricsServer.stop` deletes the metric files first and skips the
    uvicorn exit when that fails: make it exit anyway."""
    metrics_server = server._metrics_server
    inner = getattr(metrics_server, "_server", None) if metrics_server is not None else None
    if inner is not None:
        inner.should_exit = True
