"""`cassava infer`: classify images with a running server, the seed tutorial's `test.py` done right.

Where to: `--local` (http://localhost:8080, `test.py --local`), `--remote` (the Seldon Core ingress,
`test.py --remote`), `--url` (any REST base or full infer URL) or `--grpc HOST:PORT`.
What: `--encoding bytes` (default) sends the image files and the server decodes and preprocesses them
with the code `cassava predict` uses; `--encoding tensor` sends what `test.py` sent, float32
[N, 224, 224, 3] preprocessed here. Either way the answer is printed as `cassava predict` prints it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import typer

from cassava.cli._common import (
    TFDS_COUNT,
    TFDS_DATA_DIR,
    TFDS_SEED,
    TFDS_SPLIT,
    console,
    err_console,
    fail,
    reports_errors,
    warn_untrained,
)
from cassava.contract import MODEL_NAME

if TYPE_CHECKING:
    import numpy as np

    from cassava.client import CassavaClient, RemoteResult
    from cassava.datasets import Example

Encoding = Literal["bytes", "tensor"]

LOCAL_URL = "http://localhost:8080"
DEFAULT_INGRESS = "localhost:8080"
DEFAULT_NAMESPACE = "default"
# Used only when the server does not advertise `max_batch_size`: the seed's own batch.
FALLBACK_BATCH_SIZE = 16


@reports_errors
def infer(
    paths: list[Path] = typer.Argument(
        None, help="Image files or directories (searched recursively).", show_default=False
    ),
    local: bool = typer.Option(
        False, "--local", help=f"The server on this machine, {LOCAL_URL} (the default target)."
    ),
    remote: bool = typer.Option(
        False, "--remote", help="Through the Seldon Core ingress: http://HOST/seldon/NAMESPACE/cassava."
    ),
    host: str = typer.Option(
        None,
        "--host",
        help=f"Ingress host[:port] or URL (with --remote). Default: {DEFAULT_INGRESS}.",
        show_default=False,
    ),
    namespace: str = typer.Option(
        None,
        "--namespace",
        help=f"Kubernetes namespace of the deployment (with --remote). Default: {DEFAULT_NAMESPACE}.",
        show_default=False,
    ),
    url: str = typer.Option(
        None,
        "--url",
        help="Any REST base URL, or the full .../v2/models/cassava/infer URL.",
        show_default=False,
    ),
    grpc: str = typer.Option(
        None, "--grpc", metavar="HOST:PORT", help="A gRPC endpoint, e.g. localhost:8081.", show_default=False
    ),
    dataset: bool = typer.Option(
        False, "--dataset", help="Send random examples of the TFDS `cassava` dataset instead of files."
    ),
    split: str = TFDS_SPLIT,
    count: int = TFDS_COUNT,
    seed: int = TFDS_SEED,
    data_dir: Path = TFDS_DATA_DIR,
    encoding: Encoding = typer.Option(
        "bytes",
        help="bytes: send the image files, the server preprocesses them. "
        "tensor: preprocess here and send float32 [N,224,224,3], the seed's request.",
    ),
    batch_size: int = typer.Option(
        None,
        "--batch-size",
        min=1,
        help="Most images per request. Default: the server's max_batch_size.",
        show_default=False,
    ),
    timeout: float = typer.Option(60.0, min=0.1, help="Seconds to wait for the server's answer."),
    plot: Path = typer.Option(None, "--plot", help="Also draw the images and predictions into this PNG."),
    json_output: bool = typer.Option(
        False, "--json", help="Print one JSON object per image instead of a table."
    ),
) -> None:
    """Classify images with a running server (REST or gRPC): files and folders, or TFDS examples."""
    import json

    from cassava import datasets
    from cassava.cli._results import prediction_record, prediction_table
    from cassava.client import CassavaClient, InferenceRequestError, ServerUnreachableError, Target

    target = _target_url(local, remote, host, namespace, url, grpc)
    try:
        parsed = Target.parse(target)
    except ValueError as err:
        raise fail(str(err)) from None
    shown = f"grpc://{parsed.address}" if parsed.transport == "grpc" else target
    if dataset and paths:
        raise fail("give image paths or --dataset, not both")
    if not dataset and not paths:
        raise fail("nothing to classify: give image files or directories, or --dataset")
    # Local problems (a missing file, no TFDS data) are reported before the server is contacted.
    if dataset:
        examples = datasets.load_tfds(split, count, None if seed == -1 else seed, data_dir)
    else:
        examples = datasets.load_files(paths)

    results: list[RemoteResult] = []
    doing = "the metadata request"
    with CassavaClient(target, timeout=timeout) as client:
        try:
            parameters = client.metadata().get("parameters") or {}
            size = batch_size or int(parameters.get("max_batch_size") or FALLBACK_BATCH_SIZE)
            starts = range(0, len(examples), size)
            started = time.perf_counter()
            for number, start in enumerate(starts, 1):
                chunk = examples[start : start + size]
                doing = f"request {number}/{len(starts)} (images {start + 1}-{start + len(chunk)})"
                results.append(_send(client, chunk, encoding))
            elapsed = time.perf_counter() - started
        except ServerUnreachableError as err:
            raise fail(
                f"cannot reach the cassava model at {shown} ({_one_line(err)}); is the server running "
                "and the address right?"
            ) from None
        except InferenceRequestError as err:
            hint = ""
            if str(getattr(err.__cause__, "status", lambda: "")()) in ("404", "StatusCode.NOT_FOUND"):
                hint = f" (is {shown} the server's base URL, with the model {MODEL_NAME!r} loaded?)"
            raise fail(f"{shown} rejected {doing}: {_one_line(err)}{hint}") from None

    untrained = bool(parameters.get("untrained"))
    warning = None
    if untrained:
        warning = str(parameters.get("warning") or "") or (
            f"the server at {shown} serves an UNTRAINED stand-in model; its predictions are meaningless"
        )
    warn_untrained(warning)
    indices, probabilities = _concatenate(results)
    err_console.print(
        f"{len(examples)} image(s) classified by {shown} in {len(results)} request(s) "
        f"({encoding} encoding, {parsed.transport}, {elapsed:.2f} s)",
        style="dim",
        highlight=False,
    )
    if json_output:
        records = [*map(prediction_record, examples, indices, probabilities)]
        typer.echo(json.dumps(records, indent=2))
    else:
        console.print(prediction_table(examples, indices, probabilities, untrained=untrained))
    if plot is not None:
        from cassava.plotting import plot_predictions

        title = f"{shown} ({encoding} encoding)"
        if untrained:
            title = f"UNTRAINED STAND-IN, predictions are meaningless: {title}"
        written = plot_predictions(examples, [int(i) for i in indices], plot, title=title)
        (err_console if json_output else console).print(f"plot written to [bold]{written}[/]")
    # Said again after the results, which can scroll the first warning away.
    warn_untrained(warning)


def _target_url(
    local: bool, remote: bool, host: str | None, namespace: str | None, url: str | None, grpc: str | None
) -> str:
    given = [
        name
        for name, on in (
            ("--local", local),
            ("--remote", remote),
            ("--url", url is not None),
            ("--grpc", grpc is not None),
        )
        if on
    ]
    if len(given) > 1:
        raise fail(f"choose one target, not {' and '.join(given)}")
    if not remote and (host is not None or namespace is not None):
        raise fail("--host and --namespace choose the Seldon ingress; they go with --remote")
    if remote:
        ingress = host or DEFAULT_INGRESS
        base = ingress.rstrip("/") if "://" in ingress else f"http://{ingress}"
        # Seldon Core routes /seldon/NAMESPACE/DEPLOYMENT/...; the deployment is named after the model.
        return f"{base}/seldon/{namespace or DEFAULT_NAMESPACE}/{MODEL_NAME}"
    if url is not None:
        return url
    if grpc is not None:
        return grpc if grpc.startswith("grpc://") else f"grpc://{grpc}"
    return LOCAL_URL


def _send(client: CassavaClient, examples: list[Example], encoding: Encoding) -> RemoteResult:
    if encoding == "bytes":
        return client.classify_images([e.encoded for e in examples])
    import numpy as np

    from cassava.preprocessing import preprocess_pixels

    return client.classify_tensor(np.stack([preprocess_pixels(e.image) for e in examples]))


def _concatenate(results: list[RemoteResult]) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np

    return (
        np.concatenate([r.indices for r in results]),
        np.concatenate([r.probabilities for r in results]),
    )


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
