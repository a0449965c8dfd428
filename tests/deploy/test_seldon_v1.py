"""Seldon Core v1 as its operator really treats our SeldonDeployment: replica ownership and metrics.

The operator's behaviour is written down here as small functions, from the operator's source at tag
v1.17.1 (the release of the CRD in ../shared/specs/crds; v1.18.2 is the same in every fact used here):

- `operator/controllers/seldondeployment_controller.go`, `createComponents`: per componentSpec, a
  `kedaSpec` makes a ScaledObject, else an `hpaSpec` makes an HPA, and only without either does the
  Deployment get a replica count: the componentSpec's `replicas`, else the predictor's, else
  `spec.replicas` (the CRD's scale subresource, which `kubectl scale sdep` writes).
- `operator/apis/machinelearning.seldon.io/v1/defaults.go` (`DefaultSeldonDeployment`, called by the
  controller's reconcile through `instance.Default()`): for each container that is a graph unit,
  `addMetricsPortAndIncrement` adds a port named `metrics` (PREDICTIVE_UNIT_METRICS_PORT_NAME's default,
  `constants.DefaultMetricsPortName`) numbered from 6000 (`constants.FirstMetricsPortNumber`) when the
  container has no port of that name.
- `seldondeployment_controller.go`, `createContainerService`: then appends to that container's env
  `MLSERVER_METRICS_PORT` = the `metrics` port's number and `MLSERVER_METRICS_ENDPOINT` = the
  Prometheus path (`getPrometheusPath`, seldondeployment_engine.go: the operator's
  EXECUTOR_PROMETHEUS_PATH, default `/prometheus`). Appended after ours: a later duplicate wins in the
  kubelet's environment, so ours cannot override them.
- `seldondeployment_engine.go`: the executor container (`seldon-container-engine`) has a port named
  `metrics` too (its HTTP port, 8000), serving the same path.

MLServer 1.7.1 reads `metrics_port` and `metrics_endpoint` from `MLSERVER_`-prefixed environment
variables (`mlserver/settings.py`, `Settings`, env_prefix `MLSERVER_`); the test asks MLServer's own
settings loader (`mlserver.cli.serve.load_settings`) with our model folder's settings.json.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import ROOT, crd_file_of, needs_kubectl, needs_shared, overlay_docs, rendered_docs

#: from the v1.17.1 operator (module docstring)
METRICS_PORT_NAME = "metrics"
FIRST_METRICS_PORT = 6000
PROMETHEUS_PATH = "/prometheus"
EXECUTOR = {
    "name": "seldon-container-engine",
    "ports": [
        {"name": "http", "containerPort": 8000},
        {"name": "metrics", "containerPort": 8000},
        {"name": "grpc", "containerPort": 5001},
    ],
}


@pytest.fixture(autouse=True)
def _kubectl() -> None:
    needs_kubectl()


def sdep_of(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    (sdep,) = [d for d in docs if d["kind"] == "SeldonDeployment"]
    return copy.deepcopy(sdep)


def operator_replicas(sdep: dict[str, Any]) -> list[int | None]:
    """The replica count the operator writes into each componentSpec's Deployment; None where an
    autoscaler (HPA or KEDA) owns it (`createComponents`)."""
    spec = sdep["spec"]
    counts: list[int | None] = []
    for predictor in spec["predictors"]:
        for component in predictor.get("componentSpecs") or []:
            if component.get("kedaSpec") or component.get("hpaSpec"):
                counts.append(None)
            else:
                counts.append(component.get("replicas", predictor.get("replicas", spec.get("replicas"))))
    return counts


def kubectl_scale(sdep: dict[str, Any], replicas: int) -> dict[str, Any]:
    """`kubectl scale sdep NAME --replicas=N`: writes the scale subresource's specReplicasPath."""
    crd = crd_file_of("SeldonDeployment")
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    path = v1["subresources"]["scale"]["specReplicasPath"].lstrip(".").split(".")
    scaled = copy.deepcopy(sdep)
    node = scaled
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = replicas
    return scaled


def operator_defaults(sdep: dict[str, Any]) -> dict[str, Any]:
    """The metrics port and env the operator gives every graph-unit container (module docstring)."""
    done = copy.deepcopy(sdep)
    next_port = FIRST_METRICS_PORT
    for predictor in done["spec"]["predictors"]:
        units = graph_unit_names(predictor["graph"])
        for component in predictor.get("componentSpecs") or []:
            for container in component["spec"]["containers"]:
                if container["name"] not in units:
                    continue
                ports = container.setdefault("ports", [])
                if not any(p.get("name") == METRICS_PORT_NAME for p in ports):
                    ports.append({"name": METRICS_PORT_NAME, "containerPort": next_port, "protocol": "TCP"})
                    next_port += 1
                (metrics,) = [p for p in ports if p["name"] == METRICS_PORT_NAME]
                container.setdefault("env", []).extend(
                    [
                        {"name": "MLSERVER_METRICS_PORT", "value": str(metrics["containerPort"])},
                        {"name": "MLSERVER_METRICS_ENDPOINT", "value": PROMETHEUS_PATH},
                    ]
                )
    return done


def graph_unit_names(unit: dict[str, Any]) -> set[str]:
    return {unit["name"]} | {n for child in unit.get("children") or [] for n in graph_unit_names(child)}


def kubelet_env(container: dict[str, Any]) -> dict[str, str]:
    """The environment the process sees: plain values, the last of duplicate names wins."""
    env: dict[str, str] = {}
    for entry in container.get("env") or []:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
    return env


def mlserver_metrics(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """Where MLServer 1.7.1 serves metrics in a container with this env and our model folder."""
    from mlserver.cli.serve import load_settings

    for name, value in env.items():
        if name.startswith("MLSERVER_"):
            monkeypatch.setenv(name, value)
    # Only the server settings matter: no model is listed (that would import the runtime).
    monkeypatch.setenv("MLSERVER_LOAD_MODELS_AT_STARTUP", "false")
    settings, _ = asyncio.run(load_settings(str(ROOT / "model")))
    assert settings.metrics_endpoint is not None
    return settings.metrics_port, settings.metrics_endpoint


def scraped(pod_containers: list[dict[str, Any]]) -> list[tuple[str, int, str]]:
    """(container, port, path) that deploy/monitoring's PodMonitor scrapes on a pod with these
    containers: an endpoint matches container ports by name (the Prometheus Operator's generated `keep`
    on the port name), then its own relabelings apply; only `keep` on the container name is used."""
    (monitor,) = [d for d in overlay_docs("monitoring") if d["kind"] == "PodMonitor"]
    found = []
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        for container in pod_containers:
            for port in container.get("ports") or []:
                if port.get("name") != endpoint["port"]:
                    continue
                kept = True
                for rule in endpoint.get("relabelings") or []:
                    assert rule["action"] == "keep", rule
                    assert rule["sourceLabels"] == ["__meta_kubernetes_pod_container_name"], rule
                    kept = kept and container["name"] == rule["regex"]
                if kept:
                    found.append((container["name"], port["containerPort"], endpoint["path"]))
    return found


def test_kubectl_scale_holds_on_the_default_render() -> None:
    """The seed's `kubectl scale sdep cassava --replicas=3` sets the Deployment's count: no autoscaler
    and no more specific replica field shadows `spec.replicas`."""
    needs_shared()
    sdep = sdep_of(rendered_docs("seldon-v1"))
    assert operator_replicas(kubectl_scale(sdep, 3)) == [3]
    assert operator_replicas(kubectl_scale(sdep, 7)) == [7]


def test_with_autoscale_the_hpa_owns_the_count() -> None:
    needs_shared()
    sdep = sdep_of(rendered_docs("seldon-v1+autoscale"))
    assert operator_replicas(kubectl_scale(sdep, 3)) == [None]
    (component,) = sdep["spec"]["predictors"][0]["componentSpecs"]
    assert component["hpaSpec"]["minReplicas"] <= component["hpaSpec"]["maxReplicas"]


@pytest.mark.parametrize("variant", ["seldon-v1", "seldon-v1+autoscale"])
def test_the_monitor_scrapes_where_mlserver_listens_under_the_operator(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = operator_defaults(sdep_of(rendered_docs(variant)))["spec"]["predictors"][0]["componentSpecs"][0]
    (ours,) = pod["spec"]["containers"]
    port, path = mlserver_metrics(kubelet_env(ours), monkeypatch)
    # The operator found our port and added none of its own, so MLServer stays on the image's port.
    assert [p["containerPort"] for p in ours["ports"] if p["name"] == METRICS_PORT_NAME] == [8082]
    assert (port, path) == (8082, PROMETHEUS_PATH)
    # The executor joins the pod; its `metrics` port is not a model server's.
    assert scraped([ours, EXECUTOR]) == [("cassava", port, path)]


def test_the_defaulting_model_catches_an_unnamed_metrics_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same check on a container whose metrics port is not named `metrics` (as before): the operator
    adds 6000 and MLServer moves there, while the port we named is scraped and answers nothing."""
    sdep = sdep_of(rendered_docs("seldon-v1"))
    (container,) = sdep["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"]
    for entry in container["ports"]:
        if entry["name"] == METRICS_PORT_NAME:
            entry["name"] = "cassava-metrics"
    (ours,) = operator_defaults(sdep)["spec"]["predictors"][0]["componentSpecs"][0]["spec"]["containers"]
    port, path = mlserver_metrics(kubelet_env(ours), monkeypatch)
    assert (port, path) == (FIRST_METRICS_PORT, PROMETHEUS_PATH)
    targets = scraped([ours, EXECUTOR])
    assert targets != [(ours["name"], port, path)]
    assert ("cassava", 8082, "/metrics") in targets  # a dead target: nothing listens there


@pytest.mark.parametrize("variant", ["kubernetes", "kserve", "seldon-v2", "seldon-v2+autoscale"])
def test_the_monitor_scrapes_where_mlserver_listens_elsewhere(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No operator rewrites the metrics settings on the other targets: MLServer's defaults with the
    container's env, on exactly one port of our container (not Seldon Core 2's agent)."""
    from deploy_helpers import our_container, pod_specs

    (pod,) = list(pod_specs(rendered_docs(variant)))
    ours = our_container(pod.spec)
    port, path = mlserver_metrics(kubelet_env(ours), monkeypatch)
    assert scraped(pod.spec["containers"]) == [(ours["name"], port, path)]


def test_the_dashboard_counts_only_scraped_model_servers() -> None:
    """The "replicas up" panel sums `up` of this PodMonitor's job: one target per server pod."""
    dashboard = json.loads(Path(ROOT / "deploy" / "monitoring" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets") or []]
    (up,) = [e for e in exprs if e.startswith("sum(up{")]
    (monitor,) = [d for d in overlay_docs("monitoring") if d["kind"] == "PodMonitor"]
    assert f'job=~".*/{monitor["metadata"]["name"]}"' in up
