"""`cassava predict` through the command line: files, folders and TFDS examples, table, JSON and plot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from cassava.cli.main import app
from cassava.labels import CODES, DATASET_CODES, LABELS
from cassava.pipeline import Classifier
from cassava.results import OUTPUT_COLUMNS
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
    assert "none of the 1 input(s) could be classified" in flat(result.stderr)


@pytest.fixture
def with_corrupt(tmp_path: Path, photos: Path) -> Path:
    folder = tmp_path / "survey"
    (folder / "cmd").mkdir(parents=True)
    for file in (photos / "cmd").iterdir():
        (folder / "cmd" / file.name).write_bytes(file.read_bytes())
    (folder / "cmd" / "leaf1b.jpg").write_bytes(b"\xff\xd8\xff truncated")
    return folder


def test_a_corrupt_file_in_a_folder_is_skipped_and_listed(
    runner: CliRunner, demo_model_dir: Path, with_corrupt: Path
) -> None:
    result = predict(runner, demo_model_dir, str(with_corrupt))
    assert result.exit_code == 0, result.output
    corrupt = with_corrupt / "cmd" / "leaf1b.jpg"
    assert "1 input(s) skipped" in flat(result.stderr)
    assert str(corrupt) in flat(result.stderr)
    assert "summary: 3 image(s) classified" in flat(result.stdout)
    assert "mean confidence" in flat(result.stdout)

    strict = predict(runner, demo_model_dir, "--strict", str(with_corrupt))
    assert strict.exit_code == 1
    assert str(corrupt) in flat(strict.stderr)
    assert "--strict" in flat(strict.stderr)


def test_summary_counts_match_the_rows(runner: CliRunner, demo_model_dir: Path, photos: Path) -> None:
    result = predict(runner, demo_model_dir, "--json", str(photos))
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    summary = flat(result.stderr.replace("│", " "))  # with --json the summary goes to stderr
    for code in set(r["class_code"] for r in records):
        mine = [r for r in records if r["class_code"] == code]
        mean = sum(r["confidence"] for r in mine) / len(mine)
        assert f"{code} " in summary
        assert f" {len(mine)} {len(mine) / len(records):.1%} {mean:.1%}" in summary


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_output_file_and_resume(
    runner: CliRunner, demo_model_dir: Path, photos: Path, tmp_path: Path, suffix: str
) -> None:
    import pandas as pd

    out = tmp_path / f"predictions{suffix}"
    first = [str(photos / "cmd" / "leaf0.jpg"), str(photos / "unsorted.png")]
    result = predict(runner, demo_model_dir, "--output", str(out), *first)
    assert result.exit_code == 0, result.output
    assert "2 row(s) written" in flat(result.stdout)
    assert (
        "input" not in flat(result.stdout).split("summary")[0]
    )  # no per-image table: the rows are in the file

    # --resume: the whole folder, of which two images are done already.
    again = predict(runner, demo_model_dir, "--output", str(out), "--resume", str(photos))
    assert again.exit_code == 0, again.output
    assert "2 row(s) written" in flat(again.stdout)
    assert "2 from an earlier run kept" in flat(again.stdout)

    read = {".csv": pd.read_csv, ".jsonl": lambda p: pd.read_json(p, lines=True), ".parquet": pd.read_parquet}
    table = read[suffix](out)
    assert list(table.columns) == list(OUTPUT_COLUMNS)
    assert sorted(table["file"]) == sorted(str(p) for p in [*photos.rglob("*.jpg"), *photos.rglob("*.png")])
    reference = Classifier.load(demo_model_dir)
    for row in table.itertuples(index=False):
        expected = reference.classify_images([Path(row.file).read_bytes()])
        assert row.class_code == expected.codes[0]
        assert row.class_name == LABELS[int(expected.indices[0])].name
        probabilities = [getattr(row, f"p_{code}") for code in CODES]
        np.testing.assert_allclose(probabilities, expected.probabilities[0], atol=1e-5)
        assert row.confidence == pytest.approx(max(probabilities), abs=1e-6)


def test_output_format_is_checked_before_work(runner: CliRunner, demo_model_dir: Path, photos: Path) -> None:
    result = predict(runner, demo_model_dir, "--output", "out.xlsx", str(photos))
    assert result.exit_code == 1
    assert "unknown format '.xlsx'" in flat(result.stderr)
    assert "UNTRAINED" not in flat(result.stderr)  # the model was never loaded


def test_plot_is_capped_and_says_what_it_left_out(
    runner: CliRunner, demo_model_dir: Path, photos: Path, tmp_path: Path
) -> None:
    from PIL import Image

    out = tmp_path / "capped.png"
    result = predict(runner, demo_model_dir, str(photos), "--plot", str(out), "--plot-max", "2")
    assert result.exit_code == 0, result.output
    assert "2 image(s) drawn, 2 more left out" in flat(result.stdout)
    with Image.open(out) as capped:
        size = capped.size
    full = tmp_path / "full.png"
    assert predict(runner, demo_model_dir, str(photos), "--plot", str(full)).exit_code == 0
    with Image.open(full) as whole:
        assert whole.size[0] * whole.size[1] > size[0] * size[1]  # 4 panels drawn against 2


@pytest.mark.parametrize(
    ("args", "module", "hint"),
    [
        (["--plot", "x.png"], "matplotlib", "pip install 'cassava-serving[data]'"),
        (["--dataset"], "tensorflow_datasets", "pip install 'cassava-serving[data]'"),
        (["--output", "x.parquet"], "pyarrow", "pip install pyarrow"),
    ],
)
def test_a_missing_extra_is_one_line_before_any_work(
    runner: CliRunner,
    demo_model_dir: Path,
    photos: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    module: str,
    hint: str,
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what `import module` sees when it is not installed
    paths = [] if "--dataset" in args else [str(photos)]
    result = predict(runner, demo_model_dir, *args, *paths)
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert hint in line
    assert "Traceback" not in result.output


def test_cassava_model_dir_and_backend_come_from_the_environment(
    runner: CliRunner, demo_model_dir: Path, photos: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CASSAVA_HOME points at an empty folder (the runner fixture): only CASSAVA_MODEL_DIR finds a model.
    leaf = photos / "cmd" / "leaf0.jpg"
    monkeypatch.setenv("CASSAVA_MODEL_DIR", str(demo_model_dir))
    result = runner.invoke(app, ["predict", "--json", str(leaf)])
    assert result.exit_code == 0, result.output
    assert [r["input"] for r in json.loads(result.stdout)] == [str(leaf)]

    monkeypatch.setenv("CASSAVA_BACKEND", "onnx")  # the stand-in has no export: the error proves it was read
    onnx = runner.invoke(app, ["predict", str(leaf)])
    assert onnx.exit_code == 1
    assert "cassava model export --format onnx" in flat(onnx.stderr)


def test_version(runner: CliRunner) -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"cassava {version('cassava-serving')}"


def test_tensorflow_native_log_is_quiet_unless_verbose(demo_model_dir: Path, photos: Path) -> None:
    """TensorFlow 2.21 logs through absl before absl is set up ("oneDNN custom operations are on",
    "failed call to cuInit" on a machine without a GPU), which TF_CPP_MIN_LOG_LEVEL does not silence
    (tensorflow/tensorflow#100442): a real process, as the user runs it."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["CASSAVA_HOME"] = str(photos / "no-home")
    cassava = Path(sys.executable).with_name("cassava")
    done = subprocess.run(
        [str(cassava), "predict", "--model", str(demo_model_dir), str(photos / "unsorted.png")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for noise in ("cuInit", "oneDNN", "absl::InitializeLog", "cuda_platform"):
        assert noise not in done.stderr
    assert "UNTRAINED" in done.stderr  # our own warnings still get through


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


def test_native_stderr_is_quiet_unless_verbose(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What native code writes to descriptor 2 (TensorFlow's C++ log) is dropped inside the block, and
    shown with `--verbose`; descriptor 2 works again after it."""
    from cassava.cli import _common

    with _common.native_stderr_quiet():
        os.write(2, b"I0000 oneDNN custom operations are on\n")
    os.write(2, b"after the block\n")
    monkeypatch.setattr(_common, "VERBOSE", True)
    with _common.native_stderr_quiet():
        os.write(2, b"verbose: shown\n")
    err = capfd.readouterr().err
    assert "oneDNN" not in err
    assert "after the block" in err
    assert "verbose: shown" in err
