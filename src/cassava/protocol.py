"""V2 request -> `DecodedRequest`, and `BatchResult` -> V2 outputs, with MLServer's types and codecs.

The names, datatypes and shapes are in `cassava.contract`."""

from __future__ import annotations

import base64
import binascii
import math
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
from cassava.errors import ImageDecodeError, ImageTooLargeError, RequestFormatError, safe_reason
from cassava.pipeline import BatchResult
from cassava.preprocessing import Limits, check_batch_size

INPUTS = tuple(MetadataTensor(name=n, datatype=d, shape=list(s)) for n, d, s in INPUT_SPECS)
OUTPUTS = tuple(MetadataTensor(name=n, datatype=d, shape=list(s)) for n, d, s in OUTPUT_SPECS)
_EXPECTED = {t.name: t.datatype for t in INPUTS}
_ACCEPTED = "'payload' (FP32 [N,224,224,3]) or 'images' (BYTES [N] of JPEG/PNG files)"
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
        array = NumpyCodec.decode_input(inp)
    except (ValueError, TypeError, OverflowError, IndexError, KeyError) as err:
        raise RequestFormatError(
            f"input {inp.name!r} could not be read as FP32 {shape}: {safe_reason(err)}"
        ) from None
    if array.size != expected:
        raise RequestFormatError(
            f"input {inp.name!r} declares shape {shape} ({expected:,} values) but carries {array.size:,}"
        )
    return np.asarray(array, dtype=np.float32).reshape(shape)


def _decode_images(inp: RequestInput, limits: Limits | None = None) -> list[bytes]:
    data: Any = inp.data.root if hasattr(inp.data, "root") else inp.data
    if isinstance(data, bytes | str):
        data = [data]
    if not isinstance(data, list | tuple):
        raise RequestFormatError(
            f"input {inp.name!r} carries a {type(data).__name__}; send a list of encoded images"
        )
    items = list(data)
    if len(inp.shape) != 1 or inp.shape[0] != len(items):
        raise RequestFormatError(
            f"input {inp.name!r} has shape {list(inp.shape)} but carries {len(items)} items; "
            "expected shape [N] with one encoded image per item"
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


def encode_outputs(result: BatchResult) -> list[ResponseOutput]:
    outputs = [
        NumpyCodec.encode_output(OUTPUT_INDEX, result.indices),
        StringCodec.encode_output(OUTPUT_CODE, result.codes),
        NumpyCodec.encode_output(OUTPUT_PROBABILITIES, result.probabilities),
    ]
    # The codecs describe a 1-D array as [N, 1]; the declared outputs are [N] and [N, 6].
    outputs[0].shape = outputs[1].shape = [len(result.indices)]
    return outputs
