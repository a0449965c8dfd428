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

import pytest
from PIL import Image

from cassava.bench.images import leaf_pixels
from cassava.export import PARITY_TOLERANCE, ExportResult, export

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# rich wraps the CLI's output at the terminal width (80 columns without a terminal): a long temporary
# path would be cut mid-word and no longer match. Set before any console is created.
os.environ["COLUMNS"] = "250"

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
    """A smooth, varied RGB image (the bench's generator without blotches and grain): different seeds
    give clearly different colours and layouts."""
    return Image.fromarray(leaf_pixels(size, seed=seed, detail=False), "RGB")


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


# --- ONNX exports (cassava.export), made once per session and shared by unit and integration tests ---

#: Parity bound for the CropNet graph with synthetic weights. Its untrained weights drive logits to
#: +-500, where float32 rounding alone moves probabilities by ~1e-4: TensorFlow itself is up to 1.2e-4
#: from a float64 evaluation of the same graph, and ONNX Runtime as far on the other side (docs/onnx.md).
#: The real weights and the stand-in keep the 1e-4 default.
CROPNET_SYNTHETIC_TOLERANCE = 3e-4


def _export_copy(source: Path, dest: Path, tolerance: float = PARITY_TOLERANCE) -> ExportResult:
    """Export the model in `source` into `dest` (linked, so a read-only source works); the result."""
    dest.mkdir(parents=True)
    for entry in source.iterdir():
        (dest / entry.name).symlink_to(entry.resolve())
    return export(dest, tolerance=tolerance)


@pytest.fixture(scope="session")
def standin_onnx(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> ExportResult:
    """The stand-in's export; its model directory is `.path.parent`."""
    return _export_copy(demo_model_dir, tmp_path_factory.mktemp("standin-onnx") / "model")


@pytest.fixture(scope="session")
def cropnet_onnx(tmp_path_factory: pytest.TempPathFactory, cropnet_graph_dir: Path) -> ExportResult:
    """The real CropNet graph's export (about a minute, once per session)."""
    return _export_copy(
        cropnet_graph_dir, tmp_path_factory.mktemp("cropnet-onnx") / "model", CROPNET_SYNTHETIC_TOLERANCE
    )
