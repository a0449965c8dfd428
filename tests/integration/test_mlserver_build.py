"""The seed's image build, `mlserver build DIR -t IMAGE`, replayed without a container engine.

`cassava build --mlserver-folder DIR` writes DIR from the project's real wheel and the stand-in's ONNX
export (no TensorFlow in the server, so the fresh environment installs in seconds). What MLServer
1.7.1's image build does with DIR, and what this test replays step by step:

1. `mlserver/cli/constants.py` (`DockerfileTemplate`, tag 1.7.1) copies settings.json,
   model-settings.json and requirements.txt into the builder image, then runs `hack/build-env.sh .`,
   which is `pip install -r requirements.txt` (`hack/build-env.sh`, tag 1.7.1): here, a fresh virtual
   environment installs requirements.txt from a directory holding those three files only;
2. `COPY . .` copies the rest of DIR; the image's command is `mlserver start $MLSERVER_MODELS_DIR`, with
   `MLSERVER_MODELS_DIR=/mnt/models` from MLServer's `Dockerfile` (tag 1.7.1), from the working
   directory the folder was copied into: here, `mlserver start EMPTY_DIR` run from DIR;
3. `mlserver start DIR` puts DIR (and the working directory) on `sys.path` (`mlserver/cli/serve.py`,
   `load_settings`, tag 1.7.1): the project's code is imported from the unpacked wheel, since the
   environment never installed it.

The builder image's Python is 3.10.12 (MLServer's `Dockerfile`, tag 1.7.1). The environment here uses a
`python3.10` from PATH when there is one, else this interpreter: the resolver test below proves that
every requirement has wheels for Python 3.10 on Linux.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from support import CALL_TIMEOUT

from cassava.client import CassavaClient
from cassava.contract import MODEL_NAME
from cassava.export import ExportResult
from cassava.ops.mlserver_folder import REQUIREMENTS_FILE, build_wheel, find_uv, write_mlserver_folder
from cassava.pipeline import Classifier
from cassava.server.process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
# What MLServer's generated Dockerfile copies before its pip step (tests/unit/test_cli_build.py reads
# the template itself to check this list).
COPIED_BEFORE_INSTALL = ("settings.json", "model-settings.json", REQUIREMENTS_FILE)
#: uv's words when the index cannot be reached at all (not when it answers "no such version").
OFFLINE_SIGNS = ("error sending request", "failed to fetch", "dns error", "connection refused", "timed out")
BUILDER_PLATFORM = "x86_64-manylinux_2_28"  # MLServer's base image is UBI 9 (glibc 2.34)


def run_uv(
    args: list[str], cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [find_uv(), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0 and any(sign in done.stderr.lower() for sign in OFFLINE_SIGNS):
        pytest.skip(f"the package index is unreachable: {done.stderr.strip()[-300:]}")
    return done


def builder_python() -> str | None:
    """A working Python 3.10 (the builder image's minor version): `python3.10` on PATH, or through
    pyenv's shim when pyenv has a 3.10 that is not its selected version."""
    found = shutil.which("python3.10")
    if found is None:
        return None
    attempts: list[dict[str, str]] = [{}]
    if pyenv := shutil.which("pyenv"):
        versions = subprocess.run([pyenv, "versions", "--bare"], capture_output=True, text=True, check=False)
        attempts += [{"PYENV_VERSION": v} for v in versions.stdout.split() if v.startswith("3.10.")]
    for extra in attempts:
        done = subprocess.run(
            [found, "-c", "import sys; print(sys.executable)"],
            capture_output=True,
            text=True,
            env={**os.environ, **extra},
            check=False,
        )
        if done.returncode == 0:
            return done.stdout.strip()
    return None


@dataclass(frozen=True)
class BuiltFolder:
    folder: Path
    venv_python: Path
    model_dir: Path
    python_version: str  # the fresh environment's
    figures: dict[str, float]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, standin_onnx: ExportResult) -> BuiltFolder:
    root = tmp_path_factory.mktemp("mlserver-build")
    figures: dict[str, float] = {}
    started = time.monotonic()
    wheel = build_wheel(ROOT, root / "dist")
    model_dir = standin_onnx.path.parent
    folder = write_mlserver_folder(root / "folder", model_dir=model_dir, wheel=wheel, backend="onnx").path
    figures["write folder (wheel build included) s"] = time.monotonic() - started

    started = time.monotonic()
    pre_install = root / "builder"
    pre_install.mkdir()
    for name in COPIED_BEFORE_INSTALL:
        shutil.copy2(folder / name, pre_install / name)
    python = builder_python() or sys.executable
    version_probe = [python, "-c", "import sys; print(sys.version.split()[0])"]
    python_version = subprocess.check_output(version_probe, text=True).strip()
    venv = root / "venv"
    done = run_uv(["venv", "--quiet", "--python", python, str(venv)])
    assert done.returncode == 0, done.stderr
    venv_python = venv / "bin" / "python"
    done = run_uv(["pip", "install", "--python", str(venv_python), "-r", REQUIREMENTS_FILE], cwd=pre_install)
    assert done.returncode == 0, done.stderr
    figures["fresh venv + pip install -r requirements.txt s"] = time.monotonic() - started
    return BuiltFolder(folder, venv_python, model_dir, python_version, figures)


@pytest.fixture(scope="module")
def clean_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The servers below see no trace of the developer's setup: no model choice, an empty model cache
    (so that the only model they can find is the folder's copy), no path to this checkout's sources,
    no active virtualenv."""
    with pytest.MonkeyPatch.context() as env:
        for name in ("CASSAVA_MODEL_DIR", "CASSAVA_BACKEND", "PYTHONPATH", "VIRTUAL_ENV"):
            env.delenv(name, raising=False)
        env.setenv("CASSAVA_HOME", str(tmp_path_factory.mktemp("empty-cassava-home")))
        yield


def start(built: BuiltFolder, models_dir: Path, cwd: Path, log: Path) -> ServerProcess:
    """`mlserver start MODELS_DIR` from the fresh environment, in `cwd`, on free ports (through
    ServerProcess, which owns the ports, readiness wait and process-group stop)."""
    mlserver = built.venv_python.parent / "mlserver"

    class VenvMLServer(ServerProcess):
        def command(self) -> list[str]:
            return [
                "/bin/sh",
                "-c",
                'cd "$0" && exec "$1" start "$2"',
                str(cwd),
                str(mlserver),
                str(models_dir),
            ]

    return VenvMLServer(folder=models_dir, log_path=log)


def check_prediction(server: ServerProcess, built: BuiltFolder, images: list[bytes]) -> None:
    response = httpx.get(f"{server.http_url}/v2/models/{MODEL_NAME}", timeout=CALL_TIMEOUT)
    assert response.status_code == 200, response.text
    parameters = response.json()["parameters"]
    assert parameters["backend"] == "onnx"
    assert parameters["untrained"] is True
    result = CassavaClient(server.http_url, timeout=CALL_TIMEOUT).classify_images(images)
    expected = Classifier.load(built.model_dir, "onnx").classify_images(images)
    np.testing.assert_array_equal(result.indices, expected.indices)
    np.testing.assert_allclose(result.probabilities, expected.probabilities, atol=1e-5)


@pytest.mark.slow
@pytest.mark.integration
def test_the_environment_has_only_third_party_packages(built: BuiltFolder) -> None:
    """Our package reached the environment from no index: requirements.txt does not name it, and the
    environment cannot import it outside the folder."""
    requirements = (built.folder / REQUIREMENTS_FILE).read_text()
    assert "cassava" not in "".join(ln for ln in requirements.splitlines() if not ln.startswith("#"))
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('cassava') is not None)"
    assert subprocess.run([built.venv_python, "-c", probe], cwd="/", check=False).returncode == 0
    version = "import mlserver; print(mlserver.__version__)"
    done = subprocess.run([built.venv_python, "-c", version], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "1.7.1"


@pytest.mark.slow
@pytest.mark.integration
def test_mlserver_start_folder_serves_from_the_folder_alone(
    built: BuiltFolder, clean_env: None, tmp_path: Path, sample_jpegs: list[bytes]
) -> None:
    started = time.monotonic()
    with start(built, built.folder, cwd=tmp_path, log=tmp_path / "mlserver.log").start(timeout=300) as server:
        built.figures["mlserver start FOLDER: ready s"] = time.monotonic() - started
        check_prediction(server, built, sample_jpegs)


@pytest.mark.slow
@pytest.mark.integration
def test_the_images_command_serves_the_folder_with_empty_models_dir(
    built: BuiltFolder, clean_env: None, tmp_path: Path, sample_jpegs: list[bytes]
) -> None:
    """The image runs `mlserver start /mnt/models` from the folder's copy; nothing is mounted there."""
    models_dir = tmp_path / "mnt-models"
    models_dir.mkdir()
    started = time.monotonic()
    with start(built, models_dir, cwd=built.folder, log=tmp_path / "mlserver.log").start(
        timeout=300
    ) as server:
        built.figures["image command (mlserver start /mnt/models): ready s"] = time.monotonic() - started
        check_prediction(server, built, sample_jpegs)
    figures = {k: round(v, 1) for k, v in built.figures.items()}
    print(f"\nPython {built.python_version}: " + json.dumps(figures, indent=2))


@pytest.mark.slow
@pytest.mark.parametrize("extra", ["tensorflow", "onnx"])
def test_the_requirements_resolve_for_the_builder_images_python(extra: str, tmp_path: Path) -> None:
    """Every requirement of the core and of `extra` has a wheel for CPython 3.10 on manylinux x86-64: the
    Python of MLServer 1.7.1's builder image (`ARG PYTHON_VERSION=3.10.12`, MLServer's `Dockerfile`, tag
    1.7.1). Wheels only, because that image has no compiler. Needs the package index."""
    args = ["pip", "compile", str(ROOT / "pyproject.toml"), "--extra", extra, "--python-version", "3.10"]
    args += [
        "--python-platform",
        BUILDER_PLATFORM,
        "--only-binary",
        ":all:",
        "--quiet",
        "-o",
        str(tmp_path / "lock.txt"),
    ]
    done = run_uv(args, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    pinned = [
        ln.split("==")[0]
        for ln in (tmp_path / "lock.txt").read_text().splitlines()
        if "==" in ln and not ln.startswith("#")
    ]
    assert {"mlserver", {"tensorflow": "tensorflow", "onnx": "onnxruntime"}[extra]} <= set(pinned)
