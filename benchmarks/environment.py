"""The machine and the library versions a run is measured on, recorded in its results."""

from __future__ import annotations

import math
import os
import platform
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
