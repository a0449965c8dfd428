"""The model store through its real code paths: HTTP download, archives, directories, atomic install.

Downloads come from a local `http.server` on 127.0.0.1 in a thread, serving tarballs of the stand-in
(the real CropNet cannot be downloaded here); the code under test is the one that fetches TF Hub.
How each download server misbehaves is tested in test_download.py; here, what an install makes of it.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import os
import re
import shutil
import socket
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cassava import download, model_store
from cassava.download import DownloadLimits
from cassava.errors import FetchError, ModelLoadError, ModelNotFoundError
from cassava.model_store import (
    KAGGLE_HANDLE,
    PROVENANCE_FILE,
    SAVED_MODEL_FILE,
    UNTRAINED_MARKER,
    fetch,
    read_info,
    write_demo_model,
)

#: Retries in milliseconds, not the seconds users get.
FAST = DownloadLimits(attempts=2, backoff_s=0.01, read_timeout_s=5.0, connect_timeout_s=5.0, deadline_s=60.0)


def tarball(root: Path, prefix: str = "", skip: frozenset[str] = frozenset()) -> bytes:
    """A .tar.gz of the files under `root`, stored under `prefix` (TF Hub's archives use no prefix)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if relative.parts[0] in skip:
                continue
            tar.add(path, arcname=str(Path(prefix) / relative) if prefix else str(relative), recursive=False)
    return buffer.getvalue()


def tarball_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def sparse_tarball(name: str, real_size: int) -> bytes:
    """A GNU sparse member: 512 bytes stored, `real_size` bytes once unpacked (the rest a hole). The
    header layout is GNU tar's (`struct sparse` at offset 386, `realsize` at 483), which Python's
    tarfile reads (`TarInfo._proc_sparse`) but cannot write."""
    info = tarfile.TarInfo(name)
    info.size = 512
    header = bytearray(info.tobuf(format=tarfile.GNU_FORMAT))
    header[156:157] = tarfile.GNUTYPE_SPARSE
    header[386:398] = tarfile.itn(real_size - 512, 12, tarfile.GNU_FORMAT)
    header[398:410] = tarfile.itn(512, 12, tarfile.GNU_FORMAT)
    header[483:495] = tarfile.itn(real_size, 12, tarfile.GNU_FORMAT)
    header[148:156] = b" " * 8
    header[148:155] = b"%06o\0" % sum(header)
    return gzip.compress(bytes(header) + b"x" * 512 + bytes(1024))


def leftovers(parent: Path) -> list[str]:
    """Staging or backup directories a fetch left next to its destination."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def snapshot(model_dir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(model_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(model_dir.rglob("*"))
        if p.is_file()
    }


# --- a local HTTP server ---------------------------------------------------------------------------


class ModelServer:
    """Serves `routes[path]` bytes; a route may also be a callable that writes the response itself."""

    def __init__(self) -> None:
        self.routes: dict[str, bytes | Callable[[http.server.BaseHTTPRequestHandler], None]] = {}
        self.paths: list[str] = []
        routes, paths = self.routes, self.paths

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                paths.append(self.path)
                route = routes.get(self.path)
                if route is None:
                    self.send_error(404)
                elif callable(route):
                    route(self)
                else:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/gzip")
                    self.send_header("Content-Length", str(len(route)))
                    self.end_headers()
                    self.wfile.write(route)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}{path}"


@pytest.fixture(scope="module")
def server() -> Iterator[ModelServer]:
    server = ModelServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def breaks_half_way(data: bytes) -> Callable[[http.server.BaseHTTPRequestHandler], None]:
    """Promises all of `data`, sends half, then drops the connection."""

    def respond(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data[: len(data) // 2])
        handler.wfile.flush()
        handler.close_connection = True
        handler.connection.shutdown(socket.SHUT_RDWR)

    return respond


@pytest.fixture(scope="module")
def standin_tar(demo_model_dir: Path) -> bytes:
    return tarball(demo_model_dir)


@pytest.fixture(scope="module")
def trained_looking_tar(demo_model_dir: Path) -> bytes:
    """The stand-in without its UNTRAINED marker or provenance: what a real SavedModel archive holds."""
    return tarball(demo_model_dir, skip=frozenset({UNTRAINED_MARKER, PROVENANCE_FILE}))


@pytest.fixture
def installed(tmp_path: Path, demo_model_dir: Path) -> Path:
    """A model already in place, as a previous fetch would have left it."""
    dest = tmp_path / "cache" / "model"
    shutil.copytree(demo_model_dir, dest)
    return dest


# --- fetch over HTTP -------------------------------------------------------------------------------


def test_fetch_url_installs_verifies_and_records_provenance(
    server: ModelServer, trained_looking_tar: bytes, tmp_path: Path
) -> None:
    server.routes["/cropnet.tar.gz"] = trained_looking_tar
    url = server.url("/cropnet.tar.gz")
    seen: list[tuple[int, int | None]] = []
    dest = tmp_path / "model"

    info = fetch(url, dest, progress=lambda done, total: seen.append((done, total)))

    assert info.path == dest
    assert not info.untrained
    assert info.warning is None
    assert info.source == url
    assert (dest / SAVED_MODEL_FILE).is_file()
    assert (dest / "variables").is_dir()
    assert not (dest / "unpacked").exists()
    assert not (dest / "download.tar.gz").exists()
    assert seen[-1] == (len(trained_looking_tar), len(trained_looking_tar))
    record = json.loads((dest / PROVENANCE_FILE).read_text())
    assert record["source"] == url
    assert record["untrained"] is False
    assert record["saved_model_sha256"] == hashlib.sha256((dest / SAVED_MODEL_FILE).read_bytes()).hexdigest()
    assert record["created"].endswith("Z")
    assert leftovers(tmp_path) == []


def test_fetch_url_keeps_the_untrained_marker(
    server: ModelServer, standin_tar: bytes, tmp_path: Path
) -> None:
    server.routes["/standin.tar.gz"] = standin_tar
    info = fetch(server.url("/standin.tar.gz"), tmp_path / "model")
    assert info.untrained
    assert info.warning is not None
    assert "UNTRAINED" in info.warning
    assert json.loads((tmp_path / "model" / PROVENANCE_FILE).read_text())["untrained"] is True


def test_fetch_finds_the_saved_model_inside_a_folder(
    server: ModelServer, demo_model_dir: Path, tmp_path: Path
) -> None:
    server.routes["/nested.tar.gz"] = tarball(demo_model_dir, prefix="cropnet/1")
    info = fetch(server.url("/nested.tar.gz"), tmp_path / "model")
    assert (info.path / SAVED_MODEL_FILE).is_file()
    assert not (info.path / "cropnet").exists()


def test_download_that_breaks_half_way_leaves_nothing(
    server: ModelServer, standin_tar: bytes, tmp_path: Path
) -> None:
    server.routes["/broken.tar.gz"] = breaks_half_way(standin_tar)
    with pytest.raises(FetchError, match=r"/broken\.tar\.gz") as caught:
        fetch(server.url("/broken.tar.gz"), tmp_path / "model", limits=FAST)
    assert "--from" in str(caught.value)
    assert not (tmp_path / "model").exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("where", [0.2, 0.5, 0.8])
def test_corrupt_archive_leaves_nothing(
    server: ModelServer, standin_tar: bytes, tmp_path: Path, where: float
) -> None:
    # Damaged deflate data often still unpacks, into garbled files; only the gzip CRC tells.
    corrupt = bytearray(standin_tar)
    at = int(len(corrupt) * where)
    corrupt[at : at + 64] = b"\xff" * 64
    server.routes[f"/corrupt-{where}.tar.gz"] = bytes(corrupt)
    with pytest.raises(FetchError, match=r"is not a readable \.tar\.gz archive"):
        fetch(server.url(f"/corrupt-{where}.tar.gz"), tmp_path / "model")
    assert not (tmp_path / "model").exists()
    assert leftovers(tmp_path) == []


def test_truncated_local_archive_is_refused(standin_tar: bytes, tmp_path: Path) -> None:
    archive = tmp_path / "partial.tar.gz"
    archive.write_bytes(standin_tar[: len(standin_tar) * 3 // 4])
    with pytest.raises(FetchError, match=r"partial\.tar\.gz is not a readable"):
        fetch(str(archive), tmp_path / "model")
    assert not (tmp_path / "model").exists()


def test_archive_without_a_model_is_refused(server: ModelServer, tmp_path: Path) -> None:
    server.routes["/readme.tar.gz"] = tarball_of({"README.md": b"# not a model\n"})
    url = server.url("/readme.tar.gz")
    with pytest.raises(
        FetchError, match=rf"{url} holds no saved_model\.pb; it is not a TensorFlow SavedModel"
    ):
        fetch(url, tmp_path / "model")
    assert not (tmp_path / "model").exists()
    assert leftovers(tmp_path) == []


def test_archive_with_a_broken_saved_model_is_refused(server: ModelServer, tmp_path: Path) -> None:
    server.routes["/bogus.tar.gz"] = tarball_of({"saved_model.pb": b"not a protobuf", "variables/x": b""})
    with pytest.raises(ModelLoadError, match="is not a loadable TensorFlow SavedModel"):
        fetch(server.url("/bogus.tar.gz"), tmp_path / "model")
    assert not (tmp_path / "model").exists()
    assert leftovers(tmp_path) == []


def test_archive_escaping_its_folder_is_refused(server: ModelServer, tmp_path: Path) -> None:
    server.routes["/evil.tar.gz"] = tarball_of({"../../escaped.txt": b"gotcha"})
    with pytest.raises(FetchError, match="not a readable"):
        fetch(server.url("/evil.tar.gz"), tmp_path / "a" / "model")
    assert not list(tmp_path.rglob("escaped.txt"))


def test_http_error_names_the_status_and_the_url(server: ModelServer, tmp_path: Path) -> None:
    url = server.url("/missing.tar.gz")
    with pytest.raises(FetchError, match=rf"{url}: HTTP 404"):
        fetch(url, tmp_path / "model")
    assert leftovers(tmp_path) == []


def test_failed_fetch_leaves_an_existing_model_untouched(
    server: ModelServer, standin_tar: bytes, installed: Path
) -> None:
    before = snapshot(installed)
    server.routes["/broken-again.tar.gz"] = breaks_half_way(standin_tar)
    with pytest.raises(FetchError):
        fetch(server.url("/broken-again.tar.gz"), installed, force=True, limits=FAST)
    assert snapshot(installed) == before
    assert leftovers(installed.parent) == []


def test_a_stand_in_is_replaced_without_force(
    server: ModelServer, trained_looking_tar: bytes, installed: Path
) -> None:
    """After `cassava model demo`, `cassava model fetch` must simply install the real model."""
    assert read_info(installed).untrained
    server.routes["/replacement.tar.gz"] = trained_looking_tar
    info = fetch(server.url("/replacement.tar.gz"), installed)
    assert not info.untrained
    assert not (installed / UNTRAINED_MARKER).exists()
    assert leftovers(installed.parent) == []


def test_a_real_model_needs_force(server: ModelServer, trained_looking_tar: bytes, tmp_path: Path) -> None:
    server.routes["/real.tar.gz"] = trained_looking_tar
    url = server.url("/real.tar.gz")
    real = fetch(url, tmp_path / "model").path
    before = snapshot(real)
    with pytest.raises(FetchError, match=r"already exists and is not the stand-in; pass --force"):
        fetch(url, real)
    assert snapshot(real) == before
    assert not fetch(url, real, force=True).untrained
    assert leftovers(tmp_path) == []


@pytest.mark.timeout(60)  # a hang guard, not a timing assertion: a refused connection fails at once
def test_offline_fails_fast_naming_the_url_and_the_way_out(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/cropnet.tar.gz"
    with pytest.raises(FetchError) as caught:
        fetch(url, tmp_path / "model", limits=FAST)
    message = str(caught.value)
    assert url in message
    assert "cassava model fetch --from" in message
    assert "make serve-demo" in message
    assert "cassava model demo" in message
    assert not (tmp_path / "model").exists()
    assert leftovers(tmp_path) == []


# --- the default sources: TF Hub, then Kaggle --------------------------------------------------------


@pytest.fixture
def mirrors(
    server: ModelServer, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> tuple[str, str]:
    """Both default sources pointed at the local server, as a mirror would be; under a prefix of
    this test's own, since the server outlives it."""
    prefix = f"/{request.node.name}"
    monkeypatch.setenv("CASSAVA_TFHUB_URL", server.url(f"{prefix}/tfhub/"))
    monkeypatch.setenv("CASSAVA_KAGGLE_URL", server.url(f"{prefix}/kaggle"))
    tfhub, kaggle = model_store.default_sources()
    return tfhub.removeprefix(server.url("")), kaggle.removeprefix(server.url(""))


def test_the_default_sources_are_tf_hub_then_kaggle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kaggle's model download URL is kagglehub's: `KaggleApiV1Client` joins `api/v1/` and
    `models/{owner}/{model}/{framework}/{variation}/{version}/download` onto https://www.kaggle.com
    (Kaggle/kagglehub 0.3.x: src/kagglehub/http_resolver.py `_build_model_download_url_path`,
    src/kagglehub/clients.py, src/kagglehub/config.py `DEFAULT_KAGGLE_API_ENDPOINT`)."""
    monkeypatch.delenv("CASSAVA_TFHUB_URL", raising=False)
    monkeypatch.delenv("CASSAVA_KAGGLE_URL", raising=False)
    tfhub, kaggle = model_store.default_sources()
    assert tfhub == f"{model_store.CROPNET_HANDLE}?tf-hub-format=compressed"
    assert kaggle == f"https://www.kaggle.com/api/v1/models/{KAGGLE_HANDLE}/download"


def test_kaggle_is_tried_when_tf_hub_fails(
    server: ModelServer, mirrors: tuple[str, str], trained_looking_tar: bytes, tmp_path: Path
) -> None:
    tfhub, kaggle = mirrors
    server.routes[tfhub] = lambda h: h.send_error(503)
    server.routes[kaggle] = trained_looking_tar
    notes: list[str] = []
    info = fetch(dest=tmp_path / "model", limits=FAST, notify=notes.append)
    assert info.source == server.url(kaggle)
    assert [path for path in server.paths if path in mirrors] == [tfhub, tfhub, kaggle]
    assert any(note.startswith("trying the next source") for note in notes)
    record = json.loads((info.path / PROVENANCE_FILE).read_text())
    assert record["archive_sha256"] == hashlib.sha256(trained_looking_tar).hexdigest()


def test_both_sources_failing_names_both(
    server: ModelServer, mirrors: tuple[str, str], tmp_path: Path
) -> None:
    with pytest.raises(FetchError, match=r"could not download the model:\n") as caught:
        fetch(dest=tmp_path / "model", limits=FAST)
    for path in mirrors:
        assert f"{server.url(path)}: HTTP 404" in str(caught.value)
    assert leftovers(tmp_path) == []


# --- checksums ---------------------------------------------------------------------------------------


def test_a_refetch_is_compared_with_the_first_archive(
    server: ModelServer, trained_looking_tar: bytes, tmp_path: Path
) -> None:
    url = server.url("/pinned.tar.gz")
    server.routes["/pinned.tar.gz"] = trained_looking_tar
    first = fetch(url, tmp_path / "model").path
    recorded = json.loads((first / PROVENANCE_FILE).read_text())["archive_sha256"]
    assert recorded == hashlib.sha256(trained_looking_tar).hexdigest()
    assert fetch(url, first, force=True).source == url  # the same archive again: accepted

    # The publisher (or something in between) now serves different bytes under the same URL.
    changed = tarball(first, skip=frozenset({PROVENANCE_FILE, "variables"}))
    server.routes["/pinned.tar.gz"] = changed
    before = snapshot(first)
    new = hashlib.sha256(changed).hexdigest()
    with pytest.raises(FetchError, match=rf"SHA-256 {new}, but the archive that installed .*{recorded}"):
        fetch(url, first, force=True)
    assert snapshot(first) == before
    with pytest.raises(FetchError, match=rf"pass --sha256 {new}"):
        fetch(url, first, force=True)
    assert leftovers(tmp_path) == []


def test_sha256_checks_a_download_and_a_local_archive(
    server: ModelServer, trained_looking_tar: bytes, tmp_path: Path
) -> None:
    digest = hashlib.sha256(trained_looking_tar).hexdigest()
    server.routes["/sha.tar.gz"] = trained_looking_tar
    archive = tmp_path / "cropnet.tar.gz"
    archive.write_bytes(trained_looking_tar)
    for source in (server.url("/sha.tar.gz"), str(archive)):
        with pytest.raises(FetchError, match=rf"SHA-256 {digest}, but --sha256 says {'e' * 64}"):
            fetch(source, tmp_path / "model", sha256="e" * 64, force=True, limits=FAST)
        info = fetch(source, tmp_path / "model", sha256=digest.upper(), force=True)
        assert json.loads((info.path / PROVENANCE_FILE).read_text())["archive_sha256"] == digest
    assert leftovers(tmp_path) == []


def test_sha256_must_be_a_digest_of_an_archive(demo_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"--sha256 'abc' is not a SHA-256 digest"):
        fetch(str(demo_model_dir), tmp_path / "model", sha256="abc")
    with pytest.raises(FetchError, match=r"--sha256 checks an archive, and --from .* is a directory"):
        fetch(str(demo_model_dir), tmp_path / "model", sha256="a" * 64)


# --- bounds ------------------------------------------------------------------------------------------


@pytest.fixture
def extraction_spy(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records every `TarFile.extractall`: a refusal must come before the first one."""
    calls: list[object] = []
    real = tarfile.TarFile.extractall

    def spy(self: tarfile.TarFile, *args: object, **kwargs: object) -> None:
        calls.append(self.name)
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(tarfile.TarFile, "extractall", spy)
    return calls


def test_an_archive_that_unpacks_past_the_limit_writes_nothing(
    tmp_path: Path, extraction_spy: list[object]
) -> None:
    """A 2 MB gzip can hold 2 GB; here a few KB hold 3 MB against a 1 MB limit."""
    archive = tmp_path / "bomb.tar.gz"
    archive.write_bytes(tarball_of({"saved_model.pb": b"", "variables/zeros": bytes(3_000_000)}))
    assert archive.stat().st_size < 10_000
    limit = re.escape(download.human(1_000_000))
    with pytest.raises(FetchError, match=rf"unpacks to more than the size limit of {limit}.*--max-size"):
        fetch(str(archive), tmp_path / "model", limits=DownloadLimits(max_size=1_000_000))
    assert extraction_spy == []
    assert leftovers(tmp_path) == []


def test_a_sparse_member_counts_at_its_full_size(tmp_path: Path, extraction_spy: list[object]) -> None:
    """Issue 9's archive: a few bytes, and a sparse file of 10 GB inside, against the default 1 GiB."""
    archive = tmp_path / "sparse.tar.gz"
    archive.write_bytes(sparse_tarball("variables/huge", 10 << 30))
    with pytest.raises(FetchError, match=r"at member 'variables/huge', 10\.0 GiB"):
        fetch(str(archive), tmp_path / "model")
    assert extraction_spy == []


def test_unpacking_checks_free_space_first(
    trained_looking_tar: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "cropnet.tar.gz"
    archive.write_bytes(trained_looking_tar)
    real = download.shutil.disk_usage
    monkeypatch.setattr(download.shutil, "disk_usage", lambda path: real(path)._replace(free=1000))
    with pytest.raises(
        FetchError, match=r"unpacking .*cropnet\.tar\.gz needs .* but only 1,000 bytes is free"
    ):
        fetch(str(archive), tmp_path / "model")
    assert leftovers(tmp_path) == []


# --- staging -----------------------------------------------------------------------------------------


def test_debris_of_a_killed_install_is_removed_at_the_next(demo_model_dir: Path, tmp_path: Path) -> None:
    """SIGKILL cannot be caught: what it leaves is cleared by the next install into the same place."""
    debris = [tmp_path / ".model.staging-x1y2z3", tmp_path / f".model.old-{os.getpid()}-1"]
    for path in debris:
        (path / "variables").mkdir(parents=True)
        (path / "variables" / "variables.data-00000-of-00001").write_bytes(b"half")
    (tmp_path / ".other.staging-keep").mkdir()  # another destination's: not ours to touch
    notes: list[str] = []
    fetch(str(demo_model_dir), tmp_path / "model", notify=notes.append)
    assert leftovers(tmp_path) == [".other.staging-keep"]
    assert sorted(notes) == sorted(f"removed {p}, left behind by an install that was killed" for p in debris)


def test_one_install_at_a_time(demo_model_dir: Path, tmp_path: Path) -> None:
    busy = rf"another cassava process is installing a model in {tmp_path}"
    with model_store._exclusive(tmp_path), pytest.raises(FetchError, match=busy):
        fetch(str(demo_model_dir), tmp_path / "model")
    assert fetch(str(demo_model_dir), tmp_path / "model").untrained


# --- fetch from local files ------------------------------------------------------------------------


def test_fetch_from_a_directory(demo_model_dir: Path, tmp_path: Path) -> None:
    info = fetch(str(demo_model_dir), tmp_path / "model")
    assert info.source == str(demo_model_dir)
    assert info.untrained
    assert snapshot(demo_model_dir)[SAVED_MODEL_FILE] == snapshot(info.path)[SAVED_MODEL_FILE]
    assert leftovers(tmp_path) == []


def test_fetch_from_a_local_tarball(trained_looking_tar: bytes, tmp_path: Path) -> None:
    archive = tmp_path / "downloads" / "cropnet.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(trained_looking_tar)
    info = fetch(str(archive), tmp_path / "model")
    assert not info.untrained
    assert info.source == str(archive)
    assert archive.is_file()  # the user's file is left alone


def test_fetch_from_a_path_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.tar.gz"
    with pytest.raises(FetchError, match=r"--from .*nowhere\.tar\.gz.* is neither an http\(s\) URL nor"):
        fetch(str(missing), tmp_path / "model")
    assert not (tmp_path / "model").exists()
    assert leftovers(tmp_path) == []


def test_fetch_from_a_directory_without_a_model(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FetchError, match=r"holds no saved_model\.pb"):
        fetch(str(tmp_path / "empty"), tmp_path / "model")
    assert not (tmp_path / "model").exists()


# --- the stand-in ----------------------------------------------------------------------------------


def test_demo_model_is_marked_untrained(demo_model_dir: Path) -> None:
    assert (demo_model_dir / UNTRAINED_MARKER).is_file()
    info = read_info(demo_model_dir)
    assert info.untrained
    assert info.warning is not None
    assert str(demo_model_dir) in info.warning
    assert "cassava model fetch" in info.warning
    record = json.loads((demo_model_dir / PROVENANCE_FILE).read_text())
    assert record["untrained"] is True
    assert record["source"].startswith("cassava model demo")
    assert (
        record["saved_model_sha256"]
        == hashlib.sha256((demo_model_dir / SAVED_MODEL_FILE).read_bytes()).hexdigest()
    )


def test_demo_refuses_to_replace_a_real_model(tmp_path: Path, trained_looking_tar: bytes) -> None:
    archive = tmp_path / "cropnet.tar.gz"
    archive.write_bytes(trained_looking_tar)
    real = fetch(str(archive), tmp_path / "model").path
    before = snapshot(real)
    with pytest.raises(FetchError, match=r"holds a real model; refusing to replace it.*--force"):
        write_demo_model(real)
    assert snapshot(real) == before
    info = write_demo_model(real, force=True)
    assert info.untrained
    assert leftovers(tmp_path) == []


def test_demo_replaces_an_older_stand_in_without_force(installed: Path) -> None:
    info = write_demo_model(installed, seed=1)
    assert info.untrained
    assert "seed 1" in info.source


# --- where models live -----------------------------------------------------------------------------


def test_read_info_names_the_missing_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(
        ModelNotFoundError, match=r"no model at .* \(saved_model\.pb is missing\).*model fetch"
    ):
        read_info(tmp_path)
    with pytest.raises(ModelNotFoundError, match=r"model\.onnx is missing.*model export --format onnx"):
        read_info(tmp_path, need=model_store.ONNX_FILE)


def test_unreadable_provenance_is_reported_as_unknown(installed: Path) -> None:
    (installed / PROVENANCE_FILE).write_text("{ not json")
    assert read_info(installed).source == "unknown"


def test_cache_location_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CASSAVA_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_store.default_model_dir() == tmp_path / "xdg" / "cassava" / "model"
    monkeypatch.setenv("CASSAVA_HOME", str(tmp_path / "home"))
    assert model_store.default_model_dir() == tmp_path / "home" / "model"
    assert model_store.resolve_model_dir(None) == tmp_path / "home" / "model"
    assert model_store.resolve_model_dir(str(tmp_path / "explicit")) == tmp_path / "explicit"
