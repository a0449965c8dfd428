"""Inputs for `cassava predict`: files and folders, and the TFDS `cassava` split (mocked: no download)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cassava import datasets
from cassava.datasets import Example, load_files, load_tfds
from cassava.errors import DatasetError, ImageDecodeError
from cassava.labels import DATASET_CODES
from cassava.preprocessing import Limits, decode_image
from conftest import encode, make_leaf_image

MOCK_EXAMPLES = 12


@pytest.fixture(scope="module")
def tfds() -> Any:
    import tensorflow_datasets

    return tensorflow_datasets


@pytest.fixture
def mock_cassava(tfds: Any) -> Iterator[None]:
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        yield


def write(path: Path, image: Image.Image, fmt: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(image, fmt))
    return path


# --- files -----------------------------------------------------------------------------------------


def test_one_file(tmp_path: Path) -> None:
    path = write(tmp_path / "leaf.jpg", make_leaf_image(0, (120, 80)))
    (example,) = load_files([path])
    assert example.name == str(path)
    assert example.encoded == path.read_bytes()
    assert example.image.shape == (80, 120, 3)
    assert example.image.dtype == np.uint8
    assert example.label is None
    np.testing.assert_array_equal(example.image, decode_image(example.encoded, Limits()))


def test_directories_are_searched_recursively_and_sorted(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    write(root / "b.png", make_leaf_image(1), "PNG")
    write(root / "a.JPG", make_leaf_image(2))
    write(root / "field" / "deep" / "c.jpeg", make_leaf_image(3))
    (root / "notes.txt").write_text("not a photo")
    write(root / ".thumbnails" / "hidden.jpg", make_leaf_image(4))
    (root / "._a.jpg").write_bytes(b"macOS resource fork, not a JPEG")
    single = write(tmp_path / "single.png", make_leaf_image(5), "PNG")

    examples = load_files([single, root])

    assert [Path(e.name).relative_to(tmp_path).as_posix() for e in examples] == [
        "single.png",
        "photos/a.JPG",
        "photos/b.png",
        "photos/field/deep/c.jpeg",
    ]


def test_a_folder_named_after_a_class_gives_the_label(tmp_path: Path) -> None:
    write(tmp_path / "cmd" / "1.jpg", make_leaf_image(6))
    write(tmp_path / "Healthy" / "2.jpg", make_leaf_image(7))
    write(tmp_path / "field" / "3.jpg", make_leaf_image(8))
    labels = {Path(e.name).name: e.label for e in load_files([tmp_path])}
    assert labels == {
        "1.jpg": DATASET_CODES.index("cmd"),
        "2.jpg": DATASET_CODES.index("healthy"),
        "3.jpg": None,
    }


def test_photo_with_exif_orientation_is_upright(tmp_path: Path) -> None:
    stored = make_leaf_image(9, (60, 40))  # landscape as stored, portrait when shown
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    path.write_bytes(encode(stored, "JPEG", exif=exif.tobytes()))
    (example,) = load_files([path])
    assert example.image.shape == (60, 40, 3)


def test_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=rf"{tmp_path / 'nope.jpg'} does not exist"):
        load_files([tmp_path / "nope.jpg"])


def test_directory_without_images_is_named(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("nothing to see")
    with pytest.raises(DatasetError, match=rf"{tmp_path} holds no image files .*\.jpg"):
        load_files([tmp_path])


def test_file_that_is_not_an_image_is_named_when_decoded(tmp_path: Path) -> None:
    path = tmp_path / "leaf.jpg"
    path.write_text("this is text")
    (example,) = load_files([path])  # read, not decoded: decoding is the pipeline's, per chunk
    with pytest.raises(ImageDecodeError, match=rf"{path} is not a recognised image"):
        _ = example.image


def test_files_source_streams_skips_vanished_files_and_done_names(tmp_path: Path) -> None:
    for name in ("a", "b", "c", "d"):
        write(tmp_path / "cmd" / f"{name}.jpg", make_leaf_image(ord(name)))
    source = datasets.files_source([tmp_path / "cmd"], skip={str(tmp_path / "cmd" / "b.jpg")})
    assert source.total == 3
    # Moved away after the walk, before it was read: a long run over a live folder meets this.
    (tmp_path / "cmd" / "c.jpg").unlink()
    items = list(source.items)
    assert [Path(item.name).name for item in items] == ["a.jpg", "c.jpg", "d.jpg"]
    (skipped,) = [item for item in items if isinstance(item, datasets.Skipped)]
    assert skipped.name == str(tmp_path / "cmd" / "c.jpg")
    assert f"cannot read {tmp_path / 'cmd' / 'c.jpg'}" in skipped.reason
    assert all(item.label == DATASET_CODES.index("cmd") for item in items if isinstance(item, Example))


def test_tfds_source_streams_the_whole_split(mock_cassava: None) -> None:
    source = datasets.tfds_source("test", skip={"test[0]"})
    names = [item.name for item in source.items]
    assert source.total in (MOCK_EXAMPLES, None)  # mock data records no split sizes
    assert names == [f"test[{i}]" for i in range(1, MOCK_EXAMPLES)]


def test_no_paths_at_all() -> None:
    with pytest.raises(DatasetError, match="no input images"):
        load_files([])


# --- TFDS ------------------------------------------------------------------------------------------


def test_tfds_label_names_are_the_model_classes(tfds: Any) -> None:
    # The builder's info comes from code: no download needed, so this runs everywhere.
    names = tfds.builder("cassava").info.features["label"].names
    assert tuple(names) == DATASET_CODES


def test_load_tfds_returns_decoded_labelled_examples(mock_cassava: None) -> None:
    examples = load_tfds("validation", count=5, seed=0)
    assert len(examples) == 5
    indices = [int(e.name.removeprefix("validation[").removesuffix("]")) for e in examples]
    assert indices == sorted(set(indices))
    assert all(0 <= i < MOCK_EXAMPLES for i in indices)
    for example in examples:
        assert isinstance(example, Example)
        assert example.label is not None
        assert 0 <= example.label < len(DATASET_CODES)
        assert example.image.dtype == np.uint8
        assert example.image.ndim == 3
        assert example.image.shape[2] == 3
        # `encoded` is what a client sends; decoding it gives back exactly the image shown.
        np.testing.assert_array_equal(decode_image(example.encoded, Limits()), example.image)


def test_load_tfds_is_reproducible_with_a_seed(mock_cassava: None) -> None:
    first = load_tfds("validation", count=4, seed=3)
    again = load_tfds("validation", count=4, seed=3)
    assert [e.name for e in first] == [e.name for e in again]
    choices = {tuple(e.name for e in load_tfds("validation", count=4, seed=s)) for s in range(6)}
    assert len(choices) > 1


def test_load_tfds_without_a_seed_still_draws_count(mock_cassava: None) -> None:
    assert len(load_tfds("test", count=3, seed=None)) == 3


def test_load_tfds_count_beyond_the_split_gives_the_whole_split(mock_cassava: None) -> None:
    examples = load_tfds("validation", count=MOCK_EXAMPLES + 10)
    assert [e.name for e in examples] == [f"validation[{i}]" for i in range(MOCK_EXAMPLES)]


def test_load_tfds_rejects_a_count_below_one() -> None:
    with pytest.raises(DatasetError, match="count is 0; ask for at least one"):
        load_tfds(count=0)


def test_load_tfds_offline_explains_the_way_out(
    tfds: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(DatasetError, match=r"could not download.*Name or service not known.*--data-dir"):
        load_tfds(data_dir=tmp_path)


def test_load_tfds_gives_up_on_an_unreachable_host_quickly(
    tfds: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """TFDS's own 10 retries with backoff take minutes offline; a few are enough to ride out a blip."""
    from tensorflow_datasets.core.download import downloader

    before = downloader.MAX_RETRIES
    during: list[int] = []

    def record(*args: object, **kwargs: object) -> None:
        during.append(downloader.MAX_RETRIES)
        raise ConnectionError("offline")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", record)
    with pytest.raises(DatasetError):
        load_tfds(data_dir=tmp_path)
    assert during == [3]
    assert before == downloader.MAX_RETRIES


def test_load_tfds_refuses_renumbered_labels(tfds: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets, "DATASET_CODES", ("healthy", "cbb", "cbsd", "cgm", "cmd"))
    with pytest.raises(DatasetError, match=r"labels are \['cbb'.*cassava expects \['healthy'"):
        load_tfds(count=1)


def test_sample_is_uniform_and_sorted() -> None:
    rng = np.random.default_rng(0)
    hits = np.zeros(10, dtype=int)
    trials = 3000
    for _ in range(trials):
        picked = datasets._sample(((i, {}) for i in range(10)), 3, rng)
        indices = [i for i, _ in picked]
        assert indices == sorted(set(indices))
        assert len(indices) == 3
        hits[indices] += 1
    # Each index is picked with probability 3/10: 900 of 3000, sd ~25. Six sd either side.
    assert hits.min() > 750
    assert hits.max() < 1050
