"""Encoded image bytes -> float32 [N, 224, 224, 3] in [0, 1], exactly as the seed's `helpers.preprocess`.

The seed feeds the model `tf.image.resize(uint8_image / 255, (224, 224))`: bilinear, half-pixel
centres, no antialiasing. `resize_bilinear` computes the same thing in numpy (parity test within 1e-6),
so neither the server nor the client has to import TensorFlow to preprocess.

Decoding is Pillow's: JPEG, PNG, GIF, WebP, BMP and TIFF; EXIF orientation is applied so a phone photo
is upright; every mode ends as RGB (alpha dropped, as TensorFlow's 3-channel decoders do). Animated
images contribute their first frame. Limits are checked on the header, before any pixel is decoded.

JPEGs are decoded by `simplejpeg` (libjpeg-turbo straight into numpy) with the seed's settings, those of
`tf.io.decode_jpeg`: the fast integer IDCT, fancy chroma upsampling, and TensorFlow's own CMYK to RGB
formula. The pixels are the seed's, bit for bit, before the EXIF rotation that TensorFlow does not do
(docs/decoding.md, tests/unit/test_decode_parity.py). What simplejpeg cannot decode goes to Pillow, whose
accurate IDCT is within a few levels of it. `Limits.fast_decode` opts into libjpeg's DCT downscaling of
large JPEGs: several times faster for phone photos, but approximate.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageOps, UnidentifiedImageError

from cassava.errors import (
    BatchTooLargeError,
    ImageDecodeError,
    ImageTooLargeError,
    RequestFormatError,
    TensorValueError,
    safe_reason,
)
from cassava.settings import CassavaSettings

IMAGE_SIZE = 224
CHANNELS = 3
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "MPO"})
# A float tensor from a client goes straight into the model, so its values must already be scaled.
# Bilinear resizing of [0, 1] data cannot leave [0, 1]; the tolerance absorbs float rounding.
_RANGE_TOLERANCE = 1e-3


_JPEG_FORMATS = frozenset({"JPEG", "MPO"})
# EXIF orientation -> what turns the stored pixels upright, as numpy views (Pillow's exif_transpose).
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}
_EXIF_ORIENTATION = 0x0112


def _default(name: str) -> Any:
    return CassavaSettings.model_fields[name].default


@dataclass(frozen=True)
class Limits:
    """The request limits the decoder enforces. Their defaults are `CassavaSettings`' (the one owner);
    entry points build them with `CassavaSettings().limits()` so that `CASSAVA_*` variables apply."""

    max_images: int = _default("max_images")
    max_image_pixels: int = _default("max_image_pixels")
    max_image_bytes: int = _default("max_image_bytes")
    # Not a limit but the one decoding choice, carried where the decoder already looks. True lets libjpeg
    # decode a large JPEG at 1/2, 1/4 or 1/8 scale (still >= 224 px a side) before the resize: much
    # faster for phone photos, but the pixels are no longer the seed's (docs/performance.md).
    fast_decode: bool = False


def check_batch_size(n: int, limits: Limits) -> None:
    if n > limits.max_images:
        raise BatchTooLargeError(
            f"the request holds {n} images; at most {limits.max_images} are allowed per request "
            "(split the batch, or raise max_images: CASSAVA_MAX_IMAGES or model-settings.json "
            "parameters.extra)"
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
            f"{where} is not a recognised image ({len(data):,} bytes of {_looks_like(data)}); "
            "send JPEG or PNG file bytes"
        ) from None
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"{where}: {safe_reason(err)}") from None
    except MemoryError:
        raise
    except Exception as err:  # Pillow raises many types for malformed headers
        raise ImageDecodeError(f"{where} has a malformed header: {safe_reason(err)}") from None
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
    if image.format in _JPEG_FORMATS:
        scale = jpeg_scale(width, height) if limits.fast_decode else 1
        if (
            image.mode in ("RGB", "L", "CMYK")
            and (pixels := _decode_jpeg_turbo(data, image, scale)) is not None
        ):
            return pixels
        if scale > 1:
            # draft() picks the largest power-of-two scale s with side // requested >= s: flooring
            # the request makes that exactly `scale`.
            image.draft("RGB", (width // scale, height // scale))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if image.format in _JPEG_FORMATS and image.mode == "CMYK":
                # Pillow reads every CMYK JPEG as Adobe-inverted ("CMYK;I"): its values are 255 minus
                # libjpeg's. Converted as TensorFlow does, not as Pillow's convert("RGB") does.
                light = ImageChops.invert(image) if _saw_adobe_marker(image) else image
                return _upright(_cmyk_to_rgb(light), image)
            image = ImageOps.exif_transpose(image) or image
            return _to_rgb(image)
    except Image.DecompressionBombError as err:
        raise ImageTooLargeError(f"{where}: {safe_reason(err)}") from None
    except (ImageDecodeError, MemoryError):
        raise
    except Exception as err:
        # Pillow's decoders and its EXIF parser raise OSError, SyntaxError, struct.error, IndexError,
        # KeyError, TypeError... on hostile files; whatever the type, the file is at fault, not us.
        raise ImageDecodeError(
            f"{where} is corrupt or truncated ({image.format}): {safe_reason(err)}"
        ) from None


def _looks_like(data: bytes) -> str:
    """What unrecognised bytes resemble, without quoting them: the message reaches the server log."""
    head = data[:64].lstrip()
    if head[:1] in (b"{", b"["):
        return "what looks like JSON"
    if head[:1] == b"<":
        return "what looks like HTML or XML"
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return "text"
    return "binary data that is not JPEG, PNG, GIF, WebP, BMP or TIFF"


def jpeg_scale(width: int, height: int) -> int:
    """The largest of libjpeg's cheap DCT scalings (1/8, 1/4, 1/2) that keeps both sides >= 224."""
    fits = min(width, height) // IMAGE_SIZE
    return next(s for s in (8, 4, 2, 1) if s <= max(fits, 1))


def _decode_jpeg_turbo(data: bytes, image: Image.Image, scale: int) -> np.ndarray | None:
    """Decode with simplejpeg (libjpeg-turbo into numpy), or None to leave the file to Pillow."""
    try:
        import simplejpeg
    except ImportError:
        return None
    width, height = image.size
    cmyk = image.mode == "CMYK"

    def decode(strict: bool) -> np.ndarray:
        pixels: np.ndarray = simplejpeg.decode_jpeg(
            data,
            # libjpeg converts YCCK to CMYK; CMYK to RGB is TensorFlow's formula, below.
            colorspace="CMYK" if cmyk else "RGB",
            # The seed's pixels: tf.io.decode_jpeg's default is libjpeg's fast integer IDCT (JDCT_IFAST)
            # with fancy upsampling. A DCT-scaled decode is approximate anyway, and keeps the accurate
            # IDCT so that it matches Pillow's draft() whichever decoder runs it.
            fastdct=scale == 1,
            fastupsample=False,
            # Asking for at least ceil(side / scale) pixels makes libjpeg pick exactly 1/scale, the same
            # scaling Pillow's draft() picks, so both decoders agree with or without simplejpeg.
            min_width=-(-width // scale),
            min_height=-(-height // scale),
            strict=strict,
        )
        return pixels

    try:
        pixels = decode(strict=True)
    except ValueError:
        try:
            pixels = decode(strict=False)
        except ValueError:
            return None  # e.g. a CMYK layout turbojpeg does not handle: Pillow decodes it
        # simplejpeg's strict mode refuses data that libjpeg only warns about. TensorFlow decodes most
        # of those (not a truncated file), so does Pillow, and Pillow already words the error for the
        # rest: it judges, and libjpeg's pixels, the seed's, are kept for what Pillow accepts.
        if not _pillow_decodes(data):
            return None
    if cmyk:
        raw = Image.frombuffer("CMYK", (pixels.shape[1], pixels.shape[0]), pixels, "raw", "CMYK", 0, 1)
        pixels = _cmyk_to_rgb(raw if _saw_adobe_marker(image) else ImageChops.invert(raw))
    return _upright(pixels, image)


def _pillow_decodes(data: bytes) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                probe.load()
    except MemoryError:
        raise
    except Exception:
        return False
    return True


def _upright(pixels: np.ndarray, image: Image.Image) -> np.ndarray:
    """Apply the EXIF orientation of `image` to its decoded pixels, as Pillow's exif_transpose would."""
    try:
        orientation = int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a malformed EXIF block: Pillow's exif_transpose ignores it too
        orientation = 1
    upright = _UPRIGHT.get(orientation)
    return pixels if upright is None else np.ascontiguousarray(upright(pixels))


def _saw_adobe_marker(image: Image.Image) -> bool:
    # libjpeg counts an APP14 "Adobe" marker only when it holds the transform byte (12 bytes or more),
    # which is when Pillow records "adobe_transform".
    return "adobe_transform" in image.info


def _cmyk_to_rgb(light: Image.Image) -> np.ndarray:
    """CMYK to RGB as `tf.io.decode_jpeg` computes it: each of R, G, B = C|M|Y * K / 255, truncated.

    `light` holds the values with 255 meaning no ink: libjpeg's own for a file with an Adobe marker
    (Adobe writes CMYK inverted), 255 minus libjpeg's otherwise. ImageChops.multiply is that formula,
    integer and truncating, in C; numpy on interleaved channels is several times slower.
    """
    cyan, magenta, yellow, black = light.split()
    colour = Image.merge("RGB", (cyan, magenta, yellow))
    rgb: np.ndarray = np.asarray(ImageChops.multiply(colour, Image.merge("RGB", (black, black, black))))
    return rgb


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
    height, width, channels = image.shape
    y0, y1, fy = _axis_weights(height, size)
    x0, x1, fx = _axis_weights(width, size)
    # Gather only the pixels the result reads, before converting to float: whole source rows y0 and y1
    # (a row copy is a memcpy), then their columns x0 and x1 with the channels as the innermost axis.
    # Every later step then works on [size, size * C] rows; with C = 3 innermost, numpy's broadcast
    # loops run 3 elements at a time and are several times slower.
    rows = image.reshape(height, width * channels).take(np.concatenate([y0, y1]), axis=0)
    columns = (np.concatenate([x0, x1]) * channels)[:, None] + np.arange(channels)
    corners = rows.take(columns.ravel(), axis=1).astype(np.float32, copy=False)
    span = size * channels
    top_left, top_right = corners[:size, :span], corners[:size, span:]
    bottom_left, bottom_right = corners[size:, :span], corners[size:, span:]
    wx = np.repeat(fx, channels)
    # TensorFlow's order of operations: along x, then y. In place, as the corners are ours.
    top_right -= top_left
    top_right *= wx
    top: np.ndarray = top_left + top_right
    bottom_right -= bottom_left
    bottom_right *= wx
    bottom_right += bottom_left
    bottom_right -= top
    bottom_right *= fy[:, None]
    top += bottom_right
    return top.reshape(size, size, channels)


def preprocess_pixels(image: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> float32 [224, 224, 3] in [0, 1]."""
    if image.ndim != 3 or image.shape[2] != CHANNELS:
        raise ImageDecodeError(f"expected an RGB image [H, W, 3], got shape {list(image.shape)}")
    # The seed scales then resizes; resizing is linear, so resizing the uint8 rows first and scaling
    # once gives the same values (within float rounding) with far fewer float operations.
    scaled: np.ndarray = resize_bilinear(image) / np.float32(255.0)
    return scaled


def preprocess_images(images: Sequence[bytes], limits: Limits) -> np.ndarray:
    """Encoded images -> float32 [N, 224, 224, 3]."""
    if not images:
        raise RequestFormatError("the request holds no images; send at least one encoded image")
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
    if batch.dtype.kind not in "fiu":
        raise TensorValueError(
            f"input {name!r} holds {batch.dtype} values; send FP32 pixels (RGB scaled to [0, 1])"
        )
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
    if low < 0 or high > 1:
        # Within the rounding tolerance, but the model is promised [0, 1]; a copy, never the caller's.
        batch = np.clip(batch, 0.0, 1.0)
    return batch
