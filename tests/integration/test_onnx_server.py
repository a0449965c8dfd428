"""A real MLServer with the ONNX Runtime backend answers what the TensorFlow backend answers.

For each model (the stand-in, and the real CropNet graph when the workplace has it) one TensorFlow
server and one ONNX server start one after the other, so each cold start (process start -> model ready)
is measured alone. The times are printed and recorded as test properties (`--junitxml`); they are
figures for docs/onnx.md, never asserted: other test runs share the machine.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from support import CALL_TIMEOUT

from cassava.client import CassavaClient
from cassava.contract import MODEL_NAME
from cassava.export import ExportResult
from cassava.server_process import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BACKENDS = ("tensorflow", "onnx")


@dataclass(frozen=True)
class Served:
    kind: str
    export: ExportResult
    servers: dict[str, ServerProcess]
    cold_start_seconds: dict[str, float]


@pytest.fixture(scope="module", params=["standin", "cropnet-graph"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    standin = request.param == "standin"
    # The cropnet export skips, with its reason, when the shared graph is absent.
    export: ExportResult = request.getfixturevalue("standin_onnx" if standin else "cropnet_onnx")
    workdir = tmp_path_factory.mktemp(f"onnx-server-{request.param}")
    with ExitStack() as stack:
        servers: dict[str, ServerProcess] = {}
        seconds: dict[str, float] = {}
        for backend in BACKENDS:
            (workdir / backend).mkdir()
            server = ServerProcess.for_model(
                workdir / backend, model_dir=export.path.parent, extra={"backend": backend}
            )
            started = time.monotonic()
            servers[backend] = stack.enter_context(server)
            seconds[backend] = time.monotonic() - started
        yield Served(request.param, export, servers, seconds)


def test_onnx_server_returns_the_tensorflow_servers_classes(
    served: Served, seed_jpegs: list[bytes], record_property: pytest.RecordProperty
) -> None:
    for backend, seconds in served.cold_start_seconds.items():
        record_property(f"cold_start_seconds_{served.kind}_{backend}", round(seconds, 1))
    print(
        f"{served.kind}: cold start (process start -> ready) "
        + ", ".join(f"{b} {s:.1f} s" for b, s in served.cold_start_seconds.items())
    )
    results = {
        backend: CassavaClient(server.http_url, timeout=CALL_TIMEOUT).classify_images(seed_jpegs)
        for backend, server in served.servers.items()
    }
    assert results["onnx"].codes == results["tensorflow"].codes
    np.testing.assert_allclose(
        results["onnx"].probabilities, results["tensorflow"].probabilities, atol=served.export.tolerance
    )


def test_onnx_server_says_which_backend_and_model_it_serves(served: Served) -> None:
    url = f"{served.servers['onnx'].http_url}/v2/models/{MODEL_NAME}"
    metadata = httpx.get(url, timeout=CALL_TIMEOUT).json()
    assert metadata["platform"] == "onnxruntime_onnx"
    parameters = metadata["parameters"]
    assert parameters["backend"] == "onnx"
    # The stand-in's UNTRAINED marker reaches the ONNX server's metadata as it does the SavedModel's.
    assert parameters["untrained"] is served.export.info.untrained
    assert ("UNTRAINED" in parameters["warning"]) is served.export.info.untrained
