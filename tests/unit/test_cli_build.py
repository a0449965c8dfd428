"""`cassava build`: the engine check and the exact `docker build` / `podman build` command line, with fake
engines on PATH (no Docker engine here); `--mlserver-folder`, the folder for the seed's `mlserver build`."""

from __future__ import annotations

import filecmp
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from typer.testing import CliRunner

from cassava.cli.main import app
from cassava.errors import ModelNotFoundError
from cassava.ops.mlserver_folder import (
    DOTENV_FILE,
    MODEL_SUBDIR,
    REQUIREMENTS_FILE,
    MLServerFolderError,
    build_wheel,
    folder_model_settings,
    runtime_requirements,
    write_mlserver_folder,
)
from cassava.server.config import model_settings, server_settings

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


# --- `cassava build --mlserver-folder`: the folder for the seed's `mlserver build DIR -t IMAGE` ---

FAKE_METADATA = """\
Metadata-Version: 2.4
Name: cassava-serving
Version: 0.1.0
Requires-Python: <3.13,>=3.10
Requires-Dist: mlserver==1.7.1
Requires-Dist: numpy<3,>=1.26
Requires-Dist: uvloop<0.21; sys_platform != "win32"
Requires-Dist: typer>=0.12; extra == 'cli'
Requires-Dist: onnxruntime>=1.18; extra == 'onnx'
Requires-Dist: tensorflow==2.21.0; extra == 'tensorflow'
"""


def fake_wheel(directory: Path, metadata: str = FAKE_METADATA) -> Path:
    """A wheel with the project's shape (a package and a dist-info) but only a marker module, so that
    these tests need neither a build backend nor the network; the real wheel is built by the
    integration test (tests/integration/test_mlserver_build.py)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "cassava_serving-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("cassava_fake/__init__.py", "MARKER = 1\n")
        archive.writestr("cassava_serving-0.1.0.dist-info/METADATA", metadata)
    return path


def test_requirements_are_the_core_and_the_chosen_backend_only(tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path)
    for backend, other in (("tensorflow", "onnxruntime"), ("onnx", "tensorflow")):
        lines = runtime_requirements(wheel, backend)
        names = {Requirement(line).name for line in lines}
        assert {"mlserver", "numpy", "uvloop", artifact_requirement(backend)} == names
        assert other not in names
        assert "typer" not in names  # another extra
        assert all("extra" not in line for line in lines)  # pip has no extra to evaluate them with
    # An environment marker is the image's pip's to evaluate, not this machine's.
    assert 'uvloop<0.21; sys_platform != "win32"' in runtime_requirements(wheel, "onnx")


def artifact_requirement(backend: str) -> str:
    return {"tensorflow": "tensorflow", "onnx": "onnxruntime"}[backend]


def test_a_wheel_that_is_not_ours_is_refused(tmp_path: Path) -> None:
    wheel = fake_wheel(tmp_path, "Metadata-Version: 2.4\nName: other\nVersion: 1\nRequires-Dist: numpy\n")
    with pytest.raises(MLServerFolderError, match="does not require mlserver"):
        runtime_requirements(wheel, "onnx")


def test_the_folder_layout(tmp_path: Path, demo_model_dir: Path) -> None:
    folder = write_mlserver_folder(
        tmp_path / "out", model_dir=demo_model_dir, wheel=fake_wheel(tmp_path / "dist"), backend="tensorflow"
    )
    path = folder.path
    assert json.loads((path / "settings.json").read_text()) == server_settings()
    written = json.loads((path / "model-settings.json").read_text())
    assert written == folder_model_settings("tensorflow")
    # The project's configuration, plus the copied model's place and the backend.
    assert {k: v for k, v in written.items() if k != "parameters"} == {
        k: v for k, v in model_settings().items() if k != "parameters"
    }
    assert written["parameters"] == {"uri": f"./{MODEL_SUBDIR}", "extra": {"backend": "tensorflow"}}
    assert filecmp.cmp(
        path / MODEL_SUBDIR / "saved_model.pb", demo_model_dir / "saved_model.pb", shallow=False
    )
    # The wheel unpacked where `mlserver start` finds it on sys.path.
    assert (path / "cassava_fake" / "__init__.py").read_text() == "MARKER = 1\n"
    assert (path / "cassava_serving-0.1.0.dist-info" / "METADATA").is_file()
    lines = [ln for ln in (path / REQUIREMENTS_FILE).read_text().splitlines() if not ln.startswith("#")]
    assert tuple(lines) == folder.requirements
    assert not list(tmp_path.glob(".out-*"))  # no staging folder left behind


def test_requirements_install_with_only_the_files_mlserver_copies_first(
    tmp_path: Path, demo_model_dir: Path
) -> None:
    """MLServer 1.7.1's generated Dockerfile (`mlserver/cli/constants.py`, `DockerfileTemplate`, tag
    1.7.1) copies settings.json, model-settings.json and requirements.txt, runs `hack/build-env.sh .`
    (`pip install -r requirements.txt`, `hack/build-env.sh` at 1.7.1) and copies the rest of the folder
    afterwards: every requirement must be a package from an index, never a file of the folder."""
    folder = write_mlserver_folder(
        tmp_path / "out", model_dir=demo_model_dir, wheel=fake_wheel(tmp_path / "dist"), backend="tensorflow"
    )
    copied_first = files_copied_before_install()
    assert "requirements.txt" in copied_first
    assert {p.name for p in folder.path.iterdir() if p.is_file() and p.name != DOTENV_FILE} <= set(
        copied_first
    ) | {DOTENV_FILE}
    for line in folder.requirements:
        requirement = Requirement(line)
        assert requirement.url is None, line
        assert requirement.name != "cassava-serving", line


def files_copied_before_install() -> list[str]:
    """The file names that MLServer's generated Dockerfile copies in before `hack/build-env.sh` runs."""
    from mlserver.cli.constants import DockerfileTemplate

    before = DockerfileTemplate[: DockerfileTemplate.index("./hack/build-env.sh")]
    last_copy = before[before.rindex("COPY") :]
    # `./settings.jso[n]`: a one-character class, so that Docker accepts a missing file.
    return [re.sub(r"\[(.)\]", r"\1", name) for name in re.findall(r"\./(\S+)", last_copy)]


def test_the_dotenv_is_what_mlserver_reads_as_its_default_model(
    tmp_path: Path, demo_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLServer 1.7.1 reads `.env` from its working directory (`mlserver/settings.py`: `env_file=".env"`,
    prefixes `MLSERVER_` and `MLSERVER_MODEL_`) and, when its models folder holds no model-settings.json,
    serves the model those settings describe (`mlserver/repository/repository.py`,
    `SchemalessModelRepository.list`, tag 1.7.1). The image runs `mlserver start $MLSERVER_MODELS_DIR`
    (`/mnt/models`, MLServer's `Dockerfile` at 1.7.1) from the folder's copy, so this `.env` is what
    serves the model there."""
    from mlserver.settings import ModelParameters, ModelSettings, Settings

    for name in list(os.environ):
        if name.startswith("MLSERVER_"):
            monkeypatch.delenv(name)
    folder = write_mlserver_folder(
        tmp_path / "out", model_dir=demo_model_dir, wheel=fake_wheel(tmp_path / "dist"), backend="tensorflow"
    )
    monkeypatch.chdir(folder.path)
    from_file = ModelSettings.model_validate(json.loads(Path("model-settings.json").read_text()))
    from_env = ModelSettings()
    assert from_env.name == from_file.name
    assert from_env.implementation_ == from_file.implementation_
    assert from_env.inputs == from_file.inputs
    assert from_env.outputs == from_file.outputs
    parameters = ModelParameters()
    assert from_file.parameters is not None
    assert parameters.uri == from_file.parameters.uri
    assert parameters.extra == from_file.parameters.extra == {"backend": "tensorflow"}
    server = Settings()
    for key, value in server_settings().items():
        assert getattr(server, key) == value, key


def test_folder_refusals_leave_nothing_behind(tmp_path: Path, demo_model_dir: Path) -> None:
    wheel = fake_wheel(tmp_path / "dist")
    # The ONNX backend needs the export next to the SavedModel.
    with pytest.raises(ModelNotFoundError, match=re.escape("(model.onnx is missing)")):
        write_mlserver_folder(tmp_path / "a", model_dir=demo_model_dir, wheel=wheel, backend="onnx")
    assert not (tmp_path / "a").exists()
    with pytest.raises(MLServerFolderError, match="no wheel at"):
        write_mlserver_folder(tmp_path / "b", model_dir=demo_model_dir, wheel=tmp_path / "none.whl")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(MLServerFolderError, match="--force"):
        write_mlserver_folder(busy, model_dir=demo_model_dir, wheel=wheel)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    write_mlserver_folder(busy, model_dir=demo_model_dir, wheel=wheel, force=True)
    assert not (busy / "keep.txt").exists()
    assert (busy / "model-settings.json").is_file()


def test_cli_writes_the_folder(tmp_path: Path, demo_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setenv("CASSAVA_MODEL_DIR", str(demo_model_dir))  # the default model, as for every command
    dest = tmp_path / "mlserver"
    result = CliRunner().invoke(
        app, ["build", "--mlserver-folder", str(dest), "--wheel", str(fake_wheel(tmp_path / "dist"))]
    )
    assert result.exit_code == 0, result.output
    assert f"mlserver build {dest} -t IMAGE" in " ".join(result.stdout.split())
    assert "UNTRAINED" in result.stderr
    assert filecmp.cmp(dest / "model" / "saved_model.pb", demo_model_dir / "saved_model.pb", shallow=False)
    result = CliRunner().invoke(app, ["build", "--wheel", str(tmp_path / "x.whl")])
    assert result.exit_code == 1
    assert "only apply with --mlserver-folder" in " ".join(result.stderr.split())


def test_the_wheel_is_built_from_the_checkout(tmp_path: Path) -> None:
    with pytest.raises(MLServerFolderError, match=re.escape("no pyproject.toml in")):
        build_wheel(tmp_path, tmp_path / "dist")


def test_python_310_is_supported() -> None:
    """MLServer 1.7.1's builder image, on which `mlserver build` installs requirements.txt, runs Python
    3.10.12 (`ARG PYTHON_VERSION=3.10.12` in MLServer's `Dockerfile`, tag 1.7.1)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert SpecifierSet(project["project"]["requires-python"]).contains("3.10.12")
    assert project["tool"]["ruff"]["target-version"] == "py310"
    assert project["tool"]["mypy"]["python_version"] == "3.10"


def test_mlserver_build_of_model_folder_stops_at_pip_with_the_advice() -> None:
    """`mlserver build model/` runs `pip install -r requirements.txt` first (MLServer 1.7.1,
    `mlserver/cli/constants.py` and `hack/build-env.sh`): model/ holds no cassava package, so its
    requirements.txt must fail there, naming the build folder, rather than yield an image that cannot
    import its runtime. pip rejects the line while parsing, before it looks at any index."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "-r", "requirements.txt"],
        cwd=ROOT / "model",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "make mlserver-folder" in done.stderr
    assert "Invalid requirement" in done.stderr
