"""`cassava serve`: run MLServer on the cassava model through `cassava.launcher`, as a container does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import typer

from cassava.cli._common import console, reports_errors, warn_untrained
from cassava.settings import Backend


@reports_errors
def serve(
    model: Path = typer.Option(None, "--model", help="Model directory. Default: the cache's model."),
    backend: Backend = typer.Option("tensorflow", help="Inference backend."),
    host: str = typer.Option("0.0.0.0", help="Address to listen on."),
    http_port: int = typer.Option(8080, help="REST port."),
    grpc_port: int = typer.Option(8081, help="gRPC port."),
    metrics_port: int = typer.Option(8082, help="Prometheus metrics port."),
    workers: int = typer.Option(
        None, help="MLServer parallel inference workers (0 = in the server process)."
    ),
    max_batch_size: int = typer.Option(None, help="Most images in one request."),
) -> None:
    """Serve the model over REST (V2), gRPC and Prometheus metrics. Ctrl-C stops it."""
    from cassava.model_store import ONNX_FILE, SAVED_MODEL_FILE, read_info, resolve_model_dir
    from cassava.server_config import write_model_folder

    model_dir = resolve_model_dir(model).resolve()
    # Fail here, in one line, rather than in a worker's traceback.
    info = read_info(model_dir, need=ONNX_FILE if backend == "onnx" else SAVED_MODEL_FILE)
    warn_untrained(info.warning)
    extra: dict[str, object] = {"model_dir": str(model_dir), "backend": backend}
    if max_batch_size is not None:
        extra["max_batch_size"] = max_batch_size
    env = dict(os.environ)
    env.update(
        MLSERVER_HOST=host,
        MLSERVER_HTTP_PORT=str(http_port),
        MLSERVER_GRPC_PORT=str(grpc_port),
        MLSERVER_METRICS_PORT=str(metrics_port),
    )
    with tempfile.TemporaryDirectory(prefix="cassava-serve-") as scratch:
        folder = Path(scratch) / "cassava"
        write_model_folder(folder, extra=extra, server={"parallel_workers": workers})
        console.print(
            f"serving [bold]{model_dir}[/] ({backend}) — REST http://{host}:{http_port}, "
            f"gRPC {host}:{grpc_port}, metrics :{metrics_port}/metrics"
        )
        # `mlserver start` with cassava's reliability fixes (bounded bodies, draining shutdown, exit
        # codes), as a child so that its generated folder is removed afterwards.
        code = _run_forwarding_signals([sys.executable, "-m", "cassava.launcher", str(folder)], env)
    raise typer.Exit(code)


def _run_forwarding_signals(command: list[str], env: dict[str, str]) -> int:
    """Run `command` until it exits, passing on the signals that stop a server (a process manager sends
    them to this PID only; Ctrl-C reaches both, and the launcher ignores a second signal)."""
    child = subprocess.Popen(command, env=env)
    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)
    previous = {sig: signal.signal(sig, lambda sig, _frame: child.send_signal(sig)) for sig in forwarded}
    try:
        return child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
