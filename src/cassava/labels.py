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
    #: one plain sentence for people in the field (the web page shows it under each diagnosis)
    description: str


LABELS: tuple[Label, ...] = (
    Label(
        0,
        "cbb",
        "Bacterial Blight",
        "A bacterial disease: angular, water-soaked leaf spots, then wilting and dying shoots.",
    ),
    Label(
        1,
        "cbsd",
        "Brown Streak Disease",
        "A virus spread by whiteflies and cuttings: yellow blotches along the veins, brown streaks on "
        "stems, rotten roots.",
    ),
    Label(
        2,
        "cgm",
        "Green Mite",
        "Tiny mites feeding on young leaves: pale yellow speckles, small and misshapen leaves.",
    ),
    Label(
        3,
        "cmd",
        "Mosaic Disease",
        "A virus spread by whiteflies and cuttings: a yellow-green mosaic, twisted and shrunken leaves.",
    ),
    Label(4, "healthy", "Healthy", "No sign of the four diseases this model knows."),
    Label(
        5,
        "unknown",
        "Unknown",
        "The photo is not something the model can judge: photograph one cassava leaf, close and sharp.",
    ),
)

NUM_CLASSES = len(LABELS)
CODES: tuple[str, ...] = tuple(label.code for label in LABELS)
# The classes of the TFDS `cassava` dataset; the model adds `unknown` after them.
DATASET_CODES: tuple[str, ...] = CODES[:-1]


def by_index(index: int) -> Label:
    if not 0 <= index < NUM_CLASSES:
        raise IndexError(f"class index {index} is out of range 0..{NUM_CLASSES - 1}")
    return LABELS[index]
