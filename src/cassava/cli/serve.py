"""`cassava serve`: run MLServer on the cassava model, the same `mlserver start` a container runs."""

from __future__ import annotations

import os
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
    folder = Path(tempfile.mkdtemp(prefix="cassava-serve-")) / "cassava"
    write_model_folder(folder, extra=extra, server={"parallel_workers": workers})
    env = dict(os.environ)
    env.update(
        MLSERVER_HOST=host,
        MLSERVER_HTTP_PORT=str(http_port),
        MLSERVER_GRPC_PORT=str(grpc_port),
        MLSERVER_METRICS_PORT=str(metrics_port),
    )
    console.print(
        f"serving [bold]{model_dir}[/] ({backend}) — REST http://{host}:{http_port}, "
        f"gRPC {host}:{grpc_port}, metrics :{metrics_port}/metrics"
    )
    mlserver = str(Path(sys.executable).with_name("mlserver"))
    os.execvpe(mlserver, [mlserver, "start", str(folder)], env)
