"""Images for a run: synthetic leaf-like JPEGs, or the files a user points at.

The generator is the project's only one: the tests draw their sample images from it too, so a bench
figure and a test speak of the same kind of picture.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: Side of the scene the features are drawn in: a larger image shows the same scene, not more stripes.
SCENE_PX = 640.0


def leaf_pixels(size: tuple[int, int], *, seed: int = 0, index: int = 0, detail: bool = True) -> np.ndarray:
    """A uint8 RGB [height, width, 3] picture of `size` (width, height): smooth colour fields and, with
    `detail`, darker or yellower round blotches and sensor-like grain, so that it compresses like a
    photo rather than like a flat test pattern. (`seed`, `index`) picks the picture, reproducibly."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy *= SCENE_PX / max(width, height)
    xx *= SCENE_PX / max(width, height)
    rng = np.random.default_rng((seed, index))
    pixels = np.empty((height, width, 3), dtype=np.float32)
    for c in range(3):
        fx, fy = rng.uniform(0.002, 0.03, size=2)
        pixels[:, :, c] = rng.uniform(40, 215) + 40 * np.sin(fx * xx + fy * yy + rng.uniform(0, 6.3))
    if detail:
        for _ in range(int(rng.integers(3, 9))):  # lesions
            cy, cx = rng.uniform(0, SCENE_PX, size=2)
            radius = rng.uniform(15, 80)
            spot = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
            pixels += spot[:, :, None] * rng.uniform(-70, 50, size=3)
        pixels += rng.normal(0, 6, size=pixels.shape).astype(np.float32)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def generate_images(
    count: int, size: tuple[int, int] = (640, 480), *, quality: int = 90, seed: int = 0
) -> list[bytes]:
    """`count` different JPEGs of `size` (width, height), each a `leaf_pixels` picture."""
    from PIL import Image

    images = []
    for i in range(count):
        buffer = io.BytesIO()
        Image.fromarray(leaf_pixels(size, seed=seed, index=i), "RGB").save(buffer, "JPEG", quality=quality)
        images.append(buffer.getvalue())
    return images


def load_images(paths: Sequence[Path]) -> list[bytes]:
    """The bytes of the image files given and of those under the directories given, found by the same
    folder walk as `cassava predict` (sorted, hidden entries skipped)."""
    from cassava.datasets import image_files, read_image_file
    from cassava.errors import DatasetError

    if not paths:
        raise DatasetError("no images given; pass image files or directories")
    return [read_image_file(file) for file in image_files(paths)]
