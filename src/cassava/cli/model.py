"""`cassava model fetch | demo`: get the model into the local cache (or a directory of your choice)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from cassava.cli._common import console, err_console, fail, reports_errors, warn_untrained
from cassava.download import DEFAULT_DEADLINE_S, DownloadLimits
from cassava.errors import CassavaError
from cassava.export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, PARITY_TOLERANCE

app = typer.Typer(
    help="Fetch the CropNet model, write an untrained stand-in, or export it to ONNX.", no_args_is_help=True
)


def _size(text: str) -> int:
    from pydantic import ByteSize, TypeAdapter, ValidationError

    try:
        return int(TypeAdapter(ByteSize).validate_python(text))
    except ValidationError:
        raise typer.BadParameter(f"{text!r} is not a size; write e.g. 2GiB, 500MB or 1000000") from None


@app.command()
def fetch(
    source: str = typer.Option(
        None,
        "--from",
        help="A SavedModel directory, a .tar.gz file or an http(s) URL. Default: TF Hub, then Kaggle.",
        show_default=False,
    ),
    dest: Path = typer.Option(
        None, help="Model directory to write. Default: the cache (see `cassava model path`)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace an existing model (the untrained stand-in is replaced anyway)."
    ),
    if_missing: bool = typer.Option(
        False, "--if-missing", help="Do nothing when the destination already holds a real model."
    ),
    sha256: str = typer.Option(
        None,
        help="Expected SHA-256 of the archive. Default: the one recorded when this model was first fetched.",
        show_default=False,
    ),
    max_size: str = typer.Option(
        "1GiB", help="Largest download, and largest total of the unpacked files (e.g. 2GiB, 500MB)."
    ),
    deadline: float = typer.Option(
        DEFAULT_DEADLINE_S, min=1.0, help="Seconds the whole download may take, retries included."
    ),
    retries: int = typer.Option(
        DownloadLimits.attempts - 1,
        min=0,
        help="Retries per source after a connection error, HTTP 5xx or an expired signed URL.",
    ),
) -> None:
    """Download CropNet (or install it from --from), verify it, and move it into place atomically."""
    from cassava import model_store

    limits = DownloadLimits(max_size=_size(max_size), deadline_s=deadline, attempts=retries + 1)
    target = dest or model_store.default_model_dir()
    installed = (target / model_store.SAVED_MODEL_FILE).is_file() and not model_store.is_standin(target)
    if if_missing and installed and not force:
        console.print(f"a model is already installed at [bold]{escape(str(target))}[/]", soft_wrap=True)
        return
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

        def notify(message: str) -> None:
            console.print(escape(message), soft_wrap=True, highlight=False)

        what = source or f"{model_store.default_sources()[0]} (then Kaggle Models if it fails)"
        console.print(f"fetching [bold]{escape(what)}[/]", soft_wrap=True, highlight=False)
        try:
            info = model_store.fetch(
                source, dest, force=force, sha256=sha256, limits=limits, progress=update, notify=notify
            )
        except CassavaError as err:
            progress.stop()
            # soft_wrap: the message holds URLs and paths that must survive a copy and paste whole.
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
    console.print(
        f"[green]✓[/] model verified and installed at [bold]{escape(str(info.path))}[/]", soft_wrap=True
    )
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
