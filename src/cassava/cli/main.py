"""`cassava`: predict locally, serve, query, benchmark and deploy the CropNet cassava classifier."""

from __future__ import annotations

import typer

from cassava.cli import _common, bench, build, deploy, evaluate, infer, model, predict, serve

app = typer.Typer(
    name="cassava",
    help="The CropNet cassava leaf-disease classifier: predict, serve, infer, evaluate, benchmark, deploy.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"cassava {version('cassava-serving')}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Show TensorFlow's native log (hidden by default)."
    ),
    _version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """The CropNet cassava leaf-disease classifier: predict, serve, infer, evaluate, benchmark, deploy."""
    _common.VERBOSE = verbose
    # Before any command imports TensorFlow: the level it reads once, at import.
    _common.quiet_tensorflow_logs()


app.add_typer(model.app, name="model")
app.command()(serve.serve)

# Commands added by their own modules register below, one line each.
app.command()(predict.predict)
app.command()(infer.infer)
app.command()(evaluate.evaluate)
app.command()(build.build)
app.add_typer(deploy.app, name="deploy")
app.command()(bench.bench)
