"""Observability through a real server: our metrics move by exactly what was sent, wherever inference runs.

Two servers: the default (`parallel_workers: 0`, inference in the server process, whose registry the
metrics port serves) and one with a worker process (parallel_workers=1), where MLServer aggregates
metrics through prometheus_client's multiprocess directory. That server gets its own metrics directory:
MLServer's default is `.metrics` in the working directory, which every server started from the same
directory would share (and sum).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cassava.client import CassavaClient
from cassava.contract import IMAGES_INPUT, MODEL_NAME
from cassava.server.process import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "monitoring" / "grafana-dashboard.json"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module", params=[0, 1], ids=["in-the-server-process", "in-a-worker"])
def server(
    request: pytest.FixtureRequest,
    standin_server: ServerProcess,
    tmp_path_factory: pytest.TempPathFactory,
    demo_model_dir: Path,
) -> Iterator[ServerProcess]:
    """The shared stand-in server (the default settings), then one with a worker process: every
    assertion below is on the change between two scrapes."""
    if request.param == 0:
        yield standin_server
        return
    workdir = tmp_path_factory.mktemp("worker-metrics")
    with ServerProcess.for_model(
        workdir, model_dir=demo_model_dir, server={"parallel_workers": request.param}
    ) as server:
        yield server


def scrape(server: ServerProcess) -> Samples:
    text = httpx.get(server.metrics_url, timeout=30).text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels` (0 when there is none)."""
    wanted = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and wanted <= set(lbls))


def post(server: ServerProcess, inputs: list[dict[str, object]]) -> httpx.Response:
    url = f"{server.http_url}/v2/models/{MODEL_NAME}/infer"
    return httpx.post(url, json={"inputs": inputs}, timeout=120)


def images_input(images: list[bytes]) -> dict[str, object]:
    data = [base64.b64encode(i).decode() for i in images]
    return {"name": IMAGES_INPUT, "datatype": "BYTES", "shape": [len(images)], "data": data}


def test_metrics_count_exactly_what_the_model_did(server: ServerProcess, sample_jpegs: list[bytes]) -> None:
    workers = json.loads((server.folder / "settings.json").read_text())["parallel_workers"]

    before = scrape(server)
    predicted: dict[str, int] = {}
    batches = [sample_jpegs[:1], sample_jpegs[1:3], sample_jpegs[3:8], sample_jpegs[:2]]
    with CassavaClient(server.http_url) as client:
        for batch in batches:
            for code in client.classify_images(batch).codes:
                predicted[code] = predicted.get(code, 0) + 1
    rejects = {
        "image_decode": [images_input([b""]), images_input([b"not an image at all"])],
        "request_format": [{"name": "pixels", "datatype": "FP32", "shape": [1], "data": [0.5]}],
    }
    for inputs in rejects.values():
        for inp in inputs:
            response = post(server, [inp])
            assert response.status_code == 400, response.text
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert sum(predicted.values()) == sum(len(b) for b in batches)
    for code, count in predicted.items():
        assert delta("cassava_predictions_total", class_code=code) == count, code
    assert delta("cassava_predictions_total") == sum(predicted.values())  # no other class moved
    for reason, inputs in rejects.items():
        assert delta("cassava_rejected_requests_total", reason=reason) == len(inputs), reason
    assert delta("cassava_rejected_requests_total") == sum(len(i) for i in rejects.values())
    # Observed once per request whose images were all decoded, i.e. the successful image requests.
    assert delta("cassava_preprocess_seconds_count") == len(batches)
    assert delta("cassava_preprocess_seconds_bucket", le="+Inf") == len(batches)
    assert delta("cassava_preprocess_seconds_sum") > 0

    # MLServer's own request metrics, next to ours on the same port.
    assert delta("model_infer_request_success_total", model=MODEL_NAME) == len(batches)
    # Rejected requests count as MLServer failures too: the alerts in deploy/monitoring rely on this.
    assert delta("model_infer_request_failure_total", model=MODEL_NAME) == 3
    infer_path = "/v2/models/{model_name}/infer"  # the route template, not the URL
    assert delta("rest_server_requests_total", path=infer_path, status_code="200") == len(batches)
    assert delta("rest_server_requests_total", path=infer_path, status_code="400") == 3
    assert delta("rest_server_request_duration_seconds_count", path=infer_path) == len(batches) + 3

    if not workers:
        return
    # Our series were written by the worker, not the server process: the multiprocess files carry PIDs.
    pids = {
        int(m.group(1))
        for f in Path(server.child_env()["MLSERVER_METRICS_DIR"]).glob("*.db")
        if (m := re.search(r"_(\d+)\.db$", f.name))
    }
    assert pids - {server.pid}, f"only the server process ({server.pid}) wrote metrics: {pids}"


def dashboard_metric_names() -> set[str]:
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", [])]
    names = set()
    for expr in exprs:
        # Metric names: identifiers followed by a selector, outside label matchers and functions.
        names |= set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{", expr))
    return names


def test_the_dashboard_queries_metrics_the_server_exports(server: ServerProcess) -> None:
    with CassavaClient(server.http_url) as client:
        client.classify_images([_tiny_png()])
    post(server, [images_input([b""])])  # one reject, so the labelled counter has a series
    exported = {name for name, _ in scrape(server)}
    # Series from cAdvisor, kube-state-metrics and Prometheus itself; the gRPC histogram appears with
    # the first gRPC call, adaptive batching's queue only when batching is on, and the parallel
    # workers' queue only with workers.
    elsewhere = {
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "kube_pod_container_resource_limits",
        "up",
        "grpc_server_handled_total",
        "batch_request_queue_bucket",
        *(
            ()
            if json.loads((server.folder / "settings.json").read_text())["parallel_workers"]
            else ("parallel_request_queue_bucket",)
        ),
    }
    missing = sorted(dashboard_metric_names() - exported - elsewhere)
    assert not missing, f"the dashboard queries metrics this server does not export: {missing}"


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (40, 120, 60)).save(buffer, "PNG")
    return buffer.getvalue()
