"""`cassava infer` without a real server: target options, what a user sees when nothing answers, and
headers, concurrency, retries and refused images against a scripted local server.

Nothing here may reach `tritonclient.grpc` (see tests/conftest.py): every gRPC target below fails on
its options before a client is made."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_client import FakeServer, running_fake_server
from typer.testing import CliRunner

from cassava.cli.main import app
from cassava.server.process import free_port


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("COLUMNS", "250")
    return CliRunner()


@pytest.fixture
def leaf(tmp_path: Path, sample_jpegs: list[bytes]) -> Path:
    path = tmp_path / "leaf.jpg"
    path.write_bytes(sample_jpegs[0])
    return path


def error_line(output: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith("error:")]
    return line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--local", "--grpc", "h:1"], "choose one target, not --local and --grpc", id="two-targets"
        ),
        pytest.param(["--url", "http://h", "--remote"], "choose one target", id="url-and-remote"),
        pytest.param(["--host", "ingress"], "they go with --remote", id="host-without-remote"),
        pytest.param(["--url", "ftp://h"], "unsupported target 'ftp://h'", id="bad-scheme"),
    ],
)
def test_bad_target_options(runner: CliRunner, leaf: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["infer", *args, str(leaf)])
    assert result.exit_code == 1
    assert message in error_line(result.output)


def test_no_images(runner: CliRunner) -> None:
    result = runner.invoke(app, ["infer", "--local"])
    assert result.exit_code == 1
    assert "nothing to classify" in error_line(result.output)


@pytest.mark.parametrize(
    ("args", "url"),
    [
        pytest.param([], "http://127.0.0.1:{port}/seldon/default/cassava", id="defaults"),
        pytest.param(
            ["--namespace", "seldon"], "http://127.0.0.1:{port}/seldon/seldon/cassava", id="namespace"
        ),
    ],
)
def test_remote_targets_the_seldon_ingress_path(
    runner: CliRunner, leaf: Path, args: list[str], url: str
) -> None:
    port = free_port()  # nothing listens there: the error names the URL that was tried
    result = runner.invoke(app, ["infer", "--remote", "--host", f"127.0.0.1:{port}", *args, str(leaf)])
    assert result.exit_code == 1
    line = error_line(result.output)
    assert f"cannot reach the cassava model at {url.format(port=port)} " in line


def test_an_unreachable_server_is_one_line_naming_it(runner: CliRunner, leaf: Path) -> None:
    # REST only: a gRPC client cannot run in this process, which imports MLServer elsewhere (the
    # subprocess test in tests/integration/test_cli_serve_infer.py covers gRPC).
    port = free_port()
    result = runner.invoke(app, ["infer", "--url", f"http://127.0.0.1:{port}", str(leaf)])
    assert result.exit_code == 1
    assert f"cannot reach the cassava model at http://127.0.0.1:{port} " in error_line(result.output)
    assert "Traceback" not in result.output


# --- against a scripted local server (tests/unit/test_client.py's FakeServer) -------------------------


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    with running_fake_server() as server:
        yield server


@pytest.fixture
def folder(tmp_path: Path, sample_jpegs: list[bytes]) -> Path:
    root = tmp_path / "survey"
    (root / "cmd").mkdir(parents=True)
    for i, data in enumerate(sample_jpegs[:5]):
        (root / "cmd" / f"leaf{i}.jpg").write_bytes(data)
    (root / "cmd" / "leaf2b.jpg").write_bytes(b"not a photo, the server refuses it")
    return root


def test_headers_model_name_concurrency_and_a_refused_image(
    runner: CliRunner, fake_server: FakeServer, folder: Path, tmp_path: Path
) -> None:
    fake_server.delay_s = 0.3
    out = tmp_path / "rows.jsonl"
    args = ["infer", "--url", fake_server.url, "--model-name", "leaves", "-H", "Seldon-Model: leaves"]
    args += ["-H", "Authorization: Bearer t0k", "--batch", "1", "--concurrency", "3", "--output", str(out)]
    result = runner.invoke(app, [*args, str(folder)])
    assert result.exit_code == 0, result.output
    assert all(path.startswith("/v2/models/leaves") for path, _ in fake_server.seen)
    assert all(seen["seldon-model"] == "leaves" for _, seen in fake_server.seen)
    assert all(seen["authorization"] == "Bearer t0k" for _, seen in fake_server.seen)
    assert fake_server.most_in_flight > 1  # the requests overlapped
    assert fake_server.most_in_flight <= 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(Path(r["file"]).name for r in rows) == [f"leaf{i}.jpg" for i in range(5)]
    assert "leaf2b.jpg" in result.output
    assert "1 input(s) skipped" in result.output


def test_a_refused_chunk_is_resent_image_by_image(
    runner: CliRunner, fake_server: FakeServer, folder: Path
) -> None:
    result = runner.invoke(app, ["infer", "--url", fake_server.url, "--batch", "3", "--json", str(folder)])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == 5
    infer_calls = [path for path, _ in fake_server.seen if path.endswith("/infer")]
    # leaf0, leaf1, leaf2; then leaf2b, leaf3, leaf4 refused as a whole and resent one by one.
    assert len(infer_calls) == 2 + 3


def test_503_is_retried_and_400_is_not(runner: CliRunner, fake_server: FakeServer, leaf: Path) -> None:
    fake_server.statuses = [503]
    ok = runner.invoke(app, ["infer", "--url", fake_server.url, str(leaf)])
    assert ok.exit_code == 0, ok.output
    assert "retrying in" in ok.output
    fake_server.statuses = [404]
    refused = runner.invoke(app, ["infer", "--url", fake_server.url, str(leaf)])
    assert refused.exit_code == 1
    assert "retrying" not in refused.output
    assert "scripted 404" in error_line(refused.output)


def test_a_batch_over_the_servers_limit_fails_before_sending(
    runner: CliRunner, fake_server: FakeServer, leaf: Path
) -> None:
    result = runner.invoke(app, ["infer", "--url", fake_server.url, "--batch", "5", str(leaf)])
    assert result.exit_code == 1
    assert "takes at most 4 images per request" in error_line(result.output)
    assert not [path for path, _ in fake_server.seen if path.endswith("/infer")]


@pytest.mark.parametrize("header", ["NoColon", ": value", "Two Words: x"])
def test_a_malformed_header_is_named(runner: CliRunner, leaf: Path, header: str) -> None:
    result = runner.invoke(app, ["infer", "--url", "http://127.0.0.1:9", "-H", header, str(leaf)])
    assert result.exit_code == 1
    assert f"-H {header!r}: give NAME:VALUE" in error_line(result.output)
