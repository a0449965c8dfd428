"""`cassava predict`: classify image files, or random TFDS `cassava` examples, in this process.

The images go through `Classifier.classify_images` as their encoded bytes, the path a server request
takes, so a local prediction and a served one agree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import typer

from cassava.cli._common import (
    TFDS_COUNT,
    TFDS_DATA_DIR,
    TFDS_SEED,
    TFDS_SPLIT,
    console,
    err_console,
    fail,
    reports_errors,
    warn_untrained,
)
from cassava.cli._results import prediction_record, prediction_table
from cassava.settings import Backend

if TYPE_CHECKING:
    from cassava.datasets import Example
    from cassava.pipeline import Classifier


@reports_errors
def predict(
    paths: list[Path] = typer.Argument(
        None, help="Image files or directories (searched recursively).", show_default=False
    ),
    dataset: bool = typer.Option(
        False, "--dataset", help="Classify random examples of the TFDS `cassava` dataset instead of files."
    ),
    split: str = TFDS_SPLIT,
    count: int = TFDS_COUNT,
    seed: int = TFDS_SEED,
    data_dir: Path = TFDS_DATA_DIR,
    model: Path = typer.Option(None, "--model", help="Model directory. Default: the cache's model."),
    backend: Backend = typer.Option("tensorflow", help="Inference backend."),
    plot: Path = typer.Option(None, "--plot", help="Also draw the images and predictions into this PNG."),
    json_output: bool = typer.Option(
        False, "--json", help="Print one JSON object per image instead of a table."
    ),
) -> None:
    """Classify images locally: files and folders, or random examples of the TFDS cassava dataset."""
    from cassava import datasets
    from cassava.model_store import ONNX_FILE, SAVED_MODEL_FILE, read_info, resolve_model_dir
    from cassava.pipeline import Classifier

    if dataset and paths:
        raise fail("give image paths or --dataset, not both")
    if not dataset and not paths:
        raise fail("nothing to classify: give image files or directories, or --dataset")
    model_dir = resolve_model_dir(model)
    # A missing model fails now, in one line, before the inputs are read or TensorFlow is imported.
    read_info(model_dir, need=ONNX_FILE if backend == "onnx" else SAVED_MODEL_FILE)

    if dataset:
        examples = datasets.load_tfds(split, count, None if seed == -1 else seed, data_dir)
    else:
        examples = datasets.load_files(paths)
    classifier = Classifier.load(model_dir, backend)
    warn_untrained(classifier.info.warning)
    indices, probabilities = _classify(classifier, examples)

    if json_output:
        records = [*map(prediction_record, examples, indices, probabilities)]
        typer.echo(json.dumps(records, indent=2))
    else:
        console.print(prediction_table(examples, indices, probabilities, untrained=classifier.info.untrained))
    if plot is not None:
        from cassava.plotting import plot_predictions

        title = f"{model_dir} ({backend})"
        if classifier.info.untrained:
            title = f"UNTRAINED STAND-IN, predictions are meaningless: {title}"
        written = plot_predictions(examples, [int(i) for i in indices], plot, title=title)
        (err_console if json_output else console).print(f"plot written to [bold]{written}[/]")
    # Said again after the results, which can scroll the first warning away.
    warn_untrained(classifier.info.warning)


def _classify(classifier: Classifier, examples: Sequence[Example]) -> tuple[np.ndarray, np.ndarray]:
    """Classify in batches no larger than the server would accept in one request."""
    size = classifier.limits.max_batch_size
    indices, probabilities = [], []
    for start in range(0, len(examples), size):
        result = classifier.classify_images([e.encoded for e in examples[start : start + size]])
        indices.append(result.indices)
        probabilities.append(result.probabilities)
    return np.concatenate(indices), np.concatenate(probabilities)
