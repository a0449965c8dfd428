"""What the reliability tests (test_faults, test_limits, test_fuzz_api) share: a bounded load loop that
counts every request's outcome, worker and log inspection, the figures file, and raw gRPC calls.

The gRPC functions run in the `grpc_pool` process (tests/conftest.py), which imports this module by
name: nothing here imports MLServer, and tritonclient's gRPC modules only inside those functions.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil

from cassava.bench.images import generate_images
from cassava.contract import MODEL_NAME
from cassava.server.process import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
#: The figures of the last run; docs/reliability.md quotes them.
FIGURES = ROOT / "out" / "reliability" / "figures.json"
#: A server start is 20-30 s on an idle machine and several times that on a busy one: a bound, not a timing.
START_TIMEOUT = 600.0


def record_figures(section: str, figures: dict[str, Any]) -> None:
    """Merge `figures` into out/reliability/figures.json under `section`, and print them."""
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    everything = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    everything[section] = {"recorded": time.strftime("%Y-%m-%d %H:%M:%S"), **figures}
    FIGURES.write_text(json.dumps(everything, indent=2, sort_keys=True) + "\n")
    print(f"\n[reliability] {section}: {json.dumps(figures, sort_keys=True)}")


def jpeg(width: int = 320, height: int = 240, seed: int = 0, quality: int = 90) -> bytes:
    """One of the bench's synthetic leaf JPEGs (`cassava.bench.generate_images`)."""
    (data,) = generate_images(1, (width, height), quality=quality, seed=seed)
    return data


def images_body(images: list[bytes]) -> dict[str, Any]:
    data = [base64.b64encode(image).decode() for image in images]
    return {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [len(data)], "data": data}]}


def infer_url(server: ServerProcess) -> str:
    return f"{server.http_url}/v2/models/{MODEL_NAME}/infer"


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> float:
    """Poll until `condition()`; return the seconds it took, or fail after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def is_ready(server: ServerProcess) -> bool:
    try:
        return httpx.get(f"{server.http_url}/v2/health/ready", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def worker_pids(server: ServerProcess) -> list[int]:
    """MLServer's parallel inference workers: the spawned children (not the resource tracker)."""
    children = psutil.Process(server.pid).children(recursive=True)
    pids = []
    for child in children:
        try:
            if any("spawn_main" in part for part in child.cmdline()):
                pids.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return sorted(pids)


def log_text(server: ServerProcess) -> str:
    assert server.log_path is not None
    return server.log_path.read_text(errors="replace")


# --- load -------------------------------------------------------------------------------------------------

ANSWERED = "answered"  # HTTP 200
REFUSED = "refused"  # connection refused: nobody listening, nothing processed
UNAVAILABLE = "unavailable"  # HTTP 503: refused with a message, nothing processed
FAILED = "failed"  # any other 5xx
REJECTED = "rejected"  # a 4xx: the request itself was wrong (never, with the load's valid body)
DROPPED = "dropped"  # the connection closed without an answer
TIMED_OUT = "timed_out"


@dataclass(frozen=True)
class Request:
    started: float
    ended: float
    outcome: str
    detail: str = ""


@dataclass
class LoadLoop:
    """`threads` clients posting `body` as fast as they are answered, for at most `max_seconds`.

    Every request opens a new connection, so a closed listener shows as "connection refused" rather
    than as a kept-alive connection closing under it, and every request's start, end and outcome is kept.
    """

    url: str
    body: dict[str, Any]
    threads: int = 4
    max_seconds: float = 300.0
    timeout: float = 60.0
    requests: list[Request] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)
    _active: int = 0

    def __enter__(self) -> LoadLoop:
        self._content = json.dumps(self.body).encode()
        self._deadline = time.monotonic() + self.max_seconds
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(self.timeout + 10)

    def _run(self) -> None:
        headers = {"content-type": "application/json"}
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            started = time.monotonic()
            outcome, detail = ANSWERED, ""
            with self._lock:
                self._active += 1
            try:
                response = httpx.post(self.url, content=self._content, headers=headers, timeout=self.timeout)
                status = response.status_code
                if status != 200:
                    outcome = {503: UNAVAILABLE}.get(status, FAILED if status >= 500 else REJECTED)
                    detail = f"{status} {response.text[:200]}"
            except httpx.ConnectError as err:
                outcome, detail = REFUSED, str(err)[:200]
            except httpx.TimeoutException as err:
                outcome, detail = TIMED_OUT, type(err).__name__
            except httpx.TransportError as err:
                outcome, detail = DROPPED, f"{type(err).__name__}: {err}"[:200]
            with self._lock:
                self.requests.append(Request(started, time.monotonic(), outcome, detail))
                self._active -= 1
            if outcome in (REFUSED, UNAVAILABLE):
                time.sleep(0.05)  # a client's back-off; keeps a refusing server from being spun on

    def in_progress(self) -> int:
        """Requests sent and not yet answered, now."""
        with self._lock:
            return self._active

    def snapshot(self) -> list[Request]:
        with self._lock:
            return list(self.requests)

    def count(self, outcome: str = ANSWERED, since: float = 0.0) -> int:
        return sum(1 for r in self.snapshot() if r.outcome == outcome and r.started >= since)

    def tally(self, requests: list[Request] | None = None) -> dict[str, int]:
        chosen = self.snapshot() if requests is None else requests
        counts = Counter(r.outcome for r in chosen)
        return {"sent": len(chosen), **{k: counts.get(k, 0) for k in sorted(set(counts) | {ANSWERED})}}


def in_flight_at(requests: list[Request], moment: float) -> list[Request]:
    return [r for r in requests if r.started <= moment < r.ended]


# --- gRPC (run in the grpc_pool process) -------------------------------------------------------------


@dataclass(frozen=True)
class GrpcOutcome:
    ok: bool
    code: str = ""
    message: str = ""
    size: int = 0


@contextlib.contextmanager
def _stub(target: str, max_send: int) -> Iterator[Any]:
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    options = [("grpc.max_send_message_length", max_send), ("grpc.max_receive_message_length", max_send)]
    with grpc.insecure_channel(target, options=options) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def infer_images_of_size(
    target: str, images: list[bytes], message_size: int | None = None, max_image_bytes: int = 0
) -> GrpcOutcome:
    """ModelInfer with `images` as raw BYTES. With `message_size`, zero bytes are appended to the images
    (after a JPEG's end marker, where decoders ignore them), each up to `max_image_bytes`, so that the
    serialized message is exactly `message_size` bytes: what gRPC's size limit counts."""
    import grpc
    from tritonclient.grpc import service_pb2

    def build(files: list[bytes]) -> Any:
        request = service_pb2.ModelInferRequest(model_name=MODEL_NAME)
        request.inputs.add(name="images", datatype="BYTES", shape=[len(files)])
        # The values travel in raw_input_contents, each length-prefixed as the protocol says.
        request.raw_input_contents.append(b"".join(len(f).to_bytes(4, "little") + f for f in files))
        return request

    files = list(images)
    request = build(files)
    if message_size is not None:
        for i in range(len(files)):
            missing = message_size - request.ByteSize()
            files[i] += b"\0" * max(0, min(missing, max_image_bytes - len(files[i])))
            request = build(files)
        while request.ByteSize() > message_size and files[-1].endswith(b"\0"):
            files[-1] = files[-1][:-1]  # a length prefix grew by a byte: take it back
            request = build(files)
        if request.ByteSize() != message_size:
            return GrpcOutcome(False, "UNBUILDABLE", f"could not pad to {message_size}", request.ByteSize())
    size = request.ByteSize()
    with _stub(target, max_send=size + 1024) as stub:
        try:
            stub.ModelInfer(request, timeout=120)
        except grpc.RpcError as err:
            return GrpcOutcome(False, str(err.code().name), str(err.details()), size)
    return GrpcOutcome(True, "OK", "", size)


def infer_raw_contents(target: str, name: str, datatype: str, shape: list[int], raw: bytes) -> GrpcOutcome:
    """ModelInfer with one input whose raw_input_contents need not match its declared shape."""
    import grpc
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=MODEL_NAME)
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.append(raw)
    with _stub(target, max_send=64 * 1024 * 1024) as stub:
        try:
            stub.ModelInfer(request, timeout=120)
        except grpc.RpcError as err:
            return GrpcOutcome(False, str(err.code().name), str(err.details()), request.ByteSize())
    return GrpcOutcome(True, "OK", "", request.ByteSize())
