"""Measuring: the model copy (with its ONNX export), the in-process and model-only runs, every server of
the plan under load, and `run_matrix`, which gathers them into one results dict.

The generator process never imports MLServer (it uses tritonclient's gRPC stubs); the in-process and
decode measurements run in spawned child processes so TensorFlow's and ONNX Runtime's thread pools
do not linger in the load generator.
"""

from __future__ import annotations

import math
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from benchmarks.analysis import defaults, rate_curve, targets
from benchmarks.control import CONTROL_LABEL, start_control
from benchmarks.decode import decode_benchmark
from benchmarks.environment import cpu_ticks, machine, steal_share, versions, wait_for_quiet
from benchmarks.plan import (
    BENCH_EXPORT_TOLERANCE,
    CONTROL,
    FULL,
    IMAGE_COUNT,
    IMAGE_QUALITY,
    IMAGE_SIZE,
    PAIRED_ROUNDS,
    PAIRED_WINDOW,
    QUICK,
    QUICK_PAIRED_ROUNDS,
    QUICK_SWEEP_FRACTIONS,
    REGENERATE,
    SEED_BATCH,
    SLO_MS,
    SWEEP_FRACTIONS,
    SWEEP_TIMEOUT_S,
    ServerPlan,
    Timing,
    paired_reference,
    paired_schedule,
    server_plan,
)
from cassava.bench import (
    BenchReport,
    LoadSpec,
    ProcessTree,
    RatePoint,
    StartedServer,
    generate_images,
    past_the_knee,
    run_in_process,
    run_load,
    run_sweep,
    start_server,
)
from cassava.settings import Backend


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def in_child(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def prepare_model(source: Path, workdir: Path, notes: list[str]) -> tuple[Path, list[Backend]]:
    """A writable copy of `source` with its ONNX export next to it when `cassava.export` can make one."""
    from cassava.model_store import ONNX_FILE, SAVED_MODEL_FILE

    model_dir = workdir / "model"
    stale = not (model_dir / SAVED_MODEL_FILE).is_file() or (
        (source / SAVED_MODEL_FILE).read_bytes() != (model_dir / SAVED_MODEL_FILE).read_bytes()
    )
    if stale:
        shutil.rmtree(model_dir, ignore_errors=True)
        shutil.copytree(source, model_dir)
        for path in [model_dir, *model_dir.rglob("*")]:  # the shared copy is read-only
            path.chmod(path.stat().st_mode | 0o200)
    backends: list[Backend] = ["tensorflow"]
    if (source / ONNX_FILE).is_file() and not (model_dir / ONNX_FILE).is_file():
        shutil.copy2(source / ONNX_FILE, model_dir / ONNX_FILE)
    if not (model_dir / ONNX_FILE).is_file():
        try:
            from cassava.export import export_onnx
        except ImportError:
            notes.append("ONNX Runtime skipped: `cassava.export` (the ONNX export) is not available yet.")
            return model_dir, backends
        log("exporting the model to ONNX (cached in the work folder)")
        try:
            # Untrained weights push CropNet's logits to +-500, where float32 rounding alone moves
            # probabilities by ~1e-4 (docs/onnx.md); the export still refuses any class change.
            in_child(export_onnx, model_dir, tolerance=BENCH_EXPORT_TOLERANCE)
        except Exception as err:
            notes.append(f"ONNX Runtime skipped: the export failed ({type(err).__name__}: {err}).")
            return model_dir, backends
    if (model_dir / ONNX_FILE).is_file():
        backends.append("onnx")
    else:
        notes.append(f"ONNX Runtime skipped: the export wrote no {ONNX_FILE} in {model_dir}.")
    return model_dir, backends


def in_process_runs(
    model_dir: Path, backend: Backend, images: list[bytes], batches: Sequence[int], timing: Timing
) -> list[dict[str, Any]]:
    """Each batch size on one loaded classifier (run in a child process, one per backend)."""
    from cassava.pipeline import Classifier
    from cassava.preprocessing import Limits

    started = time.monotonic()
    classifier = Classifier.load(model_dir, backend, limits=Limits(max_images=max(64, *batches)))
    load_s = time.monotonic() - started
    reports = []
    for batch in batches:
        report = run_in_process(
            images,
            model_dir=model_dir,
            backend=backend,
            batch=batch,
            duration_s=timing.duration_s,
            warmup_s=timing.warmup_s,
            classifier=classifier,
        )
        report.info["load_s"] = load_s
        reports.append(report.to_dict())
    return reports


def model_only_runs(
    model_dir: Path, backend: Backend, images: list[bytes], batches: Sequence[int], timing: Timing
) -> list[dict[str, Any]]:
    """The backend alone on an already preprocessed batch: what the two backends differ in. The
    pipeline figures above add the same serial decode to both, which narrows their ratio."""
    from cassava.pipeline import Classifier
    from cassava.preprocessing import Limits

    classifier = Classifier.load(model_dir, backend, limits=Limits(max_images=max(64, *batches)))
    runs = []
    for batch in batches:
        tensor = classifier.preprocess([images[i % len(images)] for i in range(batch)])
        classifier.classify_preprocessed(tensor)  # the first call at a shape traces the graph
        seconds: list[float] = []
        started = time.monotonic()
        opens, closes = started + timing.warmup_s, started + timing.warmup_s + timing.duration_s
        while (now := time.monotonic()) < closes:
            classifier.classify_preprocessed(tensor)
            if now >= opens:
                seconds.append(time.monotonic() - now)
        runs.append(
            {
                "backend": backend,
                "batch": batch,
                "calls": len(seconds),
                "images_per_s": batch * len(seconds) / sum(seconds) if seconds else 0.0,
                "p50_ms": statistics.median(seconds) * 1000 if seconds else math.nan,
            }
        )
    return runs


@dataclass
class ServerResult:
    label: str
    role: str
    config: dict[str, Any]
    cold_start_s: float
    rss_mb: float  # the server's process tree after its first run (loaded, warmed up)
    idle_rss_mb: float = math.nan  # the same, ready but before any request
    runs: list[dict[str, Any]] = field(default_factory=list)
    sweep: dict[str, Any] | None = None  # `sweep_rates` on this server, when its plan asks for it
    paired: dict[str, Any] | None = None  # `paired_targets` on this server, when its plan asks for it


def run_matrix(model_source: Path, workdir: Path, quick: bool = False) -> dict[str, Any]:
    begun = time.monotonic()
    ticks = cpu_ticks()
    timing = QUICK if quick else FULL
    workdir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    results: dict[str, Any] = {
        "generated": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": REGENERATE,
        "quick": quick,
        "timing": asdict(timing),
        "machine": machine(),
        "versions": versions(),
        "model": {"source": str(model_source)},
    }
    model_dir, backends = prepare_model(model_source, workdir, notes)
    results["backends"] = backends
    images = generate_images(IMAGE_COUNT, IMAGE_SIZE, quality=IMAGE_QUALITY, seed=0)
    results["images"] = {
        "count": len(images),
        "size": f"{IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}",
        "quality": IMAGE_QUALITY,
        "mean_bytes": sum(map(len, images)) / len(images),
    }

    log("decode and preprocess")
    results["decode"] = in_child(decode_benchmark, model_dir, images, quick)

    results["in_process"] = []
    for backend in backends:
        log(f"in-process limit: {backend}, batch 1 and {SEED_BATCH}")
        results["in_process"] += in_child(
            in_process_runs, model_dir, backend, images, (1, SEED_BATCH), timing
        )
    results["model_only"] = []
    for backend in backends:
        log(f"model only: {backend}, batch 1 and {SEED_BATCH}")
        batches = (1, SEED_BATCH)
        results["model_only"] += in_child(model_only_runs, model_dir, backend, images, batches, timing)
    best: Backend = max(
        backends,
        key=lambda b: max(r["images_per_s"] for r in results["in_process"] if r["info"]["backend"] == b),
    )
    results["best_backend"] = best

    servers: list[ServerResult] = []
    for plan in server_plan(best, backends, quick):
        log(f"server: {plan.config.label}")
        rounds = QUICK_PAIRED_ROUNDS if quick else PAIRED_ROUNDS
        servers.append(serve(plan, model_dir, workdir, images, timing, notes, rounds))
    results["servers"] = [asdict(s) for s in servers]
    if "onnx" in backends:
        results["other_backends"] = other_backends(model_dir, workdir, quick, notes)
    results["notes"] = notes
    results["elapsed_s"] = time.monotonic() - begun
    results["machine"]["steal_share"] = steal_share(ticks, cpu_ticks())
    results["targets"] = targets(results)
    results["defaults"] = defaults(results)
    results["rate_curve"] = rate_curve(results)
    return results


def other_backends(model_dir: Path, workdir: Path, quick: bool, notes: list[str]) -> dict[str, Any] | None:
    """ONNX Runtime INT8 and OpenVINO against ONNX Runtime FP32 (`benchmarks.others`), in a child."""
    from benchmarks import others

    lacking = others.missing()
    if lacking:
        notes.append(
            f"Other CPU backends not measured: {', '.join(lacking)} not installed "
            "(`pip install openvino onnx`; docs/backends.md)."
        )
        return None
    log("other CPU backends against ONNX Runtime FP32 (benchmarks.backends)")
    try:
        result: dict[str, Any] = in_child(
            others.compare, model_dir, workdir / "backends", BENCH_EXPORT_TOLERANCE, quick
        )
    except Exception as err:
        notes.append(f"Other CPU backends: the comparison failed ({type(err).__name__}: {err}).")
        return None
    return result


def serve(
    plan: ServerPlan,
    model_dir: Path,
    workdir: Path,
    images: list[bytes],
    timing: Timing,
    notes: list[str],
    rounds: int = PAIRED_ROUNDS,
) -> ServerResult:
    config = plan.config
    folder = workdir / "servers" / config.label.replace(" ", "").replace(",", "_").replace("/", "-")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    server = start_server(folder, model_dir, config)
    result = ServerResult(config.label, plan.role, asdict(config), server.cold_start_s, math.nan)
    result.idle_rss_mb = ProcessTree(server.process.pid).rss() / 2**20
    try:
        for run in plan.runs:
            duration = timing.seed_duration_s if run.encoding == "tensor" else timing.duration_s
            spec = LoadSpec(
                target=server.target("grpc" if run.transport == "grpc" else "rest"),
                encoding="tensor" if run.encoding == "tensor" else "bytes",
                batch=run.batch,
                concurrency=run.concurrency,
                duration_s=duration,
                warmup_s=timing.warmup_s,
                timeout_s=120.0,
                encode_each=run.encode_each,
                label=f"{config.label} | {run.label}",
            )
            report: BenchReport = run_load(
                spec, images, server_pid=server.process.pid, info={"server": asdict(config)}
            )
            report.rss_samples = []  # one figure per server is kept below; the runs' samples are noise
            report.windows = []
            result.runs.append(report.to_dict())
            log(
                f"  {run.label}: {report.images_per_s:.1f} images/s, p50 {report.latency_ms['p50']:.1f} ms, "
                f"{report.error_count} errors, client CPU {report.client_cpu * 100:.0f}%"
            )
            if math.isnan(result.rss_mb):  # after the first run: loaded and warmed up
                result.rss_mb = ProcessTree(server.process.pid).rss() / 2**20
            if report.error_count:
                notes.append(f"{result.label} | {run.label}: errors {report.errors}")
        # The paired rounds before the sweep: its overloaded rates leave a queue that the server works
        # off after the generator has stopped, which would slow the next runs.
        if plan.paired:
            control = start_control_or_note(folder.parent / CONTROL, model_dir, config.backend, notes)
            try:
                result.paired = paired_targets(server, config.backend, model_dir, images, rounds, control)
            finally:
                if control is not None:
                    control.stop()
        if plan.sweep:
            result.sweep = sweep_rates(server, result, images, timing)
    finally:
        server.stop()
    return result


def sweep_rates(
    server: StartedServer, result: ServerResult, images: list[bytes], timing: Timing
) -> dict[str, Any] | None:
    """The open-loop latency-vs-rate curve of one image per REST request, at `SWEEP_FRACTIONS` of the
    most requests/s this server's closed-loop runs reached, up to the first rate beyond twice the
    objective."""
    closed = [r for r in result.runs if r["mode"] == "rest" and r["encoding"] == "bytes" and r["batch"] == 1]
    saturation = max((r["requests_per_s"] for r in closed), default=0.0)
    if saturation <= 0:
        return None
    fractions = QUICK_SWEEP_FRACTIONS if timing.duration_s < 5 else SWEEP_FRACTIONS
    spec = LoadSpec(
        target=server.target("rest"),
        duration_s=timing.duration_s,
        warmup_s=timing.warmup_s,
        timeout_s=SWEEP_TIMEOUT_S,
        label=f"{result.label} | rest bytes b1 open loop",
    )

    def shown(report: BenchReport) -> None:
        log(
            f"  {report.rate:.1f} requests/s offered: {report.requests_per_s:.1f} answered, "
            f"p99 {report.latency_ms['p99']:.1f} ms, {report.drop_count} dropped, {report.error_count} errors"
        )

    reports = run_sweep(
        spec,
        images,
        [round(f * saturation, 2) for f in fractions],
        server_pid=server.process.pid,
        stop_after=lambda report: past_the_knee(report, SLO_MS),
        on_report=shown,
    )
    return {
        "transport": "rest",
        "batch": 1,
        "saturation_requests_per_s": saturation,
        "fractions": list(fractions),
        "timeout_s": spec.timeout_s,
        "max_in_flight": spec.max_in_flight,
        "points": [RatePoint.of(r).to_dict() for r in reports],
    }


def start_control_or_note(
    workdir: Path, model_dir: Path, backend: Backend, notes: list[str]
) -> StartedServer | None:
    """The paired rounds' control server (`benchmarks.control`), or None and a note saying why not: the
    targets are cassava's, and are measured without it."""
    shutil.rmtree(workdir, ignore_errors=True)
    try:
        return start_control(workdir, model_dir, backend)
    except Exception as err:  # any failure: the rounds go on without it
        notes.append(f"The control server did not start ({type(err).__name__}: {err}); see {workdir}.")
        return None


def paired_targets(
    server: StartedServer,
    backend: Backend,
    model_dir: Path,
    images: list[bytes],
    rounds: int,
    control: StartedServer | None = None,
) -> dict[str, Any]:
    """The default-settings targets in `rounds` rounds (see `PAIRED_ROUNDS`): in each, every
    `PAIRED_RUNS` run against `server` (and against `control`, when given: `paired_schedule`) between
    two in-process runs of its reference batch.

    A round's `in-process bN` entry lists its in-process runs in order, and each served run names the
    two around it (`between`: their indexes in that list). The in-process runs use a classifier loaded
    here, in the load generator, with the backend's default threads, as the server's is: while they run
    the servers are idle, and while a server runs this process only sends."""
    from cassava.pipeline import Classifier
    from cassava.preprocessing import Limits

    warmup_s, duration_s = PAIRED_WINDOW
    classifier = Classifier.load(model_dir, backend, limits=Limits(max_images=max(64, SEED_BATCH)))
    out: list[dict[str, Any]] = []
    conditions: list[dict[str, Any]] = []

    def reference(runs: list[dict[str, Any]], batch: int) -> int:
        """Run the in-process pipeline at `batch` once more; its index in `runs`."""
        report = run_in_process(
            images,
            model_dir=model_dir,
            backend=backend,
            batch=batch,
            duration_s=duration_s,
            warmup_s=warmup_s,
            classifier=classifier,
        )
        runs.append(_brief(report))
        return len(runs) - 1

    for k in range(rounds):
        waited = wait_for_quiet()
        ticks = cpu_ticks()
        row: dict[str, Any] = {f"in-process b{b}": [] for b in (1, SEED_BATCH)}
        last: int | None = None  # the batch of the previous run when it was an in-process one
        for run in paired_schedule(k, control is not None):
            ref = paired_reference(run.batch, run.concurrency)
            refs = row[f"in-process b{ref}"]
            before = len(refs) - 1 if last == ref else reference(refs, ref)
            target = control if run.control and control is not None else server
            spec = LoadSpec(
                target=target.target("grpc" if run.transport == "grpc" else "rest"),
                batch=run.batch,
                concurrency=run.concurrency,
                duration_s=duration_s,
                warmup_s=warmup_s,
                timeout_s=60.0,
            )
            served = _brief(run_load(spec, images))
            served["between"] = [before, reference(refs, ref)]
            row[run.name] = served
            last = ref
        conditions.append({"waited_s": waited, "steal": steal_share(ticks, cpu_ticks())})
        log(
            f"  paired round {k + 1}/{rounds}: in-process b1 p50 "
            + "/".join(f"{v['p50_ms']:.1f}" for v in row["in-process b1"])
            + f" ms, b{SEED_BATCH} "
            + "/".join(f"{v['images_per_s']:.1f}" for v in row[f"in-process b{SEED_BATCH}"])
            + " images/s; "
            + ", ".join(
                f"{name} {v['p50_ms']:.1f} ms"
                if name.endswith("b1 c1")
                else f"{name} {v['images_per_s']:.1f}/s"
                for name, v in row.items()
                if not name.startswith("in-process")
            )
        )
        out.append(row)
    return {
        "rounds": out,
        "conditions": conditions,
        "window_s": list(PAIRED_WINDOW),
        "reference_batch": SEED_BATCH,
        **({"control": {"label": CONTROL_LABEL, "cold_start_s": control.cold_start_s}} if control else {}),
    }


def _brief(report: BenchReport) -> dict[str, Any]:
    """One run of a round. With one request at a time, images/s is the batch over the mean latency: a
    2 s window holds only ~16 requests of 16 images, and counting the images answered inside it would
    move by a whole request (6 %) on where the window happens to cut."""
    mean_ms = report.latency_ms["mean"]
    one_at_a_time = report.concurrency == 1 and mean_ms > 0
    return {
        "images_per_s": report.batch * 1000 / mean_ms if one_at_a_time else report.images_per_s,
        "counted_images_per_s": report.images_per_s,
        "p50_ms": report.latency_ms["p50"],
        "mean_ms": mean_ms,
        "p99_ms": report.latency_ms["p99"],
        "requests": report.requests,
        "errors": report.error_count,
    }
