"""The pieces of `cassava deploy render` and `cassava build` that need no kubectl or engine."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cassava.ops import manifests
from cassava.ops.dockerfile import parse
from cassava.ops.manifests import ImageRef, RenderError, find_deploy_dir, replica_fields, replica_patches

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("cassava:0.1.0", {"name": "cassava", "newName": "cassava", "newTag": "0.1.0"}),
        (
            "registry:5000/ml/cassava:1",
            {"name": "cassava", "newName": "registry:5000/ml/cassava", "newTag": "1"},
        ),
        (
            "registry:5000/cassava@sha256:" + "a" * 64,
            {"name": "cassava", "newName": "registry:5000/cassava", "digest": "sha256:" + "a" * 64},
        ),
        (
            "ghcr.io/o/cassava:2@sha256:" + "b" * 64,
            {
                "name": "cassava",
                "newName": "ghcr.io/o/cassava",
                "newTag": "2",
                "digest": "sha256:" + "b" * 64,
            },
        ),
    ],
)
def test_image_references(image: str, expected: dict[str, str]) -> None:
    assert ImageRef.parse(image).kustomize_entry() == expected


def test_a_registry_port_is_not_a_tag() -> None:
    with pytest.raises(RenderError, match="neither a tag nor a digest"):
        ImageRef.parse("registry:5000/cassava")


SDEP = {
    "kind": "SeldonDeployment",
    "metadata": {"name": "cassava"},
    "spec": {
        "replicas": 2,
        "predictors": [
            {"componentSpecs": [{"hpaSpec": {"minReplicas": 2, "maxReplicas": 10}}, {"spec": {}}]}
        ],
    },
}


def test_replica_fields_of_a_seldon_deployment() -> None:
    fields = {(f.pointer, f.role, f.value) for f in replica_fields(SDEP)}
    assert fields == {
        ("/spec/replicas", "replicas", 2),
        ("/spec/predictors/0/componentSpecs/0/hpaSpec/minReplicas", "min", 2),
        ("/spec/predictors/0/componentSpecs/0/hpaSpec/maxReplicas", "max", 10),
    }


@pytest.mark.parametrize(("replicas", "max_after"), [(3, None), (12, 12)])
def test_replica_patches(replicas: int, max_after: int | None) -> None:
    (patch,) = replica_patches([SDEP, {"kind": "Service", "metadata": {"name": "x"}, "spec": {}}], replicas)
    assert patch["target"] == {"kind": "SeldonDeployment", "name": "cassava"}
    ops = {op["path"]: op["value"] for op in yaml.safe_load(patch["patch"])}
    assert ops["/spec/replicas"] == replicas
    assert ops["/spec/predictors/0/componentSpecs/0/hpaSpec/minReplicas"] == replicas
    assert ops.get("/spec/predictors/0/componentSpecs/0/hpaSpec/maxReplicas") == max_after


def test_dockerfile_parser() -> None:
    text = """
    ARG BASE=python:3.11-slim
    FROM ${BASE} AS one
    ARG FLAVOUR=tf
    ENV A=1 \\
        B="two words" \\
        C=${FLAVOUR}-x
    # a comment between instructions
    RUN echo a \\
     # a comment inside a continuation
     && echo b
    CMD ["x"]
    FROM one AS two
    ENTRYPOINT ["python", "-m", "m"]
    CMD ["/folder"]
    HEALTHCHECK --interval=5s CMD ["python", "-c", "pass"]
    USER 10001:10001
    """
    one, two = parse(text)
    assert (one.name, one.base) == ("one", "python:3.11-slim")
    assert one.env == {"A": "1", "B": "two words", "C": "tf-x"}
    assert one.runs == ["echo a  && echo b"]
    assert two.base == "one"
    assert two.command == ["python", "-m", "m", "/folder"]
    assert two.healthcheck == ["python", "-c", "pass"]
    assert two.user == "10001:10001"


def test_the_packaged_deploy_dir_is_the_last_resort() -> None:
    """A checkout's deploy/ wins over the copy a wheel carries (tests/deploy/test_packaging.py builds the
    wheel and renders from that copy alone)."""
    candidates = manifests.deploy_dir_candidates()
    assert candidates[1] == ROOT / "deploy"
    assert candidates[-1] == Path(manifests.__file__).resolve().parent / "deploy"


def test_a_missing_deploy_dir_names_the_places_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match="--deploy-dir") as err:
        find_deploy_dir(tmp_path)
    assert str(tmp_path) in str(err.value)
