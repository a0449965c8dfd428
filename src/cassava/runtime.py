"""CassavaRuntime: the MLServer glue around `cassava.pipeline.Classifier`.

model-settings.json: {"name": "cassava", "implementation": "cassava.runtime.CassavaRuntime"}.
Options come from `parameters.extra` and `CASSAVA_*` env vars (see `cassava.settings`).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from mlserver import MLModel
from mlserver.errors import MLServerError
from mlserver.grpc import converters as grpc_converters
from mlserver.types import InferenceRequest, InferenceResponse, MetadataModelResponse, Parameters
from mlserver.utils import get_model_uri

from cassava import logfilter, metrics
from cassava.errors import InputError, safe_reason
from cassava.model_store import ONNX_FILE, SAVED_MODEL_FILE, check_model_files, resolve_model_dir
from cassava.pipeline import BatchResult, Classifier
from cassava.preprocessing import Limits
from cassava.protocol import INPUTS, OUTPUTS, decode_request, encode_outputs
from cassava.settings import CassavaSettings

logger = logging.getLogger("cassava.runtime")

#: What `GET /v2/models/cassava` reports as `platform` for each backend (KServe/Triton naming).
_PLATFORMS = {"tensorflow": "tensorflow_savedmodel", "onnx": "onnxruntime_onnx"}


class InvalidRequestError(MLServerError):  # type: ignore[misc]
    """A `cassava.errors.InputError` as MLServer needs it: HTTP 400, gRPC INVALID_ARGUMENT."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status_code=400)


def _reject_malformed_raw_contents(inject_raw: Callable[..., Any]) -> Callable[..., Any]:
    """MLServer unpacks gRPC `raw_input_contents` before any model code runs, and answers INTERNAL when
    they do not match the declared shapes (`struct.error`); that is the client's mistake: 400."""

    def checked(elems: list[Any], raw_contents: list[bytes]) -> Any:
        try:
            return inject_raw(elems, raw_contents)
        except (struct.error, IndexError, ValueError, KeyError) as err:
            described = ", ".join(f"{e.name!r} {e.datatype} {list(e.shape)}" for e in elems)
            raise InvalidRequestError(
                f"the request's raw_input_contents do not match its inputs ({described}): "
                f"{safe_reason(err)}; each input needs product(shape) values of its datatype"
            ) from None

    checked.cassava_checked = True  # type: ignore[attr-defined]
    return checked


if not getattr(grpc_converters.inject_raw, "cassava_checked", False):
    grpc_converters.inject_raw = _reject_malformed_raw_contents(grpc_converters.inject_raw)


# Imported in the server process (MLServer instantiates the runtime there) and in every worker.
logfilter.install()


class CassavaRuntime(MLModel):  # type: ignore[misc]
    async def preflight(self) -> Path:
        """The model directory this runtime would load, checked cheaply (no TensorFlow import);
        raises `ModelError` naming the path. `cassava.launcher` calls it before starting anything."""
        options = CassavaSettings.from_extra(
            self.settings.parameters.extra if self.settings.parameters else None
        )
        model_dir = resolve_model_dir(options.model_dir or await self._model_uri())
        check_model_files(model_dir, need=ONNX_FILE if options.backend == "onnx" else SAVED_MODEL_FILE)
        return model_dir

    async def load(self) -> bool:
        params = self.settings.parameters
        options = CassavaSettings.from_extra(params.extra if params else None)
        model_dir = resolve_model_dir(options.model_dir or await self._model_uri())
        self._options = options
        # MLServer's adaptive batcher hands predict() up to `max_batch_size` requests merged into one,
        # so the per-request image limit can only be checked on their sum.
        self._merged_requests = max(1, self.settings.max_batch_size) if self.settings.max_batch_time else 1
        self._classifier = Classifier.load(
            model_dir,
            options.backend,
            threads=options.inference_threads,
            limits=Limits(
                options.max_batch_size * self._merged_requests,
                options.max_image_pixels,
                options.max_image_bytes,
                fast_decode=options.fast_decode,
            ),
        )
        info = self._classifier.info
        if info.warning:
            # Said at load and again in every metadata response: a stand-in must never pass unnoticed.
            logger.warning("%s", info.warning)
        logger.info("loaded %s (%s backend) from %s", self.name, options.backend, Path(model_dir))
        return True

    async def _model_uri(self) -> Path | None:
        """`parameters.uri`, unless it is only MLServer's default (the model-settings folder) and that
        folder holds no model: then the cache. A seed-style folder with the SavedModel next to
        model-settings.json is served as is."""
        params = self.settings.parameters
        if not params or not params.uri:
            return None
        uri = Path(await get_model_uri(self.settings))
        source = getattr(self.settings, "_source", None)
        implicit = source is not None and uri.resolve() == Path(source).parent.resolve()
        if implicit and not any((uri / f).is_file() for f in (SAVED_MODEL_FILE, ONNX_FILE)):
            return None
        return uri

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        # The request is decoded here rather than with @decode_args, which breaks under adaptive
        # batching with parallel_workers=0 in MLServer 1.7.1.
        try:
            result = await asyncio.to_thread(self._classify, payload)
        except InputError as err:
            metrics.count_rejected(err.reason)
            raise InvalidRequestError(str(err)) from None
        metrics.count_predictions(result.codes)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=encode_outputs(result),
        )

    def _classify(self, payload: InferenceRequest) -> BatchResult:
        if len(payload.inputs) > 1 and self._merged_requests > 1:
            # The adaptive batcher merges a window's requests input by input: `payload` requests and
            # `images` requests arriving together become one request with both inputs, and its
            # split of the response takes the rows in input order. Each input alone is a valid request.
            parts = [self._classify(payload.model_copy(update={"inputs": [inp]})) for inp in payload.inputs]
            return BatchResult(
                indices=np.concatenate([part.indices for part in parts]),
                probabilities=np.concatenate([part.probabilities for part in parts]),
            )
        request = decode_request(payload, self._classifier.limits)
        if request.tensor is not None:
            return self._classifier.classify_tensor(request.tensor)
        assert request.images is not None
        started = time.perf_counter()
        batch = self._classifier.preprocess(request.images)
        metrics.PREPROCESS_SECONDS.observe(time.perf_counter() - started)
        return self._classifier.classify_preprocessed(batch)

    async def metadata(self) -> MetadataModelResponse:
        info = self._classifier.info
        return MetadataModelResponse(
            name=self.name,
            platform=self._settings.platform or _PLATFORMS[self._options.backend],
            versions=self._settings.versions,
            inputs=self._settings.inputs or list(INPUTS),
            outputs=self._settings.outputs or list(OUTPUTS),
            parameters=Parameters(
                untrained=info.untrained,
                model_source=info.source,
                backend=self._options.backend,
                max_batch_size=self._options.max_batch_size,
                warning=info.warning or "",
            ),
        )
