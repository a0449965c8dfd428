"""`make bench`: the whole benchmark matrix on one set of images, written to docs/performance.md.

    python -m cassava.bench_matrix [--model DIR] [--out docs/performance.md] [--quick]
    python -m cassava.bench_matrix --render docs/performance.json      # rewrite the .md only

One run measures, on the same generated JPEGs: decode/preprocess speed and parity; the in-process
limit (`Classifier.classify_images`) per backend at batch 1 and 16; the seed's request (float32 JSON,
batch 16); image bytes over REST and gRPC at concurrency 1, 8 and 32 with 0/1/2 parallel workers, with
and without adaptive batching; cold start and resident memory per backend. Every figure goes into
docs/performance.json first and the Markdown is rendered from that file, so nothing in it is typed by
hand. It lives in the package rather than in scripts/ so that it is type-checked with the code it
drives and reuses `cassava.bench` directly.

The 2-core budget (15 minutes) does not fit the full cross product, so the full grid (workers x
batching x transport x concurrency) runs on the fastest backend only, and TensorFlow gets its default
server with and without batching plus the seed's request. `SERVER_PLAN` lists exactly what runs.

The generator process never imports MLServer (it uses tritonclient's gRPC stubs); the in-process and
decode measurements run in spawned child processes so TensorFlow's and ONNX Runtime's thread pools
do not linger in the load generator.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from cassava.bench import (
    BenchReport,
    LoadSpec,
    ProcessTree,
    ServerConfig,
    generate_images,
    run_in_process,
    run_load,
    start_server,
)
from cassava.settings import Backend

REPO = Path(__file__).resolve().parents[2]
SYNTHETIC_CROPNET = REPO.parent / "shared" / "models" / "cropnet-graph-synthetic"
DEFAULT_OUT = REPO / "docs" / "performance.md"
REGENERATE = "make bench"  # or: .venv/bin/python -m cassava.bench_matrix

IMAGE_COUNT = 32
IMAGE_SIZE = (640, 480)
IMAGE_QUALITY = 90
ADAPTIVE = (8, 0.01)  # requests per merged batch, seconds to wait: the grid's "batching on"
CONCURRENCIES = (1, 8, 32)
SEED_BATCH = 16
#: Parity bound for the benchmark's ONNX export: 3x the default, for untrained graphs (see `_in_child` call).
BENCH_EXPORT_TOLERANCE = 3e-4

TARGETS = {
    "speedup": 2.5,
    "served_vs_limit": 0.8,
    "served_vs_seed": 15.0,
    "single_image_overhead_ms": 5.0,
    "bytes_vs_seed": 1 / 20,
    "onnx_cold_start_s": 5.0,
}


@dataclass(frozen=True)
class Timing:
    warmup_s: float
    duration_s: float
    seed_duration_s: float  # the seed's request takes seconds each: a longer window counts more of them


FULL = Timing(warmup_s=2.0, duration_s=6.0, seed_duration_s=20.0)
QUICK = Timing(warmup_s=1.0, duration_s=3.0, seed_duration_s=6.0)


@dataclass(frozen=True)
class Run:
    transport: str  # rest | grpc
    encoding: str = "bytes"
    batch: int = 1
    concurrency: int = 1
    encode_each: bool = False  # the client builds each request in the timed loop (the seed's test.py)

    @property
    def label(self) -> str:
        what = "seed tensor JSON" if self.encoding == "tensor" else "bytes"
        each = ", client encodes each" if self.encode_each else ""
        return f"{self.transport} {what}{each} b{self.batch} c{self.concurrency}"


@dataclass(frozen=True)
class ServerPlan:
    config: ServerConfig
    runs: tuple[Run, ...]
    role: str = ""  # "default" marks the server whose cold start and memory stand for its backend


def _grid_runs() -> tuple[Run, ...]:
    return tuple(Run(t, concurrency=c) for t in ("rest", "grpc") for c in CONCURRENCIES)


def server_plan(best: Backend, backends: Sequence[Backend], quick: bool = False) -> list[ServerPlan]:
    """What runs, in order. The full grid on `best`; TensorFlow's default server with and without
    batching; the seed's request on TensorFlow (the seed's backend) and on `best`."""
    cores = os.cpu_count() or 1
    seed = Run("rest", "tensor", SEED_BATCH, 1)
    plans: list[ServerPlan] = []
    worker_counts = (1,) if quick else (0, 1, 2)
    for workers in worker_counts:
        for batching in (False, True):
            runs = _grid_runs()
            default = workers == _default_workers() and not batching
            if default:
                # The seed's batch size with image bytes, and the seed's request on the same server.
                runs = (*runs, Run("rest", "bytes", SEED_BATCH, 2), seed)
            plans.append(
                ServerPlan(
                    ServerConfig(
                        backend=best,
                        workers=workers,
                        adaptive_batch_size=ADAPTIVE[0] if batching else 0,
                        adaptive_batch_time=ADAPTIVE[1] if batching else 0.0,
                        # Each worker gets its share of the cores, so 2 workers do not oversubscribe.
                        threads=max(1, cores // max(workers, 1)),
                    ),
                    runs,
                    role="default" if default else "",
                )
            )
    if best != "tensorflow" and "tensorflow" in backends:
        short = (Run("rest", concurrency=1), Run("rest", concurrency=32), Run("grpc", concurrency=32))
        for batching in (False,) if quick else (False, True):
            plans.append(
                ServerPlan(
                    ServerConfig(
                        backend="tensorflow",
                        workers=_default_workers(),
                        adaptive_batch_size=ADAPTIVE[0] if batching else 0,
                        adaptive_batch_time=ADAPTIVE[1] if batching else 0.0,
                        threads=max(1, cores // max(_default_workers(), 1)),
                    ),
                    (*short, seed, Run("rest", "tensor", SEED_BATCH, 1, encode_each=True))
                    if not batching
                    else short,
                    role="" if batching else "default",
                )
            )
    return plans


def _default_workers() -> int:
    from cassava.server_config import DEFAULT_PARALLEL_WORKERS

    return DEFAULT_PARALLEL_WORKERS


# --- environment -------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    memory_gib = math.nan
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_gib = int(line.split()[1]) / 2**20
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 1,
        "memory_gib": round(memory_gib, 1),
        "os": platform.platform(terse=True),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def versions() -> dict[str, str]:
    # From the installed metadata: importing mlserver here would clash with tritonclient's stubs.
    found = {"python": platform.python_version()}
    for name in ("tensorflow", "onnxruntime", "mlserver", "numpy", "pillow", "simplejpeg", "tritonclient"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


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
        _log("exporting the model to ONNX (cached in the work folder)")
        try:
            # Untrained weights push CropNet's logits to +-500, where float32 rounding alone moves
            # probabilities by ~1e-4 (docs/onnx.md); the export still refuses any class change.
            _in_child(export_onnx, model_dir, tolerance=BENCH_EXPORT_TOLERANCE)
        except Exception as err:
            notes.append(f"ONNX Runtime skipped: the export failed ({type(err).__name__}: {err}).")
            return model_dir, backends
    if (model_dir / ONNX_FILE).is_file():
        backends.append("onnx")
    else:
        notes.append(f"ONNX Runtime skipped: the export wrote no {ONNX_FILE} in {model_dir}.")
    return model_dir, backends


# --- decode and preprocess ---------------------------------------------------------------------------


def decode_benchmark(model_dir: Path, images: list[bytes], quick: bool) -> dict[str, Any]:
    """Decode + resize speed per method on phone-sized JPEGs, max |difference| from the seed's pixels
    (TensorFlow's accurate JPEG decoder + tf.image.resize), and fast_decode's argmax agreement with
    the exact path on the benchmark images. Runs in a child process (imports TensorFlow)."""
    import io
    import statistics

    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from cassava.pipeline import Classifier
    from cassava.preprocessing import Limits, decode_image, preprocess_images, resize_bilinear

    try:
        import simplejpeg
    except ImportError:
        simplejpeg = None

    def timed(fn: Callable[[bytes], Any], data: list[bytes], repeats: int) -> float:
        fn(data[0])
        laps = []
        for _ in range(repeats):
            for d in data:
                started = time.perf_counter()
                fn(d)
                laps.append(time.perf_counter() - started)
        return statistics.median(laps) * 1000

    def seed_pixels(data: bytes) -> Any:
        pixels = tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")
        return tf.image.resize(tf.cast(pixels, tf.float32) / 255.0, (224, 224)).numpy()

    def seed_default_decoder(data: bytes) -> Any:
        pixels = tf.io.decode_jpeg(data, channels=3)
        return tf.image.resize(tf.cast(pixels, tf.float32) / 255.0, (224, 224)).numpy()

    def pillow(data: bytes) -> Any:
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def pillow_draft(data: bytes) -> Any:
        image = Image.open(io.BytesIO(data))
        scale = next(s for s in (8, 4, 2, 1) if s <= max(min(image.size) // 224, 1))
        image.draft("RGB", (image.size[0] // scale, image.size[1] // scale))
        return np.asarray(image.convert("RGB"))

    exact, fast = Limits(), Limits(fast_decode=True)
    sizes = [(800, 600), (4000, 3000)]
    result: dict[str, Any] = {"sizes": {}, "simplejpeg": simplejpeg is not None}
    for width, height in sizes:
        photos = generate_images(2 if width > 1000 else 4, (width, height), quality=IMAGE_QUALITY, seed=7)
        repeats = 1 if quick else (3 if width > 1000 else 10)
        reference = [seed_pixels(d) for d in photos]

        def diff(
            fn: Callable[[bytes], Any], photos: list[bytes] = photos, ref: list[Any] = reference
        ) -> float:
            return max(float(np.abs(fn(d) - r).max()) for d, r in zip(photos, ref, strict=True))

        decoded = decode_image(photos[0], exact)

        def tf_resize(_: bytes, pixels: Any = decoded) -> Any:
            return tf.image.resize(pixels, (224, 224))

        def our_resize(_: bytes, pixels: Any = decoded) -> Any:
            return resize_bilinear(pixels)

        def ours(data: bytes) -> Any:
            return preprocess_images([data], exact)[0]

        def ours_fast(data: bytes) -> Any:
            return preprocess_images([data], fast)[0]

        methods: list[tuple[str, Callable[[bytes], Any], bool]] = [
            ("decode: Pillow (before)", pillow, False),
            ("decode: tf.io.decode_jpeg", lambda d: tf.io.decode_jpeg(d, channels=3), False),
            ("decode: cassava (simplejpeg when installed)", lambda d: decode_image(d, exact), False),
            ("decode: Pillow draft() (fast_decode without simplejpeg)", pillow_draft, False),
            ("decode: cassava fast_decode", lambda d: decode_image(d, fast), False),
            ("resize: tf.image.resize", tf_resize, False),
            ("resize: cassava resize_bilinear", our_resize, False),
            ("decode + preprocess: the seed's (TensorFlow)", seed_default_decoder, True),
            ("decode + preprocess: cassava (default)", ours, True),
            ("decode + preprocess: cassava fast_decode", ours_fast, True),
        ]
        rows = [
            (name, timed(fn, photos, repeats), diff(fn) if with_diff else None)
            for name, fn, with_diff in methods
        ]
        result["sizes"][f"{width}x{height}"] = [
            {"method": name, "ms": ms, "max_abs_diff": d} for name, ms, d in rows
        ]
    # Agreement of fast_decode with the exact path, on the benchmark images and on 12 MP photos.
    classifier = Classifier.load(model_dir, "tensorflow", limits=Limits(max_batch_size=256))
    agreement = {}
    for name, photos in (
        (f"benchmark images ({IMAGE_SIZE[0]}x{IMAGE_SIZE[1]})", images),
        ("800x600", generate_images(8 if quick else 32, (800, 600), quality=IMAGE_QUALITY, seed=11)),
        ("4000x3000", generate_images(2 if quick else 6, (4000, 3000), quality=IMAGE_QUALITY, seed=13)),
    ):
        a = classifier.classify_preprocessed(preprocess_images(photos, Limits(max_batch_size=256)))
        b = classifier.classify_preprocessed(
            preprocess_images(photos, Limits(max_batch_size=256, fast_decode=True))
        )
        agreement[name] = {
            "images": len(photos),
            "argmax_agreement": float((a.indices == b.indices).mean()),
            "max_probability_diff": float(np.abs(a.probabilities - b.probabilities).max()),
        }
    result["fast_decode_agreement"] = agreement
    result["untrained_model"] = classifier.info.untrained or "synthetic" in str(model_dir)
    return result


# --- in process --------------------------------------------------------------------------------------


def in_process_runs(
    model_dir: Path, backend: Backend, images: list[bytes], batches: Sequence[int], timing: Timing
) -> list[dict[str, Any]]:
    """Each batch size on one loaded classifier (run in a child process, one per backend)."""
    from cassava.pipeline import Classifier
    from cassava.preprocessing import Limits

    started = time.monotonic()
    classifier = Classifier.load(model_dir, backend, limits=Limits(max_batch_size=max(64, *batches)))
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

    classifier = Classifier.load(model_dir, backend, limits=Limits(max_batch_size=max(64, *batches)))
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


# --- the matrix --------------------------------------------------------------------------------------


@dataclass
class ServerResult:
    label: str
    role: str
    config: dict[str, Any]
    cold_start_s: float
    rss_mb: float
    runs: list[dict[str, Any]] = field(default_factory=list)


def run_matrix(model_source: Path, workdir: Path, quick: bool = False) -> dict[str, Any]:
    begun = time.monotonic()
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

    _log("decode and preprocess")
    results["decode"] = _in_child(decode_benchmark, model_dir, images, quick)

    results["in_process"] = []
    for backend in backends:
        _log(f"in-process limit: {backend}, batch 1 and {SEED_BATCH}")
        results["in_process"] += _in_child(
            in_process_runs, model_dir, backend, images, (1, SEED_BATCH), timing
        )
    results["model_only"] = []
    for backend in backends:
        _log(f"model only: {backend}, batch 1 and {SEED_BATCH}")
        batches = (1, SEED_BATCH)
        results["model_only"] += _in_child(model_only_runs, model_dir, backend, images, batches, timing)
    best: Backend = max(
        backends,
        key=lambda b: max(r["images_per_s"] for r in results["in_process"] if r["info"]["backend"] == b),
    )
    results["best_backend"] = best

    servers: list[ServerResult] = []
    for plan in server_plan(best, backends, quick):
        _log(f"server: {plan.config.label}")
        servers.append(_serve(plan, model_dir, workdir, images, timing, notes))
    results["servers"] = [asdict(s) for s in servers]
    results["notes"] = notes
    results["elapsed_s"] = time.monotonic() - begun
    results["targets"] = targets(results)
    results["defaults"] = defaults(results)
    return results


def _serve(
    plan: ServerPlan, model_dir: Path, workdir: Path, images: list[bytes], timing: Timing, notes: list[str]
) -> ServerResult:
    config = plan.config
    folder = workdir / "servers" / config.label.replace(" ", "").replace(",", "_").replace("/", "-")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    server = start_server(folder, model_dir, config)
    result = ServerResult(config.label, plan.role, asdict(config), server.cold_start_s, math.nan)
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
            _log(
                f"  {run.label}: {report.images_per_s:.1f} images/s, p50 {report.latency_ms['p50']:.1f} ms, "
                f"{report.error_count} errors, client CPU {report.client_cpu * 100:.0f}%"
            )
            if math.isnan(result.rss_mb):  # after the first run: loaded and warmed up
                result.rss_mb = ProcessTree(server.process.pid).rss() / 2**20
            if report.error_count:
                notes.append(f"{result.label} | {run.label}: errors {report.errors}")
    finally:
        server.stop()
    return result


def _in_child(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(fn, *args, **kwargs).result()


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- what the run says -------------------------------------------------------------------------------


def _bytes_runs(
    results: dict[str, Any], backend: str | None = None
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (server, run)
        for server in results["servers"]
        for run in server["runs"]
        if run["encoding"] == "bytes" and (backend is None or server["config"]["backend"] == backend)
    ]


def _seed_run(results: dict[str, Any]) -> dict[str, Any] | None:
    """The seed's way on its own backend: end to end (the client preprocesses and encodes every request,
    as test.py does) when that was run, else with requests built beforehand."""
    seeds = [
        run
        for server in results["servers"]
        if server["config"]["backend"] == "tensorflow"
        for run in server["runs"]
        if run["encoding"] == "tensor"
    ]
    seeds.sort(key=lambda run: not run.get("info", {}).get("encode_each", False))
    return seeds[0] if seeds else None


def _in_process(results: dict[str, Any], backend: str, batch: int) -> dict[str, Any] | None:
    found = [r for r in results["in_process"] if r["info"]["backend"] == backend and r["batch"] == batch]
    return found[0] if found else None


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, target: float, higher: bool, unit: str, detail: str) -> None:
        met = None if value is None or math.isnan(value) else (value >= target if higher else value <= target)
        out.append(
            {
                "name": name,
                "value": value,
                "target": target,
                "higher_is_better": higher,
                "unit": unit,
                "met": met,
                "detail": detail,
            }
        )

    best = results["best_backend"]
    # The backends are compared on the model alone (as "81 images/s at batch 16" describes TensorFlow);
    # older result files without those runs fall back to the whole pipeline.
    model_only = {(r["backend"], r["batch"]): r for r in results.get("model_only", [])}
    tf16, best16 = model_only.get(("tensorflow", SEED_BATCH)), model_only.get((best, SEED_BATCH))
    what = "model only"
    if not (tf16 and best16):
        tf16, best16 = _in_process(results, "tensorflow", SEED_BATCH), _in_process(results, best, SEED_BATCH)
        what = "decode + preprocess + model"
    if tf16 and best16 and tf16["images_per_s"] > 0:
        add(
            "best backend in-process, batch 16, vs TensorFlow",
            best16["images_per_s"] / tf16["images_per_s"],
            TARGETS["speedup"],
            True,
            "x",
            f"{best}: {best16['images_per_s']:.1f} vs tensorflow {tf16['images_per_s']:.1f} "
            f"images/s ({what})",
        )
    served = _bytes_runs(results, best)
    limit = max((r["images_per_s"] for r in results["in_process"] if r["info"]["backend"] == best), default=0)
    if served and limit:
        _, run = max(served, key=lambda sr: sr[1]["images_per_s"])
        add(
            "served image bytes at saturation vs the in-process limit (same backend)",
            run["images_per_s"] / limit,
            TARGETS["served_vs_limit"],
            True,
            "x",
            f"{run['label']}: {run['images_per_s']:.1f} vs in-process {limit:.1f} images/s",
        )
    seed = _seed_run(results)
    all_served = _bytes_runs(results)
    if seed and all_served and seed["images_per_s"] > 0:
        _, run = max(all_served, key=lambda sr: sr[1]["images_per_s"])
        add(
            "served image bytes vs the seed's request, images/s",
            run["images_per_s"] / seed["images_per_s"],
            TARGETS["served_vs_seed"],
            True,
            "x",
            f"{run['label']}: {run['images_per_s']:.1f} vs the seed's {seed['images_per_s']:.2f} images/s "
            f"({seed['label'].split(' | ')[-1]})",
        )
    single = _in_process(results, best, 1)
    c1 = [sr for sr in served if sr[1]["concurrency"] == 1 and sr[1]["batch"] == 1]
    if single and c1:
        _, run = min(c1, key=lambda sr: sr[1]["latency_ms"]["p50"])
        add(
            "one image at concurrency 1: served p50 minus in-process p50",
            run["latency_ms"]["p50"] - single["latency_ms"]["p50"],
            TARGETS["single_image_overhead_ms"],
            False,
            "ms",
            f"{run['label']}: {run['latency_ms']['p50']:.1f} ms "
            f"vs in-process {single['latency_ms']['p50']:.1f} ms",
        )
    rest_bytes = [run for _, run in all_served if run["mode"] == "rest" and run["batch"] == 1]
    if seed and rest_bytes and seed["request_bytes_per_image"]:
        per_image = rest_bytes[0]["request_bytes_per_image"]
        add(
            "request bytes per image vs the seed's request (REST)",
            per_image / seed["request_bytes_per_image"],
            TARGETS["bytes_vs_seed"],
            False,
            "x",
            f"{per_image:,.0f} vs {seed['request_bytes_per_image']:,.0f} bytes per image",
        )
    onnx = [s for s in results["servers"] if s["config"]["backend"] == "onnx" and s["role"] == "default"]
    if onnx:
        add(
            "ONNX-only server cold start (process start to ready)",
            onnx[0]["cold_start_s"],
            TARGETS["onnx_cold_start_s"],
            False,
            "s",
            onnx[0]["label"],
        )
    return out


def defaults(results: dict[str, Any]) -> dict[str, Any]:
    """This run's pick among the grid's servers: the most images/s at saturation among those whose
    single-image latency (best c1 p50) is within 10% (+2 ms) of the best, so a lone client is not made
    to wait for throughput it does not need."""
    from cassava.server_config import DEFAULT_PARALLEL_WORKERS

    best = results["best_backend"]
    grid = [s for s in results["servers"] if s["config"]["backend"] == best]
    scored = []
    for server in grid:
        bytes_runs = [r for r in server["runs"] if r["encoding"] == "bytes" and r["batch"] == 1]
        if not bytes_runs:
            continue
        saturation = max(r["images_per_s"] for r in bytes_runs)
        single = min((r["latency_ms"]["p50"] for r in bytes_runs if r["concurrency"] == 1), default=math.nan)
        scored.append((server, saturation, single))
    if not scored:
        return {}
    fastest_single = min(s for _, _, s in scored)
    eligible = [x for x in scored if x[2] <= fastest_single * 1.1 + 2] or scored
    pick, saturation, single = max(eligible, key=lambda x: x[1])
    return {
        "pick": pick["label"],
        "pick_config": pick["config"],
        "saturation_images_per_s": saturation,
        "single_p50_ms": single,
        "current": {"parallel_workers": DEFAULT_PARALLEL_WORKERS},
    }


# --- Markdown ----------------------------------------------------------------------------------------


def _f(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render(results: dict[str, Any], chart: str | None) -> str:
    m, v = results["machine"], results["versions"]
    parts = [
        "# Performance",
        "",
        "<!-- GENERATED by `cassava.bench_matrix` from docs/performance.json: do not edit by hand. -->",
        f"_Generated {results['generated']} by `{results['command']}` "
        f"({results['elapsed_s'] / 60:.1f} min). Regenerate with `{REGENERATE}`; "
        "`python -m cassava.bench_matrix --render docs/performance.json` rewrites this page from the JSON._",
        "",
    ]
    if results.get("quick"):
        parts += [
            "> **Quick smoke run** (`--quick`: seconds-long windows, a reduced server plan): the figures "
            "show that the tooling works, not what the service does. Run `make bench` for real numbers.",
            "",
        ]
    load = m.get("load_average_at_start")
    parts += [
        "## Machine",
        "",
        _table(
            ["CPU", "cores", "memory", "OS", "load average at start (1/5/15 min)"],
            [
                [
                    m["cpu"],
                    str(m["cores"]),
                    f"{m['memory_gib']} GiB",
                    m["os"],
                    " / ".join(f"{x:.2f}" for x in load) if load else "-",
                ]
            ],
        ),
        "",
        _table(list(v), [list(v.values())]),
        "",
        f"Model: `{results['model']['source']}`. Images: {results['images']['count']} generated JPEGs, "
        f"{results['images']['size']}, quality {results['images']['quality']}, "
        f"{results['images']['mean_bytes'] / 1024:.0f} KiB on average; every run uses the same ones. "
        f"Measured windows: {results['timing']['duration_s']:g} s after {results['timing']['warmup_s']:g} s "
        f"of warm-up ({results['timing']['seed_duration_s']:g} s for the seed's request). Client and server "
        "share the machine: the client's CPU use is in every table.",
        "",
    ]
    for note in results.get("notes", []):
        parts.append(f"- {note}")
    if results.get("notes"):
        parts.append("")

    parts += ["## Targets (ratios from this run)", ""]
    rows = []
    for t in results["targets"]:
        op = ">=" if t["higher_is_better"] else "<="
        met = {True: "yes", False: "**no**", None: "-"}[t["met"]]
        value = _f(t["value"], 3 if t["unit"] == "x" and t["value"] and t["value"] < 0.2 else 2)
        rows.append(
            [t["name"], f"{value} {t['unit']}", f"{op} {_f(t['target'], 3)} {t['unit']}", met, t["detail"]]
        )
    parts += [_table(["measure", "this run", "target", "met", "from"], rows), ""]

    if chart:
        parts += [f"![images/s and latency of every served configuration]({chart})", ""]

    parts += ["## In-process limit (`Classifier.classify_images`: decode + preprocess + model)", ""]
    rows = [
        [
            r["info"]["backend"],
            str(r["batch"]),
            _f(r["images_per_s"]),
            _f(r["latency_ms"]["p50"]),
            _f(r["latency_ms"]["p99"]),
            f"{r['client_cpu'] * 100:.0f}%",
            _f(r["info"]["load_s"]),
        ]
        for r in results["in_process"]
    ]
    parts += [
        _table(["backend", "batch", "images/s", "p50 ms", "p99 ms", "CPU (of all cores)", "load s"], rows),
        "",
    ]

    if results.get("model_only"):
        parts += [
            "Model only (`Classifier.classify_preprocessed` on one preprocessed batch, repeated): what "
            "the backends themselves differ in; the rows above add the same serial decode to both.",
            "",
        ]
        rows = [
            [r["backend"], str(r["batch"]), _f(r["images_per_s"]), _f(r["p50_ms"]), str(r["calls"])]
            for r in results["model_only"]
        ]
        parts += [_table(["backend", "batch", "images/s", "p50 ms", "calls"], rows), ""]

    parts += ["## Served", ""]
    parts += [
        "Image bytes: one JPEG per request unless the batch says otherwise; REST sends it base64 in JSON, "
        "gRPC as raw bytes. The seed's request: 16 images preprocessed by the client, float32 JSON "
        "(built once before the clock starts, so the client's `json.dumps` is not counted: the seed's "
        "figure is if anything flattering; the run marked `client encodes each` builds every request "
        "in the timed loop, as the seed's test.py does, and is the one the targets use). "
        "Adaptive batching: MLServer `max_batch_size` "
        f"{ADAPTIVE[0]}, `max_batch_time` {ADAPTIVE[1] * 1000:g} ms. Threads: inference threads per worker "
        "(cores / workers).",
        "",
    ]
    rows = []
    for server in results["servers"]:
        for r in server["runs"]:
            errors = ", ".join(f"{k} {n}" for k, n in r["errors"].items()) or "0"
            rows.append(
                [
                    server["label"],
                    r["label"].split(" | ")[-1],
                    _f(r["images_per_s"]),
                    _f(r["latency_ms"]["p50"]),
                    _f(r["latency_ms"]["p90"]),
                    _f(r["latency_ms"]["p99"]),
                    errors,
                    _f(r["request_bytes_per_image"], 0),
                    f"{r['client_cpu'] * 100:.0f}%",
                    "-" if r["server_cpu"] is None else f"{r['server_cpu'] * 100:.0f}%",
                ]
            )
    parts += [
        _table(
            [
                "server",
                "run",
                "images/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "errors",
                "request B/image",
                "client CPU",
                "server CPU",
            ],
            rows,
        ),
        "",
        "## Cold start and memory",
        "",
        "Cold start: the server process (`python -m cassava.launcher`, i.e. `mlserver start` with "
        "cassava's preflight) launched until the model answers ready (`/v2/models/cassava/ready`, "
        "which implies `/v2/health/ready`), with the dependencies' bytecode compiled at install time "
        "as `make setup` and the image do (without it, and with `PYTHONDONTWRITEBYTECODE` set, every "
        "start recompiles MLServer's imports: `import mlserver` takes 6 s instead of 2 s here). "
        "Memory: resident set of the server's whole process tree (workers included) after the first run.",
        "",
    ]
    rows = [
        [s["label"], "yes" if s["role"] == "default" else "", _f(s["cold_start_s"]), _f(s["rss_mb"], 0)]
        for s in results["servers"]
    ]
    parts += [_table(["server", "default for its backend", "cold start s", "RSS MiB"], rows), ""]

    decode = results["decode"]
    parts += [
        "## Decode and preprocess",
        "",
        "Per image, median; max |Δ| against the seed's pixels computed with TensorFlow's accurate JPEG "
        "decoder (`dct_method=INTEGER_ACCURATE`) and `tf.image.resize` (TensorFlow's default decoder, "
        "the fast integer IDCT, is itself a few levels off in some pixels).",
        "",
    ]
    sizes = list(decode["sizes"])
    methods = [row["method"] for row in decode["sizes"][sizes[0]]]
    rows = []
    for i, method in enumerate(methods):
        cells = [method]
        for size in sizes:
            row = decode["sizes"][size][i]
            cells += [_f(row["ms"], 2), "" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.1e}"]
        rows.append(cells)
    header = ["method"] + [h for size in sizes for h in (f"{size} ms", f"{size} max abs diff")]
    parts += [_table(header, rows), ""]
    parts += [
        "`fast_decode` (runtime option, off by default) against the exact path, on the TensorFlow backend:",
        "",
        _table(
            ["images", "count", "argmax agreement", "max probability difference"],
            [
                [
                    name,
                    str(a["images"]),
                    f"{a['argmax_agreement'] * 100:.1f}%",
                    f"{a['max_probability_diff']:.3f}",
                ]
                for name, a in decode["fast_decode_agreement"].items()
            ],
        ),
        "",
    ]
    if decode.get("untrained_model"):
        parts += [
            "The benchmark model has CropNet's graph with synthetic weights: its agreement figures show how "
            "much fast_decode moves the model's input, not the real model's accuracy. Measure on the real "
            "model before turning fast_decode on.",
            "",
        ]
    d = results.get("defaults") or {}
    if d:
        parts += [
            "## Defaults",
            "",
            f"This run's pick (most images/s at saturation among the configurations within 10% + 2 ms of the "
            f"best single-image latency): **{d['pick']}** ({_f(d['saturation_images_per_s'])} images/s at "
            f"saturation, {_f(d['single_p50_ms'])} ms p50 for one image). The project's defaults: "
            f"`parallel_workers` {d['current']['parallel_workers']} (see the rationale below).",
            "",
        ]
    parts += [RATIONALE_HEADING, "", RATIONALE.strip(), ""]
    return "\n".join(parts)


RATIONALE_HEADING = "## Why the defaults are what they are"
# Hand-written: the reasoning, not figures. The figures it rests on are the tables above.
RATIONALE = """
- **Image bytes, not tensors.** A 640x480 JPEG is ~1/30 of the seed's float32 JSON for the same image,
  and the server spends its time on the model instead of on parsing 2.4 million JSON numbers per
  request. `cassava infer` and the client send bytes by default.
- **`parallel_workers` 1.** On a quiet 2-core machine 0, 1 and 2 workers are within noise of each
  other in single-image latency and throughput (the `0 workers` / `1 workers` / `2 workers` rows);
  they differ in memory and start-up: 0 is the smallest and starts fastest, each worker adds a copy
  of the model and a process start. Under heavy CPU contention, though (interleaved A/B runs on a
  machine shared with other test runs), 0 workers answered a single image several times slower
  than 1 worker: inference then shares the server process, and its GIL, with the REST and gRPC
  servers' threads. A Kubernetes pod at its CPU limit is throttled in the same way, so the default
  keeps inference in 1 worker process; MLServer also restarts a worker that dies. 2 workers double
  the model's memory for no gain on 2 cores. Choose 0 for the smallest, fastest-starting pod when
  it has CPU headroom.
- **Adaptive batching is off.** With many requests in flight it raises throughput (the model runs
  a merged batch more efficiently than single images), but a lone request waits out
  `max_batch_time`, so single-image latency gets clearly worse; compare the `batch 8/10ms` rows with
  the `no batching` rows above. MLServer also merges a window's requests into one call with no
  per-request error channel, so one malformed request fails every request merged with it. (The
  runtime handles merged windows correctly otherwise: image and tensor requests mixed in one window
  each get their own answer, and the per-request image limit is applied to the merged sum; see
  tests/unit/test_runtime_batching.py.) Turn it on (`max_batch_size` 8, `max_batch_time` 0.01 in
  model-settings.json) for a deployment that is always under concurrent load; clients with many
  images should rather send them in one request (up to the runtime's `max_batch_size` images).
- **Inference threads.** 0 lets the backend use every core, right for one worker; with N workers give
  each `cores / N` (`CASSAVA_INFERENCE_THREADS`), or they oversubscribe the CPU.
- **`fast_decode` is off.** It is several times faster on 12 MP photos but changes the pixels the model
  sees; the seed's preprocessing is the contract. Turn it on only after checking agreement on real data.
"""


def write_outputs(results: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    chart = _chart(results, out)
    out.write_text(render(results, chart))


def _chart(results: dict[str, Any], out: Path) -> str | None:
    try:
        from cassava.plotting import plot_benchmark
    except ImportError:
        return None
    runs = [{**run, "label": run["label"]} for server in results["servers"] for run in server["runs"]] + [
        {**r, "label": r["label"]} for r in results["in_process"]
    ]
    if not runs:
        return None
    path = out.parent / "img" / "performance.png"
    try:
        plot_benchmark(runs, path, title="cassava: images/s and latency per configuration")
    except ImportError:  # matplotlib is an optional extra
        return None
    return str(path.relative_to(out.parent))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cassava.bench_matrix", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model", type=Path, default=SYNTHETIC_CROPNET, help="model directory to benchmark")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown to write (JSON next to it)")
    parser.add_argument("--workdir", type=Path, default=REPO / ".bench", help="scratch folder (model copy)")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run of the tooling")
    parser.add_argument("--render", type=Path, help="only rewrite --out from this JSON")
    args = parser.parse_args(argv)
    if args.render:
        results = json.loads(args.render.read_text())
        args.out.write_text(render(results, _chart(results, args.out)))
        return 0
    if not (args.model / "saved_model.pb").is_file():
        print(f"no SavedModel at {args.model}; pass --model DIR", file=sys.stderr)
        return 2
    results = run_matrix(args.model, args.workdir, quick=args.quick)
    write_outputs(results, args.out)
    _log(f"wrote {args.out} and {args.out.with_suffix('.json')} in {results['elapsed_s'] / 60:.1f} min")
    for t in results["targets"]:
        _log(f"  {t['name']}: {_f(t['value'], 3)} {t['unit']} (target {t['target']:.3g}) met={t['met']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
