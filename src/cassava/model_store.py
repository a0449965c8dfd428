"""Where the model lives, what it is, and how it gets there.

A model directory holds the TF2 SavedModel (`saved_model.pb`, `variables/`), optionally its ONNX
export (`model.onnx`) and `cassava-model.json`, which says where it came from. An untrained stand-in
also holds an `UNTRAINED` marker file: whatever loads it warns, and nothing ever picks a stand-in in
place of the real model on its own.

`fetch` and `write_demo_model` stage everything in a sibling temporary directory and move it into
place only once it loads and maps [N, 224, 224, 3] -> [N, 6], so a failed download never leaves a
half-written model behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from cassava.errors import FetchError, ModelLoadError, ModelNotFoundError
from cassava.labels import NUM_CLASSES

#: TF Hub handle of the real model (Apache-2.0); tfhub.dev redirects to Kaggle Models.
CROPNET_HANDLE = "https://tfhub.dev/google/cropnet/classifier/cassava_disease_V1/2"
#: Asks TF Hub (and Kaggle behind it) for the model as one .tar.gz.
CROPNET_URL = CROPNET_HANDLE + "?tf-hub-format=compressed"
KAGGLE_HANDLE = "google/cropnet/tensorFlow2/classifier-cassava-disease-v1/1"

PROVENANCE_FILE = "cassava-model.json"
UNTRAINED_MARKER = "UNTRAINED"
SAVED_MODEL_FILE = "saved_model.pb"
ONNX_FILE = "model.onnx"

UNTRAINED_WARNING = (
    "UNTRAINED STAND-IN MODEL: {path} was made by `cassava model demo`; its predictions are "
    "meaningless. Run `cassava model fetch` to serve the real CropNet classifier."
)

ProgressCallback = Callable[[int, int | None], None]
"""Called with (bytes done, bytes total or None) while downloading."""


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
    return ModelInfo(path=model_dir, untrained=(model_dir / UNTRAINED_MARKER).exists(), source=source)


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


@contextmanager
def _staged(dest: Path, force: bool) -> Iterator[Path]:
    """Yield an empty directory next to `dest`; on success it replaces `dest` in one rename."""
    if dest.exists() and not force:
        raise FetchError(f"{dest} already exists; pass --force to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
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


def _write_provenance(model_dir: Path, source: str, untrained: bool) -> None:
    digest = hashlib.sha256((model_dir / SAVED_MODEL_FILE).read_bytes()).hexdigest()
    record = {
        "source": source,
        "untrained": untrained,
        "saved_model_sha256": digest,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (model_dir / PROVENANCE_FILE).write_text(json.dumps(record, indent=2) + "\n")


# --- fetch ---------------------------------------------------------------------------------------


def fetch(
    source: str | None = None,
    dest: Path | None = None,
    *,
    force: bool = False,
    progress: ProgressCallback | None = None,
    timeout: float = 30.0,
) -> ModelInfo:
    """Install the model from `source` (URL, .tar.gz or SavedModel directory; default: TF Hub)."""
    dest = dest or default_model_dir()
    source = source or CROPNET_URL
    with _staged(dest, force) as stage:
        local = Path(source).expanduser()
        if urlparse(source).scheme in ("http", "https"):
            archive = stage / "download.tar.gz"
            _download(source, archive, progress=progress, timeout=timeout)
            _unpack(archive, stage / "unpacked")
            archive.unlink()
            root = _find_saved_model(stage / "unpacked", source)
        elif local.is_dir():
            root = _find_saved_model(local, source)
        elif local.is_file():
            _unpack(local, stage / "unpacked")
            root = _find_saved_model(stage / "unpacked", source)
        else:
            raise FetchError(
                f"--from {source!r} is neither an http(s) URL nor an existing directory or .tar.gz file"
            )
        model = stage / "model"
        shutil.copytree(root, model)
        verify_model_dir(model)
        untrained = (model / UNTRAINED_MARKER).exists()
        _write_provenance(model, source=source, untrained=untrained)
        for entry in model.iterdir():
            entry.rename(stage / entry.name)
        model.rmdir()
        shutil.rmtree(stage / "unpacked", ignore_errors=True)
    return read_info(dest)


def _download(url: str, target: Path, *, progress: ProgressCallback | None, timeout: float) -> None:
    import httpx

    offline_hint = (
        f"could not download the model from {url}. If this machine is offline, download it elsewhere "
        "(the URL gives a .tar.gz) and install it with `cassava model fetch --from PATH_OR_URL`"
    )
    try:
        with httpx.stream(
            "GET", url, follow_redirects=True, timeout=httpx.Timeout(timeout, connect=10.0)
        ) as response:
            if response.status_code != 200:
                raise FetchError(f"{offline_hint} (HTTP {response.status_code} from {response.url})")
            total = int(response.headers["content-length"]) if "content-length" in response.headers else None
            done = 0
            with target.open("wb") as out:
                for chunk in response.iter_bytes(chunk_size=1 << 20):
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
            if total is not None and done != total:
                raise FetchError(f"{offline_hint} (connection closed after {done:,} of {total:,} bytes)")
    except httpx.HTTPError as err:
        raise FetchError(f"{offline_hint} ({type(err).__name__}: {err})") from err


def _unpack(archive: Path, into: Path) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            # The "data" filter refuses absolute paths, `..`, links out of the tree and device files.
            tar.extractall(into, filter="data")
            # extractall stops at the tar end marker, before the gzip trailer: only reading on to the
            # end checks the CRC. Without it, bytes damaged in transit unpack silently into garbled
            # weights that still load and still return probabilities.
            while tar.fileobj is not None and tar.fileobj.read(1 << 20):
                pass
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise FetchError(f"{archive} is not a readable .tar.gz archive: {err}") from err


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
    if (dest / SAVED_MODEL_FILE).is_file() and not (dest / UNTRAINED_MARKER).exists() and not force:
        raise FetchError(
            f"{dest} holds a real model; refusing to replace it with an untrained stand-in "
            "(pass --force, or write the stand-in elsewhere with --dest)"
        )
    from cassava.standin import save_standin

    with _staged(dest, force=True) as stage:
        save_standin(stage, seed=seed)
        (stage / UNTRAINED_MARKER).write_text(
            "This model is an untrained stand-in made by `cassava model demo`.\n"
            "It has the CropNet interface but its predictions are meaningless.\n"
        )
        verify_model_dir(stage)
        _write_provenance(stage, source=f"cassava model demo (seed {seed})", untrained=True)
    return read_info(dest)
