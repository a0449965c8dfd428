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
VERSIONED = (
    "tensorflow",
    "onnxruntime",
    "mlserver",
    "numpy",
    "pillow",
    "simplejpeg",
    "pybase64",
    "tritonclient",
)


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
# On a virtual machine the host can run other guests on this one's cores ("steal" time). Here it stole
# 2 % of an idle machine's CPU and 19-22 % of a loaded one's, in the same minute: the host's cores were
# oversubscribed, and took their share back whenever this guest asked for its own. Latency across
# several thread and process wake-ups suffers from it far more than throughput: with that much stolen,
# one served image at concurrency 1 took 10-20 ms more than the in-process pipeline, against 2-3 ms on
# a quiet host. The paired rounds record it, and wait for it to settle first.

#: A round starts once the host stole less than this share of the CPU while both cores were busy...
QUIET_STEAL = 0.05
#: ...or after this long regardless (the round then records what it got).
QUIET_MAX_WAIT_S = 60.0
#: How long each probe keeps the cores busy, and the pause between probes.
PROBE_S = 1.0
PROBE_PAUSE_S = 2.0


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


def steal_under_load(seconds: float = PROBE_S) -> float | None:
    """The share the host steals while every core is busy: an idle guest is rarely robbed, so only a
    loaded probe tells whether a measurement would be. numpy's matrix products release the GIL, so one
    thread per core keeps them all busy."""
    import threading

    import numpy as np

    before = cpu_ticks()
    if before is None:
        return None
    matrix = np.random.default_rng(0).random((256, 256), dtype=np.float32)
    deadline = time.monotonic() + seconds

    def spin() -> None:
        while time.monotonic() < deadline:
            matrix @ matrix

    threads = [threading.Thread(target=spin) for _ in range(os.cpu_count() or 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return steal_share(before, cpu_ticks())


def wait_for_quiet(threshold: float = QUIET_STEAL, max_wait_s: float = QUIET_MAX_WAIT_S) -> float:
    """Probe (`steal_under_load`) until the host steals less than `threshold`, pausing between probes,
    for at most `max_wait_s`; returns the seconds waited (0 without steal accounting)."""
    started = time.monotonic()
    while (share := steal_under_load()) is not None and share >= threshold:
        if time.monotonic() - started + PROBE_PAUSE_S > max_wait_s:
            break
        time.sleep(PROBE_PAUSE_S)
    return time.monotonic() - started
