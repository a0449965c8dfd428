"""A server of the bench's own: `mlserver start` on free ports with the options under test, its cold
start measured from process start to ready."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cassava.client import Transport
from cassava.settings import Backend, Profile

if TYPE_CHECKING:
    from cassava.server.process import ServerProcess


@dataclass(frozen=True)
class ServerConfig:
    """How `cassava bench` (and `benchmarks/`) start a server: cassava's runtime options, MLServer's
    parallel workers and adaptive batching (`adaptive_batch_size` requests per merged batch, waiting
    at most `adaptive_batch_time` seconds; 0 = off)."""

    backend: Backend = "tensorflow"
    workers: int | None = None  # None: the project's default (cassava.server.config)
    adaptive_batch_size: int = 0
    adaptive_batch_time: float = 0.0
    threads: int | None = None
    fast_decode: bool = False
    profile: str = ""  # the serving profile these settings are (`for_profile`), named in the label

    @classmethod
    def for_profile(cls, backend: Backend, profile: Profile, threads: int | None = None) -> ServerConfig:
        """The server a profile (`cassava.server.config.PROFILES`) starts, with nothing else changed."""
        from cassava.server.config import PROFILES

        chosen = PROFILES[profile]
        return cls(
            backend=backend,
            workers=chosen.parallel_workers,
            adaptive_batch_size=chosen.max_batch_size if chosen.batching else 0,
            adaptive_batch_time=chosen.max_batch_time if chosen.batching else 0.0,
            threads=threads,
            profile=profile,
        )

    @classmethod
    def from_options(
        cls,
        backend: Backend,
        *,
        profile: Profile | None = None,
        workers: int | None = None,
        adaptive_batch_size: int = 0,
        adaptive_batch_time: float = 0.0,
        threads: int | None = None,
        fast_decode: bool = False,
    ) -> ServerConfig:
        """What `cassava bench` starts: the profile's workers and batching (the project's defaults
        without one), with the workers and adaptive batching given explicitly on top."""
        base = (
            cls.for_profile(backend, profile, threads) if profile else cls(backend=backend, threads=threads)
        )
        return replace(
            base,
            fast_decode=fast_decode,
            workers=base.workers if workers is None else workers,
            adaptive_batch_size=adaptive_batch_size or base.adaptive_batch_size,
            adaptive_batch_time=adaptive_batch_time if adaptive_batch_size else base.adaptive_batch_time,
        )

    @property
    def label(self) -> str:
        from cassava.server.config import DEFAULT_PARALLEL_WORKERS

        workers = DEFAULT_PARALLEL_WORKERS if self.workers is None else self.workers
        batching = (
            f"batch {self.adaptive_batch_size}/{self.adaptive_batch_time * 1000:g}ms"
            if self.adaptive_batch_size > 1
            else "no batching"
        )
        threads = "" if self.threads is None else f", {self.threads} thr"
        named = f"{self.profile} profile: " if self.profile else ""
        return f"{named}{self.backend}, {workers} workers, {batching}{threads}"

    def extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"backend": self.backend}
        if self.threads is not None:
            extra["inference_threads"] = self.threads
        if self.fast_decode:
            extra["fast_decode"] = True
        return extra

    def options(self) -> dict[str, Any]:
        if self.adaptive_batch_size <= 1:
            return {}
        return {"max_batch_size": self.adaptive_batch_size, "max_batch_time": self.adaptive_batch_time}

    def server(self) -> dict[str, Any]:
        return {} if self.workers is None else {"parallel_workers": self.workers}


@dataclass
class StartedServer:
    process: ServerProcess
    cold_start_s: float

    def target(self, transport: Transport) -> str:
        return self.process.http_url if transport == "rest" else f"grpc://{self.process.grpc_target}"

    def stop(self) -> None:
        self.process.stop()


def start_server(
    workdir: Path, model_dir: Path, config: ServerConfig, *, timeout_s: float = 180.0
) -> StartedServer:
    """Start `mlserver start` on free ports with `config`; cold start = process start to ready."""
    from cassava.server.process import ServerProcess

    process = ServerProcess.for_model(
        workdir,
        model_dir=model_dir,
        extra=config.extra(),
        server=config.server(),
        options=config.options(),
    )
    started = time.monotonic()
    process.start(timeout=timeout_s)
    return StartedServer(process, time.monotonic() - started)
