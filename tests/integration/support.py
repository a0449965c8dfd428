"""Helpers for the integration tests (importable by name: `pythonpath` in pyproject.toml)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import httpx

from cassava.contract import MODEL_NAME
from cassava.server.process import ServerProcess

#: the stand-in server's `max_images`: the seed's batch, so its request sits exactly on the limit
MAX_BATCH_SIZE = 16
SEED_BATCH = 16
# Bounds every wait on a server; generous, as other test runs may share the machine. Not a timing test.
CALL_TIMEOUT = 120.0


def grpc_call(pool: ProcessPoolExecutor, func: Callable[..., Any], *args: Any) -> Any:
    return pool.submit(func, *args).result(timeout=CALL_TIMEOUT)


def infer_url(server: ServerProcess) -> str:
    return f"{server.http_url}/v2/models/{MODEL_NAME}/infer"


def post_json(server: ServerProcess, body: Any) -> httpx.Response:
    return httpx.post(infer_url(server), json=body, timeout=CALL_TIMEOUT)


def post_raw(server: ServerProcess, content: bytes) -> httpx.Response:
    headers = {"content-type": "application/json"}
    return httpx.post(infer_url(server), content=content, headers=headers, timeout=CALL_TIMEOUT)


def error_of(response: httpx.Response) -> str:
    """The error text of a refused REST request, whatever its shape (MLServer's or FastAPI's)."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    return str(body.get("error") or body.get("detail") or body) if isinstance(body, dict) else str(body)
