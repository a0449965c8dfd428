"""`cassava deploy render`: ready-to-apply YAML for one platform, from the kustomize overlays in deploy/."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from cassava.cli._common import console, reports_errors
from cassava.settings import Profile

app = typer.Typer(help="Kubernetes manifests for the cassava server.", no_args_is_help=True)

Target = Literal["seldon-v1", "seldon-v2", "kserve", "kubernetes"]
TARGET_HELP = "seldon-v1 (SeldonDeployment), seldon-v2 (Model + Server + ServerConfig), kserve, kubernetes."


@app.command()
@reports_errors
def render(
    target: Target = typer.Option(..., "--target", "-t", help=TARGET_HELP, show_default=False),
    image: str = typer.Option(
        ..., "--image", help="The image to run, NAME:TAG or NAME@sha256:DIGEST.", show_default=False
    ),
    replicas: int = typer.Option(
        None, "--replicas", min=1, help="Replicas to run, and the autoscaler's minimum. Default: 2."
    ),
    autoscale: bool = typer.Option(
        False,
        "--autoscale",
        help="seldon-v1, seldon-v2: add a CPU autoscaler (2-10 replicas); without it the count is fixed, as "
        "in the seed (`kubectl scale sdep cassava --replicas=3`). kserve and kubernetes always autoscale.",
    ),
    profile: Profile = typer.Option(
        None,
        "--profile",
        help="Set the serving profile (CASSAVA_PROFILE) on the model server: latency (the image's "
        "default) or throughput. See docs/performance.md.",
    ),
    namespace: str = typer.Option(None, "--namespace", "-n", help="Namespace of every object."),
    model_uri: str = typer.Option(
        None, "--model-uri", help="seldon-v2 only: the folder holding model-settings.json (Model.storageUri)."
    ),
    deploy_dir: Path = typer.Option(
        None,
        "--deploy-dir",
        help="The deploy/ directory. Default: ./deploy, else the project checkout, else the installed copy.",
    ),
    output: Path = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    """Print the manifests of one target, ready for `kubectl apply -f -`.

    The server's REST port also serves the diagnosis web page at `/`, wherever the API is reachable. To
    turn it off, set CASSAVA_WEB_UI=false on the container (env of the `cassava` container in
    deploy/base/pod-template.yaml, or a kustomize patch); the API is unchanged.
    """
    from cassava.ops.manifests import render as render_manifests

    text = render_manifests(
        target,
        image,
        replicas=replicas,
        namespace=namespace,
        model_uri=model_uri,
        deploy_dir=deploy_dir,
        autoscale=autoscale,
        profile=profile,
    )
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        console.print(f"wrote [bold]{output}[/] ({target})")
