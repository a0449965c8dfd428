"""`cassava`: predict locally, serve, query, benchmark and deploy the CropNet cassava classifier."""

from __future__ import annotations

import typer

from cassava.cli import bench, build, deploy, infer, model, predict, serve

app = typer.Typer(
    name="cassava",
    help="The CropNet cassava leaf-disease classifier: predict, serve, infer, benchmark, deploy.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

app.add_typer(model.app, name="model")
app.command()(serve.serve)

# Commands added by their own modules register below, one line each.
app.command()(predict.predict)
app.command()(infer.infer)
app.command()(build.build)
app.add_typer(deploy.app, name="deploy")
app.command()(bench.bench)
