"""`cassava.download` against a local HTTP server that misbehaves the ways real download servers do.

The server is `http.server` on 127.0.0.1 (a free port) in a thread; each route is a small function
that writes the response by hand, so a test can stall, drop, trickle, redirect or lie exactly as it
needs. What the real servers do, and where it is written down:

- Kaggle's own client, kagglehub (`src/kagglehub/clients.py`, `KaggleApiV1Client.download_file`, and
  `src/kagglehub/integrity.py`, at Kaggle/kagglehub 0.3.x, commits 0176a96d and 0946d07b), reads the
  MD5 from `x-goog-hash: crc32c=...,md5=<base64>`, checks it over the whole file, and resumes a
  partial file with `Range: bytes=N-` against the URL it was redirected to.
- Google Cloud Storage, behind Kaggle, serves a gzip-stored object as it is stored, with
  `Content-Encoding: gzip`, when the request accepts gzip; its hashes and `Content-Length` describe
  those stored (encoded) bytes (https://cloud.google.com/storage/docs/transcoding).
- tfhub.dev redirects to signed storage URLs that expire; an expired one answers 403
  (tensorflow/hub issues #922 and #932), so a retry has to start again at the first URL.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.server
import os
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cassava import download as dl
from cassava.download import DownloadError, DownloadLimits, DownloadRefusedError, download

Handler = http.server.BaseHTTPRequestHandler
Route = Callable[[Handler], None]

#: Small pauses so that retry tests take milliseconds; the defaults are what users get.
FAST = DownloadLimits(attempts=3, backoff_s=0.01, read_timeout_s=2.0, connect_timeout_s=2.0, deadline_s=20.0)
DATA = random.Random(0).randbytes(300_000)


def size(n: int) -> str:
    """How an error message writes a size, as a regex."""
    return re.escape(dl.human(n))


def b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


class Server:
    """Routes by path (query strings ignored); records each request's path and headers."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.stop = threading.Event()
        outer = self

        class Handle(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                route = outer.routes.get(self.path.split("?")[0])
                if route is None:
                    self.send_error(404)
                else:
                    route(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handle)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]


@pytest.fixture
def server() -> Iterator[Server]:
    server = Server()
    server.thread.start()
    yield server
    server.stop.set()
    server.httpd.shutdown()
    server.httpd.server_close()


# --- routes ------------------------------------------------------------------------------------------


def body(data: bytes, status: int = 200, headers: dict[str, str] | None = None, length: bool = True) -> Route:
    def respond(h: Handler) -> None:
        h.send_response(status)
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        if length:
            h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return respond


def ranged(data: bytes, headers: dict[str, str] | None = None) -> Route:
    """Honours `Range: bytes=N-` with a 206, as a storage server does."""

    def respond(h: Handler) -> None:
        asked = h.headers.get("Range", "")
        extra = {"Accept-Ranges": "bytes", "ETag": '"v1"', **(headers or {})}
        if asked.startswith("bytes=") and asked.endswith("-"):
            start = int(asked[len("bytes=") : -1])
            extra["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body(data[start:], 206, extra)(h)
        else:
            body(data, 200, extra)(h)

    return respond


def drops_after(data: bytes, sent: int, headers: dict[str, str] | None = None) -> Route:
    """Promises all of `data`, sends `sent` bytes, then drops the connection."""

    def respond(h: Handler) -> None:
        h.send_response(200)
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data[:sent])
        h.wfile.flush()
        h.close_connection = True
        h.connection.shutdown(socket.SHUT_RDWR)

    return respond


def first_then(first: Route, then: Route, times: int = 1) -> Route:
    served = [0]

    def respond(h: Handler) -> None:
        served[0] += 1
        (first if served[0] <= times else then)(h)

    return respond


def trickles(server: Server, data: bytes, every_s: float) -> Route:
    """Headers at once, then one byte every `every_s`: never idle for long enough to time a read out."""

    def respond(h: Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        for byte in data:
            if server.stop.wait(every_s):
                return
            try:
                h.wfile.write(bytes([byte]))
                h.wfile.flush()
            except OSError:
                return

    return respond


def stalls(server: Server) -> Route:
    """Headers, then nothing."""

    def respond(h: Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.flush()
        server.stop.wait(30)

    return respond


def redirect(to: str) -> Route:
    def respond(h: Handler) -> None:
        h.send_response(302)
        h.send_header("Location", to)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return respond


# --- the happy paths ---------------------------------------------------------------------------------


def test_download_reports_progress_and_the_sha256(server: Server, tmp_path: Path) -> None:
    server.routes["/m.tar.gz"] = ranged(DATA)
    seen: list[tuple[int, int | None]] = []
    got = download(
        server.url("/m.tar.gz"), tmp_path / "m.tar.gz", limits=FAST, progress=lambda *a: seen.append(a)
    )
    assert (tmp_path / "m.tar.gz").read_bytes() == DATA
    assert got.sha256 == hashlib.sha256(DATA).hexdigest()
    assert got.size == len(DATA)
    assert not got.md5_verified
    assert seen[-1] == (len(DATA), len(DATA))
    assert [p.name for p in tmp_path.iterdir()] == ["m.tar.gz"]


def test_the_x_goog_hash_md5_is_verified(server: Server, tmp_path: Path) -> None:
    server.routes["/m"] = ranged(DATA, {"x-goog-hash": f"crc32c=n03x6A==,md5={b64md5(DATA)}"})
    got = download(server.url("/m"), tmp_path / "m", limits=FAST)
    assert got.md5_verified


def test_wrong_bytes_fail_the_md5_check(server: Server, tmp_path: Path) -> None:
    wrong = bytes(b ^ 1 for b in DATA[:1000]) + DATA[1000:]
    server.routes["/m"] = ranged(wrong, {"x-goog-hash": f"crc32c=n03x6A==,md5={b64md5(DATA)}"})
    with pytest.raises(
        DownloadError, match=rf"x-goog-hash says MD5 {re.escape(b64md5(DATA))}.*is corrupt"
    ) as err:
        download(server.url("/m"), tmp_path / "m", limits=FAST)
    assert b64md5(wrong) in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_an_expected_sha256_is_enforced(server: Server, tmp_path: Path) -> None:
    server.routes["/m"] = ranged(DATA)
    digest = hashlib.sha256(DATA).hexdigest()
    with pytest.raises(DownloadError, match=rf"/m: the file received has SHA-256 {digest}, not"):
        download(server.url("/m"), tmp_path / "m", limits=FAST, expected_sha256="0" * 64)
    got = download(server.url("/m"), tmp_path / "m", limits=FAST, expected_sha256=digest)
    assert got.size == len(DATA)


# --- resuming ----------------------------------------------------------------------------------------


def test_a_dropped_connection_resumes_with_range(server: Server, tmp_path: Path) -> None:
    md5 = {"x-goog-hash": f"md5={b64md5(DATA)}"}
    server.routes["/m"] = first_then(drops_after(DATA, 100_000, md5), ranged(DATA, md5))
    notes: list[str] = []
    got = download(server.url("/m"), tmp_path / "m", limits=FAST, notify=notes.append)
    assert (tmp_path / "m").read_bytes() == DATA
    assert got.md5_verified  # the hash covers the bytes from both requests
    (_, first), (_, second) = server.requests
    assert "range" not in first
    start = int(second["range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < start <= 100_000
    assert len(notes) == 1
    assert "closed" in notes[0] or "Error" in notes[0]


def test_a_server_that_ignores_range_is_read_from_the_start(server: Server, tmp_path: Path) -> None:
    server.routes["/m"] = first_then(drops_after(DATA, 100_000), body(DATA))
    notes: list[str] = []
    seen: list[tuple[int, int | None]] = []
    download(
        server.url("/m"),
        tmp_path / "m",
        limits=FAST,
        notify=notes.append,
        progress=lambda *a: seen.append(a),
    )
    assert (tmp_path / "m").read_bytes() == DATA  # not the first part twice
    assert "range" in server.requests[1][1]
    assert any("starting over" in note for note in notes)
    assert seen[-1] == (len(DATA), len(DATA))


def test_a_changed_file_is_not_spliced_onto_the_old_part(server: Server, tmp_path: Path) -> None:
    """`If-Range` carries the first response's ETag; a server whose file changed answers 200."""
    server.routes["/m"] = first_then(drops_after(DATA, 50_000, {"ETag": '"v1"'}), body(DATA[::-1]))
    download(server.url("/m"), tmp_path / "m", limits=FAST)
    assert server.requests[1][1]["if-range"] == '"v1"'
    assert (tmp_path / "m").read_bytes() == DATA[::-1]


# --- Content-Encoding --------------------------------------------------------------------------------


def test_gzip_content_encoding_counts_and_hashes_the_raw_bytes(server: Server, tmp_path: Path) -> None:
    encoded = gzip.compress(DATA)
    headers = {"Content-Encoding": "gzip", "x-goog-hash": f"md5={b64md5(encoded)}"}
    server.routes["/m"] = body(encoded, headers=headers)
    seen: list[tuple[int, int | None]] = []
    got = download(server.url("/m"), tmp_path / "m", limits=FAST, progress=lambda *a: seen.append(a))
    assert server.requests[0][1]["accept-encoding"] == "gzip"
    assert (tmp_path / "m").read_bytes() == DATA
    assert got.md5_verified
    assert got.sha256 == hashlib.sha256(DATA).hexdigest()  # of the file kept, not of the wire bytes
    assert seen[-1] == (len(encoded), len(encoded))


def test_a_transcoded_object_skips_the_stored_hash(server: Server, tmp_path: Path) -> None:
    """Decompressive transcoding: no Content-Encoding, and the hash is of the stored gzip bytes."""
    stored = gzip.compress(DATA)
    headers = {"x-goog-stored-content-encoding": "gzip", "x-goog-hash": f"md5={b64md5(stored)}"}
    server.routes["/m"] = body(DATA, headers=headers, length=False)
    got = download(server.url("/m"), tmp_path / "m", limits=FAST)
    assert not got.md5_verified
    assert (tmp_path / "m").read_bytes() == DATA


def test_a_gzip_encoding_bomb_is_refused(server: Server, tmp_path: Path) -> None:
    encoded = gzip.compress(bytes(3_000_000))
    server.routes["/m"] = body(encoded, headers={"Content-Encoding": "gzip"})
    limits = DownloadLimits(max_size=1_000_000, attempts=1)
    with pytest.raises(
        DownloadRefusedError,
        match=rf"unpacks to more than the size limit of {size(1_000_000)};",
    ):
        download(server.url("/m"), tmp_path / "m", limits=limits)
    assert list(tmp_path.iterdir()) == []


# --- retries -----------------------------------------------------------------------------------------


def test_403_from_an_expired_signed_url_restarts_the_redirect_chain(server: Server, tmp_path: Path) -> None:
    server.routes["/tfhub"] = redirect("/signed?sig=fresh")
    server.routes["/signed"] = first_then(body(b"<Error>ExpiredToken</Error>", 403), ranged(DATA))
    notes: list[str] = []
    got = download(server.url("/tfhub"), tmp_path / "m", limits=FAST, notify=notes.append)
    assert server.paths() == ["/tfhub", "/signed?sig=fresh", "/tfhub", "/signed?sig=fresh"]
    assert got.url == server.url("/signed?sig=fresh")
    assert "expired signed URL" in notes[0]


def test_a_403_without_a_redirect_is_not_retried(server: Server, tmp_path: Path) -> None:
    server.routes["/m"] = body(b"no", 403)
    with pytest.raises(DownloadError, match=r"^http://127\.0\.0\.1:\d+/m: HTTP 403$"):
        download(server.url("/m"), tmp_path / "m", limits=FAST)
    assert server.paths() == ["/m"]


def test_a_404_is_not_retried(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"HTTP 404"):
        download(server.url("/nothing"), tmp_path / "m", limits=FAST)
    assert server.paths() == ["/nothing"]


def test_a_503_is_retried_after_retry_after(server: Server, tmp_path: Path) -> None:
    server.routes["/m"] = first_then(body(b"busy", 503, {"Retry-After": "0"}), ranged(DATA))
    notes: list[str] = []
    download(server.url("/m"), tmp_path / "m", limits=FAST, notify=notes.append)
    assert server.paths() == ["/m", "/m"]
    assert notes[0].startswith("HTTP 503 from")
    assert "try 2 of 3" in notes[0]


def test_it_gives_up_after_the_last_try(server: Server, tmp_path: Path) -> None:
    server.routes["/m"] = body(b"oops", 500)
    with pytest.raises(DownloadError, match=r"HTTP 500 from .*gave up after 3 tries"):
        download(server.url("/m"), tmp_path / "m", limits=FAST)
    assert server.paths() == ["/m"] * 3


def test_a_refused_connection_is_retried_then_reported(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/m"
    notes: list[str] = []
    with pytest.raises(DownloadError, match=rf"{url}: ConnectError.*gave up after 3 tries"):
        download(url, tmp_path / "m", limits=FAST, notify=notes.append)
    assert len(notes) == 2


# --- bounds ------------------------------------------------------------------------------------------


def test_a_stalled_server_trips_the_read_timeout(server: Server, tmp_path: Path) -> None:
    server.routes["/m"] = stalls(server)
    limits = DownloadLimits(attempts=2, backoff_s=0.01, read_timeout_s=0.3)
    with pytest.raises(DownloadError, match=r"ReadTimeout.*gave up after 2 tries"):
        download(server.url("/m"), tmp_path / "m", limits=limits)


def test_a_trickling_server_fails_by_the_deadline(server: Server, tmp_path: Path) -> None:
    """One byte every 0.2 s never trips a 1 s read timeout; the overall deadline must end it."""
    server.routes["/m"] = trickles(server, DATA[:1000], every_s=0.2)
    limits = DownloadLimits(read_timeout_s=1.0, deadline_s=1.5)
    started = time.monotonic()
    with pytest.raises(
        DownloadRefusedError, match=r"ran out of its 1\.5 s deadline after \d+ of 1,000 bytes"
    ):
        download(server.url("/m"), tmp_path / "m", limits=limits)
    # The socket is shut at the deadline itself, not at the next byte or read timeout: the margin
    # only absorbs thread scheduling on a busy machine.
    assert time.monotonic() - started < limits.deadline_s + 0.5


def test_a_content_length_over_the_limit_is_refused_before_writing(server: Server, tmp_path: Path) -> None:
    server.routes["/m"] = body(DATA)
    limits = DownloadLimits(max_size=len(DATA) - 1, attempts=1)
    offers = rf"offers {size(len(DATA))}, over the size limit of {size(len(DATA) - 1)};"
    with pytest.raises(DownloadRefusedError, match=offers):
        download(server.url("/m"), tmp_path / "m", limits=limits)
    assert list(tmp_path.iterdir()) == []  # not even an empty .part


def test_a_body_without_length_is_cut_at_the_limit(server: Server, tmp_path: Path) -> None:
    server.routes["/m"] = body(DATA, length=False)  # HTTP/1.0: the body ends when the server closes
    limits = DownloadLimits(max_size=100_000, attempts=1)
    with pytest.raises(DownloadRefusedError, match=rf"sent more than the size limit of {size(100_000)};"):
        download(server.url("/m"), tmp_path / "m", limits=limits)


def test_too_little_disk_space_is_refused_first(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.routes["/m"] = body(DATA)
    real = dl.shutil.disk_usage

    def nearly_full(path: str | os.PathLike[str]) -> object:
        return real(path)._replace(free=1000)

    monkeypatch.setattr(dl.shutil, "disk_usage", nearly_full)
    need = rf"needs {size(len(DATA))} but only {size(1000)} is free.*--dest"
    with pytest.raises(DownloadRefusedError, match=need):
        download(server.url("/m"), tmp_path / "m", limits=FAST)
    assert list(tmp_path.iterdir()) == []
