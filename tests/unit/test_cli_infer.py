"""`cassava infer` without a server: target options, and what a user sees when nothing answers.

Nothing here may reach `tritonclient.grpc` (see tests/conftest.py): every gRPC target below fails on
its options before a client is made."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cassava.cli.main import app
from cassava.server_process import free_port


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
