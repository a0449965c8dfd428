"""The six classes the CropNet cassava model predicts: the only place they are written down.

The order is the model's output order: the TFDS `cassava` label names, then `unknown`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Label:
    index: int
    code: str
    name: str


LABELS: tuple[Label, ...] = (
    Label(0, "cbb", "Bacterial Blight"),
    Label(1, "cbsd", "Brown Streak Disease"),
    Label(2, "cgm", "Green Mite"),
    Label(3, "cmd", "Mosaic Disease"),
    Label(4, "healthy", "Healthy"),
    Label(5, "unknown", "Unknown"),
)

NUM_CLASSES = len(LABELS)
CODES: tuple[str, ...] = tuple(label.code for label in LABELS)
NAMES: tuple[str, ...] = tuple(label.name for label in LABELS)
# The classes of the TFDS `cassava` dataset; the model adds `unknown` after them.
DATASET_CODES: tuple[str, ...] = CODES[:-1]


def by_index(index: int) -> Label:
    if not 0 <= index < NUM_CLASSES:
        raise IndexError(f"class index {index} is out of range 0..{NUM_CLASSES - 1}")
    return LABELS[index]


def by_code(code: str) -> Label:
    for label in LABELS:
        if label.code == code:
            return label
    raise KeyError(f"unknown class code {code!r}; known codes: {', '.join(CODES)}")
