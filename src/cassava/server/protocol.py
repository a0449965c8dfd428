"""V2 request -> `DecodedRequest`, and `BatchResult` -> V2 outputs, with MLServer's types and codecs.

The names, datatypes and shapes are in `cassava.contract`. Besides the model's own input checks, the
request-wide bounds every transport shares (`check_request_bounds`: the `id` that MLServer copies into
response headers, the size of `parameters`) and the strict reading of REST JSON that pydantic's lax
mode lets through (`check_raw_json`: shapes given as strings) live here."""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pybase64
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, MetadataTensor, RequestInput, ResponseOutput

from cassava.contract import (
    INPUT_SPECS,
    OUTPUT_CODE,
    OUTPUT_INDEX,
    OUTPUT_PROBABILITIES,
    OUTPUT_SPECS,
    TENSOR_INPUT,
)
from cassava.errors import ImageDecodeError, ImageTooLargeError, RequestFormatError, safe_reason
from cassava.pipeline import BatchResult
from cassava.preprocessing import Limits, check_batch_size

INPUTS = tuple(MetadataTensor(name=n, datatype=d, shape=list(s)) for n, d, s in INPUT_SPECS)
OUTPUTS = tuple(MetadataTensor(name=n, datatype=d, shape=list(s)) for n, d, s in OUTPUT_SPECS)
_EXPECTED = {t.name: t.datatype for t in INPUTS}
_OUTPUT_NAMES = tuple(t.name for t in OUTPUTS)
_ACCEPTED = "'payload' (FP32 [N,224,224,3]) or 'images' (BYTES [N] or [N, 1] of JPEG/PNG files)"
# Bytes that can start a base64 string. JPEG, PNG and TIFF files start with a byte outside it, but GIF
# ("GIF8"), WebP ("RIFF") and BMP ("BM") files can start with four of them, so known file signatures
# are recognised first; base64 text never starts with one (it would decode to no image).
_BASE64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n\r")
_IMAGE_SIGNATURES = (
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"RIFF",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
)


class InvalidRequestError(MLServerError):  # type: ignore[misc]
    """A `cassava.errors.InputError` as MLServer needs it: HTTP 400, gRPC INVALID_ARGUMENT."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status_code=400)


@dataclass(frozen=True)
class RequestBounds:
    """The request-wide bounds (`cassava.settings.CassavaSettings` owns their defaults)."""

    max_id_chars: int
    max_parameters: int
    max_parameters_bytes: int


def check_request_id(request_id: str | None, max_chars: int) -> None:
    """MLServer copies the request `id` into the `ce-id` / `ce-requestid` response headers (REST) and
    gRPC metadata: a non-Latin-1 character, a control character or a leading space breaks the response
    after inference ran, and a long one fills the log. So: printable ASCII, bounded, else 400."""
    if request_id is None:
        return
    if len(request_id) > max_chars:
        raise RequestFormatError(
            f"the request id is {len(request_id):,} characters long; at most {max_chars:,} are allowed "
            "(it is echoed in response headers)"
        )
    if not (request_id.isascii() and request_id.isprintable()) or request_id != request_id.strip():
        raise RequestFormatError(
            "the request id holds characters other than printable ASCII, or leading/trailing spaces; "
            "send an id of printable ASCII characters (it is echoed in response headers)"
        )


def check_parameters(where: str, parameters: Mapping[str, Any] | None, bounds: RequestBounds) -> int:
    """Entries and serialised size of one `parameters` object; returns its size in bytes."""
    if not parameters:
        return 0
    if len(parameters) > bounds.max_parameters:
        raise RequestFormatError(
            f"{where} parameters hold {len(parameters):,} entries; at most {bounds.max_parameters:,} are "
            "allowed"
        )
    size = len(json.dumps(dict(parameters), default=str))
    if size > bounds.max_parameters_bytes:
        raise RequestFormatError(
            f"{where} parameters are {size:,} bytes as JSON; at most {bounds.max_parameters_bytes:,} are "
            "allowed"
        )
    return size


def check_request_bounds(request: InferenceRequest, bounds: RequestBounds) -> None:
    """The request-wide bounds, checked in the server process before the model sees the request."""
    check_request_id(request.id, bounds.max_id_chars)
    # MLServer adds the HTTP headers to `parameters.headers` itself (bounded by the header limits).
    objects = [("the request's", _own_parameters(request.parameters))]
    objects += [(f"input {_quote(i.name)}'s", _own_parameters(i.parameters)) for i in request.inputs]
    objects += [(f"output {_quote(o.name)}'s", _own_parameters(o.parameters)) for o in request.outputs or []]
    total = 0
    for where, params in objects:
        total += check_parameters(where, params, bounds)
        if total > bounds.max_parameters_bytes:
            raise RequestFormatError(
                f"the request's parameters are over {bounds.max_parameters_bytes:,} bytes as JSON in all"
            )


def _own_parameters(parameters: Any) -> dict[str, Any]:
    if parameters is None:
        return {}
    found = (
        parameters.model_dump(exclude_none=True) if hasattr(parameters, "model_dump") else dict(parameters)
    )
    found.pop("headers", None)
    return found


def check_raw_json(body: Any) -> None:
    """What pydantic's lax mode converts silently in a REST body: `"shape": ["1"]` becomes [1]. The OIP
    says shapes are arrays of integers; a string there is the client's bug, so it is refused."""
    inputs = body.get("inputs") if isinstance(body, dict) else None
    for inp in inputs if isinstance(inputs, list) else []:
        shape = inp.get("shape") if isinstance(inp, dict) else None
        if isinstance(shape, list) and not all(type(d) is int for d in shape):
            raise RequestFormatError(
                f"input {_quote(inp.get('name'))} has a shape with non-integer entries; send the shape "
                "as a JSON array of integers, such as [1, 224, 224, 3]"
            )


def requested_outputs(request: InferenceRequest) -> tuple[str, ...]:
    """The outputs the request asks for, in the model's order (all when it names none). Unknown names
    are refused, as Triton does (the OIP lets a client ask for a subset)."""
    if not request.outputs:
        return _OUTPUT_NAMES
    names = [o.name for o in request.outputs]
    unknown = [n for n in names if n not in _OUTPUT_NAMES]
    if unknown:
        raise RequestFormatError(
            f"unknown output {_quote(unknown[0])}; this model's outputs are {', '.join(_OUTPUT_NAMES)}"
        )
    return tuple(n for n in _OUTPUT_NAMES if n in names)


@dataclass(frozen=True)
class DecodedRequest:
    tensor: np.ndarray | None = None
    images: list[bytes] | None = None


def decode_request(request: InferenceRequest, limits: Limits | None = None) -> DecodedRequest:
    """Check the request's form and decode its one input. With `limits`, the batch size and every
    image's size are checked before anything is decoded, so an oversized request costs no decoding."""
    if not request.inputs:
        raise RequestFormatError(f"the request has no inputs; send one input named {_ACCEPTED}")
    names = [inp.name for inp in request.inputs]
    unknown = [n for n in names if n not in _EXPECTED]
    if unknown:
        raise RequestFormatError(f"unknown input {_quote(unknown[0])}; this model takes {_ACCEPTED}")
    if len(names) > 1:
        raise RequestFormatError(
            f"the request has {len(names)} inputs ({', '.join(map(_quote, names[:5]))}); send exactly one: "
            f"{_ACCEPTED}"
        )
    (inp,) = request.inputs
    if inp.datatype != _EXPECTED[inp.name]:
        raise RequestFormatError(
            f"input {inp.name!r} has datatype {inp.datatype}; it must be {_EXPECTED[inp.name]}"
        )
    if inp.name == TENSOR_INPUT:
        return DecodedRequest(tensor=_decode_tensor(inp, limits))
    return DecodedRequest(images=_decode_images(inp, limits))


def _quote(name: object) -> str:
    """An input name as the client wrote it: a field name, not content, so it is quoted (repr escapes
    newlines, so it cannot forge a log line), but cut to 40 characters so it cannot fill one."""
    text = str(name)
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "..."


def _decode_tensor(inp: RequestInput, limits: Limits | None = None) -> np.ndarray:
    shape = list(inp.shape)
    if len(shape) != 4 or shape[1:] != [224, 224, 3]:
        raise RequestFormatError(
            f"input {inp.name!r} has shape {shape}; expected [N, 224, 224, 3] (RGB images resized to "
            "224x224, scaled to [0, 1])"
        )
    if limits is not None:
        check_batch_size(shape[0], limits)
    data = inp.data.root if hasattr(inp.data, "root") else inp.data
    # math.prod: numpy's prod overflows int64 on a hostile shape such as [10**20, 224, 224, 3].
    expected = math.prod(shape)
    count = len(data) if isinstance(data, list | tuple | bytes) else None
    if count is not None and isinstance(data, list | tuple) and data and isinstance(data[0], list):
        count = None  # nested lists: let numpy count them
    if count is not None and count != expected:
        raise RequestFormatError(
            f"input {inp.name!r} declares shape {shape} ({expected:,} values) but carries {count:,} values"
        )
    try:
        array = (
            _strict_numbers(inp, data, shape)
            if isinstance(data, list | tuple)
            else NumpyCodec.decode_input(inp)
        )
    except (ValueError, TypeError, OverflowError, IndexError, KeyError) as err:
        raise RequestFormatError(
            f"input {inp.name!r} could not be read as FP32 {shape}: {safe_reason(err)}"
        ) from None
    if array.size != expected:
        raise RequestFormatError(
            f"input {inp.name!r} declares shape {shape} ({expected:,} values) but carries {array.size:,}"
        )
    return np.asarray(array, dtype=np.float32).reshape(shape)


def _strict_numbers(inp: RequestInput, data: list[Any] | tuple[Any, ...], shape: list[int]) -> np.ndarray:
    """JSON numbers, flat or nested exactly as `shape` says: numpy would also read "0.5" and ragged or
    re-nested lists, which are the client's bugs."""
    array = np.asarray(data)
    if array.dtype.kind not in "fiub":
        raise RequestFormatError(
            f"input {inp.name!r} holds values that are not numbers (strings or nested lists of unequal "
            "length); send FP32 data as JSON numbers"
        )
    if array.ndim != 1 and list(array.shape) != shape:
        raise RequestFormatError(
            f"input {inp.name!r} declares shape {shape} but its data is nested as {list(array.shape)}; "
            "send a flat list or lists nested exactly as the shape"
        )
    return array


def _decode_images(inp: RequestInput, limits: Limits | None = None) -> list[bytes]:
    data: Any = inp.data.root if hasattr(inp.data, "root") else inp.data
    if isinstance(data, bytes | str):
        data = [data]
    if not isinstance(data, list | tuple):
        raise RequestFormatError(
            f"input {inp.name!r} carries a {type(data).__name__}; send a list of encoded images"
        )
    items = list(data)
    if items and all(isinstance(item, list) for item in items):
        # [[img], [img]]: the nested JSON form of shape [N, 1]
        items = [image for row in items for image in row]
    # [N] and [N, 1] are both one image per element (MLServer's own Base64Codec and StringCodec build
    # [N, 1]); any shape with N elements is read that way.
    shape = list(inp.shape)
    if not shape or min(shape) < 0 or math.prod(shape) != len(items):
        raise RequestFormatError(
            f"input {inp.name!r} has shape {shape} but carries {len(items)} items; "
            "expected shape [N] (or [N, 1]) with one encoded image per element"
        )
    if not items:
        raise RequestFormatError(f"input {inp.name!r} holds no images; send at least one encoded image")
    if limits is not None:
        check_batch_size(len(items), limits)
    return [_as_image_bytes(item, i, len(items), limits) for i, item in enumerate(items)]


def _b64decode(where: str, text: bytes, limits: Limits | None) -> bytes:
    """Decode base64 text, refusing it before decoding when the file it holds is over the limit."""
    text = b"".join(text.split())
    # 4 characters carry 3 bytes, less one per '=' of padding: the decoded size, known up front.
    _check_size(where, len(text) * 3 // 4 - text[-2:].count(b"="), limits, " once base64-decoded")
    # pybase64 (SIMD) decodes a 67 KiB photo in 8 us where the standard library takes 290 us: 4.6 ms of
    # a 16-image REST request (benchmarks/performance_notes.md). Its only error is "Non-base64 digit
    # found" and it is stricter about padding, so text it refuses goes to the standard library, which
    # decides and says why.
    try:
        return pybase64.b64decode(text, validate=True)
    except binascii.Error:
        return base64.b64decode(text, validate=True)


def _check_size(where: str, size: int, limits: Limits | None, how: str = "") -> None:
    if limits is not None and size > limits.max_image_bytes:
        raise ImageTooLargeError(
            f"{where} is {size:,} bytes{how}; the limit is {limits.max_image_bytes:,} bytes per image "
            "(send a smaller JPEG)"
        )


def _as_image_bytes(item: Any, index: int, count: int, limits: Limits | None = None) -> bytes:
    where = "image" if count == 1 else f"image #{index}"
    if isinstance(item, str):
        # Only JSON (REST) gives strings, and JSON cannot carry raw file bytes: it must be base64.
        raw = item.encode("ascii", errors="replace")
        try:
            return _b64decode(where, raw, limits)
        except (binascii.Error, ValueError) as err:
            raise ImageDecodeError(
                f"{where} is not valid base64 text ({len(item):,} characters: {safe_reason(err)}); "
                "in JSON, send each image file's bytes base64-encoded"
            ) from None
    if not isinstance(item, bytes | bytearray):
        raise RequestFormatError(
            f"{where} is a {type(item).__name__}; send the file's bytes (base64 in JSON)"
        )
    raw = bytes(item)
    if raw and not raw.startswith(_IMAGE_SIGNATURES) and set(raw[:4]) <= _BASE64_ALPHABET:
        try:
            return _b64decode(where, raw, limits)
        except (binascii.Error, ValueError) as err:
            raise ImageDecodeError(
                f"{where} is neither image bytes nor valid base64 text ({len(raw):,} bytes: "
                f"{safe_reason(err)}); send the file's bytes"
            ) from None
    _check_size(where, len(raw), limits)
    return raw


def encode_outputs(result: BatchResult, names: tuple[str, ...] = _OUTPUT_NAMES) -> list[ResponseOutput]:
    """The outputs named in `names` (see `requested_outputs`), in the model's order."""
    outputs = [
        NumpyCodec.encode_output(OUTPUT_INDEX, result.indices),
        StringCodec.encode_output(OUTPUT_CODE, result.codes),
        NumpyCodec.encode_output(OUTPUT_PROBABILITIES, result.probabilities),
    ]
    # The codecs describe a 1-D array as [N, 1]; the declared outputs are [N] and [N, 6].
    outputs[0].shape = outputs[1].shape = [len(result.indices)]
    return [output for output in outputs if output.name in names]
