"""Served runs: closed-loop and open-loop REST and gRPC drivers on one asyncio loop.

Closed loop (`concurrency`): that many workers each send a request, wait for its answer and send the
next, for `warmup` seconds (not counted) and then `duration` seconds (measured). Throughput is what
completed inside the measured window divided by its length; latencies are those of the same requests.

Open loop (`rate`): requests go out at scheduled arrival times whether or not earlier ones have been
answered, as independent users send them. A closed loop slows down with the server and so never sees
the queue a real load builds; here each latency runs from the arrival's scheduled time, so time a
request spent waiting in the client (its loop behind, or the in-flight cap reached) counts too. An
arrival that finds `max_in_flight` requests unanswered is dropped, not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

import numpy as np

from cassava.bench.report import (
    Arrivals,
    BenchReport,
    OpenLoop,
    Record,
    Tick,
    build_report,
    count_errors,
)
from cassava.bench.requests import (
    MAX_DISTINCT_REQUESTS,
    Encoding,
    Prepared,
    batches_of,
    build_request,
    prepare_requests,
)
from cassava.bench.resources import ProcessTree, cpu_seconds
from cassava.client import Target
from cassava.contract import GRPC_MAX_MESSAGE_LENGTH, MODEL_NAME, OUTPUT_INDEX

# After a failed request a worker pauses this long: a refused connection fails in microseconds, and a
# worker spinning on it would measure nothing but its own loop.
ERROR_PAUSE_S = 0.05


class HTTPStatusError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:300].decode(errors='replace')}")
        self.status = status


def error_kind(err: BaseException) -> str:
    """A short, stable name for what went wrong: http_400, grpc_UNAVAILABLE, timeout, connection..."""
    if isinstance(err, HTTPStatusError):
        return f"http_{err.status}"
    status = getattr(err, "status", None)  # tritonclient's InferenceServerException
    if callable(status) and status():
        return "grpc_" + str(status()).removeprefix("StatusCode.")
    code = getattr(err, "code", None)  # grpc.aio.AioRpcError
    if callable(code) and getattr(code(), "name", None):
        return f"grpc_{code().name}"
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
    """ModelInfer calls with requests serialised beforehand (`cassava.bench.requests.grpc_request`) on
    one grpc.aio channel, as tritonclient's aio client makes them, less its per-call protobuf build."""

    METHOD = "/inference.GRPCInferenceService/ModelInfer"

    def __init__(self, target: Target, model: str, timeout_s: float) -> None:
        import grpc
        from tritonclient.grpc import service_pb2

        self.timeout_s = timeout_s
        options = [
            ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_LENGTH),
            ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_LENGTH),
        ]
        self._channel = (
            grpc.aio.secure_channel(target.address, grpc.ssl_channel_credentials(), options=options)
            if target.ssl
            else grpc.aio.insecure_channel(target.address, options=options)
        )
        # No request serialiser: requests are bytes already; the model name is prefixed to each one.
        self._call = self._channel.unary_unary(
            self.METHOD, response_deserializer=service_pb2.ModelInferResponse.FromString
        )
        self._model = bytes(service_pb2.ModelInferRequest(model_name=model).SerializeToString())

    async def send(self, request: bytes) -> int:
        response = await self._call(self._model + request, timeout=self.timeout_s)
        found = [o for o in response.outputs if o.name == OUTPUT_INDEX]
        return int(found[0].shape[0]) if found and found[0].shape else -1

    async def close(self) -> None:
        await self._channel.close()


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
    # Open loop: requests per second at scheduled arrival times (None: closed loop, `concurrency`).
    rate: float | None = None
    arrivals: Arrivals = "constant"
    max_in_flight: int = 256
    seed: int = 0  # of the Poisson arrivals, so two runs offer the same load

    @property
    def open_loop(self) -> OpenLoop | None:
        return None if self.rate is None else OpenLoop(self.rate, self.arrivals, self.max_in_flight)

    def default_label(self, transport: str) -> str:
        load = f"c{self.concurrency}" if self.rate is None else f"{self.rate:g}/s {self.arrivals}"
        return f"{transport} {self.encoding} b{self.batch} {load}"


def arrival_times(load: OpenLoop, duration_s: float, seed: int = 0) -> np.ndarray:
    """Scheduled send times, in seconds from the start, of the arrivals in [0, duration_s): every
    1/rate for constant arrivals; exponential gaps of mean 1/rate for Poisson ones (numpy's generator,
    seeded: the same seed offers the same load)."""
    if duration_s <= 0:
        return np.empty(0)
    if load.arrivals == "constant":
        return np.arange(math.ceil(duration_s * load.rate - 1e-9)) / load.rate
    rng = np.random.default_rng(seed)
    # Draw in blocks until the horizon is passed: the count of a Poisson process is not known ahead.
    times = np.cumsum(rng.exponential(1.0 / load.rate, size=max(16, math.ceil(2 * duration_s * load.rate))))
    while times[-1] < duration_s:
        more = rng.exponential(1.0 / load.rate, size=times.size)
        times = np.concatenate([times, times[-1] + np.cumsum(more)])
    # The process starts at 0 with its first gap; shifted so the first arrival is at 0, as for constant.
    times = np.concatenate([[0.0], times])
    return times[times < duration_s]


Send = Callable[[Prepared], Awaitable[str | None]]
"""Sends one prepared request; returns None when it was answered correctly, else an error kind."""


async def open_loop(
    send: Send,
    prepared: Sequence[Prepared],
    times: Sequence[float],
    *,
    max_in_flight: int,
    origin: float | None = None,
    opens_after_s: float = 0.0,
    drain_s: float = 60.0,
    records: list[Record] | None = None,
) -> list[Record]:
    """Send `prepared` (cycled) at `times` (seconds after `origin`, a `time.monotonic()` reading;
    default: now) and record each arrival. The measured window opens `opens_after_s` after `origin`
    (records' `start` is relative to it). An arrival that finds `max_in_flight` unanswered requests
    is recorded as "dropped" at its time and not sent. After the last arrival, requests still out get
    `drain_s` to finish; then they are cancelled and recorded as "timeout". `records` may be given to
    watch them fill during the run."""
    out = records if records is not None else []
    origin = time.monotonic() if origin is None else origin
    opens = origin + opens_after_s
    in_flight: set[asyncio.Task[None]] = set()

    async def one(request: Prepared, scheduled: float) -> None:
        error: str | None = "timeout"
        try:
            error = await send(request)
        finally:
            # Cancelled at the end of the drain: still recorded, as a timeout.
            out.append(Record(scheduled - opens, time.monotonic() - scheduled, request.images, error))

    for k, offset in enumerate(times):
        scheduled = origin + offset
        delay = scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        request = prepared[k % len(prepared)]
        if len(in_flight) >= max_in_flight:
            out.append(Record(scheduled - opens, 0.0, request.images, "dropped"))
            continue
        task = asyncio.create_task(one(request, scheduled))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        _, pending = await asyncio.wait(set(in_flight), timeout=drain_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return out


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
        label=spec.label or spec.default_label(target.transport),
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
        open_loop=spec.open_loop,
    )


def run_sweep(
    spec: LoadSpec,
    images: Sequence[bytes],
    rates: Sequence[float],
    *,
    server_pid: int | None = None,
    stop_after: Callable[[BenchReport], bool] | None = None,
    on_report: Callable[[BenchReport], None] | None = None,
    on_tick: Tick | None = None,
) -> list[BenchReport]:
    """Open-loop runs of `spec` at each of `rates` in increasing order, against one server: the
    latency-vs-rate curve (`RatePoint.of` each report, `slo_capacity` of the points). `stop_after`
    ends the sweep after the first report it is true for (a rate past the objective: the rates above
    it only queue longer)."""
    if not rates:
        raise ValueError("no rates to sweep: give at least one requests/s figure")
    reports = []
    for rate in sorted(rates):
        report = run_load(replace(spec, rate=rate), images, server_pid=server_pid, on_tick=on_tick)
        reports.append(report)
        if on_report is not None:
            on_report(report)
        if stop_after is not None and stop_after(report):
            break
    return reports


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
    # Open loop: up to `max_in_flight` requests may be out at once, and each needs its own connection.
    connections = spec.concurrency if spec.rate is None else spec.max_in_flight
    sender: _RestSender | _GrpcSender = (
        _RestSender(target, spec.model, connections, spec.timeout_s)
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

    built = 0

    async def send(request: Prepared) -> str | None:
        nonlocal built
        error = None
        try:
            if groups is not None:
                group = groups[built % len(groups)]
                built += 1
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
        return error

    async def worker(k: int) -> None:
        i = k
        while time.monotonic() < closes:
            request = prepared[i % len(prepared)]
            i += spec.concurrency
            sent = time.monotonic()
            error = await send(request)
            out.records.append(Record(sent - opens, time.monotonic() - sent, request.images, error))
            if error is not None:
                await asyncio.sleep(ERROR_PAUSE_S)

    async def arrivals() -> None:
        assert spec.open_loop is not None
        times = arrival_times(spec.open_loop, spec.warmup_s + spec.duration_s, spec.seed)
        await open_loop(
            send,
            prepared,
            times.tolist(),
            max_in_flight=spec.max_in_flight,
            origin=started,
            opens_after_s=spec.warmup_s,
            drain_s=spec.timeout_s + 1,
            records=out.records,
        )

    async def monitor() -> None:
        cpu0 = server0 = t0 = None
        next_rss = opens
        while (now := time.monotonic()) < closes:
            if cpu0 is None and now >= opens:
                t0, cpu0 = now, cpu_seconds()
                server0 = tree.cpu_seconds() if tree else None
            if tree is not None and now >= next_rss:
                out.rss_samples.append((now - opens, tree.rss()))
                next_rss = max(opens, now) + spec.rss_every_s
            if on_tick is not None:
                on_tick(now - started, len(out.records), count_errors(out.records))
            await asyncio.sleep(min(0.25, max(0.0, closes - now)))
        now = time.monotonic()
        if cpu0 is not None and t0 is not None and now > t0:
            out.client_cpu = (cpu_seconds() - cpu0) / (now - t0) / cores
            if tree is not None and server0 is not None:
                out.server_cpu = (tree.cpu_seconds() - server0) / (now - t0) / cores
        if tree is not None:
            out.rss_samples.append((now - opens, tree.rss()))

    try:
        if spec.rate is None:
            workers = [asyncio.create_task(worker(k)) for k in range(spec.concurrency)]
        else:
            workers = [asyncio.create_task(arrivals())]
        watcher = asyncio.create_task(monitor())
        # Bounded: a request still out when the window closes gets its timeout and no more.
        _, pending = await asyncio.wait(
            [*workers, watcher], timeout=spec.warmup_s + spec.duration_s + spec.timeout_s + 5
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if on_tick is not None:
            on_tick(time.monotonic() - started, len(out.records), count_errors(out.records))
    finally:
        await sender.close()
    return out
