"""Where the model lives, what it is, and how it gets there.

A model directory holds the TF2 SavedModel (`saved_model.pb`, `variables/`), optionally its ONNX
export (`model.onnx`) and `cassava-model.json`, which says where it came from. An untrained stand-in
also holds an `UNTRAINED` marker file: whatever loads it warns, and nothing ever picks a stand-in in
place of the real model on its own.

`fetch` and `write_demo_model` stage everything in a sibling temporary directory and move it into
place only once it loads and maps [N, 224, 224, 3] -> [N, 6], so a failed download never leaves a
half-written model behind; the staging directory goes on any error, Ctrl-C, SIGTERM or SIGHUP, and
what a SIGKILL leaves is removed by the next install. How bytes are downloaded is `cassava.download`'s.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import tarfile
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from cassava.backends import artifact_file
from cassava.download import (
    DownloadError,
    DownloadLimits,
    DownloadRefusedError,
    Notify,
    ProgressCallback,
    download,
    ensure_free_space,
    human,
    sha256_of,
)
from cassava.errors import FetchError, ModelLoadError, ModelNotFoundError
from cassava.labels import NUM_CLASSES

#: Where the real model (Apache-2.0) is published; tfhub.dev redirects to Kaggle Models. Both base URLs
#: can be overridden (CASSAVA_TFHUB_URL, CASSAVA_KAGGLE_URL), for a mirror or a test server.
TFHUB_BASE_URL = "https://tfhub.dev"
TFHUB_PATH = "google/cropnet/classifier/cassava_disease_V1/2"
CROPNET_HANDLE = f"{TFHUB_BASE_URL}/{TFHUB_PATH}"
KAGGLE_BASE_URL = "https://www.kaggle.com"
KAGGLE_HANDLE = "google/cropnet/tensorFlow2/classifier-cassava-disease-v1/1"

OFFLINE_HINT = (
    "If this machine is offline, download the model elsewhere (each URL above gives a .tar.gz) and "
    "install it with `cassava model fetch --from PATH_OR_URL`, or serve the UNTRAINED stand-in "
    "instead: `make serve-demo` (or `cassava model demo`)."
)

PROVENANCE_FILE = "cassava-model.json"
UNTRAINED_MARKER = "UNTRAINED"
# Each backend owns the name of the file it loads.
SAVED_MODEL_FILE = artifact_file("tensorflow")
ONNX_FILE = artifact_file("onnx")

UNTRAINED_WARNING = (
    "UNTRAINED STAND-IN MODEL: {path} was made by `cassava model demo`; its predictions are "
    "meaningless. Run `cassava model fetch` to serve the real CropNet classifier."
)


def cache_dir() -> Path:
    if home := os.environ.get("CASSAVA_HOME"):
        return Path(home)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cassava"


def default_model_dir() -> Path:
    return cache_dir() / "model"


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    untrained: bool
    source: str

    @property
    def warning(self) -> str | None:
        return UNTRAINED_WARNING.format(path=self.path) if self.untrained else None


def resolve_model_dir(explicit: Path | str | None = None) -> Path:
    """The directory given (option, env or model-settings.json), else the cache's model."""
    return Path(explicit).expanduser() if explicit else default_model_dir()


def read_info(model_dir: Path, need: str = SAVED_MODEL_FILE) -> ModelInfo:
    """Describe the model in `model_dir`; raise a helpful error when `need` is not there."""
    if not (model_dir / need).is_file():
        hint = (
            "run `cassava model export --format onnx` first"
            if need == ONNX_FILE
            else "run `cassava model fetch` (or `cassava model demo` for an untrained stand-in), "
            "or point CASSAVA_MODEL_DIR / --model at a model directory"
        )
        raise ModelNotFoundError(f"no model at {model_dir} ({need} is missing); {hint}")
    source = "unknown"
    provenance = model_dir / PROVENANCE_FILE
    if provenance.is_file():
        with suppress(OSError, ValueError):
            source = str(json.loads(provenance.read_text()).get("source", source))
    return ModelInfo(path=model_dir, untrained=is_standin(model_dir), source=source)


def check_model_files(model_dir: Path, need: str = SAVED_MODEL_FILE) -> ModelInfo:
    """`read_info`, plus a structural check of the files a load reads, in well under a second and
    without importing TensorFlow: a server must not spend half a minute importing it to learn that its
    model directory is missing, empty or truncated. It cannot prove the model loads (only a load
    does); it catches a wrong path, a missing file, an empty or truncated protobuf."""
    if not model_dir.is_dir():
        what = "is not a directory" if model_dir.exists() else "does not exist"
        raise ModelNotFoundError(
            f"the model directory {model_dir} {what}; point CASSAVA_MODEL_DIR (or the model's "
            "`parameters.uri`) at a directory made by `cassava model fetch`"
        )
    info = read_info(model_dir, need=need)
    # A SavedModel has fields 1 (schema version) and 2 (meta graphs); an ONNX ModelProto has many.
    _check_protobuf(model_dir / need, fields={1, 2} if need == SAVED_MODEL_FILE else None)
    index = model_dir / "variables" / "variables.index"
    if need == SAVED_MODEL_FILE and (model_dir / "variables").is_dir() and not index.is_file():
        raise ModelLoadError(
            f"{index} is missing, so the weights in {model_dir / 'variables'} cannot be read; "
            "the model directory is incomplete: run `cassava model fetch --force`"
        )
    return info


def _check_protobuf(path: Path, fields: set[int] | None = None) -> None:
    """Walk the top-level fields of a protobuf file: each tag, length and value must fit exactly."""
    data = path.read_bytes()
    fix = "the model directory is corrupt: run `cassava model fetch --force` to install it again"
    if not data:
        raise ModelLoadError(f"{path} is empty (0 bytes); {fix}")
    pos = 0
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            number, wire = key >> 3, key & 7
            if number == 0 or (fields is not None and number not in fields):
                raise ValueError(f"unexpected field {number} at byte {pos:,}")
            if wire == 0:
                _, pos = _varint(data, pos)
            elif wire == 2:
                size, pos = _varint(data, pos)
                pos += size
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            else:
                raise ValueError(f"wire type {wire} at byte {pos:,}")
            if pos > len(data):
                raise ValueError(
                    f"a field runs {pos - len(data):,} bytes past the end: the file is truncated"
                )
    except ValueError as err:
        raise ModelLoadError(
            f"{path} ({len(data):,} bytes) is not a valid protobuf file ({err}); {fix}"
        ) from None


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    for i in range(pos, min(pos + 10, len(data))):
        value |= (data[i] & 0x7F) << shift
        shift += 7
        if data[i] < 0x80:
            return value, i + 1
    raise ValueError(f"a malformed or truncated varint at byte {pos:,}")


def verify_model_dir(model_dir: Path) -> None:
    """Load the SavedModel and check that it maps [N, 224, 224, 3] in [0, 1] to [N, 6] probabilities."""
    from cassava.backends.tensorflow import TensorFlowBackend

    backend = TensorFlowBackend(model_dir)
    probe = np.random.default_rng(0).random((2, 224, 224, 3), dtype=np.float32)
    try:
        probs = backend.predict(probe)
    except Exception as err:
        raise ModelLoadError(
            f"{model_dir} loads but cannot be called as model(image[N,224,224,3], training=False): {err}"
        ) from err
    if probs.shape != (2, NUM_CLASSES):
        raise ModelLoadError(
            f"{model_dir} maps [2, 224, 224, 3] to {list(probs.shape)}; a CropNet classifier gives [2, 6]"
        )
    if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise ModelLoadError(f"{model_dir} does not return probabilities (rows sum to {probs.sum(axis=1)})")


# --- staging -------------------------------------------------------------------------------------


class _Terminated(BaseException):
    """SIGTERM or SIGHUP arrived: unwind (removing the staging directory), then die of the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _unwind_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into an exception for the duration, as Python does SIGINT, so `finally`
    blocks run; afterwards the signal is raised again, so the process still ends the way it would
    have (a service manager sees death by SIGTERM, not a tidy exit)."""
    wanted = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; a library caller's thread keeps its own
        return
    fired: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if not fired:  # a second signal must not interrupt the cleanup the first one started
            fired.append(signum)
            raise _Terminated(signum)

    previous = {sig: signal.signal(sig, handler) for sig in wanted}
    try:
        yield
    except _Terminated as stop:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        previous = {}
        signal.raise_signal(stop.signum)
        raise SystemExit(128 + stop.signum) from None  # the previous handler chose to carry on
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)


@contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """Hold an advisory lock on `directory` (the destination's parent): one install at a time, so
    whatever staging debris is there when the lock is held belongs to a process that died."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FetchError(
                f"another cassava process is installing a model in {directory}; "
                "wait for it to finish, then run this again"
            ) from None
        yield
    finally:
        os.close(fd)


def _remove_stale(dest: Path) -> list[Path]:
    """Staging and backup directories a killed install (SIGKILL, power loss) left next to `dest`."""
    stale = [
        p
        for pattern in (f".{dest.name}.staging-*", f".{dest.name}.old-*")
        for p in dest.parent.glob(pattern)
        if p.is_dir()
    ]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


@contextmanager
def _staged(dest: Path, notify: Notify | None = None) -> Iterator[Path]:
    """Yield an empty directory next to `dest`; on success it replaces `dest` in one rename. The
    directory is removed on any error, Ctrl-C, SIGTERM or SIGHUP, and at the next run after a SIGKILL."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _unwind_on_signals(), _exclusive(dest.parent):
        for path in _remove_stale(dest):
            if notify:
                notify(f"removed {path}, left behind by an install that was killed")
        stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.staging-", dir=dest.parent))
        stage.chmod(0o755)  # mkdtemp makes it owner-only; a server may run as another user
        try:
            yield stage
            old = None
            if dest.exists():
                old = dest.with_name(f".{dest.name}.old-{os.getpid()}-{time.time_ns()}")
                dest.rename(old)
            stage.rename(dest)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _write_provenance(
    model_dir: Path, source: str, untrained: bool, archive_sha256: str | None = None
) -> None:
    digest = hashlib.sha256((model_dir / SAVED_MODEL_FILE).read_bytes()).hexdigest()
    record = {
        "source": source,
        "untrained": untrained,
        "saved_model_sha256": digest,
        # What a later `fetch --force` from the same place is compared with.
        "archive_sha256": archive_sha256,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (model_dir / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n")


def _read_provenance(model_dir: Path) -> dict[str, object]:
    with suppress(OSError, ValueError):
        record = json.loads((model_dir / PROVENANCE_FILE).read_text())
        if isinstance(record, dict):
            return record
    return {}


def is_standin(model_dir: Path) -> bool:
    return (model_dir / UNTRAINED_MARKER).exists()


# --- fetch ---------------------------------------------------------------------------------------


def default_sources() -> list[str]:
    """TF Hub first (the seed's handle), then the same model straight from Kaggle."""
    tfhub = os.environ.get("CASSAVA_TFHUB_URL", TFHUB_BASE_URL).rstrip("/")
    kaggle = os.environ.get("CASSAVA_KAGGLE_URL", KAGGLE_BASE_URL).rstrip("/")
    return [
        f"{tfhub}/{TFHUB_PATH}?tf-hub-format=compressed",
        # kagglehub's model download path (src/kagglehub/http_resolver.py, _build_model_download_url_path).
        f"{kaggle}/api/v1/models/{KAGGLE_HANDLE}/download",
    ]


def fetch(
    source: str | None = None,
    dest: Path | None = None,
    *,
    force: bool = False,
    sha256: str | None = None,
    limits: DownloadLimits | None = None,
    progress: ProgressCallback | None = None,
    notify: Notify | None = None,
) -> ModelInfo:
    """Install the model from `source` (URL, .tar.gz or SavedModel directory; default: TF Hub, then
    Kaggle). A stand-in at `dest` is replaced freely, a real model only with `force`. The archive must
    match `sha256` when given, else the archive SHA-256 recorded by the fetch that installed `dest`
    from the same place."""
    dest = dest or default_model_dir()
    limits = limits or DownloadLimits()
    deadline = time.monotonic() + limits.deadline_s
    candidates = [source] if source else default_sources()
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise FetchError(f"--sha256 {sha256!r} is not a SHA-256 digest (64 hexadecimal digits)")
    if dest.exists() and not force and not is_standin(dest):
        raise FetchError(f"{dest} already exists and is not the stand-in; pass --force to replace it")
    expected, recorded = (sha256.lower(), False) if sha256 else (None, False)
    previous = _read_provenance(dest)
    if expected is None and previous.get("source") in candidates and previous.get("archive_sha256"):
        expected, recorded = str(previous["archive_sha256"]), True
    with _staged(dest, notify) as stage:
        archive: Path | None = None
        archive_sha256: str | None = None
        local = Path(candidates[0]).expanduser()
        if urlparse(candidates[0]).scheme in ("http", "https"):
            archive, used, archive_sha256 = _download_any(
                candidates, stage, limits, deadline, progress, notify
            )
        elif local.is_dir():
            if sha256:
                raise FetchError(f"--sha256 checks an archive, and --from {source} is a directory")
            used, root = str(local), local
        elif local.is_file():
            archive, used, archive_sha256 = local, str(local), sha256_of(local)
        else:
            raise FetchError(
                f"--from {source!r} is neither an http(s) URL nor an existing directory or .tar.gz file"
            )
        # Checked before unpacking: an archive nobody vouches for is not worth unpacking.
        if expected and archive_sha256 and archive_sha256 != expected:
            raise FetchError(_sha256_mismatch(used, archive_sha256, expected, dest if recorded else None))
        if archive is not None:
            root = _unpack(archive, stage / "unpacked", limits.max_size)
            if archive.is_relative_to(stage):
                archive.unlink()  # the user's own file (--from) is left alone
        root = _find_saved_model(root, used)
        model = stage / "model"
        if root.is_relative_to(stage):
            root.rename(model)  # the unpacked copy is ours: no second copy on disk
        else:
            ensure_free_space(stage, _tree_size(root), f"copying {root}")
            shutil.copytree(root, model)
        verify_model_dir(model)
        _write_provenance(model, source=used, untrained=is_standin(model), archive_sha256=archive_sha256)
        for entry in model.iterdir():
            entry.rename(stage / entry.name)
        model.rmdir()
        shutil.rmtree(stage / "unpacked", ignore_errors=True)
    return read_info(dest)


def _sha256_mismatch(source: str, actual: str, expected: str, recorded_in: Path | None) -> str:
    where = (
        f"the archive that installed {recorded_in} (recorded in its {PROVENANCE_FILE})"
        if recorded_in
        else "--sha256"
    )
    return (
        f"{source} gave an archive with SHA-256 {actual}, but {where} says {expected}: the download is "
        f"corrupt or the publisher changed the archive. To accept this one, pass --sha256 {actual}"
    )


def _download_any(
    sources: list[str],
    stage: Path,
    limits: DownloadLimits,
    deadline: float,
    progress: ProgressCallback | None,
    notify: Notify | None,
) -> tuple[Path, str, str]:
    """Download the first source that works; the archive, the URL it came from, and its SHA-256."""
    failures = []
    for number, url in enumerate(sources):
        if number and notify:
            notify(f"trying the next source: {url}")
        archive = stage / f"download-{number}.tar.gz"
        try:
            got = download(url, archive, limits=limits, deadline=deadline, progress=progress, notify=notify)
            return archive, url, got.sha256
        except DownloadRefusedError as err:
            raise FetchError(f"{err}\n{OFFLINE_HINT}") from None
        except DownloadError as err:
            failures.append(str(err))
            archive.unlink(missing_ok=True)
    tried = "\n".join(f"  {failure}" for failure in failures)
    raise FetchError(f"could not download the model:\n{tried}\n{OFFLINE_HINT}")


def _tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _unpack(archive: Path, into: Path, max_size: int) -> Path:
    """Unpack a .tar.gz after checking, from its headers alone, that it fits the size limit and the
    disk: a small archive can hold gigabytes of zeros or a sparse file of any size."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            total = 0
            for member in tar:  # reads headers one at a time: stops at the first one over the limit
                total += member.size if member.isreg() else 0
                if total > max_size:
                    raise FetchError(
                        f"{archive} unpacks to more than the size limit of {human(max_size)} "
                        f"(at member {member.name!r}, {human(member.size)}); nothing was written. "
                        "If that is expected, raise the limit with --max-size"
                    )
            ensure_free_space(into.parent, total, f"unpacking {archive}")
            # The "data" filter refuses absolute paths, `..`, links out of the tree and device files.
            tar.extractall(into, filter="data")
            # extractall stops at the tar end marker, before the gzip trailer: only reading on to the
            # end checks the CRC. Without it, bytes damaged in transit unpack silently into garbled
            # weights that still load and still return probabilities.
            while tar.fileobj is not None and tar.fileobj.read(1 << 20):
                pass
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise FetchError(f"{archive} is not a readable .tar.gz archive: {err}") from err
    return into


def _find_saved_model(root: Path, source: str) -> Path:
    if (root / SAVED_MODEL_FILE).is_file():
        return root
    found = sorted(p.parent for p in root.rglob(SAVED_MODEL_FILE))
    if not found:
        raise FetchError(f"{source} holds no {SAVED_MODEL_FILE}; it is not a TensorFlow SavedModel")
    return found[0]


# --- the untrained stand-in ------------------------------------------------------------------------


def write_demo_model(dest: Path | None = None, *, force: bool = False, seed: int = 0) -> ModelInfo:
    """Write an untrained stand-in with the real model's interface (no signature, model(image, training))."""
    dest = dest or default_model_dir()
    if (dest / SAVED_MODEL_FILE).is_file() and not is_standin(dest) and not force:
        raise FetchError(
            f"{dest} holds a real model; refusing to replace it with an untrained stand-in "
            "(pass --force, or write the stand-in elsewhere with --dest)"
        )
    from cassava.standin import save_standin

    with _staged(dest) as stage:
        save_standin(stage, seed=seed)
        (stage / UNTRAINED_MARKER).write_text(
            "This model is an untrained stand-in made by `cassava model demo`.\n"
            "It has the CropNet interface but its predictions are meaningless.\n"
        )
        verify_model_dir(stage)
        _write_provenance(stage, source=f"cassava model demo (seed {seed})", untrained=True)
    return read_info(dest)
