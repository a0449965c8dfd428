"""cassava's own Prometheus metrics, exported next to MLServer's on the metrics port (8082).

With the default `parallel_workers: 0` inference runs in the server process, and these metrics live in
its registry, which the metrics port serves. With parallel workers inference runs in a worker process:
MLServer sets PROMETHEUS_MULTIPROC_DIR to its `metrics_dir` in the server process before it spawns the
workers, and a worker imports this module (when it loads the runtime) after that, so these module-level
metrics are born multiprocess there and the server's /metrics sums every process's files; the server
process's own copies stay at zero. tests/integration/test_metrics.py checks the exact counts in both
cases, and that a worker wrote them.

`metrics_dir` defaults to `.metrics` in the working directory: two servers started from one directory
share it and report each other's counts. The image sets MLSERVER_METRICS_DIR under its writable /tmp;
tests give each server its own.
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
