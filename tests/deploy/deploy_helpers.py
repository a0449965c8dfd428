"""Shared by tests/deploy: rendered overlays, CRD schemas, and the pod specs inside every platform's object.

Importable by name: pytest puts this folder on sys.path for the test modules next to it.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cassava.ops.manifests import AUTOSCALE_COMPONENTS, TARGETS, kustomize, load_all, render

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# The same place as tests/conftest.py's SHARED: the workplace's ../shared, absent from a plain clone.
SHARED = ROOT.parent / "shared"
CRDS = SHARED / "specs" / "crds"

#: a digest-pinned image, as a production deploy uses (CKV_K8S_43 wants digests)
IMAGE = "registry.example.com/ml/cassava@sha256:" + "0123456789abcdef" * 4
NAMESPACE = "cassava-test"
#: Kubernetes versions the core objects must validate against: the oldest we support, the newest bundled
K8S_VERSIONS = ("1.30.0", "1.37.0")

#: what the platforms call the cassava container
OUR_CONTAINERS = {"cassava", "mlserver", "kserve-container"}


def needs_kubectl() -> None:
    if shutil.which("kubectl") is None and shutil.which("kustomize") is None:
        pytest.skip("kubectl (or kustomize) is not installed; it renders deploy/")


def needs_shared() -> None:
    if not CRDS.is_dir():
        pytest.skip(f"{CRDS} is absent (the CRD schemas ship with the workplace's ../shared, not a clone)")


@functools.cache
def overlay_docs(overlay: str) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize deploy/overlays/OVERLAY` (or any deploy/ sub-folder), parsed."""
    return tuple(load_all(kustomize(DEPLOY / overlay)))


#: how a render variant with `--autoscale` is named in test ids: "seldon-v1+autoscale"
AUTOSCALED = "+autoscale"


@functools.cache
def rendered_docs(variant: str) -> tuple[dict[str, Any], ...]:
    """`cassava deploy render` output for a target (with `+autoscale`: `--autoscale`), with the digest
    image, a namespace and 3 replicas."""
    target, _, suffix = variant.partition("+")
    autoscale = f"+{suffix}" == AUTOSCALED
    return tuple(load_all(render(target, IMAGE, replicas=3, namespace=NAMESPACE, autoscale=autoscale)))


def all_targets() -> list[str]:
    return list(TARGETS)


def autoscale_targets() -> list[str]:
    """The targets whose autoscaler is opt-in (a component); the others always have one."""
    return [t for t, overlay in TARGETS.items() if (DEPLOY / AUTOSCALE_COMPONENTS / overlay).is_dir()]


def all_renders() -> list[str]:
    """Every distinct thing `cassava deploy render` can produce: each target, and the opt-in autoscaled
    variants."""
    return all_targets() + [t + AUTOSCALED for t in autoscale_targets()]


# --- CRD schemas --------------------------------------------------------------------------------------


@functools.cache
def crd_documents() -> tuple[dict[str, Any], ...]:
    # The C loader when PyYAML has it: the big CRDs take 2-3 s each with the Python one.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return tuple(yaml.load(p.read_text(), Loader=loader) for p in sorted(CRDS.glob("*.yaml")))


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema of every served version of every CRD in shared/specs."""
    schemas = {}
    for crd in crd_documents():
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def crd_file_of(kind: str) -> dict[str, Any]:
    for crd in crd_documents():
        if crd["spec"]["names"]["kind"] == kind:
            return dict(crd)
    raise LookupError(kind)


def unknown_keys(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Paths in `value` that the structural schema does not declare: what the API server would prune
    without a word. Follows properties, additionalProperties and items; honours
    x-kubernetes-preserve-unknown-fields (anything below is kept) and x-kubernetes-int-or-string."""
    if schema.get("x-kubernetes-int-or-string"):
        return [] if isinstance(value, int | str) else [f"{path} (int or string expected)"]
    if isinstance(value, dict):
        props = schema.get("properties")
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        problems = []
        for key, child in value.items():
            where = f"{path}.{key}" if path else key
            if props is not None and key in props:
                problems += unknown_keys(child, props[key], where)
            elif isinstance(additional, dict):
                problems += unknown_keys(child, additional, where)
            elif additional is True or preserve:
                continue
            else:
                problems.append(where)
        return problems
    if isinstance(value, list):
        items = schema.get("items")
        if not isinstance(items, dict):
            return []
        return [p for i, child in enumerate(value) for p in unknown_keys(child, items, f"{path}[{i}]")]
    return []


# --- the pod specs inside each platform's object --------------------------------------------------------


@dataclass(frozen=True)
class PodSpecAt:
    where: str  # e.g. "SeldonDeployment/cassava spec.predictors[0].componentSpecs[0].spec"
    spec: dict[str, Any]
    labels: dict[str, str]


def pod_specs(docs: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> Iterator[PodSpecAt]:
    """Every pod this project's objects make, as a plain Kubernetes PodSpec (KServe's predictor is
    reassembled from its pod fields and `model` container, as KServe merges them)."""
    for doc in docs:
        kind, name, spec = doc["kind"], doc["metadata"]["name"], doc.get("spec") or {}
        if kind in ("Deployment", "StatefulSet"):
            template = spec["template"]
            yield PodSpecAt(
                f"{kind}/{name} spec.template.spec", template["spec"], template["metadata"]["labels"]
            )
        elif kind == "SeldonDeployment":
            for p, predictor in enumerate(spec["predictors"]):
                for c, component in enumerate(predictor.get("componentSpecs") or []):
                    labels = (component.get("metadata") or {}).get("labels") or {}
                    where = f"{kind}/{name} spec.predictors[{p}].componentSpecs[{c}].spec"
                    yield PodSpecAt(where, component["spec"], labels)
        elif kind == "ServerConfig":
            yield PodSpecAt(
                f"{kind}/{name} spec.podSpec", spec["podSpec"], doc["metadata"].get("labels") or {}
            )
        elif kind == "InferenceService":
            predictor = dict(spec["predictor"])
            model = dict(predictor.pop("model"))
            for key in (
                "modelFormat",
                "protocolVersion",
                "runtime",
                "runtimeVersion",
                "storageUri",
                "storage",
            ):
                model.pop(key, None)
            component_only = (
                "minReplicas",
                "maxReplicas",
                "scaleMetric",
                "scaleMetricType",
                "scaleTarget",
                "autoScaling",
                "containerConcurrency",
                "timeout",
                "canaryTrafficPercent",
                "logger",
                "batcher",
                "labels",
                "annotations",
                "deploymentStrategy",
                "workerSpec",
            )
            labels = predictor.get("labels") or {}
            pod = {k: v for k, v in predictor.items() if k not in component_only}
            pod["containers"] = [{"name": "kserve-container", **model}]
            yield PodSpecAt(f"{kind}/{name} spec.predictor (+ model)", pod, labels)


def our_container(spec: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in spec["containers"] if c["name"] in OUR_CONTAINERS]
    return dict(container)


def as_pod(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "cassava"}, "spec": spec}
