"""MLServer's server class with cassava's reliability fixes; started by `cassava.server.launcher`.

What it changes, and why, is listed in `cassava.server.launcher`'s docstring and in docs/reliability.md. This
module imports MLServer (pandas, FastAPI, gRPC: ~6 s of CPU), so the launcher imports it only after its
cheap preflight has passed.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from mlserver import MLServer
from mlserver.errors import MLServerError
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
from cassava.errors import InputError
from cassava.server import logfilter, patches
from cassava.server.config import RUNTIME_IMPLEMENTATION
from cassava.server.protocol import InvalidRequestError, RequestBounds, check_raw_json, check_request_bounds
from cassava.settings import CassavaSettings

logger = logging.getLogger("cassava.server.app")

EXIT_SIGNALLED = 0  # stopped by SIGTERM/SIGINT/SIGQUIT after serving
EXIT_FAILED = 1  # the server stopped on its own: a model failed to load, a server could not start

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: after closing the REST listener, how long connections already accepted may take to send their headers
SETTLE_SECONDS = 2.0

# --- REST ---------------------------------------------------------------------------------------------


class RequestBodyLimit:
    """ASGI middleware: at most `max_bytes` of request body, counted before parsing and after gzip;
    the whole body within `timeout` seconds (else 408: uvicorn has no body read timeout, and 16
    connections each holding a 60 MiB body one byte short kept 992 MB resident); and a JSON body with at
    most `max_json_keys` keys, counted before FastAPI parses it (a 57 MB `parameters` object with 4.5
    million keys blocked the event loop for 19 s in the parser and pydantic)."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        timeout: float | None = None,
        max_json_keys: int | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_json_keys = max_json_keys

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
        deadline = None if self.timeout is None else asyncio.get_running_loop().time() + self.timeout
        # Every JSON key needs a ':', so counting colons over-counts (colons inside strings) but never
        # misses a key; counted chunk by chunk as the body arrives (one count over 57 MB takes 150 ms
        # of the event loop), and in the decompressing thread for gzip.
        count_keys = self.max_json_keys is not None and _is_json(headers)
        colons = 0
        while more:
            try:
                message = await self._next(receive, deadline)
            except TimeoutError:
                await _error(
                    408,
                    f"the request body did not arrive within {self.timeout:g} s (body_timeout_seconds)",
                    close=True,
                )(scope, receive, send)
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            body += chunk
            more = bool(message.get("more_body", False))
            if len(body) > self.max_bytes:
                await self._too_large(f"over {self.max_bytes:,} bytes")(scope, receive, send)
                return
            if count_keys and encoding == "identity":
                colons += chunk.count(b":")
                if colons > (self.max_json_keys or 0):
                    await self._too_many_keys()(scope, receive, send)
                    return
        if encoding == "gzip":
            try:
                # In a thread: inflating tens of MB takes longer than the event loop may stall.
                plain, colons = await asyncio.to_thread(_gunzip_counting, bytes(body), self.max_bytes)
                body = bytearray(plain)
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
        if count_keys and colons > (self.max_json_keys or 0):
            await self._too_many_keys()(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _next(receive: Receive, deadline: float | None) -> Message:
        if deadline is None:
            return await receive()
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise TimeoutError
        return await asyncio.wait_for(receive(), remaining)

    def _too_many_keys(self) -> Response:
        return _error(
            400,
            f"the JSON body has more than {self.max_json_keys:,} keys (':' characters); requests need a "
            "few dozen (max_json_keys bounds `parameters` objects)",
        )

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


def _gunzip_counting(data: bytes, limit: int) -> tuple[bytes, int]:
    plain = _gunzip(data, limit)
    # bytes.count holds the GIL: counted a MiB at a time, so the event loop's thread gets its turns.
    step = 1 << 20
    return plain, sum(plain.count(b":", i, i + step) for i in range(0, len(plain), step))


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


def _is_json(headers: Headers) -> bool:
    content_type = headers.get("content-type", "")
    return not content_type or "json" in content_type


def _error(status: int, message: str, *, close: bool = False) -> Response:
    return JSONResponse(
        {"error": message}, status_code=status, headers={"connection": "close"} if close else None
    )


class ConnectionGuard:
    """ASGI middleware, outermost: the request's header count and size first of all, and `Connection:
    close` on every response while the server is a lame duck (after SIGTERM).

    h11 (uvicorn's HTTP parser here) bounds only headers that are still arriving
    (`h11_max_incomplete_event_size`, set by `patches.tune_rest_server`) and has no header count limit;
    uvicorn has neither. MLServer's endpoints then turn the headers into a dict through a mapping whose
    every lookup scans the list: 10,000 headers took 4.3 s of the event loop. 431 instead.
    """

    def __init__(
        self, app: ASGIApp, max_headers: int, max_header_bytes: int, closing: Callable[[], bool]
    ) -> None:
        self.app = app
        self.max_headers = max_headers
        self.max_header_bytes = max_header_bytes
        self.closing = closing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = scope["headers"]
        if len(raw) > self.max_headers:
            await _error(
                431, f"the request has {len(raw):,} headers; at most {self.max_headers:,} are allowed"
            )(scope, receive, send)
            return
        size = sum(len(k) + len(v) + 4 for k, v in raw)
        if size > self.max_header_bytes:
            await _error(
                431, f"the request headers are {size:,} bytes; at most {self.max_header_bytes:,} are allowed"
            )(scope, receive, send)
            return
        if not self.closing():
            await self.app(scope, receive, send)
            return

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["connection"] = "close"
            await send(message)

        await self.app(scope, receive, closing_send)


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


async def _mlserver_error(request: Request, exc: Exception) -> Response:
    """MLServer's own handler (mlserver/rest/errors.py), plus `Retry-After` on a retryable 503."""
    assert isinstance(exc, MLServerError)
    response = _error(exc.status_code, str(exc))
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        response.headers["retry-after"] = str(retry_after)
    return response


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
        try:
            check_raw_json(await raw_request.json())
        except InputError as err:
            raise InvalidRequestError(str(err)) from None
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


def _strict_infer_endpoint(infer: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """MLServer's REST `infer`, after the strict checks of the raw JSON (FastAPI has parsed it already,
    and MLServer's Request caches it, so this costs no second parse)."""

    async def strict_infer(
        raw_request: Request,
        raw_response: Response,
        payload: InferenceRequest,
        model_name: str,
        model_version: str | None = None,
    ) -> Any:
        try:
            check_raw_json(await raw_request.json())
        except InputError as err:
            raise InvalidRequestError(str(err)) from None
        return await infer(raw_request, raw_response, payload, model_name, model_version)

    return strict_infer


#: MLServer's HTML documentation pages: Swagger UI from a CDN (mlserver/rest/openapi.py)
_DOCS_PAGES = (
    "/v2/docs",
    "/v2/models/{model_name}/docs",
    "/v2/models/{model_name}/versions/{model_version}/docs",
)


def harden_rest_app(
    app: FastAPI,
    data_plane: Any,
    max_body_bytes: int,
    options: CassavaSettings | None = None,
    closing: Callable[[], bool] = lambda: False,
) -> None:
    """Apply the REST changes listed in the module docstring to MLServer's app, before it starts.
    `closing`: whether responses should carry `Connection: close` (the lame duck after SIGTERM)."""
    options = options or CassavaSettings()
    app.debug = False
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(MLServerError, _mlserver_error)
    # Innermost of the user middleware: MLServer's Prometheus middleware still counts the 413s.
    app.user_middleware.append(
        Middleware(
            RequestBodyLimit,
            max_bytes=max_body_bytes,
            timeout=options.body_timeout_seconds,
            max_json_keys=options.max_json_keys,
        )
    )
    app.user_middleware.insert(
        0,
        Middleware(
            ConnectionGuard,
            max_headers=options.max_request_headers,
            max_header_bytes=options.max_header_bytes,
            closing=closing,
        ),
    )
    routes = []
    for route in app.router.routes:
        path = getattr(route, "path", "")
        if path.startswith("/v2/repository/") and not options.repository_api:
            continue  # anyone could unload the model (the repository API is for Seldon Core 2's agent)
        if path in _DOCS_PAGES and not options.api_docs:
            continue
        if isinstance(route, APIRoute) and path.endswith("_stream"):
            route = APIRoute(path, _stream_endpoint(data_plane), methods=sorted(route.methods or {"POST"}))
        elif isinstance(route, APIRoute) and path.endswith(("/infer", "/generate")):
            route = APIRoute(
                path, _strict_infer_endpoint(route.endpoint), methods=sorted(route.methods or {"POST"})
            )
        routes.append(route)
    app.router.routes[:] = routes


# --- the server -------------------------------------------------------------------------------------------


class _ServingDataPlane:
    """MLServer's DataPlane, whose readiness is also false while draining, while no worker is up, and
    while no model is loaded: MLServer's `all(ready for each model)` is true for none at all, which a
    server whose only model just failed to load reports until it exits (measured: docs/reliability.md).

    A wrapper, not a subclass: a second DataPlane would register its Prometheus metrics twice.
    """

    def __init__(
        self,
        inner: DataPlane,
        registry: Any,
        serving: Callable[[], bool],
        bounds: RequestBounds | None = None,
    ) -> None:
        self._inner = inner
        self._registry = registry
        self._serving = serving
        self._bounds = bounds
        #: the models the server was started with: readiness needs every one of them loaded
        self.expected: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def ready(self) -> bool:
        if not self._serving():
            return False
        # MultiModelRegistry.get_models returns an `itertools.chain`, which is truthy even when empty:
        # MLServer's own check (and ours, before) was true with every model unloaded.
        models = list(await self._registry.get_models())
        loaded = {model.name for model in models if model.ready}
        return bool(models) and all(model.ready for model in models) and self.expected <= loaded

    async def _admit(self, payload: InferenceRequest, name: str, version: str | None) -> None:
        """Before MLServer's DataPlane: the request-wide bounds (the id ends up in response headers), and
        the model must exist. MLServer labels its per-model metrics with the name and version from the
        URL before it looks the model up, so every invented name became a Prometheus series for good
        (10,000 names: /metrics grew from 194 KB to 123 MB)."""
        if self._bounds is not None:
            try:
                check_request_bounds(payload, self._bounds)
            except InputError as err:
                raise InvalidRequestError(str(err)) from None
        await self._registry.get_model(name, version)  # ModelNotFound (404) for an unknown one

    async def infer(self, payload: InferenceRequest, name: str, version: str | None = None) -> Any:
        await self._admit(payload, name, version)
        return await self._inner.infer(payload, name, version)

    async def infer_stream(
        self, payloads: AsyncIterator[InferenceRequest], name: str, version: str | None = None
    ) -> AsyncIterator[Any]:
        async def admitted() -> AsyncIterator[InferenceRequest]:
            async for payload in payloads:
                await self._admit(payload, name, version)
                yield payload

        await self._registry.get_model(name, version)
        async for response in self._inner.infer_stream(admitted(), name, version):
            yield response

    async def model_ready(self, name: str, version: str | None = None) -> bool:
        return bool(await self._inner.model_ready(name, version)) and self._serving()


class CassavaMLServer(MLServer):  # type: ignore[misc]
    _data_plane: Any  # MLServer's DataPlane, then the wrapper around it

    def __init__(
        self, settings: Settings, *, grace_seconds: float, options: CassavaSettings | None = None
    ) -> None:
        self.grace_seconds = grace_seconds
        self.options = options or CassavaSettings()
        self.exit_code = EXIT_FAILED
        self._signalled = False
        self._draining = False
        self._lame_duck = False
        self._shutdown: asyncio.Future[None] | None = None
        self._ready_workers: int | None = None  # None: no parallel workers
        if settings.grpc_max_message_length is None:
            settings.grpc_max_message_length = GRPC_MAX_MESSAGE_LENGTH
        super().__init__(settings)
        patches.apply()
        patches.bound_grpc_requests(self._bounds())
        patches.bound_grpc_parsing(lambda: self.options.max_parameters)
        patches.leave_signals_to_mlserver()
        if not self.options.repository_api:
            patches.disable_grpc_repository_api()
        logfilter.install_access_log_filter()
        pool = patches.default_pool(self)
        if pool is not None:
            patches.watch_workers(pool, self._count_workers)
            patches.release_dead_worker_queues(pool)

    def _count_workers(self, ready: int) -> None:
        self._ready_workers = ready

    def _bounds(self) -> RequestBounds:
        return RequestBounds(
            max_id_chars=self.options.max_request_id_chars,
            max_parameters=self.options.max_parameters,
            max_parameters_bytes=self.options.max_parameters_bytes,
        )

    def serving(self) -> bool:
        return not self._draining and not self._lame_duck and self._ready_workers != 0

    def lame_duck(self) -> bool:
        return self._lame_duck

    def _create_servers(self) -> None:
        self._data_plane = _ServingDataPlane(
            self._data_plane, self._model_registry, self.serving, self._bounds()
        )
        super()._create_servers()
        harden_rest_app(
            patches.rest_app(self),
            self._data_plane,
            self._settings.grpc_max_message_length,
            self.options,
            closing=self.lame_duck,
        )
        patches.tune_rest_server(
            self,
            max_connections=self.options.max_connections,
            keep_alive_seconds=self.options.keep_alive_seconds,
            header_timeout=self.options.header_timeout_seconds,
            max_header_bytes=self.options.max_header_bytes,
        )

    async def start(self, models_settings: list[ModelSettings]) -> None:
        # MLServer.start returns once every server has stopped: after a signal, or after it stopped
        # itself because a model failed to load.
        self._data_plane.expected = {m.name for m in models_settings}
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
        why = signal.Signals(sig).name if sig else "the server could not start"
        # SIGTERM only: Ctrl-C (SIGINT) at a terminal means stop now.
        if sig == signal.SIGTERM and self.options.lame_duck_seconds > 0:
            # Platforms may send SIGTERM before they stop routing to the pod: keep answering (not ready,
            # and every REST response closes its connection, so keep-alive clients reconnect elsewhere).
            self._lame_duck = True
            logger.info(
                "%s: reporting not-ready, still answering for %.1f s (lame duck)",
                why,
                self.options.lame_duck_seconds,
            )
            await asyncio.sleep(self.options.lame_duck_seconds)
        self._draining = True
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
            patches.stop_metrics_server(self)
        logger.info("shutdown complete in %.1f s", time.monotonic() - started)

    async def _drain_grpc(self) -> None:
        server = patches.grpc_aio_server(self)
        if server is not None:
            # Refuses new calls at once; in-flight calls get the grace period (MLServer hard-codes 5 s).
            await server.stop(grace=self.grace_seconds)

    async def _drain_rest(self, sig: int | None) -> None:
        server = patches.uvicorn_server(self)
        if server is not None:
            # Refuse new connections first. uvicorn's own shutdown then closes every connection that has
            # not yet delivered its request headers (no request cycle): a client that connected just
            # before SIGTERM would see "disconnected without a response". Let those arrive (briefly).
            for listener in server.servers:
                listener.close()
            settle = time.monotonic() + min(SETTLE_SECONDS, self.grace_seconds)
            while time.monotonic() < settle and patches.connections_without_request(server):
                await asyncio.sleep(0.02)
        await self._rest_server.stop(sig)  # uvicorn: close idle connections, wait for the others
        if server is None:
            return
        deadline = time.monotonic() + self.grace_seconds
        while time.monotonic() < deadline and (
            any(s.is_serving() for s in server.servers)
            or patches.open_connections(server)
            or patches.running_requests(server)
        ):
            await asyncio.sleep(0.05)
        if patches.running_requests(server):
            logger.warning(
                "%d REST requests still running after %.0f s; closing them",
                patches.running_requests(server),
                self.grace_seconds,
            )
            server.force_exit = True


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
    mro = getattr(model.implementation, "__mro__", ())
    return any(f"{c.__module__}.{c.__qualname__}" == RUNTIME_IMPLEMENTATION for c in mro)


async def preflight(models: list[ModelSettings]) -> list[str]:
    """Check every cassava model's directory as its runtime will resolve it. Raises CassavaError."""
    checked = []
    for model in models:
        if _is_cassava(model):
            model_dir = await model.implementation(model).preflight()
            checked.append(f"{model.name}: {model_dir}")
    return checked


def server_options(models: list[ModelSettings]) -> CassavaSettings:
    """The server-wide defences (header, body, connection limits...): the first cassava model's settings
    (its `parameters.extra` and CASSAVA_* variables), else the defaults."""
    for model in models:
        if _is_cassava(model):
            return CassavaSettings.from_extra(model.parameters.extra if model.parameters else None)
    return CassavaSettings()


def grace_seconds(models: list[ModelSettings]) -> float:
    graces = [
        CassavaSettings.from_extra(m.parameters.extra if m.parameters else None).shutdown_grace_seconds
        for m in models
        if _is_cassava(m)
    ]
    default: float = CassavaSettings.model_fields["shutdown_grace_seconds"].default
    return max(graces, default=default)
