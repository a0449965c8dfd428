"""`cassava evaluate`: score the model on labelled photos (class-named folders or a TFDS split), in this
process or through a server, optionally against a second model or backend; write a Markdown report with
figures, and the same as JSON. The metrics are `cassava.evaluate`'s; this module only gathers
predictions and writes files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, get_args

import numpy as np
import typer

from cassava.cli._common import (
    DATA_EXTRA,
    TFDS_DATA_DIR,
    console,
    err_console,
    fail,
    native_stderr_quiet,
    reports_errors,
    require_module,
    warn_untrained,
)
from cassava.cli._results import ClassifyChunk, Collector, run_stream
from cassava.cli.predict import INPUT_PATHS, classify_chunk, open_source
from cassava.contract import MODEL_NAME
from cassava.settings import Backend, CassavaSettings

if TYPE_CHECKING:
    from cassava.evaluate import Evaluation

BACKENDS = get_args(Backend)


@dataclass
class Predictor:
    """Where predictions come from: a name for the report, how to classify a chunk, how many at once."""

    name: str
    classify: ClassifyChunk
    chunk_size: int
    concurrency: int
    untrained: bool
    warning: str | None


@reports_errors
def evaluate(
    paths: list[Path] = INPUT_PATHS,
    dataset: bool = typer.Option(
        False, "--dataset", help="Evaluate on a split of the TFDS `cassava` dataset instead of folders."
    ),
    split: str = typer.Option("test", help="TFDS split (with --dataset), e.g. test or 'test[:500]'."),
    count: int = typer.Option(
        None, min=1, help="Evaluate on this many random examples of the split. Default: all of it."
    ),
    data_dir: Path = TFDS_DATA_DIR,
    model: Path = typer.Option(
        None, "--model", help="Model directory. Default: CASSAVA_MODEL_DIR, else the cache's model."
    ),
    backend: Backend = typer.Option(
        None, help="Inference backend. Default: CASSAVA_BACKEND, else tensorflow.", show_default=False
    ),
    url: str = typer.Option(
        None,
        "--url",
        help="Evaluate a running server instead: http(s)://HOST:PORT[/PATH] or grpc://HOST:PORT.",
        show_default=False,
    ),
    header: list[str] = typer.Option(
        None,
        "--header",
        "-H",
        metavar="NAME:VALUE",
        help="Header for every request (with --url).",
        show_default=False,
    ),
    model_name: str = typer.Option(MODEL_NAME, "--model-name", help="The model's name on the server."),
    concurrency: int = typer.Option(1, "--concurrency", "-c", min=1, help="Requests in flight (--url)."),
    compare: str = typer.Option(
        None,
        "--compare",
        help="A second model to compare with, on the same images: a backend (tensorflow, onnx: the same "
        "model directory), another model directory, or a server URL.",
        show_default=False,
    ),
    out: Path = typer.Option(Path("evaluation"), "--out", help="Folder for report.md, report.json, PNGs."),
) -> None:
    """Score the model on labelled photos: accuracy, per-class precision/recall/F1, confusion matrix,
    calibration. Folders are labelled by name: DIR/cbb/*.jpg, DIR/cmd/*.jpg, ..."""
    from cassava.cli.infer import parse_headers

    if dataset and paths:
        raise fail("give labelled folders or --dataset, not both")
    if not dataset and not paths:
        raise fail(
            "nothing to evaluate: give folders of photos named after the classes (DIR/cbb/*.jpg, "
            "DIR/cmd/*.jpg, ...) or --dataset"
        )
    for module in ("sklearn", "matplotlib", *(("tensorflow_datasets",) if dataset else ())):
        require_module(module, DATA_EXTRA, "cassava evaluate")
    headers = parse_headers(header or [])
    settings = CassavaSettings().with_flags(model_dir=model, backend=backend)

    def run(spec: str | None, what: str) -> Evaluation:
        source = open_source(paths, dataset, split, count, 0, data_dir, set())
        with predictor(spec, settings, headers, model_name, concurrency) as chosen:
            warn_untrained(chosen.warning)
            collector = Collector(keep_rows=True)
            run_stream(
                source,
                chosen.chunk_size,
                chosen.classify,
                collector,
                description=what,
                concurrency=chosen.concurrency,
            )
        return as_evaluation(chosen, collector)

    first = run(url, "evaluating")
    second = run(compare_spec(compare, settings), "comparing") if compare is not None else None
    written = write_report(first, second, out, source=_describe(paths, dataset, split, count))
    console.print(f"report written to [bold]{written}[/] (with report.json and figures)")
    if first.untrained:
        warn_untrained("the evaluated model is an UNTRAINED stand-in: the report's numbers mean nothing")


def compare_spec(compare: str, settings: CassavaSettings) -> str:
    """--compare as a predictor spec: a backend name means the first model's directory on it."""
    if compare in BACKENDS:
        return f"{settings.model_directory()}::{compare}"
    return compare


@contextmanager
def predictor(
    spec: str | None,
    settings: CassavaSettings,
    headers: dict[str, str],
    model_name: str,
    concurrency: int,
) -> Iterator[Predictor]:
    """`spec`: None (the settings' model in process), a URL (a server), a model directory, or
    DIR::BACKEND."""
    if spec is not None and "://" in spec:
        with _remote(spec, headers, model_name, concurrency) as remote:
            yield remote
        return
    from cassava.pipeline import Classifier

    if spec is not None:
        directory, _, chosen_backend = spec.partition("::")
        settings = settings.with_flags(model_dir=Path(directory), backend=chosen_backend or None)
    settings = settings.with_flags(model_dir=settings.model_directory())
    with native_stderr_quiet():
        classifier = Classifier.from_settings(settings)
    yield Predictor(
        name=f"{settings.model_dir} ({settings.backend})",
        classify=lambda examples: classify_chunk(classifier, examples),
        chunk_size=classifier.limits.max_images,
        concurrency=1,
        untrained=classifier.info.untrained,
        warning=classifier.info.warning,
    )


@contextmanager
def _remote(target: str, headers: dict[str, str], model_name: str, concurrency: int) -> Iterator[Predictor]:
    from cassava.cli.infer import FALLBACK_BATCH_SIZE, ClientPool, send_chunk
    from cassava.client import CassavaClient, InferenceRequestError, Retry

    clients = ClientPool(lambda: CassavaClient(target, model=model_name, headers=headers, retry=Retry()))
    try:
        try:
            parameters = clients.get().metadata().get("parameters") or {}
        except InferenceRequestError as err:
            raise fail(f"{target}: {' '.join(str(err).split())}") from None
        untrained = bool(parameters.get("untrained"))
        sent: list[int] = []
        yield Predictor(
            name=target,
            classify=lambda examples: send_chunk(clients.get(), examples, "bytes", sent),
            chunk_size=int(parameters.get("max_images") or FALLBACK_BATCH_SIZE),
            concurrency=concurrency,
            untrained=untrained,
            warning=f"{target} serves an UNTRAINED stand-in model" if untrained else None,
        )
    finally:
        clients.close()


def as_evaluation(chosen: Predictor, collector: Collector) -> Evaluation:
    from cassava.evaluate import Evaluation

    rows = [row for row in collector.rows if row.label is not None]
    if collector.skipped:
        err_console.print(collector.skipped_table())
    if not rows:
        raise fail(
            "no labelled image among the inputs: put the photos in folders named after the class codes "
            "(cbb, cbsd, cgm, cmd, healthy), or use --dataset"
        )
    if unlabelled := len(collector.rows) - len(rows):
        err_console.print(f"{unlabelled} image(s) outside a class-named folder were left out", style="dim")
    return Evaluation(
        name=chosen.name,
        labels=np.array([row.label for row in rows], dtype=np.int64),
        probabilities=np.stack([row.probabilities for row in rows]),
        untrained=chosen.untrained,
        names=tuple(row.name for row in rows),
    )


def write_report(first: Evaluation, second: Evaluation | None, out: Path, *, source: str) -> Path:
    """report.md, report.json, confusion.png and reliability.png into `out`."""
    from cassava.evaluate import calibration, comparison, markdown
    from cassava.labels import CODES
    from cassava.plotting import confusion_figure, reliability_figure, save_figure

    metrics = first.metrics()
    compared = None
    if second is not None:
        first, second = first.aligned(second)
        compared = comparison(first, second)
    prefix = "UNTRAINED, meaningless: " if first.untrained else ""
    save_figure(
        confusion_figure(metrics["confusion_matrix"]["counts"], CODES, title=f"{prefix}{first.name}"),
        out / "confusion.png",
    )
    calib = calibration(first.labels, first.probabilities)
    save_figure(
        reliability_figure(
            calib.edges, calib.confidence, calib.accuracy, calib.counts, title=f"{prefix}{first.name}"
        ),
        out / "reliability.png",
    )
    figures = {"Confusion matrix": "confusion.png", "Reliability diagram": "reliability.png"}
    (out / "report.md").write_text(markdown(metrics, figures=figures, compared=compared, source=source))
    (out / "report.json").write_text(
        json.dumps({**metrics, "data": source, "compared": compared}, indent=2) + "\n"
    )
    return out / "report.md"


def _describe(paths: list[Path] | None, dataset: bool, split: str, count: int | None) -> str:
    if dataset:
        return f"TFDS `cassava` split `{split}`" + (f" ({count} random examples)" if count else "")
    return ", ".join(f"`{p}`" for p in paths or [])
