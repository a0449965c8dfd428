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
    outputs: tuple[str, ...] = ()
    seconds: float = 0.0


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


def infer_images(
    target: str,
    images: list[bytes],
    *,
    shape: list[int] | None = None,
    request_id: str = "",
    parameters: dict[str, Any] | None = None,
    outputs: list[str] | None = None,
    timeout: float = 120.0,
) -> Outcome:
    """`images` as tritonclient builds them (BYTES, raw contents), with the request's id, parameters and
    requested outputs; `shape` e.g. [N, 1] as MLServer's own codecs send it."""
    import time

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
    data = np.array(images, dtype=np.object_).reshape(shape or [len(images)])
    inp = grpcclient.InferInput("images", list(data.shape), "BYTES")
    inp.set_data_from_numpy(data)
    requested = [grpcclient.InferRequestedOutput(name) for name in outputs] if outputs else None
    started = time.perf_counter()
    try:
        response = client.infer(
            MODEL_NAME,
            [inp],
            request_id=request_id,
            parameters=parameters,
            outputs=requested,
            client_timeout=timeout,
        )
    except InferenceServerException as err:
        elapsed = time.perf_counter() - started
        return Outcome(ok=False, status=str(err.status()), message=str(err.message()), seconds=elapsed)
    finally:
        client.close()
    names = tuple(o.name for o in response.get_response().outputs)
    indices = response.as_numpy("class_index") if "class_index" in names else None
    return Outcome(ok=True, indices=indices, outputs=names, seconds=time.perf_counter() - started)


def repository_calls(target: str) -> dict[str, str]:
    """The repository API's unload, over both services MLServer 1.7.1 registers: the OIP's
    `inference.GRPCInferenceService/RepositoryModelUnload` (mlserver/grpc/servicers.py) and MLServer's
    own `inference.model_repository.ModelRepositoryService` (mlserver/grpc/model_repository.py).
    Returns the status code name of each."""
    import grpc
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    found = {}
    client = grpcclient.InferenceServerClient(target)
    try:
        client.unload_model(MODEL_NAME)
        found["GRPCInferenceService/RepositoryModelUnload"] = "OK"
    except InferenceServerException as err:
        found["GRPCInferenceService/RepositoryModelUnload"] = str(err.status())
    finally:
        client.close()
    # model_name = "cassava" as protobuf field 1 (a length-delimited string): no stubs needed.
    request = b"\x0a" + bytes([len(MODEL_NAME)]) + MODEL_NAME.encode()
    with grpc.insecure_channel(target) as channel:
        unload = channel.unary_unary(
            "/inference.model_repository.ModelRepositoryService/RepositoryModelUnload",
            request_serializer=lambda raw: raw,
            response_deserializer=lambda raw: raw,
        )
        try:
            unload(request, timeout=30)
            found["ModelRepositoryService/RepositoryModelUnload"] = "OK"
        except grpc.RpcError as err:
            found["ModelRepositoryService/RepositoryModelUnload"] = f"StatusCode.{err.code().name}"
    return found
