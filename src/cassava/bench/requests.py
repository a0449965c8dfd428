"""Requests a run cycles through, built before the clock starts, as a client of each transport builds
them: through `cassava.client`'s input builders (tritonclient), except for the seed's JSON body."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from cassava.client import Transport, images_input, images_request_payload, rest_outputs
from cassava.contract import IMAGES_INPUT, INPUT_SPECS, TENSOR_INPUT
from cassava.preprocessing import Limits, preprocess_images

Encoding = Literal["bytes", "tensor"]
Mode = Literal["rest", "grpc", "in-process"]

# Distinct prepared requests are cycled through; a tensor request of 16 images is 48.8 MB of JSON, so
# only a few of those are kept.
MAX_DISTINCT_REQUESTS = 64
MAX_DISTINCT_TENSOR_REQUESTS = 4

_TENSOR_DATATYPE = next(datatype for name, datatype, _ in INPUT_SPECS if name == TENSOR_INPUT)
# MLServer's NumpyCodec content type, written out: this package must not import MLServer (see
# `cassava.bench`); tests/unit/test_bench.py checks the body against the codec itself.
_NUMPY_CONTENT_TYPE = "np"


@dataclass(frozen=True)
class Prepared:
    payload: Any  # REST: the JSON body; gRPC: the InferInputs; in-process: the encoded images
    images: int
    nbytes: int  # request body (REST) or tensor contents (gRPC)


def seed_request_json(batch: np.ndarray) -> bytes:
    """The seed tutorial's request: `NumpyCodec.encode_input(name="payload", payload=batch)` in a V2
    request, serialised as `requests.post(json=...)` does.

    Not built with `cassava.client.tensor_input`: tritonclient's JSON tensor has no `content_type`
    parameter, so it is not the seed's body, and it converts the 2.4 million floats of a 16-image batch
    one `.item()` at a time, where the seed's `tolist()` + `json.dumps` is what `--encode-each` times."""
    batch = np.asarray(batch, dtype=np.float32)
    request = {
        "inputs": [
            {
                "name": TENSOR_INPUT,
                "shape": list(batch.shape),
                "datatype": _TENSOR_DATATYPE,
                "parameters": {"content_type": _NUMPY_CONTENT_TYPE},
                "data": batch.ravel().tolist(),
            }
        ]
    }
    return json.dumps(request).encode()


def batches_of(images: Sequence[bytes], batch: int, limit: int) -> list[list[bytes]]:
    """Consecutive groups of `batch` images, wrapping around, enough to use every image once (at most
    `limit` groups)."""
    if not images:
        raise ValueError("no images to send")
    count = min(limit, max(1, math.ceil(len(images) / batch)))
    return [[images[(k * batch + j) % len(images)] for j in range(batch)] for k in range(count)]


def build_request(group: Sequence[bytes], *, mode: Transport, encoding: Encoding) -> Prepared:
    """One request for `group`, as a client of that transport and encoding builds it."""
    batch = len(group)
    if encoding == "tensor":
        # The seed's client preprocesses the images itself, with the same pipeline as the server.
        tensor = preprocess_images(group, Limits(max_images=max(batch, Limits.max_images)))
        if mode == "rest":
            body = seed_request_json(tensor)
            return Prepared(body, batch, len(body))
        return Prepared(grpc_request(TENSOR_INPUT, tensor), batch, tensor.nbytes)
    if mode == "rest":
        import tritonclient.http as httpclient

        inputs = [images_input(httpclient, group, "rest")]
        body, _ = httpclient.InferenceServerClient.generate_request_body(
            inputs, outputs=rest_outputs(httpclient)
        )
        return Prepared(body, batch, len(body))
    # Triton's BYTES serialisation: a 4-byte length before each element.
    nbytes = sum(len(data) + 4 for data in group)
    return Prepared(grpc_request(IMAGES_INPUT, list(group)), batch, nbytes)


def grpc_request(name: str, data: np.ndarray | list[bytes]) -> bytes:
    """A serialised `ModelInferRequest` with one input and no model name: what tritonclient's gRPC
    client sends for `cassava.client.images_input` / `tensor_input` (BYTES as Triton's length-prefixed
    serialisation, FP32 as raw little-endian floats).

    The REST driver sends JSON bodies serialised before the clock starts; this is the same for gRPC, so
    that the client's per-request work is the sockets, not rebuilding (and copying) the same protobuf.
    The driver prefixes the serialised model name: concatenated protobuf messages merge."""
    from tritonclient.grpc import service_pb2
    from tritonclient.utils import serialize_byte_tensor

    request = service_pb2.ModelInferRequest()
    if name == IMAGES_INPUT:
        array = images_request_payload(list(data), "grpc")
        content = bytes(serialize_byte_tensor(array).item())
        request.inputs.add(name=name, datatype="BYTES", shape=[len(array)])
    else:
        tensor = np.ascontiguousarray(data, dtype="<f4")
        content = tensor.tobytes()
        request.inputs.add(name=name, datatype=_TENSOR_DATATYPE, shape=list(tensor.shape))
    request.raw_input_contents.append(content)
    return bytes(request.SerializeToString())


def prepare_requests(
    images: Sequence[bytes], *, mode: Mode, encoding: Encoding = "bytes", batch: int = 1
) -> list[Prepared]:
    """The requests a run cycles through, built before the clock starts (in-process: the groups)."""
    if mode == "in-process":
        return [Prepared(group, batch, sum(map(len, group))) for group in batches_of(images, batch, 10**6)]
    limit = MAX_DISTINCT_TENSOR_REQUESTS if encoding == "tensor" else MAX_DISTINCT_REQUESTS
    return [build_request(group, mode=mode, encoding=encoding) for group in batches_of(images, batch, limit)]
