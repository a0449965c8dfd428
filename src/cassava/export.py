"""Export the CropNet SavedModel to ONNX for the ONNX Runtime backend, and prove it computes the same.

`cassava model export --format onnx` calls `export`. The steps, and why each is there:

1. Trace `model(image, False)` into a concrete function: the hub-format SavedModel has no serving
   signature, and `training` is a Python bool, so tracing with `False` fixes the inference branch
   (batch norm with its moving statistics) and leaves one float input.
2. Freeze it (`convert_variables_to_constants_v2` through tf2onnx's loader, which also runs Grappler):
   every weight becomes a constant the ONNX graph can fold.
3. Convert with tf2onnx, then run tf2onnx's optimizers ourselves, strictly. tf2onnx 1.17 runs them with
   errors caught: when its transpose optimizer raises, the whole pass is silently dropped and every
   NHWC convolution keeps a Transpose on either side (128 of them in CropNet). It raises on CropNet
   because a constant added to the output of a bias-less Conv (hard-swish's `+ 3` after Grappler
   removed an all-zero bias) is folded into the Conv's bias with `max(shape)`, which fails for a
   scalar. `_ScalarSafeTransposeOptimizer` pushes the Transpose through such an Add instead.
4. Rewrite what ONNX Runtime cannot fuse as exported: `x * relu6(x + 3) / 6` becomes one `HardSwish`
   (which ORT fuses into the convolution before it), and the `Reshape([-1, C, 1, 1])` nodes the
   transpose optimizer leaves on `[N, C, 1, 1]` tensors go, so the graph stays in ORT's blocked NCHWc
   layout through the squeeze-excite blocks.
5. Write the file next to a temporary name, check it against the TensorFlow backend on a fixed probe
   batch (batch 1 and batch N), and only then rename it into place: a failed or wrong export never
   replaces a working model.onnx.

The ONNX file keeps the model directory's `UNTRAINED` marker meaning: it lives in the same directory,
so whatever loads it warns just as for the SavedModel (and its metadata says so too).
"""

from __future__ import annotations

import copy
import hashlib
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cassava.errors import ModelLoadError
from cassava.model_store import ONNX_FILE, SAVED_MODEL_FILE, ModelInfo, read_info
from cassava.preprocessing import CHANNELS, IMAGE_SIZE

if TYPE_CHECKING:
    from cassava.backends.tensorflow import TensorFlowBackend

#: 17 and 18 measured the same; 17 also loads in older ONNX Runtime releases. Below 14 there is no
#: HardSwish, and the export runs about a third slower.
DEFAULT_OPSET = 17
#: 13 is the first opset with ONNX's current Squeeze/ReduceMean forms; tf2onnx 1.17 stops at 18.
MIN_OPSET, MAX_OPSET = 13, 18
#: HardSwish joined ONNX in opset 14; below it the hard-swish arithmetic stays as exported.
HARD_SWISH_OPSET = 14
#: Largest difference allowed between TensorFlow's and ONNX Runtime's probabilities on the probe batch.
PARITY_TOLERANCE = 1e-4
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"


@dataclass(frozen=True)
class Parity:
    """How ONNX Runtime's probabilities compare with TensorFlow's on the same images."""

    max_abs_diff: float
    argmax_mismatches: int
    images: int
    batch_sizes: tuple[int, ...]
    #: TensorFlow against itself, batch 1 against one batch: the size of float32 rounding in this model.
    reference_spread: float

    def summary(self) -> str:
        batches = " and ".join(str(b) for b in self.batch_sizes)
        return (
            f"max |Δp| {self.max_abs_diff:.1e} over {self.images} probe images (batch {batches}), "
            f"same class for {self.images - self.argmax_mismatches}/{self.images} "
            f"(TensorFlow against itself, batch 1 vs {self.images}: {self.reference_spread:.1e})"
        )


@dataclass(frozen=True)
class ExportResult:
    path: Path
    info: ModelInfo
    opset: int
    parity: Parity
    #: The parity limit the export was checked against.
    tolerance: float
    seconds: float
    #: Transpose nodes left in the exported graph; 1 (the NHWC input) when fully optimised.
    transposes: int
    #: tf2onnx optimizer failures that were worked around by skipping that optimizer.
    warnings: tuple[str, ...] = field(default=())


def export_onnx(
    model_dir: Path,
    out: Path | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    optimize: bool = True,
    tolerance: float = PARITY_TOLERANCE,
) -> Path:
    """Write `model_dir/model.onnx` (or `out`) from the SavedModel; raise `ModelLoadError` on no parity."""
    return export(model_dir, out, opset=opset, optimize=optimize, tolerance=tolerance).path


def export(
    model_dir: Path,
    out: Path | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    optimize: bool = True,
    tolerance: float = PARITY_TOLERANCE,
) -> ExportResult:
    """`export_onnx`, returning what was written and the parity figures."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ModelLoadError(
            f"opset {opset} is not supported; choose {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET})"
        )
    from cassava.backends.tensorflow import TensorFlowBackend

    started = time.perf_counter()
    info = read_info(model_dir)
    out = out or model_dir / ONNX_FILE
    # The serving backend's loader: the same checks and messages as serving the SavedModel, and the
    # reference the export is checked against.
    reference = TensorFlowBackend(model_dir)
    model, warnings = _convert(reference, model_dir, opset=opset, optimize=optimize)
    _describe(model, model_dir, info)
    temp = out.with_name(f".{out.name}.tmp-{os.getpid()}-{time.time_ns()}")
    try:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            temp.write_bytes(model.SerializeToString())
        except OSError as err:
            raise ModelLoadError(
                f"cannot write {out} ({err.strerror or err}); export a writable copy instead: "
                f"`cassava model fetch --from {model_dir} --dest DIR`, then "
                "`cassava model export --format onnx --model DIR`"
            ) from None
        parity = verify_parity(model_dir, temp, tolerance=tolerance, reference=reference)
        os.replace(temp, out)
    finally:
        temp.unlink(missing_ok=True)
    transposes = sum(1 for node in model.graph.node if node.op_type == "Transpose")
    return ExportResult(
        path=out,
        info=info,
        opset=opset,
        parity=parity,
        tolerance=tolerance,
        seconds=time.perf_counter() - started,
        transposes=transposes,
        warnings=tuple(warnings),
    )


# --- parity ----------------------------------------------------------------------------------------


def probe_batch(count: int = 8, seed: int = 0) -> np.ndarray:
    """Fixed, varied images in [0, 1]: smooth colour fields like photos of leaves, textures, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    batch = np.empty((count, IMAGE_SIZE, IMAGE_SIZE, CHANNELS), dtype=np.float32)
    for i in range(count):
        if i % 4 == 3:
            batch[i] = rng.uniform(0.2, 0.8, (IMAGE_SIZE, IMAGE_SIZE, CHANNELS))
            continue
        for c in range(CHANNELS):
            fx, fy = rng.uniform(0.005, 0.08, size=2)
            base, amplitude = rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.2)
            batch[i, :, :, c] = base + amplitude * np.sin(fx * xx + fy * yy + rng.uniform(0, 6.3))
    return np.clip(batch, 0.0, 1.0)


def verify_parity(
    model_dir: Path,
    onnx_path: Path,
    *,
    tolerance: float = PARITY_TOLERANCE,
    reference: TensorFlowBackend | None = None,
) -> Parity:
    """Compare the TensorFlow backend on `model_dir` with ONNX Runtime on `onnx_path`; raise
    `ModelLoadError` with the figures when they differ by more than `tolerance` or in any class."""
    from cassava.backends.onnx import OnnxBackend
    from cassava.backends.tensorflow import TensorFlowBackend

    probes = probe_batch()
    tensorflow = reference or TensorFlowBackend(model_dir)
    expected = tensorflow.predict(probes)
    spread = float(np.abs(_one_by_one(tensorflow.predict, probes) - expected).max())
    session = OnnxBackend(onnx_path)
    whole = session.predict(probes)
    # Batch 1 too: a graph with the batch size baked in somewhere would pass a single batched call.
    singles = _one_by_one(session.predict, probes)
    if whole.shape != expected.shape or singles.shape != expected.shape:
        raise ModelLoadError(
            f"the ONNX export of {model_dir} returns {list(whole.shape)} (batch {len(probes)}) and "
            f"{list(singles.shape)} (batch 1 x {len(probes)}) where TensorFlow returns "
            f"{list(expected.shape)}; the export is wrong: report it with the model's source"
        )
    diff = max(float(np.abs(whole - expected).max()), float(np.abs(singles - expected).max()))
    mismatches = int(
        np.count_nonzero(
            (whole.argmax(axis=1) != expected.argmax(axis=1))
            | (singles.argmax(axis=1) != expected.argmax(axis=1))
        )
    )
    parity = Parity(diff, mismatches, len(probes), (len(probes), 1), spread)
    if diff > tolerance or mismatches:
        raise ModelLoadError(
            f"the ONNX export of {model_dir} does not match TensorFlow: {parity.summary()}; the limit "
            f"is {tolerance:.0e} and no class change, so nothing was written. A model whose logits "
            "reach the hundreds (such as untrained or synthetic weights) can differ by this much from "
            "float32 rounding alone: if every class agrees, export it with a larger --tolerance; "
            "otherwise try another --opset, or serve it with the tensorflow backend"
        )
    return parity


def _one_by_one(predict: Callable[[np.ndarray], np.ndarray], batch: np.ndarray) -> np.ndarray:
    return np.concatenate([predict(batch[i : i + 1]) for i in range(len(batch))])


# --- conversion ------------------------------------------------------------------------------------


def _convert(
    reference: TensorFlowBackend, model_dir: Path, *, opset: int, optimize: bool
) -> tuple[Any, list[str]]:
    """SavedModel -> ONNX ModelProto (not yet written), and the optimizer failures worked around."""
    import tensorflow as tf
    from tf2onnx import optimizer, tf_loader
    from tf2onnx.tfonnx import process_tf_graph

    model = reference.model
    spec = tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, CHANNELS], tf.float32, name=INPUT_NAME)
    concrete = tf.function(lambda image: model(image, False)).get_concrete_function(spec)
    inputs = [t.name for t in concrete.inputs if t.dtype != tf.resource]
    outputs = [t.name for t in concrete.outputs]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelLoadError(
            f"{model_dir}: model(image, False) traces to {len(inputs)} inputs and {len(outputs)} outputs; "
            "a CropNet classifier has one of each"
        )
    try:
        with tf.device("/cpu:0"):
            frozen = tf_loader.from_function(concrete, inputs, outputs)
            with tf.Graph().as_default() as graph:
                tf.import_graph_def(frozen, name="")
                onnx_graph = process_tf_graph(
                    graph,
                    opset=opset,
                    input_names=inputs,
                    output_names=outputs,
                    tensors_to_rename={inputs[0]: INPUT_NAME, outputs[0]: OUTPUT_NAME},
                )
    except Exception as err:
        raise ModelLoadError(
            f"tf2onnx cannot convert {model_dir} at opset {opset} ({type(err).__name__}: {err}); try "
            f"another --opset ({MIN_OPSET} to {MAX_OPSET}), or serve it with the tensorflow backend"
        ) from err
    warnings: list[str] = []
    if optimize:
        # tf2onnx's own list and order, with the one optimizer that fails on CropNet replaced.
        optimizers = optimizer._get_optimizers().copy()
        optimizers["optimize_transpose"] = _scalar_safe_transpose_optimizer()
        try:
            # Strict: a failing optimizer raises here instead of being skipped without a word.
            onnx_graph = optimizer.optimize_graph(
                copy.deepcopy(onnx_graph), catch_errors=False, optimizers=optimizers
            )
        except Exception as err:
            warnings.append(
                f"a tf2onnx graph optimizer failed ({type(err).__name__}: {err}); exported with that "
                "optimizer skipped, so the graph may run slower than it could"
            )
            onnx_graph = optimizer.optimize_graph(onnx_graph, catch_errors=True, optimizers=optimizers)
    proto = onnx_graph.make_model(f"CropNet cassava classifier from {model_dir.name}")
    if optimize:
        if opset >= HARD_SWISH_OPSET:
            _fuse_hard_swish(proto)
        _drop_identity_reshapes(proto)
    import onnx

    onnx.checker.check_model(proto)
    return proto, warnings


def _scalar_safe_transpose_optimizer() -> type:
    from tf2onnx.optimizer.transpose_optimizer import TransposeOptimizer

    class ScalarSafeTransposeOptimizer(TransposeOptimizer):  # type: ignore[misc]
        def _add_handler(self, trans: Any, node: Any) -> Any:
            # tf2onnx 1.17 would fold this constant into the bias of a bias-less Conv before `trans`,
            # sizing the bias as max(shape): a scalar raises ValueError and loses the whole pass.
            # A scalar broadcasts over any layout, so moving the Transpose past the Add is exact.
            addend = node.inputs[1]
            if addend is not None and addend.is_const() and addend.get_tensor_value(as_list=False).ndim == 0:
                return self._handle_node_having_branches(trans, node)
            return super()._add_handler(trans, node)

    return ScalarSafeTransposeOptimizer


def _describe(model: Any, model_dir: Path, info: ModelInfo) -> None:
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    digest = hashlib.sha256((model_dir / SAVED_MODEL_FILE).read_bytes()).hexdigest()
    props = {
        "cassava.source": info.source,
        "cassava.saved_model_sha256": digest,
        "cassava.untrained": "true" if info.untrained else "false",
        "cassava.exported_with": (
            f"tensorflow {tf.__version__}, tf2onnx {tf2onnx.__version__}, "
            f"checked with onnxruntime {onnxruntime.__version__}"
        ),
    }
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    if info.warning:
        model.doc_string = info.warning


# --- ONNX graph rewrites ---------------------------------------------------------------------------


class _Graph:
    """Producers, consumers and scalar constants of an ONNX graph, for pattern matching."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        self.graph = model.graph
        self.constants = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        self.producer: dict[str, Any] = {}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for node in self.graph.node:
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                self.consumers[name].append(node)
        self.outputs = {o.name for o in self.graph.output}
        self._model = model
        self._shapes: dict[str, list[int | None]] | None = None

    def shape(self, name: str) -> list[int | None] | None:
        """The inferred shape of a tensor (None for an unknown dimension), or None if unknown."""
        if self._shapes is None:
            from onnx import shape_inference

            inferred = shape_inference.infer_shapes(self._model).graph
            self._shapes = {}
            for value in [*inferred.input, *inferred.value_info]:
                tensor = value.type.tensor_type
                if tensor.HasField("shape"):
                    self._shapes[value.name] = [
                        d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim
                    ]
        return self._shapes.get(name)

    def scalar(self, name: str) -> float | None:
        value = self.constants.get(name)
        return float(value.reshape(())) if value is not None and value.size == 1 else None

    def only_consumer(self, name: str) -> Any:  # a NodeProto, or None
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def other_input(self, node: Any, name: str) -> str | None:
        rest = [i for i in node.input if i != name]
        return rest[0] if len(node.input) == 2 and len(rest) == 1 else None


def _fuse_hard_swish(model: Any) -> int:
    """Replace `x * Clip(x + 3, 0, 6) * (1/6)`, multiplied in either order, with `HardSwish(x)`.

    Slim writes `x * relu6(x + 3) * (1/6)`; Grappler may reassociate it to `(relu6(x + 3) * (1/6)) * x`.
    The squeeze-excite gate (`relu6(x + 3) * 0.16667`, no `x`) is not a hard-swish and stays as it is.
    """
    from onnx import helper

    g = _Graph(model)
    sixth = float(np.float32(1.0) / np.float32(6.0))
    replaced: dict[int, Any] = {}
    dropped: set[int] = set()
    for clip in g.graph.node:
        if clip.op_type != "Clip" or len(clip.input) != 3:
            continue
        if g.scalar(clip.input[1]) != 0.0 or g.scalar(clip.input[2]) != 6.0:
            continue
        add = g.producer.get(clip.input[0])
        if add is None or add.op_type != "Add" or g.only_consumer(add.output[0]) is not clip:
            continue
        xs = [i for i in add.input if g.scalar(i) is None]
        if len(xs) != 1 or sorted(g.scalar(i) or 0.0 for i in add.input if i not in xs) != [3.0]:
            continue
        x = xs[0]
        inner = g.only_consumer(clip.output[0])
        if inner is None or inner.op_type != "Mul":
            continue
        first = g.other_input(inner, clip.output[0])
        outer = g.only_consumer(inner.output[0])
        if first is None or outer is None or outer.op_type != "Mul":
            continue
        second = g.other_input(outer, inner.output[0])
        # Of the two other operands, one is x and the other 1/6, whichever Mul each sits in.
        if second is None or (first == x) == (second == x):
            continue
        factor = second if first == x else first
        if g.scalar(factor) != sixth:
            continue
        shape = g.shape(x)
        rank = len(shape) if shape is not None else 0
        # A [1, 1, 1, 1] constant would broadcast a lower-rank x up to rank 4; HardSwish keeps x's rank.
        constants = [c for c in [*add.input, *clip.input[1:], factor] if c in g.constants]
        if any(g.constants[c].ndim > rank for c in constants):
            continue
        replaced[id(outer)] = helper.make_node(
            "HardSwish", [x], [outer.output[0]], name=f"{outer.name}/HardSwish"
        )
        dropped.update({id(add), id(clip), id(inner)})
    nodes = [replaced.get(id(n), n) for n in g.graph.node if id(n) not in dropped]
    del g.graph.node[:]
    g.graph.node.extend(nodes)
    _drop_unused_initializers(model)
    return len(replaced)


def _drop_identity_reshapes(model: Any) -> int:
    """Remove `Reshape(x, [-1, d1, ..., dk])` where x is already `[N, d1, ..., dk]`."""
    g = _Graph(model)
    alias: dict[str, str] = {}
    for node in g.graph.node:
        if node.op_type != "Reshape" or node.input[1] not in g.constants or node.output[0] in g.outputs:
            continue
        target = [int(v) for v in g.constants[node.input[1]].ravel()]
        shape = g.shape(node.input[0])
        if shape and len(shape) == len(target) and target[0] == -1 and shape[1:] == target[1:]:
            alias[node.output[0]] = node.input[0]

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    nodes = [n for n in g.graph.node if not (n.op_type == "Reshape" and n.output[0] in alias)]
    for node in nodes:
        for i, name in enumerate(node.input):
            node.input[i] = resolve(name)
    del g.graph.node[:]
    g.graph.node.extend(nodes)
    _drop_unused_initializers(model)
    return len(alias)


def _drop_unused_initializers(model: Any) -> None:
    used = {name for node in model.graph.node for name in node.input}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
