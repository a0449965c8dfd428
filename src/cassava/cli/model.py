"""`cassava model fetch | demo`: get the model into the local cache (or a directory of your choice)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from cassava.cli._common import console, err_console, fail, reports_errors, warn_untrained
from cassava.export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, PARITY_TOLERANCE

app = typer.Typer(
    help="Fetch the CropNet model, write an untrained stand-in, or export it to ONNX.", no_args_is_help=True
)


@app.command()
@reports_errors
def fetch(
    source: str = typer.Option(
        None,
        "--from",
        help="A SavedModel directory, a .tar.gz file or an http(s) URL. Default: the TF Hub handle.",
        show_default=False,
    ),
    dest: Path = typer.Option(
        None, help="Model directory to write. Default: the cache (see `cassava model path`)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing model directory."),
) -> None:
    """Download CropNet (or install it from --from), verify it, and move it into place atomically."""
    from cassava import model_store

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("downloading", total=None)

        def update(done: int, total: int | None) -> None:
            progress.update(task, completed=done, total=total)

        console.print(f"fetching [bold]{source or model_store.CROPNET_HANDLE}[/]")
        info = model_store.fetch(source, dest, force=force, progress=update)
    console.print(f"[green]✓[/] model verified and installed at [bold]{info.path}[/]")
    warn_untrained(info.warning)


@app.command()
@reports_errors
def demo(
    dest: Path = typer.Option(None, help="Model directory to write. Default: the cache."),
    force: bool = typer.Option(False, "--force", help="Replace even a real model."),
    seed: int = typer.Option(0, help="Seed of the stand-in's random weights."),
) -> None:
    """Write an UNTRAINED stand-in with CropNet's interface, for machines that cannot download it."""
    from cassava import model_store

    info = model_store.write_demo_model(dest, force=force, seed=seed)
    console.print(f"wrote the stand-in to [bold]{info.path}[/]")
    warn_untrained(info.warning)


@app.command()
def path() -> None:
    """Print the default model directory (CASSAVA_HOME, else ~/.cache/cassava, + /model)."""
    from cassava.model_store import default_model_dir

    typer.echo(default_model_dir())


@app.command()
@reports_errors
def export(
    fmt: str = typer.Option("onnx", "--format", help="Export format. Only `onnx` (for `--backend onnx`)."),
    model: Path = typer.Option(None, "--model", help="Model directory. Default: the cache's model."),
    opset: int = typer.Option(DEFAULT_OPSET, help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET}."),
    tolerance: float = typer.Option(
        PARITY_TOLERANCE,
        min=0.0,
        help="Largest difference from TensorFlow's probabilities allowed on the probe images.",
    ),
) -> None:
    """Export the SavedModel to model.onnx in the same directory, checked against TensorFlow."""
    from cassava import export as exporter
    from cassava.model_store import resolve_model_dir

    if fmt != "onnx":
        raise fail(f"--format {fmt!r} is not supported; the only export format is 'onnx'")
    model_dir = resolve_model_dir(model)
    where = escape(str(model_dir))
    console.print(f"exporting [bold]{where}[/] to ONNX (opset {opset}); this takes up to a minute")
    result = exporter.export(model_dir, opset=opset, tolerance=tolerance)
    wrote = f"{escape(str(result.path))}[/] ({result.path.stat().st_size:,} bytes)"
    console.print(f"[green]✓[/] wrote [bold]{wrote} in {result.seconds:.0f} s")
    console.print(f"parity with TensorFlow: {result.parity.summary()}", highlight=False)
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    console.print("serve it with `cassava serve --backend onnx` (or CASSAVA_BACKEND=onnx)")
    warn_untrained(result.info.warning)
