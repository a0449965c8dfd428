"""Every object validates: Kubernetes kinds against Kubernetes' own schemas (strict: no unknown field),
custom resources against their CRD's openAPIV3Schema (jsonschema) and, since CRDs do not forbid unknown
keys, key by key against the schema's properties (an unknown key would be pruned by the API server
without a word). The pod specs inside custom resources are also validated as Pods."""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from deploy_helpers import (
    K8S_VERSIONS,
    all_renders,
    as_pod,
    crd_schemas,
    needs_kubectl,
    needs_shared,
    overlay_docs,
    pod_specs,
    rendered_docs,
    unknown_keys,
)

#: what `kubectl apply` would receive, per source
SOURCES = {f"render --target {t}": (lambda t=t: rendered_docs(t)) for t in all_renders()}
SOURCES["deploy/monitoring"] = lambda: overlay_docs("monitoring")
SOURCES["deploy/extras/keda"] = lambda: overlay_docs("extras/keda")

#: Custom resources whose CRD is not among the reference schemas in ../shared/specs/crds. They are
#: checked by hand (fields from the operators' documentation) and, where they hold containers, those
#: are validated as a Pod's below.
NO_SCHEMA_HERE = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
}


def is_core(doc: dict[str, Any]) -> bool:
    group = doc["apiVersion"].rpartition("/")[0]
    return group == "" or "." not in group or group.endswith(".k8s.io")


def documents() -> list[tuple[str, dict[str, Any]]]:
    needs_kubectl()
    return [(source, doc) for source, docs in SOURCES.items() for doc in docs()]


def ids(item: tuple[str, dict[str, Any]]) -> str:
    return f"{item[0]}:{item[1]['kind']}"


@pytest.fixture(scope="module")
def docs() -> list[tuple[str, dict[str, Any]]]:
    return documents()


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_objects_validate_strictly(docs: list[tuple[str, dict[str, Any]]], version: str) -> None:
    core = [(s, d) for s, d in docs if is_core(d)]
    assert {d["kind"] for _, d in core} >= {"Deployment", "Service", "HorizontalPodAutoscaler"}
    for source, doc in core:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{source}: {doc['kind']}/{doc['metadata']['name']} on Kubernetes {version}: {err}")


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_pod_specs_inside_custom_resources_validate_as_pods(
    docs: list[tuple[str, dict[str, Any]]], version: str
) -> None:
    checked = 0
    for source, doc in docs:
        for pod in pod_specs([doc]):
            try:
                kubernetes_validate.validate(as_pod(pod.spec), version, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(f"{source}: {pod.where} on Kubernetes {version}: {err}")
            checked += 1
        if doc["kind"] == "ServingRuntime":
            spec = {"containers": [{"image": "placeholder", **c} for c in doc["spec"]["containers"]]}
            kubernetes_validate.validate(as_pod(spec), version, strict=True)
            checked += 1
    assert checked >= 5


def test_custom_resources_validate_against_their_crds(docs: list[tuple[str, dict[str, Any]]]) -> None:
    needs_shared()
    schemas = crd_schemas()
    validated = set()
    for source, doc in docs:
        key = (doc["apiVersion"], doc["kind"])
        if is_core(doc) or key in NO_SCHEMA_HERE:
            continue
        assert key in schemas, f"{source}: no CRD schema for {key}; add it to shared or to NO_SCHEMA_HERE"
        schema = schemas[key]
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: e.path)
        assert not errors, f"{source}: {doc['kind']}: " + "; ".join(
            f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors
        )
        # metadata is ObjectMeta, which CRDs leave open; the API server checks it, not the schema.
        body = {k: v for k, v in doc.items() if k != "metadata"}
        unknown = unknown_keys(body, schema)
        assert not unknown, f"{source}: {doc['kind']} has keys its CRD does not know (pruned): {unknown}"
        validated.add(doc["kind"])
    assert validated == {"SeldonDeployment", "Server", "ServerConfig", "Model", "InferenceService"}


def test_kinds_without_a_schema_here_are_only_the_known_ones(docs: list[tuple[str, dict[str, Any]]]) -> None:
    needs_shared()
    schemas = crd_schemas()
    unvalidated = {
        (d["apiVersion"], d["kind"])
        for _, d in docs
        if not is_core(d) and (d["apiVersion"], d["kind"]) not in schemas
    }
    assert unvalidated == NO_SCHEMA_HERE


def test_the_key_walker_catches_what_jsonschema_does_not() -> None:
    """A misspelt key passes the CRD's jsonschema (no additionalProperties: false) but not the walker;
    int-or-string and preserve-unknown-fields are honoured."""
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "replicas": {"type": "integer"},
                    "port": {
                        "x-kubernetes-int-or-string": True,
                        "anyOf": [{"type": "integer"}, {"type": "string"}],
                    },
                    "items": {
                        "type": "array",
                        "items": {"type": "object", "properties": {"name": {"type": "string"}}},
                    },
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            }
        },
    }
    good = {
        "spec": {
            "replicas": 1,
            "port": "http",
            "items": [{"name": "a"}],
            "free": {"any": {"thing": 1}},
            "labels": {"a": "b"},
        }
    }
    misspelt = {"spec": {"replica": 1, "items": [{"name": "a", "nmae": "b"}]}}
    assert not list(jsonschema.Draft7Validator(schema).iter_errors(misspelt))
    assert unknown_keys(good, schema) == []
    assert unknown_keys(misspelt, schema) == ["spec.replica", "spec.items[0].nmae"]
    assert unknown_keys({"spec": {"port": [1]}}, schema) == ["spec.port (int or string expected)"]
