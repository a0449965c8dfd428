"""The MLServer configuration of the cassava model, written once, here.

`model/model-settings.json` and `model/settings.json` (what `mlserver start model/` reads) are these
dictionaries on disk; a test keeps them equal. `cassava serve` and the test harness write the same
dictionaries, with their own ports and worker count, into a run folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cassava.contract import GRPC_MAX_MESSAGE_LENGTH, INPUT_SPECS, MODEL_NAME, OUTPUT_SPECS

# One inference worker, adaptive batching off (no `max_batch_size`/`max_batch_time` in model-settings)
# and the backend's own thread count (all cores). On a quiet 2-core machine 0/1/2 workers perform
# alike; under CPU contention 0 workers fell far behind, and batching costs single-image latency
# (docs/performance.md, "Why the defaults are what they are").
DEFAULT_PARALLEL_WORKERS = 1

#: model-settings.json `implementation`: the runtime's import path (kept equal to the class by a test;
#: written as a string so that writing a model folder does not import MLServer).
RUNTIME_IMPLEMENTATION = "cassava.server.runtime.CassavaRuntime"


def model_settings(
    extra: dict[str, Any] | None = None, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """model-settings.json: `extra` becomes `parameters.extra` (cassava's options), `options` are
    MLServer's own model settings, such as adaptive batching's `max_batch_size` and `max_batch_time`."""
    settings: dict[str, Any] = {
        "name": MODEL_NAME,
        "implementation": RUNTIME_IMPLEMENTATION,
        "inputs": [{"name": n, "datatype": d, "shape": list(s)} for n, d, s in INPUT_SPECS],
        "outputs": [{"name": n, "datatype": d, "shape": list(s)} for n, d, s in OUTPUT_SPECS],
    }
    settings.update({k: v for k, v in (options or {}).items() if v is not None})
    if extra:
        settings["parameters"] = {"extra": extra}
    return settings


def server_settings(**overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "grpc_max_message_length": GRPC_MAX_MESSAGE_LENGTH,
        "parallel_workers": DEFAULT_PARALLEL_WORKERS,
    }
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return settings


def write_model_folder(
    folder: Path,
    *,
    extra: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
) -> Path:
    """Write a folder that `mlserver start FOLDER` serves (`options`: see `model_settings`)."""
    folder.mkdir(parents=True, exist_ok=True)
    settings = model_settings(extra, options)
    (folder / "model-settings.json").write_text(json.dumps(settings, indent=2) + "\n")
    (folder / "settings.json").write_text(json.dumps(server_settings(**(server or {})), indent=2) + "\n")
    return folder
