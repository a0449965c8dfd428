"""The JPEG decoders behind `decode_image`: simplejpeg with the seed's settings (test_decode_parity.py),
Pillow for what simplejpeg refuses, within the accurate IDCT's few levels of it and with the same
orientation; `fast_decode` must be the same approximation whichever decoder runs it."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps
from test_decode_parity import ACCURATE_IDCT_MAX_DIFF, cmyk_photo, textured

from cassava import preprocessing
from cassava.errors import ImageDecodeError
from cassava.preprocessing import IMAGE_SIZE, Limits, decode_image, preprocess_images, resize_bilinear
from conftest import encode

EXIF_ORIENTATION = 0x0112


@pytest.fixture
def pillow_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """decode_image as it is without simplejpeg installed."""
    monkeypatch.setattr(preprocessing, "_decode_jpeg_turbo", lambda *args: None)


def jpegs() -> dict[str, bytes]:
    image = textured(333, 251, seed=1)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    return {
        "4:2:0": encode(image, "JPEG", quality=90),
        "4:4:4": encode(image, "JPEG", quality=90, subsampling=0),
        "progressive": encode(image, "JPEG", quality=80, progressive=True),
        "greyscale": encode(image.convert("L"), "JPEG", quality=90),
        "CMYK": encode(cmyk_photo(333, 251, seed=1), "JPEG", quality=90),
        "rotated": encode(image, "JPEG", quality=90, exif=exif.tobytes()),
    }


@pytest.mark.parametrize("kind", sorted(jpegs()))
def test_pillow_differs_from_simplejpeg_only_by_the_idct(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("simplejpeg")
    data = jpegs()[kind]
    fast = decode_image(data, Limits())
    monkeypatch.setattr(preprocessing, "_decode_jpeg_turbo", lambda *args: None)
    slow = decode_image(data, Limits())
    assert fast.shape == slow.shape
    assert fast.dtype == slow.dtype == np.uint8
    assert fast.flags.c_contiguous
    assert np.abs(fast.astype(np.int16) - slow.astype(np.int16)).max() <= ACCURATE_IDCT_MAX_DIFF


@pytest.mark.parametrize("decoder", ["simplejpeg", "pillow"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_pillows(
    orientation: int, decoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if decoder == "pillow":
        monkeypatch.setattr(preprocessing, "_decode_jpeg_turbo", lambda *args: None)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    image = textured(120, 80, seed=orientation)
    stored = Image.fromarray(decode_image(encode(image, "JPEG", quality=90), Limits()))
    stored.info["exif"] = exif.tobytes()
    rotated = encode(image, "JPEG", quality=90, exif=exif.tobytes())
    np.testing.assert_array_equal(
        decode_image(rotated, Limits()), np.asarray(ImageOps.exif_transpose(stored))
    )


def test_what_simplejpeg_refuses_is_left_to_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    simplejpeg = pytest.importorskip("simplejpeg")
    data = jpegs()["4:2:0"]
    monkeypatch.setattr(preprocessing, "_decode_jpeg_turbo", lambda *args: None)
    pillows = decode_image(data, Limits())
    monkeypatch.undo()

    def refuse(*args: object, **kwargs: object) -> None:
        # What turbojpeg says about a layout it does not handle, strict or not.
        raise ValueError("tjDecompressHeader3(): Could not determine subsampling level of JPEG image")

    monkeypatch.setattr(simplejpeg, "decode_jpeg", refuse)
    np.testing.assert_array_equal(decode_image(data, Limits()), pillows)


def test_what_simplejpeg_refuses_and_pillow_refuses_gets_pillows_error() -> None:
    pytest.importorskip("simplejpeg")
    data = jpegs()["4:2:0"]
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(data[: len(data) // 2], Limits())


@pytest.mark.parametrize(
    ("size", "scale"),
    [((4000, 3000), 8), ((800, 600), 2), ((641, 479), 2), ((500, 375), 1), ((224, 224), 1), ((100, 3000), 1)],
)
def test_fast_decode_scale_keeps_both_sides_at_least_224(size: tuple[int, int], scale: int) -> None:
    assert preprocessing.jpeg_scale(*size) == scale
    assert min(size) // scale >= min(IMAGE_SIZE, min(size))


@pytest.mark.parametrize("size", [(1200, 900), (641, 479)])
def test_fast_decode_is_the_same_approximation_with_either_decoder(
    size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("simplejpeg")
    data = encode(textured(*size, seed=3), "JPEG", quality=90)
    with_simplejpeg = decode_image(data, Limits(fast_decode=True))
    monkeypatch.setattr(preprocessing, "_decode_jpeg_turbo", lambda *args: None)
    with_pillow = decode_image(data, Limits(fast_decode=True))
    np.testing.assert_array_equal(with_simplejpeg, with_pillow)
    assert min(with_pillow.shape[:2]) >= IMAGE_SIZE


def test_fast_decode_changes_only_large_images(pillow_only: None) -> None:
    small = encode(textured(400, 300), "JPEG", quality=90)
    np.testing.assert_array_equal(
        decode_image(small, Limits(fast_decode=True)), decode_image(small, Limits())
    )
    large = encode(textured(1600, 1200), "JPEG", quality=90)
    fast = preprocess_images([large], Limits(fast_decode=True))
    exact = preprocess_images([large], Limits())
    assert fast.shape == exact.shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert fast.min() >= 0.0
    assert fast.max() <= 1.0
    assert not np.array_equal(fast, exact)  # approximate, as documented


def test_resize_takes_views_and_floats_alike() -> None:
    pixels = np.asarray(textured(300, 200, seed=4))
    view = pixels[:, ::-1]  # not contiguous, as an EXIF-mirrored image is before it is copied
    np.testing.assert_array_equal(resize_bilinear(view), resize_bilinear(np.ascontiguousarray(view)))
    np.testing.assert_allclose(resize_bilinear(pixels.astype(np.float32)), resize_bilinear(pixels), atol=1e-4)
    assert resize_bilinear(pixels).dtype == np.float32


def test_pillow_draft_request_floors(pillow_only: None) -> None:
    # draft() picks the largest power-of-two scale with side // request >= scale: a ceiling request
    # would make 641 px pick 1 instead of 2.
    data = encode(textured(641, 479), "JPEG", quality=90)
    assert decode_image(data, Limits(fast_decode=True)).shape == (240, 321, 3)
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (641, 479)
