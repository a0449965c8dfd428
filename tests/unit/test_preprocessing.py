"""Preprocessing: the seed's pixels, every image mode as RGB, upright photos, limits and readable errors."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cassava.errors import BatchTooLargeError, ImageDecodeError, ImageTooLargeError, TensorValueError
from cassava.preprocessing import (
    IMAGE_SIZE,
    Limits,
    check_batch_size,
    check_tensor,
    decode_image,
    preprocess_images,
    preprocess_pixels,
)
from conftest import encode, make_leaf_image

PARITY = 1e-6
EXIF_ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def tf() -> Any:
    import tensorflow

    return tensorflow


def seed_preprocess(tf: Any, image: np.ndarray) -> np.ndarray:
    """The seed's `helpers.preprocess`, for one uint8 image: scale to [0, 1], then resize (bilinear)."""
    scaled = tf.cast(image, tf.float32) / 255.0
    return np.asarray(tf.image.resize(scaled, (224, 224)))


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Independent random pixels: the hardest case for a resize, every sample weight shows."""
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


# --- parity with the seed --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("height", "width"),
    [
        (224, 224),  # identity
        (100, 150),  # upscaling
        (375, 500),  # the dataset's usual landscape photo
        (500, 375),  # portrait
        (37, 1001),  # very wide
        (1001, 37),  # very tall
        (1, 1),
        (2, 3),
        (3000, 4000),  # a 12-megapixel phone photo
    ],
)
def test_pixels_match_the_seed(tf: Any, height: int, width: int) -> None:
    image = noise(height, width, seed=height * 7919 + width)
    ours = preprocess_pixels(image)
    assert ours.shape == (IMAGE_SIZE, IMAGE_SIZE, 3)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, seed_preprocess(tf, image), rtol=0, atol=PARITY)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    height=st.integers(1, 700),
    width=st.integers(1, 700),
    seed=st.integers(0, 2**32 - 1),
)
def test_pixels_match_the_seed_for_any_size(tf: Any, height: int, width: int, seed: int) -> None:
    image = noise(height, width, seed)
    np.testing.assert_allclose(preprocess_pixels(image), seed_preprocess(tf, image), rtol=0, atol=PARITY)


def test_png_bytes_match_the_seed(tf: Any) -> None:
    data = encode(make_leaf_image(1, (640, 480)), "PNG")
    ours = preprocess_images([data], Limits())[0]
    theirs = seed_preprocess(tf, tf.io.decode_png(data, channels=3))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=PARITY)


@pytest.mark.parametrize("subsampling", [0, 2], ids=["4:4:4", "4:2:0"])
def test_jpeg_bytes_match_the_seed(tf: Any, subsampling: int) -> None:
    """End to end, from the seed's own decoder: `tf.io.decode_jpeg` with its defaults, as TFDS calls it.

    Pixel by pixel, over every JPEG layout, in test_decode_parity.py."""
    data = encode(make_leaf_image(2, (500, 375)), "JPEG", quality=85, subsampling=subsampling)
    ours = preprocess_images([data], Limits())[0]
    theirs = seed_preprocess(tf, tf.io.decode_jpeg(data, channels=3))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=PARITY)


def test_output_is_in_unit_range_for_extreme_pixels() -> None:
    for value in (0, 255):
        image = np.full((50, 70, 3), value, dtype=np.uint8)
        np.testing.assert_allclose(preprocess_pixels(image), value / 255, rtol=0, atol=PARITY)


def test_preprocess_images_stacks_in_order(sample_jpegs: list[bytes]) -> None:
    batch = preprocess_images(sample_jpegs[:3], Limits())
    assert batch.shape == (3, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert batch.dtype == np.float32
    for i, data in enumerate(sample_jpegs[:3]):
        np.testing.assert_array_equal(batch[i], preprocess_pixels(decode_image(data, Limits())))


# --- decoding: formats and modes -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"])
def test_supported_formats_decode_to_rgb(fmt: str) -> None:
    image = make_leaf_image(4, (90, 60))
    decoded = decode_image(encode(image, fmt), Limits())
    assert decoded.shape == (60, 90, 3)
    assert decoded.dtype == np.uint8


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16"])
def test_png_modes_decode_like_tensorflow(tf: Any, mode: str) -> None:
    rgb = make_leaf_image(5, (80, 50))
    if mode == "I;16":
        image = Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 257 + 3).astype(np.uint16))
        assert image.mode == "I;16"
    elif mode == "P":
        image = rgb.quantize(colors=32)
    else:
        image = rgb.convert(mode)
    data = encode(image, "PNG")
    decoded = decode_image(data, Limits())
    assert decoded.shape == (50, 80, 3)
    np.testing.assert_array_equal(decoded, tf.io.decode_png(data, channels=3).numpy())


def test_grayscale_becomes_three_equal_channels() -> None:
    grey = make_leaf_image(6, (40, 30)).convert("L")
    decoded = decode_image(encode(grey, "PNG"), Limits())
    for channel in range(3):
        np.testing.assert_array_equal(decoded[:, :, channel], np.asarray(grey))


def test_alpha_is_dropped_not_blended() -> None:
    rgb = np.asarray(make_leaf_image(7, (40, 30)))
    alpha = np.zeros(rgb.shape[:2], dtype=np.uint8)  # fully transparent: colours must survive
    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    np.testing.assert_array_equal(decode_image(encode(rgba, "PNG"), Limits()), rgb)


def test_16_bit_rgb_keeps_the_high_byte(tf: Any) -> None:
    wide = np.random.default_rng(8).integers(0, 65536, size=(30, 20, 3), dtype=np.uint16)
    data = tf.io.encode_png(wide).numpy()
    decoded = decode_image(data, Limits())
    np.testing.assert_array_equal(decoded, (wide >> 8).astype(np.uint8))
    np.testing.assert_array_equal(decoded, tf.io.decode_png(data, channels=3).numpy())


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (64, 48))
    cmyk.paste((255, 0, 0, 0), (0, 0, 32, 48))  # cyan
    cmyk.paste((0, 0, 255, 0), (32, 0, 64, 48))  # yellow
    decoded = decode_image(encode(cmyk, "JPEG", quality=95), Limits()).astype(int)
    assert decoded.shape == (48, 64, 3)
    assert np.abs(decoded[:, :24].mean(axis=(0, 1)) - (0, 255, 255)).max() < 10
    assert np.abs(decoded[:, 40:].mean(axis=(0, 1)) - (255, 255, 0)).max() < 10


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (20, 10), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(buffer.getvalue(), Limits())
    assert tuple(decoded[5, 10]) == (255, 0, 0)


# --- EXIF orientation ------------------------------------------------------------------------------


def quadrants(height: int = 48, width: int = 64) -> np.ndarray:
    """An upright image whose four quadrants have distinct colours, so any flip or turn shows."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[: height // 2, : width // 2] = (220, 30, 30)
    image[: height // 2, width // 2 :] = (30, 220, 30)
    image[height // 2 :, : width // 2] = (30, 30, 220)
    image[height // 2 :, width // 2 :] = (230, 230, 40)
    return image


# What a camera stores for each EXIF orientation, given the upright picture (EXIF 2.3, tag 0x0112):
# the viewer applies the inverse to show it upright.
STORED = {
    1: lambda up: up,
    2: lambda up: up[:, ::-1],
    3: lambda up: up[::-1, ::-1],
    4: lambda up: up[::-1],
    5: lambda up: up.transpose(1, 0, 2),
    6: lambda up: np.rot90(up, 1),
    7: lambda up: np.rot90(up, 2).transpose(1, 0, 2),
    8: lambda up: np.rot90(up, -1),
}


@pytest.mark.parametrize("orientation", sorted(STORED))
def test_exif_orientation_is_applied(orientation: int) -> None:
    upright = quadrants()
    stored = Image.fromarray(np.ascontiguousarray(STORED[orientation](upright)))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    data = encode(stored, "JPEG", quality=95, subsampling=0, exif=exif.tobytes())
    decoded = decode_image(data, Limits())
    assert decoded.shape == upright.shape
    # JPEG blurs the quadrant edges a little; the means of the quadrants tell the orientation.
    assert np.abs(decoded.astype(int) - upright.astype(int)).mean() < 4


# --- limits ----------------------------------------------------------------------------------------


def test_byte_limit_at_the_limit_and_one_past() -> None:
    data = encode(make_leaf_image(9, (30, 20)), "PNG")
    assert decode_image(data, Limits(max_image_bytes=len(data))).shape == (20, 30, 3)
    with pytest.raises(ImageTooLargeError, match=rf"{len(data):,} bytes; the limit is {len(data) - 1:,}"):
        decode_image(data, Limits(max_image_bytes=len(data) - 1))


def test_pixel_limit_at_the_limit_and_one_past() -> None:
    data = encode(make_leaf_image(10, (50, 40)), "PNG")
    assert decode_image(data, Limits(max_image_pixels=2000)).shape == (40, 50, 3)
    with pytest.raises(ImageTooLargeError, match=r"50x40 = 2,000 pixels; the limit is 1,999 pixels"):
        decode_image(data, Limits(max_image_pixels=1999))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height but carries almost no pixel data: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


@pytest.mark.parametrize(("width", "height"), [(8_000, 8_000), (20_000, 20_000)])
def test_huge_dimensions_are_refused_from_the_header(width: int, height: int) -> None:
    # Only the header is read: decoding 8000x8000 (let alone 20000x20000) pixels would take seconds.
    with pytest.raises(ImageTooLargeError, match=r"pixels"):
        decode_image(png_header_only(width, height), Limits())


def test_batch_limit_at_the_limit_and_one_past(sample_jpegs: list[bytes]) -> None:
    limits = Limits(max_images=3)
    assert preprocess_images(sample_jpegs[:3], limits).shape[0] == 3
    with pytest.raises(BatchTooLargeError, match=r"4 images; at most 3 are allowed"):
        preprocess_images(sample_jpegs[:4], limits)
    batch = np.zeros((4, 224, 224, 3), dtype=np.float32)
    check_tensor(batch[:3], limits)
    with pytest.raises(BatchTooLargeError, match="max_images"):
        check_tensor(batch, limits)
    check_batch_size(3, limits)


# --- errors ----------------------------------------------------------------------------------------


def test_empty_bytes() -> None:
    with pytest.raises(ImageDecodeError, match=r"image is empty \(0 bytes\); send the bytes of a JPEG"):
        decode_image(b"", Limits())


def test_not_an_image_says_what_it_looks_like_without_quoting_it() -> None:
    # The message reaches the server log (MLServer logs rejected requests): it describes, never copies.
    with pytest.raises(ImageDecodeError, match=r"not a recognised image \(11 bytes of text\)") as info:
        decode_image(b"hello world", Limits())
    assert "hello" not in str(info.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image(fmt: str) -> None:
    data = encode(make_leaf_image(11, (200, 150)), fmt)
    with pytest.raises(ImageDecodeError, match=rf"corrupt or truncated \({fmt}\)"):
        decode_image(data[: len(data) // 2], Limits())


def test_unsupported_format_lists_the_supported_ones() -> None:
    data = encode(make_leaf_image(12, (20, 20)), "PPM")
    with pytest.raises(ImageDecodeError, match=r"is a PPM image; supported formats: BMP, GIF, JPEG"):
        decode_image(data, Limits())


def test_errors_in_a_batch_name_the_image(sample_jpegs: list[bytes]) -> None:
    with pytest.raises(ImageDecodeError, match=r"^image #1 is empty"):
        preprocess_images([sample_jpegs[0], b""], Limits())


def test_preprocess_pixels_rejects_a_non_rgb_array() -> None:
    with pytest.raises(ImageDecodeError, match=r"expected an RGB image \[H, W, 3\], got shape \[10, 10, 4\]"):
        preprocess_pixels(np.zeros((10, 10, 4), dtype=np.uint8))


# --- check_tensor ----------------------------------------------------------------------------------


def tensor(n: int = 2, value: float = 0.5) -> np.ndarray:
    return np.full((n, 224, 224, 3), value, dtype=np.float32)


def test_check_tensor_accepts_the_unit_range_and_returns_float32() -> None:
    batch = tensor().astype(np.float64)
    batch[0, 0, 0, 0], batch[1, 0, 0, 0] = 0.0, 1.0
    checked = check_tensor(batch, Limits())
    assert checked.dtype == np.float32
    np.testing.assert_array_equal(checked, batch.astype(np.float32))
    # Rounding just outside [0, 1] is tolerated: bilinear resizing of [0, 1] data on another stack.
    check_tensor(tensor(value=1.0000001), Limits())


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_tensor_non_finite(bad: float) -> None:
    batch = tensor()
    batch[1, 3, 4, 2] = bad
    batch[0, 0, 0, 0] = bad
    with pytest.raises(TensorValueError, match=r"'payload' contains 2 NaN or infinite values"):
        check_tensor(batch, Limits())


@pytest.mark.parametrize("bad", [-0.1, 1.5, 255.0])
def test_check_tensor_out_of_range(bad: float) -> None:
    batch = tensor()
    batch[0, 10, 10, 0] = bad
    with pytest.raises(TensorValueError, match=r"the model expects RGB scaled to \[0, 1\].*divide uint8"):
        check_tensor(batch, Limits())


@pytest.mark.parametrize(
    "shape",
    [(224, 224, 3), (1, 224, 224), (1, 100, 100, 3), (1, 3, 224, 224), (1, 224, 224, 4), (1, 1, 224, 224, 3)],
)
def test_check_tensor_wrong_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(TensorValueError, match=r"expected \[N, 224, 224, 3\]"):
        check_tensor(np.zeros(shape, dtype=np.float32), Limits())


def test_check_tensor_empty_batch() -> None:
    with pytest.raises(TensorValueError, match=r"holds no images \(shape \[0, 224, 224, 3\]\)"):
        check_tensor(tensor(n=0), Limits())


def test_check_tensor_names_the_input() -> None:
    with pytest.raises(TensorValueError, match="'pixels'"):
        check_tensor(tensor(value=2.0), Limits(), name="pixels")
