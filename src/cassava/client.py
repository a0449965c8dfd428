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
from collections.abc import Sequence
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
from cassava.labels import LABELS

Transport = Literal["rest", "grpc"]


class InferenceRequestError(CassavaError):
    """The server answered with an error (its message is kept), or could not be reached."""


@dataclass(frozen=True)
class RemoteResult:
    indices: np.ndarray  # int64 [N]
    probabilities: np.ndarray  # float32 [N, 6]

    @property
    def codes(self) -> list[str]:
        return [LABELS[int(i)].code for i in self.indices]


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


class CassavaClient:
    def __init__(self, target: str, *, model: str = MODEL_NAME, timeout: float = 60.0) -> None:
        self.target = Target.parse(target)
        self.model = model
        self.timeout = timeout
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
            return bool(self._client.is_model_ready(self.model))
        except Exception:
            return False

    def metadata(self) -> dict[str, Any]:
        if self.target.transport == "grpc":
            return dict(self._client.get_model_metadata(self.model, as_json=True))
        return dict(self._client.get_model_metadata(self.model))

    # -- inference ---------------------------------------------------------------------------------

    def classify_images(self, images: Sequence[bytes]) -> RemoteResult:
        """Send encoded image files; the server decodes and preprocesses them."""
        data = images_request_payload(images, self.target.transport)
        inp = self._lib.InferInput(IMAGES_INPUT, [len(data)], "BYTES")
        self._set(inp, data)
        return self._infer(inp)

    def classify_tensor(self, batch: np.ndarray) -> RemoteResult:
        """Send a preprocessed float32 [N, 224, 224, 3] tensor, the seed's request."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        inp = self._lib.InferInput(TENSOR_INPUT, list(batch.shape), "FP32")
        self._set(inp, batch)
        return self._infer(inp)

    def _set(self, inp: Any, data: np.ndarray) -> None:
        if self.target.transport == "grpc":
            inp.set_data_from_numpy(data)
        else:
            inp.set_data_from_numpy(data, binary_data=False)

    def _infer(self, inp: Any) -> RemoteResult:
        kwargs: dict[str, Any] = {}
        if self.target.transport == "rest":
            kwargs["outputs"] = [
                self._lib.InferRequestedOutput(name, binary_data=False)
                for name in (OUTPUT_INDEX, OUTPUT_PROBABILITIES)
            ]
        else:
            kwargs["client_timeout"] = self.timeout
        try:
            response = self._client.infer(self.model, [inp], **kwargs)
        except Exception as err:  # tritonclient raises InferenceServerException and transport errors
            raise InferenceRequestError(_server_message(err)) from err
        indices = np.asarray(response.as_numpy(OUTPUT_INDEX)).reshape(-1).astype(np.int64)
        probabilities = np.asarray(response.as_numpy(OUTPUT_PROBABILITIES), dtype=np.float32)
        return RemoteResult(indices=indices, probabilities=probabilities.reshape(len(indices), -1))


def _server_message(err: Exception) -> str:
    message = err.message() if hasattr(err, "message") and callable(err.message) else str(err)
    return str(message)
