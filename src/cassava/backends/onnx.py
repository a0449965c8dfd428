"""ONNX Runtime backend: the same model exported by `cassava model export --format onnx`.

Imports onnxruntime only (never TensorFlow), so an ONNX-only server image needs neither TensorFlow
nor tf2onnx. See docs/onnx.md for how the export is optimised and what these settings measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cassava.errors import ModelLoadError, ModelNotFoundError
from cassava.labels import NUM_CLASSES
from cassava.preprocessing import CHANNELS, IMAGE_SIZE

#: Images per ONNX Runtime call. CropNet's early activations in ORT's NCHWc layout take 3.2 MB per
#: image (64 channels at 112x112), so 16 images (51 MB) spill out of a 32 MB L3 cache that other
#: processes share: on a busy 2-core EPYC, chunks of 2-4 ran batch 16 25-35% faster than one call;
#: on a quiet one they made no difference (docs/onnx.md).
MICRO_BATCH = 4

#: The exported model's file in a model directory (`cassava model export` writes it).
ARTIFACT_FILE = "model.onnx"


class OnnxBackend:
    name = "onnx"

    def __init__(self, model_path: Path, threads: int = 0, micro_batch: int = MICRO_BATCH) -> None:
        import onnxruntime as ort

        if not model_path.is_file():
            raise ModelNotFoundError(
                f"no ONNX model at {model_path}; create it with "
                f"`cassava model export --format onnx --model {model_path.parent}`"
            )
        options = ort.SessionOptions()
        # ALL adds the NCHWc layout and conv+activation fusions the exported graph is shaped for. It is
        # applied at load (about half a second) rather than saved, as ORT's saved NCHWc graphs are
        # specific to the CPU that wrote them.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = threads
        # Spinning workers burn the cores that MLServer's event loop, image decoding and other
        # processes need: on a busy 2-core machine spinning halved batch-1 throughput, while on a
        # quiet one it saved only ~12% of a single image's latency.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session: Any = ort.InferenceSession(
                str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:
            raise ModelLoadError(
                f"{model_path} is not a loadable ONNX model ({type(err).__name__}: {err}); export it "
                f"again with `cassava model export --format onnx --model {model_path.parent}`"
            ) from err
        self._input = _input_name(self._session, model_path)
        self._micro_batch = max(1, micro_batch)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        step = self._micro_batch
        if len(batch) <= step:
            return self._run(batch)
        return np.concatenate([self._run(batch[i : i + step]) for i in range(0, len(batch), step)])

    def _run(self, batch: np.ndarray) -> np.ndarray:
        (probs,) = self._session.run(None, {self._input: batch})
        return np.asarray(probs, dtype=np.float32)


def _input_name(session: Any, model_path: Path) -> str:
    """The image input, after checking the model maps [N, 224, 224, 3] to [N, 6] as CropNet does."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    fix = f"export it again with `cassava model export --format onnx --model {model_path.parent}`"
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelLoadError(
            f"{model_path} has inputs {[i.name for i in inputs]} and outputs {[o.name for o in outputs]}; "
            f"a CropNet export has one image input and one probabilities output: {fix}"
        )
    image, probs = inputs[0], outputs[0]
    # Dimensions are ints when fixed, names or None when dynamic.
    fixed_in = [d if isinstance(d, int) else None for d in image.shape]
    if image.type != "tensor(float)" or fixed_in != [None, IMAGE_SIZE, IMAGE_SIZE, CHANNELS]:
        raise ModelLoadError(
            f"{model_path} takes {image.name!r} as {image.type} {image.shape}; the cassava pipeline feeds "
            f"float [N, {IMAGE_SIZE}, {IMAGE_SIZE}, {CHANNELS}] with any N: {fix}"
        )
    fixed_out = [d if isinstance(d, int) else None for d in probs.shape]
    if len(fixed_out) != 2 or fixed_out[1] not in (NUM_CLASSES, None):
        raise ModelLoadError(
            f"{model_path} returns {probs.name!r} with shape {probs.shape}; CropNet returns "
            f"[N, {NUM_CLASSES}] probabilities: {fix}"
        )
    return str(image.name)
