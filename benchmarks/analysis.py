"""What a run says: the targets met or missed, the configuration this run would pick, and the rate
a replica keeps within the latency objective."""

from __future__ import annotations

import math
import statistics
from typing import Any

from benchmarks.plan import SEED_BATCH, SLO_MS, TARGETS, default_workers, paired_name, paired_reference
from cassava.bench import RatePoint, slo_capacity
from cassava.server.config import DEFAULT_PROFILE


def _bytes_runs(
    results: dict[str, Any], backend: str | None = None
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (server, run)
        for server in results["servers"]
        for run in server["runs"]
        if run["encoding"] == "bytes" and (backend is None or server["config"]["backend"] == backend)
    ]


def _seed_run(results: dict[str, Any]) -> dict[str, Any] | None:
    """The seed's way on its own backend: end to end (the client preprocesses and encodes every request,
    as test.py does) when that was run, else with requests built beforehand."""
    seeds = [
        run
        for server in results["servers"]
        if server["config"]["backend"] == "tensorflow"
        for run in server["runs"]
        if run["encoding"] == "tensor"
    ]
    seeds.sort(key=lambda run: not run.get("info", {}).get("encode_each", False))
    return seeds[0] if seeds else None


def _in_process(results: dict[str, Any], backend: str, batch: int) -> dict[str, Any] | None:
    found = [r for r in results["in_process"] if r["info"]["backend"] == backend and r["batch"] == batch]
    return found[0] if found else None


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(name: str, value: float | None, target: float, higher: bool, unit: str, detail: str) -> None:
        met = None if value is None or math.isnan(value) else (value >= target if higher else value <= target)
        out.append(
            {
                "name": name,
                "value": value,
                "target": target,
                "higher_is_better": higher,
                "unit": unit,
                "met": met,
                "detail": detail,
            }
        )

    best = results["best_backend"]
    # The backends are compared on the model alone (as "81 images/s at batch 16" describes TensorFlow);
    # older result files without those runs fall back to the whole pipeline.
    model_only = {(r["backend"], r["batch"]): r for r in results.get("model_only", [])}
    tf16, best16 = model_only.get(("tensorflow", SEED_BATCH)), model_only.get((best, SEED_BATCH))
    what = "model only"
    if not (tf16 and best16):
        tf16, best16 = _in_process(results, "tensorflow", SEED_BATCH), _in_process(results, best, SEED_BATCH)
        what = "decode + preprocess + model"
    if tf16 and best16 and tf16["images_per_s"] > 0:
        add(
            "best backend in-process, batch 16, vs TensorFlow",
            best16["images_per_s"] / tf16["images_per_s"],
            TARGETS["speedup"],
            True,
            "x",
            f"{best}: {best16['images_per_s']:.1f} vs tensorflow {tf16['images_per_s']:.1f} "
            f"images/s ({what})",
        )
    served = _bytes_runs(results, best)
    limit = max((r["images_per_s"] for r in results["in_process"] if r["info"]["backend"] == best), default=0)
    if served and limit:
        _, run = max(served, key=lambda sr: sr[1]["images_per_s"])
        add(
            "served image bytes at saturation vs the in-process limit (same backend)",
            run["images_per_s"] / limit,
            TARGETS["served_vs_limit"],
            True,
            "x",
            f"{run['label']}: {run['images_per_s']:.1f} vs in-process {limit:.1f} images/s",
        )
    seed = _seed_run(results)
    all_served = _bytes_runs(results)
    if seed and all_served and seed["images_per_s"] > 0:
        _, run = max(all_served, key=lambda sr: sr[1]["images_per_s"])
        add(
            "served image bytes vs the seed's request, images/s",
            run["images_per_s"] / seed["images_per_s"],
            TARGETS["served_vs_seed"],
            True,
            "x",
            f"{run['label']}: {run['images_per_s']:.1f} vs the seed's {seed['images_per_s']:.2f} images/s "
            f"({seed['label'].split(' | ')[-1]})",
        )
    rest_bytes = [run for _, run in all_served if run["mode"] == "rest" and run["batch"] == 1]
    if seed and rest_bytes and seed["request_bytes_per_image"]:
        per_image = rest_bytes[0]["request_bytes_per_image"]
        add(
            "request bytes per image vs the seed's request (REST)",
            per_image / seed["request_bytes_per_image"],
            TARGETS["bytes_vs_seed"],
            False,
            "x",
            f"{per_image:,.0f} vs {seed['request_bytes_per_image']:,.0f} bytes per image",
        )
    out += paired_targets(results)
    onnx = [s for s in results["servers"] if s["config"]["backend"] == "onnx" and s["role"] == "default"]
    if onnx:
        add(
            "ONNX-only server cold start (process start to ready)",
            onnx[0]["cold_start_s"],
            TARGETS["onnx_cold_start_s"],
            False,
            "s",
            onnx[0]["label"],
        )
    return out


def paired_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The default-settings targets from the paired rounds (`benchmarks.plan.PAIRED_ROUNDS`): each the
    median over rounds of the round's own difference or ratio, a served run against the in-process runs
    around it; the detail lists every round's."""
    server = next((s for s in results["servers"] if s.get("paired")), None)
    if server is None:
        return []
    rounds = server["paired"]["rounds"]
    ref = server["paired"]["reference_batch"]
    out: list[dict[str, Any]] = []

    def add(
        name: str, values: list[float], control: list[float] | None, target: float, higher: bool, unit: str
    ) -> None:
        value = statistics.median(values)
        shown = ", ".join(f"{v:.2f}" for v in values)
        detail = f"{server['label']}; rounds: {shown}"
        entry: dict[str, Any] = {
            "name": f"{name} (median of {len(values)} paired rounds)",
            "value": value,
            "target": target,
            "higher_is_better": higher,
            "unit": unit,
            "met": value >= target if higher else value <= target,
        }
        if control:
            # Not a target: the same figure for stock MLServer around the same pipeline, same rounds.
            entry["control"] = {"value": statistics.median(control), "rounds": control}
            detail += f"; the control: {statistics.median(control):.2f} {unit}"
        out.append(entry | {"detail": detail})

    def reference(r: dict[str, Any], served: str, key: str, field: str) -> float:
        """The in-process figure `served` is compared with: the mean of the runs around it."""
        runs = r[key]
        if isinstance(runs, dict):  # a round recorded with one in-process run before all served runs
            return float(runs[field])
        before, after = r[served]["between"]
        return float(runs[before][field] + runs[after][field]) / 2

    def figure(r: dict[str, Any], served: str, inproc: str, latency: bool) -> float:
        """A served run's difference of p50s (`latency`) or ratio of images/s to its reference."""
        if latency:
            return float(r[served]["p50_ms"]) - reference(r, served, inproc, "p50_ms")
        return float(r[served]["images_per_s"]) / reference(r, served, inproc, "images_per_s")

    # (what, the served run, the target's key): c1 is a difference of p50s, the others ratios of images/s.
    measures = (
        ("one image at concurrency 1, served p50 minus in-process p50", 1, 1, "c1_overhead_ms"),
        (f"8 clients of one image vs in-process batch {ref}, images/s", 1, 8, "c8_vs_batch16"),
        (f"{ref} images per request vs in-process batch {ref}, images/s", ref, 1, "b16_vs_batch16"),
    )
    for what, batch, concurrency, key in measures:
        latency = key == "c1_overhead_ms"
        inproc = f"in-process b{paired_reference(batch, concurrency, ref)}"
        for transport in ("rest", "grpc"):
            served = paired_name(transport, batch, concurrency)
            control = paired_name(transport, batch, concurrency, control=True)
            add(
                f"default settings, {transport}: {what}",
                [figure(r, served, inproc, latency) for r in rounds],
                [figure(r, control, inproc, latency) for r in rounds if control in r],
                TARGETS[key],
                not latency,
                "ms" if latency else "x",
            )
    return out


def defaults(results: dict[str, Any]) -> dict[str, Any]:
    """This run's pick among the grid's servers: the most images/s at saturation among those whose
    single-image latency (best c1 p50) is within 10% (+2 ms) of the best, so a lone client is not made
    to wait for throughput it does not need."""
    best = results["best_backend"]
    grid = [s for s in results["servers"] if s["config"]["backend"] == best]
    scored = []
    for server in grid:
        bytes_runs = [r for r in server["runs"] if r["encoding"] == "bytes" and r["batch"] == 1]
        if not bytes_runs:
            continue
        saturation = max(r["images_per_s"] for r in bytes_runs)
        single = min((r["latency_ms"]["p50"] for r in bytes_runs if r["concurrency"] == 1), default=math.nan)
        scored.append((server, saturation, single))
    if not scored:
        return {}
    fastest_single = min(s for _, _, s in scored)
    eligible = [x for x in scored if x[2] <= fastest_single * 1.1 + 2] or scored
    pick, saturation, single = max(eligible, key=lambda x: x[1])
    return {
        "pick": pick["label"],
        "pick_config": pick["config"],
        "saturation_images_per_s": saturation,
        "single_p50_ms": single,
        "current": {"profile": DEFAULT_PROFILE, "parallel_workers": default_workers()},
    }


def rate_curve(results: dict[str, Any]) -> dict[str, Any]:
    """The open-loop sweep of the run (on the best backend's default server) with its capacity within
    the objective (`SLO_MS` at p99): {} when no sweep ran."""
    swept = [s for s in results["servers"] if s.get("sweep")]
    if not swept:
        return {}
    server = swept[0]
    points = [RatePoint(**p) for p in server["sweep"]["points"]]
    capacity = slo_capacity(points, SLO_MS)
    return {"server": server["label"], **server["sweep"], "capacity": capacity.to_dict()}
