"""The load generator's arithmetic and outputs, the seed's request, and the in-process limit.

Nothing here asserts a speed: timings on a shared machine only ever appear as ratios in
docs/performance.md. tritonclient's gRPC module is never imported here (MLServer is, for the
NumpyCodec comparison; the two cannot share a process).
"""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cassava import bench
from cassava.bench import (
    BenchReport,
    HTTPStatusError,
    Record,
    batches_of,
    build_report,
    error_kind,
    generate_images,
    latency_stats,
    prepare_requests,
    rss_growth_pct,
    seed_request_json,
)


def report_of(records: list[Record], duration: float = 10.0, **kwargs: Any) -> BenchReport:
    return build_report(
        records,
        label="t",
        mode="rest",
        target="http://x",
        encoding="bytes",
        batch=1,
        concurrency=1,
        warmup_s=1.0,
        duration_s=duration,
        **kwargs,
    )


# --- statistics --------------------------------------------------------------------------------------


def test_percentiles_of_known_latencies() -> None:
    stats = latency_stats([ms / 1000 for ms in range(1, 101)])  # 1..100 ms
    assert stats["p50"] == pytest.approx(50.5)
    assert stats["p90"] == pytest.approx(90.1)
    assert stats["p99"] == pytest.approx(99.01)
    assert stats["mean"] == pytest.approx(50.5)
    assert stats["max"] == pytest.approx(100.0)


def test_percentiles_are_order_independent_and_nan_when_empty() -> None:
    shuffled = np.random.default_rng(0).permutation(np.arange(1, 101) / 1000).tolist()
    assert latency_stats(shuffled) == latency_stats(sorted(shuffled))
    assert all(math.isnan(v) for v in latency_stats([]).values())


def test_only_requests_completed_inside_the_window_count() -> None:
    records = [
        Record(start=-1.0, latency=0.5, images=1),  # ended in the warm-up
        Record(start=-0.2, latency=0.4, images=1),  # started in the warm-up, ended inside: counted
        Record(start=1.0, latency=0.1, images=4),
        Record(start=2.0, latency=0.2, images=1, error="http_400"),
        Record(start=3.0, latency=0.3, images=1, error="http_400"),
        Record(start=4.0, latency=0.1, images=1, error="timeout"),
        Record(start=9.9, latency=0.5, images=1),  # ended after the window
    ]
    report = report_of(records, duration=10.0)
    assert report.requests == 2
    assert report.images == 5
    assert report.errors == {"http_400": 2, "timeout": 1}
    assert report.error_count == 3
    assert report.images_per_s == pytest.approx(0.5)
    assert report.requests_per_s == pytest.approx(0.2)
    assert report.latency_ms["p50"] == pytest.approx(250.0)  # of the two successes only


def test_windows_split_the_measured_time() -> None:
    records = [Record(start=t / 10, latency=0.05, images=2) for t in range(100)]  # 10 s, 10 per second
    report = report_of(records, duration=10.0, window_s=2.5, rss_samples=[(1.0, 100 * 2**20)])
    assert [(w.start_s, w.end_s) for w in report.windows] == [(0, 2.5), (2.5, 5.0), (5.0, 7.5), (7.5, 10.0)]
    assert sum(w.requests for w in report.windows) == report.requests == 100
    assert all(w.images_per_s == pytest.approx(20.0, rel=0.1) for w in report.windows)
    assert report.windows[0].rss_mb == pytest.approx(100.0)
    assert report.windows[1].rss_mb is None


def test_rss_growth_compares_the_end_with_just_after_warm_up() -> None:
    mib = 2**20
    samples = [(-5.0, 50 * mib), (0.0, 100 * mib), (5.0, 100 * mib), (10.0, 100 * mib)]
    samples += [(15.0, 110 * mib), (20.0, 110 * mib), (25.0, 110 * mib)]
    assert rss_growth_pct(samples) == pytest.approx(10.0)
    assert rss_growth_pct([(0.0, mib)]) is None
    assert rss_growth_pct([(-1.0, mib), (0.0, mib), (1.0, mib)]) == pytest.approx(0.0)


def test_report_is_json_with_the_documented_fields() -> None:
    report = report_of([Record(0.5, 0.02, 1)], request_bytes_per_image=123.0, client_cpu=0.25)
    data = json.loads(json.dumps(report.to_dict()))
    for key in (
        "images_per_s",
        "requests_per_s",
        "latency_ms",
        "errors",
        "request_bytes_per_image",
        "client_cpu",
        "cores",
        "windows",
        "rss_samples",
        "rss_growth_pct",
    ):
        assert key in data
    assert set(data["latency_ms"]) == {"p50", "p90", "p99", "mean", "max"}
    assert data["request_bytes_per_image"] == 123.0


def test_error_kinds_are_short_and_stable() -> None:
    class GrpcError(Exception):
        def status(self) -> str:
            return "StatusCode.INVALID_ARGUMENT"

    assert error_kind(HTTPStatusError(400, b"bad")) == "http_400"
    assert error_kind(GrpcError()) == "grpc_INVALID_ARGUMENT"
    assert error_kind(TimeoutError()) == "timeout"
    assert error_kind(ConnectionRefusedError()) == "connection"
    assert error_kind(ValueError("x")) == "ValueError"


# --- images and requests -----------------------------------------------------------------------------


def test_generated_images_are_distinct_jpegs_of_the_size_asked() -> None:
    images = generate_images(3, (160, 120), quality=90, seed=1)
    assert len(set(images)) == 3
    for data in images:
        with Image.open(io.BytesIO(data)) as image:
            assert (image.format, image.size, image.mode) == ("JPEG", (160, 120), "RGB")
    assert generate_images(3, (160, 120), quality=90, seed=1) == images  # reproducible


def test_batches_wrap_around_and_use_every_image() -> None:
    images = [bytes([i]) for i in range(5)]
    groups = batches_of(images, 2, limit=100)
    assert groups == [[b"\0", b"\1"], [b"\2", b"\3"], [b"\4", b"\0"]]
    assert batches_of(images, 16, limit=100) == [[images[i % 5] for i in range(16)]]
    assert len(batches_of(images, 1, limit=2)) == 2


def test_rest_bytes_request_carries_the_files_base64(sample_jpegs: list[bytes]) -> None:
    (prepared,) = prepare_requests(sample_jpegs[:2], mode="rest", encoding="bytes", batch=2)
    body = json.loads(prepared.payload)
    (inp,) = body["inputs"]
    assert (inp["name"], inp["datatype"], inp["shape"]) == ("images", "BYTES", [2])
    assert [base64.b64decode(item) for item in inp["data"]] == sample_jpegs[:2]
    assert prepared.nbytes == len(prepared.payload)
    assert prepared.images == 2


def test_seed_request_equals_numpy_codec(sample_jpegs: list[bytes]) -> None:
    from mlserver.codecs import NumpyCodec
    from mlserver.types import InferenceRequest

    from cassava.preprocessing import Limits, preprocess_images
    from cassava.protocol import decode_request

    batch = preprocess_images(sample_jpegs[:2], Limits())
    ours = seed_request_json(batch)
    seed = InferenceRequest(inputs=[NumpyCodec.encode_input(name="payload", payload=batch)])
    assert json.loads(ours) == seed.model_dump(exclude_none=True)
    decoded = decode_request(InferenceRequest.model_validate_json(ours))
    assert decoded.tensor is not None
    np.testing.assert_array_equal(decoded.tensor, batch)


def test_tensor_rest_request_is_the_seeds(sample_jpegs: list[bytes]) -> None:
    (prepared,) = prepare_requests(sample_jpegs[:2], mode="rest", encoding="tensor", batch=2)
    body = json.loads(prepared.payload)
    assert body["inputs"][0]["shape"] == [2, 224, 224, 3]
    assert len(body["inputs"][0]["data"]) == 2 * 224 * 224 * 3
    # ~20 characters per float in JSON: the seed's 16 images are ~48.8 MB.
    assert prepared.nbytes / prepared.images > 224 * 224 * 3 * 15


# --- the in-process limit, the CLI, the chart and the matrix's report ---------------------------------


def test_in_process_run_on_the_stand_in(demo_model_dir: Path) -> None:
    images = generate_images(4, (96, 72))
    ticks: list[tuple[float, int, int]] = []
    report = bench.run_in_process(
        images,
        model_dir=demo_model_dir,
        batch=2,
        duration_s=1.0,
        warmup_s=0.2,
        on_tick=lambda *t: ticks.append(t),
    )
    assert report.mode == "in-process"
    assert report.requests > 0
    assert report.images == 2 * report.requests
    assert report.errors == {}
    assert report.latency_ms["p50"] > 0
    assert report.info["untrained"] is True
    assert ticks


def test_cli_in_process_writes_json_and_chart(demo_model_dir: Path, tmp_path: Path) -> None:
    from cassava.cli.main import app

    out, chart = tmp_path / "report.json", tmp_path / "chart.png"
    args = ["bench", "--in-process", "--model", str(demo_model_dir), "--generate", "2", "--size", "64x48"]
    args += ["--duration", "0.5", "--warmup", "0", "--json", str(out), "--chart", str(chart)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["mode"] == "in-process"
    assert data["requests"] > 0
    assert chart.read_bytes().startswith(b"\x89PNG")


def test_cli_refuses_bad_combinations() -> None:
    from cassava.cli.main import app

    result = CliRunner().invoke(app, ["bench", "http://127.0.0.1:1", "--in-process"])
    assert result.exit_code != 0
    assert "not both" in result.output


def test_benchmark_chart_for_one_run_and_for_several(tmp_path: Path) -> None:
    from cassava.plotting import plot_benchmark

    records = [Record(start=t / 10, latency=0.01 + t / 1000, images=1) for t in range(50)]
    one = report_of(records, duration=5.0, rss_samples=[(0.0, 2**27), (5.0, 2**27)]).to_dict()
    for runs, name in (([one], "one.png"), ([one, {**one, "label": "other"}], "two.png")):
        path = plot_benchmark(runs, tmp_path / name, title="t")
        with Image.open(path) as png:
            assert png.format == "PNG"
    with pytest.raises(ValueError, match="no benchmark runs"):
        plot_benchmark([], tmp_path / "none.png")


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

    def server(backend: str, role: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
        config = {"backend": backend, "workers": 1}
        return {
            "label": backend,
            "role": role,
            "config": config,
            "cold_start_s": 4.0,
            "rss_mb": 500.0,
            "runs": runs,
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


def test_matrix_targets_and_markdown_come_from_the_results() -> None:
    from cassava.bench_matrix import defaults, render, targets

    results = fake_results()
    results["targets"] = found = {t["name"]: t for t in targets(results)}.values()
    by_name = {t["name"]: t for t in found}
    assert by_name["best backend in-process, batch 16, vs TensorFlow"]["value"] == pytest.approx(3.0)
    assert by_name["served image bytes at saturation vs the in-process limit (same backend)"]["value"] == (
        pytest.approx(200 / 240)
    )
    assert by_name["served image bytes vs the seed's request, images/s"]["value"] == pytest.approx(25.0)
    assert by_name["one image at concurrency 1: served p50 minus in-process p50"]["value"] == pytest.approx(
        3.0
    )
    assert by_name["ONNX-only server cold start (process start to ready)"]["met"] is True
    results["targets"] = list(found)
    results["defaults"] = defaults(results)
    page = render(results, "img/performance.png")
    assert "GENERATED" in page
    assert "make bench" in page
    assert "test CPU" in page
    assert "![" in page
    assert "87.5%" in page  # fast_decode agreement
    assert page.count("| yes |") >= 4


def test_backends_are_compared_on_the_model_alone_when_measured() -> None:
    from cassava.bench_matrix import render, targets

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
