"""Inputs for `cassava predict`, `infer` and `evaluate`: image files and folders, or the TFDS `cassava`
split, read lazily as a `Source` so that a folder of any size streams through in bounded memory.

`Example.encoded` keeps the file bytes themselves: they are what a client sends and what the pipeline
classifies. Pixels (`Example.image`, for plots) are decoded on demand by
`cassava.preprocessing.decode_image`, the decoder the server uses, so what is plotted is exactly what
the model is given. A file that cannot be read becomes a `Skipped`, with the reason.

Labels: a TFDS example carries its own. A file gets one when its folder is named after a class code
(`cbb/`, `cbsd/`, `cgm/`, `cmd/`, `healthy/`, the layout the TFDS download unpacks to), so a sorted
folder of photos can be scored too.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cassava.errors import DatasetError
from cassava.labels import DATASET_CODES
from cassava.preprocessing import decode_image
from cassava.settings import CassavaSettings

TFDS_NAME = "cassava"
#: Extensions picked up when a directory is given; a file named explicitly is tried whatever its name.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"})


@dataclass(frozen=True)
class Example:
    name: str  # file path, or "validation[123]" for TFDS
    encoded: bytes  # the encoded image file, as a client would send it
    label: int | None  # class index (cassava.labels) when known

    @property
    def image(self) -> np.ndarray:
        """uint8 RGB [H, W, 3], upright, decoded on each access by the server's decoder: examples
        stream through the commands by the thousand, and only the few that are plotted need pixels."""
        return decode_image(self.encoded, CassavaSettings().limits(), where=self.name)


@dataclass(frozen=True)
class Skipped:
    """An input that was not classified, and why (its message names it)."""

    name: str
    reason: str


@dataclass
class Source:
    """Examples read lazily, and how many there will be (for a progress bar; None when unknown)."""

    items: Iterator[Example | Skipped]
    total: int | None


# --- files -----------------------------------------------------------------------------------------


def files_source(paths: Sequence[Path], *, skip: Container[str] = ()) -> Source:
    """Image files and directories (searched recursively, sorted) -> examples, in the order given,
    each file read when it is reached. A file that cannot be read is a `Skipped`; names in `skip`
    (already done, e.g. by `--resume`) are left out. Missing paths fail here, before any work."""
    if not paths:
        raise DatasetError("no input images; give image files or directories (or use --dataset)")
    files = [file for file in image_files(paths) if str(file) not in skip]
    return Source(_read_files(files), len(files))


def load_files(paths: Sequence[Path]) -> list[Example]:
    """Every image of `paths` read at once; the first unreadable one raises. For a handful of files:
    the commands stream with `files_source` instead."""
    examples = []
    for item in files_source(paths).items:
        if isinstance(item, Skipped):
            raise DatasetError(item.reason)
        examples.append(item)
    return examples


def _read_files(files: Iterable[Path]) -> Iterator[Example | Skipped]:
    for file in files:
        try:
            encoded = read_image_file(file)
        except DatasetError as err:
            yield Skipped(str(file), str(err))
            continue
        yield Example(str(file), encoded, _label_from_folder(file))


def image_files(paths: Sequence[Path]) -> list[Path]:
    """The image files among `paths`, in the order given: a file as is, a directory's images searched
    recursively and sorted. The one folder walk of every command (predict, infer, bench)."""
    return [file for path in paths for file in _image_files(Path(path))]


def _image_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.exists():
        raise DatasetError(f"{path} does not exist; give an image file or a directory of images")
    if not path.is_dir():
        raise DatasetError(f"{path} is neither a file nor a directory; give an image file or a directory")
    found = sorted(
        p
        for p in path.rglob("*")
        # Hidden entries are editor backups, macOS `._*` resource forks and VCS folders, not photos.
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not found:
        raise DatasetError(
            f"{path} holds no image files (searched recursively for "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))}); give a directory with photos in it"
        )
    return found


def read_image_file(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as err:
        raise DatasetError(f"cannot read {file}: {err.strerror or err}") from None


def _label_from_folder(file: Path) -> int | None:
    folder = file.parent.name.lower()
    return DATASET_CODES.index(folder) if folder in DATASET_CODES else None


# --- TFDS ------------------------------------------------------------------------------------------


def load_tfds(
    split: str = "validation", count: int = 9, seed: int | None = 0, data_dir: Path | None = None
) -> list[Example]:
    """`count` examples drawn at random from a split of the TFDS `cassava` dataset, in split order.

    The same `seed` gives the same examples; `seed=None` gives different ones each run. The first call
    downloads and prepares the dataset (about 1.3 GB) into `data_dir` (default: ~/tensorflow_datasets).
    """
    if count < 1:
        raise DatasetError(f"count is {count}; ask for at least one example")
    records, _ = _tfds_records(split, data_dir)
    picked = _sample(records, count, np.random.default_rng(seed))
    if not picked:
        raise DatasetError(f"split {split!r} of TFDS {TFDS_NAME!r} holds no examples")
    return [_tfds_example(split, index, record) for index, record in picked]


def tfds_source(
    split: str = "test",
    count: int | None = None,
    seed: int | None = 0,
    data_dir: Path | None = None,
    *,
    skip: Container[str] = (),
) -> Source:
    """A TFDS `cassava` split as a stream: the whole split in order (`count=None`), or `count` random
    examples as `load_tfds` draws them. Names in `skip` are left out."""
    if count is not None:
        examples = [e for e in load_tfds(split, count, seed, data_dir) if e.name not in skip]
        return Source(iter(examples), len(examples))
    records, total = _tfds_records(split, data_dir)
    items: Iterator[Example | Skipped] = (
        example
        for index, record in records
        if (example := _tfds_example(split, index, record)).name not in skip
    )
    return Source(items, total)


def _tfds_example(split: str, index: int, record: dict[str, Any]) -> Example:
    return Example(f"{split}[{index}]", bytes(record["image"]), int(record["label"]))


def _tfds_records(
    split: str, data_dir: Path | None
) -> tuple[Iterator[tuple[int, dict[str, Any]]], int | None]:
    """The numbered records of a split, still JPEG-encoded, and how many there are."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(TFDS_NAME, data_dir=str(data_dir) if data_dir else None)
    names = list(builder.info.features["label"].names)
    if names != list(DATASET_CODES):
        # The model's output order is fixed; a dataset version that renumbered its classes would
        # silently score every prediction against the wrong label.
        raise DatasetError(
            f"the TFDS {TFDS_NAME!r} labels are {names}; cassava expects {list(DATASET_CODES)}"
        )
    try:
        with _few_download_retries():
            builder.download_and_prepare()
    except Exception as err:
        raise DatasetError(
            f"could not download or prepare the TFDS {TFDS_NAME!r} dataset into {builder.data_dir} "
            f"({type(err).__name__}: {err}). On an offline machine, build it elsewhere with "
            f"`tfds build {TFDS_NAME}` and pass its folder with --data-dir, or classify image files instead"
        ) from err
    try:
        # SkipDecoding hands over the stored JPEG bytes: they are decoded once, by cassava's decoder.
        dataset = builder.as_dataset(
            split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()}
        )
    except (ValueError, KeyError, AssertionError) as err:
        raise DatasetError(
            f"cannot read split {split!r} of TFDS {TFDS_NAME!r}: {err} "
            "(the splits are train, validation and test; slices such as 'test[:100]' work too)"
        ) from err
    try:
        total: int | None = int(builder.info.splits[split].num_examples)
    except (KeyError, ValueError):  # a split whose size is not recorded: the progress bar has no end
        total = None
    return enumerate(dataset.as_numpy_iterator()), total


@contextmanager
def _few_download_retries(retries: int = 3) -> Iterator[None]:
    """Make TFDS give up on an unreachable host in seconds rather than minutes.

    TFDS retries each URL 10 times with exponential backoff (about 3.5 minutes offline before it says
    anything). Three retries still ride out a passing server error.
    """
    from tensorflow_datasets.core.download import downloader

    if not isinstance(getattr(downloader, "MAX_RETRIES", None), int):
        yield  # another TFDS release: keep its own policy
        return
    saved = downloader.MAX_RETRIES
    downloader.MAX_RETRIES = min(saved, retries)
    try:
        yield
    finally:
        downloader.MAX_RETRIES = saved


def _sample(
    items: Iterable[tuple[int, dict[str, Any]]], count: int, rng: np.random.Generator
) -> list[tuple[int, dict[str, Any]]]:
    """A uniform random `count` of `items` in one pass (reservoir sampling), sorted by index.

    One pass over the still-encoded split keeps only `count` records in memory, without needing the
    split's size up front.
    """
    reservoir: list[tuple[int, dict[str, Any]]] = []
    for seen, item in enumerate(items):
        if seen < count:
            reservoir.append(item)
        else:
            slot = int(rng.integers(0, seen + 1))
            if slot < count:
                reservoir[slot] = item
    return sorted(reservoir, key=lambda item: item[0])
