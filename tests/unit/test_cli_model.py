"""`cassava model fetch | demo | path` through the command line, as a user types them."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cassava.cli.main import app
from cassava.model_store import (
    PROVENANCE_FILE,
    SAVED_MODEL_FILE,
    UNTRAINED_MARKER,
    default_sources,
    read_info,
)


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    # Never the user's real cache: every default path lands in this test's directory.
    monkeypatch.setenv("CASSAVA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def flat(text: str) -> str:
    """Console text with rich's line wrapping undone: long paths move the breaks around."""
    return " ".join(text.split())


def test_path_prints_the_cache_model_dir(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["model", "path"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "home" / "model")


def test_fetch_from_a_directory_into_the_cache(
    runner: CliRunner, demo_model_dir: Path, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["model", "fetch", "--from", str(demo_model_dir)])
    assert result.exit_code == 0, result.output
    dest = tmp_path / "home" / "model"
    assert (dest / SAVED_MODEL_FILE).is_file()
    assert (dest / PROVENANCE_FILE).is_file()
    assert f"model verified and installed at {dest}" in flat(result.stdout)
    # The stand-in stays a stand-in wherever it is copied, and says so.
    assert "UNTRAINED STAND-IN MODEL" in flat(result.stderr)


def test_fetch_from_a_tarball_to_a_chosen_dest(
    runner: CliRunner, demo_model_dir: Path, tmp_path: Path
) -> None:
    # What a real model's archive holds: the SavedModel, no UNTRAINED marker.
    real = tmp_path / "real"
    shutil.copytree(demo_model_dir, real, ignore=shutil.ignore_patterns(UNTRAINED_MARKER))
    archive = shutil.make_archive(str(tmp_path / "cropnet"), "gztar", root_dir=real)
    dest = tmp_path / "elsewhere" / "model"
    result = runner.invoke(app, ["model", "fetch", "--from", archive, "--dest", str(dest)])
    assert result.exit_code == 0, result.output
    assert not read_info(dest).untrained
    assert "UNTRAINED" not in flat(result.output)


def test_fetch_failure_is_one_red_line(runner: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.tar.gz"
    result = runner.invoke(app, ["model", "fetch", "--from", str(missing)])
    assert result.exit_code == 1
    assert "Traceback" not in flat(result.output)
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] != []
    assert flat(result.stderr).count("error:") == 1
    assert "nowhere.tar.gz" in flat(result.stderr)
    assert not (tmp_path / "home" / "model").exists()


@pytest.fixture
def real_archive(demo_model_dir: Path, tmp_path: Path) -> Path:
    """What a real model's archive holds: the SavedModel, no UNTRAINED marker, no provenance."""
    real = tmp_path / "real"
    shutil.copytree(demo_model_dir, real, ignore=shutil.ignore_patterns(UNTRAINED_MARKER, PROVENANCE_FILE))
    return Path(shutil.make_archive(str(tmp_path / "cropnet"), "gztar", root_dir=real))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Both default sources pointed at a port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("CASSAVA_TFHUB_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("CASSAVA_KAGGLE_URL", f"http://127.0.0.1:{port}")
    return default_sources()


def test_fetch_onto_a_real_model_asks_for_force(
    runner: CliRunner, real_archive: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "model"
    first = runner.invoke(app, ["model", "fetch", "--from", str(real_archive), "--dest", str(dest)])
    assert first.exit_code == 0, first.output
    result = runner.invoke(app, ["model", "fetch", "--from", str(real_archive), "--dest", str(dest)])
    assert result.exit_code == 1
    assert "pass --force" in flat(result.stderr)
    forced = runner.invoke(
        app, ["model", "fetch", "--from", str(real_archive), "--dest", str(dest), "--force"]
    )
    assert forced.exit_code == 0, forced.output


def test_fetch_after_demo_replaces_the_stand_in(
    runner: CliRunner, real_archive: Path, tmp_path: Path
) -> None:
    """The newcomer's path: `make serve-demo` first, then the real model, without --force."""
    assert runner.invoke(app, ["model", "demo"]).exit_code == 0
    result = runner.invoke(app, ["model", "fetch", "--from", str(real_archive)])
    assert result.exit_code == 0, result.output
    assert not read_info(tmp_path / "home" / "model").untrained
    assert "UNTRAINED" not in flat(result.output)


def test_if_missing_skips_a_real_model_but_not_the_stand_in(
    runner: CliRunner, real_archive: Path, tmp_path: Path, offline: list[str]
) -> None:
    """What `make serve` runs: nothing to do once the real model is there, even offline."""
    dest = tmp_path / "home" / "model"
    assert runner.invoke(app, ["model", "demo"]).exit_code == 0
    fetched = runner.invoke(app, ["model", "fetch", "--if-missing", "--from", str(real_archive)])
    assert fetched.exit_code == 0, fetched.output
    assert not read_info(dest).untrained
    again = runner.invoke(app, ["model", "fetch", "--if-missing", "--retries", "0"])
    assert again.exit_code == 0, again.output
    assert f"a model is already installed at {dest}" in flat(again.stdout)


def test_offline_error_points_at_the_demo_with_urls_unbroken(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, offline: list[str]
) -> None:
    """Rich wraps long lines at the terminal width, mid-word; a URL must survive a copy and paste."""
    monkeypatch.setenv("COLUMNS", "60")
    result = runner.invoke(app, ["model", "fetch", "--retries", "0"])
    assert result.exit_code == 1
    for url in offline:
        assert len(url) > 60
        assert url in result.stderr  # as printed, not with the line breaks undone
    assert "make serve-demo" in result.stderr
    assert "cassava model demo" in result.stderr
    assert "cassava model fetch --from" in result.stderr
    assert flat(result.stderr).count("error:") == 1
    assert "Traceback" not in result.output


def test_sha256_and_max_size_options(runner: CliRunner, real_archive: Path, tmp_path: Path) -> None:
    digest = hashlib.sha256(real_archive.read_bytes()).hexdigest()
    fetch = ["model", "fetch", "--from", str(real_archive), "--dest", str(tmp_path / "model")]
    wrong = runner.invoke(app, [*fetch, "--sha256", "0" * 64])
    assert wrong.exit_code == 1
    assert f"SHA-256 {digest}, but --sha256 says {'0' * 64}" in flat(wrong.stderr)
    small = runner.invoke(app, [*fetch, "--max-size", "1KB"])
    assert small.exit_code == 1
    assert "unpacks to more than the size limit of 1,000 bytes" in flat(small.stderr)
    assert "--max-size" in flat(small.stderr)
    nonsense = runner.invoke(app, [*fetch, "--max-size", "lots"])
    assert nonsense.exit_code == 2
    assert "'lots' is not a size" in flat(nonsense.output)
    right = runner.invoke(app, [*fetch, "--sha256", digest, "--max-size", "100MB"])
    assert right.exit_code == 0, right.output


def test_demo_writes_the_stand_in_and_warns(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["model", "demo"])
    assert result.exit_code == 0, result.output
    dest = tmp_path / "home" / "model"
    assert (dest / UNTRAINED_MARKER).is_file()
    assert read_info(dest).untrained
    assert f"wrote the stand-in to {dest}" in flat(result.stdout)
    assert "WARNING" in flat(result.stderr)
    assert "UNTRAINED STAND-IN MODEL" in flat(result.stderr)
    assert "cassava model fetch" in flat(result.stderr)


def test_demo_will_not_overwrite_a_real_model(
    runner: CliRunner, demo_model_dir: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "real"
    shutil.copytree(demo_model_dir, dest, ignore=shutil.ignore_patterns(UNTRAINED_MARKER))
    result = runner.invoke(app, ["model", "demo", "--dest", str(dest)])
    assert result.exit_code == 1
    assert "holds a real model" in flat(result.stderr)
    assert not (dest / UNTRAINED_MARKER).exists()


# --- signals -----------------------------------------------------------------------------------------


@pytest.fixture
def slow_server(real_archive: Path) -> Iterator[str]:
    """Serves the archive at about 2 KB/s: a download that is surely under way when the signal comes."""
    data = real_archive.read_bytes()
    stop = threading.Event()

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            for start in range(0, len(data), 200):
                if stop.wait(0.1):
                    return
                try:
                    self.wfile.write(data[start : start + 200])
                    self.wfile.flush()
                except OSError:
                    return

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    host, port = httpd.server_address[:2]
    yield f"http://{host!s}:{port}/cropnet.tar.gz"
    stop.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_mid_download_leaves_no_staging(slow_server: str, tmp_path: Path, signum: int) -> None:
    """A real `cassava model fetch` process, stopped the way a service manager or a closed terminal
    stops it: it must remove its staging directory and still die of the signal."""
    parent = tmp_path / "cache"
    command = "from cassava.cli.main import app; app()"
    fetch = ["model", "fetch", "--from", slow_server, "--dest", str(parent / "model")]
    env = {**os.environ, "CASSAVA_HOME": str(tmp_path / "home"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [sys.executable, "-c", command, *fetch],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        give_up = time.monotonic() + 60  # a hang guard: the download starts within seconds
        while not list(parent.glob(".model.staging-*/*.part")):
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < give_up, "the download never started"
            time.sleep(0.05)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signum, stderr.decode()
    assert sorted(p.name for p in parent.iterdir()) == []
