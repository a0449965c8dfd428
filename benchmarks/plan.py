"""What the matrix runs: the images, the timing windows, the targets and the server plan.

A run on 2 cores (about 22 minutes) cannot hold the full cross product, so the full grid (workers x
batching x transport x concurrency) runs on the fastest backend only, and TensorFlow gets its default
server with and without batching plus the seed's request. `server_plan` lists exactly what runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

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
    "bytes_vs_seed": 1 / 20,
    "onnx_cold_start_s": 5.0,
    # With default settings (no flags), from the paired rounds below:
    "c1_overhead_ms": 2.0,  # one image at concurrency 1: served p50 minus in-process p50
    "c8_vs_batch16": 0.9,  # 8 clients of one image each: images/s vs the in-process pipeline at batch 16
    "b16_vs_batch16": 0.95,  # 16 images per request, one client: images/s vs the same
}

#: The default-settings targets compare a server with the in-process pipeline on a machine whose speed
#: drifts by tens of percent within a minute (shared cores). So they are measured in rounds of short
#: windows: each served run sits between two in-process runs of its reference and is compared with
#: their mean (a drift that is steady over the three cancels out), and a target is the median over
#: rounds of each round's own ratio (or difference), so drift between rounds cancels out too.
PAIRED_ROUNDS = 7
QUICK_PAIRED_ROUNDS = 2
PAIRED_WINDOW = (0.5, 2.0)  # warm-up and measured seconds of each run in a round
#: (transport, images per request, concurrency) of the served runs of each round, in order. A run of one
#: image at concurrency 1 is compared with the in-process pipeline at batch 1, the others with it at
#: `SEED_BATCH`; consecutive runs with the same reference share the in-process run between them.
PAIRED_RUNS = (
    ("rest", 1, 1),
    ("grpc", 1, 1),
    ("rest", 1, 8),
    ("grpc", 1, 8),
    ("rest", 16, 1),
    ("grpc", 16, 1),
)


#: The paired rounds' control server (`benchmarks.control`): a stock `mlserver start` with the least
#: runtime that runs the same pipeline. Its runs are named as cassava's are, after this word.
CONTROL = "control"


class PairedRun(NamedTuple):
    name: str  # its key in a round: "rest b1 c1", "control rest b1 c1"
    transport: str
    batch: int
    concurrency: int
    control: bool


def paired_name(transport: str, batch: int, concurrency: int, control: bool = False) -> str:
    name = f"{transport} b{batch} c{concurrency}"
    return control_name(name) if control else name


def control_name(name: str) -> str:
    """The control's run of the run named `name` in the same round."""
    return f"{CONTROL} {name}"


def paired_schedule(round_index: int, control: bool) -> list[PairedRun]:
    """The served runs of round `round_index` (from 0), in order. With the control, each `PAIRED_RUNS`
    run is made on both servers, cassava's first in even rounds and the control's first in odd ones,
    so that neither always follows the other."""
    order = ((False, True) if round_index % 2 == 0 else (True, False)) if control else (False,)
    return [
        PairedRun(
            paired_name(transport, batch, concurrency, on_control), transport, batch, concurrency, on_control
        )
        for transport, batch, concurrency in PAIRED_RUNS
        for on_control in order
    ]


def paired_reference(batch: int, concurrency: int, reference_batch: int = SEED_BATCH) -> int:
    """The in-process batch a paired run is compared with: 1 for one image at concurrency 1 (its
    latency), `reference_batch` for the others (their images/s)."""
    return 1 if (batch, concurrency) == (1, 1) else reference_batch


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
    paired: bool = False  # after the runs: the default-settings targets in rounds (`PAIRED_RUNS`)


def default_workers() -> int:
    from cassava.server.config import DEFAULT_PARALLEL_WORKERS

    return DEFAULT_PARALLEL_WORKERS


def _grid_runs() -> tuple[Run, ...]:
    return tuple(Run(t, concurrency=c) for t in ("rest", "grpc") for c in CONCURRENCIES)


def server_plan(best: Backend, backends: Sequence[Backend], quick: bool = False) -> list[ServerPlan]:
    """What runs, in order. On `best`: each serving profile with the grid (the default profile also
    with 16 images per request, the seed's request, the latency-vs-rate sweep and the paired targets),
    then the settings the profiles were chosen against: a parallel worker (MLServer's default) without
    and with batching, and 2 workers with batching. TensorFlow: its default profile with the seed's
    request, and the throughput profile."""
    from cassava.server.config import DEFAULT_PROFILE, PROFILES

    cores = os.cpu_count() or 1
    seed = Run("rest", "tensor", SEED_BATCH, 1)
    plans: list[ServerPlan] = []
    for name in PROFILES:
        default = name == DEFAULT_PROFILE
        runs = _grid_runs()
        if default:
            runs = (*runs, Run("rest", "bytes", SEED_BATCH, 1), Run("grpc", "bytes", SEED_BATCH, 1), seed)
        plans.append(
            ServerPlan(
                ServerConfig.for_profile(best, name),
                runs,
                role="default" if default else "",
                sweep=default,
                paired=default,
            )
        )
    if not quick:
        # The alternatives, each run through the same grid.
        adaptive = {"adaptive_batch_size": ADAPTIVE[0], "adaptive_batch_time": ADAPTIVE[1]}
        alternatives: list[dict[str, Any]] = [
            {"workers": 1},
            {"workers": 1, **adaptive},
            {"workers": 2, "threads": max(1, cores // 2), **adaptive},
        ]
        plans += [ServerPlan(ServerConfig(backend=best, **alt), _grid_runs()) for alt in alternatives]
    if best != "tensorflow" and "tensorflow" in backends:
        short = (Run("rest", concurrency=1), Run("rest", concurrency=32), Run("grpc", concurrency=32))
        for name in PROFILES if not quick else (DEFAULT_PROFILE,):
            default = name == DEFAULT_PROFILE
            plans.append(
                ServerPlan(
                    ServerConfig.for_profile("tensorflow", name),
                    (*short, seed, Run("rest", "tensor", SEED_BATCH, 1, encode_each=True))
                    if default
                    else short,
                    role="default" if default else "",
                )
            )
    return plans
