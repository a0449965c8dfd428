"""MLServer's server class with cassava's reliability fixes; started by `cassava.server.launcher`.

What it changes, and why, is listed in `cassava.server.launcher`'s docstring and in docs/reliability.md. This
module imports MLServer (pandas, FastAPI, gRPC: ~6 s of CPU), so the launcher imports it only after its
cheap preflight has passed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from mlserver import MLServer
from mlserver.handlers import DataPlane
from mlserver.settings import ModelSettings, Settings
from mlserver.types import InferenceRequest

from cassava.contract import GRPC_MAX_MESSAGE_LENGTH
from cassava.errors import InputError
from cassava.server import logfilter, patches
from cassava.server.config import PROFILES, RUNTIME_IMPLEMENTATION
from cassava.server.protocol import InvalidRequestError, RequestBounds, check_request_bounds
from cassava.server.rest import harden_rest_app
from cassava.settings import CassavaSettings

logger = logging.getLogger("cassava.server.app")

EXIT_SIGNALLED = 0  # stopped by SIGTERM/SIGINT/SIGQUIT after serving
EXIT_FAILED = 1  # the server stopped on its own: a model failed to load, a server could not start


#: after closing the REST listener, how long connections already accepted may take to send their headers
SETTLE_SECONDS = 2.0

# --- the server -------------------------------------------------------------------------------------------


class _ServingDataPlane:
    """MLServer's DataPlane, whose readiness is also false while draining, while no worker is up, and
    while no model is loaded: MLServer's `all(ready for each model)` is true for none at all, which a
    server whose only model just failed to load reports until it exits (measured: docs/reliability.md).

    A wrapper, not a subclass: a second DataPlane would register its Prometheus metrics twice.
    """

    def __init__(
        self,
        inner: DataPlane,
        registry: Any,
        serving: Callable[[], bool],
        bounds: RequestBounds | None = None,
    ) -> None:
        self._inner = inner
        self._registry = registry
        self._serving = serving
        self._bounds = bounds
        #: the models the server was started with: readiness needs every one of them loaded
        self.expected: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def ready(self) -> bool:
        if not self._serving():
            return False
        # MultiModelRegistry.get_models returns an `itertools.chain`, which is truthy even when empty:
        # MLServer's own check (and ours, before) was true with every model unloaded.
        models = list(await self._registry.get_models())
        loaded = {model.name for model in models if model.ready}
        return bool(models) and all(model.ready for model in models) and self.expected <= loaded

    async def _admit(self, payload: InferenceRequest, name: str, version: str | None) -> None:
        """Before MLServer's DataPlane: the request-wide bounds (the id ends up in response headers), and
        the model must exist. MLServer labels its per-model metrics with the name and version from the
        URL before it looks the model up, so every invented name became a Prometheus series for good
        (10,000 names: /metrics grew from 194 KB to 123 MB)."""
        if self._bounds is not None:
            try:
                check_request_bounds(payload, self._bounds)
            except InputError as err:
                raise InvalidRequestError(str(err)) from None
        await self._registry.get_model(name, version)  # ModelNotFound (404) for an unknown one

    async def infer(self, payload: InferenceRequest, name: str, version: str | None = None) -> Any:
        await self._admit(payload, name, version)
        return await self._inner.infer(payload, name, version)

    async def infer_stream(
        self, payloads: AsyncIterator[InferenceRequest], name: str, version: str | None = None
    ) -> AsyncIterator[Any]:
        async def admitted() -> AsyncIterator[InferenceRequest]:
            async for payload in payloads:
                await self._admit(payload, name, version)
                yield payload

        await self._registry.get_model(name, version)
        async for response in self._inner.infer_stream(admitted(), name, version):
            yield response

    async def model_ready(self, name: str, version: str | None = None) -> bool:
        return bool(await self._inner.model_ready(name, version)) and self._serving()


class CassavaMLServer(MLServer):  # type: ignore[misc]
    _data_plane: Any  # MLServer's DataPlane, then the wrapper around it

    def __init__(
        self, settings: Settings, *, grace_seconds: float, options: CassavaSettings | None = None
    ) -> None:
        self.grace_seconds = grace_seconds
        self.options = options or CassavaSettings()
        self.exit_code = EXIT_FAILED
        self._signalled = False
        self._draining = False
        self._lame_duck = False
        self._shutdown: asyncio.Future[None] | None = None
        self._ready_workers: int | None = None  # None: no parallel workers
        if settings.grpc_max_message_length is None:
            settings.grpc_max_message_length = GRPC_MAX_MESSAGE_LENGTH
        super().__init__(settings)
        patches.apply()
        patches.bound_grpc_requests(self._bounds())
        patches.bound_grpc_parsing(lambda: self.options.max_parameters)
        patches.leave_signals_to_mlserver()
        if not self.options.repository_api:
            patches.disable_grpc_repository_api()
        logfilter.install_access_log_filter()
        pool = patches.default_pool(self)
        if pool is not None:
            patches.watch_workers(pool, self._count_workers)
            patches.release_dead_worker_queues(pool)

    def _count_workers(self, ready: int) -> None:
        self._ready_workers = ready

    def _bounds(self) -> RequestBounds:
        return RequestBounds(
            max_id_chars=self.options.max_request_id_chars,
            max_parameters=self.options.max_parameters,
            max_parameters_bytes=self.options.max_parameters_bytes,
        )

    def serving(self) -> bool:
        return not self._draining and not self._lame_duck and self._ready_workers != 0

    def lame_duck(self) -> bool:
        return self._lame_duck

    def _create_servers(self) -> None:
        self._data_plane = _ServingDataPlane(
            self._data_plane, self._model_registry, self.serving, self._bounds()
        )
        super()._create_servers()
        harden_rest_app(
            patches.rest_app(self),
            self._data_plane,
            self._settings.grpc_max_message_length,
            self.options,
            closing=self.lame_duck,
        )
        patches.no_start_once_stopping(self, lambda: self._shutdown is not None)
        patches.tune_rest_server(
            self,
            max_connections=self.options.max_connections,
            keep_alive_seconds=self.options.keep_alive_seconds,
            header_timeout=self.options.header_timeout_seconds,
            max_header_bytes=self.options.max_header_bytes,
        )

    async def start(self, models_settings: list[ModelSettings]) -> None:
        # MLServer.start returns once every server has stopped: after a signal, or after it stopped
        # itself because a model failed to load.
        self._data_plane.expected = {m.name for m in models_settings}
        await super().start(models_settings)
        if self._shutdown is not None:
            await self._shutdown
        self.exit_code = EXIT_SIGNALLED if self._signalled else EXIT_FAILED

    async def stop(self, sig: int | None = None) -> None:
        if self._shutdown is None:
            # The first call says why: a signal, or MLServer stopping itself after a failed load. Later
            # calls change nothing (uvicorn re-raises the signal it was stopped with, which calls again).
            self._signalled = sig is not None
            self._shutdown = asyncio.ensure_future(self._stop_in_order(sig))
        await asyncio.shield(self._shutdown)

    async def _stop_in_order(self, sig: int | None) -> None:
        started = time.monotonic()
        why = signal.Signals(sig).name if sig else "the server could not start"
        # SIGTERM only: Ctrl-C (SIGINT) at a terminal means stop now.
        if sig == signal.SIGTERM and self.options.lame_duck_seconds > 0:
            # Platforms may send SIGTERM before they stop routing to the pod: keep answering (not ready,
            # and every REST response closes its connection, so keep-alive clients reconnect elsewhere).
            self._lame_duck = True
            logger.info(
                "%s: reporting not-ready, still answering for %.1f s (lame duck)",
                why,
                self.options.lame_duck_seconds,
            )
            await asyncio.sleep(self.options.lame_duck_seconds)
        self._draining = True
        logger.info(
            "shutting down (%s): refusing new connections, finishing in-flight requests for up to %.0f s",
            why,
            self.grace_seconds,
        )
        await asyncio.gather(_logged(self._drain_grpc(), "gRPC"), _logged(self._drain_rest(sig), "REST"))
        if self._inference_pool_registry is not None:
            await _logged(self._inference_pool_registry.close(), "inference workers")
        if self._kafka_server is not None:
            await _logged(self._kafka_server.stop(), "Kafka")
        if self._metrics_server is not None:
            await _logged(self._metrics_server.stop(sig), "metrics")
            patches.stop_metrics_server(self)
        logger.info("shutdown complete in %.1f s", time.monotonic() - started)

    async def _drain_grpc(self) -> None:
        server = patches.grpc_aio_server(self)
        if server is not None:
            # Refuses new calls at once; in-flight calls get the grace period (MLServer hard-codes 5 s).
            await server.stop(grace=self.grace_seconds)

    async def _drain_rest(self, sig: int | None) -> None:
        server = patches.uvicorn_server(self)
        if server is not None:
            # Refuse new connections first. uvicorn's own shutdown then closes every connection that has
            # not yet delivered its request headers (no request cycle): a client that connected just
            # before SIGTERM would see "disconnected without a response". Let those arrive (briefly).
            for listener in patches.listeners(server):
                listener.close()
            settle = time.monotonic() + min(SETTLE_SECONDS, self.grace_seconds)
            while time.monotonic() < settle and patches.connections_without_request(server):
                await asyncio.sleep(0.02)
        # uvicorn: close idle connections, wait for the others. Not started yet: it exits after startup.
        await self._rest_server.stop(sig)
        if server is None:
            return
        deadline = time.monotonic() + self.grace_seconds
        while time.monotonic() < deadline and (
            any(s.is_serving() for s in patches.listeners(server))
            or patches.open_connections(server)
            or patches.running_requests(server)
        ):
            await asyncio.sleep(0.05)
        if patches.running_requests(server):
            logger.warning(
                "%d REST requests still running after %.0f s; closing them",
                patches.running_requests(server),
                self.grace_seconds,
            )
            server.force_exit = True


async def _logged(step: Awaitable[Any], what: str) -> None:
    """One shutdown step; its failure is logged and the next step runs anyway."""
    try:
        await step
    except Exception:
        logger.exception("stopping %s failed; continuing the shutdown", what)


# --- preflight --------------------------------------------------------------------------------------------


def _is_cassava(model: ModelSettings) -> bool:
    # By name: ModelSettings.implementation re-imports (reloads) the module on every access, so the
    # class it returns is never `CassavaRuntime` itself.
    mro = getattr(model.implementation, "__mro__", ())
    return any(f"{c.__module__}.{c.__qualname__}" == RUNTIME_IMPLEMENTATION for c in mro)


async def preflight(models: list[ModelSettings]) -> list[str]:
    """Check every cassava model's directory as its runtime will resolve it. Raises CassavaError."""
    checked = []
    for model in models:
        if _is_cassava(model):
            model_dir = await model.implementation(model).preflight()
            checked.append(f"{model.name}: {model_dir}")
    return checked


def server_options(models: list[ModelSettings]) -> CassavaSettings:
    """The server-wide defences (header, body, connection limits...): the first cassava model's settings
    (its `parameters.extra` and CASSAVA_* variables), else the defaults."""
    for model in models:
        if _is_cassava(model):
            return CassavaSettings.from_extra(model.parameters.extra if model.parameters else None)
    return CassavaSettings()


def apply_profile(settings: Settings, models: list[ModelSettings]) -> str | None:
    """CASSAVA_PROFILE, when it is set, over the files: MLServer's parallel workers and each cassava
    model's adaptive batching become the profile's, so one variable in a manifest switches a pod built
    with the default folder (deploy/components/profile). Returns what it set, for the log, or None."""
    if "CASSAVA_PROFILE" not in os.environ:
        return None
    name = CassavaSettings().profile
    profile = PROFILES[name]
    settings.parallel_workers = profile.parallel_workers
    for model in models:
        if _is_cassava(model):
            # MLServer reads max_batch_size 1 (or time 0) as "no adaptive batching".
            model.max_batch_size = profile.max_batch_size
            model.max_batch_time = profile.max_batch_time
    return f"profile {name} (CASSAVA_PROFILE): {profile.describe()}"


def grace_seconds(models: list[ModelSettings]) -> float:
    graces = [
        CassavaSettings.from_extra(m.parameters.extra if m.parameters else None).shutdown_grace_seconds
        for m in models
        if _is_cassava(m)
    ]
    default: float = CassavaSettings.model_fields["shutdown_grace_seconds"].default
    return max(graces, default=default)
