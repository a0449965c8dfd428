"""Start `python -m cassava.server.launcher FOLDER` (`mlserver start FOLDER` with cassava's reliability fixes)
as a child process on free ports, wait until ready, stop it by PID.

Used by the tests, the benchmark matrix and the soak runs, so all of them exercise the same command a
container runs. Every wait is bounded in time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

import httpx

from cassava.contract import MODEL_NAME
from cassava.server.config import write_model_folder
from cassava.settings import CassavaSettings


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerStartError(RuntimeError):
    pass


@dataclass
class ServerProcess:
    """A running MLServer. Use as a context manager, or call `start()` / `stop()`."""

    folder: Path
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    host: str = "127.0.0.1"
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @classmethod
    def for_model(
        cls,
        workdir: Path,
        *,
        model_dir: Path | None = None,
        settings: CassavaSettings | None = None,
        extra: dict[str, Any] | None = None,
        server: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        options: dict[str, Any] | None = None,
        host: str = "127.0.0.1",
        ports: tuple[int, int, int] | None = None,
        log_path: Path | Literal["default"] | None = "default",
    ) -> ServerProcess:
        """Write a model folder under `workdir` that serves `model_dir`, ready to start.

        `settings`: cassava's options as a whole (`cassava serve`); `extra`: individual runtime options
        on top. Both are written to model-settings.json and passed as CASSAVA_* variables too: the
        server reads variables first, and the child inherits this process's environment, which must
        not contradict what the caller asked for (`env` still wins over both); `server`: settings.json;
        `options`: MLServer's own model settings (adaptive batching's `max_batch_size`, `max_batch_time`);
        `ports`: (REST, gRPC, metrics), default free ones; `log_path`: None inherits this process's
        output, the default writes `workdir/mlserver.log`."""
        values: dict[str, Any] = {}
        if settings is not None:
            values.update(settings.model_dump(mode="json", exclude_none=True))
        if model_dir is not None:
            values["model_dir"] = str(model_dir)
        values.update(extra or {})
        # The profile is written into the folder (settings.json, model-settings.json); as CASSAVA_PROFILE
        # it would override `server` and `options` given here (`cassava.server.app.apply_profile`).
        child_env = {
            **CassavaSettings.env_for({k: v for k, v in values.items() if k != "profile"}),
            **(env or {}),
        }
        folder = write_model_folder(workdir / "model", extra=values, server=server, options=options)
        process = cls(
            folder=folder,
            env=child_env,
            log_path=workdir / "mlserver.log" if log_path == "default" else log_path,
            host=host,
        )
        if ports is not None:
            process.http_port, process.grpc_port, process.metrics_port = ports
        return process

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int:
        assert self.process is not None, "server not started"
        return self.process.pid

    def command(self) -> list[str]:
        # `mlserver start FOLDER` with cassava's reliability fixes (the launcher), as in the container.
        return [sys.executable, "-m", "cassava.server.launcher", str(self.folder)]

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                # Ports through env: settings.json leaves them out so that these take effect.
                "MLSERVER_HTTP_PORT": str(self.http_port),
                "MLSERVER_GRPC_PORT": str(self.grpc_port),
                "MLSERVER_METRICS_PORT": str(self.metrics_port),
                "MLSERVER_HOST": self.host,
                # MLServer's default is ./.metrics, shared by every server started from the same
                # directory: each then exports the others' counts and deletes their files on exit.
                "MLSERVER_METRICS_DIR": str(self.folder.parent / f"metrics-{self.http_port}"),
            }
        )
        # An inherited CASSAVA_PROFILE would override the folder's workers and batching (see `for_model`).
        env.pop("CASSAVA_PROFILE", None)
        env.update(self.env)
        return env

    def run_attached(self) -> int:
        """Run in the foreground with this process's output until the server exits; return its exit
        code. The signals that stop a server are passed on (a process manager sends them to this PID
        only; Ctrl-C reaches both, and the launcher ignores a second signal)."""
        child = subprocess.Popen(self.command(), env=self.child_env())
        self.process = child
        forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
        previous = {sig: signal.signal(sig, lambda sig, _frame: child.send_signal(sig)) for sig in forwarded}
        try:
            return child.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def start(self, timeout: float = 120.0) -> ServerProcess:
        if self.log_path is not None:
            self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(),
            env=self.child_env(),
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches the workers too
        )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self, timeout: float) -> float:
        """Wait for /v2/models/cassava/ready; return the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        url = f"{self.http_url}/v2/models/{MODEL_NAME}/ready"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"mlserver exited with code {self.process.returncode} before it was ready; "
                    f"see {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise ServerStartError(f"mlserver was not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def is_ready(self) -> bool:
        try:
            return httpx.get(f"{self.http_url}/v2/health/ready", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float | None = None, sig: int = signal.SIGTERM) -> int | None:
        """Signal the process group, wait up to `timeout`, then kill it. Returns the exit code.

        The default waits for the whole shutdown the server was configured for: lame duck, then the
        drain of in-flight requests, then 5 s for the workers."""
        if timeout is None:
            defaults = CassavaSettings()
            timeout = defaults.lame_duck_seconds + defaults.shutdown_grace_seconds + 5
        if self.process is None:
            return None
        code = self.process.poll()
        if code is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                code = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                code = self.process.wait(10)
        # Leftover workers of a group whose leader has exited.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def __enter__(self) -> ServerProcess:
        return self.start() if self.process is None else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
