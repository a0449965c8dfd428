"""Errors raised by cassava, as one small tree.

    CassavaError
    ├── InputError              the client sent something we cannot classify (HTTP 400 / INVALID_ARGUMENT)
    │   ├── RequestFormatError  inputs missing, unknown, duplicated, wrong datatype or shape
    │   ├── TensorValueError    a float tensor with NaN/Inf or values outside [0, 1]
    │   ├── BatchTooLargeError  more images in one request than `max_images`
    │   ├── ImageDecodeError    empty bytes, not an image, a corrupt or unsupported image
    │   └── ImageTooLargeError  an image over `max_image_pixels` or `max_image_bytes`
    ├── DatasetError            local inputs: a path with no image, a TFDS split that cannot be read
    └── ModelError              a problem on the serving side, never the client's fault
        ├── ModelNotFoundError  no model where we looked
        ├── ModelLoadError      a model directory that does not load or has the wrong interface
        └── FetchError          a download or unpack of the model failed

The runtime turns an `InputError` into MLServer's status-400 error, which MLServer maps to HTTP 400
and gRPC INVALID_ARGUMENT. This module does not import MLServer: the client side of cassava must not,
because MLServer's gRPC stubs and tritonclient's register the same protobuf names and cannot share a
process. Every message names the offending value and what is allowed instead.
"""

from __future__ import annotations

import re

# A quoted or repr'd value inside a library's message: Pillow, numpy and base64 quote pieces of their
# input ("broken PNG file (chunk b'...')", "could not convert string to float: '...'").
_QUOTED = re.compile(r"b?'(?:[^'\\]|\\.)*'|b?\"(?:[^\"\\]|\\.)*\"")
_MAX_REASON = 160


class CassavaError(Exception):
    """Base class of every error cassava raises on purpose."""


class InputError(CassavaError):
    """The request cannot be classified; the message tells the client what to change."""

    #: a short, stable reason used as a metric label (`cassava_rejected_requests_total{reason=...}`)
    reason = "invalid_input"
    status_code = 400


class RequestFormatError(InputError):
    reason = "request_format"


class TensorValueError(InputError):
    reason = "tensor_values"


class BatchTooLargeError(InputError):
    reason = "batch_too_large"


class ImageDecodeError(InputError):
    reason = "image_decode"


class ImageTooLargeError(InputError):
    reason = "image_too_large"


class DatasetError(CassavaError):
    """`cassava predict`'s inputs could not be found or read (a local problem, not a request's)."""


class ModelError(CassavaError):
    """The model could not be found, loaded or fetched."""


class ModelNotFoundError(ModelError):
    pass


class ModelLoadError(ModelError):
    pass


class FetchError(ModelError):
    pass


def safe_reason(err: BaseException) -> str:
    """A library's error message with every quoted value replaced by `<...>`, at most 160 characters.

    Our messages go to the client and, through MLServer's exception logging, to the server log: they
    may describe a request (sizes, shapes, counts) but must never copy its content.
    """
    text = _QUOTED.sub("<...>", str(err)) or type(err).__name__
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."
