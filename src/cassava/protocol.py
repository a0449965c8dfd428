"""V2 request -> `DecodedRequest`, and `BatchResult` -> V2 outputs, with MLServer's types and codecs.

The names, datatypes and shapes are in `cassava.contract`."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import numpy as np
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, MetadataTensor, RequestInput, ResponseOutput

from cassava.contract import (
    INPUT_SPECS,
    OUTPUT_CODE,
    OUTPUT_INDEX,
    OUTPUT_PROBABILITIES,
    OUTPUT_SPECS,
    TENSOR_INPUT,
)
from cassava.errors import ImageDecodeError, RequestFormatError
from cassava.pipeline import BatchResult

INPUTS = tuple(MetadataTensor(name=n, datatype=d, shape=list(s)) for n, d, s in INPUT_SPECS)
OUTPUTS = tuple(MetadataTensor(name=n, datatype=d, shape=list(s)) for n, d, s in OUTPUT_SPECS)
_EXPECTED = {t.name: t.datatype for t in INPUTS}
_ACCEPTED = "'payload' (FP32 [N,224,224,3]) or 'images' (BYTES [N] of JPEG/PNG files)"
# Bytes that can start a base64 string; no JPEG, PNG, GIF, WebP or BMP file starts with one of them
# in its first 4 bytes, so raw files and base64 text can be told apart without guessing.
_BASE64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n\r")


@dataclass(frozen=True)
class DecodedRequest:
    tensor: np.ndarray | None = None
    images: list[bytes] | None = None


def decode_request(request: InferenceRequest) -> DecodedRequest:
    if not request.inputs:
        raise RequestFormatError(f"the request has no inputs; send one input named {_ACCEPTED}")
    names = [inp.name for inp in request.inputs]
    unknown = [n for n in names if n not in _EXPECTED]
    if unknown:
        raise RequestFormatError(f"unknown input {unknown[0]!r}; this model takes {_ACCEPTED}")
    if len(names) > 1:
        raise RequestFormatError(
            f"the request has {len(names)} inputs ({', '.join(map(repr, names))}); send exactly one: "
            f"{_ACCEPTED}"
        )
    (inp,) = request.inputs
    if inp.datatype != _EXPECTED[inp.name]:
        raise RequestFormatError(
            f"input {inp.name!r} has datatype {inp.datatype}; it must be {_EXPECTED[inp.name]}"
        )
    if inp.name == TENSOR_INPUT:
        return DecodedRequest(tensor=_decode_tensor(inp))
    return DecodedRequest(images=_decode_images(inp))


def _decode_tensor(inp: RequestInput) -> np.ndarray:
    shape = list(inp.shape)
    if len(shape) != 4 or shape[1:] != [224, 224, 3]:
        raise RequestFormatError(
            f"input {inp.name!r} has shape {shape}; expected [N, 224, 224, 3] (RGB images resized to "
            "224x224, scaled to [0, 1])"
        )
    data = inp.data.root if hasattr(inp.data, "root") else inp.data
    expected = int(np.prod(shape))
    count = len(data) if isinstance(data, list | tuple | bytes) else None
    if count is not None and isinstance(data, list | tuple) and data and isinstance(data[0], list):
        count = None  # nested lists: let numpy count them
    if count is not None and count != expected:
        raise RequestFormatError(
            f"input {inp.name!r} declares shape {shape} ({expected:,} values) but carries {count:,} values"
        )
    try:
        array = NumpyCodec.decode_input(inp)
    except (ValueError, TypeError) as err:
        raise RequestFormatError(f"input {inp.name!r} could not be read as FP32 {shape}: {err}") from None
    if array.size != expected:
        raise RequestFormatError(
            f"input {inp.name!r} declares shape {shape} ({expected:,} values) but carries {array.size:,}"
        )
    return np.asarray(array, dtype=np.float32).reshape(shape)


def _decode_images(inp: RequestInput) -> list[bytes]:
    data: Any = inp.data.root if hasattr(inp.data, "root") else inp.data
    if isinstance(data, bytes | str):
        data = [data]
    items = list(data)
    if len(inp.shape) != 1 or inp.shape[0] != len(items):
        raise RequestFormatError(
            f"input {inp.name!r} has shape {list(inp.shape)} but carries {len(items)} items; "
            "expected shape [N] with one encoded image per item"
        )
    return [_as_image_bytes(item, i, len(items)) for i, item in enumerate(items)]


def _as_image_bytes(item: Any, index: int, count: int) -> bytes:
    where = "image" if count == 1 else f"image #{index}"
    if isinstance(item, str):
        raw = item.encode("ascii", errors="replace")
    elif isinstance(item, bytes | bytearray):
        raw = bytes(item)
    else:
        raise RequestFormatError(
            f"{where} is a {type(item).__name__}; send the file's bytes (base64 in JSON)"
        )
    if raw and set(raw[:4]) <= _BASE64_ALPHABET:
        try:
            return base64.b64decode(b"".join(raw.split()), validate=True)
        except (binascii.Error, ValueError):
            raise ImageDecodeError(
                f"{where} is neither image bytes nor valid base64 text ({len(raw)} bytes starting "
                f"{raw[:8]!r})"
            ) from None
    return raw


def encode_outputs(result: BatchResult) -> list[ResponseOutput]:
    outputs = [
        NumpyCodec.encode_output(OUTPUT_INDEX, result.indices),
        StringCodec.encode_output(OUTPUT_CODE, result.codes),
        NumpyCodec.encode_output(OUTPUT_PROBABILITIES, result.probabilities),
    ]
    # The codecs describe a 1-D array as [N, 1]; the declared outputs are [N] and [N, 6].
    outputs[0].shape = outputs[1].shape = [len(result.indices)]
    return outputs
