"""Candidate CPU backends against ONNX Runtime FP32: is any worth keeping? (docs/backends.md)

    python -m benchmarks.backends --model DIR [--workdir .bench/backends] [--rounds 60] [--images 1000]

Run from the repository root. DIR is a CropNet SavedModel; its model.onnx, or else its ONNX export
(`cassava.export`, written into a linked copy under --workdir, so a read-only DIR works), is the
baseline, loaded by the serving backend (`OnnxBackend`) unchanged. The candidates:

- ONNX Runtime INT8, static quantization (QDQ, per-channel weights) calibrated on generated leaf-like
  JPEGs, decoded and resized by the serving pipeline's own preprocessing, loaded by `OnnxBackend` too,
  so threads, spinning and micro-batching match the baseline exactly;
- ONNX Runtime INT8, dynamic (--dynamic), for completeness: it cannot speed up convolutions;
- OpenVINO (a package cassava does not depend on: install it for this), converted from the same ONNX
  file and compiled for the CPU with the latency hint (one request over the whole batch) and the
  throughput hint (the batch split over its streams), each at OpenVINO's default precision and at f32
  forced: on CPUs with AMX or AVX-512 BF16 its default is bf16.

Speed is model-only at batch 16 (images/s), measured in rounds: each round times one candidate and
the baseline once each, in alternating order, in this one process with the same thread count, so load
from other processes falls on both alike. The figures are the medians over rounds; the ratio is the
median of the per-round ratios. Agreement is measured on --images varied JPEGs (different seeds,
sizes and JPEG qualities). A candidate is kept only if it reaches both KEEP_SPEEDUP and KEEP_AGREEMENT.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: A candidate must be this many times faster than ONNX Runtime FP32, model-only at BATCH (issue 12).
KEEP_SPEEDUP = 1.5
#: ...and give the same class as ONNX Runtime FP32 on at least this fraction of the varied images.
KEEP_AGREEMENT = 0.99
#: ...measured on at least this many images: fewer can miss a 1 % disagreement (and a smoke run does).
DECISION_IMAGES = 1000
#: The batch the speed is compared at: the in-process pipeline's and the adaptive batcher's.
BATCH = 16
#: Varied inputs for the agreement run: (width, height) and JPEG quality cycle independently.
SIZES = ((640, 480), (480, 640), (320, 240), (1024, 768), (224, 224), (800, 600), (300, 400))
QUALITIES = (95, 90, 75, 60, 40)
BASELINE = "onnxruntime-fp32"
#: CPU flags that decide what INT8 and bf16 can gain (lscpu names).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")

Predict = Callable[[np.ndarray], np.ndarray]


def log(message: str) -> None:
    print(f"[backends {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- what is computed from measurements (tested without measuring) -------------------------------


@dataclass(frozen=True)
class Agreement:
    images: int
    same_class: int
    #: Largest |p_candidate - p_reference| over every image and class.
    max_prob_diff: float

    @property
    def fraction(self) -> float:
        return self.same_class / self.images if self.images else 0.0


def agreement(reference: np.ndarray, candidate: np.ndarray) -> Agreement:
    """How a candidate's [N, classes] probabilities compare with the reference's on the same images."""
    if reference.shape != candidate.shape or reference.ndim != 2:
        raise ValueError(
            f"probabilities of shape {list(reference.shape)} and {list(candidate.shape)}: both must be "
            "[images, classes] for the same images"
        )
    same = int(np.count_nonzero(reference.argmax(axis=1) == candidate.argmax(axis=1)))
    diff = float(np.abs(reference.astype(np.float64) - candidate).max()) if reference.size else 0.0
    return Agreement(len(reference), same, diff)


@dataclass(frozen=True)
class Speed:
    #: Median images/s over rounds, candidate and baseline.
    images_per_s: float
    baseline_images_per_s: float
    #: Median over rounds of candidate/baseline within the round.
    ratio: float
    rounds: int


def speed(seconds: Sequence[float], baseline_seconds: Sequence[float], batch: int = BATCH) -> Speed:
    """Per-round times of one `batch`-image call, candidate and baseline, timed in the same rounds."""
    if len(seconds) != len(baseline_seconds) or not seconds:
        raise ValueError(
            f"{len(seconds)} candidate and {len(baseline_seconds)} baseline timings: pass one of each "
            "per round, from the same rounds"
        )
    return Speed(
        images_per_s=batch / statistics.median(seconds),
        baseline_images_per_s=batch / statistics.median(baseline_seconds),
        ratio=statistics.median(b / s for s, b in zip(seconds, baseline_seconds, strict=True)),
        rounds=len(seconds),
    )


def keep(speed: Speed, agreement: Agreement) -> bool:
    return (
        speed.ratio >= KEEP_SPEEDUP
        and agreement.fraction >= KEEP_AGREEMENT
        and agreement.images >= DECISION_IMAGES
    )


# --- inputs ----------------------------------------------------------------------------------------


def varied_batches(count: int, batch: int = BATCH, first_seed: int = 1000) -> Iterator[np.ndarray]:
    """`count` preprocessed images, BATCH at a time, each a different seed, size and JPEG quality."""
    from cassava.bench.images import generate_images
    from cassava.preprocessing import Limits, preprocess_images

    limits = Limits()
    for start in range(0, count, batch):
        jpegs = [
            generate_images(
                1, SIZES[i % len(SIZES)], quality=QUALITIES[i % len(QUALITIES)], seed=first_seed + i
            )[0]
            for i in range(start, min(count, start + batch))
        ]
        yield preprocess_images(jpegs, limits)


def calibration_batch(count: int) -> np.ndarray:
    """Leaf-like images for INT8 calibration, disjoint from the agreement images (other seeds)."""
    return np.concatenate(list(varied_batches(count, first_seed=0)))


# --- candidates -------------------------------------------------------------------------------------


def export_baseline(model: Path, workdir: Path, tolerance: float) -> Path:
    """model.onnx for `model`: its own if present, else an export into a linked copy under `workdir`."""
    from cassava.export import export
    from cassava.model_store import ONNX_FILE

    if (model / ONNX_FILE).is_file():
        return model / ONNX_FILE
    copy = workdir / "model"
    if (copy / ONNX_FILE).is_file():
        return copy / ONNX_FILE
    copy.mkdir(parents=True, exist_ok=True)
    for entry in model.iterdir():
        link = copy / entry.name
        if not link.exists():
            link.symlink_to(entry.resolve())
    log(f"exporting {model} to ONNX (about a minute)")
    result = export(copy, tolerance=tolerance)
    log(f"exported: {result.parity.summary()}")
    return result.path


def quantize_int8(fp32: Path, out: Path, calibration: np.ndarray) -> Path:
    """Static QDQ quantization, per-channel int8 weights and uint8 activations, MinMax-calibrated."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from cassava.export import INPUT_NAME

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches = iter(calibration[i : i + 1] for i in range(len(calibration)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            item = next(self._batches, None)
            return None if item is None else {INPUT_NAME: item}

    prepared = out.with_name(f"{out.stem}.prepared.onnx")
    # ORT's recommended step before quantizing: its graph optimizations and shape inference, so the
    # quantizer sees every tensor's shape. ONNX's own inference suffices (only N is dynamic here);
    # the symbolic one would need sympy.
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return out


def quantize_dynamic_int8(fp32: Path, out: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QUInt8)
    return out


def openvino_backend(onnx_path: Path, threads: int, hint: str, precision: str | None) -> Predict:
    """OpenVINO on the CPU from the ONNX export: `hint` LATENCY runs the batch as one request,
    THROUGHPUT splits it over the streams OpenVINO picks and runs them at once."""
    try:
        import openvino as ov
    except ImportError:
        raise SystemExit(
            "OpenVINO is not installed, and it is no dependency of cassava: install it for this "
            "measurement with `.venv/bin/uv pip install -p .venv/bin/python openvino`"
        ) from None

    core = ov.Core()
    config: dict[str, Any] = {"PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": threads}
    if precision:
        config["INFERENCE_PRECISION_HINT"] = precision
    compiled = core.compile_model(ov.convert_model(str(onnx_path)), "CPU", config)
    prop = compiled.get_property
    log(
        f"openvino {hint} {precision or 'default'}: runs in {prop('INFERENCE_PRECISION_HINT')}, "
        f"{prop('NUM_STREAMS')} streams, {prop('INFERENCE_NUM_THREADS')} threads"
    )
    if hint == "LATENCY":
        request = compiled.create_infer_request()

        def latency(batch: np.ndarray) -> np.ndarray:
            return np.asarray(request.infer([np.ascontiguousarray(batch, np.float32)])[0])

        return latency
    streams = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
    queue = ov.AsyncInferQueue(compiled, streams)

    def throughput(batch: np.ndarray) -> np.ndarray:
        chunks = np.array_split(np.ascontiguousarray(batch, np.float32), streams)
        results: list[np.ndarray | None] = [None] * len(chunks)

        def done(request: Any, index: int) -> None:
            results[index] = np.array(request.get_output_tensor(0).data)

        queue.set_callback(done)
        for index, chunk in enumerate(chunks):
            queue.start_async([chunk], index)
        queue.wait_all()
        return np.concatenate([r for r in results if r is not None])

    return throughput


# --- the run ---------------------------------------------------------------------------------------


def cpu_flags() -> dict[str, bool]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []
    )
    return {flag: flag in flags for flag in ISA_FLAGS}


def time_pairs(
    baseline: Predict, candidates: dict[str, Predict], batch: np.ndarray, rounds: int, pause: float
) -> dict[str, tuple[list[float], list[float]]]:
    """Per candidate, seconds per `predict(batch)` of the candidate and of the baseline, timed in pairs
    (alternating which goes first) so that both meet the same load from other processes. Candidates
    are timed one after another, not mixed, and `pause` separates calls, so that a thread pool still
    busy-waiting after one call (OpenVINO's may) cannot slow the next."""

    def timed(predict: Predict) -> float:
        time.sleep(pause)
        started = time.perf_counter()
        predict(batch)
        return time.perf_counter() - started

    results: dict[str, tuple[list[float], list[float]]] = {}
    for name, candidate in candidates.items():
        for predict in (baseline, candidate, baseline, candidate):  # warm-up: allocation, kernel choice
            predict(batch)
        own: list[float] = []
        base: list[float] = []
        for r in range(rounds):
            if r % 2:
                own.append(timed(candidate))
                base.append(timed(baseline))
            else:
                base.append(timed(baseline))
                own.append(timed(candidate))
        results[name] = (own, base)
        log(
            f"{name}: median {BATCH / statistics.median(own):.1f} img/s, "
            f"ORT FP32 {BATCH / statistics.median(base):.1f}"
        )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    from cassava.export import PARITY_TOLERANCE

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.backends", description=__doc__.strip().splitlines()[0]
    )
    parser.add_argument("--model", type=Path, required=True, help="CropNet SavedModel directory")
    parser.add_argument("--workdir", type=Path, default=Path(".bench/backends"), help="scratch folder")
    parser.add_argument("--rounds", type=int, default=60, help="timing rounds (each times every backend)")
    parser.add_argument(
        "--images", type=int, default=DECISION_IMAGES, help="varied images for the agreement run"
    )
    parser.add_argument("--calibration", type=int, default=64, help="images INT8 is calibrated on")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads for every backend")
    parser.add_argument(
        "--export-tolerance",
        type=float,
        default=PARITY_TOLERANCE,
        help="parity limit of the ONNX export; synthetic weights (logits of hundreds) may need 3e-4",
    )
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between timed calls")
    parser.add_argument("--dynamic", action="store_true", help="also measure dynamic INT8 quantization")
    parser.add_argument("--out", type=Path, help="JSON of the results (default: WORKDIR/backends.json)")
    args = parser.parse_args(argv)
    # Files made from one model are reused only for that model (the export takes a minute).
    scratch = args.workdir / hashlib.sha256(str(args.model.resolve()).encode()).hexdigest()[:12]
    scratch.mkdir(parents=True, exist_ok=True)

    from cassava.backends.onnx import OnnxBackend

    fp32 = export_baseline(args.model, scratch, args.export_tolerance)
    int8 = scratch / f"model.int8-calibrated-{args.calibration}.onnx"
    if not int8.is_file():
        log(f"calibrating static INT8 on {args.calibration} generated images")
        quantize_int8(fp32, int8, calibration_batch(args.calibration))
    backends: dict[str, Predict] = {
        BASELINE: OnnxBackend(fp32, threads=args.threads).predict,
        "onnxruntime-int8-static": OnnxBackend(int8, threads=args.threads).predict,
    }
    if args.dynamic:
        dynamic = quantize_dynamic_int8(fp32, scratch / "model.int8-dynamic.onnx")
        backends["onnxruntime-int8-dynamic"] = OnnxBackend(dynamic, threads=args.threads).predict
    for hint in ("LATENCY", "THROUGHPUT"):
        for precision in (None, "f32"):
            label = f"openvino-{hint.lower()}-{precision or 'default'}"
            backends[label] = openvino_backend(fp32, args.threads, hint, precision)

    batch = next(varied_batches(BATCH, first_seed=500))
    load_before = os.getloadavg()
    baseline = backends[BASELINE]
    candidates = {name: predict for name, predict in backends.items() if name != BASELINE}
    log(f"timing {len(candidates)} candidates x {args.rounds} pairs at batch {BATCH}, load {load_before}")
    times = time_pairs(baseline, candidates, batch, args.rounds, args.pause)
    load_after = os.getloadavg()

    log(f"agreement on {args.images} varied images")
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in backends}
    for images in varied_batches(args.images):
        for name, predict in backends.items():
            outputs[name].append(predict(images))
    reference = np.concatenate(outputs[BASELINE])
    results: dict[str, Any] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "flags": cpu_flags(),
            "load_before": load_before,
            "load_after": load_after,
            "threads": args.threads,
        },
        "versions": _versions(),
        "batch": BATCH,
        "keep_rule": {"speedup": KEEP_SPEEDUP, "agreement": KEEP_AGREEMENT},
        "reference_top_margin_median": float(np.median(np.diff(np.sort(reference, axis=1)[:, -2:], axis=1))),
        "candidates": {},
    }
    for name in candidates:
        s = speed(*times[name])
        a = agreement(reference, np.concatenate(outputs[name]))
        results["candidates"][name] = {
            "speed": asdict(s),
            "agreement": asdict(a) | {"fraction": a.fraction},
            "keep": keep(s, a),
        }
        print(
            f"{name:28s} {s.images_per_s:7.1f} img/s vs ORT FP32 {s.baseline_images_per_s:7.1f} "
            f"= {s.ratio:.2f}x | same class {a.same_class}/{a.images} ({a.fraction:.1%}), "
            f"max |dp| {a.max_prob_diff:.2e} | {'KEEP' if keep(s, a) else 'drop'}"
        )
    print(f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after; threads {args.threads}")
    out = args.out or args.workdir / "backends.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {out}")
    return 0


def _versions() -> dict[str, str]:
    import onnxruntime
    import openvino  # imported by now: openvino_backend ran

    return {"onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__, "numpy": np.__version__}


if __name__ == "__main__":
    sys.exit(main())
