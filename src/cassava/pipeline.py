"""The one prediction pipeline: encoded bytes or a float tensor -> backend -> class predictions.

`cassava predict`, the MLServer runtime, the benchmarks' in-process limit and the tests all call
`Classifier`; nothing else runs the model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TypeVar

import numpy as np

from cassava.backends import Backend, artifact_file, load_backend
from cassava.errors import InputError, ModelLoadError
from cassava.labels import LABELS, NUM_CLASSES
from cassava.model_store import ModelInfo, read_info
from cassava.preprocessing import (
    CHANNELS,
    IMAGE_SIZE,
    Limits,
    check_tensor,
    decode_image,
    preprocess_images,
    preprocess_pixels,
)
from cassava.settings import Backend as BackendName
from cassava.settings import CassavaSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class BatchResult:
    """Postprocessed model output for N images: what `Classifier` returns and what `CassavaClient`
    reads back from a server."""

    indices: np.ndarray  # int64 [N]
    probabilities: np.ndarray  # float32 [N, 6]

    @property
    def codes(self) -> list[str]:
        return [LABELS[i].code for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    @classmethod
    def concatenate(cls, parts: Sequence[BatchResult]) -> BatchResult:
        """The results of consecutive chunks as one, in order."""
        if not parts:
            return cls(np.empty(0, dtype=np.int64), np.empty((0, NUM_CLASSES), dtype=np.float32))
        return cls(
            indices=np.concatenate([part.indices for part in parts]),
            probabilities=np.concatenate([part.probabilities for part in parts]),
        )


def in_chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in consecutive lists of at most `size`, read lazily: the one way every caller splits a
    stream of images into requests or model calls, so memory stays bounded by `size`."""
    if size < 1:
        raise ValueError(f"chunk size is {size}; it must be at least 1")
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def postprocess(probabilities: np.ndarray) -> BatchResult:
    if probabilities.ndim != 2 or probabilities.shape[1] != NUM_CLASSES:
        raise ModelLoadError(
            f"the model returned shape {list(probabilities.shape)}; expected [N, {NUM_CLASSES}]"
        )
    indices = probabilities.argmax(axis=1).astype(np.int64)
    return BatchResult(indices=indices, probabilities=probabilities.astype(np.float32, copy=False))


class Classifier:
    def __init__(self, backend: Backend, info: ModelInfo, limits: Limits | None = None) -> None:
        self.backend = backend
        self.info = info
        self.limits = limits or Limits()

    @classmethod
    def load(
        cls,
        model_dir: Path,
        backend: BackendName = "tensorflow",
        *,
        threads: int = 0,
        limits: Limits | None = None,
    ) -> Classifier:
        info = read_info(model_dir, need=artifact_file(backend))
        if info.warning:
            logger.warning(info.warning)
        return cls(load_backend(backend, model_dir, threads=threads), info, limits)

    @classmethod
    def from_settings(cls, settings: CassavaSettings, *, merged_requests: int = 1) -> Classifier:
        """The classifier `settings` describe: what `cassava predict`, the bench and the runtime build."""
        return cls.load(
            settings.model_directory(),
            settings.backend,
            threads=settings.inference_threads,
            limits=settings.limits(merged_requests),
        )

    def classify_tensor(self, batch: np.ndarray) -> BatchResult:
        """A client's preprocessed float32 [N, 224, 224, 3] (the seed's request) -> result."""
        return postprocess(self.backend.predict(check_tensor(batch, self.limits)))

    def preprocess(self, images: Sequence[bytes]) -> np.ndarray:
        """Encoded JPEG/PNG/... files -> float32 [N, 224, 224, 3]."""
        return preprocess_images(images, self.limits)

    def classify_preprocessed(self, batch: np.ndarray) -> BatchResult:
        return postprocess(self.backend.predict(batch))

    def classify_images(self, images: Sequence[bytes]) -> BatchResult:
        """Encoded JPEG/PNG/... files -> result."""
        return self.classify_preprocessed(self.preprocess(images))

    def classify_each(self, images: Sequence[tuple[str, bytes]]) -> tuple[BatchResult, dict[int, InputError]]:
        """Named encoded images -> the result of those that decode, in order, and the error of each one
        that does not, by position (its message names it). One bad photo costs that photo only."""
        batch = np.empty((len(images), IMAGE_SIZE, IMAGE_SIZE, CHANNELS), dtype=np.float32)
        errors: dict[int, InputError] = {}
        kept = 0
        for position, (name, data) in enumerate(images):
            try:
                batch[kept] = preprocess_pixels(decode_image(data, self.limits, where=name))
            except InputError as err:
                errors[position] = err
                continue
            kept += 1
        if not kept:
            return BatchResult.concatenate([]), errors
        return self.classify_preprocessed(batch[:kept]), errors
