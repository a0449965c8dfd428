"""MLServer's server class with cassava's reliability fixes; started by `cassava.launcher`.

What it changes, and why, is listed in `cassava.launcher`'s docstring and in docs/reliability.md. This
module imports MLServer (pandas, FastAPI, gRPC: ~6 s of CPU), so the launcher imports it only after its
cheap preflight has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import grpc
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from mlserver import MLServer
from mlserver.errors import MLServerError
from mlserver.grpc import utils as grpc_utils
from mlserver.handlers import DataPlane
from mlserver.rest.app import APIRoute
from mlserver.rest.responses import ServerSentEvent
from mlserver.settings import ModelSettings, Settings
from mlserver.types import InferenceRequest
from mlserver.utils import insert_headers
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from cassava.contract import GRPC_MAX_MESSAGE_LENGTH
from cassava.runtime import CassavaRuntime
from cassava.settings import CassavaSettings

logger = logging.getLogger("cassava.serving")

EXIT_SIGNALLED = 0  # stopped by SIGTERM/SIGINT/SIGQUIT after serving
EXIT_FAILED = 1  # the server stopped on its own: a model failed to load, a server could not start

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: after closing the REST listener, how long connections already accepted may take to send their headers
SETTLE_SECONDS = 2.0

# MLServer maps only 400/404/422/500 to gRPC codes; anything else becomes UNKNOWN.
grpc_utils.STATUS_CODE_MAPPING.setdefault(503, grpc.StatusCode.UNAVAILABLE)


class NoWorkerReadyError(MLServerError):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__(
            "no inference worker is ready: one crashed and is being replaced; retry in a few seconds "
            "(the server reports not-ready until then)",
            status_code=503,
        )


# --- REST ---------------------------------------------------------------------------------------------


class RequestBodyLimit:
    """ASGI middleware: at most `max_bytes` of request body, counted before parsing and after gzip."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        encoding = headers.get("content-encoding", "identity").strip().lower() or "identity"
        if encoding not in ("identity", "gzip"):
            await _error(415, f"Content-Encoding {encoding!r} is not supported; send identity or gzip")(
                scope, receive, send
            )
            return
        declared = headers.get("content-length")
        if declared is not None and not declared.strip().isdigit():
            await _error(400, "the Content-Length header is not a number")(scope, receive, send)
            return
        if declared is not None and int(declared) > self.max_bytes:
            # Refused before reading a byte of it.
            await self._too_large(f"{int(declared):,} bytes")(scope, receive, send)
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > self.max_bytes:
                await self._too_large(f"over {self.max_bytes:,} bytes")(scope, receive, send)
                return
        if encoding == "gzip":
            try:
                body = bytearray(_gunzip(bytes(body), self.max_bytes))
            except _BodyTooLargeError:
                await self._too_large(f"over {self.max_bytes:,} bytes once decompressed")(
                    scope, receive, send
                )
                return
            except (zlib.error, _MalformedGzipError) as err:
                await _error(400, f"the body is not valid gzip data ({err})")(scope, receive, send)
                return
            # MLServer's Request decompresses gzip bodies itself, without a bound: hand it plain bytes.
            mutable = MutableHeaders(scope=scope)
            del mutable["content-encoding"]
            mutable["content-length"] = str(len(body))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self, size: str) -> Response:
        return _error(
            413,
            f"the request body is {size}; this server accepts at most {self.max_bytes:,} bytes per request "
            "(settings.json grpc_max_message_length, which bounds REST bodies and gRPC messages alike). "
            "Send fewer images per request, or JPEG files instead of a float tensor",
        )


class _BodyTooLargeError(Exception):
    pass


class _MalformedGzipError(Exception):
    pass


def _gunzip(data: bytes, limit: int) -> bytes:
    """gzip.decompress, but stopping one byte past `limit` instead of filling the memory."""
    out = bytearray()
    while data:
        member = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        out += member.decompress(data, limit + 1 - len(out))
        if len(out) > limit or member.unconsumed_tail:
            raise _BodyTooLargeError
        if not member.eof:
            raise _MalformedGzipError("truncated")
        data = member.unused_data  # gzip allows several members back to back
    return bytes(out)


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def describe_validation_errors(errors: list[Any]) -> str:
    """FastAPI's validation errors as one line: where and what, never the offending value itself."""
    parts = []
    for err in errors[:5]:
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "")
            parts.append(f"the body is not valid JSON ({reason})" if reason else "the body is not valid JSON")
            continue
        where = ".".join(str(p)[:40] for p in err.get("loc", ())[1:]) or "the body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    message = "; ".join(parts) or "the request does not match the Open Inference Protocol"
    return message if len(message) <= 600 else message[:597] + "..."


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return _error(400, f"invalid request: {describe_validation_errors(list(exc.errors()))}")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    response = _error(exc.status_code, str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def _stream_endpoint(data_plane: Any) -> Callable[..., Awaitable[StreamingResponse]]:
    async def infer_stream(
        raw_request: Request,
        payload: InferenceRequest,
        model_name: str,
        model_version: str | None = None,
    ) -> StreamingResponse:
        insert_headers(payload, dict(raw_request.headers))

        async def one() -> AsyncIterator[InferenceRequest]:
            yield payload

        # The whole (for cassava: one-event) answer exists before the 200 is sent, so a rejected request
        # gets its 4xx. Consumed in this task: MLServer's stream sets context variables it resets itself.
        events = [
            ServerSentEvent(response).encode()
            async for response in data_plane.infer_stream(one(), model_name, model_version)
        ]
        return StreamingResponse(iter(events), media_type="text/event-stream")

    return infer_stream


def harden_rest_app(app: FastAPI, data_plane: Any, max_body_bytes: int) -> None:
    """Apply the REST changes listed in the module docstring to MLServer's app, before it starts."""
    app.debug = False
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    # Innermost of the user middleware: MLServer's Prometheus middleware still counts the 413s.
    app.user_middleware.append(Middleware(RequestBodyLimit, max_bytes=max_body_bytes))
    for i, route in enumerate(app.router.routes):
        if isinstance(route, APIRoute) and route.path.endswith("_stream"):
            app.router.routes[i] = APIRoute(
                route.path, _stream_endpoint(data_plane), methods=sorted(route.methods or {"POST"})
            )


# --- the server -------------------------------------------------------------------------------------------


class _ServingDataPlane:
    """MLServer's DataPlane, whose readiness is also false while draining, while no worker is up, and
    while no model is loaded: MLServer's `all(ready for each model)` is true for none at all, which a
    server whose only model just failed to load reports until it exits (measured: docs/reliability.md).

    A wrapper, not a subclass: a second DataPlane would register its Prometheus metrics twice.
    """

    def __init__(self, inner: DataPlane, registry: Any, serving: Callable[[], bool]) -> None:
        self._inner = inner
        self._registry = registry
        self._serving = serving

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def ready(self) -> bool:
        if not self._serving():
            return False
        models = await self._registry.get_models()
        return bool(models) and all(model.ready for model in models)

    async def model_ready(self, name: str, version: str | None = None) -> bool:
        return bool(await self._inner.model_ready(name, version)) and self._serving()


class CassavaMLServer(MLServer):  # type: ignore[misc]
    _data_plane: Any  # MLServer's DataPlane, then the wrapper around it

    def __init__(self, settings: Settings, *, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        self.exit_code = EXIT_FAILED
        self._signalled = False
        self._draining = False
        self._shutdown: asyncio.Future[None] | None = None
        self._ready_workers: int | None = None  # None: no parallel workers
        if settings.grpc_max_message_length is None:
            settings.grpc_max_message_length = GRPC_MAX_MESSAGE_LENGTH
        super().__init__(settings)
        if self._inference_pool_registry is not None:
            pool = self._inference_pool_registry._default_pool
            self._watch_workers(pool._dispatcher)
            # MLServer calls these with every worker that stopped, crashed or was closed.
            pool._on_worker_stop.append(_release_queues)

    def serving(self) -> bool:
        return not self._draining and self._ready_workers != 0

    def _create_servers(self) -> None:
        self._data_plane = _ServingDataPlane(self._data_plane, self._model_registry, self.serving)
        super()._create_servers()
        harden_rest_app(self._rest_server._app, self._data_plane, self._settings.grpc_max_message_length)

    def _watch_workers(self, dispatcher: Any) -> None:
        """Count the workers in the dispatcher's rotation, and answer 503 when there is none.

        The dispatcher rebuilds its round-robin (`_reset_round_robin`) when a worker dies and when its
        replacement is ready; with an empty rotation `next()` raises StopIteration, which surfaces as a
        500 "coroutine raised StopIteration". MLServer 1.7.1 has no hook for either, so both methods are
        wrapped on this one dispatcher instance.
        """
        reset, get_worker = dispatcher._reset_round_robin, dispatcher._get_worker

        def counted_reset() -> Iterator[int]:
            rotation = reset()
            self._ready_workers = len(dispatcher._workers)
            return rotation  # type: ignore[no-any-return]

        def worker_or_503() -> Any:
            try:
                return get_worker()
            except StopIteration:
                raise NoWorkerReadyError() from None

        dispatcher._reset_round_robin = counted_reset
        dispatcher._get_worker = worker_or_503
        self._ready_workers = len(dispatcher._workers)

    async def start(self, models_settings: list[ModelSettings]) -> None:
        # MLServer.start returns once every server has stopped: after a signal, or after it stopped
        # itself because a model failed to load.
        await super().start(models_settings)
        if self._shutdown is not None:
            await self._shutdown
        self.exit_code = EXIT_SIGNALLED if self._signalled else EXIT_FAILED

    async def stop(self, sig: int | None = None) -> None:
        if self._shutdown is None:
            # The first call says why: a signal, or MLServer stopping itself after a failed load. Later
            # calls change nothing (uvicorn re-raises the signal it was stopped with, which calls again).
            self._signalled = sig is not None
            self._shutdown = asyncio.ensure_future(self._stop_in_order(sig))
        await asyncio.shield(self._shutdown)

    async def _stop_in_order(self, sig: int | None) -> None:
        started = time.monotonic()
        self._draining = True
        why = signal.Signals(sig).name if sig else "the server could not start"
        logger.info(
            "shutting down (%s): refusing new connections, finishing in-flight requests for up to %.0f s",
            why,
            self.grace_seconds,
        )
        await asyncio.gather(_logged(self._drain_grpc(), "gRPC"), _logged(self._drain_rest(sig), "REST"))
        if self._inference_pool_registry is not None:
            await _logged(self._inference_pool_registry.close(), "inference workers")
        if self._kafka_server is not None:
            await _logged(self._kafka_server.stop(), "Kafka")
        if self._metrics_server is not None:
            await _logged(self._metrics_server.stop(sig), "metrics")
            # Its stop() deletes the metric files first and skips the exit when that fails.
            with contextlib.suppress(AttributeError):
                self._metrics_server._server.should_exit = True
        logger.info("shutdown complete in %.1f s", time.monotonic() - started)

    async def _drain_grpc(self) -> None:
        server = getattr(self._grpc_server, "_server", None)
        if server is not None:
            # Refuses new calls at once; in-flight calls get the grace period (MLServer hard-codes 5 s).
            await server.stop(grace=self.grace_seconds)

    async def _drain_rest(self, sig: int | None) -> None:
        server = getattr(self._rest_server, "_server", None)
        if server is not None:
            # Refuse new connections first. uvicorn's own shutdown then closes every connection that has
            # not yet delivered its request headers (no request cycle): a client that connected just
            # before SIGTERM would see "disconnected without a response". Let those arrive (briefly).
            for listener in server.servers:
                listener.close()
            settle = time.monotonic() + min(SETTLE_SECONDS, self.grace_seconds)
            while time.monotonic() < settle and any(
                getattr(connection, "cycle", True) is None for connection in server.server_state.connections
            ):
                await asyncio.sleep(0.02)
        await self._rest_server.stop(sig)  # uvicorn: close idle connections, wait for the others
        if server is None:
            return
        deadline = time.monotonic() + self.grace_seconds
        while time.monotonic() < deadline and (
            any(s.is_serving() for s in server.servers)
            or server.server_state.connections
            or server.server_state.tasks
        ):
            await asyncio.sleep(0.05)
        if server.server_state.tasks:
            logger.warning(
                "%d REST requests still running after %.0f s; closing them",
                len(server.server_state.tasks),
                self.grace_seconds,
            )
            server.force_exit = True


async def _release_queues(worker: Any) -> None:
    """Let the process exit although a dead worker's queues still hold requests.

    Requests dispatched to a worker between its death and MLServer noticing it stay in its queue; once
    the pipe is full, the queue's feeder thread blocks on it for good, and at exit multiprocessing joins
    that thread: the server process never exits (measured: a SIGKILLed worker under load, then SIGTERM,
    and the process hangs until it is killed). `cancel_join_thread` is multiprocessing's own remedy for
    a queue whose reader is gone.
    """
    for queue in (getattr(worker, "_requests", None), getattr(worker, "_model_updates", None)):
        if queue is not None:
            queue.cancel_join_thread()


async def _logged(step: Awaitable[Any], what: str) -> None:
    """One shutdown step; its failure is logged and the next step runs anyway."""
    try:
        await step
    except Exception:
        logger.exception("stopping %s failed; continuing the shutdown", what)


# --- preflight --------------------------------------------------------------------------------------------


def _is_cassava(model: ModelSettings) -> bool:
    # By name: ModelSettings.implementation re-imports (reloads) the module on every access, so the
    # class it returns is never `CassavaRuntime` itself.
    name = f"{CassavaRuntime.__module__}.{CassavaRuntime.__qualname__}"
    mro = getattr(model.implementation, "__mro__", ())
    return any(f"{c.__module__}.{c.__qualname__}" == name for c in mro)


async def preflight(models: list[ModelSettings]) -> list[str]:
    """Check every cassava model's directory as its runtime will resolve it. Raises CassavaError."""
    checked = []
    for model in models:
        if _is_cassava(model):
            model_dir = await model.implementation(model).preflight()
            checked.append(f"{model.name}: {model_dir}")
    return checked


def grace_seconds(models: list[ModelSettings]) -> float:
    graces = [
        CassavaSettings.from_extra(m.parameters.extra if m.parameters else None).shutdown_grace_seconds
        for m in models
        if _is_cassava(m)
    ]
    default: float = CassavaSettings.model_fields["shutdown_grace_seconds"].default
    return max(graces, default=default)
