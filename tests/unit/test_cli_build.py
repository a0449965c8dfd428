"""`cassava build`: the engine check and the exact `docker build` / `podman build` command line, with fake
engines on PATH (no Docker engine here)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cassava.cli.main import app

ROOT = Path(__file__).resolve().parents[2]

FAKE_ENGINE = """#!/bin/sh
# A fake container engine: records its arguments, one per line, then answers like the real one.
printf '%s\\n' "$@" > "{log}/$1.args"
case "$1" in
  info) {info} ;;
  build|push) exit {build_code} ;;
esac
"""
NO_DAEMON = (
    'echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.'
    ' Is the docker daemon running?" >&2; exit 1'
)


def fake_engine(bin_dir: Path, name: str, *, info: str = "exit 0", build_code: int = 0) -> Path:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(FAKE_ENGINE.format(log=bin_dir, info=info, build_code=build_code))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH with only the fake engines and the few tools they and the revision label use."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "git", "ls", "sed"):
        if found := shutil.which(tool):
            (bin_dir / tool).symlink_to(found)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("COLUMNS", "300")
    return bin_dir


def build(*args: str) -> object:
    return CliRunner().invoke(app, ["build", "--context", str(ROOT), *args])


def recorded(bin_dir: Path, command: str) -> list[str]:
    return (bin_dir / f"{command}.args").read_text().splitlines()


def pairs(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_no_engine_installed(bin_dir: Path) -> None:
    result = build()
    assert result.exit_code == 1
    assert "no container engine to build with: docker is not installed; podman is not installed" in " ".join(
        result.stderr.split()
    )


def test_docker_client_without_a_daemon_is_a_clear_one_line_error(bin_dir: Path) -> None:
    fake_engine(bin_dir, "docker", info=NO_DAEMON)
    result = build()
    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert (
        "docker is installed but its engine is not reachable (Cannot connect to the Docker daemon" in message
    )
    assert "Traceback" not in result.output
    assert not (bin_dir / "build.args").exists()  # never started a build


def test_this_machines_docker_without_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real client, where it is installed but its daemon is not running (as on this machine)."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on this machine")
    if subprocess.run([docker, "info"], capture_output=True, timeout=60, check=False).returncode == 0:
        pytest.skip("docker's engine is running here; nothing to refuse")
    monkeypatch.setenv("COLUMNS", "300")
    result = CliRunner().invoke(app, ["build", "--context", str(ROOT), "--engine", "docker"])
    assert result.exit_code == 1
    assert "docker is installed but its engine is not reachable" in " ".join(result.stderr.split())


def test_falls_back_to_podman_when_docker_has_no_engine(bin_dir: Path) -> None:
    fake_engine(bin_dir, "docker", info=NO_DAEMON)
    fake_engine(bin_dir, "podman")
    result = build("--tag", "reg.example/cassava:1.2.3")
    assert result.exit_code == 0, result.output
    args = recorded(bin_dir, "build")
    assert args[0] == "build"
    assert pairs(args, "--tag") == ["reg.example/cassava:1.2.3"]
    assert not (bin_dir / "push.args").exists()


def test_the_default_build_command(bin_dir: Path) -> None:
    fake_engine(bin_dir, "docker")
    result = build()
    assert result.exit_code == 0, result.output
    args = recorded(bin_dir, "build")
    assert args[:3] == ["build", "--file", str(ROOT / "Dockerfile")]
    assert args[-1] == str(ROOT)
    build_args = dict(a.split("=", 1) for a in pairs(args, "--build-arg"))
    assert build_args["BACKEND"] == "tensorflow"
    assert "MODEL_SOURCE" not in build_args  # the Dockerfile's default: CropNet from TF Hub
    assert set(build_args) >= {"VERSION", "REVISION", "CREATED"}
    assert pairs(args, "--label") == ["cassava.model.untrained=false"]
    (tag,) = pairs(args, "--tag")
    assert tag.startswith("cassava:")
    assert not tag.endswith(("-onnx", "-untrained"))


def test_onnx_url_source_platform_and_push(bin_dir: Path) -> None:
    fake_engine(bin_dir, "docker")
    url = "https://models.example.com/cropnet.tar.gz"
    result = build(
        "--backend", "onnx", "--model-source", url, "--platform", "linux/arm64", "--push", "-t", "r/c:9"
    )
    assert result.exit_code == 0, result.output
    args = recorded(bin_dir, "build")
    build_args = dict(a.split("=", 1) for a in pairs(args, "--build-arg"))
    assert build_args["BACKEND"] == "onnx"
    assert build_args["MODEL_SOURCE"] == url
    assert pairs(args, "--platform") == ["linux/arm64"]
    assert recorded(bin_dir, "push") == ["push", "r/c:9"]


def test_a_local_tarball_travels_alone_in_a_named_context(bin_dir: Path, tmp_path: Path) -> None:
    fake_engine(bin_dir, "docker")
    downloads = tmp_path / "Downloads"
    downloads.mkdir()
    (downloads / "cropnet.tar.gz").write_bytes(b"not really a tarball")
    (downloads / "holiday.mp4").write_bytes(b"x" * 1000)
    # Keep the named context alive after the build returns, to look inside it.
    seen = tmp_path / "seen"
    script = bin_dir / "docker"
    script.write_text(
        script.read_text().replace(
            "case",
            f'ctx=$(printf "%s\\n" "$@" | sed -n "s/^model-source=//p")\n'
            f'[ -n "$ctx" ] && ls "$ctx" > {seen}\ncase',
            1,
        )
    )
    result = build("--model-source", str(downloads / "cropnet.tar.gz"))
    assert result.exit_code == 0, result.output
    args = recorded(bin_dir, "build")
    build_args = dict(a.split("=", 1) for a in pairs(args, "--build-arg"))
    assert build_args["MODEL_SOURCE"] == "cropnet.tar.gz"
    (context,) = pairs(args, "--build-context")
    assert context.startswith("model-source=")
    assert seen.read_text().split() == ["cropnet.tar.gz"]  # not the whole Downloads folder


def test_demo_is_tagged_and_labelled_untrained(bin_dir: Path) -> None:
    fake_engine(bin_dir, "docker")
    result = build("--model-source", "demo")
    assert result.exit_code == 0, result.output
    args = recorded(bin_dir, "build")
    assert "MODEL_SOURCE=demo" in pairs(args, "--build-arg")
    assert pairs(args, "--label") == ["cassava.model.untrained=true"]
    assert pairs(args, "--tag")[0].endswith("-untrained")
    assert "UNTRAINED" in result.stderr


def test_base_image_digest_replaces_the_dockerfiles_from(bin_dir: Path) -> None:
    fake_engine(bin_dir, "docker")
    pinned = "python:3.11-slim-bookworm@sha256:" + "ab" * 32
    result = build("--base-image", pinned)
    assert result.exit_code == 0, result.output
    contexts = pairs(recorded(bin_dir, "build"), "--build-context")
    assert contexts == [f"python:3.11-slim-bookworm=docker-image://{pinned}"]


def test_a_failed_build_exits_1_naming_the_command(bin_dir: Path) -> None:
    fake_engine(bin_dir, "docker", build_code=17)
    result = build()
    assert result.exit_code == 1
    assert "the image build failed with exit code 17" in " ".join(result.stderr.split())


def test_dry_run_prints_without_an_engine(bin_dir: Path) -> None:
    result = build("--dry-run", "--engine", "podman")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("podman build --file ")


def test_bad_model_source_and_missing_dockerfile(bin_dir: Path, tmp_path: Path) -> None:
    fake_engine(bin_dir, "docker")
    result = build("--model-source", str(tmp_path / "nowhere.tar.gz"))
    assert result.exit_code == 1
    assert "is neither an http(s) URL" in " ".join(result.stderr.split())
    result = CliRunner().invoke(app, ["build", "--context", str(tmp_path)])
    assert result.exit_code == 1
    assert "no Dockerfile in" in " ".join(result.stderr.split())
    assert os.environ["PATH"] == str(bin_dir)
