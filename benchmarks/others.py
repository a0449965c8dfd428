"""The matrix's step for other CPU backends: `benchmarks.backends` (ONNX Runtime INT8, OpenVINO) against
ONNX Runtime FP32 on the bench's model, run in a child process, its keep-or-drop verdicts kept in the
results (docs/backends.md has the method and the discussion)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

#: What the comparison imports beyond the serving dependencies: OpenVINO is not one of cassava's.
NEEDS = ("openvino", "onnxruntime.quantization", "onnx")
QUICK = ("--rounds", "3", "--images", "32", "--calibration", "8")


def missing() -> list[str]:
    found = []
    for name in NEEDS:
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            found.append(name)
    return found


def compare(model_dir: Path, workdir: Path, export_tolerance: float, quick: bool) -> dict[str, Any]:
    """Run `benchmarks.backends` on `model_dir` (which holds the bench's model.onnx) in this process;
    the matrix calls it in a child. Returns its JSON, with `quick` marked (a quick run's agreement is
    on too few images to decide anything)."""
    from benchmarks import backends

    out = workdir / "backends.json"
    argv = ["--model", str(model_dir), "--workdir", str(workdir), "--out", str(out)]
    argv += ["--export-tolerance", str(export_tolerance), *(QUICK if quick else ())]
    code = backends.main(argv)
    if code != 0:
        raise RuntimeError(f"python -m benchmarks.backends {' '.join(argv)} exited {code}")
    results: dict[str, Any] = json.loads(out.read_text())
    results["quick"] = quick
    results["command"] = f"python -m benchmarks.backends --model DIR{' ' + ' '.join(QUICK) if quick else ''}"
    return results
