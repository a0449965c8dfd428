"""`cassava build`: the container image, through `docker build` or `podman build` with the right arguments.

The Dockerfile at the project root is the build; this command only picks an engine that is actually
running, turns `--model-source` into build args (and a named build context for local files), labels the
image and tags it. `--mlserver-folder DIR` instead writes the folder that the seed tutorial's own build,
`mlserver build DIR -t IMAGE`, turns into an image (`cassava.ops.mlserver_folder`).
"""

from __future__ import annotations

import shlex
import tempfile
from pathlib import Path

import typer

from cassava.backends import artifact_file
from cassava.cli._common import console, err_console, reports_errors, warn_untrained
from cassava.ops.image import (
    ENGINES,
    ContainerEngineError,
    EngineName,
    build_command,
    default_tag,
    find_engine,
    model_source_args,
    run,
)
from cassava.settings import Backend


def write_build_folder(
    dest: Path, *, context: Path, backend: Backend, model: Path | None, wheel: Path | None, force: bool
) -> None:
    from cassava.model_store import read_info
    from cassava.ops.mlserver_folder import build_wheel, write_mlserver_folder
    from cassava.settings import CassavaSettings

    model_dir = CassavaSettings().model_directory(model).resolve()
    warn_untrained(read_info(model_dir, need=artifact_file(backend)).warning)
    with tempfile.TemporaryDirectory(prefix="cassava-wheel-") as tmp:
        if wheel is None:
            console.print(f"building the wheel of {context.resolve()} ...", highlight=False)
            wheel = build_wheel(context.resolve(), Path(tmp))
        folder = write_mlserver_folder(dest, model_dir=model_dir, wheel=wheel, backend=backend, force=force)
    console.print(
        f"[green]✓[/] wrote [bold]{folder.path}[/] ({folder.backend} backend, {folder.wheel} unpacked, "
        f"model from {model_dir}); next: mlserver build {shlex.quote(str(folder.path))} -t IMAGE",
        highlight=False,
    )


@reports_errors
def build(
    tag: str = typer.Option(
        None, "--tag", "-t", help="Image name and tag. Default: cassava:VERSION[-onnx][-untrained]."
    ),
    backend: Backend = typer.Option("tensorflow", help="Inference backend baked into the image."),
    model_source: str = typer.Option(
        None,
        "--model-source",
        help="Where the weights come from: default TF Hub; an http(s) URL; a local .tar.gz or SavedModel "
        "directory; or `demo` for an UNTRAINED stand-in (tagged and labelled so).",
        show_default=False,
    ),
    engine: EngineName = typer.Option(None, help="docker or podman. Default: the first one running."),
    context: Path = typer.Option(Path("."), help="The project checkout (holds the Dockerfile)."),
    base_image: str = typer.Option(
        None, help="Replace the base image, e.g. python:3.11-slim-bookworm@sha256:... (pin a digest)."
    ),
    platform: str = typer.Option(None, help="Target platform, e.g. linux/amd64."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Rebuild every layer."),
    push: bool = typer.Option(False, "--push", help="Push the image after building it."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the command and do nothing."),
    mlserver_folder: Path = typer.Option(
        None,
        "--mlserver-folder",
        help="Build no image: write a self-contained folder for the seed's `mlserver build DIR -t IMAGE` "
        "(configuration, requirements.txt, the project's wheel unpacked, a copy of the model).",
        show_default=False,
    ),
    model: Path = typer.Option(
        None,
        "--model",
        help="With --mlserver-folder: the model directory copied in. Default: CASSAVA_MODEL_DIR, else the "
        "cache's model.",
        show_default=False,
    ),
    wheel: Path = typer.Option(
        None,
        "--wheel",
        help="With --mlserver-folder: the project's wheel. Default: `uv build --wheel` of --context.",
        show_default=False,
    ),
    force: bool = typer.Option(False, "--force", help="With --mlserver-folder: replace a non-empty DIR."),
) -> None:
    """Build the server image (multi-stage Dockerfile, CPU only, model baked in at build time)."""
    if mlserver_folder is not None:
        write_build_folder(
            mlserver_folder, context=context, backend=backend, model=model, wheel=wheel, force=force
        )
        return
    if model is not None or wheel is not None or force:
        raise ContainerEngineError("--model, --wheel and --force only apply with --mlserver-folder")
    context = context.resolve()
    if not (context / "Dockerfile").is_file():
        raise ContainerEngineError(
            f"no Dockerfile in {context}; run from the project checkout or pass --context"
        )
    tag = tag or default_tag(backend, model_source)
    with model_source_args(model_source) as source:
        if source.untrained:
            err_console.print(
                f"[bold yellow]building an UNTRAINED stand-in image ({tag}); its predictions are "
                "meaningless[/]",
                highlight=False,
            )
        # A dry run prints the command without asking whether an engine is running.
        name: str = find_engine(engine).path if not dry_run else (engine or ENGINES[0])
        command = build_command(
            name,
            context,
            tag=tag,
            backend=backend,
            source=source,
            base_image=base_image,
            platform=platform,
            no_cache=no_cache,
        )
        if dry_run:
            typer.echo(shlex.join(command))
            return
        console.print(f"$ {shlex.join(command)}", highlight=False)
        run(command, "the image build")
    if push:
        run([name, "push", tag], "the push")
    console.print(f"[green]✓[/] built [bold]{tag}[/]" + (" and pushed it" if push else ""))
