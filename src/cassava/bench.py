"""`cassava bench`: a load generator for any V2 endpoint of this model, and the in-process limit.

Served runs: `concurrency` workers on one asyncio loop each send a request, wait for its answer and
send the next, for `warmup` seconds (not counted) and then `duration` seconds (measured). Throughput
is what completed inside the measured window divided by its length; latencies are those of the same
requests. Requests are built before the clock starts (JSON bodies for REST, InferInputs for gRPC), so
the generator spends its CPU on the sockets rather than on `json.dumps`; its own CPU use is reported
all the same, because on a small machine a saturated client looks exactly like a slow server.

The in-process limit runs `Classifier.classify_images` (decode + preprocess + model) in a loop on the
same encoded images: what a server could reach if HTTP, gRPC and MLServer cost nothing.

This module never imports MLServer: it imports tritonclient's gRPC stubs, and the two register the
same protobuf names (see `cassava.contract`). psutil, needed only to watch a server's process tree
(soak runs, server CPU), is imported where it is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import numpy as np

from cassava.client import Target, Transport, images_input, rest_outputs, tensor_input
from cassava.contract import GRPC_MAX_MESSAGE_LENGTH, MODEL_NAME, OUTPUT_INDEX, TENSOR_INPUT
from cassava.preprocessing import Limits, preprocess_images
from cassava.settings import Backend

if TYPE_CHECKING:
    from cassava.pipeline import Classifier

Encoding = Literal["bytes", "tensor"]
Mode = Literal["rest", "grpc", "in-process"]

PERCENTILES = (50, 90, 99)
# After a failed request a worker pauses this long: a refused connection fails in microseconds, and a
# worker spinning on it would measure nothing but its own loop.
ERROR_PAUSE_S = 0.05
# Distinct prepared requests are cycled through; a tensor request of 16 images is 48.8 MB of JSON, so
# only a few of those are kept.
MAX_DISTINCT_REQUESTS = 64
MAX_DISTINCT_TENSOR_REQUESTS = 4

Tick = Callable[[float, int, int], None]
"""Progress callback: (seconds since start, requests completed, errors)."""


# --- images ------------------------------------------------------------------------------------------


def generate_images(
    count: int, size: tuple[int, int] = (640, 480), *, quality: int = 90, seed: int = 0
) -> list[bytes]:
    """`count` different JPEGs of `size` (width, height): smooth leaf-like colour fields with blotches and
    sensor-like grain, so they compress like photos rather than like flat test patterns."""
    from PIL import Image

    width, height = size
    images = []
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # Frequencies are per 640 px so a larger image shows the same scene, not more stripes.
    yy *= 640.0 / max(width, height)
    xx *= 640.0 / max(width, height)
    for i in range(count):
        rng = np.random.default_rng((seed, i))
        pixels = np.empty((height, width, 3), dtype=np.float32)
        for c in range(3):
            fx, fy = rng.uniform(0.002, 0.03, size=2)
            pixels[:, :, c] = rng.uniform(40, 215) + 40 * np.sin(fx * xx + fy * yy + rng.uniform(0, 6.3))
        for _ in range(int(rng.integers(3, 9))):  # lesions: darker or yellower round spots
            cy, cx = rng.uniform(0, 640, size=2)
            radius = rng.uniform(15, 80)
            spot = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
            pixels += spot[:, :, None] * rng.uniform(-70, 50, size=3)
        pixels += rng.normal(0, 6, size=pixels.shape).astype(np.float32)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        images.append(buffer.getvalue())
    return images


def load_images(paths: Sequence[Path]) -> list[bytes]:
    """The bytes of the image files given and of those under the directories given (sorted)."""
    from cassava.datasets import IMAGE_EXTENSIONS
    from cassava.errors import DatasetError

    images: list[bytes] = []
    for path in paths:
        files = (
            sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            if path.is_dir()
            else [path]
        )
        for file in files:
            try:
                images.append(file.read_bytes())
            except OSError as err:
                raise DatasetError(f"cannot read {file}: {err}") from None
    if not images:
        raise DatasetError(f"no images in {', '.join(map(str, paths))}")
    return images


# --- requests ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    payload: Any  # REST: the JSON body; gRPC: the InferInputs; in-process: the encoded images
    images: int
    nbytes: int  # request body (REST) or tensor contents (gRPC)


def seed_request_json(batch: np.ndarray) -> bytes:
    """The seed tutorial's request: `NumpyCodec.encode_input(name="payload", payload=batch)` in a V2
    request, serialised as `requests.post(json=...)` does. Built without MLServer (see module doc)."""
    batch = np.asarray(batch, dtype=np.float32)
    request = {
        "inputs": [
            {
                "name": TENSOR_INPUT,
                "shape": list(batch.shape),
                "datatype": "FP32",
                "parameters": {"content_type": "np"},
                "data": batch.ravel().tolist(),
            }
        ]
    }
    return json.dumps(request).encode()


def batches_of(images: Sequence[bytes], batch: int, limit: int) -> list[list[bytes]]:
    """Consecutive groups of `batch` images, wrapping around, enough to use every image once (at most
    `limit` groups)."""
    if not images:
        raise ValueError("no images to send")
    count = min(limit, max(1, math.ceil(len(images) / batch)))
    return [[images[(k * batch + j) % len(images)] for j in range(batch)] for k in range(count)]


def build_request(group: Sequence[bytes], *, mode: Transport, encoding: Encoding) -> Prepared:
    """One request for `group`, as a client of that transport and encoding builds it."""
    batch = len(group)
    if encoding == "tensor":
        # The seed's client preprocesses the images itself, with the same pipeline as the server.
        tensor = preprocess_images(group, Limits(max_batch_size=max(batch, Limits.max_batch_size)))
        if mode == "rest":
            body = seed_request_json(tensor)
            return Prepared(body, batch, len(body))
        import tritonclient.grpc as grpcclient

        return Prepared([tensor_input(grpcclient, tensor, "grpc")], batch, tensor.nbytes)
    if mode == "rest":
        import tritonclient.http as httpclient

        inputs = [images_input(httpclient, group, "rest")]
        body, _ = httpclient.InferenceServerClient.generate_request_body(
            inputs, outputs=rest_outputs(httpclient)
        )
        return Prepared(body, batch, len(body))
    import tritonclient.grpc as grpcclient

    # Triton's BYTES serialisation: a 4-byte length before each element.
    nbytes = sum(len(data) + 4 for data in group)
    return Prepared([images_input(grpcclient, group, "grpc")], batch, nbytes)


def prepare_requests(
    images: Sequence[bytes], *, mode: Mode, encoding: Encoding = "bytes", batch: int = 1
) -> list[Prepared]:
    """The requests a run cycles through, built before the clock starts (in-process: the groups)."""
    if mode == "in-process":
        return [Prepared(group, batch, sum(map(len, group))) for group in batches_of(images, batch, 10**6)]
    limit = MAX_DISTINCT_TENSOR_REQUESTS if encoding == "tensor" else MAX_DISTINCT_REQUESTS
    return [build_request(group, mode=mode, encoding=encoding) for group in batches_of(images, batch, limit)]


# --- statistics --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    start: float  # seconds since the measured window opened (negative while warming up)
    latency: float  # seconds
    images: int
    error: str | None = None

    @property
    def end(self) -> float:
        return self.start + self.latency


def latency_stats(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99, mean and max in milliseconds (linear interpolation between samples); NaN if empty."""
    keys = [f"p{q}" for q in PERCENTILES] + ["mean", "max"]
    if len(latencies_s) == 0:
        return dict.fromkeys(keys, math.nan)
    ms = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    values = [*np.percentile(ms, PERCENTILES), ms.mean(), ms.max()]
    return {key: float(value) for key, value in zip(keys, values, strict=True)}


@dataclass
class Window:
    start_s: float
    end_s: float
    requests: int
    images: int
    errors: int
    images_per_s: float
    latency_ms: dict[str, float]
    rss_mb: float | None = None


@dataclass
class BenchReport:
    label: str
    mode: Mode
    target: str
    encoding: Encoding
    batch: int
    concurrency: int
    warmup_s: float
    duration_s: float
    requests: int
    images: int
    errors: dict[str, int]
    images_per_s: float
    requests_per_s: float
    latency_ms: dict[str, float]
    request_bytes_per_image: float | None
    client_cpu: float  # this process's CPU time / wall time / cores: 1.0 = every core busy
    cores: int
    server_cpu: float | None = None  # the same for the server's process tree, when it is known
    windows: list[Window] = field(default_factory=list)
    rss_samples: list[tuple[float, int]] = field(default_factory=list)  # (s since window opened, bytes)
    rss_growth_pct: float | None = None
    error_examples: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # backend, server settings, cold start, ...

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rss_growth_pct(samples: Sequence[tuple[float, int]]) -> float | None:
    """Growth of the resident set from just after warm-up to the end, in percent: the mean of the last
    three samples against the mean of the first three, so one noisy sample does not decide it."""
    after = [rss for t, rss in samples if t >= 0]
    if len(after) < 2:
        return None
    k = min(3, len(after) // 2)
    first, last = float(np.mean(after[:k])), float(np.mean(after[-k:]))
    return (last - first) / first * 100.0 if first > 0 else None


def build_report(
    records: Sequence[Record],
    *,
    label: str,
    mode: Mode,
    target: str,
    encoding: Encoding,
    batch: int,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    request_bytes_per_image: float | None = None,
    client_cpu: float = math.nan,
    server_cpu: float | None = None,
    window_s: float | None = None,
    rss_samples: Sequence[tuple[float, int]] = (),
    error_examples: dict[str, str] | None = None,
    info: dict[str, Any] | None = None,
) -> BenchReport:
    """Summarise the records that completed inside the measured window [0, duration_s]."""
    measured = [r for r in records if 0.0 <= r.end <= duration_s]
    ok = [r for r in measured if r.error is None]
    errors = dict(Counter(r.error for r in measured if r.error is not None))
    images = sum(r.images for r in ok)
    window_s = window_s or max(1.0, duration_s / 10)
    windows = []
    for k in range(max(1, math.ceil(duration_s / window_s - 1e-9))):
        start, end = k * window_s, min(duration_s, (k + 1) * window_s)
        inside = [r for r in measured if start <= r.end < end or (end == duration_s and r.end == end)]
        good = [r for r in inside if r.error is None]
        rss = [b for t, b in rss_samples if start <= t <= end]
        windows.append(
            Window(
                start_s=start,
                end_s=end,
                requests=len(inside),
                images=sum(r.images for r in good),
                errors=len(inside) - len(good),
                images_per_s=sum(r.images for r in good) / (end - start) if end > start else math.nan,
                latency_ms=latency_stats([r.latency for r in good]),
                rss_mb=rss[-1] / 2**20 if rss else None,
            )
        )
    return BenchReport(
        label=label,
        mode=mode,
        target=target,
        encoding=encoding,
        batch=batch,
        concurrency=concurrency,
        warmup_s=warmup_s,
        duration_s=duration_s,
        requests=len(ok),
        images=images,
        errors=errors,
        images_per_s=images / duration_s,
        requests_per_s=len(ok) / duration_s,
        latency_ms=latency_stats([r.latency for r in ok]),
        request_bytes_per_image=request_bytes_per_image,
        client_cpu=client_cpu,
        cores=os.cpu_count() or 1,
        server_cpu=server_cpu,
        windows=windows,
        rss_samples=list(rss_samples),
        rss_growth_pct=rss_growth_pct(rss_samples),
        error_examples=error_examples or {},
        info=info or {},
    )


def _failed(records: Sequence[Record]) -> int:
    return sum(r.error is not None for r in records)


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class ProcessTree:
    """A server process and all its descendants (MLServer's parallel workers)."""

    def __init__(self, pid: int) -> None:
        import psutil

        self._psutil = psutil
        self.root = psutil.Process(pid)

    def _members(self) -> list[Any]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except self._psutil.NoSuchProcess:
            return []

    def rss(self) -> int:
        total = 0
        for proc in self._members():
            with contextlib.suppress(self._psutil.Error):
                total += proc.memory_info().rss
        return total

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self._members():
            with contextlib.suppress(self._psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total


# --- served runs -------------------------------------------------------------------------------------


class HTTPStatusError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:300].decode(errors='replace')}")
        self.status = status


def error_kind(err: BaseException) -> str:
    """A short, stable name for what went wrong: http_400, grpc_UNAVAILABLE, timeout, connection..."""
    if isinstance(err, HTTPStatusError):
        return f"http_{err.status}"
    status = getattr(err, "status", None)
    if callable(status) and status():
        return "grpc_" + str(status()).removeprefix("StatusCode.")
    if isinstance(err, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    if isinstance(err, ConnectionError | OSError):
        return "connection"
    return type(err).__name__


class _RestSender:
    def __init__(self, target: Target, model: str, concurrency: int, timeout_s: float) -> None:
        import aiohttp

        scheme = "https" if target.ssl else "http"
        self.url = f"{scheme}://{target.address}/v2/models/{quote(model)}/infer"
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        )

    async def send(self, body: bytes) -> int:
        async with self._session.post(
            self.url, data=body, headers={"Content-Type": "application/json"}
        ) as response:
            answer = await response.read()
            if response.status != 200:
                raise HTTPStatusError(response.status, answer)
        outputs = json.loads(answer).get("outputs", [])
        found = [o for o in outputs if o.get("name") == OUTPUT_INDEX]
        return len(found[0].get("data", [])) if found else -1

    async def close(self) -> None:
        await self._session.close()


class _GrpcSender:
    def __init__(self, target: Target, model: str, timeout_s: float) -> None:
        import tritonclient.grpc.aio as grpcaio

        self.model = model
        self.timeout_s = timeout_s
        self._client = grpcaio.InferenceServerClient(
            target.address,
            ssl=target.ssl,
            channel_args=[
                ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_LENGTH),
                ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_LENGTH),
            ],
        )

    async def send(self, inputs: list[Any]) -> int:
        result = await self._client.infer(self.model, inputs, client_timeout=self.timeout_s)
        index = result.as_numpy(OUTPUT_INDEX)
        return -1 if index is None else int(np.asarray(index).size)

    async def close(self) -> None:
        await self._client.close()


@dataclass(frozen=True)
class LoadSpec:
    target: str  # http(s)://host:port[/prefix] or grpc://host:port
    encoding: Encoding = "bytes"
    batch: int = 1
    concurrency: int = 1
    duration_s: float = 10.0
    warmup_s: float = 2.0
    timeout_s: float = 60.0
    model: str = MODEL_NAME
    window_s: float | None = None  # per-window statistics; default: a tenth of the duration
    rss_every_s: float = 5.0  # with a server pid: how often to sample its resident memory
    # Build every request inside the timed loop (preprocessing and JSON encoding included, in a thread),
    # as the seed's test.py does, instead of cycling through requests built beforehand.
    encode_each: bool = False
    label: str = ""


def run_load(
    spec: LoadSpec,
    images: Sequence[bytes],
    *,
    server_pid: int | None = None,
    on_tick: Tick | None = None,
    info: dict[str, Any] | None = None,
) -> BenchReport:
    """Drive `spec.target` with `images` and summarise what completed in the measured window."""
    target = Target.parse(spec.target)
    prepared = prepare_requests(images, mode=target.transport, encoding=spec.encoding, batch=spec.batch)
    bytes_per_image = sum(p.nbytes for p in prepared) / sum(p.images for p in prepared)
    info = dict(info or {})
    tree = None
    if server_pid:
        try:
            tree = ProcessTree(server_pid)
        except ImportError:  # psutil is an optional extra (`data`)
            info["note"] = "psutil is not installed: the server's memory and CPU were not sampled"
    groups = batches_of(images, spec.batch, MAX_DISTINCT_REQUESTS) if spec.encode_each else None
    measured = asyncio.run(_drive(spec, target, prepared, tree, on_tick, groups))
    return build_report(
        measured.records,
        label=spec.label or f"{target.transport} {spec.encoding} b{spec.batch} c{spec.concurrency}",
        mode=target.transport,
        target=spec.target,
        encoding=spec.encoding,
        batch=spec.batch,
        concurrency=spec.concurrency,
        warmup_s=spec.warmup_s,
        duration_s=spec.duration_s,
        request_bytes_per_image=bytes_per_image,
        client_cpu=measured.client_cpu,
        server_cpu=measured.server_cpu,
        window_s=spec.window_s,
        rss_samples=measured.rss_samples,
        error_examples=measured.error_examples,
        info={**info, "encode_each": spec.encode_each, **({"server_pid": server_pid} if server_pid else {})},
    )


@dataclass
class _Measured:
    records: list[Record] = field(default_factory=list)
    error_examples: dict[str, str] = field(default_factory=dict)
    client_cpu: float = math.nan
    server_cpu: float | None = None
    rss_samples: list[tuple[float, int]] = field(default_factory=list)


async def _drive(
    spec: LoadSpec,
    target: Target,
    prepared: Sequence[Prepared],
    tree: ProcessTree | None,
    on_tick: Tick | None,
    groups: Sequence[Sequence[bytes]] | None = None,
) -> _Measured:
    sender: _RestSender | _GrpcSender = (
        _RestSender(target, spec.model, spec.concurrency, spec.timeout_s)
        if target.transport == "rest"
        else _GrpcSender(target, spec.model, spec.timeout_s)
    )
    out = _Measured()
    cores = os.cpu_count() or 1
    # One request before the clock starts: a backend's first call at a new batch shape (TensorFlow
    # traces its graph) can take longer than the whole warm-up. Its failure shows again in the run.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(sender.send(prepared[0].payload), spec.timeout_s)
    started = time.monotonic()
    opens = started + spec.warmup_s
    closes = opens + spec.duration_s

    async def worker(k: int) -> None:
        i = k
        while time.monotonic() < closes:
            request = prepared[i % len(prepared)]
            i += spec.concurrency
            sent = time.monotonic()
            error = None
            try:
                if groups is not None:
                    group = groups[i % len(groups)]
                    request = await asyncio.to_thread(
                        build_request, group, mode=target.transport, encoding=spec.encoding
                    )
                answered = await sender.send(request.payload)
                if answered != request.images:
                    error = "bad_response"
                    out.error_examples.setdefault(error, f"{answered} results for {request.images} images")
            except Exception as err:  # every failure is counted by kind, none stops the run
                error = error_kind(err)
                out.error_examples.setdefault(error, str(err)[:300])
            now = time.monotonic()
            out.records.append(Record(sent - opens, now - sent, request.images, error))
            if error is not None:
                await asyncio.sleep(ERROR_PAUSE_S)

    async def monitor() -> None:
        cpu0 = server0 = t0 = None
        next_rss = opens
        while (now := time.monotonic()) < closes:
            if cpu0 is None and now >= opens:
                t0, cpu0 = now, _cpu_seconds()
                server0 = tree.cpu_seconds() if tree else None
            if tree is not None and now >= next_rss:
                out.rss_samples.append((now - opens, tree.rss()))
                next_rss = max(opens, now) + spec.rss_every_s
            if on_tick is not None:
                on_tick(now - started, len(out.records), _failed(out.records))
            await asyncio.sleep(min(0.25, max(0.0, closes - now)))
        now = time.monotonic()
        if cpu0 is not None and t0 is not None and now > t0:
            out.client_cpu = (_cpu_seconds() - cpu0) / (now - t0) / cores
            if tree is not None and server0 is not None:
                out.server_cpu = (tree.cpu_seconds() - server0) / (now - t0) / cores
        if tree is not None:
            out.rss_samples.append((now - opens, tree.rss()))

    try:
        workers = [asyncio.create_task(worker(k)) for k in range(spec.concurrency)]
        watcher = asyncio.create_task(monitor())
        # Bounded: a request still out when the window closes gets its timeout and no more.
        _, pending = await asyncio.wait(
            [*workers, watcher], timeout=spec.warmup_s + spec.duration_s + spec.timeout_s + 5
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if on_tick is not None:
            on_tick(
                time.monotonic() - started, len(out.records), sum(r.error is not None for r in out.records)
            )
    finally:
        await sender.close()
    return out


# --- the in-process limit ----------------------------------------------------------------------------


def run_in_process(
    images: Sequence[bytes],
    *,
    model_dir: Path,
    backend: Backend = "tensorflow",
    batch: int = 1,
    duration_s: float = 10.0,
    warmup_s: float = 2.0,
    threads: int = 0,
    fast_decode: bool = False,
    window_s: float | None = None,
    label: str = "",
    on_tick: Tick | None = None,
    classifier: Classifier | None = None,
) -> BenchReport:
    """`Classifier.classify_images` in a loop: decode + preprocess + model, no server. A `classifier`
    already loaded (with limits that admit `batch`) is used as it is; its load time is not counted."""
    from cassava.pipeline import Classifier

    loading = time.monotonic()
    if classifier is None:
        classifier = Classifier.load(
            model_dir,
            backend,
            threads=threads,
            limits=Limits(max_batch_size=max(batch, Limits.max_batch_size), fast_decode=fast_decode),
        )
    load_s = time.monotonic() - loading
    groups = prepare_requests(images, mode="in-process", batch=batch)
    # As for served runs: the first call at a batch shape is not the steady state (graph tracing).
    with contextlib.suppress(Exception):
        classifier.classify_images(groups[0].payload)
    records: list[Record] = []
    started = time.monotonic()
    opens, closes = started + warmup_s, started + warmup_s + duration_s
    cpu0 = t0 = None
    i = 0
    while (now := time.monotonic()) < closes:
        if cpu0 is None and now >= opens:
            t0, cpu0 = now, _cpu_seconds()
        group = groups[i % len(groups)]
        i += 1
        sent = time.monotonic()
        error = None
        try:
            classifier.classify_images(group.payload)
        except Exception as err:  # counted like a served error, so a bad image set is visible
            error = type(err).__name__
        records.append(Record(sent - opens, time.monotonic() - sent, group.images, error))
        if on_tick is not None:
            on_tick(time.monotonic() - started, len(records), _failed(records))
    end = time.monotonic()
    cores = os.cpu_count() or 1
    client_cpu = (_cpu_seconds() - cpu0) / (end - t0) / cores if cpu0 is not None and t0 else math.nan
    return build_report(
        records,
        label=label or f"in-process {backend} b{batch}",
        mode="in-process",
        target=str(model_dir),
        encoding="bytes",
        batch=batch,
        concurrency=1,
        warmup_s=warmup_s,
        duration_s=duration_s,
        client_cpu=client_cpu,
        window_s=window_s,
        info={
            "backend": backend,
            "threads": threads,
            "fast_decode": fast_decode,
            "load_s": load_s,
            "untrained": classifier.info.untrained,
        },
    )


# --- a server of our own -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerConfig:
    """How `cassava bench` (and the matrix) start a server: cassava's runtime options, MLServer's
    parallel workers and adaptive batching (`adaptive_batch_size` requests per merged batch, waiting
    at most `adaptive_batch_time` seconds; 0 = off)."""

    backend: Backend = "tensorflow"
    workers: int | None = None  # None: the project's default (cassava.server_config)
    adaptive_batch_size: int = 0
    adaptive_batch_time: float = 0.0
    threads: int | None = None
    fast_decode: bool = False

    @property
    def label(self) -> str:
        from cassava.server_config import DEFAULT_PARALLEL_WORKERS

        workers = DEFAULT_PARALLEL_WORKERS if self.workers is None else self.workers
        batching = (
            f"batch {self.adaptive_batch_size}/{self.adaptive_batch_time * 1000:g}ms"
            if self.adaptive_batch_size > 1
            else "no batching"
        )
        threads = "" if self.threads is None else f", {self.threads} thr"
        return f"{self.backend}, {workers} workers, {batching}{threads}"

    def extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"backend": self.backend}
        if self.threads is not None:
            extra["inference_threads"] = self.threads
        if self.fast_decode:
            extra["fast_decode"] = True
        return extra

    def options(self) -> dict[str, Any]:
        if self.adaptive_batch_size <= 1:
            return {}
        return {"max_batch_size": self.adaptive_batch_size, "max_batch_time": self.adaptive_batch_time}

    def server(self) -> dict[str, Any]:
        return {} if self.workers is None else {"parallel_workers": self.workers}


@dataclass
class StartedServer:
    process: Any  # cassava.server_process.ServerProcess
    cold_start_s: float

    def target(self, transport: Transport) -> str:
        return self.process.http_url if transport == "rest" else f"grpc://{self.process.grpc_target}"

    def stop(self) -> None:
        self.process.stop()


def start_server(
    workdir: Path, model_dir: Path, config: ServerConfig, *, timeout_s: float = 180.0
) -> StartedServer:
    """Start `mlserver start` on free ports with `config`; cold start = process start to ready."""
    from cassava.server_process import ServerProcess

    process = ServerProcess.for_model(
        workdir,
        model_dir=model_dir,
        extra=config.extra(),
        server=config.server(),
        options=config.options(),
    )
    started = time.monotonic()
    process.start(timeout=timeout_s)
    return StartedServer(process, time.monotonic() - started)
