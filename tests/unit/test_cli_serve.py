"""`cassava serve` builds the same settings as every entry point: flags, then CASSAVA_*, then defaults.

The server itself is not started here (tests/integration/test_cli_serve_infer.py does that); the folder
and environment it would be started with are what these tests read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cassava.cli.main import app
from cassava.server.process import ServerProcess


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Each would-be server: its model-settings.json `parameters.extra` and its CASSAVA_* variables."""
    runs: list[dict[str, Any]] = []

    def run_attached(self: ServerProcess) -> int:
        extra = json.loads((self.folder / "model-settings.json").read_text())["parameters"]["extra"]
        env = {k: v for k, v in self.child_env().items() if k.startswith("CASSAVA_")}
        runs.append({"extra": extra, "env": env, "host": self.host, "port": self.http_port})
        return 0

    monkeypatch.setattr(ServerProcess, "run_attached", run_attached)
    return runs


def test_cassava_model_dir_is_served_when_the_cache_is_empty(
    started: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, demo_model_dir: Path
) -> None:
    monkeypatch.setenv("CASSAVA_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("CASSAVA_MODEL_DIR", str(demo_model_dir))
    result = CliRunner().invoke(app, ["serve", "--http-port", "18080"])
    assert result.exit_code == 0, result.output
    (run,) = started
    assert run["extra"]["model_dir"] == str(demo_model_dir.resolve())
    assert run["env"]["CASSAVA_MODEL_DIR"] == str(demo_model_dir.resolve())
    assert "http://localhost:18080/" in result.output


def test_a_flag_beats_the_variable_in_the_server_too(
    started: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, demo_model_dir: Path
) -> None:
    """The child inherits this environment, where CASSAVA_MAX_IMAGES would win over the folder's
    settings; `serve` passes the resolved settings as variables so the flag still holds there."""
    monkeypatch.setenv("CASSAVA_MAX_IMAGES", "8")
    monkeypatch.setenv("CASSAVA_INFERENCE_THREADS", "1")
    result = CliRunner().invoke(app, ["serve", "--model", str(demo_model_dir), "--max-images", "3"])
    assert result.exit_code == 0, result.output
    (run,) = started
    assert run["env"]["CASSAVA_MAX_IMAGES"] == "3"
    assert run["extra"]["max_images"] == 3
    assert run["env"]["CASSAVA_INFERENCE_THREADS"] == "1"


def test_a_missing_model_fails_in_one_line_naming_the_variable(
    started: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CASSAVA_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("CASSAVA_MODEL_DIR", raising=False)
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 1
    assert "CASSAVA_MODEL_DIR" in result.output
    assert not started
