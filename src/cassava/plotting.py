"""Figures as PNG files: build a matplotlib `Figure`, then `save_figure` it.

Figures are drawn on the Agg canvas directly, never through pyplot: nothing opens a window, nothing
needs a display, and no global figure state leaks between calls (a server or a test may plot many).
matplotlib is imported inside each function so `cassava --help` stays fast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cassava.labels import by_index

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cassava.datasets import Example

RIGHT_COLOUR = "green"
WRONG_COLOUR = "red"
UNLABELLED_COLOUR = "black"
# Larger photos are thinned before drawing: a panel is a few hundred pixels wide, and drawing a
# 12-megapixel photo at full size costs seconds for nothing.
_MAX_PANEL_PIXELS = 512


def save_figure(figure: Figure, out: Path, dpi: int = 100) -> Path:
    """Write `figure` to `out` as PNG (parent folders created) and return the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(out, format="png", dpi=dpi, bbox_inches="tight")
    return out


# --- predictions -----------------------------------------------------------------------------------


def prediction_figure(
    examples: Sequence[Example], predicted: Sequence[int], title: str | None = None
) -> Figure:
    """A grid of the images, each captioned with its prediction and, when known, its label.

    The caption is green when the prediction matches the label and red when it does not; with no
    label it is the prediction alone, in black.
    """
    from matplotlib.figure import Figure

    if len(examples) != len(predicted):
        raise ValueError(f"{len(examples)} examples but {len(predicted)} predictions; give one per example")
    if not examples:
        raise ValueError("nothing to plot: no examples")
    columns = math.ceil(math.sqrt(len(examples)))
    rows = math.ceil(len(examples) / columns)
    figure = Figure(figsize=(columns * 3.4, rows * 3.9))
    for i, (example, prediction) in enumerate(zip(examples, predicted, strict=True)):
        ax = figure.add_subplot(rows, columns, i + 1)
        ax.imshow(_thumbnail(example.image))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(_short(example.name), fontsize=8)
        caption, colour = _caption(int(prediction), example.label)
        ax.set_xlabel(caption, color=colour, fontsize=10)
    if title:
        figure.suptitle(title, fontsize=12)
    figure.tight_layout()
    return figure


def plot_predictions(
    examples: Sequence[Example], predicted: Sequence[int], out: Path, title: str | None = None
) -> Path:
    """The prediction grid (see `prediction_figure`) written to `out` as PNG."""
    return save_figure(prediction_figure(examples, predicted, title), out)


def _caption(prediction: int, label: int | None) -> tuple[str, str]:
    predicted = by_index(prediction).name
    if label is None:
        return f"prediction: {predicted}", UNLABELLED_COLOUR
    caption = f"label: {by_index(label).name}\nprediction: {predicted}"
    return caption, RIGHT_COLOUR if prediction == label else WRONG_COLOUR


def _thumbnail(image: np.ndarray) -> np.ndarray:
    step = max(1, math.ceil(max(image.shape[:2]) / _MAX_PANEL_PIXELS))
    return image[::step, ::step]


def _short(name: str, width: int = 40) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]


# --- evaluation ------------------------------------------------------------------------------------


def confusion_figure(
    counts: Sequence[Sequence[int]], codes: Sequence[str], title: str | None = None
) -> Figure:
    """The confusion matrix as a heatmap: rows the true class, columns the predicted one, each cell
    shaded by its share of the row (recall on the diagonal) and labelled with its count."""
    from matplotlib.figure import Figure

    matrix = np.asarray(counts, dtype=float)
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    figure = Figure(figsize=(7, 6))
    ax = figure.add_subplot()
    image = ax.imshow(shares, cmap="Greens", vmin=0, vmax=1)
    ax.set_xticks(range(len(codes)), list(codes))
    ax.set_yticks(range(len(codes)), list(codes))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for (i, j), n in np.ndenumerate(matrix):
        ax.text(j, i, f"{int(n)}", ha="center", va="center", color="white" if shares[i, j] > 0.5 else "black")
    figure.colorbar(image, ax=ax, label="share of the true class")
    if title:
        ax.set_title(title, fontsize=10)
    figure.tight_layout()
    return figure


def reliability_figure(
    edges: np.ndarray,
    confidence: np.ndarray,
    accuracy: np.ndarray,
    counts: np.ndarray,
    title: str | None = None,
) -> Figure:
    """The reliability diagram: per confidence bin, accuracy against mean confidence (a calibrated
    model sits on the diagonal), with how many predictions fell in each bin below."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 7))
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    centres = (edges[:-1] + edges[1:]) / 2
    width = float(edges[1] - edges[0]) * 0.9
    filled = counts > 0
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    top.bar(centres[filled], accuracy[filled], width=width, color="tab:blue", alpha=0.7, label="accuracy")
    top.plot(confidence[filled], accuracy[filled], marker="o", color="tab:red", label="mean confidence")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.legend(fontsize=8, loc="upper left")
    bottom.bar(centres, counts, width=width, color="tab:grey")
    bottom.set_ylabel("predictions")
    bottom.set_xlabel("confidence (highest probability)")
    bottom.set_xlim(0, 1)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    if title:
        top.set_title(title, fontsize=10)
    figure.tight_layout()
    return figure


# --- benchmarks ------------------------------------------------------------------------------------


def benchmark_figure(runs: Sequence[Mapping[str, Any]], title: str | None = None) -> Figure:
    """Runs of `cassava bench` (`BenchReport.to_dict()`). One run: latency percentiles and images/s per
    time window, and the server's resident memory when it was sampled. Several: images/s and latency
    (p50 bar, p99 mark) side by side, one row per run, in the order given."""
    from matplotlib.figure import Figure

    if not runs:
        raise ValueError("nothing to plot: no benchmark runs")
    if len(runs) == 1:
        figure = _timeline(runs[0])
    else:
        labels = [str(run.get("label", i)) for i, run in enumerate(runs)]
        figure = Figure(figsize=(13, 1.2 + 0.32 * len(runs)))
        rate, latency = figure.subplots(1, 2, sharey=True)
        rows = np.arange(len(runs))
        rate.barh(rows, [float(run["images_per_s"]) for run in runs], color="tab:green")
        rate.set_yticks(rows, labels, fontsize=8)
        rate.invert_yaxis()
        rate.set_xlabel("images/s (higher is better)")
        p50 = np.array([float(run["latency_ms"]["p50"]) for run in runs])
        p99 = np.array([float(run["latency_ms"]["p99"]) for run in runs])
        latency.barh(rows, p50, color="tab:blue", label="p50")
        latency.scatter(p99, rows, color="tab:red", marker="|", s=120, label="p99", zorder=3)
        # `initial=` would cap the minimum at 1 ms; only the measured p50s count.
        fastest = min((float(v) for v in p50 if not math.isnan(v)), default=1.0)
        if np.nanmax(p99, initial=0) > 20 * max(fastest, 1e-3):
            latency.set_xscale("log")
        latency.set_xlabel("latency, ms (lower is better)")
        latency.legend(loc="lower right", fontsize=8)
        for ax in (rate, latency):
            ax.grid(axis="x", alpha=0.3)
    if title:
        figure.suptitle(title, fontsize=12)
    figure.tight_layout()
    return figure


def plot_benchmark(runs: Sequence[Mapping[str, Any]], out: Path, title: str | None = None) -> Path:
    """The benchmark chart (see `benchmark_figure`) written to `out` as PNG."""
    return save_figure(benchmark_figure(runs, title), out)


def _timeline(run: Mapping[str, Any]) -> Figure:
    from matplotlib.figure import Figure

    windows = list(run.get("windows", []))
    rss = list(run.get("rss_samples", []))
    figure = Figure(figsize=(10, 7.5 if rss else 5.5))
    axes = figure.subplots(3 if rss else 2, 1, sharex=True)
    middle = [(w["start_s"] + w["end_s"]) / 2 for w in windows]
    width = [max(w["end_s"] - w["start_s"], 1e-3) * 0.9 for w in windows]
    for q, colour in (("p50", "tab:blue"), ("p90", "tab:orange"), ("p99", "tab:red")):
        axes[0].plot(middle, [w["latency_ms"][q] for w in windows], marker="o", color=colour, label=q)
    axes[0].set_ylabel("latency, ms")
    axes[0].legend(fontsize=8)
    axes[0].set_title(str(run.get("label", "")), fontsize=10)
    axes[1].bar(middle, [w["images_per_s"] for w in windows], width=width, color="tab:green")
    errors = [w["errors"] for w in windows]
    if any(errors):
        for x, n in zip(middle, errors, strict=True):
            if n:
                axes[1].annotate(f"{n} err", (x, 0), color=WRONG_COLOUR, ha="center", fontsize=7)
    axes[1].set_ylabel("images/s")
    if rss:
        axes[2].plot([t for t, _ in rss], [b / 2**20 for _, b in rss], marker=".", color="tab:purple")
        axes[2].set_ylabel("server RSS, MiB")
        growth = run.get("rss_growth_pct")
        if growth is not None:
            axes[2].set_title(f"RSS growth after warm-up: {growth:+.1f}%", fontsize=9)
    axes[-1].set_xlabel("seconds since warm-up ended")
    for ax in axes:
        ax.grid(alpha=0.3)
    return figure


# --- latency against arrival rate ----------------------------------------------------------------


def latency_vs_rate_figure(
    points: Sequence[Mapping[str, Any]],
    capacity: Mapping[str, Any] | None = None,
    title: str | None = None,
) -> Figure:
    """An open-loop sweep (`cassava.bench.RatePoint.to_dict()` per rate): latency percentiles against
    the offered rate, with the objective and its crossing when `capacity` (`SloCapacity.to_dict()`) is
    given; and the achieved rate against the offered one, drops marked."""
    from matplotlib.figure import Figure

    if not points:
        raise ValueError("nothing to plot: no rate points")
    points = sorted(points, key=lambda p: float(p["rate"]))
    rates = [float(p["rate"]) for p in points]
    figure = Figure(figsize=(12, 4.5))
    latency, achieved = figure.subplots(1, 2)
    for q, colour in (("p50", "tab:blue"), ("p90", "tab:orange"), ("p99", "tab:red")):
        latency.plot(rates, [float(p["latency_ms"][q]) for p in points], marker="o", color=colour, label=q)
    if capacity is not None:
        latency.axhline(
            float(capacity["slo_ms"]),
            color="black",
            linestyle="--",
            label=f"objective: {capacity['percentile']} <= {float(capacity['slo_ms']):g} ms",
        )
        if capacity.get("crossing_rate") is not None:
            latency.axvline(float(capacity["crossing_rate"]), color="grey", linestyle=":", label="crossing")
    # Past the knee latency grows by orders of magnitude: a log axis keeps the points below it legible.
    p99 = [float(p["latency_ms"]["p99"]) for p in points]
    p50 = [float(p["latency_ms"]["p50"]) for p in points]
    fastest = min((v for v in p50 if not math.isnan(v)), default=1.0)
    if np.nanmax(p99, initial=0) > 20 * max(fastest, 1e-3):
        latency.set_yscale("log")
    latency.set_xlabel("offered requests/s")
    latency.set_ylabel("latency from the scheduled send, ms")
    latency.legend(fontsize=8)
    achieved.plot(rates, rates, color="grey", linestyle="--", label="offered")
    achieved.plot(
        rates, [float(p["achieved_rate"]) for p in points], marker="o", color="tab:green", label="answered"
    )
    for rate, p in zip(rates, points, strict=True):
        if p.get("drops"):
            achieved.annotate(
                f"{p['drops']} dropped", (rate, float(p["achieved_rate"])), color=WRONG_COLOUR, fontsize=7
            )
    achieved.set_xlabel("offered requests/s")
    achieved.set_ylabel("answered requests/s")
    achieved.legend(fontsize=8)
    for ax in (latency, achieved):
        ax.grid(alpha=0.3)
    if title:
        figure.suptitle(title, fontsize=12)
    figure.tight_layout()
    return figure


def plot_latency_vs_rate(
    points: Sequence[Mapping[str, Any]],
    out: Path,
    capacity: Mapping[str, Any] | None = None,
    title: str | None = None,
) -> Path:
    """The latency-vs-rate chart (see `latency_vs_rate_figure`) written to `out` as PNG."""
    return save_figure(latency_vs_rate_figure(points, capacity, title), out)
