"""The benchmark matrix (`benchmarks/`, outside the wheel): its plan, what it concludes from results,
the page it renders, and its command line. Nothing here measures: the results are made up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import benchmarks
import pytest
from benchmarks.__main__ import MODEL_ENV, main
from benchmarks.analysis import defaults, rate_curve, targets
from benchmarks.control import CONTROL_LABEL
from benchmarks.plan import SEED_BATCH, SLO_MS, SWEEP_FRACTIONS, default_workers, server_plan
from benchmarks.report import RATE_CHART, render

from cassava.bench import BenchReport, RatePoint


def fake_results() -> dict[str, Any]:
    def run(label: str, mode: str, ips: float, p50: float, **kw: Any) -> dict[str, Any]:
        stats = {"p50": p50, "p90": p50 * 1.2, "p99": p50 * 1.5, "mean": p50, "max": p50 * 2}
        base = {"label": label, "mode": mode, "encoding": "bytes", "batch": 1, "concurrency": 1}
        return (
            base
            | {
                "images_per_s": ips,
                "requests_per_s": ips,
                "latency_ms": stats,
                "errors": {},
                "request_bytes_per_image": 100_000.0,
                "client_cpu": 0.1,
                "server_cpu": 0.8,
                "info": {},
            }
            | kw
        )

    def server(
        backend: str,
        role: str,
        runs: list[dict[str, Any]],
        sweep: dict[str, Any] | None = None,
        paired: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        config = {"backend": backend, "workers": 0, "profile": "latency"}
        return {
            "label": backend,
            "role": role,
            "config": config,
            "cold_start_s": 4.0,
            "idle_rss_mb": 300.0,
            "rss_mb": 500.0,
            "runs": runs,
            "sweep": sweep,
            "paired": paired,
        }

    def brief(ips: float, p50: float) -> dict[str, Any]:
        return {"images_per_s": ips, "p50_ms": p50, "p99_ms": p50 * 2, "errors": 0}

    def round_(f: float, d: float) -> dict[str, Any]:
        """One round, each served run between two in-process runs; its reference is their mean. The
        control server's runs (`control ...`) interleave with cassava's: 0.5 ms slower at c1 and 2%
        fewer images/s elsewhere."""
        served = {
            "rest b1 c1": brief(100.0, 6.0 * f + d) | {"between": [0, 1]},
            "control rest b1 c1": brief(100.0, 6.0 * f + d + 0.5) | {"between": [1, 2]},
            "grpc b1 c1": brief(100.0, 6.0 * f + d - 0.5) | {"between": [2, 3]},
            "control grpc b1 c1": brief(100.0, 6.0 * f + d) | {"between": [3, 4]},
            "rest b1 c8": brief(228.0 / f, 40.0) | {"between": [0, 1]},
            "control rest b1 c8": brief(228.0 / f * 0.98, 40.0) | {"between": [1, 2]},
            "grpc b1 c8": brief(216.0 / f, 40.0) | {"between": [2, 3]},
            "control grpc b1 c8": brief(216.0 / f * 0.98, 40.0) | {"between": [3, 4]},
            "rest b16 c1": brief(232.0 / f, 60.0) | {"between": [4, 5]},
            "control rest b16 c1": brief(232.0 / f * 0.98, 60.0) | {"between": [5, 6]},
            "grpc b16 c1": brief(240.0 / f, 60.0) | {"between": [6, 7]},
            "control grpc b16 c1": brief(240.0 / f * 0.98, 60.0) | {"between": [7, 8]},
        }
        return {
            # The reference drifts within the round too: each adjacent pair averages to 6.0 ms and
            # 240 images/s (times f), while any one run alone is off by 0.4 ms or 10%.
            "in-process b1": [brief(150.0, 6.0 * f + e) for e in (-0.4, 0.4, -0.4, 0.4, -0.4)],
            "in-process b16": [brief(240.0 / f * g, 60.0) for g in (0.9, 1.1) * 4 + (0.9,)],
            **served,
        }

    # Three rounds on a drifting machine: the in-process reference moves, and each round's own ratio is
    # what counts (round 2 is 25% slower everywhere). Round 3 has the format of results recorded before
    # the bracketed rounds (one in-process run of each batch before all served runs): it still reads.
    old_style = {
        "in-process b1": brief(150.0, 6.0),
        "in-process b16": brief(240.0, 60.0),
        "rest b1 c1": brief(100.0, 6.0 + 2.5),
        "grpc b1 c1": brief(100.0, 6.0 + 2.0),
        "rest b1 c8": brief(228.0, 40.0),
        "grpc b1 c8": brief(216.0, 40.0),
        "rest b16 c1": brief(232.0, 60.0),
        "grpc b16 c1": brief(240.0, 60.0),
    }
    paired = {
        "window_s": [0.5, 2.0],
        "reference_batch": 16,
        "rounds": [round_(1.0, 1.5), round_(1.25, 1.8), old_style],
        "conditions": [{"waited_s": 1.0, "steal": 0.01}, {"waited_s": 30.0, "steal": 0.15}, {"steal": None}],
        "control": {"label": CONTROL_LABEL, "cold_start_s": 1.5},
    }

    def point(rate: float, p99: float) -> dict[str, Any]:
        stats = {"p50": p99 / 4, "p90": p99 / 2, "p99": p99, "mean": p99 / 4, "max": p99}
        return RatePoint(rate, rate, int(rate * 8), int(rate * 8), 0, 0, stats).to_dict()

    sweep = {
        "transport": "rest",
        "batch": 1,
        "saturation_requests_per_s": 140.0,
        "fractions": [0.25, 0.5, 1.0],
        "timeout_s": 10.0,
        "max_in_flight": 256,
        "points": [point(35.0, 20.0), point(70.0, 150.0), point(140.0, 1150.0)],
    }

    return {
        "generated": "now",
        "command": "make bench",
        "quick": False,
        "elapsed_s": 600.0,
        "timing": {"warmup_s": 2.0, "duration_s": 8.0, "seed_duration_s": 20.0},
        "machine": {
            "cpu": "test CPU",
            "cores": 2,
            "memory_gib": 8,
            "os": "Linux",
            "load_average_at_start": [0.1, 0.1, 0.1],
        },
        "versions": {"python": "3.11"},
        "model": {"source": "m"},
        "backends": ["tensorflow", "onnx"],
        "images": {"count": 32, "size": "640x480", "quality": 90, "mean_bytes": 60_000.0},
        "notes": [],
        "best_backend": "onnx",
        "decode": {
            "sizes": {
                "800x600": [
                    {"method": "decode: x", "ms": 3.0, "max_abs_diff": None},
                    {"method": "decode + preprocess: y", "ms": 4.0, "max_abs_diff": 1e-7},
                ]
            },
            "fast_decode_agreement": {
                "800x600": {"images": 8, "argmax_agreement": 0.875, "max_probability_diff": 0.1}
            },
            "untrained_model": True,
        },
        "in_process": [
            run(
                "ip tf 16", "in-process", 80.0, 200.0, batch=16, info={"backend": "tensorflow", "load_s": 5.0}
            ),
            run("ip onnx 16", "in-process", 240.0, 60.0, batch=16, info={"backend": "onnx", "load_s": 1.0}),
            run("ip onnx 1", "in-process", 150.0, 6.0, batch=1, info={"backend": "onnx", "load_s": 1.0}),
        ],
        "servers": [
            server(
                "onnx",
                "default",
                [
                    run("onnx | rest bytes b1 c1", "rest", 140.0, 9.0),
                    run("onnx | rest bytes b1 c8", "rest", 200.0, 40.0, concurrency=8),
                ],
                sweep,
                paired,
            ),
            server(
                "tensorflow",
                "default",
                [
                    run(
                        "tf | rest seed",
                        "rest",
                        8.0,
                        2000.0,
                        encoding="tensor",
                        batch=16,
                        request_bytes_per_image=3_050_000.0,
                    )
                ],
            ),
        ],
    }


def finished(results: dict[str, Any]) -> dict[str, Any]:
    """`results` with what `run_matrix` adds at the end."""
    results["targets"] = targets(results)
    results["defaults"] = defaults(results)
    results["rate_curve"] = rate_curve(results)
    return results


def test_matrix_targets_and_markdown_come_from_the_results() -> None:
    results = fake_results()
    by_name = {t["name"]: t for t in targets(results)}
    assert by_name["best backend in-process, batch 16, vs TensorFlow"]["value"] == pytest.approx(3.0)
    assert by_name["served image bytes at saturation vs the in-process limit (same backend)"]["value"] == (
        pytest.approx(200 / 240)
    )
    assert by_name["served image bytes vs the seed's request, images/s"]["value"] == pytest.approx(25.0)
    assert by_name["ONNX-only server cold start (process start to ready)"]["met"] is True
    paired = {t["name"].split(" (median")[0]: t for t in targets(results) if "paired rounds" in t["name"]}
    c1 = "default settings, {}: one image at concurrency 1, served p50 minus in-process p50"
    # The median of each round's own difference: 1.5, 1.8 and 2.5 ms (REST), 0.5 ms less for gRPC.
    assert paired[c1.format("rest")]["value"] == pytest.approx(1.8)
    assert paired[c1.format("rest")]["met"] is True
    assert paired[c1.format("grpc")]["value"] == pytest.approx(1.3)
    c8 = "default settings, {}: 8 clients of one image vs in-process batch 16, images/s"
    assert paired[c8.format("rest")]["value"] == pytest.approx(0.95)  # the same in every round
    assert paired[c8.format("grpc")]["value"] == pytest.approx(0.9)
    assert paired[c8.format("grpc")]["met"] is True
    b16 = "default settings, {}: 16 images per request vs in-process batch 16, images/s"
    assert paired[b16.format("rest")]["value"] == pytest.approx(232 / 240)
    assert paired[b16.format("rest")]["met"] is True
    assert "1.50, 1.80, 2.50" in paired[c1.format("rest")]["detail"]
    # The control server's figures ride along and decide nothing.
    assert paired[c1.format("rest")]["control"]["rounds"] == pytest.approx([2.0, 2.3])
    assert paired[c8.format("grpc")]["control"]["value"] == pytest.approx(0.9 * 0.98)
    assert "the control: 2.15 ms" in paired[c1.format("rest")]["detail"]
    results["servers"][0]["paired"]["rounds"][0]["rest b16 c1"]["images_per_s"] = 100.0
    results["servers"][0]["paired"]["rounds"][1]["rest b16 c1"]["images_per_s"] = 100.0
    missed = {t["name"].split(" (median")[0]: t for t in targets(results)}[b16.format("rest")]
    assert missed["met"] is False
    page = render(finished(results), "img/performance.png")
    assert "GENERATED" in page
    assert "make bench" in page
    assert "test CPU" in page
    assert "![" in page
    assert "87.5%" in page  # fast_decode agreement
    assert page.count("| yes |") >= 4
    assert "### Default settings, in paired rounds" in page
    # Round 2's own figures; each served cell is cassava's, then the control's.
    assert (
        "| 2 | 15.0% | 7.1-7.9 | 172.8-211.2 | 9.3 ms / 9.8 ms | 8.8 ms / 9.3 ms | 182.4/s / 178.8/s |"
        in page
    )
    # The control's medians (rounds 1 and 2 have its runs), beside cassava's, and the difference.
    control_row = (
        "| rest: one image at concurrency 1, served p50 minus in-process p50 | <= 2.000 ms | 1.80 ms"
    )
    assert f"{control_row} | 2.15 ms | -0.35 ms |" in page
    b16_row = "| grpc: 16 images per request vs in-process batch 16, images/s | >= 0.950 x"
    assert f"{b16_row} | 1.00 x | 0.98 x | 1.02x |" in page
    assert "runtime benchmarks.control_runtime.PipelineRuntime" in page
    assert "| 3 | - | 6.0 |" in page
    assert "Every served run sits between two runs of its reference" in page
    earlier = finished(fake_results())
    paired_runs = earlier["servers"][0]["paired"]
    paired_runs["rounds"] = [paired_runs["rounds"][2]] * 3
    del paired_runs["control"]
    earlier["targets"] = targets(earlier)
    earlier_page = render(earlier, "img/performance.png")
    assert "then the served runs back to back" in earlier_page
    assert "cassava / control" not in earlier_page  # recorded before the control existed
    assert "## Profiles (onnx)" in page
    assert "**latency** (default)" in page
    assert "| 300 | 500 |" in page  # idle and warmed-up RSS


def test_backends_are_compared_on_the_model_alone_when_measured() -> None:
    results = fake_results()
    results["model_only"] = [
        {"backend": "tensorflow", "batch": 16, "calls": 20, "images_per_s": 60.0, "p50_ms": 266.0},
        {"backend": "onnx", "batch": 16, "calls": 50, "images_per_s": 150.0, "p50_ms": 106.0},
    ]
    speedup = {t["name"]: t for t in targets(results)}["best backend in-process, batch 16, vs TensorFlow"]
    assert speedup["value"] == pytest.approx(2.5)  # not the 3.0 of the whole-pipeline figures
    assert "(model only)" in speedup["detail"]
    results["targets"] = targets(results)
    results["defaults"] = {}
    assert "| onnx | 16 | 150" in render(results, "img/performance.png")


def test_the_page_ends_with_the_hand_written_notes_verbatim() -> None:
    notes = (Path(benchmarks.__file__).parent / "performance_notes.md").read_text()
    assert notes.startswith("## ")
    page = render(finished(fake_results()), None)
    assert page.endswith("\n\n" + notes.strip() + "\n")
    assert page.count(notes.splitlines()[0]) == 1


def test_every_profile_runs_on_both_backends_and_the_default_carries_the_targets() -> None:
    from cassava.server.config import DEFAULT_PROFILE, PROFILES

    plans = server_plan("onnx", ["tensorflow", "onnx"])
    onnx = [p for p in plans if p.config.backend == "onnx"]
    tensorflow = [p for p in plans if p.config.backend == "tensorflow"]
    for backend in (onnx, tensorflow):
        assert {p.config.profile for p in backend if p.config.profile} == set(PROFILES)
        (default,) = [p for p in backend if p.role == "default"]
        assert default.config.profile == DEFAULT_PROFILE
        assert default.config.workers == default_workers() == PROFILES[DEFAULT_PROFILE].parallel_workers
        assert default.config.adaptive_batch_size == 0  # the default profile does not batch
        seed = [r for r in default.runs if r.encoding == "tensor"]
        assert seed
        assert all(r.batch == SEED_BATCH for r in seed)
    (paired,) = [p for p in plans if p.paired]
    assert paired.config.backend == "onnx"
    assert paired.role == "default"
    # The settings the profiles were chosen against: a worker process, with and without batching.
    assert {(p.config.workers, p.config.adaptive_batch_size) for p in onnx if not p.config.profile} >= {
        (1, 0),
        (1, 8),
    }
    assert any(r.encode_each for p in tensorflow for r in p.runs)
    assert all(p.config.backend == "tensorflow" for p in server_plan("tensorflow", ["tensorflow"]))
    quick = server_plan("onnx", ["tensorflow", "onnx"], quick=True)
    assert len(quick) < len(plans)
    assert {p.config.backend for p in quick} == {"onnx", "tensorflow"}
    assert [p for p in quick if p.paired]


def test_paired_rounds_alternate_the_reference_and_the_served_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """No server and no model: the runs are recorders, so this checks only the order of a round."""
    from benchmarks import measure
    from benchmarks.plan import PAIRED_RUNS

    calls: list[str] = []

    def fake_in_process(images: Any, *, batch: int, **_: Any) -> BenchReport:
        calls.append(f"in-process b{batch}")
        return fake_report(100.0, 10.0)

    def fake_load(spec: Any, images: Any) -> BenchReport:
        calls.append(f"{spec.target.split(':')[0]} b{spec.batch} c{spec.concurrency}")
        return fake_report(90.0, 12.0)

    class Classifier:
        @staticmethod
        def load(*_: Any, **__: Any) -> None:
            return None

    class Server:
        def target(self, transport: str) -> str:
            return "grpc://x" if transport == "grpc" else "http://x"

    import cassava.pipeline

    monkeypatch.setattr(cassava.pipeline, "Classifier", Classifier)
    monkeypatch.setattr(measure, "run_in_process", fake_in_process)
    monkeypatch.setattr(measure, "run_load", fake_load)
    monkeypatch.setattr(measure, "wait_for_quiet", lambda: 1.5)
    paired = measure.paired_targets(Server(), "onnx", Path("m"), [b"x"], rounds=2)  # type: ignore[arg-type]
    # Each served run between two in-process runs of its reference; neighbours share the one between.
    assert PAIRED_RUNS[:2] == (("rest", 1, 1), ("grpc", 1, 1))
    assert SEED_BATCH == 16
    ref1, ref16 = "in-process b1", "in-process b16"
    one_round = [ref1, "http b1 c1", ref1, "grpc b1 c1", ref1]
    one_round += [ref16, "http b1 c8", ref16, "grpc b1 c8", ref16, "http b16 c1", ref16, "grpc b16 c1", ref16]
    assert calls == one_round * 2
    assert len(paired["rounds"]) == 2
    second = paired["rounds"][1]
    assert second["rest b1 c1"]["p50_ms"] == pytest.approx(12.0)
    assert [run["p50_ms"] for run in second[ref16]] == pytest.approx([10.0] * 5)
    assert [second[name]["between"] for name in ("rest b1 c1", "grpc b1 c1")] == [[0, 1], [1, 2]]
    shared = [second[f"{t} b{b} c{c}"]["between"] for t, b, c in PAIRED_RUNS[2:]]
    assert shared == [[0, 1], [1, 2], [2, 3], [3, 4]]
    assert [c["waited_s"] for c in paired["conditions"]] == [1.5, 1.5]


def test_with_the_control_each_run_is_made_on_both_servers_and_their_order_alternates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same recorders as above, with a control server at other addresses."""
    from benchmarks import measure
    from benchmarks.plan import PAIRED_RUNS, paired_schedule

    calls: list[str] = []
    monkeypatch.setattr(
        measure,
        "run_in_process",
        lambda images, *, batch, **_: calls.append(f"in-process b{batch}") or fake_report(100.0, 10.0),
    )

    def fake_load(spec: Any, images: Any) -> BenchReport:
        calls.append(f"{spec.target} b{spec.batch} c{spec.concurrency}")
        return fake_report(90.0, 13.0 if "control" in spec.target else 12.0)

    class Server:
        def __init__(self, host: str) -> None:
            self.host = host
            self.cold_start_s = 1.25

        def target(self, transport: str) -> str:
            return f"grpc://{self.host}" if transport == "grpc" else f"http://{self.host}"

    import cassava.pipeline

    monkeypatch.setattr(cassava.pipeline.Classifier, "load", staticmethod(lambda *_, **__: None))
    monkeypatch.setattr(measure, "run_load", fake_load)
    monkeypatch.setattr(measure, "wait_for_quiet", lambda: 0.0)
    paired = measure.paired_targets(
        Server("cassava"),  # type: ignore[arg-type]
        "onnx",
        Path("m"),
        [b"x"],
        rounds=2,
        control=Server("control"),  # type: ignore[arg-type]
    )
    ref1 = "in-process b1"
    first = [ref1, "http://cassava b1 c1", ref1, "http://control b1 c1", ref1]
    first += ["grpc://cassava b1 c1", ref1, "grpc://control b1 c1", ref1]
    assert calls[: len(first)] == first
    second = calls[len(calls) // 2 :]
    assert second[:5] == [ref1, "http://control b1 c1", ref1, "http://cassava b1 c1", ref1]
    assert len(calls) == 2 * (2 * len(PAIRED_RUNS) + 14)  # 12 served runs, 5 + 9 in-process ones
    round2 = paired["rounds"][1]
    assert round2["control rest b1 c8"]["p50_ms"] == pytest.approx(13.0)
    assert round2["rest b1 c8"]["p50_ms"] == pytest.approx(12.0)
    assert [round2[n]["between"] for n in ("control rest b1 c1", "rest b1 c1")] == [[0, 1], [1, 2]]
    assert paired["control"]["cold_start_s"] == 1.25
    # Without the control, a round is PAIRED_RUNS exactly.
    assert [(r.transport, r.batch, r.concurrency) for r in paired_schedule(1, False)] == list(PAIRED_RUNS)
    assert not any(r.control for r in paired_schedule(0, False))


def fake_report(ips: float, p50_ms: float) -> BenchReport:
    from cassava.bench import Record, build_report

    n = int(ips)
    records = [Record(i / n, p50_ms / 1000, 1, None) for i in range(n)]
    return build_report(
        records,
        label="fake",
        mode="rest",
        target="x",
        encoding="bytes",
        batch=1,
        concurrency=1,
        warmup_s=0.0,
        duration_s=1.0,
    )


def test_the_model_comes_from_the_command_line_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(MODEL_ENV, raising=False)
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert MODEL_ENV in capsys.readouterr().err
    monkeypatch.setenv(MODEL_ENV, str(tmp_path))
    with pytest.raises(SystemExit):
        main([])
    assert f"no saved_model.pb in {tmp_path}" in capsys.readouterr().err


def test_render_rewrites_the_page_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = finished(fake_results())
    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    Path("docs/performance.json").write_text(json.dumps(results))
    assert main(["--render", "docs/performance.json"]) == 0
    assert (tmp_path / "docs" / "performance.md").read_text() == render(results, "img/performance.png")
    assert (tmp_path / "docs" / "img" / "performance.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "docs" / RATE_CHART).read_bytes().startswith(b"\x89PNG")


def test_the_rate_curve_and_its_capacity_within_the_objective_are_on_the_page() -> None:
    results = finished(fake_results())
    curve = results["rate_curve"]
    assert curve["server"] == "onnx"
    assert curve["capacity"]["slo_ms"] == SLO_MS
    assert curve["capacity"]["max_rate_met"] == 70.0
    # p99 150 -> 1150 ms between 70 and 140 requests/s: 250 ms is a tenth of the way.
    assert curve["capacity"]["crossing_rate"] == pytest.approx(77.0)
    page = render(results, "img/performance.png")
    assert "## Latency against arrival rate (open loop)" in page
    assert "| 70.00 | 70.00 | 37.5 | 75.0 | 150.0 | 560 | 0 | 0 |" in page
    assert "**70.00 requests/s**" in page
    assert "about 77.0 requests/s" in page
    assert f"]({RATE_CHART})" in page
    assert RATE_CHART not in render(results, None)  # no matplotlib: no chart to link
    del results["rate_curve"]  # a results file from before the sweep existed
    assert "arrival rate" not in render(results, "img/performance.png")


def test_the_sweep_runs_once_on_the_best_backends_default_server() -> None:
    plans = server_plan("onnx", ["tensorflow", "onnx"])
    (swept,) = [p for p in plans if p.sweep]
    assert swept.config.backend == "onnx"
    assert swept.role == "default"
    assert [p for p in server_plan("onnx", ["tensorflow", "onnx"], quick=True) if p.sweep]


def test_the_sweep_offers_fractions_of_the_servers_closed_loop_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    """No server: `run_sweep` is replaced by a recorder, so this checks only the rates asked for."""
    from benchmarks import measure
    from benchmarks.plan import FULL

    asked: list[float] = []

    def fake_sweep(spec: Any, images: Any, rates: list[float], **_: Any) -> list[BenchReport]:
        asked.extend(rates)
        return []

    class Server:
        class process:  # noqa: N801 - stands in for StartedServer.process
            pid = 1

        def target(self, transport: str) -> str:
            return "http://127.0.0.1:1"

    monkeypatch.setattr(measure, "run_sweep", fake_sweep)
    result = measure.ServerResult("onnx", "default", {}, 1.0, 1.0, runs=fake_results()["servers"][0]["runs"])
    sweep = measure.sweep_rates(Server(), result, [b"x"], FULL)  # type: ignore[arg-type]
    assert sweep is not None
    assert sweep["saturation_requests_per_s"] == 200.0  # the c8 run's, the higher of the two
    assert asked == [pytest.approx(f * 200.0) for f in SWEEP_FRACTIONS]
    assert sweep["points"] == []


def test_the_other_backends_verdicts_are_on_the_page() -> None:
    results = finished(fake_results())

    def candidate(ratio: float, same: int, keep: bool) -> dict[str, Any]:
        speed = {"images_per_s": 150.0 * ratio, "baseline_images_per_s": 150.0, "ratio": ratio, "rounds": 60}
        agreement = {"images": 1000, "same_class": same, "max_prob_diff": 0.5, "fraction": same / 1000}
        return {"speed": speed, "agreement": agreement, "keep": keep}

    results["other_backends"] = {
        "command": "python -m benchmarks.backends --model DIR",
        "machine": {"flags": {"avx2": True, "amx_bf16": False}},
        "batch": 16,
        "keep_rule": {"speedup": 1.5, "agreement": 0.99},
        "reference_top_margin_median": 1.0,
        "candidates": {
            "onnxruntime-int8-static": candidate(0.97, 843, False),
            "openvino-throughput-default": candidate(1.71, 944, False),
        },
    }
    page = render(results, None)
    assert "## Other CPU backends: keep or drop" in page
    assert (
        "| openvino-throughput-default | 256.5 | 150.0 | 1.71 x | 944/1,000 (94.4%) | 0.500 | drop |" in page
    )
    assert "none is kept" in page
    assert "CPU flags: avx2." in page
    results["other_backends"]["candidates"]["openvino-throughput-default"] = candidate(1.71, 995, True)
    page = render(results, None)
    assert "Kept: openvino-throughput-default." in page
    assert "| **keep** |" in page


def test_the_other_backends_step_says_what_it_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import measure, others

    monkeypatch.setattr(others, "missing", lambda: ["openvino"])
    notes: list[str] = []
    assert measure.other_backends(Path("m"), Path("w"), False, notes) is None
    (note,) = notes
    assert note.startswith("Other CPU backends not measured: openvino not installed (`pip install openvino")


def test_a_round_waits_until_the_host_stops_stealing_and_no_longer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake clock and a scripted probe: no sleeping, no probing of the real host."""
    from benchmarks import environment

    clock = [0.0]
    monkeypatch.setattr(environment.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(environment.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    shares = iter([0.25, 0.10, 0.01, 0.5])
    monkeypatch.setattr(environment, "steal_under_load", lambda: next(shares))
    assert environment.wait_for_quiet() == 2 * environment.PROBE_PAUSE_S  # quiet at the third probe
    clock[0] = 0.0
    monkeypatch.setattr(environment, "steal_under_load", lambda: 0.5)
    waited = environment.wait_for_quiet(max_wait_s=7.0)
    assert waited <= 7.0  # gave up, and the round records the steal it then gets
    assert waited > 7.0 - environment.PROBE_PAUSE_S
    monkeypatch.setattr(environment, "steal_under_load", lambda: None)  # no steal accounting here
    clock[0] = 0.0
    assert environment.wait_for_quiet() == 0.0


def test_steal_is_the_stolen_share_of_the_time_between_two_readings() -> None:
    from benchmarks.environment import steal_share

    assert steal_share((10.0, 100.0), (12.0, 120.0)) == pytest.approx(0.1)
    assert steal_share(None, (1.0, 2.0)) is None
    assert steal_share((1.0, 2.0), (1.0, 2.0)) is None
