"""CassavaRuntime: the MLServer glue around `cassava.pipeline.Classifier`.

model-settings.json: {"name": "cassava", "implementation": "cassava.runtime.CassavaRuntime"}.
Options come from `parameters.extra` and `CASSAVA_*` env vars (see `cassava.settings`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from mlserver import MLModel
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, MetadataModelResponse, Parameters
from mlserver.utils import get_model_uri

from cassava import metrics
from cassava.errors import InputError
from cassava.model_store import ONNX_FILE, SAVED_MODEL_FILE, resolve_model_dir
from cassava.pipeline import BatchResult, Classifier
from cassava.preprocessing import Limits
from cassava.protocol import INPUTS, OUTPUTS, decode_request, encode_outputs
from cassava.settings import CassavaSettings

logger = logging.getLogger("cassava.runtime")


class InvalidRequestError(MLServerError):  # type: ignore[misc]
    """A `cassava.errors.InputError` as MLServer needs it: HTTP 400, gRPC INVALID_ARGUMENT."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status_code=400)


class CassavaRuntime(MLModel):  # type: ignore[misc]
    async def load(self) -> bool:
        params = self.settings.parameters
        options = CassavaSettings.from_extra(params.extra if params else None)
        model_dir = resolve_model_dir(options.model_dir or await self._model_uri())
        self._options = options
        self._classifier = Classifier.load(
            model_dir,
            options.backend,
            threads=options.inference_threads,
            limits=Limits(options.max_batch_size, options.max_image_pixels, options.max_image_bytes),
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
        request = decode_request(payload)
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
            platform=self._settings.platform or "tensorflow-savedmodel",
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
