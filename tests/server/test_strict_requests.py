"""Strict request reading (issue 9 item 9, issue 13 item 6, issue 11's `untrained` in responses), on
the runtime in-process: `CassavaRuntime` loaded on the stand-in, called with MLServer's own types, as
MLServer's runtimes/sklearn/tests/conftest.py (release 1.7.1) builds its runtimes.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlserver.codecs import Base64Codec, StringCodec
from mlserver.settings import ModelParameters, ModelSettings
from mlserver.types import InferenceRequest, InferenceResponse

from cassava.bench import generate_images
from cassava.contract import IMAGES_INPUT, OUTPUT_CODE, OUTPUT_INDEX, OUTPUT_PROBABILITIES, TENSOR_INPUT
from cassava.server.protocol import InvalidRequestError
from cassava.server.runtime import CassavaRuntime


@pytest.fixture(scope="module")
def runtime(demo_model_dir: Path) -> CassavaRuntime:
    settings = ModelSettings(
        name="cassava",
        implementation=CassavaRuntime,
        parameters=ModelParameters(extra={"model_dir": str(demo_model_dir), "max_images": 4}),
    )
    model = CassavaRuntime(settings)
    assert asyncio.run(model.load())
    return model


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    return generate_images(3, (96, 72), seed=21)


def predict(runtime: CassavaRuntime, body: dict[str, Any]) -> InferenceResponse:
    return asyncio.run(runtime.predict(InferenceRequest.model_validate(body)))


def images_body(jpegs: list[bytes], **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [{"name": IMAGES_INPUT, "datatype": "BYTES", "shape": [len(jpegs)], "data": jpegs}],
        **extra,
    }


def classes(response: InferenceResponse) -> list[int]:
    (index,) = [o for o in response.outputs if o.name == OUTPUT_INDEX]
    return [int(v) for v in np.asarray(index.data.root).ravel()]


def test_only_the_requested_outputs_are_returned(runtime: CassavaRuntime, jpegs: list[bytes]) -> None:
    """The OIP lets a client ask for a subset of the outputs (`outputs` in the request); they used to
    be ignored and all three returned."""
    response = predict(runtime, images_body(jpegs, outputs=[{"name": OUTPUT_PROBABILITIES}]))
    assert [o.name for o in response.outputs] == [OUTPUT_PROBABILITIES]
    both = predict(runtime, images_body(jpegs, outputs=[{"name": OUTPUT_CODE}, {"name": OUTPUT_INDEX}]))
    assert [o.name for o in both.outputs] == [OUTPUT_INDEX, OUTPUT_CODE]


def test_an_unknown_output_is_a_400_naming_it(runtime: CassavaRuntime, jpegs: list[bytes]) -> None:
    with pytest.raises(InvalidRequestError, match="unknown output 'logits'") as caught:
        predict(runtime, images_body(jpegs, outputs=[{"name": OUTPUT_INDEX}, {"name": "logits"}]))
    assert caught.value.status_code == 400


def test_fp32_values_sent_as_strings_are_refused(runtime: CassavaRuntime) -> None:
    body = {
        "inputs": [
            {"name": TENSOR_INPUT, "datatype": "FP32", "shape": [1, 224, 224, 3], "data": ["0.5"] * 150528}
        ]
    }
    with pytest.raises(InvalidRequestError, match="not numbers"):
        predict(runtime, body)


def test_nesting_that_contradicts_the_shape_is_refused(runtime: CassavaRuntime) -> None:
    # 224 x 672 values nested two deep, declared as [1, 224, 224, 3]: same count, different nesting.
    nested = np.full((224, 672), 0.5).tolist()
    body = {"inputs": [{"name": TENSOR_INPUT, "datatype": "FP32", "shape": [1, 224, 224, 3], "data": nested}]}
    with pytest.raises(InvalidRequestError, match=r"nested as \[224, 672\]"):
        predict(runtime, body)


def test_flat_and_exactly_nested_tensors_are_both_served(runtime: CassavaRuntime) -> None:
    flat = {
        "inputs": [
            {"name": TENSOR_INPUT, "datatype": "FP32", "shape": [1, 224, 224, 3], "data": [0.5] * 150528}
        ]
    }
    nested = np.full((1, 224, 224, 3), 0.5).tolist()
    exact = {
        "inputs": [{"name": TENSOR_INPUT, "datatype": "FP32", "shape": [1, 224, 224, 3], "data": nested}]
    }
    assert classes(predict(runtime, flat)) == classes(predict(runtime, exact))


@pytest.mark.parametrize("codec", [Base64Codec, StringCodec], ids=["Base64Codec", "StringCodec"])
def test_a_request_built_by_mlservers_own_codecs_is_served(
    runtime: CassavaRuntime, jpegs: list[bytes], codec: Any
) -> None:
    """MLServer 1.7.1's mlserver/codecs/base64.py `Base64Codec.encode_input` and
    mlserver/codecs/string.py `StringCodec.encode_input` describe a list of N items as BYTES of shape
    [N, 1] (their `_encode_shape`/`encode_output`), which the runtime refused ("expected shape [N]")."""
    if codec is StringCodec:
        # StringCodec takes text (it UTF-8-encodes each str): base64 text of the files.
        inp = codec.encode_input(IMAGES_INPUT, [base64.b64encode(j).decode() for j in jpegs])
    else:
        inp = codec.encode_input(IMAGES_INPUT, jpegs, use_bytes=True)
    assert list(inp.shape) == [len(jpegs), 1]
    served = asyncio.run(runtime.predict(InferenceRequest(inputs=[inp])))
    assert classes(served) == classes(predict(runtime, images_body(jpegs)))


def test_base64_text_of_shape_n_by_1_from_json_is_served(runtime: CassavaRuntime, jpegs: list[bytes]) -> None:
    """What `Base64Codec.encode_input(..., use_bytes=False)` sends as REST JSON: base64 strings, [N, 1]."""
    inp = Base64Codec.encode_input(IMAGES_INPUT, jpegs, use_bytes=False)
    body = json.loads(InferenceRequest(inputs=[inp]).model_dump_json())
    assert body["inputs"][0]["shape"] == [len(jpegs), 1]
    assert classes(predict(runtime, body)) == classes(predict(runtime, images_body(jpegs)))


@pytest.mark.parametrize("shape", [[2, 2], [3, 2], [0, 1], [-3], [1, 3, 1, 2]])
def test_a_bytes_shape_whose_element_count_is_not_the_image_count_is_refused(
    runtime: CassavaRuntime, jpegs: list[bytes], shape: list[int]
) -> None:
    body = {"inputs": [{"name": IMAGES_INPUT, "datatype": "BYTES", "shape": shape, "data": jpegs}]}
    with pytest.raises(InvalidRequestError, match=r"expected shape \[N\] \(or \[N, 1\]\)"):
        predict(runtime, body)


def test_every_response_of_the_stand_in_says_it_is_untrained(
    runtime: CassavaRuntime, jpegs: list[bytes]
) -> None:
    response = predict(runtime, images_body(jpegs))
    parameters = response.parameters.model_dump() if response.parameters else {}
    assert parameters["untrained"] is True
    assert "UNTRAINED" in parameters["warning"]


def test_metadata_and_responses_show_no_server_path(
    runtime: CassavaRuntime, jpegs: list[bytes], demo_model_dir: Path
) -> None:
    """The metadata showed the model directory (`model_source`, and the warning named the path)."""
    metadata = asyncio.run(runtime.metadata()).model_dump_json()
    response = predict(runtime, images_body(jpegs)).model_dump_json()
    for text in (metadata, response):
        assert str(demo_model_dir) not in text
        assert str(demo_model_dir.parent) not in text
