"""`cassava serve`: run MLServer on the cassava model through the launcher, as a container does."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from cassava.cli._common import console, reports_errors, warn_untrained
from cassava.settings import Backend, CassavaSettings, Profile


@reports_errors
def serve(
    model: Path = typer.Option(
        None, "--model", help="Model directory. Default: CASSAVA_MODEL_DIR, else the cache's model."
    ),
    backend: Backend = typer.Option(
        None, help="Inference backend. Default: CASSAVA_BACKEND, else tensorflow."
    ),
    host: str = typer.Option("0.0.0.0", help="Address to listen on."),
    http_port: int = typer.Option(8080, help="REST port."),
    grpc_port: int = typer.Option(8081, help="gRPC port."),
    metrics_port: int = typer.Option(8082, help="Prometheus metrics port."),
    profile: Profile = typer.Option(
        None,
        help="latency: the fastest single request (inference in the server process, no batching); "
        "throughput: concurrent requests merged into one model call. Default: CASSAVA_PROFILE, else "
        "latency. See docs/performance.md.",
    ),
    workers: int = typer.Option(
        None, help="MLServer parallel inference workers (0 = in the server process). Default: the profile's."
    ),
    max_images: int = typer.Option(
        None, help="Most images in one request. Default: CASSAVA_MAX_IMAGES, else 64."
    ),
) -> None:
    """Serve the model over REST (V2), gRPC and Prometheus metrics. Ctrl-C stops it."""
    from cassava.backends import artifact_file
    from cassava.model_store import read_info
    from cassava.server.process import ServerProcess

    settings = CassavaSettings().with_flags(
        model_dir=model, backend=backend, max_images=max_images, profile=profile
    )
    model_dir = settings.model_directory().resolve()
    settings = settings.with_flags(model_dir=model_dir)
    # Fail here, in one line, rather than in a worker's traceback.
    info = read_info(model_dir, need=artifact_file(settings.backend))
    warn_untrained(info.warning)
    with tempfile.TemporaryDirectory(prefix="cassava-serve-") as scratch:
        server = ServerProcess.for_model(
            Path(scratch),
            settings=settings,
            server={"parallel_workers": workers},
            host=host,
            ports=(http_port, grpc_port, metrics_port),
            log_path=None,
        )
        shown = "localhost" if host in ("0.0.0.0", "::") else host
        console.print(
            f"serving [bold]{model_dir}[/] ({settings.backend}, {settings.profile} profile) — "
            f"REST http://{host}:{http_port}, "
            f"gRPC {host}:{grpc_port}, metrics :{metrics_port}/metrics"
        )
        if settings.web_ui:
            console.print(f"diagnosis page: [bold]http://{shown}:{http_port}/[/]", soft_wrap=True)
        # A child rather than exec, so that its generated folder is removed afterwards.
        code = server.run_attached()
    raise typer.Exit(code)
