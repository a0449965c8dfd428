"""The MLServer configuration of the cassava model, written once, here.

`model/model-settings.json` and `model/settings.json` (what `mlserver start model/` reads) are these
dictionaries on disk; a test keeps them equal. `cassava serve` and the test harness write the same
dictionaries, with their own ports and worker count, into a run folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cassava.contract import GRPC_MAX_MESSAGE_LENGTH, INPUT_SPECS, MODEL_NAME, OUTPUT_SPECS
from cassava.settings import CassavaSettings, Profile


@dataclass(frozen=True)
class ServingProfile:
    """MLServer's side of a profile: parallel inference workers and adaptive batching (requests that
    arrive within `max_batch_time` seconds merged into one `predict`, up to `max_batch_size`)."""

    parallel_workers: int
    max_batch_size: int = 1
    max_batch_time: float = 0.0

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1

    def server(self) -> dict[str, Any]:
        return {"parallel_workers": self.parallel_workers}

    def options(self) -> dict[str, Any]:
        """model-settings.json's batching keys (none when the profile does not batch)."""
        if not self.batching:
            return {}
        return {"max_batch_size": self.max_batch_size, "max_batch_time": self.max_batch_time}

    def describe(self) -> str:
        batching = (
            f"adaptive batching {self.max_batch_size} requests / {self.max_batch_time * 1000:g} ms"
            if self.batching
            else "no batching"
        )
        return f"{self.parallel_workers} parallel workers, {batching}"


# The measurements behind them: docs/performance.md, "Why the defaults are what they are". latency:
# inference in the server process (a worker process added up to 3 ms to one image's round trip) and no
# batching window for a lone request to wait out. throughput: MLServer's adaptive batcher merges
# requests that arrive together into one model call (more images/s at 32 clients over REST).
PROFILES: dict[Profile, ServingProfile] = {
    "latency": ServingProfile(parallel_workers=0),
    "throughput": ServingProfile(parallel_workers=0, max_batch_size=8, max_batch_time=0.01),
}
#: The profile of a server nobody configured: what a single replica needs (`CassavaSettings.profile`).
DEFAULT_PROFILE: Profile = CassavaSettings.model_fields["profile"].default
DEFAULT_PARALLEL_WORKERS = PROFILES[DEFAULT_PROFILE].parallel_workers

#: model-settings.json `implementation`: the runtime's import path (kept equal to the class by a test;
#: written as a string so that writing a model folder does not import MLServer).
RUNTIME_IMPLEMENTATION = "cassava.server.runtime.CassavaRuntime"


def model_settings(
    extra: dict[str, Any] | None = None, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """model-settings.json: `extra` becomes `parameters.extra` (cassava's options), `options` are
    MLServer's own model settings, such as adaptive batching's `max_batch_size` and `max_batch_time`
    (default: those of the profile `extra` names, else of the default profile)."""
    if options is None:
        options = profile_of(extra).options()
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


def profile_name(extra: dict[str, Any] | None) -> Profile:
    """The serving profile a model's `parameters.extra` names (CASSAVA_PROFILE does not count here: the
    launcher applies it when the server starts)."""
    name = (extra or {}).get("profile", DEFAULT_PROFILE)
    if name not in PROFILES:
        raise ValueError(f"unknown serving profile {name!r}; choose one of {', '.join(PROFILES)}")
    return name  # type: ignore[no-any-return]


def profile_of(extra: dict[str, Any] | None) -> ServingProfile:
    return PROFILES[profile_name(extra)]


def server_settings(profile: Profile = DEFAULT_PROFILE, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "grpc_max_message_length": GRPC_MAX_MESSAGE_LENGTH,
        **PROFILES[profile].server(),
        # MLServer's default (debug: true) writes an access-log line per REST request and a log line per
        # gRPC call, and puts tracebacks into 500 bodies. MLSERVER_DEBUG=true turns them back on.
        "debug": False,
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
    (folder / "settings.json").write_text(
        json.dumps(server_settings(profile_name(extra), **(server or {})), indent=2) + "\n"
    )
    return folder
