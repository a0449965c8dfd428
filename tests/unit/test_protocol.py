"""`cassava.server.protocol` without a server: V2 requests as MLServer hands them to the runtime,
and outputs."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlserver.types import InferenceRequest, RequestInput
from PIL import Image

from cassava.contract import OUTPUT_SPECS
from cassava.errors import BatchTooLargeError, ImageDecodeError, RequestFormatError
from cassava.labels import CODES, NUM_CLASSES
from cassava.pipeline import BatchResult
from cassava.preprocessing import Limits
from cassava.server.protocol import decode_request, encode_outputs

PIXELS = 224 * 224 * 3


def image_file(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 10), (30, 160, 60)).save(buffer, fmt)
    return buffer.getvalue()


def rest(*inputs: dict[str, Any]) -> InferenceRequest:
    """A request as MLServer's REST endpoint parses it from JSON."""
    return InferenceRequest.model_validate({"inputs": list(inputs)})


def tensor_input(shape: list[int], values: int | None = None, datatype: str = "FP32") -> dict[str, Any]:
    count = int(np.prod(shape)) if values is None else values
    return {"name": "payload", "datatype": datatype, "shape": shape, "data": [0.5] * count}


def images_input(items: list[Any], shape: list[int] | None = None) -> dict[str, Any]:
    return {"name": "images", "datatype": "BYTES", "shape": shape or [len(items)], "data": items}


# --- accepted ------------------------------------------------------------------------------------------


def test_a_tensor_becomes_float32_of_the_declared_shape() -> None:
    decoded = decode_request(rest(tensor_input([2, 224, 224, 3])))
    assert decoded.images is None
    assert decoded.tensor is not None
    assert decoded.tensor.shape == (2, 224, 224, 3)
    assert decoded.tensor.dtype == np.float32


def test_base64_strings_from_json_become_the_file_bytes() -> None:
    files = [image_file("JPEG"), image_file("PNG")]
    decoded = decode_request(rest(images_input([base64.b64encode(f).decode() for f in files])))
    assert decoded.tensor is None
    assert decoded.images == files


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"])
def test_raw_file_bytes_from_grpc_pass_through(fmt: str) -> None:
    # GIF ("GIF8"), WebP ("RIFF") and BMP ("BM") start with base64 characters: they must not be
    # mistaken for base64 text.
    data = image_file(fmt)
    request = InferenceRequest(inputs=[RequestInput(name="images", datatype="BYTES", shape=[1], data=[data])])
    assert decode_request(request).images == [data]


def test_base64_text_sent_as_bytes_is_decoded() -> None:
    data = image_file("JPEG")
    request = InferenceRequest(
        inputs=[RequestInput(name="images", datatype="BYTES", shape=[1], data=[base64.b64encode(data)])]
    )
    assert decode_request(request).images == [data]


# --- refused -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "error", "match"),
    [
        pytest.param([], RequestFormatError, r"no inputs", id="no-inputs"),
        pytest.param(
            [{"name": "pixels", "datatype": "FP32", "shape": [1], "data": [0.5]}],
            RequestFormatError,
            r"unknown input 'pixels'",
            id="unknown-input",
        ),
        pytest.param(
            [tensor_input([1, 224, 224, 3]), images_input(["aGVsbG8="])],
            RequestFormatError,
            r"2 inputs",
            id="both-inputs",
        ),
        pytest.param(
            [tensor_input([1, 224, 224, 3], datatype="INT32")],
            RequestFormatError,
            r"'payload' has datatype INT32; it must be FP32",
            id="int32-payload",
        ),
        pytest.param(
            [{"name": "images", "datatype": "FP32", "shape": [1], "data": [0.5]}],
            RequestFormatError,
            r"'images' has datatype FP32; it must be BYTES",
            id="fp32-images",
        ),
        pytest.param(
            [tensor_input([1, 224, 224])],
            RequestFormatError,
            r"'payload' has shape \[1, 224, 224\]",
            id="wrong-rank",
        ),
        pytest.param(
            [tensor_input([1, 224, 224, 3], values=PIXELS - 1)],
            RequestFormatError,
            r"declares shape \[1, 224, 224, 3\].*carries 150,527",
            id="shape-data-mismatch",
        ),
        pytest.param(
            [images_input(["aGVsbG8="], shape=[2])],
            RequestFormatError,
            r"'images' has shape \[2\] but carries 1",
            id="images-shape-mismatch",
        ),
        pytest.param(
            [images_input(["not base64!"])],
            ImageDecodeError,
            r"not valid base64",
            id="string-not-base64",
        ),
    ],
)
def test_malformed_requests_are_refused(
    inputs: list[dict[str, Any]], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        decode_request(rest(*inputs))


@given(st.binary(min_size=1, max_size=300), st.sampled_from(["", "\n", " "]))
@settings(max_examples=200, deadline=None)
def test_base64_images_decode_to_exactly_their_bytes(data: bytes, wrap: str) -> None:
    """The SIMD decoder gives the file's bytes, whatever they are and however the text is wrapped
    (MIME-style line breaks are accepted)."""
    text = base64.b64encode(data).decode()
    text = wrap.join(text[i : i + 76] for i in range(0, len(text), 76))
    assert decode_request(rest(images_input([text]))).images == [data]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("YQ=", "Incorrect padding"),
        ("YQ==YQ==", "Excess data after padding"),
        ("ab!d", "Only base64 data is allowed"),
        ("YQ==\u00e9", "Excess data after padding"),
    ],
)
def test_invalid_base64_is_refused_with_the_reason(text: str, reason: str) -> None:
    """The fast decoder only says "Non-base64 digit found"; the error names what is wrong."""
    with pytest.raises(ImageDecodeError, match=f"not valid base64 text.*{reason}"):
        decode_request(rest(images_input([text])))


def test_the_batch_limit_is_checked_before_anything_is_decoded() -> None:
    # Not base64 at all: only a check made before decoding can answer with the batch size.
    request = rest(images_input(["not base64!"] * 5))
    with pytest.raises(BatchTooLargeError, match=r"holds 5 images.*at most 4"):
        decode_request(request, Limits(max_images=4))


# --- outputs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 5])
def test_outputs_have_the_declared_names_datatypes_and_shapes(n: int) -> None:
    probabilities = np.random.default_rng(n).dirichlet(np.ones(NUM_CLASSES), size=n).astype(np.float32)
    result = BatchResult(indices=probabilities.argmax(axis=1).astype(np.int64), probabilities=probabilities)
    outputs = encode_outputs(result)
    assert [(o.name, o.datatype) for o in outputs] == [(name, datatype) for name, datatype, _ in OUTPUT_SPECS]
    assert [o.shape for o in outputs] == [[n], [n], [n, NUM_CLASSES]]
    index, code, probs = outputs
    assert list(index.data.root) == result.indices.tolist()
    assert [c.decode() if isinstance(c, bytes) else c for c in code.data.root] == [
        CODES[i] for i in result.indices
    ]
    np.testing.assert_allclose(np.asarray(probs.data.root, dtype=np.float32).reshape(n, -1), probabilities)


# --- request-wide bounds and strict JSON (issue 9) -------------------------------------------------------


def test_a_request_id_at_the_limit_passes_and_one_more_character_is_refused() -> None:
    from cassava.server.protocol import check_request_id

    check_request_id("x" * 10, 10)
    check_request_id(None, 10)
    with pytest.raises(RequestFormatError, match="11 characters long; at most 10"):
        check_request_id("x" * 11, 10)
    for bad in ("tab\there", "caf\u00e9", "\x7f", "end "):
        with pytest.raises(RequestFormatError, match="printable ASCII"):
            check_request_id(bad, 10)


def test_shapes_must_be_json_integers() -> None:
    from cassava.server.protocol import check_raw_json

    check_raw_json({"inputs": [{"name": "images", "shape": [1, 1]}]})
    check_raw_json("not an object")  # FastAPI's own validation reports it
    for shape in (["1"], [1.0], [True], [1, "2"]):
        with pytest.raises(RequestFormatError, match="non-integer"):
            check_raw_json({"inputs": [{"name": "images", "shape": shape}]})


def test_parameters_are_bounded_by_entries_and_bytes() -> None:
    from mlserver.types import InferenceRequest

    from cassava.server.protocol import RequestBounds, check_request_bounds

    bounds = RequestBounds(max_id_chars=8, max_parameters=3, max_parameters_bytes=100)

    def request(**parameters: object) -> InferenceRequest:
        return InferenceRequest.model_validate(
            {
                "parameters": parameters,
                "inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["x"]}],
            }
        )

    check_request_bounds(request(a=1, b=2, c=3), bounds)
    with pytest.raises(RequestFormatError, match="4 entries; at most 3"):
        check_request_bounds(request(a=1, b=2, c=3, d=4), bounds)
    with pytest.raises(RequestFormatError, match="at most 100 are allowed"):
        check_request_bounds(request(a="x" * 100), bounds)
