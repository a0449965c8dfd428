"""The runtime in-process, in MLServer's own style: load `CassavaRuntime` on the stand-in and call
`predict` / `metadata` with MLServer's types, no sockets, no subprocess (MLServer's
runtimes/sklearn/tests/conftest.py builds its runtimes the same way, release 1.7.1).

What needs a real server (transports, status codes on the wire, signals, workers) stays in
tests/integration; the request contract itself (decode, limits, metadata, errors) is checked here,
where a failure costs milliseconds instead of a 20-second server start.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlserver.settings import ModelParameters, ModelSettings
from mlserver.types import InferenceRequest, InferenceResponse

from cassava.bench import generate_images
from cassava.contract import IMAGES_INPUT, OUTPUT_CODE, OUTPUT_INDEX, OUTPUT_PROBABILITIES, TENSOR_INPUT
from cassava.labels import CODES
from cassava.pipeline import Classifier
from cassava.preprocessing import preprocess_images
from cassava.server.protocol import InvalidRequestError
from cassava.server.runtime import CassavaRuntime
from cassava.settings import CassavaSettings

MAX_IMAGES = 4


def load_runtime(extra: dict[str, Any]) -> CassavaRuntime:
    settings = ModelSettings(
        name="cassava", implementation=CassavaRuntime, parameters=ModelParameters(extra=extra)
    )
    runtime = CassavaRuntime(settings)
    assert asyncio.run(runtime.load())
    return runtime


@pytest.fixture(scope="module")
def runtime(demo_model_dir: Path) -> CassavaRuntime:
    return load_runtime({"model_dir": str(demo_model_dir), "max_images": MAX_IMAGES})


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    return generate_images(MAX_IMAGES + 1, (160, 120), seed=11)


def images_request(images: list[bytes], *, as_base64: bool = False) -> InferenceRequest:
    data: list[Any] = [base64.b64encode(i).decode() for i in images] if as_base64 else list(images)
    return InferenceRequest.model_validate(
        {"inputs": [{"name": IMAGES_INPUT, "datatype": "BYTES", "shape": [len(images)], "data": data}]}
    )


def predict(runtime: CassavaRuntime, request: InferenceRequest) -> InferenceResponse:
    return asyncio.run(runtime.predict(request))


def output(response: InferenceResponse, name: str) -> np.ndarray:
    (out,) = [o for o in response.outputs if o.name == name]
    data = out.data.root if hasattr(out.data, "root") else out.data
    return np.asarray(data).reshape(out.shape)


def rejected(runtime: CassavaRuntime, request: InferenceRequest) -> str:
    with pytest.raises(InvalidRequestError) as caught:
        predict(runtime, request)
    assert caught.value.status_code == 400
    return str(caught.value)


def test_images_are_classified_as_the_pipeline_classifies_them(
    runtime: CassavaRuntime, demo_model_dir: Path, jpegs: list[bytes]
) -> None:
    images = jpegs[:MAX_IMAGES]
    response = predict(runtime, images_request(images))
    expected = Classifier.load(demo_model_dir).classify_images(images)
    assert [o.name for o in response.outputs] == [OUTPUT_INDEX, OUTPUT_CODE, OUTPUT_PROBABILITIES]
    np.testing.assert_array_equal(output(response, OUTPUT_INDEX), expected.indices)
    np.testing.assert_allclose(output(response, OUTPUT_PROBABILITIES), expected.probabilities, atol=1e-6)
    assert [c.decode() if isinstance(c, bytes) else c for c in output(response, OUTPUT_CODE)] == [
        CODES[i] for i in expected.indices
    ]


def test_base64_images_as_rest_json_carries_them(runtime: CassavaRuntime, jpegs: list[bytes]) -> None:
    raw = predict(runtime, images_request(jpegs[:2]))
    text = predict(runtime, images_request(jpegs[:2], as_base64=True))
    np.testing.assert_array_equal(output(raw, OUTPUT_INDEX), output(text, OUTPUT_INDEX))


def test_the_seeds_tensor_request_gives_the_same_classes(runtime: CassavaRuntime, jpegs: list[bytes]) -> None:
    batch = preprocess_images(jpegs[:3], CassavaSettings().limits())
    request = InferenceRequest.model_validate(
        {
            "inputs": [
                {
                    "name": TENSOR_INPUT,
                    "datatype": "FP32",
                    "shape": list(batch.shape),
                    "data": batch.reshape(-1).tolist(),
                }
            ]
        }
    )
    by_tensor = output(predict(runtime, request), OUTPUT_INDEX)
    by_images = output(predict(runtime, images_request(jpegs[:3])), OUTPUT_INDEX)
    np.testing.assert_array_equal(by_tensor, by_images)


def test_metadata_describes_the_contract_and_the_stand_in(runtime: CassavaRuntime) -> None:
    metadata = asyncio.run(runtime.metadata())
    assert metadata.platform == "tensorflow_savedmodel"
    assert [t.name for t in metadata.inputs or []] == [TENSOR_INPUT, IMAGES_INPUT]
    assert [t.name for t in metadata.outputs or []] == [OUTPUT_INDEX, OUTPUT_CODE, OUTPUT_PROBABILITIES]
    parameters = metadata.parameters.model_dump() if metadata.parameters else {}
    assert parameters["untrained"] is True
    assert parameters["max_images"] == MAX_IMAGES
    assert "UNTRAINED" in parameters["warning"]


@pytest.mark.parametrize(
    ("case", "body", "message"),
    [
        ("no inputs", {"inputs": []}, "has no inputs"),
        (
            "unknown input",
            {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["x"]}]},
            "unknown input 'image'",
        ),
        (
            "wrong datatype",
            {"inputs": [{"name": IMAGES_INPUT, "datatype": "FP32", "shape": [1], "data": [1.0]}]},
            "datatype FP32; it must be BYTES",
        ),
        (
            "tensor of the wrong shape",
            {"inputs": [{"name": TENSOR_INPUT, "datatype": "FP32", "shape": [1, 3], "data": [0, 0, 0]}]},
            r"expected \[N, 224, 224, 3\]",
        ),
        (
            "not an image",
            {"inputs": [{"name": IMAGES_INPUT, "datatype": "BYTES", "shape": [1], "data": [b"hello world"]}]},
            "neither image bytes nor valid base64 text",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v else "",
)
def test_a_bad_request_is_a_400_that_says_what_to_change(
    runtime: CassavaRuntime, case: str, body: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequestError, match=message) as caught:
        predict(runtime, InferenceRequest.model_validate(body))
    assert caught.value.status_code == 400


def test_one_image_past_the_limit_is_refused_and_the_limit_itself_is_served(
    runtime: CassavaRuntime, jpegs: list[bytes]
) -> None:
    assert len(output(predict(runtime, images_request(jpegs[:MAX_IMAGES])), OUTPUT_INDEX)) == MAX_IMAGES
    message = rejected(runtime, images_request(jpegs[: MAX_IMAGES + 1]))
    assert f"holds {MAX_IMAGES + 1} images; at most {MAX_IMAGES}" in message


def test_the_runtime_keeps_serving_after_a_rejection(runtime: CassavaRuntime, jpegs: list[bytes]) -> None:
    rejected(runtime, images_request([b"\xff\xd8\xff broken jpeg"]))
    assert len(output(predict(runtime, images_request(jpegs[:1])), OUTPUT_INDEX)) == 1


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    return monkeypatch


def test_cassava_variables_override_model_settings(
    env: pytest.MonkeyPatch, demo_model_dir: Path, jpegs: list[bytes]
) -> None:
    """The server entry point builds `CassavaSettings` like every command: CASSAVA_* beats the file."""
    env.setenv("CASSAVA_MAX_IMAGES", "2")
    runtime = load_runtime({"model_dir": str(demo_model_dir), "max_images": MAX_IMAGES})
    assert "at most 2" in rejected(runtime, images_request(jpegs[:3]))


def test_cassava_model_dir_is_where_the_runtime_loads_from(
    env: pytest.MonkeyPatch, tmp_path: Path, demo_model_dir: Path
) -> None:
    env.setenv("CASSAVA_HOME", str(tmp_path / "empty-cache"))
    env.setenv("CASSAVA_MODEL_DIR", str(demo_model_dir))
    runtime = load_runtime({})
    assert runtime._classifier.info.path == demo_model_dir
