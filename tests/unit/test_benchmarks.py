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
        backend: str, role: str, runs: list[dict[str, Any]], sweep: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        config = {"backend": backend, "workers": 1}
        return {
            "label": backend,
            "role": role,
            "config": config,
            "cold_start_s": 4.0,
            "rss_mb": 500.0,
            "runs": runs,
            "sweep": sweep,
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
    assert by_name["one image at concurrency 1: served p50 minus in-process p50"]["value"] == pytest.approx(
        3.0
    )
    assert by_name["ONNX-only server cold start (process start to ready)"]["met"] is True
    page = render(finished(results), "img/performance.png")
    assert "GENERATED" in page
    assert "make bench" in page
    assert "test CPU" in page
    assert "![" in page
    assert "87.5%" in page  # fast_decode agreement
    assert page.count("| yes |") >= 4


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


def test_the_full_grid_runs_on_the_best_backend_and_tensorflow_keeps_its_defaults() -> None:
    plans = server_plan("onnx", ["tensorflow", "onnx"])
    onnx = [p for p in plans if p.config.backend == "onnx"]
    tensorflow = [p for p in plans if p.config.backend == "tensorflow"]
    assert sorted({(p.config.workers, p.config.adaptive_batch_size) for p in onnx}) == [
        (w, b) for w in (0, 1, 2) for b in (0, 8)
    ]
    assert [p.config.adaptive_batch_size for p in tensorflow] == [0, 8]
    for backend in (onnx, tensorflow):
        (default,) = [p for p in backend if p.role == "default"]
        assert default.config.workers == default_workers()
        assert default.config.adaptive_batch_size == 0
        seed = [r for r in default.runs if r.encoding == "tensor"]
        assert seed
        assert all(r.batch == SEED_BATCH for r in seed)
    assert any(r.encode_each for p in tensorflow for r in p.runs)
    assert all(p.config.backend == "tensorflow" for p in server_plan("tensorflow", ["tensorflow"]))
    quick = server_plan("onnx", ["tensorflow", "onnx"], quick=True)
    assert len(quick) < len(plans)
    assert {p.config.backend for p in quick} == {"onnx", "tensorflow"}


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
