"""The hardened REST app in-process (issue 9): `CassavaMLServer` built as the launcher builds it, with
`parallel_workers: 0` and the stand-in loaded, called through httpx's ASGI transport. No sockets: what
needs them (timeouts, signals, liveness under attack, gRPC on the wire) is in
tests/integration/test_hostile.py.

Upstream behaviour each test encodes is MLServer 1.7.1's: mlserver/rest/app.py (the routes: repository
API, docs pages), mlserver/handlers/dataplane.py (`_infer_contextmanager` labels its metrics with the
URL's model name before looking the model up), mlserver/cloudevents.py (the request id copied into
`Ce-Id` / `Ce-Requestid` response headers), mlserver/rest/endpoints.py (`dict(raw_request.headers)`).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlserver.settings import ModelParameters, ModelSettings, Settings
from prometheus_client import REGISTRY

from cassava.bench import generate_images
from cassava.server import patches
from cassava.server.app import CassavaMLServer
from cassava.server.process import free_port
from cassava.server.runtime import CassavaRuntime
from cassava.settings import CassavaSettings

OPTIONS = CassavaSettings(
    max_request_id_chars=64,
    max_parameters=8,
    max_parameters_bytes=2000,
    max_json_keys=100,
    max_request_headers=40,
    max_header_bytes=8192,
)


class Served:
    def __init__(
        self, server: CassavaMLServer, loop: asyncio.AbstractEventLoop, model: ModelSettings
    ) -> None:
        self.server = server
        self.loop = loop
        self.model = model
        self.app = patches.rest_app(server)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://cassava") as client:
                return await client.request(method, path, **kwargs)

        return self.loop.run_until_complete(go())

    def infer(self, body: Any, **kwargs: Any) -> httpx.Response:
        return self.call("POST", "/v2/models/cassava/infer", json=body, **kwargs)


@pytest.fixture(scope="module")
def served(demo_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    settings = Settings(
        parallel_workers=0,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_endpoint=None,
        metrics_dir=str(tmp_path_factory.mktemp("metrics")),
    )
    model = ModelSettings(
        name="cassava",
        implementation=CassavaRuntime,
        parameters=ModelParameters(extra={"model_dir": str(demo_model_dir), "max_images": 4}),
    )
    server = CassavaMLServer(settings, grace_seconds=5, options=OPTIONS)
    loop.run_until_complete(server._model_registry.load(model))
    server._data_plane.expected = {"cassava"}
    try:
        yield Served(server, loop, model)
    finally:
        patches.bound_grpc_requests(None)  # the server set its (small) bounds process-wide
        for sig in (2, 15, 3):
            loop.remove_signal_handler(sig)
        loop.close()
        asyncio.set_event_loop(None)


@pytest.fixture(scope="module")
def body() -> dict[str, Any]:
    import base64

    (jpeg,) = generate_images(1, (64, 48), seed=3)
    return {
        "inputs": [
            {"name": "images", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(jpeg).decode()]}
        ]
    }


def error(response: httpx.Response) -> str:
    return str(response.json()["error"])


# --- finding 1: the repository API ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/v2/repository/models/cassava/unload", "/v2/repository/models/cassava/load", "/v2/repository/index"],
)
def test_the_repository_api_is_not_served(served: Served, path: str) -> None:
    assert served.call("POST", path).status_code == 404
    assert served.call("GET", "/v2/models/cassava/ready").status_code == 200


def test_readiness_is_false_while_the_model_is_not_loaded(served: Served, body: dict[str, Any]) -> None:
    """An unload (possible where the repository API is on) used to leave `/v2/health/ready` at 200."""
    assert served.call("GET", "/v2/health/ready").status_code == 200
    served.loop.run_until_complete(served.server._model_registry.unload("cassava"))
    try:
        assert served.call("GET", "/v2/health/ready").status_code != 200
        assert served.infer(body).status_code == 404
    finally:
        served.loop.run_until_complete(served.server._model_registry.load(served.model))
    assert served.call("GET", "/v2/health/ready").status_code == 200


# --- finding 4: the request id --------------------------------------------------------------------------


def test_a_request_id_at_the_limit_is_echoed_in_the_headers(served: Served, body: dict[str, Any]) -> None:
    request_id = "a-Z_0.9:" * (OPTIONS.max_request_id_chars // 8)
    response = served.infer({**body, "id": request_id})
    assert response.status_code == 200, response.text
    assert response.headers["ce-id"] == request_id == response.json()["id"]


@pytest.mark.parametrize(
    ("case", "request_id", "message"),
    [
        ("one past the limit", "x" * (OPTIONS.max_request_id_chars + 1), "65 characters long; at most 64"),
        ("8 MB", "x" * 8_000_000, "8,000,000 characters long"),
        ("not Latin-1", "id-\u4e2d", "printable ASCII"),
        ("Latin-1 but not ASCII", "caf\u00e9", "printable ASCII"),
        ("NUL", "a\x00b", "printable ASCII"),
        ("CR LF", "a\r\nSet-Cookie: x=1", "printable ASCII"),
        ("leading space", " abc", "printable ASCII"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 and " " in v else "",
)
def test_a_bad_request_id_is_a_400_before_inference(
    served: Served, body: dict[str, Any], case: str, request_id: str, message: str
) -> None:
    """Such ids gave a 500, a dropped connection after inference ran, or an 8 MB log line."""
    response = served.infer({**body, "id": request_id})
    assert response.status_code == 400
    assert message in error(response)
    assert "ce-id" not in response.headers
    assert request_id not in response.text or len(request_id) < 2


# --- finding 2: parameters ------------------------------------------------------------------------------


def test_parameters_at_the_limit_are_served_and_one_more_is_400(served: Served, body: dict[str, Any]) -> None:
    at = {f"k{i}": i for i in range(OPTIONS.max_parameters)}
    assert served.infer({**body, "parameters": at}).status_code == 200
    over = {**at, "one-more": 1}
    response = served.infer({**body, "parameters": over})
    assert response.status_code == 400
    assert "9 entries; at most 8" in error(response)
    inputs = [{**body["inputs"][0], "parameters": over}]
    assert served.infer({"inputs": inputs}).status_code == 400


def test_parameters_over_the_byte_limit_are_400(served: Served, body: dict[str, Any]) -> None:
    response = served.infer({**body, "parameters": {"note": "x" * OPTIONS.max_parameters_bytes}})
    assert response.status_code == 400
    assert f"at most {OPTIONS.max_parameters_bytes:,}" in error(response)


def test_a_huge_parameters_object_is_refused_before_it_is_parsed(
    served: Served, body: dict[str, Any]
) -> None:
    """Issue 9 finding 2: 4.5 million keys in `parameters` took 19 s of the event loop to parse and
    validate. The key count is checked on the raw (decompressed) bytes first; here 200,000 keys."""
    params = ",".join(f'"k{i}":{i}' for i in range(200_000))
    raw = json.dumps(body)[:-1] + ', "parameters": {' + params + "}}"
    compressed = gzip.compress(raw.encode())
    started = time.perf_counter()
    response = served.call(
        "POST",
        "/v2/models/cassava/infer",
        content=compressed,
        headers={"content-type": "application/json", "content-encoding": "gzip"},
    )
    elapsed = time.perf_counter() - started
    assert response.status_code == 400
    assert "more than 100 keys" in error(response)
    print(f"200,000-key parameters refused in {elapsed * 1000:.0f} ms")


# --- finding 3: headers -------------------------------------------------------------------------------


def test_headers_at_the_count_limit_pass_and_one_more_is_431(served: Served) -> None:
    # httpx adds host, accept, accept-encoding, connection, user-agent: 5 of its own.
    own = 5
    at = {f"x-h{i}": "v" for i in range(OPTIONS.max_request_headers - own)}
    assert served.call("GET", "/v2/health/live", headers=at).status_code == 200
    response = served.call("GET", "/v2/health/live", headers={**at, "x-one-more": "v"})
    assert response.status_code == 431
    assert f"at most {OPTIONS.max_request_headers}" in error(response)


def test_headers_over_the_byte_limit_are_431(served: Served) -> None:
    response = served.call("GET", "/v2/health/live", headers={"x-big": "v" * OPTIONS.max_header_bytes})
    assert response.status_code == 431


# --- finding 5: metrics cardinality ---------------------------------------------------------------------


def _label_values(metric: str, label: str) -> set[str]:
    return {
        sample.labels[label]
        for family in REGISTRY.collect()
        if family.name == metric
        for sample in family.samples
        if label in sample.labels
    }


def test_unknown_model_names_and_versions_create_no_metric_series(
    served: Served, body: dict[str, Any]
) -> None:
    for i in range(20):
        assert served.call("POST", f"/v2/models/invented-{i}/infer", json=body).status_code == 404
        assert served.call("POST", f"/v2/models/cassava/versions/v{i}/infer", json=body).status_code == 404
    assert served.infer(body).status_code == 200
    for metric in (
        "model_infer_request_duration",
        "model_infer_request_failure",
        "model_infer_request_success",
    ):
        assert _label_values(metric, "model") <= {"cassava"}, metric
        assert not {v for v in _label_values(metric, "version") if v.startswith("v")}, metric
    assert _label_values("model_infer_request_success", "model") == {"cassava"}


# --- finding 9: strictness, docs, lame duck -------------------------------------------------------------


def test_a_shape_given_as_strings_is_400(served: Served, body: dict[str, Any]) -> None:
    """pydantic's lax mode turned `"shape": ["1"]` into [1] and the request was served."""
    inputs = [{**body["inputs"][0], "shape": ["1"]}]
    response = served.infer({"inputs": inputs})
    assert response.status_code == 400
    assert "non-integer" in error(response)


def test_an_unknown_output_is_a_400_over_rest(served: Served, body: dict[str, Any]) -> None:
    response = served.infer({**body, "outputs": [{"name": "logits"}]})
    assert response.status_code == 400
    assert "unknown output 'logits'" in error(response)


def test_the_cdn_docs_pages_are_off_and_the_openapi_document_stays(served: Served) -> None:
    assert served.call("GET", "/v2/docs").status_code == 404
    assert served.call("GET", "/v2/models/cassava/docs").status_code == 404
    assert served.call("GET", "/v2/docs/dataplane.json").status_code == 200


def test_a_lame_duck_is_not_ready_and_closes_every_connection(served: Served, body: dict[str, Any]) -> None:
    served.server._lame_duck = True
    try:
        assert served.call("GET", "/v2/health/ready").status_code != 200
        response = served.infer(body)
        assert response.status_code == 200
        assert response.headers["connection"] == "close"
    finally:
        served.server._lame_duck = False
    assert "connection" not in served.infer(body).headers


def test_a_retryable_503_carries_retry_after(served: Served) -> None:
    """MLServer's own error handler (mlserver/rest/errors.py, 1.7.1) answers every MLServerError with
    its status and no headers; the 503 while no worker is alive now says when to retry."""

    async def no_worker() -> None:
        raise patches.NoWorkerReadyError()

    served.app.add_api_route("/test-no-worker", no_worker, methods=["GET"])
    response = served.call("GET", "/test-no-worker")
    assert response.status_code == 503
    assert response.headers["retry-after"] == str(patches.RETRY_AFTER_SECONDS)
    assert "no inference worker is ready" in error(response)


# --- the infer route without FastAPI's per-request machinery ------------------------------------------


def _requests(jpeg_b64: str) -> dict[str, tuple[bytes, dict[str, str]]]:
    """Requests whose answers must not depend on which route took them: valid ones in every form the
    route reads, and each kind of refusal that happens before or after the strict checks."""
    images = {"name": "images", "datatype": "BYTES", "shape": [1], "data": [jpeg_b64]}
    as_json = {"content-type": "application/json"}

    def body(**fields: Any) -> bytes:
        return json.dumps({"inputs": [images], **fields}).encode()

    return {
        "images": (body(id="r-1"), as_json),
        "parameters and one output": (
            body(id="r-2", parameters={"note": "x"}, outputs=[{"name": "class_code"}]),
            as_json,
        ),
        "no content type": (body(id="r-3"), {}),
        "json with charset": (body(id="r-4"), {"content-type": "application/json; charset=utf-8"}),
        "a +json type": (body(id="r-5"), {"content-type": "application/vnd.oip+json"}),
        "text/plain": (body(id="r-6"), {"content-type": "text/plain"}),
        "empty body": (b"", as_json),
        "not json": (b'{"inputs": [', as_json),
        "json, not an object": (b"[1, 2]", as_json),
        "missing fields": (json.dumps({"inputs": [{"name": "images"}]}).encode(), as_json),
        "bad base64": (json.dumps({"id": "r-7", "inputs": [{**images, "data": ["%%%"]}]}).encode(), as_json),
        "an unknown output": (body(id="r-8", outputs=[{"name": "nope"}]), as_json),
    }


@pytest.fixture(scope="module")
def native_route(served: Served) -> str:
    """MLServer's own route and endpoint (mlserver/rest/app.py `APIRoute`, mlserver/rest/endpoints.py
    `Endpoints.infer`, release 1.7.1), mounted beside the server's: the reference for its answers."""
    from mlserver.rest.app import APIRoute
    from mlserver.rest.endpoints import Endpoints

    prefix = "/mlserver-route"
    endpoint = Endpoints(served.server._data_plane).infer
    served.app.router.routes.insert(0, APIRoute(prefix + "/{model_name}/infer", endpoint, methods=["POST"]))
    return prefix


#: The status of each request of `_requests` to the stand-in; to an unknown model, a request that passes
#: validation is a 404.
_STATUS = {
    "images": 200,
    "parameters and one output": 200,
    "no content type": 200,
    "json with charset": 200,
    "a +json type": 200,
    "text/plain": 400,
    "empty body": 400,
    "not json": 400,
    "json, not an object": 400,
    "missing fields": 400,
    "bad base64": 400,
    "an unknown output": 400,
}


@pytest.mark.parametrize("case", list(_STATUS))
@pytest.mark.parametrize("model", ["cassava", "nope"])
def test_the_infer_route_answers_as_mlservers_own_route(
    served: Served, native_route: str, body: dict[str, Any], case: str, model: str
) -> None:
    """FastAPI's dependency solving and response validation were 0.23 ms of ~1 ms per request here; the
    route now does FastAPI's steps itself. Same status, headers and bytes as MLServer's route for every
    request that the strict checks do not refuse (those have their own tests). Every answer that
    succeeds carries the request's id, so even the CloudEvents headers are the same."""
    content, headers = _requests(body["inputs"][0]["data"][0])[case]
    ours = served.call("POST", f"/v2/models/{model}/infer", content=content, headers=headers)
    theirs = served.call("POST", f"{native_route}/{model}/infer", content=content, headers=headers)
    validated = _STATUS[case] == 200 or case in ("bad base64", "an unknown output")
    assert ours.status_code == (404 if model == "nope" and validated else _STATUS[case]), ours.text
    assert (ours.status_code, ours.content) == (theirs.status_code, theirs.content)
    assert ours.headers.multi_items() == theirs.headers.multi_items()


def test_the_infer_route_refuses_other_methods_as_mlservers_route(served: Served, native_route: str) -> None:
    refused = (405, b'{"error":"Method Not Allowed"}', "POST")
    for method in ("GET", "PUT", "DELETE"):
        for path in ("/v2/models/cassava/infer", f"{native_route}/cassava/infer"):
            answer = served.call(method, path)
            assert (answer.status_code, answer.content, answer.headers["allow"]) == refused, (method, path)


def test_mlservers_gzip_middleware_is_the_lazy_one(served: Served, body: dict[str, Any]) -> None:
    """mlserver/rest/app.py (1.7.1) adds Starlette's GZipMiddleware when `gzip_enabled` (the default);
    the server swaps it for `LazyGZipMiddleware` (tests/server/test_lazy_gzip.py): small answers go
    out as they are, without a compressor made for each, and large ones are still compressed."""
    from starlette.middleware.gzip import GZipMiddleware

    from cassava.server.rest import LazyGZipMiddleware

    classes = [m.cls for m in served.app.user_middleware]
    assert LazyGZipMiddleware in classes
    assert GZipMiddleware not in classes
    refused = served.infer({"inputs": []}, headers={"accept-encoding": "gzip"})
    assert refused.status_code == 400
    assert len(refused.content) < 500
    assert "content-encoding" not in refused.headers
    # The stand-in's answers carry its untrained warning: one image's is over 500 bytes.
    answer = served.infer(body, headers={"accept-encoding": "gzip"})
    assert answer.status_code == 200
    assert len(answer.content) >= 500  # as decompressed by httpx
    assert answer.headers["content-encoding"] == "gzip"
