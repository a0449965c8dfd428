"""Malformed requests over REST (raw JSON with httpx) and gRPC (tritonclient): each is refused with
HTTP 400 / INVALID_ARGUMENT and a message that names the problem, and the server goes on serving.

All of them run against the session's stand-in server (`max_images` 16, default pixel limit).
"""

from __future__ import annotations

import base64
import io
import json
import re
import struct
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc_calls
import httpx
import numpy as np
import pytest
from grpc_calls import Input
from PIL import Image
from support import CALL_TIMEOUT, MAX_BATCH_SIZE, error_of, grpc_call, post_json, post_raw

from cassava.client import CassavaClient
from cassava.contract import MODEL_NAME
from cassava.server.process import ServerProcess
from cassava.settings import CassavaSettings

pytestmark = pytest.mark.integration

INVALID_ARGUMENT = "StatusCode.INVALID_ARGUMENT"
DEFAULT_PIXEL_LIMIT = CassavaSettings().max_image_pixels


# --- request pieces --------------------------------------------------------------------------------


def small_png(seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A valid PNG signature and header claiming `width` x `height`, and no pixels: a few dozen bytes
    on disk that would need width * height * 3 bytes to decode (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def pixels(n: int = 1, value: float = 0.5, shape: tuple[int, ...] | None = None) -> np.ndarray:
    return np.full(shape or (n, 224, 224, 3), value, dtype=np.float32)


def non_finite_pixels() -> np.ndarray:
    batch = pixels()
    batch[0, 0, 0, :2] = [np.nan, np.inf]
    return batch


def overflowing_pixels() -> np.ndarray:
    """Valid JSON numbers that are out of FP32's range: they arrive as +-infinity."""
    batch = pixels().astype(np.float64)
    batch[0, 0, 0, :2] = [1e39, -1e39]
    return batch


def uint8_range_pixels() -> np.ndarray:
    """Pixels not divided by 255: the classic preprocessing slip."""
    return np.linspace(0, 255, 224 * 224 * 3, dtype=np.float32).reshape(1, 224, 224, 3)


def rest_tensor(
    name: str, datatype: str, array: np.ndarray, shape: list[int] | None = None
) -> dict[str, Any]:
    return {
        "name": name,
        "datatype": datatype,
        "shape": shape or list(array.shape),
        "data": array.ravel().tolist(),
    }


def rest_images(images: list[bytes], shape: list[int] | None = None) -> dict[str, Any]:
    data = [base64.b64encode(image).decode("ascii") for image in images]
    return {"name": "images", "datatype": "BYTES", "shape": shape or [len(images)], "data": data}


def grpc_images(images: list[bytes], shape: tuple[int, ...] | None = None) -> Input:
    return Input("images", "BYTES", np.array(images, dtype=np.object_), shape)


# --- the cases ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    expect: str  # a regular expression the refusal's message must match
    rest: Callable[[], dict[str, Any]] | None  # the JSON body
    grpc: Callable[[], list[Input]] | None


NOT_AN_IMAGE = b"%PDF-1.4 this is a document, not an image"

CASES = [
    Case("no-inputs", r"no inputs", lambda: {"inputs": []}, lambda: []),
    Case(
        "unknown-input-name",
        r"unknown input 'pixels'",
        lambda: {"inputs": [rest_tensor("pixels", "FP32", pixels())]},
        lambda: [Input("pixels", "FP32", pixels())],
    ),
    Case(
        "both-inputs-at-once",
        r"2 inputs.*exactly one",
        lambda: {"inputs": [rest_images([small_png()]), rest_tensor("payload", "FP32", pixels())]},
        lambda: [grpc_images([small_png()]), Input("payload", "FP32", pixels())],
    ),
    Case(
        "int32-payload",
        r"'payload' has datatype INT32; it must be FP32",
        lambda: {"inputs": [rest_tensor("payload", "INT32", pixels().astype(np.int32))]},
        lambda: [Input("payload", "INT32", pixels().astype(np.int32))],
    ),
    Case(
        "fp32-images",
        r"'images' has datatype FP32; it must be BYTES",
        lambda: {"inputs": [rest_tensor("images", "FP32", np.zeros(2, np.float32))]},
        lambda: [Input("images", "FP32", np.zeros(2, np.float32))],
    ),
    Case(
        "payload-of-wrong-rank",
        r"'payload' has shape \[1, 224, 224\]",
        lambda: {"inputs": [rest_tensor("payload", "FP32", pixels(shape=(1, 224, 224)))]},
        lambda: [Input("payload", "FP32", pixels(shape=(1, 224, 224)))],
    ),
    Case(
        "payload-of-wrong-size",
        r"'payload' has shape \[1, 112, 112, 3\]",
        lambda: {"inputs": [rest_tensor("payload", "FP32", pixels(shape=(1, 112, 112, 3)))]},
        lambda: [Input("payload", "FP32", pixels(shape=(1, 112, 112, 3)))],
    ),
    Case(
        "payload-shape-data-mismatch",
        r"'payload'.*\[2, 224, 224, 3\]",
        lambda: {"inputs": [rest_tensor("payload", "FP32", pixels(1), shape=[2, 224, 224, 3])]},
        lambda: [Input("payload", "FP32", pixels(1), declared_shape=(2, 224, 224, 3))],
    ),
    Case(
        "images-shape-data-mismatch",
        r"'images' has shape \[2\] but carries 1",
        lambda: {"inputs": [rest_images([small_png()], shape=[2])]},
        lambda: [grpc_images([small_png()], shape=(2,))],
    ),
    Case(
        # JSON has no NaN or Infinity; 1e39 is valid JSON and overflows FP32 to infinity. gRPC sends both.
        "nan-and-inf",
        r"'payload' contains \d+ NaN or infinite values",
        lambda: {"inputs": [rest_tensor("payload", "FP32", overflowing_pixels())]},
        lambda: [Input("payload", "FP32", non_finite_pixels())],
    ),
    Case(
        "values-outside-0-1",
        r"'payload' has values in \[0, 255\].*\[0, 1\]",
        lambda: {"inputs": [rest_tensor("payload", "FP32", uint8_range_pixels())]},
        lambda: [Input("payload", "FP32", uint8_range_pixels())],
    ),
    Case(
        "batch-over-max-batch-size",
        rf"holds {MAX_BATCH_SIZE + 1} images.*at most {MAX_BATCH_SIZE}",
        lambda: {"inputs": [rest_images([small_png(i) for i in range(MAX_BATCH_SIZE + 1)])]},
        lambda: [grpc_images([small_png(i) for i in range(MAX_BATCH_SIZE + 1)])],
    ),
    Case(
        "empty-bytes",
        r"image is empty",
        lambda: {"inputs": [rest_images([b""])]},
        lambda: [grpc_images([b""])],
    ),
    Case(
        "bytes-that-are-not-an-image",
        r"not a recognised image",
        lambda: {"inputs": [rest_images([NOT_AN_IMAGE])]},
        lambda: [grpc_images([NOT_AN_IMAGE])],
    ),
    Case(
        # Pillow's own decompression-bomb guard answers first at this size.
        "decompression-bomb-30000x30000",
        r"900000000 pixels|900,000,000 pixels",
        lambda: {"inputs": [rest_images([png_header(30000, 30000)])]},
        lambda: [grpc_images([png_header(30000, 30000)])],
    ),
    Case(
        "image-over-max-image-pixels",
        rf"8000x8000 = 64,000,000 pixels; the limit is {DEFAULT_PIXEL_LIMIT:,} pixels",
        lambda: {"inputs": [rest_images([png_header(8000, 8000)])]},
        lambda: [grpc_images([png_header(8000, 8000)])],
    ),
    Case(
        "string-that-is-not-base64",
        r"not valid base64",
        lambda: {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["not base64!"]}]},
        None,  # gRPC carries bytes, never JSON strings
    ),
]


# --- the tests ---------------------------------------------------------------------------------------


def assert_serving_over_rest(server: ServerProcess) -> None:
    client = CassavaClient(server.http_url, timeout=CALL_TIMEOUT)
    assert len(client.classify_images([small_png()]).indices) == 1
    response = httpx.get(f"{server.http_url}/v2/models/{MODEL_NAME}/ready", timeout=CALL_TIMEOUT)
    assert response.status_code == 200


def assert_serving_over_grpc(server: ServerProcess, pool: ProcessPoolExecutor) -> None:
    outcome = grpc_call(pool, grpc_calls.classify_images_outcome, server.grpc_target, [small_png()])
    assert outcome.ok, outcome.message
    assert grpc_call(pool, grpc_calls.is_ready, server.grpc_target)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES if c.rest is not None])
def test_rest_refuses(standin_server: ServerProcess, case: Case) -> None:
    assert case.rest is not None
    response = post_json(standin_server, case.rest())
    message = error_of(response)
    assert response.status_code == 400, f"{response.status_code}: {message[:500]}"
    assert re.search(case.expect, message), message
    assert_serving_over_rest(standin_server)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES if c.grpc is not None])
def test_grpc_refuses(standin_server: ServerProcess, grpc_pool: ProcessPoolExecutor, case: Case) -> None:
    assert case.grpc is not None
    outcome = grpc_call(grpc_pool, grpc_calls.infer_raw, standin_server.grpc_target, case.grpc())
    assert not outcome.ok, "the request was accepted"
    assert outcome.status == INVALID_ARGUMENT, f"{outcome.status}: {outcome.message[:500]}"
    assert re.search(case.expect, outcome.message), outcome.message
    assert_serving_over_grpc(standin_server, grpc_pool)


def test_rest_nan_literal_is_refused_as_invalid_json(standin_server: ServerProcess) -> None:
    """What Python's json (and so the seed's `requests.post(json=...)`) writes for a NaN pixel.

    `NaN` is not JSON: MLServer's parser refuses the body before cassava sees it, with FastAPI's 422
    and a JSON decode error, never a 500. (Over gRPC, NaN reaches the runtime: the case above.)"""
    body = {"inputs": [rest_tensor("payload", "FP32", non_finite_pixels())]}
    response = post_raw(standin_server, json.dumps(body).encode())
    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    assert "json" in response.text.lower()
    assert_serving_over_rest(standin_server)
