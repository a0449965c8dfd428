"""The container image: which engine builds it, and the `docker build` / `podman build` command line.

The Dockerfile at the project root is the build; this module picks an engine that is actually running,
turns a model source into build args (and a named build context for local files), labels the image and
tags it. `cassava build` prints and runs what it returns.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from cassava.errors import CassavaError
from cassava.settings import Backend

EngineName = Literal["docker", "podman"]
ENGINES: tuple[EngineName, ...] = ("docker", "podman")
DEMO = "demo"
_INFO_TIMEOUT = 30.0


class ContainerEngineError(CassavaError):
    """No usable docker/podman, or the build itself failed."""


@dataclass(frozen=True)
class Engine:
    name: str
    path: str


def find_engine(preferred: EngineName | None = None) -> Engine:
    """The first of docker, podman (or only `preferred`) whose engine answers `info`."""
    problems = []
    for name in [preferred] if preferred else ENGINES:
        path = shutil.which(name)
        if path is None:
            problems.append(f"{name} is not installed")
            continue
        # The client alone is not enough: `docker` without a daemon only fails once the build starts.
        try:
            done = subprocess.run(
                [path, "info"], capture_output=True, text=True, timeout=_INFO_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            problems.append(f"`{name} info` did not answer within {_INFO_TIMEOUT:.0f} s")
            continue
        if done.returncode == 0:
            return Engine(name, path)
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"`{name} info` exited with {done.returncode}"
        problems.append(f"{name} is installed but its engine is not reachable ({reason})")
    raise ContainerEngineError("no container engine to build with: " + "; ".join(problems))


def project_version() -> str:
    try:
        return version("cassava-serving")
    except PackageNotFoundError:
        return "0.0.0"


def git_revision(context: Path) -> str:
    git = shutil.which("git")
    if git is None:
        return "unknown"
    done = subprocess.run(
        [git, "-C", str(context), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def default_tag(backend: Backend, model_source: str | None) -> str:
    tag = f"cassava:{project_version()}"
    if backend == "onnx":
        tag += "-onnx"
    if model_source == DEMO:
        tag += "-untrained"
    return tag


@dataclass(frozen=True)
class ModelSourceArgs:
    """How `--model-source` reaches the Dockerfile's weights stage."""

    build_arg: str | None  # MODEL_SOURCE, None for the default (TF Hub)
    context_dir: Path | None  # the `model-source` named build context, for local files
    untrained: bool


@contextmanager
def model_source_args(source: str | None) -> Iterator[ModelSourceArgs]:
    if not source:
        yield ModelSourceArgs(None, None, untrained=False)
    elif source == DEMO:
        yield ModelSourceArgs(DEMO, None, untrained=True)
    elif urlparse(source).scheme in ("http", "https"):
        yield ModelSourceArgs(source, None, untrained=False)
    else:
        path = Path(source).expanduser().resolve()
        if path.is_dir():
            yield ModelSourceArgs(".", path, untrained=False)
        elif path.is_file():
            # A context holding just this file: pointing at its folder would upload all of ~/Downloads.
            with tempfile.TemporaryDirectory(prefix="cassava-model-source-") as tmp:
                try:
                    os.link(path, Path(tmp) / path.name)
                except OSError:  # another filesystem, or links not allowed: copy it
                    shutil.copy2(path, Path(tmp) / path.name)
                yield ModelSourceArgs(path.name, Path(tmp), untrained=False)
        else:
            raise ContainerEngineError(
                f"--model-source {source!r} is neither an http(s) URL, `demo`, nor an existing file or "
                "directory"
            )


def dockerfile_base_image(context: Path) -> str:
    """The image of the Dockerfile's first stage, which every other stage starts from."""
    from cassava.ops.dockerfile import parse

    stages = parse((context / "Dockerfile").read_text())
    if not stages:
        raise ContainerEngineError(f"{context / 'Dockerfile'} has no FROM line")
    return stages[0].base


def build_command(
    engine: str,
    context: Path,
    *,
    tag: str,
    backend: Backend,
    source: ModelSourceArgs,
    base_image: str | None = None,
    platform: str | None = None,
    no_cache: bool = False,
) -> list[str]:
    command = [engine, "build", "--file", str(context / "Dockerfile"), "--tag", tag]
    build_args = {
        "BACKEND": backend,
        "VERSION": project_version(),
        "REVISION": git_revision(context),
        "CREATED": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if source.build_arg is not None:
        build_args["MODEL_SOURCE"] = source.build_arg
    for key, value in build_args.items():
        command += ["--build-arg", f"{key}={value}"]
    if base_image:
        # A named context replaces the Dockerfile's FROM image wherever it is used: the tag stays
        # readable in the Dockerfile and the build gets the digest.
        command += ["--build-context", f"{dockerfile_base_image(context)}=docker-image://{base_image}"]
    if source.context_dir is not None:
        command += ["--build-context", f"model-source={source.context_dir}"]
    # The Dockerfile cannot compute a label from MODEL_SOURCE, so the untrained flag is set here.
    command += ["--label", f"cassava.model.untrained={'true' if source.untrained else 'false'}"]
    if platform:
        command += ["--platform", platform]
    if no_cache:
        command.append("--no-cache")
    command.append(str(context))
    return command


def run(command: list[str], what: str) -> None:
    env = dict(os.environ, DOCKER_BUILDKIT="1")  # named build contexts need BuildKit
    code = subprocess.run(command, env=env, check=False).returncode
    if code != 0:
        raise ContainerEngineError(f"{what} failed with exit code {code}: {shlex.join(command)}")
