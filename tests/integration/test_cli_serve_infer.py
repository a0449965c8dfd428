"""The README walkthrough as a user types it, each command a subprocess:

cassava model demo --dest D
cassava serve --model D --http-port P1 --grpc-port P2 --metrics-port P3
cassava infer --url http://127.0.0.1:P1 IMAGE.jpg
cassava infer --grpc 127.0.0.1:P2 IMAGE.jpg
cassava predict --model D IMAGE.jpg --json     (what infer must agree with)
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cassava.labels import CODES
from cassava.model_store import SAVED_MODEL_FILE, UNTRAINED_MARKER
from cassava.server.process import ServerProcess, free_port

pytestmark = pytest.mark.integration

CASSAVA = Path(sys.executable).with_name("cassava")
# Each command is bounded; generous, as other test runs may share the machine.
COMMAND_TIMEOUT = 300
SERVER_MAX_BATCH_SIZE = 64  # `cassava serve`'s default


def cassava(*args: str) -> subprocess.CompletedProcess[str]:
    # A wide terminal, so that rich neither wraps nor truncates the table or the one-line messages.
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}
    return subprocess.run(
        [str(CASSAVA), *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT, env=env, check=False
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    output = f"{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, f"{result.args}: exit {result.returncode}\n{output}"
    return result


@dataclass
class CassavaServe(ServerProcess):
    """`cassava serve`, started, waited for and stopped by PID like every test server."""

    model_dir: Path = Path()

    def command(self) -> list[str]:
        return [
            str(CASSAVA),
            "serve",
            "--model",
            str(self.model_dir),
            "--host",
            "127.0.0.1",
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
            "--metrics-port",
            str(self.metrics_port),
        ]


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("walkthrough")


@pytest.fixture(scope="module")
def demo_dir(walkthrough: Path) -> Path:
    dest = walkthrough / "demo-model"
    result = succeeded(cassava("model", "demo", "--dest", str(dest)))
    assert "UNTRAINED" in result.stdout + result.stderr
    return dest


@pytest.fixture(scope="module")
def served(walkthrough: Path, demo_dir: Path) -> Iterator[CassavaServe]:
    server = CassavaServe(folder=walkthrough, model_dir=demo_dir, log_path=walkthrough / "serve.log")
    with server:
        yield server


@pytest.fixture(scope="module")
def image(walkthrough: Path, sample_jpegs: list[bytes]) -> Path:
    path = walkthrough / "IMAGE.jpg"
    path.write_bytes(sample_jpegs[0])
    return path


@pytest.fixture(scope="module")
def predicted(demo_dir: Path, image: Path) -> list[dict[str, Any]]:
    """`cassava predict --json`: the model run locally, what every served answer must match."""
    records: list[dict[str, Any]] = json.loads(
        succeeded(cassava("predict", "--model", str(demo_dir), str(image), "--json")).stdout
    )
    return records


def target_args(server: CassavaServe, transport: str) -> list[str]:
    if transport == "rest":
        return ["--url", server.http_url]
    return ["--grpc", server.grpc_target]


def test_model_demo_writes_the_marked_standin(demo_dir: Path) -> None:
    assert (demo_dir / SAVED_MODEL_FILE).is_file()
    assert (demo_dir / UNTRAINED_MARKER).is_file()


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_infer_prints_the_prediction_and_the_untrained_warning(
    served: CassavaServe, image: Path, predicted: list[dict[str, Any]], transport: str
) -> None:
    result = succeeded(cassava("infer", *target_args(served, transport), str(image)))
    (row,) = [line for line in result.stdout.splitlines() if image.name in line]
    assert predicted[0]["class_code"] in row.split()
    assert "UNTRAINED" in result.stderr


@pytest.mark.parametrize(
    ("transport", "encoding"), [("rest", "bytes"), ("grpc", "bytes"), ("rest", "tensor"), ("grpc", "tensor")]
)
def test_infer_json_equals_predict(
    served: CassavaServe, image: Path, predicted: list[dict[str, Any]], transport: str, encoding: str
) -> None:
    args = [*target_args(served, transport), "--encoding", encoding, "--json", str(image)]
    records = json.loads(succeeded(cassava("infer", *args)).stdout)
    assert [r["input"] for r in records] == [p["input"] for p in predicted]
    assert [r["class_index"] for r in records] == [p["class_index"] for p in predicted]
    assert [r["class_code"] for r in records] == [p["class_code"] for p in predicted]
    for got, want in zip(records, predicted, strict=True):
        np.testing.assert_allclose(
            [got["probabilities"][c] for c in CODES], [want["probabilities"][c] for c in CODES], atol=1e-5
        )


@pytest.fixture(scope="module")
def many_images(walkthrough: Path) -> Path:
    """One image more than the server takes in a request: tiny PNGs, different from each other."""
    folder = walkthrough / "many"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(SERVER_MAX_BATCH_SIZE + 1):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "RGB").save(buffer, "PNG")
        (folder / f"leaf{i:03}.png").write_bytes(buffer.getvalue())
    return folder


def test_infer_splits_a_large_input_into_requests_the_server_accepts(
    served: CassavaServe, many_images: Path
) -> None:
    result = succeeded(cassava("infer", "--url", served.http_url, "--json", str(many_images)))
    assert len(json.loads(result.stdout)) == SERVER_MAX_BATCH_SIZE + 1
    assert "in 2 request(s)" in result.stderr


def test_a_refused_request_is_one_red_line_with_the_servers_message(
    served: CassavaServe, many_images: Path
) -> None:
    batch = str(SERVER_MAX_BATCH_SIZE + 1)
    result = cassava("infer", "--url", served.http_url, "--batch-size", batch, str(many_images))
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"at most {SERVER_MAX_BATCH_SIZE}" in line
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_an_unreachable_server_is_named(image: Path, transport: str) -> None:
    port = free_port()  # nothing listens there
    target = ["--url", f"http://127.0.0.1:{port}"] if transport == "rest" else ["--grpc", f"127.0.0.1:{port}"]
    result = cassava("infer", *target, str(image))
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"127.0.0.1:{port}" in line
    assert "cannot reach" in line


def test_serve_passes_a_sigterm_on_and_removes_its_generated_folder(demo_dir: Path, tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    server = CassavaServe(
        folder=tmp_path, model_dir=demo_dir, env={"TMPDIR": str(scratch)}, log_path=tmp_path / "serve.log"
    )
    with server:
        assert len(list(scratch.glob("cassava-serve-*"))) == 1
        assert server.process is not None
        # To this PID only, as a process manager does (Ctrl-C would reach the whole group).
        os.kill(server.pid, signal.SIGTERM)
        code = server.process.wait(COMMAND_TIMEOUT)
    assert code == 0, server.log_tail()
    assert list(scratch.glob("cassava-serve-*")) == []


@pytest.mark.parametrize("transport", ["rest", "grpc"])
def test_infer_at_scale_concurrent_with_headers_output_and_resume(
    served: CassavaServe, many_images: Path, tmp_path: Path, transport: str
) -> None:
    """Four requests in flight, a header on each (MLServer ignores what it does not route on, over REST
    and as gRPC metadata), rows to a CSV, then --resume with nothing left to do."""
    out = tmp_path / "rows.csv"
    args = [
        *target_args(served, transport),
        "--concurrency",
        "4",
        "--batch",
        "8",
        "-H",
        "Seldon-Model: cassava",
    ]
    first = succeeded(cassava("infer", *args, "--output", str(out), str(many_images)))
    assert f"{SERVER_MAX_BATCH_SIZE + 1} row(s) written" in first.stdout
    assert "in 9 request(s)" in first.stderr
    assert "concurrency 4" in first.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 1 + SERVER_MAX_BATCH_SIZE + 1
    assert sorted(line.split(",")[0] for line in lines[1:]) == sorted(str(p) for p in many_images.iterdir())

    again = succeeded(cassava("infer", *args, "--output", str(out), "--resume", str(many_images)))
    assert "0 row(s) written" in again.stdout
    assert f"{SERVER_MAX_BATCH_SIZE + 1} from an earlier run kept" in again.stdout
    assert out.read_text().splitlines() == lines
