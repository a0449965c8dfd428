"""The pieces of `cassava.serving` and `cassava.launcher` that need no server: the REST body limit, the
gzip bound, error wording, the log filter and the preflight. tests/integration/ runs them in a server."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

from cassava.errors import CassavaError, ModelLoadError, ModelNotFoundError
from cassava.launcher import quick_preflight
from cassava.logfilter import ClientErrorFilter
from cassava.server_config import write_model_folder
from cassava.serving import RequestBodyLimit, describe_validation_errors

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
        ({"content-encoding": "gzip"}, gzip.compress(b"{}")[:-6], 400, "truncated"),
        ({"content-encoding": "br"}, b"{}", 415, "Content-Encoding 'br' is not supported"),
        ({"content-length": "12abc"}, b"{}", 400, "Content-Length header is not a number"),
    ],
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


def test_client_errors_are_logged_as_one_info_line() -> None:
    class RejectedError(Exception):
        status_code = 400

    class BrokenError(Exception):
        status_code = 500

    records = []
    for exc in (RejectedError("image #2 is empty"), BrokenError("worker died")):
        try:
            raise exc
        except Exception:
            record = logging.getLogger("mlserver.parallel").makeRecord(
                "mlserver.parallel", logging.ERROR, __file__, 1, "An error occurred", (), sys.exc_info()
            )
        assert ClientErrorFilter().filter(record)
        records.append(record)
    rejected, broken = records
    assert (rejected.levelno, rejected.exc_info) == (logging.INFO, None)
    assert rejected.getMessage() == "rejected a request (status 400): image #2 is empty"
    assert broken.levelno == logging.ERROR
    assert broken.exc_info is not None


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
