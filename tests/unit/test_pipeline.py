"""`Classifier`, the one thing that runs the model: on the stand-in, and on the real CropNet graph."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cassava.errors import (
    BatchTooLargeError,
    ImageDecodeError,
    ModelLoadError,
    ModelNotFoundError,
    TensorValueError,
)
from cassava.labels import CODES, NUM_CLASSES
from cassava.pipeline import BatchResult, Classifier, in_chunks, postprocess
from cassava.preprocessing import Limits


@pytest.fixture(scope="module")
def classifier(demo_model_dir: Path) -> Classifier:
    return Classifier.load(demo_model_dir)


def assert_probabilities(result: BatchResult, n: int) -> None:
    assert result.indices.shape == (n,)
    assert result.indices.dtype == np.int64
    assert result.probabilities.shape == (n, NUM_CLASSES)
    assert result.probabilities.dtype == np.float32
    assert np.all(result.probabilities >= 0)
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(result.indices, result.probabilities.argmax(axis=1))


# --- postprocess -----------------------------------------------------------------------------------


def test_postprocess_takes_the_argmax_and_names_the_classes() -> None:
    probabilities = np.array(
        [[0.1, 0.1, 0.1, 0.6, 0.05, 0.05], [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]], dtype=np.float64
    )
    result = postprocess(probabilities)
    assert result.indices.tolist() == [3, 5]
    assert result.codes == ["cmd", "unknown"]
    assert result.probabilities.dtype == np.float32


@pytest.mark.parametrize("shape", [(2, 5), (2, 7), (6,), (1, 2, 6)])
def test_postprocess_rejects_a_model_with_the_wrong_output(shape: tuple[int, ...]) -> None:
    with pytest.raises(ModelLoadError, match=r"expected \[N, 6\]"):
        postprocess(np.zeros(shape, dtype=np.float32))


# --- the stand-in ----------------------------------------------------------------------------------


def test_stand_in_is_reported_untrained(classifier: Classifier) -> None:
    assert classifier.info.untrained
    assert classifier.info.warning is not None
    assert classifier.backend.name == "tensorflow"


def test_classify_images_shapes(classifier: Classifier, sample_jpegs: list[bytes]) -> None:
    result = classifier.classify_images(sample_jpegs)
    assert_probabilities(result, len(sample_jpegs))
    assert set(result.codes) <= set(CODES)
    # The stand-in is untrained but not constant: different photos get different classes.
    assert len(set(result.codes)) > 1


def test_images_and_tensor_paths_agree(classifier: Classifier, sample_jpegs: list[bytes]) -> None:
    """The V2 `images` input and the seed's float `payload` give the same answer for the same pixels."""
    pixels = classifier.preprocess(sample_jpegs)
    from_images = classifier.classify_images(sample_jpegs)
    from_tensor = classifier.classify_tensor(pixels)
    np.testing.assert_array_equal(from_images.indices, from_tensor.indices)
    np.testing.assert_allclose(from_images.probabilities, from_tensor.probabilities, rtol=0, atol=1e-6)


def test_one_image_alone_or_in_a_batch(classifier: Classifier, sample_jpegs: list[bytes]) -> None:
    batch = classifier.classify_images(sample_jpegs)
    alone = classifier.classify_images(sample_jpegs[2:3])
    assert_probabilities(alone, 1)
    np.testing.assert_allclose(alone.probabilities[0], batch.probabilities[2], rtol=0, atol=1e-5)


def test_classify_tensor_validates_the_request(classifier: Classifier) -> None:
    bad = np.full((1, 224, 224, 3), 0.5, dtype=np.float32)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(TensorValueError, match="NaN"):
        classifier.classify_tensor(bad)


def test_limits_apply_to_both_inputs(classifier: Classifier, sample_jpegs: list[bytes]) -> None:
    strict = Classifier(classifier.backend, classifier.info, Limits(max_images=2))
    with pytest.raises(BatchTooLargeError, match="at most 2"):
        strict.classify_images(sample_jpegs[:3])
    with pytest.raises(BatchTooLargeError, match="at most 2"):
        strict.classify_tensor(np.zeros((3, 224, 224, 3), dtype=np.float32))


def test_load_without_a_model_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="cassava model fetch"):
        Classifier.load(tmp_path)
    with pytest.raises(ModelNotFoundError, match="cassava model export --format onnx"):
        Classifier.load(tmp_path, "onnx")


def test_load_of_a_broken_saved_model(tmp_path: Path) -> None:
    (tmp_path / "saved_model.pb").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match=r"is not a loadable TensorFlow SavedModel"):
        Classifier.load(tmp_path)


# --- the real CropNet graph (synthetic weights) ----------------------------------------------------


@pytest.fixture(scope="module")
def cropnet(cropnet_graph_dir: Path) -> Classifier:
    return Classifier.load(cropnet_graph_dir)


def test_cropnet_graph_has_no_signatures(cropnet_graph_dir: Path) -> None:
    """Why the backend calls `model(image, False)` rather than a serving signature."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((cropnet_graph_dir / "saved_model.pb").read_bytes())
    (graph,) = saved.meta_graphs
    # `__saved_model_init_op` is TensorFlow's own restore hook, never a callable signature.
    assert set(graph.signature_def) - {"__saved_model_init_op"} == set()


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 16])
def test_cropnet_graph_maps_n_images_to_n_probabilities(cropnet: Classifier, n: int) -> None:
    batch = np.random.default_rng(n).random((n, 224, 224, 3), dtype=np.float32)
    result = cropnet.classify_tensor(batch)
    assert_probabilities(result, n)


@pytest.mark.slow
def test_cropnet_graph_through_encoded_images(cropnet: Classifier, sample_jpegs: list[bytes]) -> None:
    result = cropnet.classify_images(sample_jpegs[:2])
    assert_probabilities(result, 2)


# --- streaming helpers -----------------------------------------------------------------------------


def test_in_chunks_reads_lazily_and_keeps_order() -> None:
    taken: list[int] = []

    def numbers() -> Iterator[int]:
        for n in range(7):
            taken.append(n)
            yield n

    chunks = in_chunks(numbers(), 3)
    assert next(chunks) == [0, 1, 2]
    assert taken == [0, 1, 2]  # nothing read beyond the first chunk
    assert list(chunks) == [[3, 4, 5], [6]]
    with pytest.raises(ValueError, match="at least 1"):
        next(in_chunks([1], 0))


def test_concatenate_joins_chunks_in_order(classifier: Classifier, sample_jpegs: list[bytes]) -> None:
    whole = classifier.classify_images(sample_jpegs)
    parts = [classifier.classify_images(chunk) for chunk in in_chunks(sample_jpegs, 3)]
    joined = BatchResult.concatenate(parts)
    np.testing.assert_array_equal(joined.indices, whole.indices)
    np.testing.assert_allclose(joined.probabilities, whole.probabilities, atol=1e-6)
    assert len(BatchResult.concatenate([])) == 0


def test_classify_each_skips_only_the_bad_image(classifier: Classifier, sample_jpegs: list[bytes]) -> None:
    named = [("a.jpg", sample_jpegs[0]), ("bad.jpg", b"not an image"), ("c.jpg", sample_jpegs[2])]
    result, errors = classifier.classify_each(named)
    assert list(errors) == [1]
    assert isinstance(errors[1], ImageDecodeError)
    assert "bad.jpg" in str(errors[1])
    expected = classifier.classify_images([sample_jpegs[0], sample_jpegs[2]])
    np.testing.assert_array_equal(result.indices, expected.indices)
    nothing, all_bad = classifier.classify_each([("x", b"")])
    assert len(nothing) == 0
    assert list(all_bad) == [0]
