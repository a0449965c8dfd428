"""A real MLServer with the ONNX Runtime backend answers what TensorFlow answers.

For each model (the stand-in, and the real CropNet graph when the workplace has it) one ONNX server
starts; its answers are compared with the TensorFlow backend run in-process on the same images
(test_server.py already holds the TensorFlow server to those in-process answers). Its cold start
(process start -> model ready) is printed and recorded as a test property (`--junitxml`), never
asserted: other test runs share the machine; `make bench` measures it alone (docs/performance.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
from support import CALL_TIMEOUT

from cassava.client import CassavaClient
from cassava.contract import MODEL_NAME
from cassava.export import ExportResult
from cassava.pipeline import Classifier
from cassava.server.process import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass(frozen=True)
class Served:
    kind: str
    export: ExportResult
    server: ServerProcess
    cold_start_seconds: float


@pytest.fixture(scope="module", params=["standin", "cropnet-graph"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    standin = request.param == "standin"
    # The cropnet export skips, with its reason, when the shared graph is absent.
    export: ExportResult = request.getfixturevalue("standin_onnx" if standin else "cropnet_onnx")
    server = ServerProcess.for_model(
        tmp_path_factory.mktemp(f"onnx-server-{request.param}"),
        model_dir=export.path.parent,
        extra={"backend": "onnx"},
    )
    started = time.monotonic()
    with server:
        yield Served(request.param, export, server, time.monotonic() - started)


def test_onnx_server_returns_the_tensorflow_classes(
    served: Served, seed_jpegs: list[bytes], record_property: pytest.RecordProperty
) -> None:
    record_property(f"cold_start_seconds_{served.kind}_onnx", round(served.cold_start_seconds, 1))
    print(f"{served.kind}: ONNX server cold start (process start -> ready) {served.cold_start_seconds:.1f} s")
    got = CassavaClient(served.server.http_url, timeout=CALL_TIMEOUT).classify_images(seed_jpegs)
    expected = Classifier.load(served.export.path.parent, "tensorflow").classify_images(seed_jpegs)
    assert got.codes == expected.codes
    np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=served.export.tolerance)


def test_onnx_server_says_which_backend_and_model_it_serves(served: Served) -> None:
    url = f"{served.server.http_url}/v2/models/{MODEL_NAME}"
    metadata = httpx.get(url, timeout=CALL_TIMEOUT).json()
    assert metadata["platform"] == "onnxruntime_onnx"
    parameters = metadata["parameters"]
    assert parameters["backend"] == "onnx"
    # The stand-in's UNTRAINED marker reaches the ONNX server's metadata as it does the SavedModel's.
    assert parameters["untrained"] is served.export.info.untrained
    assert ("UNTRAINED" in parameters["warning"]) is served.export.info.untrained
