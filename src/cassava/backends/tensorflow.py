"""The reference backend: the CropNet TF2 SavedModel, called as `model(image, training=False)`.

The hub-format SavedModel has no serving signature, so it is loaded with `tf.saved_model.load` and its
restored `__call__` is used directly, exactly as `hub.KerasLayer` would (without needing tensorflow_hub).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cassava.errors import ModelLoadError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: The SavedModel's graph file; the model directory is what TensorFlow loads.
ARTIFACT_FILE = "saved_model.pb"


class TensorFlowBackend:
    name = "tensorflow"

    def __init__(self, model_dir: Path, threads: int = 0) -> None:
        import tensorflow as tf

        _configure(tf, threads)
        try:
            self._model: Any = tf.saved_model.load(str(model_dir))
        except Exception as err:
            raise ModelLoadError(
                f"{model_dir} is not a loadable TensorFlow SavedModel ({type(err).__name__}: {err}); "
                "run `cassava model fetch` to download the model again"
            ) from err
        if not callable(self._model):
            raise ModelLoadError(
                f"the SavedModel in {model_dir} is not callable as model(image, training); "
                "it is not a CropNet classifier"
            )
        self._tf = tf

    @property
    def model(self) -> Any:
        """The restored SavedModel object (`cassava.export` traces its `__call__`)."""
        return self._model

    def predict(self, batch: np.ndarray) -> np.ndarray:
        probs = self._model(self._tf.constant(batch, dtype=self._tf.float32), False)
        return np.asarray(probs, dtype=np.float32)


def _configure(tf: Any, threads: int) -> None:
    # No GPU: the server is a CPU deployment, and the first CUDA probe alone costs seconds.
    try:
        tf.config.set_visible_devices([], "GPU")
        if threads:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        # Already initialised in this process (a second model load): the first settings stay.
        pass
