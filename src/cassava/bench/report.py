"""What a run measured: one record per request, and the report summarised from the records; for
open-loop runs, the latency-vs-rate curve and where its p99 crosses a latency objective."""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from cassava.bench.requests import Encoding, Mode

PERCENTILES = (50, 90, 99)

#: The latency objective the sweep is judged against: p99 of one 640x480 JPEG per request answered
#: within 250 ms. A person waits for a single photo's class; 250 ms is a quarter of the one-second
#: budget of an interactive request, leaving the rest to the network and the caller.
DEFAULT_SLO_MS = 250.0
SLO_PERCENTILE = "p99"
#: Open loop: what did not come back in time is a drop, not an error. "dropped": never sent, because
#: `max_in_flight` requests were already out; the others: sent, and timed out.
DROP_KINDS = ("dropped", "timeout", "grpc_DEADLINE_EXCEEDED")

Tick = Callable[[float, int, int], None]
"""Progress callback: (seconds since start, requests completed, errors)."""


@dataclass(frozen=True)
class Record:
    start: float  # seconds since the measured window opened (negative while warming up)
    latency: float  # seconds
    images: int
    error: str | None = None

    @property
    def end(self) -> float:
        return self.start + self.latency


def count_errors(records: Sequence[Record]) -> int:
    return sum(r.error is not None for r in records)


def latency_stats(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99, mean and max in milliseconds (linear interpolation between samples); NaN if empty."""
    keys = [f"p{q}" for q in PERCENTILES] + ["mean", "max"]
    if len(latencies_s) == 0:
        return dict.fromkeys(keys, math.nan)
    ms = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    values = [*np.percentile(ms, PERCENTILES), ms.mean(), ms.max()]
    return {key: float(value) for key, value in zip(keys, values, strict=True)}


Arrivals = Literal["constant", "poisson"]


@dataclass(frozen=True)
class OpenLoop:
    """How an open-loop run sends: `rate` requests per second, at constant spacing or as a Poisson
    process, never more than `max_in_flight` unanswered at once."""

    rate: float
    arrivals: Arrivals = "constant"
    max_in_flight: int = 256

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"the arrival rate must be a positive number of requests/s, not {self.rate}")
        if self.arrivals not in ("constant", "poisson"):
            raise ValueError(f"arrivals must be constant or poisson, not {self.arrivals!r}")
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {self.max_in_flight}")


@dataclass
class Window:
    start_s: float
    end_s: float
    requests: int
    images: int
    errors: int
    images_per_s: float
    latency_ms: dict[str, float]
    rss_mb: float | None = None


@dataclass
class BenchReport:
    label: str
    mode: Mode
    target: str
    encoding: Encoding
    batch: int
    concurrency: int
    warmup_s: float
    duration_s: float
    requests: int
    images: int
    errors: dict[str, int]
    images_per_s: float
    requests_per_s: float
    latency_ms: dict[str, float]
    request_bytes_per_image: float | None
    client_cpu: float  # this process's CPU time / wall time / cores: 1.0 = every core busy
    cores: int
    server_cpu: float | None = None  # the same for the server's process tree, when it is known
    windows: list[Window] = field(default_factory=list)
    rss_samples: list[tuple[float, int]] = field(default_factory=list)  # (s since window opened, bytes)
    rss_growth_pct: float | None = None
    error_examples: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # backend, server settings, cold start, ...
    # Open loop only (None / empty for closed-loop runs). `offered`: arrivals scheduled inside the
    # window; their latencies (from the scheduled time), drops and errors are the report's, while
    # images_per_s and requests_per_s are what was answered inside the window: the achieved rate.
    rate: float | None = None
    arrivals: str | None = None
    max_in_flight: int | None = None
    offered: int = 0
    drops: dict[str, int] = field(default_factory=dict)

    @property
    def drop_count(self) -> int:
        return sum(self.drops.values())

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rss_growth_pct(samples: Sequence[tuple[float, int]]) -> float | None:
    """Growth of the resident set from just after warm-up to the end, in percent: the mean of the last
    three samples against the mean of the first three, so one noisy sample does not decide it."""
    after = [rss for t, rss in samples if t >= 0]
    if len(after) < 2:
        return None
    k = min(3, len(after) // 2)
    first, last = float(np.mean(after[:k])), float(np.mean(after[-k:]))
    return (last - first) / first * 100.0 if first > 0 else None


def _windows(
    measured: Sequence[Record],
    duration_s: float,
    window_s: float,
    rss_samples: Sequence[tuple[float, int]],
) -> list[Window]:
    windows = []
    for k in range(max(1, math.ceil(duration_s / window_s - 1e-9))):
        start, end = k * window_s, min(duration_s, (k + 1) * window_s)
        inside = [r for r in measured if start <= r.end < end or (end == duration_s and r.end == end)]
        good = [r for r in inside if r.error is None]
        rss = [b for t, b in rss_samples if start <= t <= end]
        windows.append(
            Window(
                start_s=start,
                end_s=end,
                requests=len(inside),
                images=sum(r.images for r in good),
                errors=len(inside) - len(good),
                images_per_s=sum(r.images for r in good) / (end - start) if end > start else math.nan,
                latency_ms=latency_stats([r.latency for r in good]),
                rss_mb=rss[-1] / 2**20 if rss else None,
            )
        )
    return windows


def build_report(
    records: Sequence[Record],
    *,
    label: str,
    mode: Mode,
    target: str,
    encoding: Encoding,
    batch: int,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    request_bytes_per_image: float | None = None,
    client_cpu: float = math.nan,
    server_cpu: float | None = None,
    window_s: float | None = None,
    rss_samples: Sequence[tuple[float, int]] = (),
    error_examples: dict[str, str] | None = None,
    info: dict[str, Any] | None = None,
    open_loop: OpenLoop | None = None,
) -> BenchReport:
    """Summarise the records that completed inside the measured window [0, duration_s] (closed loop),
    or (open loop) the arrivals scheduled inside it, wherever they ended: a request queued behind a
    slow server counts with its whole wait, which is what an open-loop run is for."""
    completed = [r for r in records if 0.0 <= r.end <= duration_s]
    if open_loop is None:
        measured, drops = completed, []
    else:
        arrived = [r for r in records if 0.0 <= r.start < duration_s]
        drops = [r for r in arrived if r.error in DROP_KINDS]
        measured = [r for r in arrived if r.error not in DROP_KINDS]
    ok = [r for r in measured if r.error is None]
    answered = [r for r in completed if r.error is None]
    images = sum(r.images for r in answered)
    return BenchReport(
        label=label,
        mode=mode,
        target=target,
        encoding=encoding,
        batch=batch,
        concurrency=concurrency,
        warmup_s=warmup_s,
        duration_s=duration_s,
        requests=len(ok),
        images=sum(r.images for r in ok),
        errors=dict(Counter(r.error for r in measured if r.error is not None)),
        images_per_s=images / duration_s,
        requests_per_s=len(answered) / duration_s,
        latency_ms=latency_stats([r.latency for r in ok]),
        request_bytes_per_image=request_bytes_per_image,
        client_cpu=client_cpu,
        cores=os.cpu_count() or 1,
        server_cpu=server_cpu,
        windows=_windows(measured, duration_s, window_s or max(1.0, duration_s / 10), rss_samples),
        rss_samples=list(rss_samples),
        rss_growth_pct=rss_growth_pct(rss_samples),
        error_examples=error_examples or {},
        info=info or {},
        rate=None if open_loop is None else open_loop.rate,
        arrivals=None if open_loop is None else open_loop.arrivals,
        max_in_flight=None if open_loop is None else open_loop.max_in_flight,
        offered=0 if open_loop is None else len(drops) + len(measured),
        drops=dict(Counter(r.error for r in drops if r.error is not None)),
    )


# --- latency against arrival rate ----------------------------------------------------------------


@dataclass(frozen=True)
class RatePoint:
    """One open-loop run of a sweep: the rate offered, what was achieved, and the latency it cost."""

    rate: float
    achieved_rate: float  # answered requests/s inside the window
    offered: int
    answered: int
    drops: int
    errors: int
    latency_ms: dict[str, float]

    @property
    def failed_fraction(self) -> float:
        return (self.drops + self.errors) / self.offered if self.offered else 1.0

    @classmethod
    def of(cls, report: BenchReport) -> RatePoint:
        if report.rate is None:
            raise ValueError(f"{report.label!r} is a closed-loop run: a rate curve needs `--rate` runs")
        return cls(
            rate=report.rate,
            achieved_rate=report.requests_per_s,
            offered=report.offered,
            answered=report.requests,
            drops=report.drop_count,
            errors=report.error_count,
            latency_ms=dict(report.latency_ms),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SloCapacity:
    """Where a latency-vs-rate curve leaves the objective: `max_rate_met`, the highest rate measured
    with it and every lower rate within it (None if the lowest already missed); `crossing_rate`, the
    rate where the percentile reaches the objective, interpolated linearly between the last point
    within it and the first beyond (None when no point is beyond, or the first beyond has no latency
    at all)."""

    slo_ms: float
    percentile: str
    max_rate_met: float | None
    crossing_rate: float | None
    first_rate_missed: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def meets_slo(point: RatePoint, slo_ms: float, percentile: str = SLO_PERCENTILE) -> bool:
    """Within the objective: the percentile of the answered requests is at most `slo_ms`, and no more
    requests were dropped or failed than the percentile leaves over (1 % for p99). Counted that way, a
    request that never came back is a latency beyond any objective, as it is for the caller."""
    allowed = 1.0 - float(percentile.removeprefix("p")) / 100.0
    latency = point.latency_ms.get(percentile, math.nan)
    return not math.isnan(latency) and latency <= slo_ms and point.failed_fraction <= allowed + 1e-12


def past_the_knee(report: BenchReport, slo_ms: float) -> bool:
    """Whether a sweep should stop after `report`: beyond *twice* the objective, not the objective
    itself, so that one unlucky tail just past it on a busy machine does not end the curve before its
    knee (`cassava bench --rate a,b,c` and `make bench` sweep with this rule)."""
    return not meets_slo(RatePoint.of(report), 2 * slo_ms)


def slo_capacity(
    points: Sequence[RatePoint], slo_ms: float = DEFAULT_SLO_MS, percentile: str = SLO_PERCENTILE
) -> SloCapacity:
    """The highest rate that stays within the objective, and where the curve crosses it (see
    `SloCapacity`). Points are taken in order of rate; the first miss ends the search, so a lucky
    point beyond it does not count."""
    if not points:
        raise ValueError("no rate points: run a sweep of at least one --rate first")
    met: RatePoint | None = None
    missed: RatePoint | None = None
    for point in sorted(points, key=lambda p: p.rate):
        if not meets_slo(point, slo_ms, percentile):
            missed = point
            break
        met = point
    crossing = None
    if met is not None and missed is not None:
        low, high = met.latency_ms[percentile], missed.latency_ms.get(percentile, math.nan)
        if not math.isnan(high) and high > low:
            fraction = min(1.0, (slo_ms - low) / (high - low))
            crossing = met.rate + fraction * (missed.rate - met.rate)
    return SloCapacity(
        slo_ms=slo_ms,
        percentile=percentile,
        max_rate_met=None if met is None else met.rate,
        crossing_rate=crossing,
        first_rate_missed=None if missed is None else missed.rate,
    )
