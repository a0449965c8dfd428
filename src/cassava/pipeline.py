"""The one prediction pipeline: encoded bytes or a float tensor -> backend -> class predictions.

`cassava predict`, the MLServer runtime, the benchmarks' in-process limit and the tests all call
`Classifier`; nothing else runs the model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cassava.backends import Backend, load_backend
from cassava.errors import ModelLoadError
from cassava.labels import LABELS, NUM_CLASSES, Label
from cassava.model_store import ONNX_FILE, SAVED_MODEL_FILE, ModelInfo, read_info
from cassava.preprocessing import Limits, check_tensor, preprocess_images
from cassava.settings import Backend as BackendName

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    label: Label
    confidence: float
    probabilities: np.ndarray

    @property
    def index(self) -> int:
        return self.label.index


@dataclass(frozen=True)
class BatchResult:
    """Postprocessed model output for N images."""

    indices: np.ndarray  # int64 [N]
    probabilities: np.ndarray  # float32 [N, 6]

    @property
    def codes(self) -> list[str]:
        return [LABELS[i].code for i in self.indices]

    def predictions(self) -> list[Prediction]:
        return [
            Prediction(LABELS[int(i)], float(p[i]), p)
            for i, p in zip(self.indices, self.probabilities, strict=True)
        ]


def postprocess(probabilities: np.ndarray) -> BatchResult:
    if probabilities.ndim != 2 or probabilities.shape[1] != NUM_CLASSES:
        raise ModelLoadError(
            f"the model returned shape {list(probabilities.shape)}; expected [N, {NUM_CLASSES}]"
        )
    indices = probabilities.argmax(axis=1).astype(np.int64)
    return BatchResult(indices=indices, probabilities=probabilities.astype(np.float32, copy=False))


class Classifier:
    def __init__(self, backend: Backend, info: ModelInfo, limits: Limits | None = None) -> None:
        self.backend = backend
        self.info = info
        self.limits = limits or Limits()

    @classmethod
    def load(
        cls,
        model_dir: Path,
        backend: BackendName = "tensorflow",
        *,
        threads: int = 0,
        limits: Limits | None = None,
    ) -> Classifier:
        info = read_info(model_dir, need=ONNX_FILE if backend == "onnx" else SAVED_MODEL_FILE)
        if info.warning:
            logger.warning(info.warning)
        return cls(load_backend(backend, model_dir, threads=threads), info, limits)

    def classify_tensor(self, batch: np.ndarray) -> BatchResult:
        """A client's preprocessed float32 [N, 224, 224, 3] (the seed's request) -> result."""
        return postprocess(self.backend.predict(check_tensor(batch, self.limits)))

    def preprocess(self, images: Sequence[bytes]) -> np.ndarray:
        """Encoded JPEG/PNG/... files -> float32 [N, 224, 224, 3]."""
        return preprocess_images(images, self.limits)

    def classify_preprocessed(self, batch: np.ndarray) -> BatchResult:
        return postprocess(self.backend.predict(batch))

    def classify_images(self, images: Sequence[bytes]) -> BatchResult:
        """Encoded JPEG/PNG/... files -> result."""
        return self.classify_preprocessed(self.preprocess(images))
