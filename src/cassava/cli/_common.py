"""What every command shares: the console, error reporting, the untrained-model warning, the TFDS options,
the hint for a missing optional extra, and TensorFlow's native log kept quiet."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
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

#: Set by `cassava --verbose`: TensorFlow's native log is shown as it comes.
VERBOSE = False

#: The optional extra `--dataset`, `--plot` and `cassava evaluate` need (pyproject.toml).
DATA_EXTRA = "pip install 'cassava-serving[data]'"

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int = 1) -> typer.Exit:
    # Messages carry paths, URLs and server text, where "[...]" is not rich markup.
    # soft_wrap: a URL or path in the message stays on one line, so it can be copied.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
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


def require_module(module: str, install: str, needed_by: str) -> None:
    """Fail in one line, before any work starts, when `module` is not installed."""
    if importlib.util.find_spec(module) is None:
        raise fail(f"{needed_by} needs {module}, which is not installed: {install}")


def quiet_tensorflow_logs() -> None:
    """Before TensorFlow is imported: its Python-side and (older releases') C++ log at errors only,
    unless `--verbose`. A level the user set is kept."""
    if VERBOSE:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with contextlib.suppress(ImportError):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)


@contextlib.contextmanager
def native_stderr_quiet() -> Iterator[None]:
    """Around TensorFlow's import and model load: send what native code writes to file descriptor 2 to
    /dev/null. TensorFlow >= 2.19 logs through absl before absl is initialised ("oneDNN custom operations
    are on", "failed call to cuInit" on a CPU-only machine), which TF_CPP_MIN_LOG_LEVEL no longer
    silences (tensorflow/tensorflow#100442). `--verbose` shows it; Python's own stderr stays where it
    is when it is not descriptor 2 (a test runner's capture)."""
    if VERBOSE:
        yield
        return
    quiet_tensorflow_logs()
    with contextlib.suppress(AttributeError, ValueError):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 at all: nothing to quieten
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        with contextlib.suppress(AttributeError, ValueError):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
