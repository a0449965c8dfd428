"""One file over HTTP(S), the way a careful download client fetches it.

- **Retries** with exponential backoff and jitter on connection errors, HTTP 5xx and 429 (honouring a
  short `Retry-After`), and on a 403 that came at the end of a redirect chain: TF Hub and Kaggle hand
  out signed storage URLs that expire, so the chain is walked again from the original URL.
- **Resume** with `Range: bytes=N-` (and `If-Range`, so a changed file is not spliced onto an old
  one); a server that answers 200 instead of 206 is read from the start again.
- **Checksums**: the MD5 a storage server sends in `x-goog-hash` is checked, the caller may demand a
  SHA-256, and the SHA-256 of what was saved is always returned so it can be recorded and compared.
- **Bytes on the wire**: `Content-Length`, the MD5, resuming offsets and the size limit all count the
  raw (possibly `Content-Encoding: gzip`) bytes; the body is decoded only once it is complete.
- **Bounds**: a size limit (checked against `Content-Length` before the first byte is written, and
  again while streaming and decoding), free disk space checked first, a per-read timeout and an
  overall deadline that holds even against a server that trickles one byte at a time.
"""

from __future__ import annotations

import base64
import hashlib
import random
import shutil
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cassava import __version__
from cassava.errors import FetchError

if TYPE_CHECKING:
    import httpx

#: CropNet's archive is about 20 MB; 1 GiB leaves room for a fifty-times bigger model while keeping a
#: hostile or broken server from filling the disk. `--max-size` raises it.
DEFAULT_MAX_SIZE = 1 << 30
#: Overall time for a whole fetch, every retry and source included: 20 MB in 20 minutes is 17 KB/s,
#: slower than a poor mobile link. `--deadline` raises it.
DEFAULT_DEADLINE_S = 1200.0

CHUNK = 1 << 16
# The longest pause a server's Retry-After may impose on one retry; longer ones are not worth waiting.
MAX_RETRY_AFTER_S = 60.0

ProgressCallback = Callable[[int, int | None], None]
"""Called with (bytes done, bytes total or None) while downloading."""
Notify = Callable[[str], None]
"""Called with a one-line message when a download retries, resumes or starts over."""


class DownloadError(FetchError):
    """The download from this URL failed; another source may still work."""


class DownloadRefusedError(DownloadError):
    """The download must not go on anywhere: too big, no disk space, or out of time."""


@dataclass(frozen=True)
class DownloadLimits:
    max_size: int = DEFAULT_MAX_SIZE
    deadline_s: float = DEFAULT_DEADLINE_S
    read_timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    attempts: int = 4
    #: first pause between tries; it doubles each time (0.5, 1, 2 s), so an offline machine is told
    #: within seconds while a brief outage is ridden out
    backoff_s: float = 0.5


@dataclass(frozen=True)
class Downloaded:
    url: str
    """Where the bytes finally came from, after redirects."""
    size: int
    sha256: str
    md5_verified: bool


def human(size: int) -> str:
    """`1.0 GiB (1,073,741,824 bytes)`: readable, and exact where two sizes are close."""
    from pydantic import ByteSize

    if size < 1024:
        return f"{size:,} bytes"
    return f"{ByteSize(size).human_readable(separator=' ')} ({size:,} bytes)"


def ensure_free_space(directory: Path, need: int, what: str) -> None:
    free = shutil.disk_usage(directory).free
    if need > free:
        raise DownloadRefusedError(
            f"{what} needs {human(need)} but only {human(free)} is free on the file system of {directory}; "
            "free some space or install elsewhere with --dest"
        )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while block := data.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class _RetryableError(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass
class _Partial:
    """What is on disk so far, and what the server said about the whole file."""

    path: Path
    done: int = 0
    total: int | None = None
    encoding: str = "identity"
    validator: str | None = None
    expected_md5: str | None = None
    md5: Any = field(default_factory=lambda: hashlib.md5(usedforsecurity=False))

    def restart(self) -> None:
        self.path.unlink(missing_ok=True)
        self.done, self.total, self.validator, self.expected_md5 = 0, None, None, None
        self.md5 = hashlib.md5(usedforsecurity=False)


def download(
    url: str,
    target: Path,
    *,
    limits: DownloadLimits = DownloadLimits(),
    deadline: float | None = None,
    expected_sha256: str | None = None,
    progress: ProgressCallback | None = None,
    notify: Notify | None = None,
) -> Downloaded:
    """Save `url` to `target`; `deadline` is a `time.monotonic()` instant shared with other calls."""
    import httpx

    deadline = deadline if deadline is not None else time.monotonic() + limits.deadline_s
    partial = _Partial(target.with_name(target.name + ".part"))
    partial.restart()
    headers = {
        "User-Agent": f"cassava/{__version__}",
        # gzip only: it is the one encoding decoded here, and storage servers hash the stored bytes,
        # which they send as they are when gzip is accepted.
        "Accept-Encoding": "gzip",
    }
    with httpx.Client(follow_redirects=True, headers=headers) as client:
        for attempt in range(1, max(1, limits.attempts) + 1):
            try:
                final_url = _attempt(client, url, partial, limits, deadline, progress, notify)
                break
            except _RetryableError as err:
                if attempt >= limits.attempts:
                    raise DownloadError(f"{url}: {err} (gave up after {attempt} tries)") from None
                pause = limits.backoff_s * 2 ** (attempt - 1) * random.uniform(1.0, 1.25)
                if err.retry_after is not None:
                    pause = max(pause, min(err.retry_after, MAX_RETRY_AFTER_S))
                if time.monotonic() + pause >= deadline:
                    raise _out_of_time(url, limits, partial) from None
                if notify:
                    notify(f"{err}; try {attempt + 1} of {limits.attempts} in {pause:.1f} s")
                time.sleep(pause)
    _check_md5(url, partial)
    _decode(url, partial, target, limits)
    digest = sha256_of(target)
    if expected_sha256 and digest != expected_sha256.lower():
        target.unlink()
        raise DownloadError(
            f"{url}: the file received has SHA-256 {digest}, not the expected {expected_sha256.lower()}"
        )
    return Downloaded(
        url=final_url,
        size=target.stat().st_size,
        sha256=digest,
        md5_verified=partial.expected_md5 is not None,
    )


def _attempt(
    client: httpx.Client,
    url: str,
    partial: _Partial,
    limits: DownloadLimits,
    deadline: float,
    progress: ProgressCallback | None,
    notify: Notify | None,
) -> str:
    """One request from the original URL (so an expired signed redirect is signed afresh)."""
    import httpx

    left = deadline - time.monotonic()
    if left <= 0:
        raise _out_of_time(url, limits, partial)
    timeout = httpx.Timeout(min(limits.read_timeout_s, left), connect=min(limits.connect_timeout_s, left))
    headers = {}
    if partial.done:
        headers["Range"] = f"bytes={partial.done}-"
        if partial.validator:
            headers["If-Range"] = partial.validator
    try:
        with client.stream("GET", url, headers=headers, timeout=timeout) as response:
            _accept(response, url, partial, limits, notify)
            with _deadline_guard(response, deadline), partial.path.open("ab") as out:
                # No chunk size: httpx would hold back a partial chunk, and lose it if the connection
                # then drops, so the resume would start earlier than it could.
                for chunk in response.iter_raw():
                    out.write(chunk)
                    partial.md5.update(chunk)
                    partial.done += len(chunk)
                    if partial.done > limits.max_size:
                        raise DownloadRefusedError(
                            f"{url}: the server sent more than the size limit of {human(limits.max_size)}; "
                            "if that is expected, raise it with --max-size"
                        )
                    if progress:
                        progress(partial.done, partial.total)
            if time.monotonic() >= deadline:
                raise _out_of_time(url, limits, partial)
            if partial.total is not None and partial.done != partial.total:
                got = f"{partial.done:,} of {partial.total:,} bytes"
                raise _RetryableError(f"the connection closed after {got}")
            return str(response.url)
    except httpx.TransportError as err:
        if time.monotonic() >= deadline:
            raise _out_of_time(url, limits, partial) from None
        raise _RetryableError(f"{type(err).__name__}: {err}" if str(err) else type(err).__name__) from None


def _accept(
    response: httpx.Response, url: str, partial: _Partial, limits: DownloadLimits, notify: Notify | None
) -> None:
    """Decide from the status and headers whether to read this body, and where it goes in the file."""
    status, where = response.status_code, response.url
    if status >= 500 or status in (408, 429):
        pause = _retry_after(response.headers.get("retry-after"))
        raise _RetryableError(f"HTTP {status} from {where}", pause)
    if status == 403 and response.history:
        # A 403 after a redirect is, in TF Hub's and Kaggle's case, an expired signed URL
        # (tensorflow/hub issues #922, #932): the next try asks the original URL for a fresh one.
        raise _RetryableError(f"HTTP 403 from {where} (an expired signed URL?); asking {url} again")
    if status == 416 and partial.done:
        asked = partial.done
        partial.restart()
        raise _RetryableError(f"HTTP 416 from {where} for bytes {asked}-; starting over")
    if status == 206 and partial.done:
        start, total = _content_range(response.headers.get("content-range", ""))
        if start != partial.done:
            asked = partial.done
            partial.restart()
            raise _RetryableError(f"{where} resumed at byte {start}, not {asked}; starting over")
        partial.total = total
    elif status == 200:
        if partial.done:
            if notify:
                notify(f"{where} does not resume downloads (HTTP 200 to a Range request); starting over")
            partial.restart()
        length = response.headers.get("content-length")
        partial.total = int(length) if length and length.isdigit() else None
        partial.encoding = response.headers.get("content-encoding", "identity").strip().lower()
        partial.validator = response.headers.get("etag") or response.headers.get("last-modified")
        partial.expected_md5 = _md5_from(response.headers)
        if partial.encoding not in ("identity", "gzip"):
            raise DownloadError(
                f"{url}: the server sent Content-Encoding {partial.encoding!r}; only gzip is supported"
            )
    else:
        raise DownloadError(f"{url}: HTTP {status}" + (f" from {where}" if str(where) != url else ""))
    if partial.total is not None:
        if partial.total > limits.max_size:
            raise DownloadRefusedError(
                f"{url}: the server offers {human(partial.total)}, over the size limit of "
                f"{human(limits.max_size)}; "
                "if that is expected, raise it with --max-size"
            )
        ensure_free_space(partial.path.parent, partial.total - partial.done, f"downloading {url}")


def _md5_from(headers: httpx.Headers) -> str | None:
    """The base64 MD5 in `x-goog-hash: crc32c=...,md5=...` (Google Cloud Storage, behind Kaggle)."""
    if headers.get("x-goog-stored-content-encoding", "").lower() == "gzip" and (
        headers.get("content-encoding", "").lower() != "gzip"
    ):
        # Storage decompressed the object on the way out: the hash is of the stored bytes, not these.
        return None
    for value in headers.get_list("x-goog-hash", split_commas=True):
        name, _, digest = value.strip().partition("=")
        if name.lower() == "md5" and digest:
            return digest
    return None


def _content_range(value: str) -> tuple[int, int | None]:
    """`bytes 100-199/1000` -> (100, 1000); an unknown total (`/*`) gives None."""
    unit, _, spec = value.strip().partition(" ")
    span, _, total = spec.partition("/")
    first = span.partition("-")[0]
    if unit != "bytes" or not first.isdigit():
        return -1, None
    return int(first), int(total) if total.isdigit() else None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    with suppress(TypeError, ValueError, IndexError):
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    return None


@contextmanager
def _deadline_guard(response: httpx.Response, deadline: float) -> Iterator[None]:
    """Shut the socket down at the deadline: a read timeout alone never fires against a server that
    sends one byte just before each timeout runs out."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if not isinstance(sock, socket.socket):
        yield
        return

    def shut() -> None:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(max(0.0, deadline - time.monotonic()), shut)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _out_of_time(url: str, limits: DownloadLimits, partial: _Partial) -> DownloadRefusedError:
    got = f"{partial.done:,} of {partial.total:,}" if partial.total else f"{partial.done:,}"
    return DownloadRefusedError(
        f"{url}: the download ran out of its {limits.deadline_s:g} s deadline after {got} bytes; "
        "on a slow link, raise it with --deadline"
    )


def _check_md5(url: str, partial: _Partial) -> None:
    if partial.expected_md5 is None:
        return
    actual = base64.b64encode(partial.md5.digest()).decode()
    if actual != partial.expected_md5:
        partial.path.unlink(missing_ok=True)
        raise DownloadError(
            f"{url}: the server's x-goog-hash says MD5 {partial.expected_md5}, but the "
            f"{partial.done:,} bytes received have MD5 {actual}: the download is corrupt"
        )


def _decode(url: str, partial: _Partial, target: Path, limits: DownloadLimits) -> None:
    """Move the raw body to `target`, un-gzipping it first when it came with `Content-Encoding: gzip`."""
    if partial.encoding == "identity":
        partial.path.replace(target)
        return
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    written = 0

    def write(data: bytes) -> None:
        nonlocal written
        written += len(data)
        if written > limits.max_size:
            raise DownloadRefusedError(
                f"{url}: its gzip Content-Encoding unpacks to more than the size limit of "
                f"{human(limits.max_size)}; if that is expected, raise it with --max-size"
            )
        out.write(data)

    try:
        with partial.path.open("rb") as raw, target.open("wb") as out:
            while block := raw.read(CHUNK):
                while block:
                    # max_length bounds each step's output: a gzip bomb never sits in memory whole.
                    write(inflate.decompress(block, CHUNK))
                    block = inflate.unconsumed_tail
            write(inflate.flush())
        if not inflate.eof:
            raise DownloadError(f"{url}: the gzip-encoded body ends early")
    except zlib.error as err:
        target.unlink(missing_ok=True)
        raise DownloadError(f"{url}: the gzip-encoded body is corrupt ({err})") from err
    except DownloadError:
        target.unlink(missing_ok=True)
        raise
    finally:
        partial.path.unlink(missing_ok=True)
