"""`mlserver start model/`, the seed tutorial's own command, on the repository's `model/` folder as it is.

The folder holds no SavedModel, so the runtime serves the model cache (`CASSAVA_HOME`), here holding
the stand-in. The folder is copied byte for byte into a temporary directory, so that whatever MLServer
might write next to it stays out of the repository.
"""

from __future__ import annotations

import filecmp
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from support import CALL_TIMEOUT

from cassava.client import CassavaClient
from cassava.contract import MODEL_NAME
from cassava.model_store import default_model_dir
from cassava.pipeline import Classifier
from cassava.server.config import model_settings, server_settings
from cassava.server.process import ServerProcess

MODEL_FOLDER = Path(__file__).resolve().parents[2] / "model"


def test_model_folder_is_the_generated_configuration() -> None:
    """model/*.json are `cassava.server.config`'s dictionaries on disk: one source of truth."""
    assert json.loads((MODEL_FOLDER / "model-settings.json").read_text()) == model_settings()
    assert json.loads((MODEL_FOLDER / "settings.json").read_text()) == server_settings()


@dataclass(frozen=True)
class SeedFolder:
    folder: Path  # the copy of model/
    cache_model: Path  # the model in CASSAVA_HOME
    server: ServerProcess


@pytest.fixture(scope="module")
def seed_folder(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[SeedFolder]:
    root = tmp_path_factory.mktemp("seed-folder")
    folder = root / "model"
    shutil.copytree(MODEL_FOLDER, folder)
    home = root / "cassava-home"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CASSAVA_HOME", str(home))
        # A developer's own CASSAVA_MODEL_DIR must not decide which model this test serves.
        env.delenv("CASSAVA_MODEL_DIR", raising=False)
        cache_model = default_model_dir()
        # The cache's model: the stand-in `write_demo_model` wrote for the session, copied into place.
        shutil.copytree(demo_model_dir, cache_model)
        server = ServerProcess(folder=folder, log_path=root / "mlserver.log").start()
    try:
        yield SeedFolder(folder, cache_model, server)
    finally:
        server.stop()


@pytest.mark.integration
def test_mlserver_start_model_folder_serves_the_cache(
    seed_folder: SeedFolder, sample_jpegs: list[bytes]
) -> None:
    server = seed_folder.server
    response = httpx.get(f"{server.http_url}/v2/models/{MODEL_NAME}", timeout=CALL_TIMEOUT)
    assert response.status_code == 200, response.text
    parameters = response.json()["parameters"]
    assert parameters["untrained"] is True
    # The metadata names no server path (docs/reliability.md): the answers below show which model it is.
    assert str(seed_folder.cache_model) not in str(parameters)

    result = CassavaClient(server.http_url, timeout=CALL_TIMEOUT).classify_images(sample_jpegs)
    expected = Classifier.load(seed_folder.cache_model).classify_images(sample_jpegs)
    np.testing.assert_array_equal(result.indices, expected.indices)
    np.testing.assert_allclose(result.probabilities, expected.probabilities, atol=1e-5)

    # What MLServer served is still the repository's folder, file for file.
    comparison = filecmp.dircmp(MODEL_FOLDER, seed_folder.folder)
    assert comparison.left_only == comparison.right_only == comparison.diff_files == []
