"""cassava's own Prometheus metrics, exported next to MLServer's on the metrics port (8082).

MLServer points prometheus_client at a multiprocess directory before the workers start, so these
module-level metrics are aggregated across parallel workers without extra code here.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import Counter, Histogram

PREDICTIONS = Counter(
    "cassava_predictions",
    "Images classified, by predicted class code.",
    ["class_code"],
)
REJECTED = Counter(
    "cassava_rejected_requests",
    "Inference requests rejected before reaching the model, by reason.",
    ["reason"],
)
PREPROCESS_SECONDS = Histogram(
    "cassava_preprocess_seconds",
    "Time to decode and preprocess the encoded images of one request.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


def count_predictions(codes: Iterable[str]) -> None:
    for code, n in Tally(codes).items():
        PREDICTIONS.labels(class_code=code).inc(n)


def count_rejected(reason: str) -> None:
    REJECTED.labels(reason=reason).inc()
