"""What the matrix runs: the images, the timing windows, the targets and the server plan.

The 2-core budget (15 minutes) does not fit the full cross product, so the full grid (workers x
batching x transport x concurrency) runs on the fastest backend only, and TensorFlow gets its default
server with and without batching plus the seed's request. `server_plan` lists exactly what runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from cassava.bench import DEFAULT_SLO_MS, ServerConfig
from cassava.settings import Backend

#: What the generated page names as the way to regenerate it.
REGENERATE = "make bench"  # or: .venv/bin/python -m benchmarks --model DIR

IMAGE_COUNT = 32
IMAGE_SIZE = (640, 480)
IMAGE_QUALITY = 90
ADAPTIVE = (8, 0.01)  # requests per merged batch, seconds to wait: the grid's "batching on"
CONCURRENCIES = (1, 8, 32)
SEED_BATCH = 16
#: Parity bound for the benchmark's ONNX export: 3x the default, for untrained graphs (see
#: `environment.prepare_model`).
BENCH_EXPORT_TOLERANCE = 3e-4

TARGETS = {
    "speedup": 2.5,
    "served_vs_limit": 0.8,
    "served_vs_seed": 15.0,
    "single_image_overhead_ms": 5.0,
    "bytes_vs_seed": 1 / 20,
    "onnx_cold_start_s": 5.0,
}


#: The open-loop sweep (one image per REST request, on the best backend's default server): rates as
#: fractions of the most requests/s its closed-loop runs reached, so the curve spans the knee on any
#: machine. It stops after the first rate whose p99 misses twice `SLO_MS` (the rates above only queue).
SWEEP_FRACTIONS = (0.25, 0.5, 0.7, 0.85, 1.0, 1.2)
QUICK_SWEEP_FRACTIONS = (0.5, 1.0)
SLO_MS = DEFAULT_SLO_MS
#: A request not answered within this is a drop; it bounds the drain after an overloaded rate.
SWEEP_TIMEOUT_S = 10.0


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
    sweep: bool = False  # after the runs: the open-loop latency-vs-rate sweep (`SWEEP_FRACTIONS`)


def default_workers() -> int:
    from cassava.server.config import DEFAULT_PARALLEL_WORKERS

    return DEFAULT_PARALLEL_WORKERS


def _grid_runs() -> tuple[Run, ...]:
    return tuple(Run(t, concurrency=c) for t in ("rest", "grpc") for c in CONCURRENCIES)


def server_plan(best: Backend, backends: Sequence[Backend], quick: bool = False) -> list[ServerPlan]:
    """What runs, in order. The full grid on `best`; TensorFlow's default server with and without
    batching; the seed's request on TensorFlow (the seed's backend) and on `best`; the latency-vs-rate
    sweep on `best`'s default server."""
    cores = os.cpu_count() or 1
    seed = Run("rest", "tensor", SEED_BATCH, 1)
    plans: list[ServerPlan] = []
    worker_counts = (1,) if quick else (0, 1, 2)
    for workers in worker_counts:
        for batching in (False, True):
            runs = _grid_runs()
            default = workers == default_workers() and not batching
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
                    sweep=default,
                )
            )
    if best != "tensorflow" and "tensorflow" in backends:
        short = (Run("rest", concurrency=1), Run("rest", concurrency=32), Run("grpc", concurrency=32))
        for batching in (False,) if quick else (False, True):
            plans.append(
                ServerPlan(
                    ServerConfig(
                        backend="tensorflow",
                        workers=default_workers(),
                        adaptive_batch_size=ADAPTIVE[0] if batching else 0,
                        adaptive_batch_time=ADAPTIVE[1] if batching else 0.0,
                        threads=max(1, cores // max(default_workers(), 1)),
                    ),
                    (*short, seed, Run("rest", "tensor", SEED_BATCH, 1, encode_each=True))
                    if not batching
                    else short,
                    role="" if batching else "default",
                )
            )
    return plans
