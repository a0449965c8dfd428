"""`cassava predict`: classify image files, or random TFDS `cassava` examples, in this process.

The images go through `Classifier.classify_each` as their encoded bytes, the path a server request
takes, so a local prediction and a served one agree. They stream: read, decoded and classified one chunk
(the server's `max_images`) at a time, so a folder of any size runs in bounded memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cassava.cli._common import (
    DATA_EXTRA,
    TFDS_COUNT,
    TFDS_DATA_DIR,
    TFDS_SEED,
    TFDS_SPLIT,
    fail,
    native_stderr_quiet,
    reports_errors,
    require_module,
    warn_untrained,
)
from cassava.cli._results import Collector, check_output, run_stream, show_results
from cassava.results import Outcome, OutputFile, done_names, outcomes
from cassava.settings import Backend, CassavaSettings

if TYPE_CHECKING:
    from cassava.datasets import Example, Source
    from cassava.pipeline import Classifier

#: `--plot-max`'s default: a 6x6 grid stays readable, and drawing more costs seconds each.
PLOT_MAX = 36

# Declared once: `cassava infer` takes the same.
INPUT_PATHS = typer.Argument(
    None, help="Image files or directories (searched recursively).", show_default=False
)
PLOT = typer.Option(None, "--plot", help="Also draw images and predictions into this PNG.")
PLOT_MAX_OPTION = typer.Option(PLOT_MAX, "--plot-max", min=1, help="Most images --plot draws.")
JSON_OUTPUT = typer.Option(False, "--json", help="Print one JSON object per image instead of a table.")
OUTPUT = typer.Option(
    None,
    "--output",
    "-o",
    help="Write one row per image to this file, by extension: .csv, .jsonl or .parquet "
    "(file, class code, name, confidence, six probabilities). The terminal then shows the summary only.",
    show_default=False,
)
RESUME = typer.Option(False, "--resume", help="Skip the images already in --output, and append to it.")
STRICT = typer.Option(
    False, "--strict", help="Stop at the first unreadable image instead of skipping it and listing it."
)


@reports_errors
def predict(
    paths: list[Path] = INPUT_PATHS,
    dataset: bool = typer.Option(
        False, "--dataset", help="Classify random examples of the TFDS `cassava` dataset instead of files."
    ),
    split: str = TFDS_SPLIT,
    count: int = TFDS_COUNT,
    seed: int = TFDS_SEED,
    data_dir: Path = TFDS_DATA_DIR,
    model: Path = typer.Option(
        None, "--model", help="Model directory. Default: CASSAVA_MODEL_DIR, else the cache's model."
    ),
    backend: Backend = typer.Option(
        None, help="Inference backend. Default: CASSAVA_BACKEND, else tensorflow.", show_default=False
    ),
    plot: Path = PLOT,
    plot_max: int = PLOT_MAX_OPTION,
    json_output: bool = JSON_OUTPUT,
    output: Path = OUTPUT,
    resume: bool = RESUME,
    strict: bool = STRICT,
) -> None:
    """Classify images locally: files and folders, or random examples of the TFDS cassava dataset."""
    from cassava.backends import artifact_file
    from cassava.model_store import read_info
    from cassava.pipeline import Classifier

    check_inputs(paths, dataset, plot, output, resume)
    settings = CassavaSettings().with_flags(model_dir=model, backend=backend)
    settings = settings.with_flags(model_dir=settings.model_directory())
    assert settings.model_dir is not None
    # A missing model fails now, in one line, before the inputs are read or TensorFlow is imported.
    read_info(settings.model_dir, need=artifact_file(settings.backend))

    skip = done_names(output) if resume and output is not None else set()
    source = open_source(paths, dataset, split, count, seed, data_dir, skip)
    with native_stderr_quiet():
        classifier = Classifier.from_settings(settings)
    warn_untrained(classifier.info.warning)

    collector = Collector(
        keep_rows=json_output or output is None,
        plot_max=plot_max if plot is not None else 0,
        strict=strict,
        output=OutputFile(output, resume=resume) if output is not None else None,
    )
    try:
        run_stream(
            source,
            classifier.limits.max_images,
            lambda examples: classify_chunk(classifier, examples),
            collector,
            description="classifying",
        )
    finally:
        if collector.output is not None:
            collector.output.close()
    fail_if_nothing_classified(collector)
    show_results(
        collector,
        json_output=json_output,
        untrained=classifier.info.untrained,
        plot=plot,
        plot_title=f"{settings.model_dir} ({settings.backend})",
        resumed=len(skip),
    )
    # Said again after the results, which can scroll the first warning away.
    warn_untrained(classifier.info.warning)


def classify_chunk(classifier: Classifier, examples: list[Example]) -> list[Outcome]:
    result, errors = classifier.classify_each([(e.name, e.encoded) for e in examples])
    return outcomes(examples, result, errors)


def check_inputs(
    paths: list[Path] | None, dataset: bool, plot: Path | None, output: Path | None, resume: bool
) -> None:
    """Usage mistakes and missing optional packages, in one line each, before any work starts."""
    if dataset and paths:
        raise fail("give image paths or --dataset, not both")
    if not dataset and not paths:
        raise fail("nothing to classify: give image files or directories, or --dataset")
    if resume and output is None:
        raise fail("--resume continues an --output file; give --output FILE too")
    check_output(output)
    if dataset:
        require_module("tensorflow_datasets", DATA_EXTRA, "--dataset")
    if plot is not None:
        require_module("matplotlib", DATA_EXTRA, "--plot")


def open_source(
    paths: list[Path] | None,
    dataset: bool,
    split: str,
    count: int | None,
    seed: int,
    data_dir: Path | None,
    skip: set[str],
) -> Source:
    from cassava import datasets

    if dataset:
        with native_stderr_quiet():  # tensorflow_datasets imports TensorFlow
            return datasets.tfds_source(split, count, None if seed == -1 else seed, data_dir, skip=skip)
    return datasets.files_source(paths or [], skip=skip)


def fail_if_nothing_classified(collector: Collector) -> None:
    """Exit 1, after listing why, when every input was skipped: there is no result to show."""
    if collector.classified or not collector.skipped:
        return
    from cassava.cli._common import err_console

    table = collector.skipped_table()
    if table is not None:
        err_console.print(table)
    raise fail(f"none of the {len(collector.skipped)} input(s) could be classified (listed above)")
