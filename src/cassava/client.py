"""A client for the cassava model's V2 API over REST or gRPC, built on tritonclient.

    with CassavaClient.connect("http://localhost:8080") as client:
        result = client.classify_images([open("leaf.jpg", "rb").read()])

`target` is a URL for REST (`http://host:port`, optionally with a path prefix such as the Seldon
ingress `http://host/seldon/NAMESPACE/cassava`) or `grpc://host:port` for gRPC. MLServer does not speak
Triton's binary-tensor extension, so REST requests carry JSON tensors: image bytes as base64 strings,
which the server decodes. gRPC carries raw bytes.
"""

from __future__ import annotations

import base64
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlparse

import numpy as np

from cassava.contract import (
    GRPC_MAX_MESSAGE_LENGTH,
    IMAGES_INPUT,
    MODEL_NAME,
    OUTPUT_INDEX,
    OUTPUT_PROBABILITIES,
    TENSOR_INPUT,
)
from cassava.errors import CassavaError
from cassava.pipeline import BatchResult

Transport = Literal["rest", "grpc"]


class InferenceRequestError(CassavaError):
    """The server answered with an error (its message is kept), or could not be reached."""

    def __init__(self, message: str, status: str = "") -> None:
        super().__init__(message)
        #: the HTTP status ("400", "503") or gRPC code ("StatusCode.INVALID_ARGUMENT"); "" when none came
        self.status = status

    @property
    def retryable(self) -> bool:
        """Worth sending again: nothing answered, or the server said it is briefly unavailable. A
        4xx is the request's own fault and fails the same way every time."""
        return isinstance(self, ServerUnreachableError) or self.status in _RETRYABLE_STATUSES

    @property
    def rejected_input(self) -> bool:
        """The server refused the request's content (HTTP 400 / INVALID_ARGUMENT)."""
        return self.status in ("400", "StatusCode.INVALID_ARGUMENT")


class ServerUnreachableError(InferenceRequestError):
    """No answer at all: connection refused, unknown host, or no reply within the timeout."""


# MLServer's ModelMetadataResponse carries `parameters` as field 6; tritonclient's copy of the proto
# stops at field 5, so protobuf keeps them as unknown fields. Same entry type as ModelInferResponse's.
_GRPC_METADATA_PARAMETERS_FIELD = 6
_UNREACHABLE_GRPC_STATUSES = frozenset({"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED"})
# 503: MLServer while a worker is replaced or the server drains (cassava.server.app), and what an
# ingress answers while no pod is ready. gRPC's twin, UNAVAILABLE, is already "unreachable".
_RETRYABLE_STATUSES = frozenset({"503"})


@dataclass(frozen=True)
class Target:
    transport: Transport
    address: str  # host:port[/path] as tritonclient wants it
    ssl: bool = False

    @classmethod
    def parse(cls, target: str) -> Target:
        parsed = urlparse(target if "://" in target else f"http://{target}")
        if parsed.scheme == "grpc":
            return cls("grpc", parsed.netloc)
        if parsed.scheme in ("http", "https"):
            path = parsed.path.rstrip("/")
            for suffix in (f"/v2/models/{MODEL_NAME}/infer", f"/v2/models/{MODEL_NAME}", "/v2"):
                if path.endswith(suffix):
                    path = path[: -len(suffix)]
                    break
            return cls("rest", parsed.netloc + path, ssl=parsed.scheme == "https")
        raise ValueError(f"unsupported target {target!r}; use http(s)://HOST:PORT[/PATH] or grpc://HOST:PORT")


def images_request_payload(images: Sequence[bytes], transport: Transport) -> np.ndarray:
    """The `images` input as tritonclient wants it: raw bytes for gRPC, base64 text for JSON."""
    if transport == "grpc":
        return np.array(list(images), dtype=np.object_)
    return np.array([base64.b64encode(data) for data in images], dtype=np.object_)


# Request building, shared by `CassavaClient` and the load generator (`cassava.bench`). `lib` is the
# tritonclient module of the transport: `tritonclient.http` or `tritonclient.grpc` (their aio clients
# take the same InferInput objects).


def images_input(lib: Any, images: Sequence[bytes], transport: Transport) -> Any:
    """The `images` input [N] BYTES as a tritonclient InferInput."""
    data = images_request_payload(images, transport)
    inp = lib.InferInput(IMAGES_INPUT, [len(data)], "BYTES")
    _set_data(inp, data, transport)
    return inp


def tensor_input(lib: Any, batch: np.ndarray, transport: Transport) -> Any:
    """The `payload` input, float32 [N, 224, 224, 3], as a tritonclient InferInput."""
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    inp = lib.InferInput(TENSOR_INPUT, list(batch.shape), "FP32")
    _set_data(inp, batch, transport)
    return inp


def rest_outputs(lib: Any) -> list[Any]:
    """The outputs a REST request asks for, as JSON: MLServer has no binary-tensor extension."""
    names = (OUTPUT_INDEX, OUTPUT_PROBABILITIES)
    return [lib.InferRequestedOutput(name, binary_data=False) for name in names]


def _set_data(inp: Any, data: np.ndarray, transport: Transport) -> None:
    if transport == "grpc":
        inp.set_data_from_numpy(data)
    else:
        inp.set_data_from_numpy(data, binary_data=False)


@dataclass(frozen=True)
class Retry:
    """How often, and how patiently, a request is sent again after a retryable failure
    (`InferenceRequestError.retryable`): exponential backoff with full jitter, so that clients
    that failed together do not come back together."""

    attempts: int = 4  # in all, the first included
    first_delay_s: float = 0.25
    max_delay_s: float = 8.0

    def delays(self) -> list[float]:
        return [
            random.uniform(0, min(self.max_delay_s, self.first_delay_s * 2**n))
            for n in range(max(0, self.attempts - 1))
        ]


NO_RETRY = Retry(attempts=1)


class CassavaClient:
    def __init__(
        self,
        target: str,
        *,
        model: str = MODEL_NAME,
        timeout: float = 60.0,
        headers: Mapping[str, str] | None = None,
        retry: Retry = NO_RETRY,
        on_retry: Callable[[InferenceRequestError, float], None] | None = None,
    ) -> None:
        """`headers` go with every call (REST headers, gRPC metadata): what an ingress routes on
        (`Seldon-Model`, `Host`) or authenticates with (`Authorization`). `on_retry(error, delay)` is
        told about each retry before its wait."""
        self.target = Target.parse(target)
        self.model = model
        self.timeout = timeout
        # gRPC metadata keys must be lower case; HTTP header names are case-insensitive anyway.
        self.headers = {name.lower(): value for name, value in (headers or {}).items()}
        self.retry = retry
        self.on_retry = on_retry
        if self.target.transport == "grpc":
            import tritonclient.grpc as grpcclient

            self._lib: Any = grpcclient
            self._client: Any = grpcclient.InferenceServerClient(
                self.target.address,
                channel_args=[
                    ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_LENGTH),
                    ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_LENGTH),
                ],
            )
        else:
            import tritonclient.http as httpclient

            self._lib = httpclient
            self._client = httpclient.InferenceServerClient(
                self.target.address,
                ssl=self.target.ssl,
                connection_timeout=timeout,
                network_timeout=timeout,
            )

    @classmethod
    def connect(cls, target: str, **kwargs: Any) -> CassavaClient:
        return cls(target, **kwargs)

    def __enter__(self) -> CassavaClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    # -- health and metadata ---------------------------------------------------------------------

    def is_ready(self) -> bool:
        try:
            return bool(self._client.is_model_ready(self.model, **self._call_kwargs()))
        except Exception:
            return False

    def metadata(self) -> dict[str, Any]:
        """`GET /v2/models/cassava`, or its gRPC twin, as the REST JSON dict (with `parameters`)."""
        message = self._call(self._client.get_model_metadata, self.model, **self._call_kwargs())
        if self.target.transport == "rest":
            return dict(message)
        from google.protobuf.json_format import MessageToDict

        metadata: dict[str, Any] = MessageToDict(message, preserving_proto_field_name=True)
        for tensor in (*metadata.get("inputs", ()), *metadata.get("outputs", ())):
            # protobuf's JSON mapping writes int64 as strings; REST gives numbers.
            tensor["shape"] = [int(dim) for dim in tensor.get("shape", ())]
        if parameters := _grpc_metadata_parameters(message):
            metadata["parameters"] = parameters
        return metadata

    def _call_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"headers": self.headers} if self.headers else {}
        if self.target.transport == "grpc":
            # Without a deadline a gRPC call to an address that accepts but never answers waits ~20 s.
            kwargs["client_timeout"] = self.timeout
        return kwargs

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`method(*args, **kwargs)`, sent again after each retryable failure while `retry` allows."""
        delays = self.retry.delays()
        while True:
            try:
                return method(*args, **kwargs)
            except Exception as err:  # tritonclient raises InferenceServerException and transport errors
                error = _request_error(err)
                if not (error.retryable and delays):
                    raise error from err
            delay = delays.pop(0)
            if self.on_retry is not None:
                self.on_retry(error, delay)
            time.sleep(delay)

    # -- inference ---------------------------------------------------------------------------------

    def classify_images(self, images: Sequence[bytes]) -> BatchResult:
        """Send encoded image files; the server decodes and preprocesses them."""
        return self._infer(images_input(self._lib, images, self.target.transport))

    def classify_tensor(self, batch: np.ndarray) -> BatchResult:
        """Send a preprocessed float32 [N, 224, 224, 3] tensor, the seed's request."""
        return self._infer(tensor_input(self._lib, batch, self.target.transport))

    def _infer(self, inp: Any) -> BatchResult:
        kwargs = self._call_kwargs()
        if self.target.transport == "rest":
            kwargs["outputs"] = rest_outputs(self._lib)
        response = self._call(self._client.infer, self.model, [inp], **kwargs)
        indices = np.asarray(response.as_numpy(OUTPUT_INDEX)).reshape(-1).astype(np.int64)
        probabilities = np.asarray(response.as_numpy(OUTPUT_PROBABILITIES), dtype=np.float32)
        return BatchResult(indices=indices, probabilities=probabilities.reshape(len(indices), -1))


def _server_message(err: Exception) -> str:
    message = err.message() if hasattr(err, "message") and callable(err.message) else str(err)
    return str(message)


def _request_error(err: Exception) -> InferenceRequestError:
    # tritonclient.http lets socket errors through (refused, DNS, timeout: all OSError);
    # tritonclient.grpc wraps them in InferenceServerException with the gRPC status.
    status = str(err.status()) if hasattr(err, "status") and callable(err.status) else ""
    if isinstance(err, OSError) or status in _UNREACHABLE_GRPC_STATUSES:
        return ServerUnreachableError(_server_message(err) or type(err).__name__, status)
    return InferenceRequestError(_server_message(err), status)


def _grpc_metadata_parameters(message: Any) -> dict[str, Any]:
    from google.protobuf.unknown_fields import UnknownFieldSet
    from tritonclient.grpc import service_pb2

    parameters: dict[str, Any] = {}
    for field in UnknownFieldSet(message):
        if field.field_number != _GRPC_METADATA_PARAMETERS_FIELD:
            continue
        entry = service_pb2.ModelInferResponse.ParametersEntry.FromString(field.data)
        choice = entry.value.WhichOneof("parameter_choice")
        if choice is not None:
            parameters[entry.key] = getattr(entry.value, choice)
    return parameters
