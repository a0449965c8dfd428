"""Inference backends: float32 [N, 224, 224, 3] in [0, 1] -> float32 [N, 6] probabilities.

Each backend lives in its own module and imports its framework only when loaded, so a server that runs
ONNX Runtime never imports TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from cassava.settings import Backend as BackendName

ONNX_FILENAME = "model.onnx"


class Backend(Protocol):
    name: str

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, 224, 224, 3] -> float32 [N, 6] softmax probabilities."""
        ...


def load_backend(name: BackendName, model_dir: Path, threads: int = 0) -> Backend:
    if name == "tensorflow":
        from cassava.backends.tensorflow import TensorFlowBackend

        return TensorFlowBackend(model_dir, threads=threads)
    if name == "onnx":
        from cassava.backends.onnx import OnnxBackend

        return OnnxBackend(model_dir / ONNX_FILENAME, threads=threads)
    raise ValueError(f"unknown backend {name!r}; choose 'tensorflow' or 'onnx'")
