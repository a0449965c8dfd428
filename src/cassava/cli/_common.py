"""What every command shares: the console, error reporting, the untrained-model warning, the TFDS options."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from cassava.errors import CassavaError

console = Console()
err_console = Console(stderr=True)

# The `--dataset` options of `cassava predict` and `cassava infer`, declared once so both read the same.
TFDS_SPLIT = typer.Option("validation", help="TFDS split (with --dataset): train, validation, test.")
TFDS_COUNT = typer.Option(9, min=1, help="How many TFDS examples (with --dataset).")
TFDS_SEED = typer.Option(0, min=-1, help="Seed of the choice of TFDS examples; -1: different each run.")
TFDS_DATA_DIR = typer.Option(None, "--data-dir", help="TFDS data folder (with --dataset). Default: TFDS's.")

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int = 1) -> typer.Exit:
    # Messages carry paths, URLs and server text, where "[...]" is not rich markup.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def reports_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Show a CassavaError as one red line and exit 1, instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except CassavaError as err:
            raise fail(str(err)) from None

    return wrapper


def warn_untrained(warning: str | None) -> None:
    if warning:
        err_console.print(f"[bold yellow on red] WARNING [/] [bold yellow]{warning}[/]", highlight=False)
