"""Adaptive batching: MLServer merges a window's requests into one before our predict() sees them.

These tests build the merged request with MLServer's own `BatchedRequests`, run it through the
runtime, and split the answer back as MLServer does, so each request's answer can be checked against
the answer it gets alone.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from mlserver.batching import BatchedRequests
from mlserver.settings import ModelParameters, ModelSettings
from mlserver.types import InferenceRequest

from cassava.bench import generate_images, seed_request_json
from cassava.errors import BatchTooLargeError, RequestFormatError
from cassava.preprocessing import Limits, preprocess_images
from cassava.server.runtime import CassavaRuntime


def runtime(model_dir: Path, max_batch_size: int, max_images: int = 4) -> CassavaRuntime:
    settings = ModelSettings(
        name="cassava",
        implementation=CassavaRuntime,
        max_batch_size=max_batch_size,
        max_batch_time=0.1 if max_batch_size > 1 else 0,
        parameters=ModelParameters(extra={"model_dir": str(model_dir), "max_images": max_images}),
    )
    model = CassavaRuntime(settings)
    asyncio.run(model.load())
    return model


def images_request(images: list[bytes]) -> InferenceRequest:
    return InferenceRequest.model_validate(
        {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [len(images)], "data": images}]}
    )


def indices(response_outputs: list[object]) -> list[int]:
    (index,) = [o for o in response_outputs if getattr(o, "name", None) == "class_index"]
    data = getattr(index, "data")  # noqa: B009 (ResponseOutput)
    return [int(i) for i in getattr(data, "root", data)]


@pytest.fixture(scope="module")
def batching_runtime(demo_model_dir: Path) -> CassavaRuntime:
    return runtime(demo_model_dir, max_batch_size=8)


def test_a_window_of_image_and_tensor_requests_is_answered_request_by_request(
    batching_runtime: CassavaRuntime,
) -> None:
    images = generate_images(5, (96, 72), seed=5)
    requests = {
        "a": images_request(images[:2]),
        "b": InferenceRequest.model_validate_json(
            seed_request_json(preprocess_images(images[2:3], Limits()))
        ),
        "c": images_request(images[3:5]),
    }
    alone = {key: asyncio.run(batching_runtime.predict(req)) for key, req in requests.items()}
    batched = BatchedRequests(requests)
    assert {i.name for i in batched.merged_request.inputs} == {"images", "payload"}
    merged = asyncio.run(batching_runtime.predict(batched.merged_request))
    split = batched.split_response(merged)
    for key in requests:
        assert indices(split[key].outputs) == indices(alone[key].outputs)
        expected = next(o for o in alone[key].outputs if o.name == "probabilities")
        got = next(o for o in split[key].outputs if o.name == "probabilities")
        np.testing.assert_allclose(
            np.asarray(got.data.root), np.asarray(expected.data.root), rtol=0, atol=1e-6
        )


def test_the_image_limit_applies_per_request_not_per_merged_batch(batching_runtime: CassavaRuntime) -> None:
    images = generate_images(4, (64, 48), seed=6)
    # Three requests of 4 images (each at the limit) merge into 12: still accepted.
    batched = BatchedRequests({str(k): images_request(images) for k in range(3)})
    assert len(indices(asyncio.run(batching_runtime.predict(batched.merged_request)).outputs)) == 12


def test_without_batching_two_inputs_are_still_refused(demo_model_dir: Path) -> None:
    plain = runtime(demo_model_dir, max_batch_size=0)
    images = generate_images(1, (64, 48), seed=7)
    both = InferenceRequest.model_validate(
        {
            "inputs": [
                {"name": "images", "datatype": "BYTES", "shape": [1], "data": images},
                {"name": "payload", "datatype": "FP32", "shape": [1, 224, 224, 3], "data": [0.5] * 150528},
            ]
        }
    )
    with pytest.raises(Exception, match="send exactly one") as caught:
        asyncio.run(plain.predict(both))
    assert not isinstance(caught.value, RequestFormatError | BatchTooLargeError)  # mapped to HTTP 400
    assert getattr(caught.value, "status_code", None) == 400
