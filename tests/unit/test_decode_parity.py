"""JPEG decoding gives the seed's uint8 pixels: those of TensorFlow 2.21.0 with its defaults, as TFDS uses it.

What TensorFlow does, read in tensorflow/tensorflow's sources and confirmed against the pinned
tensorflow==2.21.0 by these tests themselves:
- `tensorflow/core/kernels/image/decode_image_op.cc`, `DecodeImageV2Op`: `decode_jpeg`'s `dct_method`
  defaults to "", which means `JDCT_IFAST` (libjpeg's fast integer IDCT, "sacrificing image quality for
  speed"); `decode_image`, which TFDS calls, takes `jpeg::UncompressFlags()` with `JDCT_IFAST` too.
- `tensorflow/core/lib/jpeg/jpeg_mem.h`, `UncompressFlags`: `fancy_upscaling = true`,
  `try_recover_truncated_jpeg = false`, `min_acceptable_fraction = 1.0`, `ratio = 1`.
- `tensorflow/core/lib/jpeg/jpeg_mem.cc`, `UncompressLow`: with `channels=3` a greyscale JPEG is
  decoded with `out_color_space = JCS_RGB` (libjpeg repeats the grey); a CMYK or YCCK JPEG is decoded
  as CMYK and converted by TensorFlow itself, in integers: `r = k * c / 255` when libjpeg saw an Adobe
  marker, `r = (255 - k) * (255 - c) / 255` otherwise. EXIF orientation is never read: TensorFlow
  returns the stored pixels, unrotated. A truncated file is an error (`jpeg_handle.cc`,
  `MemFillInputBuffer`, without `try_recover_truncated_jpeg`); libjpeg's other warnings are not.
- tensorflow-datasets 4.9.10, `tensorflow_datasets/core/features/image_feature.py`
  (`_ImageEncoder.decode_image`): `tf.image.decode_image(img, channels=3, dtype=tf.uint8)`; the
  `cassava` builder (`image_classification/cassava.py`) declares a plain `tfds.features.Image()`.

TensorFlow 2.21.0 links libjpeg-turbo 2.1.4, simplejpeg 1.9.0 bundles 3.1.2 and Pillow 13.0.0 bundles
3.2.0 (the "libjpeg-turbo version" string in each binary). With the same IDCT and upsampling they agree
bit for bit on every layout below; with the accurate IDCT (JDCT_ISLOW, Pillow's) they do not.

Our decoder rotates EXIF-oriented photos upright on purpose; for those, TensorFlow's pixels are
compared after Pillow's own `exif_transpose` of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from cassava import preprocessing
from cassava.errors import ImageDecodeError
from cassava.preprocessing import Limits, decode_image, preprocess_pixels
from conftest import encode, make_leaf_image

SIZES = {"640x480": (640, 480), "223x317": (223, 317), "1x1": (1, 1), "17x9": (17, 9)}
SUBSAMPLING = {"4:4:4": 0, "4:2:2": 1, "4:2:0": 2}
ADOBE_APP14 = 0xEE
EXIF_ORIENTATION = 0x0112

#: Pillow's accurate IDCT against TensorFlow's fast one, the largest difference measured on this corpus
#: (grain on smooth colour): what a file that only Pillow decodes may differ by. Measured: 12 levels at
#: quality 100, where the fast IDCT is least accurate; 2 to 4 at quality 50 to 90.
ACCURATE_IDCT_MAX_DIFF = 12
#: CMYK with chroma subsampling: turbojpeg cannot name the subsampling of a 4-component image, so
#: simplejpeg refuses it and Pillow (accurate IDCT, then TensorFlow's CMYK formula) decodes it.
#: Measured: 0 to 2 levels. Photoshop writes CMYK unsubsampled, which is decoded bit-exactly.
INEXACT = {"cmyk 4:2:2 adobe", "cmyk 4:2:0 adobe", "cmyk 4:2:0 no-adobe"}


def textured(width: int, height: int, seed: int = 0) -> Image.Image:
    """A leaf-like image with grain, so every decoder detail (IDCT, upsampling) shows in the pixels."""
    base = np.asarray(make_leaf_image(seed, (width, height)), dtype=np.int16)
    grain = np.random.default_rng(seed).integers(-20, 21, size=base.shape)
    return Image.fromarray(np.clip(base + grain, 0, 255).astype(np.uint8), "RGB")


def cmyk_photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Four independent grainy inks; Pillow's own RGB to CMYK conversion would leave black at 0."""
    inks = (*textured(width, height, seed).split(), textured(width, height, seed + 1).convert("L"))
    return Image.merge("CMYK", inks)


@pytest.fixture(scope="module")
def tf() -> Any:
    return pytest.importorskip("tensorflow")


def without_adobe_marker(data: bytes) -> bytes:
    """The same JPEG minus its APP14 "Adobe" segment, as written by encoders that omit it."""
    out, i = bytearray(data[:2]), 2
    while data[i + 1] != 0xDA:  # markers up to the first scan, each with a 2-byte big-endian length
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if data[i + 1] != ADOBE_APP14:
            out += data[i : i + 2 + length]
        i += 2 + length
    return bytes(out + data[i:])


def corpus() -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for size_name, size in SIZES.items():
        image = textured(*size, seed=size[0] * 31 + size[1])
        for sub_name, subsampling in SUBSAMPLING.items():
            for progressive in (False, True):
                name = f"{size_name} {sub_name} {'progressive' if progressive else 'baseline'}"
                files[name] = encode(
                    image, "JPEG", quality=90, subsampling=subsampling, progressive=progressive
                )
        grey = image.convert("L")
        files[f"{size_name} greyscale"] = encode(grey, "JPEG", quality=90)
        files[f"{size_name} greyscale progressive"] = encode(grey, "JPEG", quality=90, progressive=True)
    photo = textured(640, 480, seed=7)
    for quality in (50, 100):
        files[f"640x480 4:2:0 quality {quality}"] = encode(photo, "JPEG", quality=quality)
    files["640x480 RGB-coded"] = encode(photo, "JPEG", quality=90, keep_rgb=True)
    cmyk = cmyk_photo(640, 480, seed=7)
    for sub_name in ("4:4:4", "4:2:2", "4:2:0"):
        adobe = encode(cmyk, "JPEG", quality=90, subsampling=SUBSAMPLING[sub_name])
        files[f"cmyk {sub_name} adobe"] = adobe
        if sub_name != "4:2:2":
            files[f"cmyk {sub_name} no-adobe"] = without_adobe_marker(adobe)
    files["cmyk 17x9 adobe"] = encode(cmyk_photo(17, 9), "JPEG", quality=90)
    # libjpeg warns ("extraneous bytes before marker") and decodes; simplejpeg's strict mode refuses.
    plain = files["223x317 4:2:0 baseline"]
    end = plain.rindex(b"\xff\xd9")
    files["extraneous bytes"] = plain[:end] + b"\x00\x00" + plain[end:]
    return files


CORPUS = corpus()


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def seed_pixels(tf: Any, data: bytes) -> np.ndarray:
    """`tf.io.decode_jpeg`'s defaults, checked equal to the `tf.image.decode_image` that TFDS calls."""
    pixels = tf.io.decode_jpeg(data, channels=3).numpy()
    tfds_way = tf.image.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False).numpy()
    np.testing.assert_array_equal(pixels, tfds_way)
    return np.asarray(pixels)


@pytest.mark.parametrize("name", sorted(set(CORPUS) - INEXACT))
def test_decode_is_bit_exact_with_the_seed(tf: Any, name: str) -> None:
    data = CORPUS[name]
    ours = decode_image(data, Limits())
    np.testing.assert_array_equal(ours, seed_pixels(tf, data))
    assert ours.dtype == np.uint8


@pytest.mark.parametrize("name", sorted(INEXACT))
def test_what_only_pillow_decodes_is_within_the_measured_bound(tf: Any, name: str) -> None:
    data = CORPUS[name]
    diff = max_diff(decode_image(data, Limits()), seed_pixels(tf, data))
    print(f"{name}: max difference {diff} levels")
    assert diff <= ACCURATE_IDCT_MAX_DIFF


def test_pillow_alone_is_within_the_measured_bound(tf: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a file simplejpeg refuses gets: Pillow's accurate IDCT, with TensorFlow's CMYK formula."""
    monkeypatch.setattr(preprocessing, "_decode_jpeg_turbo", lambda *args: None)
    diffs = {
        name: max_diff(decode_image(data, Limits()), seed_pixels(tf, data)) for name, data in CORPUS.items()
    }
    print(f"Pillow alone: max difference {max(diffs.values())} levels ({max(diffs, key=diffs.__getitem__)})")
    assert max(diffs.values()) <= ACCURATE_IDCT_MAX_DIFF
    assert max(diffs.values()) > 0  # the bound is a measurement, not a formality


@pytest.mark.parametrize("mode", ["RGB", "CMYK"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_photos_are_the_seeds_pixels_turned_upright(
    tf: Any, orientation: int, mode: str
) -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    image = textured(223, 317, seed=orientation) if mode == "RGB" else cmyk_photo(223, 317, orientation)
    data = encode(image, "JPEG", quality=90, exif=exif.tobytes())
    theirs = seed_pixels(tf, data)
    assert theirs.shape == (317, 223, 3)  # TensorFlow does not rotate
    stored = Image.fromarray(theirs)
    stored.info["exif"] = exif.tobytes()
    np.testing.assert_array_equal(decode_image(data, Limits()), np.asarray(ImageOps.exif_transpose(stored)))


def test_truncated_files_are_refused_like_the_seed(tf: Any) -> None:
    data = CORPUS["640x480 4:2:0 baseline"]
    truncated = data[: len(data) // 2]
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.io.decode_jpeg(truncated, channels=3)
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(truncated, Limits())


@pytest.mark.slow
def test_inexact_decodes_and_the_class_on_the_real_graph(
    tf: Any, cropnet_graph_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Class agreement with the seed's pixels where ours differ: the inexact files as served, and the
    whole corpus decoded by Pillow alone, as a file simplejpeg refused would be. The synthetic weights
    drive logits to +-500, so a level or two can flip a class there; a trained model moves far less."""
    from cassava.pipeline import Classifier

    classifier = Classifier.load(cropnet_graph_dir)

    def disagreements(names: list[str]) -> list[str]:
        ours = np.stack([preprocess_pixels(decode_image(CORPUS[name], Limits())) for name in names])
        theirs = np.stack([preprocess_pixels(seed_pixels(tf, CORPUS[name])) for name in names])
        same = (
            classifier.classify_preprocessed(ours).indices == classifier.classify_preprocessed(theirs).indices
        )
        return [name for name, agrees in zip(names, same, strict=True) if not agrees]

    served = disagreements(sorted(INEXACT))
    print(f"inexact files as served: {len(INEXACT) - len(served)}/{len(INEXACT)} keep the class")
    assert served == []  # measured: 3 of 3
    monkeypatch.setattr(preprocessing, "_decode_jpeg_turbo", lambda *args: None)
    pillow = disagreements(sorted(CORPUS))
    print(f"Pillow alone: {len(CORPUS) - len(pillow)}/{len(CORPUS)} keep the class; changed: {pillow}")
    assert len(pillow) <= 1  # measured: 41 of 42
