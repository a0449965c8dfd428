"""CassavaRuntime: the MLServer glue around `cassava.pipeline.Classifier`.

model-settings.json: {"name": "cassava", "implementation": "cassava.server.runtime.CassavaRuntime"}.
Options come from `parameters.extra` and `CASSAVA_*` env vars (see `cassava.settings`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, MetadataModelResponse, Parameters
from mlserver.utils import get_model_uri
from starlette.responses import Response

from cassava.backends import artifact_file
from cassava.errors import InputError
from cassava.model_store import (
    ONNX_FILE,
    SAVED_MODEL_FILE,
    UNTRAINED_WARNING,
    check_model_files,
    resolve_model_dir,
)
from cassava.pipeline import BatchResult, Classifier
from cassava.server import logfilter, metrics, patches, webui
from cassava.server.protocol import (
    INPUTS,
    OUTPUTS,
    InvalidRequestError,
    decode_request,
    encode_outputs,
    requested_outputs,
)
from cassava.settings import CassavaSettings

logger = logging.getLogger("cassava.server.runtime")

#: What `GET /v2/models/cassava` reports as `platform` for each backend (KServe/Triton naming).
_PLATFORMS = {"tensorflow": "tensorflow_savedmodel", "onnx": "onnxruntime_onnx"}


# Imported in the server process (MLServer instantiates the runtime there) and in every worker, by
# `mlserver start` as much as by the launcher: the process-wide fixes hold whichever started it.
patches.apply()
logfilter.install()


def _public_source(source: str) -> str:
    """Where the model came from, as clients may see it: a download URL without its query (which can
    hold a signature), never a path on the server."""
    scheme, sep, rest = source.partition("://")
    if sep and scheme in ("http", "https"):
        return f"{scheme}://{rest.split('?', 1)[0].split('#', 1)[0]}"
    return source if source == "unknown" or source.startswith("cassava model demo") else "a local file"


class CassavaRuntime(MLModel):  # type: ignore[misc]
    async def preflight(self) -> Path:
        """The model directory this runtime would load, checked cheaply (no TensorFlow import);
        raises `ModelError` naming the path. `cassava.server.launcher` calls it before starting anything."""
        options = CassavaSettings.from_extra(
            self.settings.parameters.extra if self.settings.parameters else None
        )
        model_dir = resolve_model_dir(options.model_dir or await self._model_uri())
        check_model_files(model_dir, need=artifact_file(options.backend))
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
            limits=options.limits(self._merged_requests),
        )
        info = self._classifier.info
        # What clients are told: no filesystem path of the server in it.
        self._warning = UNTRAINED_WARNING.format(path="this model") if info.untrained else ""
        if info.warning:
            # Said at load and again in every response: a stand-in must never pass unnoticed.
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
            outputs = requested_outputs(payload)
            result = await asyncio.to_thread(self._classify, payload)
        except InputError as err:
            metrics.count_rejected(err.reason)
            raise InvalidRequestError(str(err)) from None
        metrics.count_predictions(result.codes)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            # A stand-in says so in every answer, not only in its metadata: a client that never reads
            # the metadata must still be able to tell.
            parameters=Parameters(untrained=True, warning=self._warning) if self._warning else None,
            outputs=encode_outputs(result, outputs),
        )

    def _classify(self, payload: InferenceRequest) -> BatchResult:
        if len(payload.inputs) > 1 and self._merged_requests > 1:
            # The adaptive batcher merges a window's requests input by input: `payload` requests and
            # `images` requests arriving together become one request with both inputs, and its
            # split of the response takes the rows in input order. Each input alone is a valid request.
            parts = [self._classify(payload.model_copy(update={"inputs": [inp]})) for inp in payload.inputs]
            return BatchResult.concatenate(parts)
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
                model_source=_public_source(info.source),
                backend=self._options.backend,
                max_images=self._options.max_images,
                warning=self._warning,
            ),
        )

    # The diagnosis page (cassava.server.webui), as custom handlers so `mlserver start` serves it too.
    @webui.get(webui.PAGE_PATH)
    async def web_page(self) -> Response:
        return webui.page(self._options)

    @webui.get(webui.ASSET_PREFIX + "{name}")
    async def web_asset(self, name: str) -> Response:
        return webui.asset(name, self._options)
