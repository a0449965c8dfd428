"""How `cassava predict`, `infer` and `evaluate` stream their results: a progress bar, the rows (table,
JSON or an output file), a per-class summary and the inputs that were skipped, with their reasons.

The commands classify chunk by chunk; `Collector` takes each chunk's results as they come and keeps only
what it must (counts, the rows a table or JSON needs, the few examples a plot draws), so memory does not
grow with the folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from cassava.cli._common import err_console, fail, require_module
from cassava.datasets import Example, Skipped, Source
from cassava.labels import CODES, LABELS, NUM_CLASSES, by_index
from cassava.results import (
    OUTPUT_FORMATS,
    Outcome,
    OutputFile,
    Row,
    ordered_map,
    prediction_record,
)


def prediction_table(rows: Sequence[Row], *, untrained: bool) -> Table:
    """The rich table of `cassava predict` and `cassava infer`; scores the labels when inputs have them."""
    labelled = any(r.label is not None for r in rows)
    table = Table(title="UNTRAINED stand-in: meaningless predictions" if untrained else None)
    table.add_column("input", overflow="fold")
    table.add_column("class")
    table.add_column("name")
    table.add_column("confidence", justify="right")
    if labelled:
        table.add_column("label")
        table.add_column("", justify="center")
    correct = 0
    for row in rows:
        predicted = by_index(row.index)
        cells = [row.name, predicted.code, predicted.name, f"{row.confidence:.1%}"]
        if labelled:
            if row.label is None:
                cells += ["", ""]
            else:
                right = row.label == row.index
                correct += right
                cells += [CODES[row.label], "[green]✓[/]" if right else "[red]✗[/]"]
        table.add_row(*cells)
    if labelled:
        scored = sum(r.label is not None for r in rows)
        table.caption = f"{correct}/{scored} correct"
    return table


# --- output files ----------------------------------------------------------------------------------


def check_output(path: Path | None) -> None:
    """Refuse an output name whose format is unknown, or whose writer is not installed: before any
    work starts."""
    if path is None:
        return
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        known = ", ".join(f"{ext} ({name})" for ext, name in OUTPUT_FORMATS.items())
        raise fail(f"--output {path}: unknown format {suffix or '(no extension)'!r}; use {known}")
    if suffix == ".parquet":
        require_module("pyarrow", "pip install pyarrow", f"--output {path} (Parquet)")


# --- streaming -------------------------------------------------------------------------------------

#: Classifies one chunk of examples: one outcome per example, in order.
ClassifyChunk = Callable[[list[Example]], list[Outcome]]


def run_stream(
    source: Source,
    chunk_size: int,
    classify: ClassifyChunk,
    collector: Collector,
    *,
    description: str,
    concurrency: int = 1,
) -> None:
    """Classify `source` chunk by chunk (`concurrency` chunks at a time), into `collector`, with a
    progress bar. Inputs that could not be read go straight to the skipped list."""
    from cassava.pipeline import in_chunks

    def one_chunk(chunk: list[Example | Skipped]) -> list[tuple[Example | Skipped, Outcome]]:
        examples = [item for item in chunk if isinstance(item, Example)]
        done = iter(classify(examples) if examples else [])
        return [(item, item if isinstance(item, Skipped) else next(done)) for item in chunk]

    with progress_bar(source.total, description) as progress:
        for done in ordered_map(one_chunk, in_chunks(source.items, chunk_size), concurrency):
            collector.add(done)
            progress.advance(progress.task_ids[0], len(done))


# --- progress and collection -----------------------------------------------------------------------


class _ImagesPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} images/s" if speed else "… images/s", style="progress.data.speed")


@contextmanager
def progress_bar(total: int | None, description: str) -> Iterator[Progress]:
    """A progress bar on stderr (stdout may carry JSON) with images/s. Its only task is number 0."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _ImagesPerSecond(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        # Slower than the default 10/s: the refresh thread competes with decoding for the GIL.
        refresh_per_second=4,
    ) as progress:
        progress.add_task(description, total=total)
        yield progress


@dataclass
class Collector:
    """What a streaming run keeps: per-class counts and confidences, the skipped inputs, the rows when a
    table or JSON will show them, the first `plot_max` examples when a plot will draw them."""

    keep_rows: bool = False
    plot_max: int = 0
    strict: bool = False
    output: OutputFile | None = None
    rows: list[Row] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    plotted: list[tuple[Example, int]] = field(default_factory=list)
    plot_left_out: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES, dtype=np.int64))
    confidence_sums: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES))
    labelled: int = 0
    correct: int = 0

    @property
    def classified(self) -> int:
        return int(self.counts.sum())

    def add(self, done: Sequence[tuple[Example | Skipped, Outcome]]) -> None:
        """One chunk: each input and its outcome, in input order."""
        rows = [outcome for _, outcome in done if isinstance(outcome, Row)]
        for _, outcome in done:
            if isinstance(outcome, Skipped):
                self.skip(outcome)
        for row in rows:
            self.counts[row.index] += 1
            self.confidence_sums[row.index] += row.confidence
            if row.label is not None:
                self.labelled += 1
                self.correct += row.label == row.index
        if self.keep_rows:
            self.rows.extend(rows)
        if self.output is not None:
            self.output.write(rows)
        for item, outcome in done:
            if isinstance(item, Example) and isinstance(outcome, Row):
                if len(self.plotted) < self.plot_max:
                    self.plotted.append((item, outcome.index))
                else:
                    self.plot_left_out += 1

    def skip(self, skipped: Skipped) -> None:
        if self.strict:
            raise fail(f"{skipped.reason} (--strict stops at the first input that cannot be classified)")
        self.skipped.append(skipped)

    def summary(self) -> Table:
        """Per class: count, share and mean confidence of this run's predictions."""
        total = self.classified
        table = Table(title=f"summary: {total} image(s) classified", title_justify="left")
        table.add_column("class")
        table.add_column("name")
        table.add_column("count", justify="right")
        table.add_column("share", justify="right")
        table.add_column("mean confidence", justify="right")
        for label in LABELS:
            count = int(self.counts[label.index])
            mean = f"{self.confidence_sums[label.index] / count:.1%}" if count else "-"
            share = f"{count / total:.1%}" if total else "-"
            table.add_row(label.code, label.name, str(count), share, mean)
        captions = []
        if self.labelled:
            captions.append(f"{self.correct}/{self.labelled} labelled image(s) correct")
        if self.skipped:
            captions.append(f"{len(self.skipped)} skipped (listed below)")
        table.caption = "; ".join(captions) or None
        return table

    def skipped_table(self) -> Table | None:
        if not self.skipped:
            return None
        table = Table(title=f"{len(self.skipped)} input(s) skipped", title_justify="left")
        table.add_column("input", overflow="fold")
        table.add_column("reason", overflow="fold")
        for skipped in self.skipped:
            table.add_row(skipped.name, skipped.reason)
        return table


# --- the end of a run ------------------------------------------------------------------------------


def show_results(
    collector: Collector,
    *,
    json_output: bool,
    untrained: bool,
    plot: Path | None,
    plot_title: str,
    resumed: int = 0,
) -> None:
    """What `cassava predict` and `cassava infer` print after the stream: the rows (table or JSON,
    unless they went to `--output`), the per-class summary, the skipped inputs and the plot."""
    from cassava.cli._common import console

    # stdout carries nothing but JSON when --json asks for it.
    out = err_console if json_output else console
    if json_output:
        typer.echo(json.dumps([prediction_record(row) for row in collector.rows], indent=2))
    elif collector.keep_rows and collector.rows:
        console.print(prediction_table(collector.rows, untrained=untrained))
    out.print(collector.summary())
    if collector.output is not None:
        note = f" ({resumed} from an earlier run kept)" if resumed else ""
        out.print(f"{collector.output.written} row(s) written to [bold]{collector.output.path}[/]{note}")
    if (skipped := collector.skipped_table()) is not None:
        err_console.print(skipped)
    if plot is not None and collector.plotted:
        from cassava.plotting import plot_predictions

        examples = [example for example, _ in collector.plotted]
        predicted = [index for _, index in collector.plotted]
        if untrained:
            plot_title = f"UNTRAINED STAND-IN, predictions are meaningless: {plot_title}"
        written = plot_predictions(examples, predicted, plot, title=plot_title)
        left_out = (
            f" ({len(examples)} image(s) drawn, {collector.plot_left_out} more left out: raise --plot-max "
            "to draw more)"
            if collector.plot_left_out
            else ""
        )
        out.print(f"plot written to [bold]{written}[/]{left_out}")
