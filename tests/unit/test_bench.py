"""The load generator's arithmetic and outputs, the seed's request, and the in-process limit.

Nothing here asserts a speed: timings on a shared machine only ever appear as ratios in
docs/performance.md. tritonclient's gRPC module is never imported here (MLServer is, for the
NumpyCodec comparison; the two cannot share a process).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import time
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
    load_images,
    prepare_requests,
    rss_growth_pct,
    seed_request_json,
)
from cassava.errors import DatasetError


def report_of(records: list[Record], duration: float = 10.0, batch: int = 1, **kwargs: Any) -> BenchReport:
    return build_report(
        records,
        label="t",
        mode="rest",
        target="http://x",
        encoding="bytes",
        batch=batch,
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
    # What the gRPC driver's own channel raises: grpc.aio.AioRpcError, with `code()`.
    import grpc

    refused = grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())
    assert error_kind(refused) == "grpc_UNAVAILABLE"
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


def test_image_folders_are_walked_as_cassava_predict_walks_them(
    tmp_path: Path, sample_jpegs: list[bytes]
) -> None:
    root = tmp_path / "photos"
    (root / "field").mkdir(parents=True)
    (root / ".thumbnails").mkdir()
    (root / "field" / "b.jpg").write_bytes(sample_jpegs[1])
    (root / "a.JPG").write_bytes(sample_jpegs[0])
    (root / ".thumbnails" / "a.jpg").write_bytes(sample_jpegs[2])  # hidden: not a photo
    (root / "notes.txt").write_text("not an image")
    single = tmp_path / "single.jpg"
    single.write_bytes(sample_jpegs[3])
    assert load_images([root, single]) == [sample_jpegs[0], sample_jpegs[1], sample_jpegs[3]]
    with pytest.raises(DatasetError, match="does not exist"):
        load_images([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="holds no image files"):
        load_images([tmp_path / "empty"])


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


def _grpc_request_and_tritonclients(group: list[bytes], encoding: str) -> tuple[bytes, bytes]:
    """(what the gRPC driver sends, what tritonclient's client sends) for `group`, serialised; run in
    `grpc_pool`, as tritonclient's stubs cannot share a process with MLServer's."""
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc import _utils, service_pb2

    from cassava.client import images_input, tensor_input
    from cassava.preprocessing import Limits, preprocess_images

    (prepared,) = prepare_requests(group, mode="grpc", encoding=encoding, batch=len(group))  # type: ignore[arg-type]
    prefix = service_pb2.ModelInferRequest(model_name="cassava").SerializeToString()
    sent = service_pb2.ModelInferRequest.FromString(prefix + prepared.payload)
    inp = (
        images_input(grpcclient, group, "grpc")
        if encoding == "bytes"
        else tensor_input(grpcclient, preprocess_images(group, Limits()), "grpc")
    )
    expected = _utils._get_inference_request(
        model_name="cassava",
        inputs=[inp],
        model_version="",
        request_id="",
        outputs=None,
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=0,
        timeout=None,
        parameters=None,
    )
    return sent.SerializeToString(deterministic=True), expected.SerializeToString(deterministic=True)


@pytest.mark.parametrize("encoding", ["bytes", "tensor"])
def test_grpc_requests_are_what_tritonclient_sends(
    sample_jpegs: list[bytes], encoding: str, grpc_pool: Any
) -> None:
    """The gRPC driver sends requests serialised beforehand, with the model name prefixed: the bytes
    must be the request tritonclient 2.73.0's gRPC client builds for the same InferInput
    (tritonclient/grpc/_utils.py `_get_inference_request`, called here as the oracle; the served runs of
    tests/integration/test_bench_smoke.py send these bytes to a real server)."""
    from mlserver.grpc import dataplane_pb2
    from mlserver.grpc.converters import ModelInferRequestConverter

    from cassava.preprocessing import Limits, preprocess_images
    from cassava.server.protocol import decode_request

    group = sample_jpegs[:2]
    sent, expected = grpc_pool.submit(_grpc_request_and_tritonclients, group, encoding).result()
    assert sent == expected
    # And MLServer reads the images (or the seed's tensor) back from them.
    decoded = decode_request(
        ModelInferRequestConverter.to_types(dataplane_pb2.ModelInferRequest.FromString(sent))
    )
    if encoding == "bytes":
        assert decoded.images == group
    else:
        assert decoded.tensor is not None
        np.testing.assert_array_equal(decoded.tensor, preprocess_images(group, Limits()))


def test_seed_request_equals_numpy_codec(sample_jpegs: list[bytes]) -> None:
    from mlserver.codecs import NumpyCodec
    from mlserver.types import InferenceRequest

    from cassava.preprocessing import Limits, preprocess_images
    from cassava.server.protocol import decode_request

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


# --- the in-process limit, the CLI and the chart ------------------------------------------------------


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


def test_cli_takes_its_defaults_from_cassava_variables(
    demo_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cassava.cli.main import app

    monkeypatch.setenv("CASSAVA_HOME", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("CASSAVA_MODEL_DIR", str(demo_model_dir))
    monkeypatch.setenv("CASSAVA_FAST_DECODE", "true")
    monkeypatch.setenv("CASSAVA_INFERENCE_THREADS", "1")
    out = tmp_path / "report.json"
    args = ["bench", "--in-process", "--generate", "2", "--size", "64x48", "--batch", "2"]
    args += ["--duration", "0.3", "--warmup", "0", "--json", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert Path(data["target"]) == demo_model_dir
    assert data["info"]["fast_decode"] is True
    assert data["info"]["threads"] == 1


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


# --- open loop -----------------------------------------------------------------------------------


def test_constant_arrivals_are_evenly_spaced_inside_the_run() -> None:
    times = bench.arrival_times(bench.OpenLoop(rate=4.0), duration_s=2.0)
    assert times.tolist() == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75])


def test_poisson_arrivals_have_the_rate_on_average_and_repeat_with_their_seed() -> None:
    load = bench.OpenLoop(rate=50.0, arrivals="poisson")
    times = bench.arrival_times(load, duration_s=200.0, seed=1)
    assert times[0] == 0.0
    assert np.all(np.diff(times) > 0)
    assert times[-1] < 200.0
    gaps = np.diff(times)
    # 10,000 exponential gaps: the mean is within a few standard errors (1/sqrt(n) = 1 %) of 1/rate,
    # and the spread is an exponential's (standard deviation equal to the mean), unlike constant spacing.
    assert gaps.mean() == pytest.approx(1 / 50.0, rel=0.05)
    assert gaps.std() == pytest.approx(1 / 50.0, rel=0.1)
    assert np.array_equal(times, bench.arrival_times(load, duration_s=200.0, seed=1))
    assert not np.array_equal(times, bench.arrival_times(load, duration_s=200.0, seed=2))


def test_open_loop_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="positive"):
        bench.OpenLoop(rate=0.0)
    with pytest.raises(ValueError, match="poisson"):
        bench.OpenLoop(rate=1.0, arrivals="bursty")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_in_flight"):
        bench.OpenLoop(rate=1.0, max_in_flight=0)


def run_open_loop(send: Any, times: list[float], max_in_flight: int, **kwargs: Any) -> list[Record]:
    prepared = [bench.Prepared(payload=None, images=1, nbytes=1)]
    return asyncio.run(bench.open_loop(send, prepared, times, max_in_flight=max_in_flight, **kwargs))


def test_open_loop_sends_on_schedule_without_waiting_for_answers() -> None:
    sent: list[float] = []

    async def slow(_: Any) -> None:
        sent.append(time.monotonic())
        await asyncio.sleep(1.0)  # far longer than the 0.05 s between arrivals

    origin = time.monotonic()
    times = [k * 0.05 for k in range(6)]
    records = run_open_loop(slow, times, max_in_flight=100, origin=origin)
    # A closed loop of one would have sent these a second apart; the open loop sends each on its
    # time (never early; late only by the loop's own lag), all before the first answer.
    offsets = [t - origin for t in sent]
    assert all(offset >= due - 1e-3 for offset, due in zip(offsets, times, strict=True))
    assert max(offsets) < 0.8
    assert sorted(r.start for r in records) == pytest.approx(times)
    assert all(r.error is None and r.latency >= 0.99 for r in records)


def test_open_loop_drops_arrivals_beyond_the_in_flight_cap() -> None:
    async def slow(_: Any) -> None:
        await asyncio.sleep(0.5)

    # 10 arrivals within 0.1 s, each answered after 0.5 s, at most 3 out: the first 3 are sent.
    records = run_open_loop(slow, [k * 0.01 for k in range(10)], max_in_flight=3)
    assert len(records) == 10
    dropped = sorted(r.start for r in records if r.error == "dropped")
    assert dropped == pytest.approx([k * 0.01 for k in range(3, 10)])
    assert sum(r.error is None for r in records) == 3


def test_open_loop_counts_queueing_in_the_client_from_the_scheduled_time() -> None:
    """Coordinated omission: when the client falls behind (here its loop is blocked for 0.3 s), the
    arrivals it sends late are timed from when they should have gone out, not from when they did."""
    blocked = False

    async def blocking(_: Any) -> None:
        nonlocal blocked
        if not blocked:
            blocked = True
            time.sleep(0.3)  # holds the whole loop, as a busy client would

    records = run_open_loop(blocking, [k * 0.05 for k in range(5)], max_in_flight=100)
    by_start = sorted(records, key=lambda r: r.start)
    # The arrivals due at 0.05..0.2 s went out at ~0.3 s: each waited 0.3 s minus its own offset,
    # where timing from the actual send would have said ~0.
    for r in by_start[1:]:
        assert r.latency >= 0.3 - r.start - 0.01


def test_open_loop_drain_cancels_what_never_answers_as_timeouts() -> None:
    async def never(_: Any) -> None:
        await asyncio.sleep(60)

    records = run_open_loop(never, [0.0, 0.01], max_in_flight=10, drain_s=0.1)
    assert [r.error for r in records] == ["timeout", "timeout"]


def test_open_loop_report_counts_arrivals_in_the_window_and_drops_apart() -> None:
    records = [
        Record(start=-0.5, latency=0.7, images=1),  # warm-up arrival: only its answer counts
        Record(start=1.0, latency=0.2, images=1),
        Record(start=2.0, latency=0.0, images=1, error="dropped"),
        Record(start=3.0, latency=10.0, images=1, error="timeout"),
        Record(start=4.0, latency=0.1, images=1, error="http_500"),
        Record(start=9.5, latency=2.0, images=1),  # arrived inside, answered after the window: counted
    ]
    report = report_of(records, duration=10.0, open_loop=bench.OpenLoop(rate=1.0))
    assert report.offered == 5
    assert report.drops == {"dropped": 1, "timeout": 1}
    assert report.errors == {"http_500": 1}
    assert report.requests == 2
    assert report.latency_ms["max"] == pytest.approx(2000.0)
    # The achieved rate is what was answered inside the window, the warm-up arrival's answer included.
    assert report.requests_per_s == pytest.approx(0.2)
    assert (report.rate, report.arrivals, report.max_in_flight) == (1.0, "constant", 256)


# --- latency against rate -------------------------------------------------------------------------


def point(rate: float, p99: float, *, offered: int = 1000, drops: int = 0) -> bench.RatePoint:
    stats = {"p50": p99 / 3, "p90": p99 / 2, "p99": p99, "mean": p99 / 3, "max": p99}
    return bench.RatePoint(rate, rate, offered, offered - drops, drops, 0, stats)


def test_slo_capacity_interpolates_where_p99_crosses_the_objective() -> None:
    curve = [point(10, 50), point(20, 80), point(30, 150), point(40, 650), point(50, 3000)]
    capacity = bench.slo_capacity(curve, slo_ms=250.0)
    assert capacity.max_rate_met == 30
    assert capacity.first_rate_missed == 40
    # p99 goes from 150 to 650 ms between 30 and 40 requests/s: 250 ms is a fifth of the way.
    assert capacity.crossing_rate == pytest.approx(32.0)


def test_slo_capacity_stops_at_the_first_miss_and_counts_drops_as_misses() -> None:
    noisy = [point(10, 50), point(20, 400), point(30, 200)]  # 30/s under the objective by luck
    assert bench.slo_capacity(noisy, 250.0).max_rate_met == 10
    # 2 % dropped: the answered requests' p99 looks fine, but 2 % of callers got nothing.
    dropping = [point(10, 50), point(20, 100, drops=20)]
    capacity = bench.slo_capacity(dropping, 250.0)
    assert capacity.max_rate_met == 10
    assert capacity.first_rate_missed == 20
    assert bench.meets_slo(point(20, 100, drops=10), 250.0)  # 1 %: what p99 allows


def test_slo_capacity_when_every_rate_or_none_is_within() -> None:
    within = bench.slo_capacity([point(10, 50), point(20, 60)], 250.0)
    assert (within.max_rate_met, within.crossing_rate, within.first_rate_missed) == (20, None, None)
    none = bench.slo_capacity([point(10, 300)], 250.0)
    assert (none.max_rate_met, none.crossing_rate, none.first_rate_missed) == (None, None, 10)
    with pytest.raises(ValueError, match="no rate points"):
        bench.slo_capacity([], 250.0)


def test_latency_vs_rate_chart(tmp_path: Path) -> None:
    from cassava.plotting import plot_latency_vs_rate

    curve = [point(10, 50), point(20, 80), point(30, 650, drops=30)]
    capacity = bench.slo_capacity(curve, 250.0)
    path = plot_latency_vs_rate([p.to_dict() for p in curve], tmp_path / "rate.png", capacity.to_dict())
    with Image.open(path) as png:
        assert png.format == "PNG"
    with pytest.raises(ValueError, match="no rate points"):
        plot_latency_vs_rate([], tmp_path / "none.png")


def test_cli_refuses_rate_with_concurrency_or_in_process() -> None:
    from cassava.cli.main import app

    runner = CliRunner()
    both = runner.invoke(app, ["bench", "http://127.0.0.1:1", "--rate", "5", "--concurrency", "4"])
    assert both.exit_code != 0
    assert "not both" in both.output
    assert "--rate" in both.output
    assert "--concurrency" in both.output
    local = runner.invoke(app, ["bench", "--in-process", "--rate", "5"])
    assert local.exit_code != 0
    assert "--in-process" in local.output
    for bad in ("fast", "0", "5,-1"):
        result = runner.invoke(app, ["bench", "http://127.0.0.1:1", "--rate", bad])
        assert result.exit_code != 0
        assert repr(bad) in result.output


def test_a_sweep_goes_on_past_the_objective_and_stops_beyond_twice_it() -> None:
    """One p99 just past the objective on a busy machine must not end the curve before its knee."""

    def open_loop_report(latency_s: float) -> BenchReport:
        records = [Record(start=float(i) / 10, latency=latency_s, images=1) for i in range(100)]
        return report_of(records, duration=10.0, open_loop=bench.OpenLoop(rate=10.0))

    assert not bench.past_the_knee(open_loop_report(0.200), slo_ms=250.0)
    assert not bench.past_the_knee(open_loop_report(0.400), slo_ms=250.0)  # over, but under twice
    assert bench.past_the_knee(open_loop_report(0.600), slo_ms=250.0)


def test_a_server_started_here_takes_the_profile_then_the_explicit_options() -> None:
    from cassava.bench import ServerConfig
    from cassava.server.config import PROFILES

    plain = ServerConfig.from_options("onnx")
    assert (plain.workers, plain.adaptive_batch_size, plain.profile) == (None, 0, "")
    batched = ServerConfig.from_options("onnx", profile="throughput")
    expected = PROFILES["throughput"]
    assert (batched.workers, batched.adaptive_batch_size, batched.adaptive_batch_time) == (
        expected.parallel_workers,
        expected.max_batch_size,
        expected.max_batch_time,
    )
    assert batched.label.startswith("throughput profile: onnx")
    over = ServerConfig.from_options(
        "onnx", profile="throughput", workers=2, adaptive_batch_size=4, adaptive_batch_time=0.02
    )
    assert (over.workers, over.adaptive_batch_size, over.adaptive_batch_time) == (2, 4, 0.02)
    assert ServerConfig.from_options("onnx", profile="latency", fast_decode=True).fast_decode


def test_a_round_counts_images_per_second_from_the_mean_latency_one_request_at_a_time() -> None:
    """16 images every 120 ms is 133 images/s, though a 2 s window counts whole requests only."""
    from benchmarks.measure import _brief

    records = [Record(i * 0.12, 0.12, 16, None) for i in range(17)]
    report = report_of(records, duration=2.0, batch=16)
    brief = _brief(report)
    assert brief["images_per_s"] == pytest.approx(16 / 0.12)
    assert brief["counted_images_per_s"] == report.images_per_s
