"""The REST side of cassava's server: MLServer's FastAPI app with bounded, strictly checked requests.

ASGI middleware (`ConnectionGuard`, `RequestBodyLimit`), exception handlers that answer the protocol's
`{"error": ...}` without echoing input, the stream and infer routes replaced by checked ones (the
infer route without FastAPI's per-request machinery), and MLServer's gzip middleware by one that makes
its compressor only when it compresses (`LazyGZipMiddleware`);
`harden_rest_app` applies them all before the server starts. Why each exists: docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from mlserver.errors import MLServerError
from mlserver.rest.app import APIRoute
from mlserver.rest.requests import Request as MLServerRequest
from mlserver.rest.responses import Response as MLServerResponse
from mlserver.rest.responses import ServerSentEvent
from mlserver.types import InferenceRequest
from mlserver.utils import insert_headers
from pydantic import ValidationError
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware, GZipResponder, IdentityResponder
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cassava.errors import InputError
from cassava.server.protocol import InvalidRequestError, check_raw_json
from cassava.settings import CassavaSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# --- REST ---------------------------------------------------------------------------------------------


class RequestBodyLimit:
    """ASGI middleware: at most `max_bytes` of request body, counted before parsing and after gzip;
    the whole body within `timeout` seconds (else 408: uvicorn has no body read timeout, and 16
    connections each holding a 60 MiB body one byte short kept 992 MB resident); and a JSON body with at
    most `max_json_keys` keys, counted before the JSON is parsed (a 57 MB `parameters` object with 4.5
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
        # Every JSON key needs a ':', so counting colons over-counts (colons inside strings) but never
        # misses a key; counted chunk by chunk as the body arrives (one count over 57 MB takes 150 ms
        # of the event loop), and in the decompressing thread for gzip.
        count_keys = self.max_json_keys is not None and _is_json(headers)
        reading = self._receive_body(receive, count_keys and encoding == "identity")
        try:
            # One deadline for the whole body, not one per chunk: asyncio.wait_for makes a task each
            # time, and a 1.5 MB body arrives in dozens of chunks.
            outcome = await (reading if self.timeout is None else asyncio.wait_for(reading, self.timeout))
        except asyncio.TimeoutError:  # not the builtin TimeoutError on Python 3.10 (`mlserver build`)
            await _error(
                408,
                f"the request body did not arrive within {self.timeout:g} s (body_timeout_seconds)",
                close=True,
            )(scope, receive, send)
            return
        if outcome is None:  # the client went away
            return
        if isinstance(outcome, Response):
            await outcome(scope, receive, send)
            return
        body, colons = outcome
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

    async def _receive_body(
        self, receive: Receive, count_colons: bool
    ) -> tuple[bytearray, int] | Response | None:
        """The whole body and its count of ':', the answer that refuses it, or None if the client left."""
        body = bytearray()
        colons = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            body += chunk
            more = bool(message.get("more_body", False))
            if len(body) > self.max_bytes:
                return self._too_large(f"over {self.max_bytes:,} bytes")
            if count_colons:
                colons += chunk.count(b":")
                if colons > (self.max_json_keys or 0):
                    return self._too_many_keys()
        return body, colons

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


class _LazyGZipResponder(GZipResponder):
    """Starlette's GZipResponder makes its level-9 compressor (about 256 KiB of zlib state) as soon as a
    request says it accepts gzip, though an answer under `minimum_size` (one image's: about 300 bytes)
    then goes out as it is: 0.05 ms per request in a loop, 0.34 ms at the median of one served image
    (10 alternating rounds against `Accept-Encoding: identity`). This one makes it on the first body it
    compresses. Starlette 1.4.0 does the same (its #3407), but MLServer 1.7.1's FastAPI keeps Starlette
    below 0.47. What is compressed, and how, is Starlette's own code."""

    def __init__(self, app: ASGIApp, minimum_size: int, compresslevel: int = 9) -> None:
        IdentityResponder.__init__(self, app, minimum_size)
        self.compresslevel = compresslevel
        self.gzip_file: gzip.GzipFile | None = None  # type: ignore[assignment]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await IdentityResponder.__call__(self, scope, receive, send)
        finally:
            if self.gzip_file is not None:
                self.gzip_file.close()
                self.gzip_buffer.close()

    def apply_compression(self, body: bytes, *, more_body: bool) -> bytes:
        if self.gzip_file is None:
            self.gzip_buffer = io.BytesIO()
            self.gzip_file = gzip.GzipFile(
                mode="wb", fileobj=self.gzip_buffer, compresslevel=self.compresslevel
            )
        return super().apply_compression(body, more_body=more_body)


class LazyGZipMiddleware(GZipMiddleware):
    """MLServer's GZipMiddleware (mlserver/rest/app.py adds it when `gzip_enabled`, the default), with
    `_LazyGZipResponder` for requests that accept gzip."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        responder: ASGIApp = (
            _LazyGZipResponder(self.app, self.minimum_size, compresslevel=self.compresslevel)
            if "gzip" in Headers(scope=scope).get("Accept-Encoding", "")
            else IdentityResponder(self.app, self.minimum_size)
        )
        await responder(scope, receive, send)


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


def _lean_infer_endpoint(infer: Callable[..., Awaitable[Any]]) -> Callable[[Request], Awaitable[Response]]:
    """MLServer's REST `infer` (`Endpoints.infer`, also behind `/generate`) without FastAPI's per-request
    machinery, after the strict checks of the raw JSON.

    FastAPI solved the endpoint's parameters by inspecting their annotations again on every request and
    re-validated the response it had just been handed: 0.2-0.4 ms of the ~1 ms the app spends on a
    request (benchmarks/performance_notes.md). The steps are FastAPI 0.115's (fastapi/routing.py
    `get_request_handler`, fastapi/dependencies/utils.py `request_body_to_args`), in its order and with
    its errors: the body as JSON when the Content-Type says JSON (MLServer's Request: orjson), else as
    bytes; the V2 request model, errors located under "body"; then the strict checks; MLServer's
    endpoint with a sub-response for the headers it sets; the answer dumped as MLServer's route dumps
    it (by alias, unset and None fields left out) and rendered by MLServer's Response (orjson).
    tests/server/test_hostile_app.py compares both routes request for request."""

    async def lean_infer(request: Request) -> Response:
        request = MLServerRequest(request.scope, request.receive)
        body = await request.body()
        raw: Any = None
        if body:
            raw = await _json_body(request) if _declares_json(request.headers.get("content-type")) else body
        if raw is None:
            raise RequestValidationError(
                [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
            )
        try:
            # As FastAPI's body field validates (from_attributes: its error messages say so).
            payload = InferenceRequest.model_validate(raw, from_attributes=True)
        except ValidationError as err:
            located = [{**error, "loc": ("body", *error["loc"])} for error in err.errors()]
            raise RequestValidationError(located, body=raw) from None
        try:
            check_raw_json(raw)
        except InputError as err:
            raise InvalidRequestError(str(err)) from None
        headers = Response()
        del headers.headers["content-length"]
        name, version = request.path_params["model_name"], request.path_params.get("model_version")
        answer = await infer(request, headers, payload, name, version)
        response: Response = MLServerResponse(
            answer.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True)
        )
        response.headers.raw.extend(headers.headers.raw)
        return response

    return lean_infer


def _declares_json(content_type: str | None) -> bool:
    """FastAPI's test: no Content-Type at all, or application/json or application/*+json."""
    if not content_type:
        return True
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


async def _json_body(request: MLServerRequest) -> Any:
    try:
        return await request.json()
    except json.JSONDecodeError as err:  # orjson's error is one
        error = {"type": "json_invalid", "loc": ("body", err.pos), "msg": "JSON decode error", "input": {}}
        raise RequestValidationError([{**error, "ctx": {"error": err.msg}}], body=err.doc) from None


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
    for i, middleware in enumerate(app.user_middleware):
        added: Any = middleware  # Starlette types `cls` as a factory; MLServer adds the class itself
        if added.cls is GZipMiddleware:
            app.user_middleware[i] = Middleware(LazyGZipMiddleware, *added.args, **added.kwargs)
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
            route = Route(
                path, _lean_infer_endpoint(route.endpoint), methods=sorted(route.methods or {"POST"})
            )
        routes.append(route)
    app.router.routes[:] = routes
