"""`cassava bench`: load-test any V2 endpoint of the model, or measure the in-process limit.

    cassava bench http://localhost:8080 --concurrency 8             # REST, one generated JPEG a request
    cassava bench http://localhost:8080 --rate 20                   # open loop: 20 requests/s
    cassava bench --backend onnx --rate 5,10,20,40 --slo-ms 250     # latency-vs-rate sweep, server here
    cassava bench grpc://localhost:8081 --batch 16 --images photos/
    cassava bench http://HOST/seldon/NS/cassava --encoding tensor --batch 16   # the seed's request
    cassava bench --in-process --backend onnx --batch 16            # no server: the pipeline's limit
    cassava bench --backend onnx --workers 2 --soak --duration 600  # start a server here and soak it

Without a TARGET (and without --in-process) it starts `mlserver start` here with the options given,
measures its cold start, runs against it and stops it. `--concurrency` (closed loop: that many requests
always in flight) is the default; `--rate` (open loop: requests sent at scheduled arrival times, each
latency counted from its scheduled time) shows the queueing a real load builds. `make bench` runs the
whole matrix (`python -m benchmarks`, in the repository only) and writes docs/performance.md.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from cassava.cli._bench_output import ProgressBar, ms, show, show_curve
from cassava.cli._common import console, fail, reports_errors, warn_untrained
from cassava.client import Transport
from cassava.settings import Backend, CassavaSettings, Profile

if TYPE_CHECKING:
    from collections.abc import Callable

    from cassava.bench import BenchReport, LoadSpec, ServerConfig


@reports_errors
def bench(
    target: str = typer.Argument(
        None,
        help="http(s)://HOST:PORT, optionally with a path prefix (Seldon, KServe), or grpc://HOST:PORT. "
        "Omitted: start a server here.",
        show_default=False,
    ),
    images: list[Path] = typer.Option(
        None, "--images", help="Image files or directories to send (repeatable).", show_default=False
    ),
    generate: int = typer.Option(32, "--generate", min=1, help="Without --images: generate N JPEGs."),
    size: str = typer.Option("640x480", "--size", help="WxH of the generated JPEGs."),
    quality: int = typer.Option(90, "--quality", min=1, max=100, help="JPEG quality of generated images."),
    batch: int = typer.Option(1, "--batch", min=1, help="Images per request."),
    concurrency: int = typer.Option(
        None, "--concurrency", "-c", min=1, help="Closed loop: requests in flight. [default: 1]"
    ),
    rate: str = typer.Option(
        None,
        "--rate",
        help="Open loop: requests per second, sent on schedule whether or not earlier ones have "
        "answered. A comma-separated list sweeps the rates in turn (latency against rate).",
        show_default=False,
    ),
    arrivals: str = typer.Option(
        "constant", "--arrivals", help="With --rate: constant spacing, or poisson (random gaps)."
    ),
    max_in_flight: int = typer.Option(
        256,
        "--max-in-flight",
        min=1,
        help="With --rate: most unanswered requests; an arrival beyond them is dropped, not sent.",
    ),
    slo_ms: float = typer.Option(
        None,
        "--slo-ms",
        min=0.001,
        help="With a --rate list: the p99 objective the sweep reports the highest rate within; it "
        "stops after the first rate beyond twice the objective. [default: 250]",
    ),
    duration: float = typer.Option(10.0, "--duration", min=0.1, help="Measured seconds."),
    warmup: float = typer.Option(2.0, "--warmup", min=0.0, help="Seconds of load before measuring."),
    encoding: str = typer.Option(
        "bytes",
        "--encoding",
        help="bytes: the image files (the server decodes them); tensor: the seed's float32 request, "
        "preprocessed here.",
    ),
    timeout: float = typer.Option(60.0, "--timeout", min=0.1, help="Seconds before a request fails."),
    encode_each: bool = typer.Option(
        False,
        "--encode-each",
        help="Build every request in the timed loop (preprocessing, JSON), as the seed's test.py does, "
        "instead of sending requests built beforehand.",
    ),
    in_process: bool = typer.Option(
        False, "--in-process", help="No server: Classifier.classify_images (decode + preprocess + model)."
    ),
    model: Path = typer.Option(
        None,
        "--model",
        help="Model directory (in-process or a server started here). Default: CASSAVA_MODEL_DIR, else "
        "the cache.",
    ),
    backend: Backend = typer.Option(
        None,
        "--backend",
        help="Backend (in-process or started here). Default: CASSAVA_BACKEND, else tensorflow.",
    ),
    threads: int = typer.Option(
        None,
        "--threads",
        min=0,
        help="Inference threads per worker / in-process (0: backend default). Default: "
        "CASSAVA_INFERENCE_THREADS.",
    ),
    fast_decode: bool = typer.Option(
        False,
        "--fast-decode",
        help="Approximate JPEG decoding by DCT scaling (in-process or started here). Default: "
        "CASSAVA_FAST_DECODE.",
    ),
    profile: Profile = typer.Option(
        None,
        "--profile",
        help="Start the server here with a serving profile's workers and batching (latency, "
        "throughput); --workers and --adaptive-batch-size given as well override it.",
    ),
    workers: int = typer.Option(None, "--workers", min=0, help="Parallel workers of a server started here."),
    transport: str = typer.Option("rest", "--transport", help="rest or grpc, for a server started here."),
    adaptive_batch_size: int = typer.Option(
        0,
        "--adaptive-batch-size",
        min=0,
        help="MLServer adaptive batching of a server started here: most requests merged (0 = off).",
    ),
    adaptive_batch_time: float = typer.Option(
        0.01, "--adaptive-batch-time", min=0.0, help="Longest wait, in seconds, to fill an adaptive batch."
    ),
    soak: bool = typer.Option(
        False, "--soak", help="Report per time window, with the server's resident memory over time."
    ),
    window: float = typer.Option(
        None, "--window", min=0.1, help="Window length in seconds. Default: 60 with --soak, else duration/10."
    ),
    server_pid: int = typer.Option(
        None, "--server-pid", help="PID of the server (its process tree's RSS and CPU are sampled)."
    ),
    sample_every: float = typer.Option(5.0, "--sample-every", min=0.1, help="RSS sampling period, seconds."),
    json_out: Path = typer.Option(None, "--json", help="Write the report as JSON.", show_default=False),
    chart: Path = typer.Option(None, "--chart", help="Write a PNG chart.", show_default=False),
) -> None:
    """Measure images/s, requests/s, latency percentiles and errors of an endpoint (or in-process)."""
    from cassava import bench as b

    if rate is not None and concurrency is not None:
        raise fail(
            "give --rate (open loop: requests sent at a fixed rate) or --concurrency (closed loop: "
            "a fixed number of requests in flight), not both"
        )
    rates = _rates(rate)
    if arrivals not in ("constant", "poisson"):
        raise fail(f"--arrivals must be constant or poisson, not {arrivals!r}")
    if rates and in_process:
        raise fail("--rate loads a server; --in-process has none (use --batch and --duration)")
    if slo_ms is not None and len(rates) < 2:
        raise fail("--slo-ms judges a sweep: give --rate a comma-separated list of rates")
    concurrency = concurrency or 1
    # A flag beats its CASSAVA_* variable, which beats the default; a server started here reads the
    # variables itself, so only the flags given are passed on to it.
    settings = CassavaSettings().with_flags(
        model_dir=model, backend=backend, inference_threads=threads, fast_decode=fast_decode or None
    )

    if encoding not in ("bytes", "tensor"):
        raise fail(f"--encoding must be bytes or tensor, not {encoding!r}")
    if transport not in ("rest", "grpc"):
        raise fail(f"--transport must be rest or grpc, not {transport!r}")
    if in_process and target:
        raise fail("give a TARGET or --in-process, not both")
    if in_process and encoding == "tensor":
        raise fail("--in-process measures the encoded images' pipeline; --encoding tensor needs a server")
    window_s = window or (60.0 if soak else None)
    data = _images(images, generate, size, quality)
    load = (
        f"concurrency {concurrency}"
        if not rates
        else f"{', '.join(f'{r:g}' for r in rates)} requests/s "
        f"({arrivals}, at most {max_in_flight} in flight)"
    )
    console.print(
        f"{len(data)} images, {sum(map(len, data)) / len(data) / 1024:.0f} KiB each on average; "
        f"batch {batch}, {load}, warm-up {warmup:g} s, measured {duration:g} s"
    )
    if in_process:
        with ProgressBar(warmup + duration) as tick:
            report = b.run_in_process(
                data,
                model_dir=settings.model_directory(),
                backend=settings.backend,
                batch=batch,
                duration_s=duration,
                warmup_s=warmup,
                threads=settings.inference_threads,
                limits=settings.limits(),
                window_s=window_s,
                on_tick=tick,
            )
    else:
        spec = b.LoadSpec(
            target=target or "",
            encoding="tensor" if encoding == "tensor" else "bytes",
            batch=batch,
            concurrency=concurrency,
            duration_s=duration,
            warmup_s=warmup,
            timeout_s=timeout,
            window_s=window_s,
            rss_every_s=sample_every,
            encode_each=encode_each,
            rate=rates[0] if rates else None,
            arrivals="poisson" if arrivals == "poisson" else "constant",
            max_in_flight=max_in_flight,
        )
        config = b.ServerConfig.from_options(
            settings.backend,
            profile=profile,
            workers=workers,
            adaptive_batch_size=adaptive_batch_size,
            adaptive_batch_time=adaptive_batch_time,
            threads=threads,
            fast_decode=fast_decode,
        )
        served: Transport = "grpc" if transport == "grpc" else "rest"
        if len(rates) > 1:
            sweep = _Sweep(spec, data, rates, b.DEFAULT_SLO_MS if slo_ms is None else slo_ms)
            if target:
                sweep(target, server_pid)
            else:
                _self_served(sweep, config, settings.model_directory(), served)
            sweep.finish(json_out, chart)
            return
        if target:
            if soak and server_pid is None:
                console.print("[yellow]no --server-pid: the server's memory is not sampled[/]")
            report = _served(spec, data, server_pid)
        else:
            one = _One(spec, data)
            _self_served(one, config, settings.model_directory(), served)
            assert one.report is not None
            report = one.report
    show(report, windows=soak)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        console.print(f"wrote {json_out}")
    if chart is not None:
        from cassava.plotting import plot_benchmark

        console.print(f"wrote {plot_benchmark([report.to_dict()], chart)}")
    if report.requests == 0:
        raise typer.Exit(1)


def _images(paths: list[Path] | None, generate: int, size: str, quality: int) -> list[bytes]:
    from cassava import bench as b

    if paths:
        return b.load_images(paths)
    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise fail(f"--size must be WIDTHxHEIGHT, e.g. 640x480, not {size!r}") from None
    if width < 1 or height < 1:
        raise fail(f"--size must be positive, not {size!r}")
    return b.generate_images(generate, (width, height), quality=quality)


def _rates(text: str | None) -> list[float]:
    """`--rate 20` or `--rate 5,10,20`: positive requests/s figures, in increasing order."""
    if text is None:
        return []
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise fail(f"--rate takes requests per second, e.g. 20 or 5,10,20, not {text!r}") from None
    if not rates or any(not (r > 0 and math.isfinite(r)) for r in rates):
        raise fail(f"--rate figures must be positive requests per second, not {text!r}")
    return sorted(set(rates))


def _served(spec: LoadSpec, data: list[bytes], server_pid: int | None) -> BenchReport:
    from cassava import bench as b

    with ProgressBar(spec.warmup_s + spec.duration_s) as tick:
        return b.run_load(spec, data, server_pid=server_pid, on_tick=tick)


class _One:
    """One run against the target a server of the bench's own gives it."""

    def __init__(self, spec: LoadSpec, data: list[bytes]) -> None:
        self.spec, self.data = spec, data
        self.report: BenchReport | None = None

    def __call__(self, target: str, server_pid: int | None) -> list[BenchReport]:

        self.report = _served(replace(self.spec, target=target), self.data, server_pid)
        return [self.report]


class _Sweep:
    """Open-loop runs at each rate against one server, stopping after the first beyond twice the
    objective; then the curve, the highest rate within the objective, and where p99 crosses it."""

    def __init__(self, spec: LoadSpec, data: list[bytes], rates: list[float], slo_ms: float) -> None:
        self.spec, self.data, self.rates, self.slo_ms = spec, data, rates, slo_ms
        self.reports: list[BenchReport] = []

    def __call__(self, target: str, server_pid: int | None) -> list[BenchReport]:

        from cassava import bench as b

        def beyond(report: BenchReport) -> bool:
            return b.past_the_knee(report, self.slo_ms)

        def shown(report: BenchReport) -> None:
            point = b.RatePoint.of(report)
            console.print(
                f"{point.rate:g} requests/s: achieved {point.achieved_rate:,.2f}/s, p50 / p99 "
                f"{ms(point.latency_ms['p50'])} / {ms(point.latency_ms['p99'])} ms, "
                f"{point.drops} dropped, {point.errors} errors"
            )

        with ProgressBar(self.spec.warmup_s + self.spec.duration_s) as tick:
            self.reports = b.run_sweep(
                replace(self.spec, target=target),
                self.data,
                self.rates,
                server_pid=server_pid,
                stop_after=beyond,
                on_report=shown,
                on_tick=tick,
            )
        return self.reports

    def finish(self, json_out: Path | None, chart: Path | None) -> None:
        from cassava import bench as b

        points = [b.RatePoint.of(r) for r in self.reports]
        capacity = b.slo_capacity(points, self.slo_ms)
        show_curve(points, capacity)
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            data = {
                "points": [p.to_dict() for p in points],
                "capacity": capacity.to_dict(),
                "reports": [r.to_dict() for r in self.reports],
            }
            json_out.write_text(json.dumps(data, indent=2) + "\n")
            console.print(f"wrote {json_out}")
        if chart is not None:
            from cassava.plotting import plot_latency_vs_rate

            written = plot_latency_vs_rate([p.to_dict() for p in points], chart, capacity.to_dict())
            console.print(f"wrote {written}")
        if not any(p.answered for p in points):
            raise typer.Exit(1)


def _self_served(
    run: Callable[[str, int | None], list[BenchReport]],
    config: ServerConfig,
    model_dir: Path,
    transport: Transport,
) -> None:
    """Start a server of the bench's own, call `run(target, pid)` against it, stop it; each report
    notes the server and its cold start."""
    from cassava import bench as b
    from cassava.backends import artifact_file
    from cassava.model_store import read_info

    model_dir = model_dir.resolve()
    info = read_info(model_dir, need=artifact_file(config.backend))
    warn_untrained(info.warning)
    with tempfile.TemporaryDirectory(prefix="cassava-bench-") as workdir:
        console.print(f"starting a server: {config.label}")
        server = b.start_server(Path(workdir), model_dir, config)
        try:
            console.print(f"ready after {server.cold_start_s:.1f} s (pid {server.process.pid})")
            reports = run(server.target(transport), server.process.pid)
        finally:
            server.stop()
    for report in reports:
        report.info.update(server=config.label, cold_start_s=server.cold_start_s)
