"""`cassava bench` against real servers (the stand-in model), and adaptive batching in our runtime.

The bench runs as a subprocess, as a user runs it: it imports tritonclient's gRPC stubs, which cannot
share a process with MLServer's. No timing is asserted: only that requests were answered, correctly
and without errors.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import CALL_TIMEOUT, infer_url

from cassava.bench import generate_images, prepare_requests, seed_request_json
from cassava.preprocessing import Limits, preprocess_images
from cassava.server.process import ServerProcess

pytestmark = pytest.mark.integration

CASSAVA = str(Path(sys.executable).with_name("cassava"))


def bench(tmp_path: Path, *args: str, timeout: float = 300.0) -> dict[str, Any]:
    """Run `cassava bench ARGS` on 4 generated JPEGs and return its JSON report."""
    out = tmp_path / "report.json"
    command = [CASSAVA, "bench", *args, "--generate", "4", "--size", "160x120", "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(out.read_text())
    return report


@pytest.mark.parametrize(
    ("scheme", "extra"),
    [
        ("rest", ["--concurrency", "2"]),
        ("grpc", ["--concurrency", "2", "--batch", "2"]),
        ("rest", ["--encoding", "tensor", "--batch", "2"]),
        ("rest", ["--encoding", "tensor", "--batch", "2", "--encode-each"]),
    ],
    ids=["rest-bytes", "grpc-bytes", "rest-seed-tensor", "rest-seed-tensor-encoded-each-time"],
)
def test_bench_answers_every_request(
    standin_server: ServerProcess, tmp_path: Path, scheme: str, extra: list[str]
) -> None:
    target = standin_server.http_url if scheme == "rest" else f"grpc://{standin_server.grpc_target}"
    report = bench(tmp_path, target, "--duration", "2", "--warmup", "0.5", *extra)
    assert report["requests"] > 0
    assert report["errors"] == {}
    assert report["images"] == report["requests"] * report["batch"]
    assert report["request_bytes_per_image"] > 0
    assert report["latency_ms"]["p50"] > 0


@pytest.mark.parametrize("scheme", ["rest", "grpc"])
def test_open_loop_bench_offers_its_rate_and_accounts_for_every_arrival(
    standin_server: ServerProcess, tmp_path: Path, scheme: str
) -> None:
    """`--rate`: the arrivals are fixed by the rate and the window, whatever the server does; each is
    answered, dropped or an error. Whether any were dropped depends on the machine, so it is not asserted."""
    target = standin_server.http_url if scheme == "rest" else f"grpc://{standin_server.grpc_target}"
    report = bench(tmp_path, target, "--rate", "20", "--duration", "3", "--warmup", "0.5", "--timeout", "10")
    assert report["rate"] == 20.0
    assert report["arrivals"] == "constant"
    assert report["offered"] == 60  # 20/s for 3 s, constant spacing
    assert report["errors"] == {}
    assert report["requests"] > 0
    assert report["requests"] + sum(report["drops"].values()) == report["offered"]
    assert report["latency_ms"]["p99"] >= report["latency_ms"]["p50"] > 0


def test_bench_counts_refused_connections_as_errors() -> None:
    from cassava.server.process import free_port

    out = subprocess.run(
        [CASSAVA, "bench", f"http://127.0.0.1:{free_port()}", "--duration", "0.5", "--warmup", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 1  # nothing answered
    assert "connection" in out.stdout


def test_the_benchmarks_control_server_answers_the_load_generator(
    demo_model_dir: Path, tmp_path: Path
) -> None:
    """`make bench`'s control (`benchmarks.control`): stock `mlserver start` with its runtime imported
    from the repository, on free ports, answering the load generator's REST and gRPC requests of one
    and of two images, with no errors."""
    from benchmarks.control import start_control

    control = start_control(tmp_path / "control", demo_model_dir, "tensorflow")
    try:
        assert control.process.command()[1:4] == ["-m", "mlserver.cli.main", "start"]
        for transport in ("rest", "grpc"):
            for batch in ("1", "2"):
                report = bench(
                    tmp_path,
                    control.target(transport),
                    "--duration",
                    "1",
                    "--warmup",
                    "0.2",
                    "--batch",
                    batch,
                )
                assert report["requests"] > 0
                assert report["errors"] == {}
                assert report["images"] == report["requests"] * int(batch)
    finally:
        control.stop()


# --- adaptive batching in our runtime ------------------------------------------------------------------


@pytest.fixture(scope="module")
def batching_server(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[ServerProcess]:
    """parallel_workers 0 with adaptive batching: the combination MLServer 1.7.1 breaks for runtimes
    that decode with @decode_args ("method is not bound", HTTP 400 on every request)."""
    workdir = tmp_path_factory.mktemp("batching-server")
    with ServerProcess.for_model(
        workdir,
        model_dir=demo_model_dir,
        server={"parallel_workers": 0},
        # A long window so that concurrent requests surely share a batch.
        options={"max_batch_size": 8, "max_batch_time": 0.3},
    ) as server:
        yield server


def post(server: ServerProcess, body: bytes) -> httpx.Response:
    headers = {"content-type": "application/json"}
    return httpx.post(infer_url(server), content=body, headers=headers, timeout=CALL_TIMEOUT)


def class_indices(response: httpx.Response) -> list[int]:
    assert response.status_code == 200, response.text
    (index,) = [o for o in response.json()["outputs"] if o["name"] == "class_index"]
    return [int(i) for i in index["data"]]


def test_workers_0_with_adaptive_batching_answers_200(batching_server: ServerProcess) -> None:
    (request,) = prepare_requests(generate_images(1, (96, 72)), mode="rest", batch=1)
    assert len(class_indices(post(batching_server, request.payload))) == 1


def test_merged_image_and_tensor_requests_each_get_their_own_answer(
    batching_server: ServerProcess, standin_server: ServerProcess
) -> None:
    images = generate_images(6, (96, 72), seed=3)
    bodies = [r.payload for r in prepare_requests(images, mode="rest", batch=2)]  # 3 requests of 2 images
    bodies += [seed_request_json(preprocess_images(images[:1], Limits()))]  # and one of the seed's
    # The answers of an unbatched server are the reference for each request on its own.
    expected = [class_indices(post(standin_server, body)) for body in bodies]
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        # Sent together, repeatedly, so they land in shared batch windows in different orders.
        for _ in range(3):
            answers = list(pool.map(lambda body: post(batching_server, body), bodies))
            assert [class_indices(a) for a in answers] == expected


# --- soak --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_soak_smoke(standin_server: ServerProcess, tmp_path: Path) -> None:
    """30 s of steady load: no errors, and the server's memory flat after warm-up."""
    report = bench(
        tmp_path,
        standin_server.http_url,
        "--soak",
        "--duration", "25",
        "--warmup", "5",
        "--window", "5",
        "--sample-every", "2",
        "--concurrency", "4",
        "--server-pid", str(standin_server.pid),
    )  # fmt: skip
    assert report["requests"] > 0
    assert report["errors"] == {}
    assert len(report["windows"]) == 5
    assert all(w["requests"] > 0 for w in report["windows"])
    assert len(report["rss_samples"]) >= 5
    assert report["rss_growth_pct"] is not None
    assert report["rss_growth_pct"] < 10.0
