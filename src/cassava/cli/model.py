"""`cassava model fetch | demo`: get the model into the local cache (or a directory of your choice)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from cassava.cli._common import console, reports_errors, warn_untrained

app = typer.Typer(help="Fetch the CropNet model, or write an untrained stand-in.", no_args_is_help=True)


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
