"""`cassava infer`: classify images with a running server, the seed tutorial's `test.py` done right.

Where to: `--local` (http://localhost:8080, `test.py --local`), `--remote` (the Seldon Core ingress,
`test.py --remote`), `--url` (any REST base or full infer URL) or `--grpc HOST:PORT`.
What: `--encoding bytes` (default) sends the image files and the server decodes and preprocesses them
with the code `cassava predict` uses; `--encoding tensor` sends what `test.py` sent, float32
[N, 224, 224, 3] preprocessed here. Either way the answer is printed as `cassava predict` prints it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import typer

from cassava.cli._common import (
    TFDS_COUNT,
    TFDS_DATA_DIR,
    TFDS_SEED,
    TFDS_SPLIT,
    err_console,
    fail,
    reports_errors,
    warn_untrained,
)
from cassava.cli._results import Collector, run_stream, show_results
from cassava.cli.predict import (
    INPUT_PATHS,
    JSON_OUTPUT,
    OUTPUT,
    PLOT,
    PLOT_MAX_OPTION,
    RESUME,
    STRICT,
    check_inputs,
    fail_if_nothing_classified,
    open_source,
)
from cassava.contract import MODEL_NAME
from cassava.results import Outcome, OutputFile, done_names, outcomes

if TYPE_CHECKING:
    from cassava.client import CassavaClient, InferenceRequestError
    from cassava.datasets import Example

Encoding = Literal["bytes", "tensor"]

LOCAL_URL = "http://localhost:8080"
DEFAULT_INGRESS = "localhost:8080"
DEFAULT_NAMESPACE = "default"
# Used only when the server does not advertise `max_images`: the seed's own batch.
FALLBACK_BATCH_SIZE = 16
# A request refused for its content is sent again image by image, to find and skip the bad ones:
# 400 / INVALID_ARGUMENT (an image that does not decode), 413 (a body over the server's limit).
_SPLITTABLE_STATUSES = frozenset({"400", "413", "StatusCode.INVALID_ARGUMENT"})


@reports_errors
def infer(
    paths: list[Path] = INPUT_PATHS,
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
    model_name: str = typer.Option(
        MODEL_NAME, "--model-name", help="The model's name on the server (the path's /v2/models/NAME)."
    ),
    header: list[str] = typer.Option(
        None,
        "--header",
        "-H",
        metavar="NAME:VALUE",
        help="Send this header with every request (repeatable; gRPC metadata over --grpc), e.g. "
        "'Seldon-Model: cassava', 'Host: cassava.default.example.com', 'Authorization: Bearer TOKEN'.",
        show_default=False,
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
        "--batch",
        "--batch-size",
        min=1,
        help="Most images per request. Default: the server's max_images.",
        show_default=False,
    ),
    concurrency: int = typer.Option(1, "--concurrency", "-c", min=1, help="Requests in flight at once."),
    retries: int = typer.Option(
        3,
        "--retries",
        min=0,
        help="Send a request again this often, with growing pauses, when the server cannot be reached "
        "or answers 503 (never after a 4xx: that would fail again).",
    ),
    timeout: float = typer.Option(60.0, min=0.1, help="Seconds to wait for the server's answer."),
    plot: Path = PLOT,
    plot_max: int = PLOT_MAX_OPTION,
    json_output: bool = JSON_OUTPUT,
    output: Path = OUTPUT,
    resume: bool = RESUME,
    strict: bool = STRICT,
) -> None:
    """Classify images with a running server (REST or gRPC): files and folders, or TFDS examples."""
    from cassava.client import CassavaClient, InferenceRequestError, Retry, ServerUnreachableError, Target

    target = _target_url(local, remote, host, namespace, url, grpc)
    try:
        parsed = Target.parse(target)
    except ValueError as err:
        raise fail(str(err)) from None
    shown = f"grpc://{parsed.address}" if parsed.transport == "grpc" else target
    headers = parse_headers(header or [])
    check_inputs(paths, dataset, plot, output, resume)
    # Local problems (a missing file, no TFDS data) are reported before the server is contacted.
    skip = done_names(output) if resume and output is not None else set()
    source = open_source(paths, dataset, split, count, seed, data_dir, skip)

    def on_retry(err: InferenceRequestError, delay: float) -> None:
        err_console.print(f"retrying in {delay:.1f} s: {_one_line(err)}", style="dim", highlight=False)

    retry = Retry(attempts=retries + 1)
    clients = ClientPool(
        lambda: CassavaClient(
            target, model=model_name, timeout=timeout, headers=headers, retry=retry, on_retry=on_retry
        )
    )
    collector = Collector(
        keep_rows=json_output or output is None,
        plot_max=plot_max if plot is not None else 0,
        strict=strict,
    )
    sent: list[int] = []  # one entry per request; list.append is atomic across threads
    doing = "the metadata request"
    try:
        parameters = clients.get().metadata().get("parameters") or {}
        largest = int(parameters.get("max_images") or 0)
        size = batch_size or largest or FALLBACK_BATCH_SIZE
        if largest and size > largest:
            raise fail(
                f"--batch {size}: the server at {shown} takes at most {largest} images per request "
                "(its max_images); give a smaller --batch, or leave it out"
            )
        untrained = bool(parameters.get("untrained"))
        warning = None
        if untrained:
            warning = str(parameters.get("warning") or "") or (
                f"the server at {shown} serves an UNTRAINED stand-in model; its predictions are meaningless"
            )
        warn_untrained(warning)
        # Opened once the server answered: a wrong address must not empty an earlier output file.
        if output is not None:
            collector.output = OutputFile(output, resume=resume)
        doing = "a request"
        started = time.perf_counter()
        run_stream(
            source,
            size,
            lambda examples: send_chunk(clients.get(), examples, encoding, sent),
            collector,
            description=f"{shown}",
            concurrency=concurrency,
        )
        elapsed = time.perf_counter() - started
    except ServerUnreachableError as err:
        raise fail(
            f"cannot reach the cassava model at {shown} ({_one_line(err)}); is the server running "
            "and the address right?"
        ) from None
    except InferenceRequestError as err:
        hint = ""
        if err.status in ("404", "StatusCode.NOT_FOUND"):
            hint = f" (is {shown} the server's base URL, with the model {model_name!r} loaded?)"
        raise fail(f"{shown} rejected {doing}: {_one_line(err)}{hint}") from None
    finally:
        if collector.output is not None:
            collector.output.close()
        clients.close()

    fail_if_nothing_classified(collector)
    rate = collector.classified / elapsed if elapsed > 0 else 0.0
    err_console.print(
        f"{collector.classified} image(s) classified by {shown} in {len(sent)} request(s) "
        f"({encoding} encoding, {parsed.transport}, concurrency {concurrency}, {elapsed:.2f} s, "
        f"{rate:.1f} images/s)",
        style="dim",
        highlight=False,
    )
    show_results(
        collector,
        json_output=json_output,
        untrained=untrained,
        plot=plot,
        plot_title=f"{shown} ({encoding} encoding)",
        resumed=len(skip),
    )
    # Said again after the results, which can scroll the first warning away.
    warn_untrained(warning)


def parse_headers(given: list[str]) -> dict[str, str]:
    """`-H NAME:VALUE` options -> {name: value}; a malformed one fails naming it."""
    headers: dict[str, str] = {}
    for item in given:
        name, colon, value = item.partition(":")
        if not colon or not name.strip() or any(c.isspace() for c in name.strip()):
            raise fail(f"-H {item!r}: give NAME:VALUE, e.g. -H 'Seldon-Model: cassava'")
        headers[name.strip()] = value.strip()
    return headers


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


class ClientPool:
    """One `CassavaClient` per thread, made on the thread's first call: tritonclient's REST client runs
    on gevent, whose connections may only be used from the thread that made them."""

    def __init__(self, make: Callable[[], CassavaClient]) -> None:
        self._make = make
        self._local = threading.local()
        self._made: list[CassavaClient] = []
        self._lock = threading.Lock()

    def get(self) -> CassavaClient:
        client: CassavaClient | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._make()
            with self._lock:
                self._made.append(client)
        return client

    def close(self) -> None:
        for client in self._made:
            # A client whose thread has ended may refuse a clean close; the process is leaving anyway.
            with contextlib.suppress(Exception):
                client.close()
        self._made.clear()


def send_chunk(
    client: CassavaClient, examples: list[Example], encoding: Encoding, sent: list[int]
) -> list[Outcome]:
    """One request for `examples`; when the server refuses its content, one request per image, so that
    only the images it refuses are skipped (with its message)."""
    from cassava.client import InferenceRequestError
    from cassava.datasets import Skipped

    if encoding == "tensor":
        return _send_tensor(client, examples, sent)
    sent.append(len(examples))
    try:
        result = client.classify_images([e.encoded for e in examples])
    except InferenceRequestError as err:
        if err.status not in _SPLITTABLE_STATUSES:
            raise
        if len(examples) == 1:
            return [Skipped(examples[0].name, f"{examples[0].name}: the server refused it: {_one_line(err)}")]
        return [outcome for e in examples for outcome in send_chunk(client, [e], encoding, sent)]
    return outcomes(examples, result, {})


def _send_tensor(client: CassavaClient, examples: list[Example], sent: list[int]) -> list[Outcome]:
    """The seed's request: decoded and preprocessed here (a bad image is skipped here), sent as float32."""
    import numpy as np

    from cassava.errors import InputError
    from cassava.pipeline import BatchResult
    from cassava.preprocessing import decode_image, preprocess_pixels
    from cassava.settings import CassavaSettings

    limits = CassavaSettings().limits()
    pixels, errors = [], {}
    for position, example in enumerate(examples):
        try:
            pixels.append(preprocess_pixels(decode_image(example.encoded, limits, where=example.name)))
        except InputError as err:
            errors[position] = err
    result = BatchResult.concatenate([])
    if pixels:
        sent.append(len(pixels))
        result = client.classify_tensor(np.stack(pixels))
    return outcomes(examples, result, errors)


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())
