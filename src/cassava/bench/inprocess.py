"""The in-process limit: `Classifier.classify_images` (decode + preprocess + model) in a loop on the
same encoded images, what a server could reach if HTTP, gRPC and MLServer cost nothing."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from cassava.bench.report import BenchReport, Record, Tick, build_report, count_errors
from cassava.bench.requests import prepare_requests
from cassava.bench.resources import cpu_seconds
from cassava.preprocessing import Limits
from cassava.settings import Backend, CassavaSettings

if TYPE_CHECKING:
    from cassava.pipeline import Classifier


def run_in_process(
    images: Sequence[bytes],
    *,
    model_dir: Path,
    backend: Backend = "tensorflow",
    batch: int = 1,
    duration_s: float = 10.0,
    warmup_s: float = 2.0,
    threads: int = 0,
    limits: Limits | None = None,
    window_s: float | None = None,
    label: str = "",
    on_tick: Tick | None = None,
    classifier: Classifier | None = None,
) -> BenchReport:
    """`Classifier.classify_images` in a loop: decode + preprocess + model, no server. `limits`
    (default: `CassavaSettings`', so CASSAVA_* variables apply) are raised to admit `batch`. A
    `classifier` already loaded (with limits that admit `batch`) is used as it is; its load time is not
    counted."""
    from cassava.pipeline import Classifier

    limits = limits or CassavaSettings().limits()
    loading = time.monotonic()
    if classifier is None:
        classifier = Classifier.load(
            model_dir,
            backend,
            threads=threads,
            limits=replace(limits, max_images=max(batch, limits.max_images)),
        )
    load_s = time.monotonic() - loading
    groups = prepare_requests(images, mode="in-process", batch=batch)
    # As for served runs: the first call at a batch shape is not the steady state (graph tracing).
    with contextlib.suppress(Exception):
        classifier.classify_images(groups[0].payload)
    records: list[Record] = []
    started = time.monotonic()
    opens, closes = started + warmup_s, started + warmup_s + duration_s
    cpu0 = t0 = None
    i = 0
    while (now := time.monotonic()) < closes:
        if cpu0 is None and now >= opens:
            t0, cpu0 = now, cpu_seconds()
        group = groups[i % len(groups)]
        i += 1
        sent = time.monotonic()
        error = None
        try:
            classifier.classify_images(group.payload)
        except Exception as err:  # counted like a served error, so a bad image set is visible
            error = type(err).__name__
        records.append(Record(sent - opens, time.monotonic() - sent, group.images, error))
        if on_tick is not None:
            on_tick(time.monotonic() - started, len(records), count_errors(records))
    end = time.monotonic()
    cores = os.cpu_count() or 1
    client_cpu = (cpu_seconds() - cpu0) / (end - t0) / cores if cpu0 is not None and t0 else math.nan
    return build_report(
        records,
        label=label or f"in-process {backend} b{batch}",
        mode="in-process",
        target=str(model_dir),
        encoding="bytes",
        batch=batch,
        concurrency=1,
        warmup_s=warmup_s,
        duration_s=duration_s,
        client_cpu=client_cpu,
        window_s=window_s,
        info={
            "backend": backend,
            "threads": threads,
            "fast_decode": classifier.limits.fast_decode,
            "load_s": load_s,
            "untrained": classifier.info.untrained,
        },
    )
