"""`cassava.server.rest.LazyGZipMiddleware` against the GZipMiddleware it replaces, on a bare Starlette
app: the same answers, and no compressor made for an answer that is not compressed.

Upstream behaviour encoded here is Starlette 0.46.2's (starlette/middleware/gzip.py, the release
MLServer 1.7.1's FastAPI pin allows): `GZipResponder.__init__` makes a `gzip.GzipFile` for every request
whose Accept-Encoding contains "gzip"; bodies under `minimum_size` (500) go out uncompressed.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from cassava.server.rest import LazyGZipMiddleware

SMALL = "a" * 300  # one image's answer is about this size
LARGE = "cassava " * 1000


async def small(request: Request) -> Response:
    return PlainTextResponse(SMALL)


async def large(request: Request) -> Response:
    return PlainTextResponse(LARGE)


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield LARGE.encode()

    return StreamingResponse(chunks(), media_type="text/plain")


async def events(request: Request) -> Response:
    return Response(LARGE, media_type="text/event-stream")


def app(middleware: type) -> Starlette:
    routes = [Route(f"/{f.__name__}", f) for f in (small, large, stream, events)]
    return Starlette(routes=routes, middleware=[Middleware(middleware)])


def get(application: Starlette, path: str, encoding: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
            return await client.get(path, headers={"Accept-Encoding": encoding})

    return asyncio.run(go())


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the gzip.GzipFile objects made (the compressor's state comes with each)."""
    count: list[int] = []
    real = gzip.GzipFile

    def counting(*args: Any, **kwargs: Any) -> gzip.GzipFile:
        count.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(gzip, "GzipFile", counting)
    return count


@pytest.mark.parametrize("path", ["/small", "/large", "/stream", "/events"])
@pytest.mark.parametrize("encoding", ["gzip", "gzip, deflate", "identity"])
def test_the_answers_are_starlettes(path: str, encoding: str) -> None:
    ours, theirs = get(app(LazyGZipMiddleware), path, encoding), get(app(GZipMiddleware), path, encoding)
    assert ours.status_code == theirs.status_code == 200
    assert ours.text == theirs.text  # decompressed by httpx where compressed
    # gzip's header holds the time of compression; every header but the length of that is equal.
    assert ours.headers.multi_items() == theirs.headers.multi_items()
    compressed = "gzip" in encoding and path in ("/large", "/stream")
    assert (ours.headers.get("content-encoding") == "gzip") is compressed


def test_no_compressor_is_made_for_an_answer_that_is_not_compressed(made: list[int]) -> None:
    get(app(GZipMiddleware), "/small", "gzip")
    assert len(made) == 1  # Starlette's: made, then thrown away
    made.clear()
    assert get(app(LazyGZipMiddleware), "/small", "gzip").headers.get("content-encoding") is None
    assert made == []
    assert get(app(LazyGZipMiddleware), "/large", "gzip").headers["content-encoding"] == "gzip"
    assert len(made) == 1
