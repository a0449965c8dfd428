"""The machine and the library versions a run is measured on, recorded in its results."""

from __future__ import annotations

import math
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

#: Distributions whose versions the page shows.
VERSIONED = ("tensorflow", "onnxruntime", "mlserver", "numpy", "pillow", "simplejpeg", "tritonclient")


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
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


# --- the hypervisor's share ---------------------------------------------------------------------------
# On a virtual machine the host can run other guests on this one's cores ("steal" time). Latency over
# several thread and process wake-ups suffers from it far more than throughput does: with 11-17 % of
# the CPU stolen, one served image at concurrency 1 took 5-12 ms more than the in-process pipeline,
# against 2-3 ms on a quiet host. The paired rounds record it, and wait for it to settle first.

#: A round starts once less than this share of the CPU was stolen over the last second...
QUIET_STEAL = 0.03
#: ...or after this long regardless (the round then records what it got).
QUIET_MAX_WAIT_S = 30.0


def cpu_ticks() -> tuple[float, float] | None:
    """(stolen, total) CPU seconds of the whole machine since boot; None where the OS reports no steal."""
    try:
        import psutil
    except ImportError:
        return None
    times = psutil.cpu_times()
    steal = getattr(times, "steal", None)
    return None if steal is None else (float(steal), float(sum(times)))


def steal_share(before: tuple[float, float] | None, after: tuple[float, float] | None) -> float | None:
    """The share of CPU time stolen between two `cpu_ticks` readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def wait_for_quiet(
    threshold: float = QUIET_STEAL, max_wait_s: float = QUIET_MAX_WAIT_S, sample_s: float = 1.0
) -> float:
    """Sleep in `sample_s` steps until less than `threshold` of the CPU was stolen over the last step,
    for at most `max_wait_s`; returns the seconds waited (0 without steal accounting)."""
    started = time.monotonic()
    while time.monotonic() - started < max_wait_s:
        before = cpu_ticks()
        if before is None:
            return 0.0
        time.sleep(sample_s)
        share = steal_share(before, cpu_ticks())
        if share is not None and share < threshold:
            break
    return time.monotonic() - started
