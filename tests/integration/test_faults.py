"""Faults, each as a property with figures (out/reliability/figures.json; docs/reliability.md quotes them):

(a) a parallel worker killed with SIGKILL under load: it is replaced, only the requests that worker held
    fail, the other worker serves meanwhile, and the replacement is ready within a bound;
(b) a missing or corrupt model directory: the process exits non-zero, quickly, naming the path, and
    never reports ready;
(c) SIGTERM under load: every request in flight is answered, new connections are refused, nothing fails
    or hangs, and the process exits 0 within the grace period. This is what makes a rolling update lossless.

Timing bounds are part of the properties and generous: other test runs share this machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import reliability_support as rs
from reliability_support import (
    ANSWERED,
    FAILED,
    REFUSED,
    LoadLoop,
    images_body,
    in_flight_at,
    infer_url,
    jpeg,
    record_figures,
    wait_for,
    worker_pids,
)

from cassava.server.process import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GRACE = 20.0  # shutdown_grace_seconds, the default
#: a replacement worker imports TensorFlow and loads the model: 20-30 s idle, minutes on a busy machine
RECOVERY_BOUND = 300.0
#: the preflight needs no TensorFlow: a few seconds idle; the bound leaves room for a busy machine
PREFLIGHT_BOUND = 60.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[ServerProcess]:
    """Two workers, as a pod that must survive one crash runs. (c) ends it."""
    process = ServerProcess.for_model(
        tmp_path_factory.mktemp("faults"),
        model_dir=demo_model_dir,
        extra={"shutdown_grace_seconds": GRACE},
        server={"parallel_workers": 2},
    )
    process.start(timeout=rs.START_TIMEOUT)
    yield process
    process.stop()


def heavy_body() -> dict[str, object]:
    """Four 1280x960 JPEGs: long enough per request that several are in flight at any moment."""
    return images_body([jpeg(1280, 960, seed=i) for i in range(4)])


# --- (a) a worker dies --------------------------------------------------------------------------------


def test_a_killed_worker_is_replaced_and_only_its_requests_fail(server: ServerProcess) -> None:
    workers = worker_pids(server)
    assert len(workers) == 2, workers
    victim = workers[0]
    ready_seen: list[bool] = []
    with LoadLoop(
        infer_url(server), images_body([jpeg()]), threads=4, max_seconds=RECOVERY_BOUND + 60
    ) as load:
        wait_for(lambda: load.count() >= 10, 120, "answers before the kill")
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            ready_seen.append(rs.is_ready(server))
            current = worker_pids(server)
            return len(current) == 2 and victim not in current and "is now ready" in rs.log_text(server)

        recovery = wait_for(replaced, RECOVERY_BOUND, "a replacement worker, ready", interval=0.5)
        (replacement,) = set(worker_pids(server)) - set(workers)
        wait_for(lambda: load.count(since=time.monotonic() - 2) > 0, 60, "answers after the replacement")
    requests = load.snapshot()
    held = in_flight_at(requests, killed)
    after = [r for r in requests if r.started >= killed]
    failures = [r for r in requests if r.outcome != ANSWERED]
    # Only requests the dead worker held fail, with a 500 that says so; they were in flight at the kill.
    assert all(r.outcome == FAILED and "stopped unexpectedly" in r.detail for r in failures), failures
    assert all(r.started <= killed + 0.5 for r in failures), failures
    assert len(failures) <= len(held), (failures, held)
    # The other worker kept serving, and the server stayed ready throughout.
    answered_while_down = [r for r in after if r.outcome == ANSWERED and r.ended <= killed + recovery]
    assert answered_while_down
    assert all(ready_seen)
    pattern = rf"Worker with PID {victim} .* stopped unexpectedly with exit code 9"
    assert re.search(pattern, rs.log_text(server))
    assert f"New worker with PID {replacement} on default inference pool is now ready" in rs.log_text(server)
    record_figures(
        "worker_sigkill",
        {
            "workers": 2,
            "load_threads": 4,
            "requests": load.tally(),
            "in_flight_at_kill": len(held),
            "failed": len(failures),
            "answered_while_replacing": len(answered_while_down),
            "replacement_ready_after_s": round(recovery, 1),
        },
    )


# --- (c) SIGTERM: a rolling update ---------------------------------------------------------------------


def test_sigterm_answers_every_request_in_flight_and_refuses_new_ones(server: ServerProcess) -> None:
    assert server.process is not None
    with LoadLoop(infer_url(server), heavy_body(), threads=6, max_seconds=RECOVERY_BOUND) as load:
        wait_for(lambda: load.count() >= 6, 180, "answers before SIGTERM")
        wait_for(lambda: load.in_progress() >= 3, 30, "requests in flight")
        signalled = time.monotonic()
        os.kill(server.pid, signal.SIGTERM)  # as the kubelet does: the main process only
        code = server.process.wait(timeout=GRACE + 60)
        exited = time.monotonic()
        time.sleep(1.0)  # the clients meet the closed port
    requests = load.snapshot()
    pending = in_flight_at(requests, signalled)
    # In flight at SIGTERM means accepted by the server: a client still connecting then is refused
    # (never processed, safe to retry); one whose connection was accepted must get its answer.
    accepted = [r for r in pending if r.outcome != REFUSED]
    connecting = [r for r in pending if r.outcome == REFUSED]
    after_exit = [r for r in requests if r.started >= exited]
    statuses = load.tally()
    assert accepted, "no request was in flight at SIGTERM: the property was not exercised"
    assert all(r.outcome == ANSWERED for r in accepted), [r for r in accepted if r.outcome != ANSWERED]
    # Nothing fails, hangs or is dropped: each request is answered, or refused without being processed.
    assert {r.outcome for r in requests} <= {ANSWERED, REFUSED}, statuses
    assert after_exit
    assert all(r.outcome == REFUSED for r in after_exit)
    assert code == 0
    assert exited - signalled <= GRACE + 10
    record_figures(
        "sigterm",
        {
            "workers": 2,
            "load_threads": 6,
            "requests": statuses,
            "in_flight_at_sigterm": len(accepted),
            "answered_of_in_flight": sum(r.outcome == ANSWERED for r in accepted),
            "connecting_at_sigterm_refused": len(connecting),
            "exit_code": code,
            "exit_after_s": round(exited - signalled, 2),
            "grace_s": GRACE,
        },
    )


# --- (b) a missing or corrupt model ------------------------------------------------------------------------


def broken_models(demo: Path, root: Path) -> dict[str, Path]:
    def copy(name: str) -> Path:
        target = root / name
        shutil.copytree(demo, target)
        return target

    no_pb = copy("no-saved-model")
    (no_pb / "saved_model.pb").unlink()
    truncated = copy("truncated")
    pb = truncated / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[: pb.stat().st_size // 3])
    return {
        "missing directory": root / "does-not-exist",
        "a file, not a directory": shutil.copy(demo / "saved_model.pb", root / "a-file"),
        "no saved_model.pb": no_pb,
        "truncated saved_model.pb": truncated,
    }


def run_launcher(server: ServerProcess, timeout: float) -> tuple[int | None, float, str, bool]:
    """Run the server's command to its end; return (exit code, seconds, output, ever ready)."""
    log = server.log_path or server.folder / "launcher.log"
    started = time.monotonic()
    with (
        log.open("wb") as out,
        subprocess.Popen(
            server.command(), env=server.child_env(), stdout=out, stderr=subprocess.STDOUT
        ) as process,
    ):
        ready = False
        while process.poll() is None and time.monotonic() - started < timeout:
            with contextlib.suppress(httpx.HTTPError):
                ready |= httpx.get(f"{server.http_url}/v2/health/ready", timeout=1).status_code == 200
            time.sleep(0.2)
        if process.poll() is None:
            process.kill()
        code = process.wait(30)
    return code, time.monotonic() - started, log.read_text(errors="replace"), ready


def test_a_missing_or_corrupt_model_directory_exits_2_at_once(tmp_path: Path, demo_model_dir: Path) -> None:
    seconds = {}
    for case, model_dir in broken_models(demo_model_dir, tmp_path).items():
        server = ServerProcess.for_model(tmp_path / case.replace(" ", "-"), model_dir=model_dir)
        code, took, output, ready = run_launcher(server, PREFLIGHT_BOUND)
        assert code == 2, f"{case}: exit {code}\n{output[-2000:]}"
        assert str(model_dir) in output, f"{case}: the message does not name {model_dir}\n{output[-2000:]}"
        assert not ready
        seconds[case] = round(took, 1)
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    code, took, output, ready = run_launcher(ServerProcess(folder=empty), PREFLIGHT_BOUND)
    assert code == 2
    assert f"no model-settings.json under {empty}" in output
    seconds["folder without model-settings.json"] = round(took, 1)
    record_figures("bad_model_preflight", {"exit_code": 2, "exit_after_s": seconds})


def test_a_model_that_fails_to_load_exits_1_and_is_never_ready(tmp_path: Path, demo_model_dir: Path) -> None:
    """Files the preflight cannot fault (a garbage weights index): the worker's TensorFlow load fails.
    MLServer 1.7.1 alone exits 0 here, and reports ready in between (docs/reliability.md)."""
    model_dir = tmp_path / "garbage-index"
    shutil.copytree(demo_model_dir, model_dir)
    (model_dir / "variables" / "variables.index").write_bytes(b"\x13\x37" * 64)
    server = ServerProcess.for_model(tmp_path / "server", model_dir=model_dir)
    code, took, output, ready = run_launcher(server, rs.START_TIMEOUT)
    assert code == 1, f"exit {code} after {took:.0f} s\n{output[-3000:]}"
    assert str(model_dir) in output
    assert "Some of the models failed to load" in output
    assert not ready, "the server reported ready without a model"
    record_figures("model_load_failure", {"exit_code": code, "exit_after_s": round(took, 1)})
