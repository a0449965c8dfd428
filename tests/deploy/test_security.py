"""Pod security and draining, asserted on every pod every target makes (Seldon's and KServe's included),
and tied to the image: what the Dockerfile makes writable is exactly what the pods mount writable."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import pytest
from deploy_helpers import ROOT, all_renders, needs_kubectl, our_container, pod_specs, rendered_docs

from cassava.ops.dockerfile import final_stage
from cassava.settings import CassavaSettings

IMAGE_STAGE = final_stage(ROOT / "Dockerfile")
#: the image's ENV entries that name a directory the server writes to
WRITABLE_ENV = ("MLSERVER_METRICS_DIR", "MLSERVER_ENVIRONMENTS_DIR", "HOME", "TMPDIR", "KERAS_HOME")
#: Seldon Core 2's drain moves the replica's models before it returns: another replica loads TensorFlow
#: and the SavedModel (20-60 s on 2 CPUs, the startup probe's comment in deploy/base/pod-template.yaml).
MODEL_MOVE_SECONDS = 60


def pods() -> list[tuple[str, Any]]:
    needs_kubectl()
    return [(t, pod) for t in all_renders() for pod in pod_specs(rendered_docs(t))]


@pytest.fixture(scope="module")
def every_pod() -> list[tuple[str, Any]]:
    found = pods()
    assert {t for t, _ in found} == set(all_renders())
    return found


def test_pods_run_as_a_numeric_non_root_user(every_pod: list[tuple[str, Any]]) -> None:
    image_uid = int(IMAGE_STAGE.user.split(":")[0]) if IMAGE_STAGE.user else None
    for target, pod in every_pod:
        context = pod.spec["securityContext"]
        assert context["runAsNonRoot"] is True, (target, pod.where)
        assert isinstance(context["runAsUser"], int), (target, pod.where)
        assert context["runAsUser"] >= 10000, (target, pod.where)
        assert context["runAsUser"] == image_uid, "the pod and the image's USER must agree"
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, (target, pod.where)
        assert pod.spec["automountServiceAccountToken"] is False, (target, pod.where)


def test_every_container_is_locked_down(every_pod: list[tuple[str, Any]]) -> None:
    for target, pod in every_pod:
        for container in pod.spec["containers"]:
            context = container.get("securityContext") or {}
            where = (target, pod.where, container["name"])
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not context.get("capabilities", {}).get("add"), where
            assert context.get("privileged", False) is False, where
            limits = (container.get("resources") or {}).get("limits") or {}
            assert {"cpu", "memory"} <= set(limits), where


def test_a_service_account_token_reaches_only_seldons_agent(every_pod: list[tuple[str, Any]]) -> None:
    token_path = "/var/run/secrets/kubernetes.io/serviceaccount"
    for target, pod in every_pod:
        for container in pod.spec["containers"]:
            mounts = {m["mountPath"] for m in container.get("volumeMounts") or []}
            if token_path in mounts:
                assert (target.partition("+")[0], container["name"]) == ("seldon-v2", "agent")


def emptydir_mounts(pod: dict[str, Any], container: dict[str, Any]) -> list[PurePosixPath]:
    empty = {v["name"] for v in pod.get("volumes") or [] if "emptyDir" in v}
    mounts = container.get("volumeMounts") or []
    return [PurePosixPath(m["mountPath"]) for m in mounts if m["name"] in empty and not m.get("readOnly")]


def test_the_image_writes_only_where_the_pod_mounts_an_empty_dir(every_pod: list[tuple[str, Any]]) -> None:
    writable = [PurePosixPath(IMAGE_STAGE.env[key]) for key in WRITABLE_ENV]
    for target, pod in every_pod:
        container = our_container(pod.spec)
        mounts = emptydir_mounts(pod.spec, container)
        assert mounts, (target, pod.where)
        for path in writable:
            assert any(path == m or m in path.parents for m in mounts), (target, pod.where, path, mounts)


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def test_probes_use_the_v2_health_endpoints(every_pod: list[tuple[str, Any]]) -> None:
    for target, pod in every_pod:
        container = our_container(pod.spec)
        probes = ("startupProbe", "readinessProbe", "livenessProbe")
        paths = {name: container[name]["httpGet"]["path"] for name in probes}
        if target.startswith("seldon-v2"):
            # Seldon's probes (tests/deploy/test_seldon_v2.py): the server holds no model until the agent
            # loads one, so readiness is liveness there.
            expected = dict.fromkeys(probes, "/v2/health/live")
        else:
            expected = {
                "startupProbe": "/v2/health/ready",
                "readinessProbe": "/v2/health/ready",
                "livenessProbe": "/v2/health/live",
            }
        assert paths == expected, target
        # MLServer's REST port, whatever the platform calls it.
        ports = {port_number(container, container[n]["httpGet"]["port"]) for n in probes}
        assert ports == {8080}, target


def test_draining_fits_in_the_grace_period(every_pod: list[tuple[str, Any]]) -> None:
    default_grace = CassavaSettings.model_fields["shutdown_grace_seconds"].default
    default_lame_duck = CassavaSettings.model_fields["lame_duck_seconds"].default
    for target, pod in every_pod:
        container = our_container(pod.spec)
        env = {e["name"]: e.get("value") for e in container.get("env") or []}
        # After SIGTERM the launcher answers as a lame duck (not ready), then drains.
        drain = float(env.get("CASSAVA_LAME_DUCK_SECONDS") or default_lame_duck) + float(
            env.get("CASSAVA_SHUTDOWN_GRACE_SECONDS") or default_grace
        )
        pre_stop = container["lifecycle"]["preStop"]
        if "httpGet" in pre_stop:
            # Seldon Core 2's agent drain (tests/deploy/test_seldon_v2.py): it returns once the replica's
            # models have moved, then SIGTERM and the launcher's drain; Seldon's 120 s cap both.
            assert pre_stop["httpGet"] == {"port": 9007, "path": "terminate"}, target
            assert pod.spec["terminationGracePeriodSeconds"] >= MODEL_MOVE_SECONDS + drain + 5, target
            continue
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep", target
        sleep = int(command[1])
        # Long enough for the endpoint removal to reach kube-proxy and the ingress.
        assert sleep >= 5, target
        # preStop, then SIGTERM and the launcher's drain, then 5 s for the worker, before SIGKILL.
        assert pod.spec["terminationGracePeriodSeconds"] >= sleep + drain + 5, target


def test_inference_threads_follow_the_cpu_limit(every_pod: list[tuple[str, Any]]) -> None:
    for target, pod in every_pod:
        container = our_container(pod.spec)
        (threads,) = [e for e in container["env"] if e["name"] == "CASSAVA_INFERENCE_THREADS"]
        assert threads["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu", target
        resources = container["resources"]
        assert resources["requests"]["cpu"] == resources["limits"]["cpu"], target  # Guaranteed CPU


def test_the_image_runs_as_non_root_with_a_healthcheck() -> None:
    assert IMAGE_STAGE.user is not None
    uid, _, gid = IMAGE_STAGE.user.partition(":")
    assert uid.isdigit()
    assert int(uid) > 0
    assert gid.isdigit()
    assert "/v2/health/ready" in " ".join(IMAGE_STAGE.healthcheck)
