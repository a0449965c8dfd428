"""An untrained stand-in for CropNet with the same interface, for machines that cannot download it.

It is a TF2 SavedModel with no serving signature, called as `model(image, training)` with float32
[N, 224, 224, 3] in [0, 1], returning softmax probabilities [N, 6]. Its "features" are the mean colours
of a 4x4 grid, mixed by fixed random weights: cheap, deterministic, and different images get different
classes, so tests can tell predictions apart. It knows nothing about cassava.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

GRID = 4


def save_standin(path: Path, seed: int = 0) -> None:
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    features = GRID * GRID * 3

    class StandIn(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(name="cassava_standin")
            self.kernel = tf.Variable(rng.normal(0.0, 8.0, size=(features, 6)).astype(np.float32))
            self.bias = tf.Variable(np.zeros(6, dtype=np.float32))

        @tf.function(  # type: ignore[untyped-decorator]
            input_signature=[
                tf.TensorSpec([None, 224, 224, 3], tf.float32, name="image"),
                tf.TensorSpec([], tf.bool, name="training"),
            ]
        )
        def __call__(self, image: Any, training: Any) -> Any:
            cells = tf.nn.avg_pool2d(image, ksize=224 // GRID, strides=224 // GRID, padding="VALID")
            flat = tf.reshape(cells, [-1, features]) - 0.5
            return tf.nn.softmax(tf.matmul(flat, self.kernel) + self.bias)

    # signatures={} keeps the SavedModel signature-less, like the hub-format CropNet.
    tf.saved_model.save(StandIn(), str(path), signatures={})
