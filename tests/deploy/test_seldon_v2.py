"""Seldon Core 2: our ServerConfig against Seldon's own MLServer ServerConfig, field by field.

The release is Seldon Core 2.8.5. The facts below come from SeldonIO/seldon-core at tag v2.8.5:
`operator/config/serverconfigs/mlserver.yaml` (Seldon's ServerConfig for MLServer; the same file as in
v2.7.0), `scheduler/pkg/agent/drainservice/server.go` (the agent's drainer: GET /terminate on
SELDON_DRAINER_PORT, and draining starts only after `eventsTarget` = 3 calls within 100 ms, one per
container of the pod), `scheduler/Dockerfile.rclone` (the rclone image: /rclone/rclone.conf created for
UID 1000, `USER 1000`, `rcd --config=/rclone/rclone.conf`), `prometheus/monitors/server-podmonitor.yaml`
(MLServer's metrics port is scraped by the name `server-metrics`, path /metrics),
`scheduler/pkg/agent/client.go` (`WaitReadySubServices`: the agent waits for MLServer's ServerLive, not
ServerReady, before it registers and gets models) and
`docs-gb/kubernetes/autoscaling.md` (servers scale through an HPA on the `Server`). From v2.9
(`docs-gb/scaling/core-autoscaling-servers.md` at v2.10.2), `minReplicas`/`maxReplicas` on a Server turn
on the scheduler's own server autoscaling, which an HPA would fight.

They are written here as facts, one value per field; where ours differs on purpose, DEVIATIONS says why
(and serverconfig.yaml has the same reason as a comment).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import ROOT, needs_kubectl, rendered_docs

TERMINATE = {"port": 9007, "path": "terminate"}
LIVE = {"path": "/v2/health/live", "port": "server-http"}

#: Seldon's MLServer ServerConfig at v2.8.5: path -> value. A path steps into lists by the entries'
#: `name` (containers, ports, env, volumes) or `mountPath` (volumeMounts).
FACTS: dict[str, Any] = {
    "terminationGracePeriodSeconds": 120,
    "serviceAccountName": "seldon-server",
    "securityContext/runAsNonRoot": True,
    "securityContext/runAsUser": 1000,
    "securityContext/fsGroup": 2000,
    # rclone
    "containers/rclone/imagePullPolicy": "IfNotPresent",
    "containers/rclone/ports/rclone/containerPort": 5572,
    "containers/rclone/ports/rclone/protocol": "TCP",
    "containers/rclone/lifecycle/preStop/httpGet": TERMINATE,
    "containers/rclone/resources/requests": {"cpu": "200m", "memory": "100M"},
    "containers/rclone/readinessProbe": {
        "failureThreshold": 3,
        "initialDelaySeconds": 5,
        "periodSeconds": 5,
        "successThreshold": 1,
        "tcpSocket": {"port": 5572},
        "timeoutSeconds": 1,
    },
    "containers/rclone/volumeMounts//mnt/agent/name": "mlserver-models",
    # agent
    "containers/agent/imagePullPolicy": "IfNotPresent",
    "containers/agent/command": ["/bin/agent"],
    "containers/agent/args": ["--tracing-config-path=/mnt/tracing/tracing.json"],
    "containers/agent/env/SELDON_SERVER_CAPABILITIES/value": (
        "mlserver,alibi-detect,alibi-explain,huggingface,lightgbm,mlflow,python,sklearn,spark-mlib,xgboost"
    ),
    "containers/agent/env/SELDON_OVERCOMMIT_PERCENTAGE/value": "10",
    "containers/agent/env/SELDON_MODEL_INFERENCE_LAG_THRESHOLD/value": "30",
    "containers/agent/env/SELDON_MODEL_INACTIVE_SECONDS_THRESHOLD/value": "600",
    "containers/agent/env/SELDON_SCALING_STATS_PERIOD_SECONDS/value": "20",
    "containers/agent/env/SELDON_SERVER_HTTP_PORT/value": "9000",
    "containers/agent/env/SELDON_SERVER_GRPC_PORT/value": "9500",
    "containers/agent/env/SELDON_REVERSE_PROXY_HTTP_PORT/value": "9001",
    "containers/agent/env/SELDON_REVERSE_PROXY_GRPC_PORT/value": "9501",
    "containers/agent/env/SELDON_SCHEDULER_HOST/value": "seldon-scheduler",
    "containers/agent/env/SELDON_SCHEDULER_PORT/value": "9005",
    "containers/agent/env/SELDON_SCHEDULER_TLS_PORT/value": "9055",
    "containers/agent/env/SELDON_METRICS_PORT/value": "9006",
    "containers/agent/env/SELDON_DRAINER_PORT/value": "9007",
    "containers/agent/env/AGENT_TLS_SECRET_NAME/value": "",
    "containers/agent/env/AGENT_TLS_FOLDER_PATH/value": "",
    "containers/agent/env/SELDON_SERVER_TYPE/value": "mlserver",
    "containers/agent/env/SELDON_ENVOY_HOST/value": "seldon-mesh",
    "containers/agent/env/SELDON_ENVOY_PORT/value": "80",
    "containers/agent/env/POD_NAME/valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
    "containers/agent/env/POD_NAMESPACE/valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
    "containers/agent/env/MEMORY_REQUEST/valueFrom": {
        "resourceFieldRef": {"containerName": "mlserver", "resource": "requests.memory"}
    },
    "containers/agent/ports/grpc/containerPort": 9501,
    "containers/agent/ports/http/containerPort": 9001,
    "containers/agent/ports/metrics/containerPort": 9006,
    "containers/agent/lifecycle/preStop/httpGet": TERMINATE,
    "containers/agent/resources/requests": {"cpu": "500m", "memory": "500M"},
    "containers/agent/volumeMounts//mnt/agent/name": "mlserver-models",
    "containers/agent/volumeMounts//mnt/config/name": "config-volume",
    "containers/agent/volumeMounts//mnt/tracing/name": "tracing-config-volume",
    # mlserver
    "containers/mlserver/imagePullPolicy": "IfNotPresent",
    "containers/mlserver/env/MLSERVER_HTTP_PORT/value": "9000",
    "containers/mlserver/env/MLSERVER_GRPC_PORT/value": "9500",
    "containers/mlserver/env/MLSERVER_MODELS_DIR/value": "/mnt/agent/models",
    "containers/mlserver/env/MLSERVER_MODEL_PARALLEL_WORKERS/value": "1",
    "containers/mlserver/env/MLSERVER_LOAD_MODELS_AT_STARTUP/value": "false",
    "containers/mlserver/env/MLSERVER_GRPC_MAX_MESSAGE_LENGTH/value": "1048576000",
    "containers/mlserver/resources/requests": {"cpu": 1, "memory": "1G"},
    "containers/mlserver/lifecycle/preStop/httpGet": TERMINATE,
    "containers/mlserver/livenessProbe": {"httpGet": LIVE},
    "containers/mlserver/readinessProbe": {"httpGet": LIVE, "initialDelaySeconds": 5, "periodSeconds": 5},
    "containers/mlserver/startupProbe": {"httpGet": LIVE, "failureThreshold": 10, "periodSeconds": 10},
    "containers/mlserver/ports/server-grpc/containerPort": 9500,
    "containers/mlserver/ports/server-http/containerPort": 9000,
    "containers/mlserver/ports/server-metrics/containerPort": 8082,
    "containers/mlserver/volumeMounts//mnt/agent/name": "mlserver-models",
    "containers/mlserver/volumeMounts//mnt/agent/readOnly": True,
    "containers/mlserver/volumeMounts//mnt/certs/name": "downstream-ca-certs",
    "containers/mlserver/volumeMounts//mnt/certs/readOnly": True,
    "volumes/config-volume/configMap": {"name": "seldon-agent"},
    "volumes/tracing-config-volume/configMap": {"name": "seldon-tracing"},
    "volumes/downstream-ca-certs/secret": {"secretName": "seldon-downstream-server", "optional": True},
    # the model store: a PersistentVolumeClaim template per replica
    "../volumeClaimTemplates/mlserver-models/spec/resources/requests/storage": "1Gi",
}

#: Where ours differs from Seldon's on purpose, and why (serverconfig.yaml / mlserver-env.yaml say so).
DEVIATIONS: dict[str, str] = {
    "securityContext/runAsUser": "UID 10001, our image's numeric USER, as on every target",
    "securityContext/fsGroup": "GID 10001, our image's group, so the emptyDirs are writable",
    "containers/agent/env/SELDON_SERVER_CAPABILITIES/value": "only models that require `cassava`",
    "containers/agent/env/SELDON_OVERCOMMIT_PERCENTAGE/value": "one model per server: no overcommit",
    "containers/agent/env/SELDON_SERVER_HTTP_PORT/value": "MLServer on our image's 8080",
    "containers/agent/env/SELDON_SERVER_GRPC_PORT/value": "MLServer on our image's 8081",
    "containers/mlserver/env/MLSERVER_HTTP_PORT/value": "our image's 8080, as on every target",
    "containers/mlserver/env/MLSERVER_GRPC_PORT/value": "our image's 8081, as on every target",
    "containers/mlserver/env/MLSERVER_MODEL_PARALLEL_WORKERS/value": (
        "deprecated per-model name in MLServer 1.7.1; MLSERVER_PARALLEL_WORKERS (Seldon 2.10's name) "
        "with the default profile's 0 instead"
    ),
    "containers/mlserver/env/MLSERVER_GRPC_MAX_MESSAGE_LENGTH/value": "our 64 MiB bound (settings.json)",
    "containers/mlserver/resources/requests": "our sizing: 2 CPU / 2Gi, requests = limits",
    "containers/mlserver/ports/server-grpc/containerPort": "our image's 8081",
    "containers/mlserver/ports/server-http/containerPort": "our image's 8080",
    "../volumeClaimTemplates/mlserver-models/spec/resources/requests/storage": (
        "the artifact is one JSON file: a node-local emptyDir, not a PVC per replica"
    ),
}

ABSENT = object()


@pytest.fixture(autouse=True)
def _kubectl() -> None:
    needs_kubectl()


def server_config(variant: str = "seldon-v2") -> dict[str, Any]:
    (config,) = [d for d in rendered_docs(variant) if d["kind"] == "ServerConfig"]
    return dict(config["spec"])


def lookup(spec: dict[str, Any], path: str) -> Any:
    """The value at a FACTS path in a ServerConfig spec (paths start at podSpec; `../` at spec)."""
    node: Any = spec if path.startswith("../") else spec["podSpec"]
    keys = path.removeprefix("../").split("/")
    i = 0
    while i < len(keys):
        key = keys[i]
        if isinstance(node, list):
            if key == "":  # a mountPath: it starts with "/", so it spans path segments
                j = next(
                    j
                    for j in range(i + 2, len(keys) + 1)
                    if any(e.get("mountPath") == "/" + "/".join(keys[i + 1 : j]) for e in node)
                )
                mount = "/" + "/".join(keys[i + 1 : j])
                node = next(e for e in node if e.get("mountPath") == mount)
                i = j
                continue
            matches = [e for e in node if e.get("name") == key]
            if not matches:
                return ABSENT
            node = matches[0]
        elif isinstance(node, dict) and key in node:
            node = node[key]
        else:
            return ABSENT
        i += 1
    return node


def test_the_lookup_walks_names_and_mount_paths() -> None:
    spec = {
        "podSpec": {
            "containers": [{"name": "a", "volumeMounts": [{"mountPath": "/mnt/x", "name": "v"}]}],
        },
        "volumeClaimTemplates": [],
    }
    assert lookup(spec, "containers/a/volumeMounts//mnt/x/name") == "v"
    assert lookup(spec, "containers/b/name") is ABSENT
    assert lookup(spec, "../volumeClaimTemplates/x/spec") is ABSENT


def test_every_field_of_seldons_server_config_is_kept_or_explained() -> None:
    spec = server_config()
    kept, differing = [], []
    for path, fact in FACTS.items():
        ours = lookup(spec, path)
        if path in DEVIATIONS:
            differing.append(path)
            assert ours != fact, f"{path} now equals Seldon's {fact!r}: drop it from DEVIATIONS"
        else:
            assert ours == fact, f"{path}: Seldon's is {fact!r}, ours {ours!r} (keep it, or say why not)"
            kept.append(path)
    assert set(differing) == set(DEVIATIONS)
    assert len(kept) > 2 * len(differing)


def test_every_container_calls_the_agents_drainer() -> None:
    """The drainer starts only when every container of the pod (eventsTarget = 3) calls /terminate."""
    pod = server_config()["podSpec"]
    assert len(pod["containers"]) == 3
    (drainer_port,) = [
        e["value"]
        for e in lookup(server_config(), "containers/agent/env")
        if e["name"] == "SELDON_DRAINER_PORT"
    ]
    for container in pod["containers"]:
        assert container["lifecycle"]["preStop"] == {"httpGet": TERMINATE}, container["name"]
    assert TERMINATE["port"] == int(drainer_port)


def test_rclone_can_write_its_config() -> None:
    """rclone runs `rcd --config=/rclone/rclone.conf`, a file its image makes for UID 1000."""
    spec = server_config()
    pod = spec["podSpec"]
    (rclone,) = [c for c in pod["containers"] if c["name"] == "rclone"]
    uid = (rclone.get("securityContext") or {}).get("runAsUser", pod["securityContext"]["runAsUser"])
    if uid == 1000 and not rclone["securityContext"].get("readOnlyRootFilesystem"):
        return
    empty = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    mounts = {m["mountPath"]: m for m in rclone["volumeMounts"]}
    assert "/rclone" in mounts, "rclone needs a writable /rclone (or to run as UID 1000)"
    assert mounts["/rclone"]["name"] in empty
    assert not mounts["/rclone"].get("readOnly")
    # Writable by the pod's group: emptyDirs belong to fsGroup.
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]


def test_ports_agree_between_agent_mlserver_and_monitoring() -> None:
    spec = server_config()
    env = {e["name"]: e.get("value") for e in lookup(spec, "containers/mlserver/env")}
    agent = {e["name"]: e.get("value") for e in lookup(spec, "containers/agent/env")}
    http = lookup(spec, "containers/mlserver/ports/server-http/containerPort")
    grpc = lookup(spec, "containers/mlserver/ports/server-grpc/containerPort")
    assert agent["SELDON_SERVER_HTTP_PORT"] == env["MLSERVER_HTTP_PORT"] == str(http)
    assert agent["SELDON_SERVER_GRPC_PORT"] == env["MLSERVER_GRPC_PORT"] == str(grpc)
    # Seldon's PodMonitor for servers scrapes `server-metrics` at /metrics; so does ours.
    from deploy_helpers import overlay_docs

    (monitor,) = [d for d in overlay_docs("monitoring") if d["kind"] == "PodMonitor"]
    endpoints = {e["port"]: e["path"] for e in monitor["spec"]["podMetricsEndpoints"]}
    assert endpoints["server-metrics"] == "/metrics"


def test_mlserver_runs_through_the_launcher_with_debug_off() -> None:
    (mlserver,) = [c for c in server_config()["podSpec"]["containers"] if c["name"] == "mlserver"]
    assert mlserver["command"] == ["python", "-m", "cassava.server.launcher"]
    env = {e["name"]: e.get("value") for e in mlserver["env"]}
    assert mlserver["args"] == [env["MLSERVER_MODELS_DIR"]]
    assert env["MLSERVER_DEBUG"] == "false"
    assert env["MLSERVER_LOAD_MODELS_AT_STARTUP"] == "false"


def test_the_launcher_starts_on_the_agents_empty_folder(tmp_path: Path) -> None:
    """The agent fills the models folder after MLServer is up: the launcher's preflight must accept it
    empty when MLServer is told to load nothing at start (the ServerConfig's env)."""
    (mlserver,) = [c for c in server_config()["podSpec"]["containers"] if c["name"] == "mlserver"]
    env = {
        e["name"]: e["value"] for e in mlserver["env"] if "value" in e and e["name"].startswith("MLSERVER_")
    }
    folder = tmp_path / "models"
    folder.mkdir()
    done = subprocess.run(
        [sys.executable, *mlserver["command"][1:], "--check", str(folder)],
        env={**os.environ, **env, "MLSERVER_MODELS_DIR": str(folder)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr


def test_the_server_is_scaled_by_an_hpa_only_with_autoscale() -> None:
    plain = {d["kind"]: d for d in rendered_docs("seldon-v2")}
    scaled = {d["kind"]: d for d in rendered_docs("seldon-v2+autoscale")}
    for docs in (plain, scaled):
        # From 2.9 these would start the scheduler's own server autoscaling next to the HPA.
        assert not {"minReplicas", "maxReplicas"} & set(docs["Server"]["spec"])
    assert "HorizontalPodAutoscaler" not in plain
    target = scaled["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        scaled["Server"]["apiVersion"],
        "Server",
        scaled["Server"]["metadata"]["name"],
    )
    # Model replicas follow load between the same bounds (Seldon's agent-driven model autoscaling).
    hpa = scaled["HorizontalPodAutoscaler"]["spec"]
    model = scaled["Model"]["spec"]
    assert (model["minReplicas"], model["maxReplicas"]) == (hpa["minReplicas"], hpa["maxReplicas"])
