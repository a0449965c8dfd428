"""Inference backends: float32 [N, 224, 224, 3] in [0, 1] -> float32 [N, 6] probabilities.

Each backend lives in its own module and imports its framework only when loaded, so a server that runs
ONNX Runtime never imports TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from cassava.settings import Backend as BackendName


class Backend(Protocol):
    name: str

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, 224, 224, 3] -> float32 [N, 6] softmax probabilities."""
        ...


def artifact_file(name: BackendName) -> str:
    """The file in a model directory that the backend loads: each backend module owns its name."""
    if name == "tensorflow":
        from cassava.backends.tensorflow import ARTIFACT_FILE

        return ARTIFACT_FILE
    if name == "onnx":
        from cassava.backends.onnx import ARTIFACT_FILE as ONNX_ARTIFACT

        return ONNX_ARTIFACT
    raise ValueError(f"unknown backend {name!r}; choose 'tensorflow' or 'onnx'")


def load_backend(name: BackendName, model_dir: Path, threads: int = 0) -> Backend:
    if name == "tensorflow":
        from cassava.backends.tensorflow import TensorFlowBackend

        return TensorFlowBackend(model_dir, threads=threads)
    if name == "onnx":
        from cassava.backends.onnx import OnnxBackend

        return OnnxBackend(model_dir / artifact_file("onnx"), threads=threads)
    raise ValueError(f"unknown backend {name!r}; choose 'tensorflow' or 'onnx'")
