"""gRPC calls through tritonclient, run in the `grpc_pool` process (see tests/conftest.py).

Everything here is a module-level function of picklable arguments and results, so that the spawned
process can import it by name (`pythonpath` in pyproject.toml puts this folder on its sys.path).
The pytest process imports MLServer and must never import `tritonclient.grpc`; this module only
imports it inside the functions, which run in the clean process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cassava.client import CassavaClient, InferenceRequestError
from cassava.contract import MODEL_NAME


@dataclass(frozen=True)
class Input:
    """One request input; `declared_shape` overrides the shape the array gives (to send a mismatch)."""

    name: str
    datatype: str
    data: np.ndarray
    declared_shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status: str = ""  # e.g. "StatusCode.INVALID_ARGUMENT"
    message: str = ""
    indices: np.ndarray | None = None


def metadata(target: str) -> dict[str, Any]:
    with CassavaClient(f"grpc://{target}") as client:
        return client.metadata()


def is_ready(target: str) -> bool:
    with CassavaClient(f"grpc://{target}", timeout=10) as client:
        return client.is_ready()


def classify_images(target: str, images: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    with CassavaClient(f"grpc://{target}") as client:
        result = client.classify_images(images)
    return result.indices, result.probabilities


def classify_tensor(target: str, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with CassavaClient(f"grpc://{target}") as client:
        result = client.classify_tensor(batch)
    return result.indices, result.probabilities


def classify_images_outcome(target: str, images: list[bytes]) -> Outcome:
    """Like `classify_images`, but a refusal is returned rather than raised."""
    try:
        indices, _ = classify_images(target, images)
    except InferenceRequestError as err:
        cause = err.__cause__
        status = str(cause.status()) if cause is not None and hasattr(cause, "status") else ""
        return Outcome(ok=False, status=status, message=str(err))
    return Outcome(ok=True, indices=indices)


def infer_raw(target: str, inputs: list[Input], timeout: float = 60.0) -> Outcome:
    """Send exactly these inputs with tritonclient's own request builder, nothing checked here."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from cassava.contract import GRPC_MAX_MESSAGE_LENGTH

    client = grpcclient.InferenceServerClient(
        target,
        channel_args=[
            ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_LENGTH),
            ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_LENGTH),
        ],
    )
    try:
        request_inputs = []
        for spec in inputs:
            inp = grpcclient.InferInput(spec.name, list(spec.data.shape), spec.datatype)
            inp.set_data_from_numpy(spec.data)
            if spec.declared_shape is not None:
                # After the data: tritonclient checks the array against the shape only when setting it.
                inp.set_shape(list(spec.declared_shape))
            request_inputs.append(inp)
        try:
            response = client.infer(MODEL_NAME, request_inputs, client_timeout=timeout)
        except InferenceServerException as err:
            return Outcome(ok=False, status=str(err.status()), message=str(err.message()))
        return Outcome(ok=True, indices=response.as_numpy("class_index"))
    finally:
        client.close()
