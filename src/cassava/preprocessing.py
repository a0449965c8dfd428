"""Encoded image bytes -> float32 [N, 224, 224, 3] in [0, 1], exactly as the seed's `helpers.preprocess`.

The seed feeds the model `tf.image.resize(uint8_image / 255, (224, 224))`: bilinear, half-pixel
centres, no antialiasing. `resize_bilinear` computes the same thing in numpy (parity test within 1e-6),
so neither the server nor the client has to import TensorFlow to preprocess.

Decoding is Pillow's: JPEG, PNG, GIF, WebP, BMP and TIFF; EXIF orientation is applied so a phone photo
is upright; every mode ends as RGB (alpha dropped, as TensorFlow's 3-channel decoders do). Animated
images contribute their first frame. Limits are checked on the header, before any pixel is decoded.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cassava.errors import BatchTooLargeError, ImageDecodeError, ImageTooLargeError, TensorValueError

IMAGE_SIZE = 224
CHANNELS = 3
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "MPO"})
# A float tensor from a client goes straight into the model, so its values must already be scaled.
# Bilinear resizing of [0, 1] data cannot leave [0, 1]; the tolerance absorbs float rounding.
_RANGE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Limits:
    max_batch_size: int = 64
    max_image_pixels: int = 50_000_000
    max_image_bytes: int = 20 * 1024 * 1024


def check_batch_size(n: int, limits: Limits) -> None:
    if n > limits.max_batch_size:
        raise BatchTooLargeError(
            f"the request holds {n} images; at most {limits.max_batch_size} are allowed per request "
            "(split the batch, or raise max_batch_size in model-settings.json)"
        )


def decode_image(data: bytes, limits: Limits, where: str = "image") -> np.ndarray:
    """Decode one encoded image to uint8 RGB [H, W, 3], upright, within the limits."""
    if len(data) == 0:
        raise ImageDecodeError(f"{where} is empty (0 bytes); send the bytes of a JPEG or PNG file")
    if len(data) > limits.max_image_bytes:
        raise ImageTooLargeError(
            f"{where} is {len(data):,} bytes; the limit is {limits.max_image_bytes:,} bytes per image"
        )
    try:
        with warnings.catch_warnings():
            # Pillow warns between 1x and 2x its own pixel cap; our cap is checked below instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageDecodeError(
            f"{where} is not a recognised image ({len(data)} bytes starting {data[:8]!r}); "
            "send JPEG or PNG file bytes"
        ) from None
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"{where}: {err}") from None
    except Exception as err:  # Pillow raises many types for malformed headers
        raise ImageDecodeError(f"{where} has a malformed header: {err}") from None
    if image.format not in SUPPORTED_FORMATS:
        raise ImageDecodeError(
            f"{where} is a {image.format} image; supported formats: {', '.join(sorted(SUPPORTED_FORMATS))}"
        )
    width, height = image.size
    if width * height > limits.max_image_pixels:
        raise ImageTooLargeError(
            f"{where} is {width}x{height} = {width * height:,} pixels; the limit is "
            f"{limits.max_image_pixels:,} pixels (downscale the photo before sending it)"
        )
    if width == 0 or height == 0:
        raise ImageDecodeError(f"{where} has no pixels ({width}x{height})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = ImageOps.exif_transpose(image) or image
            return _to_rgb(image)
    except (OSError, ValueError, SyntaxError, EOFError) as err:
        raise ImageDecodeError(f"{where} is corrupt or truncated ({image.format}): {err}") from None
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"{where}: {err}") from None


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: keep the top 8 bits, as TensorFlow's decoders do for uint8 output.
        wide = np.asarray(image, dtype=np.uint32)
        shift = 8 if image.mode.startswith("I;16") or wide.max(initial=0) <= 0xFFFF else 24
        grey = (wide >> shift).astype(np.uint8)
        return np.repeat(grey[:, :, None], CHANNELS, axis=2)
    if image.mode == "F":
        raise ImageDecodeError("floating-point images are not supported; send 8-bit JPEG or PNG")
    rgb = image.convert("RGB")
    return np.asarray(rgb, dtype=np.uint8)


def _axis_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # tf.image.resize (bilinear, half_pixel_centers=True, antialias=False), computed in float32 as
    # TensorFlow's kernel does: in float64 the source coordinates of a 4000-pixel-wide photo differ
    # by up to 2e-4, which would show in the pixels.
    scale = np.float32(in_size) / np.float32(out_size)
    src = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    floor = np.floor(src)
    lower = np.clip(floor, 0, in_size - 1).astype(np.intp)
    upper = np.clip(np.ceil(src), 0, in_size - 1).astype(np.intp)
    frac = (src - floor).astype(np.float32)
    return lower, upper, frac


def resize_bilinear(image: np.ndarray, size: int = IMAGE_SIZE) -> np.ndarray:
    """uint8 or float [H, W, C] -> float32 [size, size, C], same values as `tf.image.resize`."""
    height, width = image.shape[:2]
    y0, y1, fy = _axis_weights(height, size)
    x0, x1, fx = _axis_weights(width, size)
    # Gather the needed rows and columns before converting to float: a 12 MP photo needs 448 x 448
    # of its pixels. Interpolate along x first, then y, in TensorFlow's order.
    rows0 = image[y0]
    rows1 = image[y1]
    top_left = rows0[:, x0].astype(np.float32)
    top_right = rows0[:, x1].astype(np.float32)
    bottom_left = rows1[:, x0].astype(np.float32)
    bottom_right = rows1[:, x1].astype(np.float32)
    wx = fx[None, :, None]
    top = top_left + (top_right - top_left) * wx
    bottom = bottom_left + (bottom_right - bottom_left) * wx
    result: np.ndarray = top + (bottom - top) * fy[:, None, None]
    return result


def preprocess_pixels(image: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> float32 [224, 224, 3] in [0, 1]."""
    if image.ndim != 3 or image.shape[2] != CHANNELS:
        raise ImageDecodeError(f"expected an RGB image [H, W, 3], got shape {list(image.shape)}")
    # The seed scales then resizes; resizing is linear, so resizing the uint8 rows first and scaling
    # once gives the same values (within float rounding) with far fewer float operations.
    return resize_bilinear(image) / np.float32(255.0)


def preprocess_images(images: Sequence[bytes], limits: Limits) -> np.ndarray:
    """Encoded images -> float32 [N, 224, 224, 3]."""
    check_batch_size(len(images), limits)
    batch = np.empty((len(images), IMAGE_SIZE, IMAGE_SIZE, CHANNELS), dtype=np.float32)
    for i, data in enumerate(images):
        where = "image" if len(images) == 1 else f"image #{i}"
        batch[i] = preprocess_pixels(decode_image(data, limits, where=where))
    return batch


def check_tensor(batch: np.ndarray, limits: Limits, name: str = "payload") -> np.ndarray:
    """Validate a client's already-preprocessed float tensor [N, 224, 224, 3] in [0, 1]."""
    expected = (IMAGE_SIZE, IMAGE_SIZE, CHANNELS)
    if batch.ndim != 4 or tuple(batch.shape[1:]) != expected:
        raise TensorValueError(
            f"input {name!r} has shape {list(batch.shape)}; expected [N, 224, 224, 3] "
            "(a batch of RGB images resized to 224x224)"
        )
    check_batch_size(batch.shape[0], limits)
    batch = batch.astype(np.float32, copy=False)
    if batch.size == 0:
        raise TensorValueError(f"input {name!r} holds no images (shape {list(batch.shape)})")
    if not np.isfinite(batch).all():
        bad = int(np.size(batch) - np.count_nonzero(np.isfinite(batch)))
        raise TensorValueError(f"input {name!r} contains {bad} NaN or infinite values; send finite pixels")
    low, high = float(batch.min()), float(batch.max())
    if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
        raise TensorValueError(
            f"input {name!r} has values in [{low:g}, {high:g}]; the model expects RGB scaled to [0, 1] "
            "(divide uint8 pixels by 255)"
        )
    return batch
