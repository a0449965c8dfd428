"""How `cassava predict` and `cassava infer` show their results: one JSON record or table row per input."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.table import Table

from cassava.labels import CODES, by_index

if TYPE_CHECKING:
    from cassava.datasets import Example


def prediction_record(example: Example, index: int | np.integer, probabilities: np.ndarray) -> dict[str, Any]:
    """One classified input as JSON: what `--json` prints, per input."""
    index = int(index)  # numpy integers are not JSON serialisable
    record: dict[str, Any] = {
        "input": example.name,
        "class_index": index,
        "class_code": CODES[index],
        "confidence": float(probabilities[index]),
        "probabilities": {code: float(p) for code, p in zip(CODES, probabilities, strict=True)},
    }
    if example.label is not None:
        record.update(label=example.label, label_code=CODES[example.label], correct=index == example.label)
    return record


def prediction_table(
    examples: Sequence[Example], indices: np.ndarray, probabilities: np.ndarray, *, untrained: bool
) -> Table:
    """The rich table of `cassava predict` and `cassava infer`; scores the labels when inputs have them."""
    labelled = any(e.label is not None for e in examples)
    table = Table(title="UNTRAINED stand-in: meaningless predictions" if untrained else None)
    table.add_column("input", overflow="fold")
    table.add_column("class")
    table.add_column("name")
    table.add_column("confidence", justify="right")
    if labelled:
        table.add_column("label")
        table.add_column("", justify="center")
    correct = 0
    for example, index, probs in zip(examples, indices, probabilities, strict=True):
        predicted = by_index(int(index))
        row = [example.name, predicted.code, predicted.name, f"{probs[index]:.1%}"]
        if labelled:
            if example.label is None:
                row += ["", ""]
            else:
                right = example.label == int(index)
                correct += right
                row += [CODES[example.label], "[green]✓[/]" if right else "[red]✗[/]"]
        table.add_row(*row)
    if labelled:
        scored = sum(e.label is not None for e in examples)
        table.caption = f"{correct}/{scored} correct"
    return table
