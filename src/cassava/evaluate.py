"""How good is the model on labelled photos: accuracy, top-2 accuracy, per-class precision / recall / F1,
the confusion matrix and calibration, from true labels and predicted probabilities.

The metrics are scikit-learn's (the `data` extra); calibration is the expected calibration error over
equal-width confidence bins, which scikit-learn does not compute, and the reliability diagram's points.
`Evaluation.to_dict()` is the JSON report; `markdown()` the human one. No model runs here: whatever
produced the probabilities (in process, a server) is the caller's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cassava.labels import CODES, LABELS, NUM_CLASSES

#: Equal-width confidence bins of the calibration error and the reliability diagram.
CALIBRATION_BINS = 10
MEANINGLESS = (
    "**These numbers mean nothing.** The model evaluated is an untrained stand-in (random or synthetic "
    "weights): its predictions are noise, so are the metrics below. They show what the report looks "
    "like, not how well CropNet classifies cassava leaves."
)


@dataclass(frozen=True)
class Calibration:
    """Per confidence bin: how many predictions, their mean confidence, and how many were right."""

    edges: np.ndarray  # [bins + 1]
    counts: np.ndarray  # int [bins]
    confidence: np.ndarray  # mean confidence per bin (nan where empty)
    accuracy: np.ndarray  # accuracy per bin (nan where empty)

    @property
    def ece(self) -> float:
        """Expected calibration error: |accuracy - confidence| per bin, weighted by its share."""
        filled = self.counts > 0
        weights = self.counts[filled] / self.counts.sum()
        return float(np.sum(weights * np.abs(self.accuracy[filled] - self.confidence[filled])))


def calibration(labels: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS) -> Calibration:
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Right-closed bins, the first also closed on the left: a confidence of exactly 1 is in the last.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(which, weights=correct.astype(float), minlength=bins) / counts
    return Calibration(edges, counts, mean_confidence, accuracy)


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one model on one labelled set."""

    name: str  # what was evaluated, e.g. "model dir (tensorflow)"
    labels: np.ndarray  # int [N]
    probabilities: np.ndarray  # float [N, 6]
    untrained: bool = False
    names: tuple[str, ...] = ()  # the inputs, in order, when known: what `aligned` matches on

    def aligned(self, other: Evaluation) -> tuple[Evaluation, Evaluation]:
        """Both evaluations on the inputs they share, in this one's order (an input one model could
        not classify is left out of both)."""
        if not self.names or not other.names:
            return self, other
        theirs = {name: i for i, name in enumerate(other.names)}
        mine = [i for i, name in enumerate(self.names) if name in theirs]
        them = [theirs[self.names[i]] for i in mine]
        return self._subset(mine), other._subset(them)

    def _subset(self, keep: list[int]) -> Evaluation:
        return Evaluation(
            self.name,
            self.labels[keep],
            self.probabilities[keep],
            self.untrained,
            tuple(self.names[i] for i in keep),
        )

    @property
    def predictions(self) -> np.ndarray:
        return np.asarray(self.probabilities.argmax(axis=1))

    def metrics(self) -> dict[str, Any]:
        from sklearn.metrics import (
            accuracy_score,
            confusion_matrix,
            precision_recall_fscore_support,
            top_k_accuracy_score,
        )

        classes = list(range(NUM_CLASSES))
        precision, recall, f1, support = precision_recall_fscore_support(
            self.labels, self.predictions, labels=classes, zero_division=0
        )
        calib = calibration(self.labels, self.probabilities)
        return {
            "model": self.name,
            "untrained": self.untrained,
            "images": len(self.labels),
            "accuracy": float(accuracy_score(self.labels, self.predictions)),
            "top2_accuracy": float(
                top_k_accuracy_score(self.labels, self.probabilities, k=2, labels=classes)
            ),
            "per_class": {
                label.code: {
                    "name": label.name,
                    "precision": float(precision[label.index]),
                    "recall": float(recall[label.index]),
                    "f1": float(f1[label.index]),
                    "support": int(support[label.index]),
                }
                for label in LABELS
            },
            "confusion_matrix": {
                "rows_true_columns_predicted": list(CODES),
                "counts": confusion_matrix(self.labels, self.predictions, labels=classes).tolist(),
            },
            "calibration": {
                "ece": calib.ece,
                "bins": [
                    {
                        "from": float(low),
                        "to": float(high),
                        "count": int(n),
                        "confidence": None if n == 0 else float(conf),
                        "accuracy": None if n == 0 else float(acc),
                    }
                    for low, high, n, conf, acc in zip(
                        calib.edges[:-1],
                        calib.edges[1:],
                        calib.counts,
                        calib.confidence,
                        calib.accuracy,
                        strict=True,
                    )
                ],
            },
        }


def comparison(first: Evaluation, second: Evaluation) -> dict[str, Any]:
    """Two models on the same images: how often they agree on the class, and the accuracy difference."""
    if len(first.labels) != len(second.labels) or not np.array_equal(first.labels, second.labels):
        raise ValueError("the two evaluations cover different images; compare runs over the same inputs")
    from sklearn.metrics import accuracy_score

    first_accuracy = float(accuracy_score(first.labels, first.predictions))
    second_accuracy = float(accuracy_score(second.labels, second.predictions))
    return {
        "model": first.name,
        "compared_with": second.name,
        "agreement": float(np.mean(first.predictions == second.predictions)),
        "accuracy": first_accuracy,
        "compared_accuracy": second_accuracy,
        "accuracy_delta": second_accuracy - first_accuracy,
        "max_probability_difference": float(np.max(np.abs(first.probabilities - second.probabilities))),
    }


def markdown(
    metrics: dict[str, Any],
    *,
    figures: dict[str, str],
    compared: dict[str, Any] | None = None,
    source: str = "",
) -> str:
    """The Markdown report of `metrics` (`Evaluation.metrics()`), with `figures` (caption -> relative
    PNG path) and, when given, the comparison with a second model."""
    lines = ["# Evaluation", ""]
    if metrics["untrained"]:
        lines += [f"> {MEANINGLESS}", ""]
    lines += [
        f"- model: `{metrics['model']}`",
        *([f"- data: {source}"] if source else []),
        f"- images: {metrics['images']}",
        f"- accuracy: **{metrics['accuracy']:.1%}**; top-2 accuracy: {metrics['top2_accuracy']:.1%}",
        f"- expected calibration error ({CALIBRATION_BINS} bins): {metrics['calibration']['ece']:.3f}",
        "",
        "## Per class",
        "",
        "| class | name | precision | recall | F1 | support |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for code, row in metrics["per_class"].items():
        lines.append(
            f"| `{code}` | {row['name']} | {row['precision']:.3f} | {row['recall']:.3f} | "
            f"{row['f1']:.3f} | {row['support']} |"
        )
    lines += ["", "## Confusion matrix (rows: true class, columns: predicted)", ""]
    lines.append("| | " + " | ".join(f"`{c}`" for c in CODES) + " |")
    lines.append("|---|" + "---:|" * NUM_CLASSES)
    for code, counts in zip(CODES, metrics["confusion_matrix"]["counts"], strict=True):
        lines.append(f"| `{code}` | " + " | ".join(str(n) for n in counts) + " |")
    if compared is not None:
        lines += [
            "",
            "## Compared",
            "",
            f"`{compared['model']}` against `{compared['compared_with']}` on the same images:",
            "",
            f"- agreement (same class): {compared['agreement']:.1%}",
            f"- accuracy: {compared['accuracy']:.1%} vs {compared['compared_accuracy']:.1%} "
            f"(delta {compared['accuracy_delta']:+.1%})",
            f"- largest probability difference: {compared['max_probability_difference']:.2e}",
        ]
    if figures:
        lines += ["", "## Figures", ""]
        for caption, path in figures.items():
            lines += [f"![{caption}]({path})", ""]
    return "\n".join(lines).rstrip() + "\n"
