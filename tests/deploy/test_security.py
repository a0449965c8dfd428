"""Pod security and draining, asserted on every pod every target makes (Seldon's and KServe's included),
and tied to the image: what the Dockerfile makes writable is exactly what the pods mount writable."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import pytest
from deploy_helpers import ROOT, all_targets, needs_kubectl, our_container, pod_specs, rendered_docs

from cassava.dockerfile import final_stage
from cassava.settings import CassavaSettings

IMAGE_STAGE = final_stage(ROOT / "Dockerfile")
#: the image's ENV entries that name a directory the server writes to
WRITABLE_ENV = ("MLSERVER_METRICS_DIR", "MLSERVER_ENVIRONMENTS_DIR", "HOME", "TMPDIR", "KERAS_HOME")


def pods() -> list[tuple[str, Any]]:
    needs_kubectl()
    return [(t, pod) for t in all_targets() for pod in pod_specs(rendered_docs(t))]


@pytest.fixture(scope="module")
def every_pod() -> list[tuple[str, Any]]:
    found = pods()
    assert {t for t, _ in found} == set(all_targets())
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
                assert (target, container["name"]) == ("seldon-v2", "agent")


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


def test_probes_use_the_v2_health_endpoints(every_pod: list[tuple[str, Any]]) -> None:
    for target, pod in every_pod:
        container = our_container(pod.spec)
        paths = {
            name: container[name]["httpGet"]["path"]
            for name in ("startupProbe", "readinessProbe", "livenessProbe")
        }
        assert paths == {
            "startupProbe": "/v2/health/ready",
            "readinessProbe": "/v2/health/ready",
            "livenessProbe": "/v2/health/live",
        }, target
        # MLServer's REST port, whatever the platform calls it.
        assert {container[n]["httpGet"]["port"] for n in paths} == {8080}, target


def test_draining_fits_in_the_grace_period(every_pod: list[tuple[str, Any]]) -> None:
    default_grace = CassavaSettings.model_fields["shutdown_grace_seconds"].default
    for target, pod in every_pod:
        container = our_container(pod.spec)
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep", target
        sleep = int(command[1])
        # Long enough for the endpoint removal to reach kube-proxy and the ingress.
        assert sleep >= 5, target
        env = {e["name"]: e.get("value") for e in container.get("env") or []}
        drain = float(env.get("CASSAVA_SHUTDOWN_GRACE_SECONDS") or default_grace)
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
