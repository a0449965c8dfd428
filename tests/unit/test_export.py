"""`cassava.export` and the ONNX Runtime backend: parity with TensorFlow, the optimised graph, errors.

The exports are session fixtures (tests/conftest.py): the stand-in's takes seconds, the real CropNet
graph's about a minute, and both are reused by the integration tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from cassava.backends.onnx import OnnxBackend
from cassava.backends.tensorflow import TensorFlowBackend
from cassava.cli.main import app
from cassava.errors import ModelLoadError, ModelNotFoundError
from cassava.export import PARITY_TOLERANCE, ExportResult, export
from cassava.model_store import ONNX_FILE
from cassava.pipeline import Classifier
from cassava.preprocessing import Limits, preprocess_images
from conftest import CROPNET_SYNTHETIC_TOLERANCE, encode, make_leaf_image

pytestmark = pytest.mark.slow

KINDS = ("noise", "gradient", "leaf")


def varied_inputs(per_kind: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`3 * per_kind` images in [0, 1] and their kind: uniform noise over random ranges, smooth colour
    gradients, and photo-like leaves through the real decode/resize path (JPEG at random sizes)."""
    rng = np.random.default_rng(seed)
    noise = [
        rng.uniform(lo, lo + rng.uniform(0.05, 1 - lo), (224, 224, 3)) for lo in rng.uniform(0, 0.6, per_kind)
    ]
    yy, xx = np.mgrid[0:224, 0:224].astype(np.float32) / 223
    gradients = []
    for _ in range(per_kind):
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * xx + np.sin(angle) * yy
        ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
        start, end = rng.random(3), rng.random(3)
        gradients.append(start + (end - start) * ramp[..., None])
    jpegs = [
        encode(make_leaf_image(seed * 1000 + i, (int(w), int(h))), "JPEG", quality=90)
        for i, (w, h) in enumerate(rng.integers(120, 900, size=(per_kind, 2)))
    ]
    leaves = preprocess_images(jpegs, Limits(max_images=len(jpegs)))
    batch = np.concatenate([np.stack(noise), np.stack(gradients), leaves]).astype(np.float32)
    return batch, np.repeat(np.array(KINDS), per_kind)


def in_batches(predict: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([predict(batch[i : i + size]) for i in range(0, len(batch), size)])


def assert_parity(
    expected: np.ndarray, got: np.ndarray, kinds: np.ndarray, tolerance: float, what: str
) -> None:
    diff = np.abs(got - expected).max(axis=1)
    figures = ", ".join(f"{k} {diff[kinds == k].max():.1e}" for k in KINDS)
    print(f"{what}: max |Δp| {diff.max():.1e} ({figures}) over {len(diff)} images")
    changed = np.flatnonzero(got.argmax(axis=1) != expected.argmax(axis=1))
    assert changed.size == 0, f"{what}: class changed for images {changed.tolist()} ({figures})"
    assert diff.max() <= tolerance, f"{what}: max |Δp| {diff.max():.2e} > {tolerance:.0e} ({figures})"


# --- the stand-in -----------------------------------------------------------------------------------


def test_standin_export_reports_parity_and_stays_untrained(standin_onnx: ExportResult) -> None:
    assert standin_onnx.path == standin_onnx.info.path / ONNX_FILE
    assert standin_onnx.path.is_file()
    assert standin_onnx.parity.max_abs_diff <= PARITY_TOLERANCE
    assert standin_onnx.parity.argmax_mismatches == 0
    assert standin_onnx.warnings == ()
    # The marker lives in the directory, so the ONNX backend warns exactly as the SavedModel does...
    classifier = Classifier.load(standin_onnx.path.parent, "onnx")
    assert classifier.info.untrained
    assert "UNTRAINED" in str(classifier.info.warning)
    # ...and a copy of the file alone still says what it is.
    metadata = {p.key: p.value for p in onnx.load(standin_onnx.path).metadata_props}
    assert metadata["cassava.untrained"] == "true"


def test_standin_onnx_matches_tensorflow_on_varied_inputs(standin_onnx: ExportResult) -> None:
    batch, kinds = varied_inputs(per_kind=100, seed=1)
    expected = in_batches(TensorFlowBackend(standin_onnx.path.parent).predict, batch, 16)
    onnx_backend = OnnxBackend(standin_onnx.path)
    for size in (1, 7, 16):
        got = in_batches(onnx_backend.predict, batch, size)
        assert_parity(expected, got, kinds, PARITY_TOLERANCE, f"stand-in, batch {size}")
    # Varied inputs must reach varied classes, or agreeing on the argmax proves little.
    assert len(set(expected.argmax(axis=1).tolist())) >= 3


def test_micro_batches_give_the_one_call_answer(standin_onnx: ExportResult) -> None:
    batch, _ = varied_inputs(per_kind=6, seed=3)
    one_call = OnnxBackend(standin_onnx.path, micro_batch=len(batch)).predict(batch)
    for micro_batch in (1, 4, 5):
        chunked = OnnxBackend(standin_onnx.path, micro_batch=micro_batch).predict(batch)
        assert chunked.shape == one_call.shape
        np.testing.assert_allclose(chunked, one_call, rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    ("export_fixture", "tolerance"),
    [
        pytest.param("standin_onnx", PARITY_TOLERANCE, id="standin"),
        # Skips, with its reason, when the shared CropNet graph is absent.
        pytest.param("cropnet_onnx", CROPNET_SYNTHETIC_TOLERANCE, id="cropnet-graph"),
    ],
)
def test_onnx_classifier_matches_tensorflow_on_jpegs(
    request: pytest.FixtureRequest, export_fixture: str, tolerance: float, sample_jpegs: list[bytes]
) -> None:
    model_dir = request.getfixturevalue(export_fixture).path.parent
    expected = Classifier.load(model_dir, "tensorflow").classify_images(sample_jpegs)
    got = Classifier.load(model_dir, "onnx").classify_images(sample_jpegs)
    assert got.codes == expected.codes
    np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=tolerance)


# --- the real CropNet graph (synthetic weights) -------------------------------------------------------


def test_cropnet_graph_exports_fully_optimised(cropnet_onnx: ExportResult) -> None:
    ops = Counter(node.op_type for node in onnx.load(cropnet_onnx.path).graph.node)
    # Every tf2onnx optimizer ran (the transpose optimizer used to fail and be skipped silently).
    assert cropnet_onnx.warnings == ()
    # One Transpose is left: the NHWC input into the first convolution; the naive export has 128.
    assert ops["Transpose"] == 1 == cropnet_onnx.transposes, ops
    # All 21 hard-swish activations are single ops that ONNX Runtime fuses into their convolutions.
    assert ops["HardSwish"] == 21, ops
    # No Reshape between the squeeze-excite pools and convolutions; the one left restores the output.
    assert ops["Reshape"] == 1, ops
    assert cropnet_onnx.parity.argmax_mismatches == 0
    assert cropnet_onnx.parity.max_abs_diff <= CROPNET_SYNTHETIC_TOLERANCE


def test_cropnet_graph_onnx_matches_tensorflow_on_varied_inputs(cropnet_onnx: ExportResult) -> None:
    batch, kinds = varied_inputs(per_kind=67, seed=2)
    expected = in_batches(TensorFlowBackend(cropnet_onnx.path.parent).predict, batch, 16)
    onnx_backend = OnnxBackend(cropnet_onnx.path, threads=2)
    for size in (1, 16):
        got = in_batches(onnx_backend.predict, batch, size)
        assert_parity(expected, got, kinds, CROPNET_SYNTHETIC_TOLERANCE, f"CropNet graph, batch {size}")
    assert len(set(expected.argmax(axis=1).tolist())) >= 2


# --- the tf2onnx transpose-optimizer failure, without the shared graph ---------------------------------


def save_hard_swish_model(path: Path) -> None:
    """A tiny CropNet-shaped model with the pattern that broke tf2onnx's transpose optimizer: a
    bias-less 1x1 Conv whose only consumer is hard-sigmoid's `+ 3` (CropNet's squeeze-excite gate once
    Grappler drops an all-zero bias), next to a hard-swish."""
    import tensorflow as tf

    rng = np.random.default_rng(0)

    class Tiny(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.conv = tf.Variable(rng.normal(0, 0.5, (3, 3, 3, 16)).astype(np.float32))
            self.gate = tf.Variable(rng.normal(0, 0.5, (1, 1, 16, 16)).astype(np.float32))
            self.dense = tf.Variable(rng.normal(0, 0.5, (16, 6)).astype(np.float32))

        @tf.function(
            input_signature=[tf.TensorSpec([None, 224, 224, 3], tf.float32), tf.TensorSpec([], tf.bool)]
        )
        def __call__(self, image: tf.Tensor, training: tf.Tensor) -> tf.Tensor:
            x = tf.nn.conv2d(image * 2.0 - 1.0, self.conv, strides=2, padding="SAME")
            x = x * tf.nn.relu6(x + np.float32(3)) * np.float32(1.0 / 6.0)
            squeezed = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
            gate = tf.nn.relu6(tf.nn.conv2d(squeezed, self.gate, strides=1, padding="SAME") + 3.0) * 0.16667
            return tf.nn.softmax(tf.reduce_mean(x * gate, axis=[1, 2]) @ self.dense)

    tf.saved_model.save(Tiny(), str(path), signatures={})


def test_bias_less_conv_then_hard_swish_exports_without_transposes(tmp_path: Path) -> None:
    save_hard_swish_model(tmp_path)
    result = export(tmp_path)
    ops = Counter(node.op_type for node in onnx.load(result.path).graph.node)
    assert result.warnings == ()
    assert ops["Transpose"] == 1, ops
    assert ops["HardSwish"] == 1, ops
    assert result.parity.max_abs_diff <= PARITY_TOLERANCE


def test_unoptimised_export_keeps_its_transposes_and_parity(tmp_path: Path) -> None:
    save_hard_swish_model(tmp_path)
    result = export(tmp_path, optimize=False)
    ops = Counter(node.op_type for node in onnx.load(result.path).graph.node)
    assert ops["Transpose"] >= 2, ops
    assert ops["HardSwish"] == 0, ops
    assert result.parity.max_abs_diff <= PARITY_TOLERANCE


# --- errors -----------------------------------------------------------------------------------------


def test_missing_onnx_file_names_the_export_command(demo_model_dir: Path) -> None:
    assert not (demo_model_dir / ONNX_FILE).exists()
    with pytest.raises(
        ModelNotFoundError, match=r"model\.onnx is missing.*cassava model export --format onnx"
    ):
        Classifier.load(demo_model_dir, "onnx")
    with pytest.raises(ModelNotFoundError, match="cassava model export --format onnx --model"):
        OnnxBackend(demo_model_dir / ONNX_FILE)


def test_failed_parity_raises_with_figures_and_keeps_the_old_file(
    tmp_path: Path, demo_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(demo_model_dir, model_dir)
    (model_dir / ONNX_FILE).write_bytes(b"the previous export")
    # A conversion that swaps the classes: what a wrong layout or op mapping would look like.
    real_predict = OnnxBackend.predict
    monkeypatch.setattr(OnnxBackend, "predict", lambda self, batch: real_predict(self, batch)[:, ::-1])
    with pytest.raises(ModelLoadError, match=r"does not match TensorFlow: max \|Δp\| .* same class for"):
        export(model_dir)
    assert (model_dir / ONNX_FILE).read_bytes() == b"the previous export"
    assert sorted(p.name for p in model_dir.iterdir() if ONNX_FILE in p.name) == [ONNX_FILE]


def test_unsupported_opset_is_refused_before_any_work(demo_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="opset 9 is not supported; choose 13 to 18"):
        export(demo_model_dir, opset=9)
    assert not (demo_model_dir / ONNX_FILE).exists()


def write_onnx(path: Path, input_name: str, input_shape: list[object], classes: int = 6) -> None:
    """An ONNX model: mean colour of each image, repeated to `classes` scores, softmax."""
    image = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)
    # An NCHW input averages to 224 values per image, not 3: declare what the graph computes.
    scores = classes if input_shape[-1] == 3 else None
    probs = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", scores])
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])
    repeats = helper.make_tensor("repeats", TensorProto.INT64, [2], [1, classes // 3])
    nodes = [
        helper.make_node("ReduceMean", [input_name, "axes"], ["mean"], keepdims=0),
        helper.make_node("Tile", ["mean", "repeats"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["out"]),
    ]
    graph = helper.make_graph(nodes, "g", [image], [probs], initializer=[axes, repeats])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


def test_onnx_backend_finds_an_input_of_any_name(tmp_path: Path) -> None:
    write_onnx(tmp_path / ONNX_FILE, "input_1:0", ["batch", 224, 224, 3])
    probs = OnnxBackend(tmp_path / ONNX_FILE).predict(np.full((2, 224, 224, 3), 0.5, np.float32))
    assert probs.shape == (2, 6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("shape", "classes", "message"),
    [
        ([None, 3, 224, 224], 6, r"takes 'image' as tensor\(float\) .* feeds float \[N, 224, 224, 3\]"),
        ([1, 224, 224, 3], 6, r"with any N"),
        ([None, 224, 224, 3], 9, r"returns 'out' .* \[N, 6\] probabilities"),
    ],
)
def test_onnx_backend_refuses_a_model_of_another_shape(
    tmp_path: Path, shape: list[object], classes: int, message: str
) -> None:
    write_onnx(tmp_path / ONNX_FILE, "image", shape, classes)
    with pytest.raises(ModelLoadError, match=message) as caught:
        OnnxBackend(tmp_path / ONNX_FILE)
    assert str(tmp_path / ONNX_FILE) in str(caught.value)
    assert "cassava model export --format onnx" in str(caught.value)


def test_corrupt_onnx_file_names_the_file_and_the_fix(tmp_path: Path) -> None:
    (tmp_path / ONNX_FILE).write_bytes(b"\x08\x07not an onnx model")
    with pytest.raises(ModelLoadError, match=r"is not a loadable ONNX model.*cassava model export"):
        OnnxBackend(tmp_path / ONNX_FILE)


# --- the command line -------------------------------------------------------------------------------


def test_cli_export_prints_the_file_parity_and_the_untrained_warning(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(demo_model_dir, model_dir)
    result = CliRunner().invoke(
        app, ["model", "export", "--format", "onnx", "--model", str(model_dir)], env={"COLUMNS": "300"}
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {model_dir / ONNX_FILE}" in result.stdout
    assert "parity with TensorFlow: max |Δp|" in result.stdout
    assert "same class for 8/8" in result.stdout
    assert "UNTRAINED STAND-IN MODEL" in result.stderr
    assert (model_dir / ONNX_FILE).is_file()


def test_cli_export_refuses_other_formats(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["model", "export", "--format", "tflite", "--model", str(tmp_path)])
    assert result.exit_code == 1
    assert "--format 'tflite' is not supported; the only export format is 'onnx'" in result.stderr
    assert "Traceback" not in result.output


# --- the ONNX-only serving path -----------------------------------------------------------------------

NO_TENSORFLOW = """
import asyncio, json, sys
from pathlib import Path
from mlserver.settings import ModelParameters, ModelSettings
from cassava.server.runtime import CassavaRuntime

settings = ModelSettings(
    name="cassava",
    implementation=CassavaRuntime,
    parameters=ModelParameters(extra={"model_dir": sys.argv[1], "backend": "onnx"}),
)
runtime = CassavaRuntime(settings)
asyncio.run(runtime.load())
result = runtime._classifier.classify_images([Path(sys.argv[2]).read_bytes()])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf2onnx", "keras", "onnx"))
print(json.dumps({"codes": result.codes, "backend": runtime._classifier.backend.name, "heavy": heavy}))
"""


def test_onnx_serving_path_never_imports_tensorflow(standin_onnx: ExportResult, tmp_path: Path) -> None:
    jpeg = tmp_path / "leaf.jpg"
    jpeg.write_bytes(encode(make_leaf_image(3), "JPEG"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CASSAVA_")}
    done = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW, str(standin_onnx.path.parent), str(jpeg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["backend"] == "onnx"
    assert len(report["codes"]) == 1
    assert report["heavy"] == [], f"the ONNX serving path imported {report['heavy']}"
