"""Servers and requests shared by the integration tests.

Every MLServer start costs 20-30 s (TensorFlow loads in the worker), so servers are session- or
module-scoped and as few as possible: the stand-in server below serves test_server.py and
test_bad_input.py alike. Its `max_images` is the seed's batch, 16, so the seed's own request sits
exactly on the limit and 17 images are just over it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import MAX_BATCH_SIZE, SEED_BATCH

from cassava.server.process import ServerProcess


@pytest.fixture(scope="session")
def standin_server(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("standin-server")
    with ServerProcess.for_model(
        workdir, model_dir=demo_model_dir, extra={"max_images": MAX_BATCH_SIZE}
    ) as server:
        yield server


@pytest.fixture(scope="session")
def seed_jpegs(sample_jpegs: list[bytes]) -> list[bytes]:
    """16 different JPEGs, the size of the seed's test.py batch: the 8 samples and their mirror images."""
    mirrored = []
    for data in sample_jpegs:
        buffer = io.BytesIO()
        Image.open(io.BytesIO(data)).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(buffer, "JPEG")
        mirrored.append(buffer.getvalue())
    return [*sample_jpegs, *mirrored][:SEED_BATCH]


@pytest.fixture(scope="session")
def seed_batch(seed_jpegs: list[bytes]) -> np.ndarray:
    """The seed's request tensor: float32 [16, 224, 224, 3] in [0, 1], preprocessed as test.py did."""
    from cassava.preprocessing import Limits, preprocess_images

    return preprocess_images(seed_jpegs, Limits())
