"""Decode and preprocess: speed per method, distance from the seed's pixels, and fast_decode's agreement
with the exact path. Runs in a child process: it imports TensorFlow."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.plan import IMAGE_QUALITY, IMAGE_SIZE
from cassava.bench import generate_images


def decode_benchmark(model_dir: Path, images: list[bytes], quick: bool) -> dict[str, Any]:
    """Decode + resize speed per method on phone-sized JPEGs, max |difference| from the seed's pixels
    (TensorFlow's default JPEG decoder + tf.image.resize), and fast_decode's argmax agreement with
    the exact path on the benchmark images. Runs in a child process (imports TensorFlow)."""
    import io
    import statistics

    import numpy as np
    import tensorflow as tf
    from PIL import Image

    from cassava.pipeline import Classifier
    from cassava.preprocessing import (
        Limits,
        decode_image,
        jpeg_scale,  # the scale fast_decode picks: Pillow's draft() is asked for the same one
        preprocess_images,
        resize_bilinear,
    )

    try:
        import simplejpeg
    except ImportError:
        simplejpeg = None

    def timed(fn: Callable[[bytes], Any], data: list[bytes], repeats: int) -> float:
        fn(data[0])
        laps = []
        for _ in range(repeats):
            for d in data:
                started = time.perf_counter()
                fn(d)
                laps.append(time.perf_counter() - started)
        return statistics.median(laps) * 1000

    def seed_pixels(data: bytes) -> Any:
        # TensorFlow's default JPEG decoder, as TFDS calls it for the seed's images.
        pixels = tf.io.decode_jpeg(data, channels=3)
        return tf.image.resize(tf.cast(pixels, tf.float32) / 255.0, (224, 224)).numpy()

    def pillow(data: bytes) -> Any:
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    def pillow_draft(data: bytes) -> Any:
        image = Image.open(io.BytesIO(data))
        scale = jpeg_scale(*image.size)
        image.draft("RGB", (image.size[0] // scale, image.size[1] // scale))
        return np.asarray(image.convert("RGB"))

    exact, fast = Limits(), Limits(fast_decode=True)
    sizes = [(800, 600), (4000, 3000)]
    # The seed's pixels: what the "max abs diff" columns are measured against.
    result: dict[str, Any] = {"sizes": {}, "simplejpeg": simplejpeg is not None, "reference": "tf-default"}
    for width, height in sizes:
        photos = generate_images(2 if width > 1000 else 4, (width, height), quality=IMAGE_QUALITY, seed=7)
        repeats = 1 if quick else (3 if width > 1000 else 10)
        reference = [seed_pixels(d) for d in photos]

        def diff(
            fn: Callable[[bytes], Any], photos: list[bytes] = photos, ref: list[Any] = reference
        ) -> float:
            return max(float(np.abs(fn(d) - r).max()) for d, r in zip(photos, ref, strict=True))

        decoded = decode_image(photos[0], exact)

        def tf_resize(_: bytes, pixels: Any = decoded) -> Any:
            return tf.image.resize(pixels, (224, 224))

        def our_resize(_: bytes, pixels: Any = decoded) -> Any:
            return resize_bilinear(pixels)

        def ours(data: bytes) -> Any:
            return preprocess_images([data], exact)[0]

        def ours_fast(data: bytes) -> Any:
            return preprocess_images([data], fast)[0]

        methods: list[tuple[str, Callable[[bytes], Any], bool]] = [
            ("decode: Pillow (before)", pillow, False),
            ("decode: tf.io.decode_jpeg", lambda d: tf.io.decode_jpeg(d, channels=3), False),
            ("decode: cassava (simplejpeg when installed)", lambda d: decode_image(d, exact), False),
            ("decode: Pillow draft() (fast_decode without simplejpeg)", pillow_draft, False),
            ("decode: cassava fast_decode", lambda d: decode_image(d, fast), False),
            ("resize: tf.image.resize", tf_resize, False),
            ("resize: cassava resize_bilinear", our_resize, False),
            ("decode + preprocess: the seed's (TensorFlow)", seed_pixels, True),
            ("decode + preprocess: cassava (default)", ours, True),
            ("decode + preprocess: cassava fast_decode", ours_fast, True),
        ]
        rows = [
            (name, timed(fn, photos, repeats), diff(fn) if with_diff else None)
            for name, fn, with_diff in methods
        ]
        result["sizes"][f"{width}x{height}"] = [
            {"method": name, "ms": ms, "max_abs_diff": d} for name, ms, d in rows
        ]
    # Agreement of fast_decode with the exact path, on the benchmark images and on 12 MP photos.
    classifier = Classifier.load(model_dir, "tensorflow", limits=Limits(max_images=256))
    agreement = {}
    for name, photos in (
        (f"benchmark images ({IMAGE_SIZE[0]}x{IMAGE_SIZE[1]})", images),
        ("800x600", generate_images(8 if quick else 32, (800, 600), quality=IMAGE_QUALITY, seed=11)),
        ("4000x3000", generate_images(2 if quick else 6, (4000, 3000), quality=IMAGE_QUALITY, seed=13)),
    ):
        a = classifier.classify_preprocessed(preprocess_images(photos, Limits(max_images=256)))
        b = classifier.classify_preprocessed(
            preprocess_images(photos, Limits(max_images=256, fast_decode=True))
        )
        agreement[name] = {
            "images": len(photos),
            "argmax_agreement": float((a.indices == b.indices).mean()),
            "max_probability_diff": float(np.abs(a.probabilities - b.probabilities).max()),
        }
    result["fast_decode_agreement"] = agreement
    result["untrained_model"] = classifier.info.untrained or "synthetic" in str(model_dir)
    return result
