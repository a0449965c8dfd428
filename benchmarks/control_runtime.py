"""The benchmark's control: the least MLServer runtime that answers cassava's requests.

It runs the same pipeline as cassava's runtime (`Classifier.classify_images`, in a thread as cassava's
does) under a stock `mlserver start`, and nothing else: no input checks or limits, no metrics, no error
mapping, none of `cassava.server` (so none of its patches to MLServer and none of its REST route). Served
next to cassava's server in the paired rounds, it shows how much of a served request's extra time
MLServer and this machine take on their own, and how much is cassava's.

Not for serving: it trusts every request. Loaded by `benchmarks.control.ControlServer` with the
repository root on PYTHONPATH.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pybase64
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

from cassava.contract import OUTPUT_INDEX, OUTPUT_PROBABILITIES
from cassava.pipeline import Classifier


class PipelineRuntime(MLModel):  # type: ignore[misc]
    async def load(self) -> bool:
        params = self.settings.parameters
        # `benchmarks.control` always writes both: the model directory and the backend under test.
        self._classifier = Classifier.load(Path(params.uri), params.extra["backend"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        # REST carries BYTES as base64 text, gRPC as raw bytes.
        data = payload.inputs[0].data.root
        images = [pybase64.b64decode(item) if isinstance(item, str) else item for item in data]
        result = await asyncio.to_thread(self._classifier.classify_images, images)
        index = NumpyCodec.encode_output(OUTPUT_INDEX, result.indices)
        index.shape = [len(result.indices)]
        return InferenceResponse(
            model_name=self.name,
            outputs=[index, NumpyCodec.encode_output(OUTPUT_PROBABILITIES, result.probabilities)],
        )
