"""Per-image results, away from any terminal: the row kept per classified input, its JSON and output-file
records, the output files themselves (CSV, JSON Lines, Parquet; appended as a run goes, so `--resume`
can skip what an interrupted run did), and an ordered, bounded concurrent map for classifying chunks.

`cassava predict`, `infer` and `evaluate` print and summarise these (`cassava.cli._results`).
"""

from __future__ import annotations

import csv
import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import numpy as np

from cassava.datasets import Example, Skipped
from cassava.errors import DatasetError
from cassava.labels import CODES, by_index

if TYPE_CHECKING:
    from cassava.pipeline import BatchResult

#: Per-image output formats, by file extension.
OUTPUT_FORMATS = {".csv": "CSV", ".jsonl": "JSON Lines", ".parquet": "Parquet"}
PROBABILITY_COLUMNS = tuple(f"p_{code}" for code in CODES)
OUTPUT_COLUMNS = ("file", "class_code", "class_name", "confidence", *PROBABILITY_COLUMNS)


@dataclass(frozen=True)
class Row:
    """One classified input, without its bytes: what is kept per image."""

    name: str
    label: int | None
    index: int
    probabilities: np.ndarray  # float32 [6]

    @property
    def confidence(self) -> float:
        return float(self.probabilities[self.index])


Outcome = Row | Skipped


def outcomes(examples: Sequence[Example], result: BatchResult, errors: Mapping[int, object]) -> list[Outcome]:
    """One outcome per example, in order: `result` holds the rows of the examples not in `errors`
    (position -> reason), in their order."""
    rows = iter(zip(result.indices, result.probabilities, strict=True))
    done: list[Outcome] = []
    for position, example in enumerate(examples):
        if position in errors:
            done.append(Skipped(example.name, str(errors[position])))
        else:
            index, probabilities = next(rows)
            done.append(Row(example.name, example.label, int(index), probabilities))
    return done


def prediction_record(row: Row) -> dict[str, Any]:
    """One classified input as JSON: what `--json` prints, per input."""
    record: dict[str, Any] = {
        "input": row.name,
        "class_index": row.index,
        "class_code": CODES[row.index],
        "confidence": row.confidence,
        "probabilities": {code: float(p) for code, p in zip(CODES, row.probabilities, strict=True)},
    }
    if row.label is not None:
        record.update(label=row.label, label_code=CODES[row.label], correct=row.index == row.label)
    return record


def output_record(row: Row) -> dict[str, Any]:
    """One classified input as a row of `--output`: the columns of OUTPUT_COLUMNS."""
    probabilities = zip(PROBABILITY_COLUMNS, map(float, row.probabilities), strict=True)
    label = by_index(row.index)
    return {
        "file": row.name,
        "class_code": label.code,
        "class_name": label.name,
        "confidence": row.confidence,
        **dict(probabilities),
    }


# --- output files ----------------------------------------------------------------------------------


def done_names(path: Path) -> set[str]:
    """The `file` column of an earlier `--output` file: what `--resume` skips."""
    if not path.exists():
        return set()
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                return {record["file"] for record in csv.DictReader(f)}
        if suffix == ".jsonl":
            with path.open(encoding="utf-8") as f:
                return {json.loads(line)["file"] for line in f if line.strip()}
        import pyarrow.parquet as pq

        return {str(name) for name in pq.read_table(path, columns=["file"]).column("file").to_pylist()}
    except (KeyError, ValueError, OSError) as err:
        raise DatasetError(
            f"--resume: cannot read the file names in {path} ({type(err).__name__}: {err}); "
            "give the output file of an earlier run, or leave out --resume"
        ) from None


class OutputFile:
    """Rows written as they come, so that an interrupted run keeps what it did (`--resume`)."""

    def __init__(self, path: Path, *, resume: bool) -> None:
        self.path = path
        self.suffix = path.suffix.lower()
        self.written = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        append = resume and path.exists()
        self._file: IO[str] | None = None
        self._csv: csv.DictWriter[str] | None = None
        self._parquet: Any = None
        if self.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            # Parquet cannot be appended to: an earlier file's rows are copied into a new one, which
            # replaces it when the run ends (also when it is interrupted).
            text, numbers = OUTPUT_COLUMNS[:3], OUTPUT_COLUMNS[3:]
            self._schema = pa.schema([(c, pa.string()) for c in text] + [(c, pa.float32()) for c in numbers])
            self._partial = path.with_name(f".{path.name}.partial")
            self._parquet = pq.ParquetWriter(self._partial, self._schema)
            if append:
                self._parquet.write_table(pq.read_table(path).cast(self._schema))
        else:
            self._file = path.open("a" if append else "w", newline="", encoding="utf-8")
            if self.suffix == ".csv":
                self._csv = csv.DictWriter(self._file, fieldnames=OUTPUT_COLUMNS)
                if not append:
                    self._csv.writeheader()

    def write(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        records = [output_record(row) for row in rows]
        if self._parquet is not None:
            import pyarrow as pa

            self._parquet.write_table(pa.Table.from_pylist(records, schema=self._schema))
        elif self._csv is not None:
            self._csv.writerows(records)
        else:
            assert self._file is not None
            self._file.writelines(json.dumps(record) + "\n" for record in records)
        if self._file is not None:
            self._file.flush()
        self.written += len(rows)

    def close(self) -> None:
        if self._parquet is not None:
            self._parquet.close()
            self._partial.replace(self.path)
            self._parquet = None
        if self._file is not None:
            self._file.close()
            self._file = None


# --- concurrency -----------------------------------------------------------------------------------


T = TypeVar("T")
U = TypeVar("U")


def ordered_map(function: Callable[[T], U], items: Iterable[T], workers: int) -> Iterator[U]:
    """`map(function, items)` on `workers` threads: results in input order, `workers` calls running and
    one more queued, and `items` read only as fast as results are taken (bounded memory, unlike
    `Executor.map`, which submits everything at once)."""
    if workers <= 1:
        yield from map(function, items)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cassava")
    pending: deque[Future[U]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
