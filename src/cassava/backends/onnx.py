"""ONNX Runtime backend: the same model exported by `cassava model export --format onnx`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cassava.errors import ModelLoadError, ModelNotFoundError


class OnnxBackend:
    name = "onnx"

    def __init__(self, model_path: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        if not model_path.is_file():
            raise ModelNotFoundError(
                f"no ONNX model at {model_path}; create it with `cassava model export --format onnx`"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self._session: Any = ort.InferenceSession(
                str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:
            raise ModelLoadError(f"{model_path} is not a loadable ONNX model: {err}") from err
        self._input = self._session.get_inputs()[0].name

    def predict(self, batch: np.ndarray) -> np.ndarray:
        (probs,) = self._session.run(None, {self._input: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.asarray(probs, dtype=np.float32)
