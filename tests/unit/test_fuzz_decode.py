"""Hostile input to the decoding layer: whatever a client sends, the only exceptions that escape are
`InputError`s with a message, and what is accepted is float32 [N, 224, 224, 3] in [0, 1].

The corrupt-media corpus is generated here (no binaries in git): truncated and mangled files, a JPEG whose
header claims 60000x60000, a PNG decompression bomb, a zero-byte file, text named .jpg, CMYK JPEG, 16-bit
PNG, animated GIF and WebP (decision: the first frame is classified, as a browser shows it; documented in
docs/reliability.md), and a JPEG whose EXIF block is malformed (what Pillow can read of it is used).
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from mlserver.types import InferenceRequest, RequestInput
from PIL import Image
from pydantic import ValidationError

from cassava.errors import ImageTooLargeError, InputError
from cassava.preprocessing import Limits, check_tensor, decode_image, preprocess_images
from cassava.server.protocol import DecodedRequest, decode_request

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
LIMITS = Limits(max_images=8, max_image_pixels=4_000_000, max_image_bytes=2_000_000)
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")


def encode(image: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes | None = None) -> bytes:
    """A PNG written by hand, so its header can say anything (Pillow refuses to write a bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    if rows is None:
        # A bomb: all-zero rows compress ~1000:1, so the file is small and the pixels are huge.
        channels = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
        row = bytes(1 + -(-width * channels * bit_depth // 8))
        packer = zlib.compressobj(9)
        rows = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    else:
        rows = zlib.compress(rows)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims another size."""
    data = bytearray(encode(Image.new("RGB", (16, 16), (90, 140, 60)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def with_exif(jpeg: bytes, tiff: bytes) -> bytes:
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (64, 48), colour) for colour in ((220, 30, 30), (30, 30, 220))]
    extra = {"lossless": True} if fmt == "WEBP" else {}
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **extra)


def leaf() -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8), "RGB")


# --- the corpus ---------------------------------------------------------------------------------------

_JPEG = encode(leaf(), "JPEG", quality=85)
_MALFORMED_EXIF = (
    # Big-endian TIFF header, IFD of 5 entries of which only the first (orientation 6) is complete.
    b"MM\x00\x2a\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00" + b"\xff" * 7
)

#: name -> (bytes, expectation): "reject" (an InputError), "too_large" (ImageTooLargeError), or a
#: function checking the accepted pixels (uint8 RGB, as decoded).
CORPUS: dict[str, tuple[Callable[[], bytes], Any]] = {
    "zero-byte file": (lambda: b"", "reject"),
    "text file named leaf.jpg": (lambda: b"this is not a photo of a cassava leaf\n", "reject"),
    "HTML error page": (lambda: b"<html><body>502 Bad Gateway</body></html>", "reject"),
    "truncated JPEG (half)": (lambda: _JPEG[: len(_JPEG) // 2], "reject"),
    "truncated JPEG (header only)": (lambda: _JPEG[:200], "reject"),
    "JPEG claiming 60000x60000": (lambda: jpeg_claiming(60000, 60000), "too_large"),
    "JPEG claiming 0x0": (lambda: jpeg_claiming(0, 0), "reject"),
    "PNG bomb 20000x20000 (1-bit, 48 KB)": (lambda: png(20000, 20000, 1, 0), "too_large"),
    "PNG claiming 2^31 wide": (lambda: png(2**31 - 1, 1, 8, 0, rows=b"\x00"), "reject"),
    "PNG with corrupt IDAT": (lambda: png(8, 8, 8, 2, rows=b"\x00" * 10)[:-20] + b"\x00" * 20, "reject"),
    "CMYK JPEG": (
        lambda: encode(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG", quality=95),
        lambda px: px.shape == (30, 40, 3) and px[..., 0].mean() > 200 and px[..., 1:].mean() < 60,
    ),
    "16-bit grey PNG": (
        lambda: png(4, 2, 16, 0, rows=b"".join(b"\x00" + b"\xab\xcd" * 4 for _ in range(2))),
        lambda px: px.shape == (2, 4, 3) and (px == 0xAB).all(),
    ),
    "16-bit RGB PNG": (
        lambda: png(3, 2, 16, 2, rows=b"".join(b"\x00" + b"\x12\x34\x56\x78\x9a\xbc" * 3 for _ in range(2))),
        lambda px: px.shape == (2, 3, 3) and (px[0, 0] == [0x12, 0x56, 0x9A]).all(),
    ),
    "animated GIF (first frame is red)": (
        lambda: animated("GIF"),
        lambda px: px.shape == (48, 64, 3) and px[..., 0].mean() > 180 and px[..., 2].mean() < 80,
    ),
    "animated WebP (first frame is red)": (
        lambda: animated("WEBP"),
        lambda px: px.shape == (48, 64, 3) and px[..., 0].mean() > 180 and px[..., 2].mean() < 80,
    ),
    "EXIF orientation 6 in a malformed EXIF block": (
        lambda: with_exif(_JPEG, _MALFORMED_EXIF),
        lambda px: px.shape == (80, 60, 3),  # the readable orientation is applied: 80x60 -> 60x80
    ),
    "EXIF block of garbage": (
        lambda: with_exif(_JPEG, b"\x13\x37" * 40),
        lambda px: px.shape == (60, 80, 3),  # ignored: the image as stored
    ),
    "EXIF block cut short": (lambda: with_exif(_JPEG, b"MM\x00"), lambda px: px.shape == (60, 80, 3)),
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_corrupt_media_corpus(name: str) -> None:
    make, expected = CORPUS[name]
    data = make()
    limits = Limits()  # the production defaults
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF; the result is what counts
        if expected in ("reject", "too_large"):
            kind = ImageTooLargeError if expected == "too_large" else InputError
            with pytest.raises(kind) as info:
                decode_image(data, limits)
            assert str(info.value).strip(), "an error without a message"
            with pytest.raises(kind):
                preprocess_images([data], limits)
            return
        pixels = decode_image(data, limits)
        assert pixels.dtype == np.uint8
        assert expected(pixels), f"{name}: unexpected pixels {pixels.shape}"
        batch = preprocess_images([data], limits)
    assert_model_input(batch, 1)


def assert_model_input(batch: np.ndarray, n: int) -> None:
    assert batch.dtype == np.float32
    assert batch.shape == (n, 224, 224, 3)
    assert np.isfinite(batch).all()
    assert batch.min() >= 0.0
    assert batch.max() <= 1.0


def only_input_errors(call: Callable[[], Any]) -> Any:
    """Run `call`; an InputError with a message is an answer, anything else escapes and fails the test."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return call()
    except InputError as err:
        error = err
    if not str(error).strip():
        pytest.fail(f"{type(error).__name__} without a message")
    return None


# --- random and mangled bytes -------------------------------------------------------------------------

SEEDS = [encode(leaf(), fmt) for fmt in FORMATS] + [animated("GIF"), with_exif(_JPEG, _MALFORMED_EXIF)]


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """A valid file of some format with a few bytes flipped, cut, inserted or duplicated."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "truncate", "repeat"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif op == "truncate":
            del data[at:]
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 256))]
    return bytes(data)


@FUZZ
@given(data=st.one_of(st.binary(max_size=4096), mangled()))
def test_decode_image_raises_only_input_errors(data: bytes) -> None:
    pixels = only_input_errors(lambda: decode_image(data, LIMITS))
    if pixels is not None:
        assert pixels.dtype == np.uint8
        assert pixels.ndim == 3
        assert pixels.shape[2] == 3


@FUZZ
@given(images=st.lists(st.one_of(mangled(), st.binary(max_size=512)), min_size=0, max_size=10))
def test_preprocess_images_raises_only_input_errors(images: list[bytes]) -> None:
    batch = only_input_errors(lambda: preprocess_images(images, LIMITS))
    if batch is not None:
        assert_model_input(batch, len(images))


@st.composite
def valid_image(draw: st.DrawFn) -> bytes:
    width, height = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "1", "LA", "I;16"]))
    fmt = draw(st.sampled_from([f for f in FORMATS if not (mode == "I;16" and f != "PNG")]))
    if fmt == "JPEG" and mode not in ("RGB", "L"):
        mode = "RGB"
    if fmt in ("GIF", "BMP") and mode in ("LA", "RGBA"):
        mode = "RGB"
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")
    image = image.convert("L").convert("I;16") if mode == "I;16" else image.convert(mode)
    return encode(image, fmt)


@settings(FUZZ, max_examples=50)
@given(images=st.lists(valid_image(), min_size=1, max_size=4))
def test_valid_images_become_the_model_input(images: list[bytes]) -> None:
    assert_model_input(preprocess_images(images, LIMITS), len(images))


# --- float tensors -------------------------------------------------------------------------------------


@st.composite
def tensors(draw: st.DrawFn) -> np.ndarray:
    kinds = [np.float32, np.float64, np.float16, np.int64, np.uint8, np.bool_, np.complex64]
    dtype = np.dtype(draw(st.sampled_from(kinds)))
    if draw(st.booleans()):
        shape = (draw(st.integers(0, 3)), 224, 224, 3)
    else:
        shape = tuple(draw(st.lists(st.integers(0, 5), min_size=0, max_size=5)))
    elements, fill = None, None
    if dtype.kind == "f":
        # Mostly valid pixels, with NaN, infinities, huge and slightly-out-of-range values mixed in.
        in_range = st.floats(0, 1, width=dtype.itemsize * 8)
        elements = st.one_of(in_range, in_range, hnp.from_dtype(dtype), st.sampled_from([-0.0005, 1.0005]))
        fill = st.just(0.5)
    array: np.ndarray = draw(hnp.arrays(dtype, shape, elements=elements, fill=fill))
    return array


@settings(FUZZ, max_examples=150)
@given(batch=tensors())
def test_check_tensor_raises_only_input_errors(batch: np.ndarray) -> None:
    checked = only_input_errors(lambda: check_tensor(batch, LIMITS))
    if checked is not None:
        assert_model_input(checked, batch.shape[0])


# --- V2 requests ---------------------------------------------------------------------------------------

_JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
_ITEMS = st.one_of(
    _JSON_SCALARS,
    st.binary(max_size=64),
    st.sampled_from(SEEDS),
    st.sampled_from([b"aGVsbG8=", "aGVsbG8=", "not base64!", ""]),
    st.lists(_JSON_SCALARS, max_size=3),
)
_SHAPES = st.one_of(
    st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=5),
    st.tuples(st.integers(-2, 10), st.just(224), st.just(224), st.just(3)).map(list),
    st.integers(0, 9).map(lambda n: [n]),
)


@st.composite
def request_inputs(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(["payload", "images", "image", "", "x" * 300]))
    datatype = draw(st.sampled_from(["FP32", "BYTES", "FP64", "INT64", "UINT8", "BOOL"]))
    shape = draw(_SHAPES)
    if draw(st.booleans()) and shape and all(0 <= d < 10**6 for d in shape) and np.prod(shape) <= 3 * 150528:
        # Data that matches the declared size: the decoder must look at the values, not only count them.
        size = int(np.prod(shape))
        value = draw(st.one_of(st.floats(-1, 2), st.integers(-5, 300), st.sampled_from(SEEDS), st.none()))
        data: Any = [value] * size
    else:
        data = draw(st.one_of(st.lists(_ITEMS, max_size=10), _ITEMS))
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


@st.composite
def requests(draw: st.DrawFn) -> InferenceRequest:
    inputs = draw(st.lists(request_inputs(), min_size=0, max_size=3))
    if draw(st.booleans()):
        # As REST builds it: pydantic-validated; what pydantic rejects is answered 400 before our code.
        try:
            return InferenceRequest.model_validate({"inputs": inputs})
        except ValidationError:
            assume(False)
    # As MLServer's gRPC converter builds it: constructed without validation.
    return InferenceRequest.model_construct(inputs=[RequestInput.model_construct(**i) for i in inputs])


@FUZZ
@given(request=requests(), limited=st.booleans())
def test_decode_request_raises_only_input_errors(request: InferenceRequest, limited: bool) -> None:
    decoded = only_input_errors(lambda: decode_request(request, LIMITS if limited else None))
    if decoded is None:
        return
    assert isinstance(decoded, DecodedRequest)
    if decoded.tensor is not None:
        checked = only_input_errors(lambda: check_tensor(decoded.tensor, LIMITS))
        if checked is not None:
            assert_model_input(checked, decoded.tensor.shape[0])
    else:
        assert decoded.images
        assert all(isinstance(item, bytes) for item in decoded.images)
        batch = only_input_errors(lambda: preprocess_images(decoded.images or [], LIMITS))
        if batch is not None:
            assert_model_input(batch, len(decoded.images))


def test_limits_are_checked_before_decoding() -> None:
    """An oversized request costs no base64 or image decoding: the limits are read from its shape."""
    import base64

    big = base64.b64encode(bytes(LIMITS.max_image_bytes + 1)).decode()
    request = InferenceRequest.model_validate(
        {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [big]}]}
    )
    with pytest.raises(ImageTooLargeError, match=r"2,000,001 bytes once base64-decoded; the limit is 2,"):
        decode_request(request, LIMITS)
    many = InferenceRequest.model_validate(
        {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [9], "data": ["not base64"] * 9}]}
    )
    with pytest.raises(InputError, match=r"9 images; at most 8"):
        decode_request(many, LIMITS)
    huge = RequestInput.model_construct(name="payload", datatype="FP32", shape=[10**20, 224, 224, 3], data=[])
    claim = InferenceRequest.model_construct(inputs=[huge])
    with pytest.raises(InputError, match=r"at most 8"):
        decode_request(claim, LIMITS)


def test_messages_never_quote_the_request() -> None:
    """Rejections reach the server log (MLServer logs them): they describe a request, never copy it."""
    marker = "CASSAVA-MARKER-7f3a"
    cases = [
        InferenceRequest.model_validate(
            {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [marker]}]}
        ),
        InferenceRequest.model_construct(
            inputs=[
                RequestInput.model_construct(
                    name="payload", datatype="FP32", shape=[1, 224, 224, 3], data=[marker] * 150528
                )
            ]
        ),
        InferenceRequest.model_construct(
            inputs=[
                RequestInput.model_construct(
                    name="images", datatype="BYTES", shape=[1], data=[marker.encode()]
                )
            ]
        ),
    ]
    for request in cases:
        with pytest.raises(InputError) as info:
            _decode_and_preprocess(request)
        assert "MARKER" not in str(info.value)
        assert "7f3a" not in str(info.value)


def _decode_and_preprocess(request: InferenceRequest) -> None:
    decoded = decode_request(request, LIMITS)
    preprocess_images(decoded.images or [], LIMITS)
