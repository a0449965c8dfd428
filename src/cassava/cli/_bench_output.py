"""What `cassava bench` prints: its progress bar, a report's tables and a sweep's latency-vs-rate table."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cassava.cli._common import console

if TYPE_CHECKING:
    from collections.abc import Sequence

    from cassava.bench import BenchReport, RatePoint, SloCapacity, Tick


class ProgressBar:
    """A rich progress bar over the run's seconds, fed by the bench's tick callback."""

    def __init__(self, total_s: float) -> None:
        self.total_s = total_s
        self._bar = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[requests]} requests, {task.fields[errors]} errors"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._task = self._bar.add_task("benchmarking", total=total_s, requests=0, errors=0)

    def __enter__(self) -> Tick:
        self._bar.start()

        def tick(elapsed: float, requests: int, errors: int) -> None:
            self._bar.update(
                self._task, completed=min(elapsed, self.total_s), requests=requests, errors=errors
            )

        return tick

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()


def ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.1f}"


def show(report: BenchReport, *, windows: bool = False) -> None:
    """The report as rich tables: the summary, errors by kind, and (soak) the time windows."""
    table = Table(title=f"cassava bench: {report.label}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows: list[tuple[str, str]] = [("target", report.target)]
    if report.rate is not None:
        rows += [
            ("offered", f"{report.rate:g} requests/s, {report.arrivals}: {report.offered:,} arrivals"),
            ("achieved requests/s", f"{report.requests_per_s:,.2f}"),
            ("images/s", f"{report.images_per_s:,.1f}"),
            (
                "answered / dropped / errors",
                f"{report.requests:,} / {report.drop_count:,} / {report.error_count:,}",
            ),
        ]
        if report.drops:
            rows.append(("drops by reason", ", ".join(f"{k} {n}" for k, n in report.drops.items())))
    else:
        rows += [
            ("images/s", f"{report.images_per_s:,.1f}"),
            ("requests/s", f"{report.requests_per_s:,.2f}"),
            ("requests ok / errors", f"{report.requests:,} / {report.error_count:,}"),
        ]
    rows += [
        (
            "latency p50 / p90 / p99",
            " / ".join(ms(report.latency_ms[q]) for q in ("p50", "p90", "p99"))
            + (" ms from the scheduled send" if report.rate is not None else " ms"),
        ),
    ]
    if report.request_bytes_per_image is not None:
        rows.append(("request bytes / image", f"{report.request_bytes_per_image:,.0f}"))
    rows.append(("client CPU", f"{report.client_cpu * 100:.0f}% of {report.cores} cores"))
    if report.server_cpu is not None:
        rows.append(("server CPU", f"{report.server_cpu * 100:.0f}% of {report.cores} cores"))
    if report.rss_samples:
        rows.append(("server RSS (end)", f"{report.rss_samples[-1][1] / 2**20:,.0f} MiB"))
    if report.rss_growth_pct is not None:
        rows.append(("RSS growth after warm-up", f"{report.rss_growth_pct:+.1f}%"))
    for key, name in (("cold_start_s", "cold start (start to ready)"), ("load_s", "model load")):
        if key in report.info:
            rows.append((name, f"{report.info[key]:.1f} s"))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    if note := report.info.get("note"):
        console.print(f"[yellow]{note}[/]")
    if report.mode != "in-process" and report.client_cpu * report.cores >= 0.9:
        # One asyncio loop cannot use more than one core: at ~100% of a core the client is the limit.
        console.print("[yellow]the client kept a whole core busy: it may be the bottleneck[/]")
    if report.errors:
        errors = Table("error", "count", "first message", title="errors by kind", title_justify="left")
        for kind, count in sorted(report.errors.items(), key=lambda kv: -kv[1]):
            errors.add_row(kind, str(count), report.error_examples.get(kind, ""))
        console.print(errors)
    if windows:
        per = Table(
            "window (s)", "requests", "errors", "images/s", "p50 ms", "p90 ms", "p99 ms", "RSS MiB",
            title="per time window", title_justify="left",
        )  # fmt: skip
        for w in report.windows:
            per.add_row(
                f"{w.start_s:,.0f}-{w.end_s:,.0f}",
                str(w.requests),
                str(w.errors),
                f"{w.images_per_s:,.1f}",
                *(ms(w.latency_ms[q]) for q in ("p50", "p90", "p99")),
                "-" if w.rss_mb is None else f"{w.rss_mb:,.0f}",
            )
        console.print(per)


def show_curve(points: Sequence[RatePoint], capacity: SloCapacity) -> None:
    """A sweep as a table: each rate's latency, drops and errors, then the objective's verdict."""
    table = Table(
        "offered /s", "achieved /s", "p50 ms", "p90 ms", "p99 ms", "dropped", "errors", "within",
        title=f"latency against rate (objective: {capacity.percentile} <= {capacity.slo_ms:g} ms)",
        title_justify="left",
    )  # fmt: skip
    from cassava import bench as b

    for p in points:
        table.add_row(
            f"{p.rate:g}",
            f"{p.achieved_rate:,.2f}",
            *(ms(p.latency_ms[q]) for q in ("p50", "p90", "p99")),
            f"{p.drops:,}",
            f"{p.errors:,}",
            "yes" if b.meets_slo(p, capacity.slo_ms, capacity.percentile) else "[red]no[/]",
        )
    console.print(table)
    if capacity.max_rate_met is None:
        console.print(
            f"[red]even the lowest rate, {min(p.rate for p in points):g}/s, misses the objective[/]"
        )
        return
    line = f"highest rate within the objective: {capacity.max_rate_met:g} requests/s"
    if capacity.crossing_rate is not None:
        line += f"; {capacity.percentile} crosses {capacity.slo_ms:g} ms at ~{capacity.crossing_rate:,.1f}/s"
    elif capacity.first_rate_missed is None:
        line += " (every rate swept was within it: sweep higher to find the limit)"
    console.print(line)
