"""The served V2 API against real MLServer processes: the stand-in, and the real CropNet graph (synthetic
weights) when the workplace has it. Every check runs on both, so the stand-in cannot hide a problem
that only the real graph has (its size, its signature-less call)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc_calls
import httpx
import numpy as np
import pytest
from support import CALL_TIMEOUT, MAX_BATCH_SIZE, SEED_BATCH, grpc_call, infer_url

from cassava.client import CassavaClient, InferenceRequestError
from cassava.contract import (
    INPUT_SPECS,
    MODEL_NAME,
    OUTPUT_CODE,
    OUTPUT_INDEX,
    OUTPUT_PROBABILITIES,
    OUTPUT_SPECS,
)
from cassava.labels import CODES, NUM_CLASSES
from cassava.pipeline import BatchResult, Classifier
from cassava.server.process import ServerProcess

pytestmark = pytest.mark.integration

GRPC_DEFAULT_MAX_MESSAGE = 4 * 1024 * 1024


@dataclass(frozen=True)
class Served:
    kind: str
    model_dir: Path
    server: ServerProcess


@pytest.fixture(scope="module", params=["standin", "cropnet-graph"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if request.param == "standin":
        # The session's stand-in server, shared with test_bad_input.py.
        yield Served(
            "standin", request.getfixturevalue("demo_model_dir"), request.getfixturevalue("standin_server")
        )
        return
    model_dir = request.getfixturevalue("cropnet_graph_dir")  # skips, with its reason, when absent
    workdir = tmp_path_factory.mktemp("cropnet-server")
    with ServerProcess.for_model(
        workdir, model_dir=model_dir, extra={"max_images": MAX_BATCH_SIZE}
    ) as server:
        yield Served(request.param, model_dir, server)


@pytest.fixture(scope="module")
def reference(served: Served) -> Classifier:
    """The same model run in this process, through the one pipeline: what the server must answer."""
    return Classifier.load(served.model_dir)


@pytest.fixture(scope="module")
def seed_expected(reference: Classifier, seed_batch: np.ndarray) -> BatchResult:
    return reference.classify_tensor(seed_batch)


def test_health_and_readiness_endpoints(served: Served) -> None:
    base = served.server.http_url
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{MODEL_NAME}/ready"):
        response = httpx.get(base + path, timeout=CALL_TIMEOUT)
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"


def test_metadata_declares_the_contract(served: Served) -> None:
    response = httpx.get(f"{served.server.http_url}/v2/models/{MODEL_NAME}", timeout=CALL_TIMEOUT)
    assert response.status_code == 200, response.text
    metadata = response.json()
    assert metadata["name"] == MODEL_NAME
    assert metadata["platform"] == "tensorflow_savedmodel"
    assert metadata["inputs"] == [{"name": n, "datatype": d, "shape": list(s)} for n, d, s in INPUT_SPECS]
    assert metadata["outputs"] == [{"name": n, "datatype": d, "shape": list(s)} for n, d, s in OUTPUT_SPECS]
    parameters = metadata["parameters"]
    # The stand-in carries the UNTRAINED marker; the synthetic graph is a real model directory without it.
    assert parameters["untrained"] is (served.kind == "standin")
    assert ("UNTRAINED" in parameters["warning"]) is (served.kind == "standin")
    assert parameters["max_images"] == MAX_BATCH_SIZE


def test_grpc_metadata_equals_rest(served: Served, grpc_pool: ProcessPoolExecutor) -> None:
    rest = CassavaClient(served.server.http_url).metadata()
    over_grpc = grpc_call(grpc_pool, grpc_calls.metadata, served.server.grpc_target)
    for key in ("name", "platform", "inputs", "outputs", "parameters"):
        assert over_grpc[key] == rest[key], key


def test_the_seeds_exact_request_over_rest(
    served: Served, seed_batch: np.ndarray, seed_expected: BatchResult
) -> None:
    # test.py's request, verbatim: MLServer's own types and codec, posted as JSON.
    from mlserver.codecs import NumpyCodec
    from mlserver.types import InferenceRequest

    assert seed_batch.shape == (SEED_BATCH, 224, 224, 3)
    inference_request = InferenceRequest(inputs=[NumpyCodec.encode_input(name="payload", payload=seed_batch)])
    response = httpx.post(infer_url(served.server), json=inference_request.model_dump(), timeout=CALL_TIMEOUT)
    assert response.status_code == 200, response.text[:500]
    first = response.json()["outputs"][0]
    # What test.py reads: outputs[0]'s data and shape, as class indices.
    assert first["name"] == OUTPUT_INDEX
    assert first["datatype"] == "INT64"
    assert first["shape"] == [SEED_BATCH]
    np.testing.assert_array_equal(np.asarray(first["data"]).reshape(first["shape"]), seed_expected.indices)


def test_the_seeds_tensor_over_grpc_beyond_the_default_message_size(
    served: Served, seed_batch: np.ndarray, seed_expected: BatchResult, grpc_pool: ProcessPoolExecutor
) -> None:
    # Passes only because settings.json raises grpc_max_message_length (and the client its own limits).
    assert seed_batch.nbytes > GRPC_DEFAULT_MAX_MESSAGE
    indices, probabilities = grpc_call(
        grpc_pool, grpc_calls.classify_tensor, served.server.grpc_target, seed_batch
    )
    np.testing.assert_array_equal(indices, seed_expected.indices)
    np.testing.assert_allclose(probabilities, seed_expected.probabilities, atol=1e-5)


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_image_bytes_give_the_in_process_result(
    served: Served,
    reference: Classifier,
    seed_jpegs: list[bytes],
    grpc_pool: ProcessPoolExecutor,
    transport: str,
) -> None:
    """Base64 over REST and raw bytes over gRPC, preprocessed on the server, as `Classifier` does here."""
    expected = reference.classify_images(seed_jpegs)
    if transport == "rest":
        result = CassavaClient(served.server.http_url, timeout=CALL_TIMEOUT).classify_images(seed_jpegs)
        indices, probabilities = result.indices, result.probabilities
    else:
        indices, probabilities = grpc_call(
            grpc_pool, grpc_calls.classify_images, served.server.grpc_target, seed_jpegs
        )
    np.testing.assert_array_equal(indices, expected.indices)
    np.testing.assert_allclose(probabilities, expected.probabilities, atol=1e-5)


def test_every_output_is_declared_and_consistent(served: Served, sample_jpegs: list[bytes]) -> None:
    images = sample_jpegs[:3]
    body = {
        "inputs": [
            {
                "name": "images",
                "datatype": "BYTES",
                "shape": [len(images)],
                "data": [base64.b64encode(data).decode() for data in images],
            }
        ]
    }
    response = httpx.post(infer_url(served.server), json=body, timeout=CALL_TIMEOUT)
    assert response.status_code == 200, response.text
    outputs = {output["name"]: output for output in response.json()["outputs"]}
    assert [o["name"] for o in response.json()["outputs"]] == [name for name, _, _ in OUTPUT_SPECS]
    n = len(images)
    assert (outputs[OUTPUT_INDEX]["datatype"], outputs[OUTPUT_INDEX]["shape"]) == ("INT64", [n])
    assert (outputs[OUTPUT_CODE]["datatype"], outputs[OUTPUT_CODE]["shape"]) == ("BYTES", [n])
    probabilities_out = outputs[OUTPUT_PROBABILITIES]
    assert (probabilities_out["datatype"], probabilities_out["shape"]) == ("FP32", [n, NUM_CLASSES])
    indices = outputs[OUTPUT_INDEX]["data"]
    probabilities = np.asarray(probabilities_out["data"], dtype=np.float32).reshape(n, NUM_CLASSES)
    assert outputs[OUTPUT_CODE]["data"] == [CODES[i] for i in indices]
    np.testing.assert_array_equal(probabilities.argmax(axis=1), indices)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)


def test_max_images_from_model_settings_is_enforced(served: Served, sample_jpegs: list[bytes]) -> None:
    client = CassavaClient(served.server.http_url, timeout=CALL_TIMEOUT)
    at_limit = (sample_jpegs * 3)[:MAX_BATCH_SIZE]
    assert len(client.classify_images(at_limit).indices) == MAX_BATCH_SIZE
    with pytest.raises(
        InferenceRequestError, match=rf"holds {MAX_BATCH_SIZE + 1} images.*at most {MAX_BATCH_SIZE}"
    ):
        client.classify_images([*at_limit, sample_jpegs[0]])
    assert client.is_ready()
