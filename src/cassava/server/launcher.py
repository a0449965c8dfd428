"""`python -m cassava.server.launcher FOLDER`: `mlserver start FOLDER`, with docs/reliability.md's guarantees.

It runs MLServer's own server class, settings loader and code paths, and changes only what `mlserver start`
1.7.1 gets wrong for a production pod (each measured; docs/reliability.md):

- a missing or corrupt model directory: MLServer imports TensorFlow in a worker (30+ s), logs "Some of the
  models failed to load during startup!" and exits 0; a folder with no model-settings.json serves nothing
  and reports ready. Here: a preflight (`CassavaRuntime.preflight`, no TensorFlow) exits 2 in seconds
  naming the path, and a model that fails to load later exits 1. MLServer also reports ready between
  the failed load and its exit (no model = all models ready); here readiness needs a model.
- SIGTERM: MLServer closes the inference workers before the REST and gRPC servers, so in-flight requests
  fail with 500, requests still arriving get 500s, and the process can hang. Here: stop accepting (sockets
  closed: connection refused), let in-flight requests finish for up to `shutdown_grace_seconds`, then
  close the workers, then the metrics server; every step bounded, a second signal changes nothing. After
  a worker crash under load the process never exited (a dead worker's queue feeder thread, joined at
  exit); here those queues are released.
- REST bodies have no size limit, and a `Content-Encoding: gzip` body is decompressed with no bound. Here:
  bodies over `grpc_max_message_length` (one setting for both transports) get 413, before the body is
  parsed; gzip is decompressed with the same bound; other encodings get 415.
- a malformed body gets FastAPI's 422 `{"detail": [...]}`, which echoes the input. Here: 400 with the
  protocol's `{"error": "..."}` naming the field, never echoing values.
- `/infer_stream` and `/generate_stream` start a 200 event stream before the model runs, so a rejected
  request ends as a broken stream. Here: the model answers first; an error is a normal JSON 4xx.
- while the only parallel worker restarts after a crash, every request gets 500 ("coroutine raised
  StopIteration"). Here: 503 with a message, and readiness reports false until a worker is back.
- `debug` (MLServer's default: true) returns Python tracebacks in 500 bodies. Here: never.
- hostile clients (docs/reliability.md, section 1b): the repository API (anyone could unload the model)
  is off unless `repository_api`; readiness needs every model loaded; request ids, `parameters`, header
  count and size are bounded before the expensive work; headers and bodies have read deadlines;
  connections are capped (503 + Retry-After); invented model names create no metric series; MLServer's
  CDN-loading docs pages are off unless `api_docs`; the access log drops query strings.
- SIGTERM: a lame-duck period first (`lame_duck_seconds`: not ready, still answering, `Connection:
  close`), then the drain below; uvicorn no longer takes the signal for itself.
- a port already in use: MLServer hung (REST failed to bind, gRPC bound through SO_REUSEPORT). Here:
  exit 2 within seconds, naming the port.
- speed, not safety: the REST infer route skips FastAPI's per-request machinery, and the gzip middleware
  makes its compressor only for answers it compresses (docs/performance.md has the figures).

`ServerProcess` (tests, benchmarks) and `cassava serve` run this module; so should the container:
`python -m cassava.server.launcher /opt/cassava/model` in place of `mlserver start /opt/cassava/model`.

Exit codes: 0 stopped by a signal; 1 stopped on its own (a model failed to load); 2 nothing started
(unreadable settings, no model, a missing or corrupt model directory, a port already in use). `--check` runs
only the preflight. The MLServer-side code is in `cassava.server.app` (the server) and
`cassava.server.rest` (REST).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing
import os
import socket
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from cassava.backends import artifact_file
from cassava.errors import CassavaError
from cassava.model_store import check_model_files
from cassava.server.config import RUNTIME_IMPLEMENTATION
from cassava.settings import CassavaSettings

logger = logging.getLogger("cassava.server.launcher")

EXIT_FAILED = 1
EXIT_CONFIG = 2


def _fail(message: str) -> int:
    # stderr as well as the log: a container's last words must say what to fix.
    print(f"cassava: {message}", file=sys.stderr, flush=True)
    return EXIT_CONFIG


def _ports(settings: Any) -> dict[str, int]:
    ports = {"REST (http_port)": settings.http_port, "gRPC (grpc_port)": settings.grpc_port}
    if settings.metrics_endpoint and settings.metrics_port:
        ports["metrics (metrics_port)"] = settings.metrics_port
    return ports


def ports_in_use(host: str, ports: dict[str, int]) -> str | None:
    """A message naming the first port that cannot be bound, else None.

    MLServer would start anyway: uvicorn fails to bind the REST port, but gRPC binds through
    SO_REUSEPORT next to whoever holds it, and the process then hung in its exit for over a minute. A
    plain bind (no SO_REUSEPORT) of each port, released at once, finds the conflict in milliseconds."""
    for what, port in ports.items():
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            # SO_REUSEADDR as uvicorn and gRPC set it: a port whose last connections are in TIME_WAIT
            # is free; one that something listens on is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as err:
                return (
                    f"the {what} port {port} on {host} is already in use ({err.strerror}); stop the "
                    "other server or choose another port (MLSERVER_HTTP_PORT, MLSERVER_GRPC_PORT, "
                    "MLSERVER_METRICS_PORT)"
                )
    return None


def declared_ports(folder: Path) -> tuple[str, dict[str, int]]:
    """The host and ports MLServer will read for `folder`, without importing it: settings.json first,
    then MLSERVER_* variables for keys the file leaves out (MLServer 1.7.1's rule, mlserver/settings.py
    with pydantic-settings: init values win over the environment), then MLServer's defaults."""
    path = folder / "settings.json"
    try:
        found = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        found = {}  # MLServer's own loader reports it, with its message
    found = found if isinstance(found, dict) else {}

    def value(key: str, default: Any) -> Any:
        if key in found:
            return found[key]
        return os.environ.get(f"MLSERVER_{key.upper()}", default)

    ports = {
        "REST (http_port)": int(value("http_port", 8080)),
        "gRPC (grpc_port)": int(value("grpc_port", 8081)),
    }
    if value("metrics_endpoint", "/metrics") not in (None, "", "null") and value("metrics_port", 8082):
        ports["metrics (metrics_port)"] = int(value("metrics_port", 8082))
    return str(value("host", "0.0.0.0")), ports


def loads_models_at_startup() -> bool:
    """MLServer's `load_models_at_startup` (MLSERVER_LOAD_MODELS_AT_STARTUP), read as MLServer's
    pydantic settings read a bool, without importing MLServer."""
    value = os.environ.get("MLSERVER_LOAD_MODELS_AT_STARTUP", "true")
    try:
        return bool(TypeAdapter(bool).validate_python(value))
    except ValidationError:
        return True  # MLServer itself refuses the value, with its own message


def quick_preflight(folder: Path) -> list[str]:
    """Checks that need no MLServer import (which alone costs ~6 s of CPU): the folder holds a model,
    and every cassava model whose directory is given explicitly (CASSAVA_MODEL_DIR or
    `parameters.extra.model_dir`, as in the container and in `ServerProcess`) has its files. Models that
    rely on `parameters.uri` or the cache are checked after the import, as their runtime resolves them.
    Raises CassavaError or ValueError."""
    found = sorted(folder.glob("**/model-settings.json")) if folder.is_dir() else []
    if not found and not loads_models_at_startup():
        # Seldon Core 2: its agent fills the folder through the repository API once MLServer is live.
        return []
    if not found:
        raise CassavaError(
            f"no model-settings.json under {folder}; MLServer would serve no model and report ready. "
            "Point the command at the model folder (model/ in this repository)"
        )
    checked = []
    for path in found:
        try:
            model = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise CassavaError(f"{path} is not readable JSON: {err}") from None
        if not isinstance(model, dict) or model.get("implementation") != RUNTIME_IMPLEMENTATION:
            continue
        parameters = model.get("parameters") or {}
        extra = parameters.get("extra") if isinstance(parameters, dict) else None
        options = CassavaSettings.from_extra(extra)
        if options.model_dir is not None:
            check_model_files(options.model_dir.expanduser(), need=artifact_file(options.backend))
            checked.append(f"{model.get('name', path.parent.name)}: {options.model_dir}")
    return checked


async def run(folder: str, *, check_only: bool = False) -> int:
    """Everything after `quick_preflight` (which `main` runs before importing MLServer)."""
    from mlserver.cli.serve import load_settings

    from cassava.server import app as serving

    try:
        settings, models = await load_settings(folder)
    except Exception as err:
        return _fail(f"cannot read the MLServer settings in {folder}: {type(err).__name__}: {err}")
    try:
        profile = serving.apply_profile(settings, models)
        checked = await serving.preflight(models)
        grace = serving.grace_seconds(models)
        options = serving.server_options(models)
    except CassavaError as err:
        return _fail(str(err))
    except ValidationError as err:
        return _fail(f"invalid cassava settings under {folder}: {err}")
    for line in checked:
        logger.info("preflight ok: %s", line)
    if profile:
        logger.info("%s", profile)
    if check_only:
        print(json.dumps({"folder": folder, "models": checked, "shutdown_grace_seconds": grace}))
        return 0
    taken = ports_in_use(settings.host, _ports(settings))
    if taken:
        return _fail(taken)
    server = serving.CassavaMLServer(settings, grace_seconds=grace, options=options)
    await server.start(models)
    return server.exit_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cassava.server.launcher",
        description="Serve a model folder like `mlserver start FOLDER`, with cassava's reliability fixes.",
    )
    parser.add_argument("folder", help="folder with settings.json and model-settings.json (e.g. model/)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="only check the settings and the model directory (no TensorFlow import), then exit 0 or 2",
    )
    args = parser.parse_args(argv)
    try:
        quick_preflight(Path(args.folder))
    except CassavaError as err:
        return _fail(str(err))
    except ValidationError as err:
        return _fail(f"invalid cassava settings under {args.folder}: {err}")
    if not args.check:
        # Before MLServer's import (~6 s), so that a taken port is reported within a second or two;
        # `run` checks again with the settings as MLServer read them.
        try:
            taken = ports_in_use(*declared_ports(Path(args.folder)))
        except (TypeError, ValueError):
            taken = None  # an unreadable port: MLServer's settings loader names it
        if taken:
            return _fail(taken)

    from mlserver.logging import configure_logger
    from mlserver.utils import install_uvloop_event_loop

    # cassava's own lines (preflight, shutdown) in MLServer's format, on its stream.
    cassava_logger = logging.getLogger("cassava")
    cassava_logger.setLevel(logging.INFO)
    for handler in configure_logger().handlers:
        if handler not in cassava_logger.handlers:
            cassava_logger.addHandler(handler)
    cassava_logger.propagate = False
    install_uvloop_event_loop()
    try:
        return asyncio.run(run(args.folder, check_only=args.check))
    except Exception:
        # MLServer spawns its inference workers when the server object is built; if anything fails after
        # that, multiprocessing would wait for them at exit, for ever (seen: a crash in the constructor
        # left a process up, listening on nothing, until SIGKILL). Exit instead.
        logger.exception("the server failed; stopping its worker processes")
        for child in multiprocessing.active_children():
            child.kill()
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
