"""Shared fixtures: models built in tmp dirs, real MLServer processes on free ports, sample images.

MLServer's gRPC stubs and tritonclient's register the same protobuf names, so one process cannot import
both. Tests that import MLServer (runtime, protocol) run in this process; gRPC calls through
tritonclient run in a spawned helper process (`grpc_pool`), which starts clean.
"""

from __future__ import annotations

import io
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = Path(__file__).resolve().parents[2] / "shared"
SYNTHETIC_CROPNET = SHARED / "models" / "cropnet-graph-synthetic"


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The untrained stand-in written by the real `write_demo_model` code path."""
    from cassava.model_store import write_demo_model

    return write_demo_model(tmp_path_factory.mktemp("demo") / "model").path


@pytest.fixture(scope="session")
def cropnet_graph_dir() -> Path:
    """The real CropNet graph with synthetic weights; only next to the project's `../shared`."""
    if not (SYNTHETIC_CROPNET / "saved_model.pb").is_file():
        pytest.skip(f"{SYNTHETIC_CROPNET} is absent (it ships with the workplace, not with a clone)")
    return SYNTHETIC_CROPNET


def make_leaf_image(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A smooth, varied RGB image: different seeds give clearly different colours and layouts."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.002, 0.03), rng.uniform(0.002, 0.03), rng.uniform(0, 6.3)
        base = rng.uniform(40, 215)
        channels.append(base + 40 * np.sin(fx * xx + fy * yy + phase))
    pixels = np.clip(np.stack(channels, axis=2), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def encode(image: Image.Image, fmt: str = "JPEG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def sample_jpegs() -> list[bytes]:
    return [encode(make_leaf_image(seed), "JPEG", quality=90) for seed in range(8)]


@pytest.fixture(scope="session")
def grpc_pool() -> Iterator[ProcessPoolExecutor]:
    """A clean process for tritonclient's gRPC client (see the module docstring)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool
