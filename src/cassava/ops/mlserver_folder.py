"""A self-contained folder for `mlserver build FOLDER -t IMAGE`, the seed tutorial's image build.

What MLServer 1.7.1's generated Dockerfile (`mlserver.cli.constants.DockerfileTemplate`) does with the
folder decides its layout:

- it copies only `settings.json`, `model-settings.json` and `requirements.txt`, runs
  `pip install -r requirements.txt` with the builder image's Python 3.10, and copies the rest of the
  folder only afterwards. A requirement on a file of the folder (our wheel) cannot be installed there,
  and `cassava-serving` is on no index. So `requirements.txt` names only third-party packages: the
  wheel's own `Requires-Dist` for the core and the chosen backend;
- the rest of the folder lands in the image's working directory, which `mlserver start` puts on
  `sys.path` (as it does the folder it serves). So the project's wheel is unpacked into the folder (a
  pure-Python wheel is laid out to sit on `sys.path` as it is), next to the model it serves;
- the image runs `mlserver start $MLSERVER_MODELS_DIR`, which the base image sets to `/mnt/models`
  (MLServer's `Dockerfile`), not to where the folder was copied. MLServer's build step means to cover
  that with a `.env` of defaults (`hack/generate_dotenv.py`), but in 1.7.1 it looks for the prefixes on
  a pydantic v1 `Config` class that its settings no longer have, so it writes `NAME=...` where they
  read `MLSERVER_MODEL_NAME`, and nothing applies. The folder brings its own `.env` (copied over
  MLServer's), which makes the cassava model MLServer's default model: an empty `/mnt/models` serves it.

Checked against MLServer 1.7.1: `mlserver/cli/constants.py`, `mlserver/cli/serve.py`, `hack/build-env.sh`,
`hack/generate_dotenv.py`, `Dockerfile`, `mlserver/repository/repository.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from cassava.backends import artifact_file
from cassava.errors import CassavaError
from cassava.model_store import check_model_files
from cassava.server.config import model_settings, server_settings
from cassava.settings import Backend

PROJECT = "cassava-serving"
#: The model's directory inside the folder, named by `parameters.uri` (relative to model-settings.json).
MODEL_SUBDIR = "model"
REQUIREMENTS_FILE = "requirements.txt"
DOTENV_FILE = ".env"
# The prefixes MLServer 1.7.1's settings read (`mlserver.settings`: ENV_PREFIX_SETTINGS,
# ENV_PREFIX_MODEL_SETTINGS); its own .env writer leaves them out.
SERVER_ENV_PREFIX = "MLSERVER_"
MODEL_ENV_PREFIX = "MLSERVER_MODEL_"

REQUIREMENTS_HEADER = """\
# Installed by `mlserver build` (MLServer's builder image, Python 3.10) before the rest of this folder
# is copied in, so it names third-party packages only: {project}'s own requirements for the
# {backend} backend, read from {wheel}.
# The project itself is that wheel, unpacked next to this file, where `mlserver start` finds it on
# sys.path. Written by `cassava build --mlserver-folder`; do not edit.
"""
DOTENV_HEADER = """\
# MLServer's defaults in the image built from this folder: they make the cassava model the default
# model of `mlserver start` when the models directory (/mnt/models) holds none.
# Written by `cassava build --mlserver-folder`; do not edit.
"""


class MLServerFolderError(CassavaError):
    """The build folder cannot be written: a missing model, wheel or build tool, or a non-empty target."""


@dataclass(frozen=True)
class MLServerFolder:
    path: Path
    wheel: str  # the file name of the wheel unpacked into it
    backend: Backend
    requirements: tuple[str, ...]


def runtime_requirements(wheel: Path, backend: Backend) -> tuple[str, ...]:
    """The wheel's `Requires-Dist` for its core and the `backend` extra, as requirement lines."""
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1]
        if len(names) != 1:
            raise MLServerFolderError(f"{wheel} is not a wheel: it has no single *.dist-info/METADATA")
        metadata = Parser().parsestr(archive.read(names[0]).decode())
    lines: list[str] = []
    for raw in metadata.get_all("Requires-Dist") or []:
        requirement = Requirement(raw)
        marker = requirement.marker
        if marker is None or "extra" not in str(marker):
            lines.append(str(requirement))  # pip evaluates an environment marker in the image
        elif marker.evaluate({"extra": backend}):
            # Chosen by the extra: pip would not know `extra`, and the choice is made. (A marker that
            # also tests the environment would be judged here; the project has none.)
            requirement.marker = None
            lines.append(str(requirement))
    if not any(Requirement(line).name == "mlserver" for line in lines):
        raise MLServerFolderError(f"{wheel} does not require mlserver; is it {PROJECT}'s wheel?")
    return tuple(lines)


def find_uv() -> str:
    """uv next to this interpreter (a virtualenv's bin/), else on PATH."""
    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.is_file() else shutil.which("uv")
    if found is None:
        raise MLServerFolderError(
            "building the wheel needs uv, which is neither next to "
            f"{sys.executable} nor on PATH; install it (`pip install uv`) or pass --wheel FILE"
        )
    return found


def build_wheel(project: Path, out_dir: Path) -> Path:
    """`uv build --wheel` of the checkout at `project`; the path of the wheel."""
    if not (project / "pyproject.toml").is_file():
        raise MLServerFolderError(
            f"no pyproject.toml in {project}; run from the project checkout, pass --context, or pass "
            "--wheel FILE"
        )
    command = [find_uv(), "build", "--wheel", "--out-dir", str(out_dir), str(project)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(out_dir.glob("*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        raise MLServerFolderError(
            f"`{' '.join(command)}` failed (exit code {done.returncode}): {done.stderr.strip()[-800:]}"
        )
    return wheels[0]


def folder_model_settings(backend: Backend) -> dict[str, Any]:
    """model-settings.json of the folder: the project's, serving ./model with `backend`."""
    settings = model_settings(extra={"backend": backend})
    settings["parameters"]["uri"] = f"./{MODEL_SUBDIR}"
    return settings


def dotenv_lines(model: dict[str, Any], server: dict[str, Any]) -> list[str]:
    """`model` and `server` settings as MLServer's environment defaults (MLSERVER_MODEL_*,
    MLSERVER_*); complex values as JSON, which is how pydantic-settings reads them."""
    lines = []
    for prefix, settings in ((SERVER_ENV_PREFIX, server), (MODEL_ENV_PREFIX, model)):
        for key, value in settings.items():
            if key == "parameters" and prefix == MODEL_ENV_PREFIX:
                # ModelParameters reads its fields with the same prefix (MLSERVER_MODEL_URI, ...).
                lines += dotenv_lines(value, {})
                continue
            text = value if isinstance(value, str) else json.dumps(value)
            lines.append(f"{prefix}{key.upper()}={json.dumps(text)}")
    return lines


def write_mlserver_folder(
    dest: Path, *, model_dir: Path, wheel: Path, backend: Backend = "tensorflow", force: bool = False
) -> MLServerFolder:
    """Write the build folder at `dest`: configuration, requirements.txt, .env, the unpacked wheel and a
    copy of `model_dir`. Written next to `dest` and moved into place, so a failure leaves nothing."""
    check_model_files(model_dir, need=artifact_file(backend))
    if not wheel.is_file():
        raise MLServerFolderError(
            f"no wheel at {wheel}; build it with `uv build --wheel` or leave out --wheel"
        )
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())) and not force:
        raise MLServerFolderError(f"{dest} exists and is not empty; choose another folder or pass --force")
    requirements = runtime_requirements(wheel, backend)
    model = folder_model_settings(backend)
    server = server_settings()

    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(staging)
        shutil.copytree(model_dir, staging / MODEL_SUBDIR, ignore=shutil.ignore_patterns("__pycache__"))
        (staging / "model-settings.json").write_text(json.dumps(model, indent=2) + "\n")
        (staging / "settings.json").write_text(json.dumps(server, indent=2) + "\n")
        (staging / DOTENV_FILE).write_text(DOTENV_HEADER + "\n".join(dotenv_lines(model, server)) + "\n")
        header = REQUIREMENTS_HEADER.format(project=PROJECT, backend=backend, wheel=wheel.name)
        (staging / REQUIREMENTS_FILE).write_text(header + "\n".join(requirements) + "\n")
        os.chmod(staging, 0o755)  # mkdtemp's 0700 would lock the image's user out of its own folder
        if dest.exists():
            shutil.rmtree(dest) if dest.is_dir() else dest.unlink()
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return MLServerFolder(dest, wheel.name, backend, requirements)
