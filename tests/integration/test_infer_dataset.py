"""`cassava infer --dataset`, the seed's `test.py` end to end: random TFDS `cassava` examples (mock data:
no download), preprocessed here and sent as the seed's float tensor, scored against their labels,
plotted. In process, over REST, against the session's stand-in server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cassava.cli.main import app
from cassava.labels import DATASET_CODES
from cassava.pipeline import Classifier
from cassava.preprocessing import Limits, decode_image, preprocess_pixels
from cassava.server.process import ServerProcess

pytestmark = pytest.mark.integration

COUNT = 5


@pytest.fixture
def mock_cassava() -> Iterator[None]:
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        yield


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("COLUMNS", "250")
    return CliRunner()


@pytest.mark.parametrize("encoding", ["tensor", "bytes"])
def test_dataset_examples_are_sent_scored_and_plotted(
    standin_server: ServerProcess,
    demo_model_dir: Path,
    mock_cassava: None,
    runner: CliRunner,
    tmp_path: Path,
    encoding: str,
) -> None:
    out = tmp_path / "predictions.png"
    args = ["infer", "--url", standin_server.http_url, "--dataset", "--count", str(COUNT)]
    args += ["--batch-size", "2", "--encoding", encoding, "--json", "--plot", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert len(records) == COUNT
    assert all(r["input"].startswith("validation[") for r in records)
    assert all(r["label_code"] in DATASET_CODES for r in records)
    assert all(r["correct"] == (r["class_index"] == r["label"]) for r in records)
    assert "in 3 request(s)" in result.stderr
    assert "UNTRAINED" in result.stderr
    assert out.read_bytes().startswith(b"\x89PNG")

    # The same examples through the one pipeline here: the served answer must be the local one.
    from cassava.datasets import load_tfds

    examples = load_tfds("validation", COUNT, 0)
    assert [e.name for e in examples] == [r["input"] for r in records]
    reference = Classifier.load(demo_model_dir)
    if encoding == "tensor":
        batch = np.stack([preprocess_pixels(decode_image(e.encoded, Limits())) for e in examples])
        expected = reference.classify_tensor(batch)
    else:
        expected = reference.classify_images([e.encoded for e in examples])
    assert [r["class_index"] for r in records] == expected.indices.tolist()


def test_evaluate_a_server_against_the_same_model_in_process(
    standin_server: ServerProcess,
    demo_model_dir: Path,
    mock_cassava: None,
    runner: CliRunner,
    tmp_path: Path,
) -> None:
    """`cassava evaluate --url` scores what the server answers; `--compare DIR` runs the same model here:
    the two must agree on every image."""
    out = tmp_path / "report"
    args = ["evaluate", "--dataset", "--split", "test", "--url", standin_server.http_url]
    args += ["--concurrency", "2", "--compare", str(demo_model_dir), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "report.json").read_text())
    assert data["untrained"] is True  # the server's metadata says so
    assert data["images"] == 12
    assert data["compared"]["agreement"] == 1.0
    assert data["compared"]["accuracy_delta"] == 0.0
    assert data["compared"]["max_probability_difference"] < 1e-5
