"""The prediction grid: one panel per image, green when right, red when wrong, PNG out, no display."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from PIL import Image

from cassava.datasets import Example
from cassava.labels import by_index
from cassava.plotting import (
    RIGHT_COLOUR,
    UNLABELLED_COLOUR,
    WRONG_COLOUR,
    plot_predictions,
    prediction_figure,
)
from conftest import encode, make_leaf_image


def example(seed: int, label: int | None, size: tuple[int, int] = (90, 60)) -> Example:
    # PNG: lossless, so what is drawn is exactly the generated image.
    return Example(f"leaf-{seed}.jpg", encode(make_leaf_image(seed, size), "PNG"), label)


def test_png_is_written(tmp_path: Path) -> None:
    examples = [example(i, i % 5) for i in range(4)]
    out = plot_predictions(examples, [0, 1, 3, 3], tmp_path / "figures" / "grid.png", title="four leaves")
    assert out == tmp_path / "figures" / "grid.png"
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(out) as png:
        assert png.format == "PNG"
        assert png.width > 200
        assert png.height > 200


@pytest.mark.parametrize(("count", "rows", "columns"), [(1, 1, 1), (4, 2, 2), (9, 3, 3), (10, 3, 4)])
def test_one_panel_per_image_in_a_square_grid(count: int, rows: int, columns: int) -> None:
    figure = prediction_figure([example(i, None) for i in range(count)], [0] * count)
    axes = figure.get_axes()
    assert len(axes) == count
    geometry = axes[0].get_subplotspec().get_geometry()
    assert geometry[:2] == (rows, columns)
    assert all(len(ax.get_images()) == 1 for ax in axes)


def test_captions_are_green_when_right_red_when_wrong() -> None:
    examples = [example(0, 3), example(1, 3), example(2, None)]
    figure = prediction_figure(examples, [3, 4, 1])
    right, wrong, unlabelled = (ax.xaxis.label for ax in figure.get_axes())

    assert right.get_text() == f"label: {by_index(3).name}\nprediction: {by_index(3).name}"
    assert to_rgba(right.get_color()) == to_rgba(RIGHT_COLOUR)
    assert wrong.get_text() == f"label: {by_index(3).name}\nprediction: {by_index(4).name}"
    assert to_rgba(wrong.get_color()) == to_rgba(WRONG_COLOUR)
    # No label: the prediction alone, in a neutral colour.
    assert unlabelled.get_text() == f"prediction: {by_index(1).name}"
    assert to_rgba(unlabelled.get_color()) == to_rgba(UNLABELLED_COLOUR)


def test_panels_show_the_image_and_its_name() -> None:
    figure = prediction_figure([example(5, None, size=(4000, 3000))], [0], title="big photo")
    (ax,) = figure.get_axes()
    shown = ax.get_images()[0].get_array()
    # A 12-megapixel photo is thinned for drawing, keeping its aspect ratio.
    assert shown.shape[0] <= 600
    assert shown.shape[1] / shown.shape[0] == pytest.approx(4 / 3, rel=0.01)
    assert ax.get_title() == "leaf-5.jpg"
    assert figure.texts[0].get_text() == "big photo"


def test_long_names_are_shortened_from_the_left() -> None:
    black = encode(Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)), "PNG")
    long = Example("/very/long/path/" * 6 + "leaf.jpg", black, None)
    (ax,) = prediction_figure([long], [0]).get_axes()
    assert ax.get_title().endswith("leaf.jpg")
    assert ax.get_title().startswith("…")
    assert len(ax.get_title()) == 40


def test_mismatched_lengths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 examples but 1 predictions"):
        plot_predictions([example(0, None), example(1, None)], [0], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no examples"):
        plot_predictions([], [], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_headless_without_pyplot(tmp_path: Path) -> None:
    """No display and no pyplot: plotting works in a container and never opens a window."""
    script = textwrap.dedent(
        f"""
        import sys
        from cassava.datasets import Example
        from cassava.plotting import plot_predictions
        from pathlib import Path
        image = Path({str(tmp_path / "in.png")!r}).read_bytes()
        plot_predictions([Example("a", image, 1)], [1], Path({str(tmp_path / "h.png")!r}))
        assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
        assert "tensorflow" not in sys.modules, "plotting imported TensorFlow"
        """
    )
    (tmp_path / "in.png").write_bytes(encode(make_leaf_image(0, (40, 30)), "PNG"))
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MPLBACKEND")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "h.png").read_bytes().startswith(b"\x89PNG")
