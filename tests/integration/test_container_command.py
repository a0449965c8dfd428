"""The container's own command, run here: no Docker engine, so the image's final stage is replayed.

The Dockerfile's final-stage ENV, ENTRYPOINT + CMD and HEALTHCHECK are read from the Dockerfile itself
(`cassava.ops.dockerfile`), its /opt/cassava and /tmp paths are mapped into a temporary directory laid out
as the image lays them out (the model folder, and the model directory with the stand-in), /opt/venv is
mapped to a virtualenv (this one, or CASSAVA_TEST_IMAGE_VENV: one built from a runtime lock file as the
image builds it), and that exact command runs with only that environment. Where this machine allows a
private mount namespace, a second test runs it with the root filesystem read-only and only the mapped
/tmp writable, which is what the manifests give the pod.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cassava.client import CassavaClient
from cassava.ops.dockerfile import Stage, final_stage
from cassava.server.process import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
IMAGE_VENV = Path(os.environ.get("CASSAVA_TEST_IMAGE_VENV", sys.prefix))


class ImageLayout:
    """The image's paths under `root`: /opt/cassava, /tmp and /opt/venv mapped to real directories."""

    def __init__(self, root: Path, stage: Stage, model_dir: Path) -> None:
        self.stage = stage
        self.mapping = {
            "/opt/venv": IMAGE_VENV,
            "/opt/cassava": root / "opt-cassava",
            "/tmp": root / "tmp",
        }
        # What the final stage's COPY instructions put there.
        folder = self.map("/opt/cassava/model")
        folder.mkdir(parents=True)
        for name in ("model-settings.json", "settings.json"):
            shutil.copy2(ROOT / "model" / name, folder / name)
        shutil.copytree(model_dir, self.map(stage.env["CASSAVA_MODEL_DIR"]))
        self.map("/tmp").mkdir()

    def map(self, path: str) -> Path:
        for prefix, target in self.mapping.items():
            if path == prefix or path.startswith(prefix + "/"):
                return target / path[len(prefix) :].lstrip("/")
        raise AssertionError(f"{path} is outside the paths this test maps")

    def map_value(self, value: str) -> str:
        """An ENV value or argument: absolute paths (and PATH entries) under a mapped prefix."""
        parts = value.split(":")
        return ":".join(str(self.map(p)) if p.startswith(("/opt/", "/tmp")) else p for p in parts)

    def env(self) -> dict[str, str]:
        return {key: self.map_value(value) for key, value in self.stage.env.items()}

    def command(self) -> list[str]:
        command = [self.map_value(word) for word in self.stage.command]
        # The ENTRYPOINT names a program on the image's PATH, as Docker resolves it.
        found = shutil.which(command[0], path=self.env()["PATH"])
        assert found is not None, f"{command[0]} is not on the image's PATH ({self.env()['PATH']})"
        return [found, *command[1:]]

    def healthcheck(self) -> list[str]:
        command = [self.map_value(word) for word in self.stage.healthcheck]
        found = shutil.which(command[0], path=self.env()["PATH"])
        assert found is not None
        return [found, *command[1:]]


class ContainerProcess(ServerProcess):
    """ServerProcess (free ports, readiness wait, stop by PID) running the image's command and
    environment instead of its own; nothing is inherited from this process's environment."""

    def __init__(self, layout: ImageLayout, workdir: Path, wrapper: list[str] | None = None) -> None:
        super().__init__(folder=layout.map("/opt/cassava/model"), log_path=workdir / "container.log")
        self.layout = layout
        self.wrapper = wrapper or []

    def command(self) -> list[str]:
        return [*self.wrapper, *self.layout.command()]

    def child_env(self) -> dict[str, str]:
        env = self.layout.env()
        env.update(
            MLSERVER_HTTP_PORT=str(self.http_port),
            MLSERVER_GRPC_PORT=str(self.grpc_port),
            MLSERVER_METRICS_PORT=str(self.metrics_port),
            MLSERVER_HOST="127.0.0.1",
        )
        return env

    def start(self, timeout: float = 240.0) -> ContainerProcess:
        # The image's WORKDIR: MLServer's defaults are relative to it, so run from there.
        cwd = os.getcwd()
        os.chdir(self.layout.map(self.layout.stage.workdir or "/opt/cassava"))
        try:
            super().start(timeout)
        finally:
            os.chdir(cwd)
        return self


def files_under(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


@pytest.fixture
def layout(tmp_path: Path, demo_model_dir: Path) -> ImageLayout:
    return ImageLayout(tmp_path / "image", final_stage(DOCKERFILE), demo_model_dir)


def check_serving(server: ContainerProcess, layout: ImageLayout, jpegs: list[bytes]) -> None:
    with CassavaClient(server.http_url) as client:
        result = client.classify_images(jpegs[:3])
        metadata = client.metadata()
    assert result.indices.shape == (3,)
    assert result.probabilities.shape == (3, 6)
    # The stand-in is reported as such through the container, as everywhere else.
    assert str(metadata["parameters"]["untrained"]).lower() == "true"
    # The image's HEALTHCHECK, run as Docker would run it (same env, same PATH).
    env = {**server.child_env()}
    done = subprocess.run(layout.healthcheck(), env=env, capture_output=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr.decode()
    # The default profile runs inference in the server process, whose registry the metrics port serves.
    # (With parallel workers MLServer's multiprocess files go where the image's ENV says, under the
    # writable /tmp: tests/integration/test_metrics.py checks that case.)
    assert "cassava_predictions_total" in httpx.get(server.metrics_url, timeout=10).text


def test_the_images_command_serves_predictions(
    layout: ImageLayout, tmp_path: Path, sample_jpegs: list[bytes]
) -> None:
    before = files_under(layout.mapping["/opt/cassava"])
    with ContainerProcess(layout, tmp_path) as server:
        check_serving(server, layout, sample_jpegs)
    # Nothing was written into the image's own files (/opt/cassava): only /tmp is writable in a pod.
    assert files_under(layout.mapping["/opt/cassava"]) == before


def _can_make_read_only_namespace() -> str | None:
    if sys.platform != "linux" or shutil.which("unshare") is None or shutil.which("mount") is None:
        return "needs Linux with unshare(1) and mount(8)"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", "mount -o remount,bind,ro /"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        return "this user may not create a private mount namespace (needs CAP_SYS_ADMIN, e.g. root)"
    return None


@pytest.mark.skipif(
    (reason := _can_make_read_only_namespace()) is not None, reason=f"read-only root filesystem: {reason}"
)
def test_the_images_command_runs_on_a_read_only_root_filesystem(
    layout: ImageLayout, tmp_path: Path, sample_jpegs: list[bytes]
) -> None:
    # In a private mount namespace (nothing outside it changes): `/` read-only, a fresh tmpfs on the
    # image's /tmp, as the pod's readOnlyRootFilesystem + emptyDir. Any other write fails with EROFS
    # and the server does not start or does not answer.
    writable = layout.map("/tmp")
    script = 'mount -o remount,bind,ro / && mount -t tmpfs -o size=256m,mode=1777 tmpfs "$0" && exec "$@"'
    wrapper = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(writable)]
    with ContainerProcess(layout, tmp_path, wrapper=wrapper) as server:
        with CassavaClient(server.http_url) as client:
            result = client.classify_images(sample_jpegs[:2])
        assert result.indices.shape == (2,)
        assert "cassava_predictions_total" in httpx.get(server.metrics_url, timeout=10).text
    log = server.log_tail(400)
    assert "Read-only file system" not in log, log
