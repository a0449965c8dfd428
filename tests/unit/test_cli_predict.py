"""`cassava predict` through the command line: files, folders and TFDS examples, table, JSON and plot."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from cassava.cli.main import app
from cassava.labels import CODES, DATASET_CODES
from cassava.pipeline import Classifier
from conftest import encode, make_leaf_image


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    # No test may find a model in the user's cache by accident.
    monkeypatch.setenv("CASSAVA_HOME", str(tmp_path / "empty-home"))
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def flat(text: str) -> str:
    """Console text with rich's line wrapping undone: long paths move the breaks around."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for seed in range(3):
        (root / "cmd").mkdir(exist_ok=True)
        (root / "cmd" / f"leaf{seed}.jpg").write_bytes(encode(make_leaf_image(seed), "JPEG", quality=90))
    (root / "unsorted.png").write_bytes(encode(make_leaf_image(10), "PNG"))
    return root


@pytest.fixture(scope="module")
def reference(demo_model_dir: Path) -> Classifier:
    return Classifier.load(demo_model_dir)


@pytest.fixture
def mock_cassava() -> Iterator[None]:
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=10):
        yield


def predict(runner: CliRunner, model: Path, *args: str) -> Any:
    return runner.invoke(app, ["predict", "--model", str(model), *args])


def test_files_table_with_labels_and_the_untrained_warning(
    runner: CliRunner, demo_model_dir: Path, photos: Path
) -> None:
    result = predict(runner, demo_model_dir, str(photos))
    assert result.exit_code == 0, result.output
    for name in ("leaf0.jpg", "leaf1.jpg", "leaf2.jpg", "unsorted.png"):
        assert name in flat(result.stdout)
    assert "confidence" in flat(result.stdout)
    assert "label" in flat(result.stdout)
    assert "/3 correct" in flat(result.stdout)  # only the three photos in cmd/ have a label
    assert "UNTRAINED stand-in" in flat(result.stdout)
    assert "UNTRAINED STAND-IN MODEL" in flat(result.stderr)


def test_json_matches_the_pipeline(
    runner: CliRunner, demo_model_dir: Path, photos: Path, reference: Classifier
) -> None:
    files = [photos / "cmd" / "leaf1.jpg", photos / "unsorted.png"]
    result = predict(runner, demo_model_dir, "--json", *map(str, files))
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)  # nothing but JSON on stdout; the warning goes to stderr
    assert "UNTRAINED" in flat(result.stderr)

    expected = reference.classify_images([f.read_bytes() for f in files])
    assert [r["input"] for r in records] == [str(f) for f in files]
    for record, index, probabilities in zip(records, expected.indices, expected.probabilities, strict=True):
        assert record["class_index"] == index
        assert record["class_code"] == CODES[index]
        assert list(record["probabilities"]) == list(CODES)
        np.testing.assert_allclose(list(record["probabilities"].values()), probabilities, atol=1e-6)
        assert record["confidence"] == pytest.approx(float(probabilities[index]), abs=1e-6)

    labelled, unlabelled = records
    assert labelled["label"] == DATASET_CODES.index("cmd")
    assert labelled["label_code"] == "cmd"
    assert labelled["correct"] == (labelled["class_index"] == labelled["label"])
    assert "label" not in unlabelled
    assert "correct" not in unlabelled


def test_plot_is_written(runner: CliRunner, demo_model_dir: Path, photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "plots" / "predictions.png"
    result = predict(runner, demo_model_dir, str(photos), "--plot", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"\x89PNG")
    assert "plot written to" in flat(result.stdout)


def test_dataset_examples(
    runner: CliRunner, demo_model_dir: Path, mock_cassava: None, tmp_path: Path
) -> None:
    out = tmp_path / "dataset.png"
    result = predict(runner, demo_model_dir, "--dataset", "--count", "4", "--json", "--plot", str(out))
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert len(records) == 4
    assert all(r["input"].startswith("validation[") for r in records)
    assert all(r["label_code"] in DATASET_CODES for r in records)
    assert out.is_file()
    assert "plot written to" in flat(result.stderr)  # stdout is kept for the JSON


def test_dataset_table_with_another_split_and_seed(
    runner: CliRunner, demo_model_dir: Path, mock_cassava: None
) -> None:
    result = predict(runner, demo_model_dir, "--dataset", "--split", "test", "--count", "2", "--seed", "-1")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("test[") == 2
    assert "/2 correct" in flat(result.stdout)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "nothing to classify"),
        (["--dataset", "x.jpg"], "not both"),
        (["does-not-exist.jpg"], "does-not-exist.jpg does not exist"),
    ],
)
def test_usage_errors_are_one_red_line(
    runner: CliRunner, demo_model_dir: Path, args: list[str], message: str
) -> None:
    result = predict(runner, demo_model_dir, *args)
    assert result.exit_code == 1
    assert "Traceback" not in flat(result.output)
    assert result.stderr.startswith("error:")
    assert message in flat(result.stderr)


def test_a_file_that_is_not_an_image(runner: CliRunner, demo_model_dir: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "leaf.jpg"
    bogus.write_text("not a photo")
    result = predict(runner, demo_model_dir, str(bogus))
    assert result.exit_code == 1
    assert f"{bogus} is not a recognised image" in flat(result.stderr)


def test_no_model_names_the_fix(runner: CliRunner, photos: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["predict", str(photos)])  # the (empty) cache's model
    assert result.exit_code == 1
    assert str(tmp_path / "empty-home" / "model") in flat(result.stderr)
    assert "cassava model fetch" in flat(result.stderr)


def test_onnx_backend_without_an_export_names_the_fix(
    runner: CliRunner, demo_model_dir: Path, photos: Path
) -> None:
    result = predict(runner, demo_model_dir, "--backend", "onnx", str(photos))
    assert result.exit_code == 1
    assert "cassava model export --format onnx" in flat(result.stderr)
