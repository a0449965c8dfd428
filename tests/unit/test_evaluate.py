"""`cassava.evaluate` (metrics from labels and probabilities) and `cassava evaluate` (the command) on a
generated labelled folder and on TFDS mock data, with the stand-in model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cassava.cli.main import app
from cassava.evaluate import MEANINGLESS, Evaluation, calibration, comparison
from cassava.labels import CODES, DATASET_CODES, NUM_CLASSES
from cassava.pipeline import Classifier
from conftest import encode, make_leaf_image


def random_evaluation(seed: int, n: int = 200) -> Evaluation:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES - 1, n)
    logits = rng.normal(size=(n, NUM_CLASSES))
    logits[np.arange(n), labels] += 1.5  # better than chance, worse than perfect
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return Evaluation("random", labels, probabilities, names=tuple(f"x{i}" for i in range(n)))


# --- metrics ---------------------------------------------------------------------------------------


def test_metrics_agree_with_their_definitions() -> None:
    evaluation = random_evaluation(0)
    metrics = evaluation.metrics()
    predicted = evaluation.probabilities.argmax(axis=1)
    assert metrics["accuracy"] == pytest.approx(np.mean(predicted == evaluation.labels))
    top2 = np.argsort(evaluation.probabilities, axis=1)[:, -2:]
    assert metrics["top2_accuracy"] == pytest.approx(
        np.mean((top2 == evaluation.labels[:, None]).any(axis=1))
    )
    counts = np.array(metrics["confusion_matrix"]["counts"])
    assert counts.sum() == len(evaluation.labels)
    for label in range(NUM_CLASSES):
        row = metrics["per_class"][CODES[label]]
        assert row["support"] == np.sum(evaluation.labels == label) == counts[label].sum()
        if counts[:, label].sum():
            assert row["precision"] == pytest.approx(counts[label, label] / counts[:, label].sum())
        if counts[label].sum():
            assert row["recall"] == pytest.approx(counts[label, label] / counts[label].sum())
    assert metrics["per_class"]["unknown"]["support"] == 0  # no dataset labels it


def test_calibration_error_is_zero_when_confidence_matches_accuracy() -> None:
    # In each bin, as many right as the confidence says: 8 of 10 right at 0.8, 6 of 10 at 0.6.
    probabilities, labels = [], []
    for confidence, right in ((0.8, 8), (0.6, 6)):
        for i in range(10):
            p = np.full(NUM_CLASSES, (1 - confidence) / (NUM_CLASSES - 1))
            p[0] = confidence
            probabilities.append(p)
            labels.append(0 if i < right else 1)
    calib = calibration(np.array(labels), np.array(probabilities))
    assert calib.ece == pytest.approx(0.0, abs=1e-9)
    assert calib.counts.sum() == 20

    overconfident = calibration(np.ones(20, dtype=int), np.array(probabilities))  # all wrong
    assert overconfident.ece == pytest.approx(np.mean([0.8] * 10 + [0.6] * 10))


def test_comparison_of_a_model_with_itself_and_with_another() -> None:
    first, second = random_evaluation(0), random_evaluation(0)
    same = comparison(first, second)
    assert same["agreement"] == 1.0
    assert same["accuracy_delta"] == 0.0
    shuffled = Evaluation("other", first.labels, first.probabilities[:, ::-1], names=first.names)
    other = comparison(first, shuffled)
    assert other["agreement"] == pytest.approx(np.mean(first.predictions == shuffled.predictions))
    assert other["accuracy_delta"] == pytest.approx(
        np.mean(shuffled.predictions == first.labels) - np.mean(first.predictions == first.labels)
    )
    with pytest.raises(ValueError, match="different images"):
        comparison(first, random_evaluation(1, n=10))


def test_aligned_keeps_the_inputs_both_classified() -> None:
    first = random_evaluation(0, n=5)
    fewer = Evaluation("b", first.labels[[4, 1]], first.probabilities[[4, 1]], names=("x4", "x1"))
    mine, theirs = first.aligned(fewer)
    assert mine.names == theirs.names == ("x1", "x4")
    np.testing.assert_array_equal(mine.probabilities, theirs.probabilities)


# --- the command -----------------------------------------------------------------------------------


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.setenv("CASSAVA_HOME", str(tmp_path / "empty-home"))
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("labelled")
    for i, code in enumerate(DATASET_CODES):
        (root / code).mkdir()
        for j in range(2):
            (root / code / f"{j}.jpg").write_bytes(encode(make_leaf_image(10 * i + j), "JPEG"))
    (root / "loose.jpg").write_bytes(encode(make_leaf_image(99), "JPEG"))  # no label: left out
    return root


def test_evaluate_a_labelled_folder(
    runner: CliRunner, demo_model_dir: Path, labelled: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    args = ["evaluate", "--model", str(demo_model_dir), "--out", str(out), "--compare", str(demo_model_dir)]
    result = runner.invoke(app, [*args, str(labelled)])
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    # The stand-in's numbers are noise, and the report says so before anything else.
    assert report.splitlines()[2] == f"> {MEANINGLESS}"
    data = json.loads((out / "report.json").read_text())
    assert data["untrained"] is True
    assert data["images"] == 2 * len(DATASET_CODES)
    assert "1 image(s) outside a class-named folder were left out" in " ".join(result.output.split())

    # The same photos through the pipeline directly give the same accuracy.
    files = sorted(labelled.glob("*/*.jpg"))
    expected = Classifier.load(demo_model_dir).classify_images([f.read_bytes() for f in files])
    truth = np.array([DATASET_CODES.index(f.parent.name) for f in files])
    assert data["accuracy"] == pytest.approx(np.mean(expected.indices == truth))
    assert data["compared"]["agreement"] == 1.0
    assert data["compared"]["accuracy_delta"] == 0.0
    for png in ("confusion.png", "reliability.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG")
        assert f"]({png})" in report


@pytest.fixture
def mock_cassava() -> Iterator[None]:
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=10):
        yield


def test_evaluate_a_tfds_split(
    runner: CliRunner, demo_model_dir: Path, mock_cassava: None, tmp_path: Path
) -> None:
    out = tmp_path / "tfds"
    args = ["evaluate", "--dataset", "--split", "test", "--model", str(demo_model_dir), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "report.json").read_text())
    assert data["images"] == 10
    assert sum(row["support"] for row in data["per_class"].values()) == 10
    assert "TFDS `cassava` split `test`" in (out / "report.md").read_text()


def test_evaluate_without_labels_says_how_to_label(
    runner: CliRunner, demo_model_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "field").mkdir()
    (tmp_path / "field" / "a.jpg").write_bytes(encode(make_leaf_image(1), "JPEG"))
    result = runner.invoke(app, ["evaluate", "--model", str(demo_model_dir), str(tmp_path / "field")])
    assert result.exit_code == 1
    assert "folders named after the class codes" in " ".join(result.stderr.split())


def test_evaluate_without_the_data_extra(
    runner: CliRunner, demo_model_dir: Path, labelled: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "sklearn", None)
    result = runner.invoke(app, ["evaluate", "--model", str(demo_model_dir), str(labelled)])
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "pip install 'cassava-serving[data]'" in line
