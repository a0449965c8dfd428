"""The benchmark's control runtime (`benchmarks/control_runtime.py`) in-process, in MLServer's style.

The control stands for "MLServer as it comes, around the same pipeline" in the paired rounds of
`make bench`, so two things must hold: it answers what cassava's runtime answers for the requests the
load generator sends, and it carries none of `cassava.server` (whose import applies cassava's patches
to MLServer). Its real process is started in tests/integration/test_bench_smoke.py.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from benchmarks.control_runtime import PipelineRuntime
from mlserver.settings import ModelParameters, ModelSettings
from mlserver.types import InferenceRequest, InferenceResponse

from cassava.bench import generate_images
from cassava.contract import IMAGES_INPUT, OUTPUT_INDEX, OUTPUT_PROBABILITIES
from cassava.pipeline import Classifier

REPOSITORY = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def control(demo_model_dir: Path) -> PipelineRuntime:
    settings = ModelSettings(
        name="cassava",
        implementation=PipelineRuntime,
        parameters=ModelParameters(uri=str(demo_model_dir), extra={"backend": "tensorflow"}),
    )
    runtime = PipelineRuntime(settings)
    assert asyncio.run(runtime.load())
    return runtime


def request(data: list[bytes] | list[str]) -> InferenceRequest:
    return InferenceRequest.model_validate(
        {"inputs": [{"name": IMAGES_INPUT, "datatype": "BYTES", "shape": [len(data)], "data": data}]}
    )


def output(response: InferenceResponse, name: str) -> np.ndarray:
    (out,) = [o for o in response.outputs if o.name == name]
    return np.asarray(out.data.root).reshape(out.shape)


@pytest.mark.parametrize("form", ["grpc-bytes", "rest-base64"])
def test_the_control_classifies_as_the_pipeline_does(
    control: PipelineRuntime, demo_model_dir: Path, form: str
) -> None:
    images = generate_images(3, (160, 120), seed=5)
    data = [base64.b64encode(i).decode() for i in images] if form == "rest-base64" else images
    response = asyncio.run(control.predict(request(data)))
    expected = Classifier.load(demo_model_dir).classify_images(images)
    assert [o.name for o in response.outputs] == [OUTPUT_INDEX, OUTPUT_PROBABILITIES]
    assert output(response, OUTPUT_INDEX).shape == (3,)  # as cassava's runtime declares it
    np.testing.assert_array_equal(output(response, OUTPUT_INDEX), expected.indices)
    np.testing.assert_allclose(output(response, OUTPUT_PROBABILITIES), expected.probabilities, atol=1e-6)


def test_the_control_carries_nothing_of_cassavas_server() -> None:
    """In a fresh interpreter, as `mlserver start` loads it: no `cassava.server` module gets imported."""
    code = (
        "import sys, benchmarks.control_runtime; "
        "print(sorted(m for m in sys.modules if m.startswith('cassava.server')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPOSITORY, capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout
