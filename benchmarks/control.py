"""The control server of the paired rounds: stock `mlserver start` with `benchmarks.control_runtime`.

Same server settings as cassava's default (`cassava.server.config.server_settings`: no parallel
workers, debug off, the gRPC message limit), same model and backend, started the same way on free
ports; only the command (`mlserver start` instead of cassava's launcher) and the runtime differ.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from cassava.bench import StartedServer
from cassava.contract import MODEL_NAME
from cassava.server.config import server_settings
from cassava.server.process import ServerProcess
from cassava.settings import Backend

RUNTIME = "benchmarks.control_runtime.PipelineRuntime"
#: How the results and the page name it.
CONTROL_LABEL = f"mlserver start, runtime {RUNTIME}, cassava's default server settings"
#: Where `benchmarks` is importable from: the control server imports its runtime from there.
REPOSITORY = Path(__file__).resolve().parent.parent


class ControlProcess(ServerProcess):
    def command(self) -> list[str]:
        return [sys.executable, "-m", "mlserver.cli.main", "start", str(self.folder)]

    def child_env(self) -> dict[str, str]:
        env = super().child_env()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPOSITORY), env.get("PYTHONPATH", "")) if p)
        return env


def write_control_folder(folder: Path, model_dir: Path, backend: Backend) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(server_settings(), indent=2) + "\n")
    model = {
        "name": MODEL_NAME,
        "implementation": RUNTIME,
        "parameters": {"uri": str(model_dir.resolve()), "extra": {"backend": backend}},
    }
    (folder / "model-settings.json").write_text(json.dumps(model, indent=2) + "\n")
    return folder


def start_control(
    workdir: Path, model_dir: Path, backend: Backend, *, timeout_s: float = 180.0
) -> StartedServer:
    """Start the control server under `workdir`; wait until its model is ready."""
    process = ControlProcess(
        folder=write_control_folder(workdir / "model", model_dir, backend),
        log_path=workdir / "mlserver.log",
    )
    started = time.monotonic()
    process.start(timeout=timeout_s)
    return StartedServer(process, time.monotonic() - started)
