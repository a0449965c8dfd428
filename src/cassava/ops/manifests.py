"""Ready-to-apply Kubernetes manifests, rendered from the kustomize overlays in deploy/.

The overlays are the only definition of the deployments. Rendering copies deploy/ into a temporary
directory, adds a kustomization on top of the chosen overlay that sets the image, the namespace and the
replica counts (kustomize `images`, `namespace` and JSON patches) and, with `autoscale`, the overlay's
autoscaling component (deploy/components/autoscale/OVERLAY), and runs `kubectl kustomize` on it.
Nothing here writes a manifest field by hand except those patches.

deploy/ ships inside the wheel as `cassava/ops/deploy` (pyproject.toml, hatch `force-include`), so
rendering works from an installed package as well as from a checkout.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cassava.errors import CassavaError

#: `cassava deploy render --target` -> deploy/overlays/<dir>
TARGETS: dict[str, str] = {
    "seldon-v1": "seldon-core-v1",
    "seldon-v2": "seldon-core-v2",
    "kserve": "kserve",
    "kubernetes": "kubernetes",
}
#: The container image name the overlays use; rendering replaces it with the real image.
IMAGE_PLACEHOLDER = "cassava"
#: deploy/<this>/<overlay>: the kustomize component that adds autoscaling to an overlay that has none
#: (Seldon Core v1 and 2 scale by hand by default, as the seed does; kserve and kubernetes always scale).
AUTOSCALE_COMPONENTS = Path("components") / "autoscale"
#: deploy/<this>/<profile>: the component that sets CASSAVA_PROFILE on every target's model server.
PROFILE_COMPONENTS = Path("components") / "profile"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_KUBECTL_TIMEOUT = 60.0


class RenderError(CassavaError):
    """The manifests could not be rendered; the message says what to change."""


@dataclass(frozen=True)
class ImageRef:
    name: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, image: str) -> ImageRef:
        """`registry[:port]/path/name[:tag][@sha256:...]`; one of tag or digest is required."""
        rest, _, digest = image.partition("@")
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        name, tag = (rest[:colon], rest[colon + 1 :]) if colon > slash else (rest, "")
        if not name or name.endswith("/"):
            raise RenderError(f"--image {image!r} has no image name")
        if digest and not _DIGEST.match(digest):
            raise RenderError(f"--image {image!r}: the digest must be sha256: and 64 hex digits")
        if not tag and not digest:
            raise RenderError(
                f"--image {image!r} has neither a tag nor a digest; it would mean ':latest', which makes "
                "a rollout unrepeatable. Give NAME:TAG or, better, NAME@sha256:DIGEST"
            )
        return cls(name=name, tag=tag or None, digest=digest or None)

    def kustomize_entry(self) -> dict[str, str]:
        entry = {"name": IMAGE_PLACEHOLDER, "newName": self.name}
        if self.tag:
            entry["newTag"] = self.tag
        if self.digest:
            entry["digest"] = self.digest
        return entry


def deploy_dir_candidates() -> list[Path]:
    """Where deploy/ is looked for: ./deploy (a checkout you are editing), the checkout this package runs
    from (editable install), the copy inside the installed package (a wheel)."""
    here = Path(__file__).resolve().parent
    return [Path.cwd() / "deploy", here.parents[2] / "deploy", here / "deploy"]


def find_deploy_dir(explicit: Path | None = None) -> Path:
    """deploy/ given, else the first of `deploy_dir_candidates()` that holds base/ and overlays/."""
    candidates = [explicit] if explicit else deploy_dir_candidates()
    for candidate in candidates:
        if (candidate / "overlays").is_dir() and (candidate / "base").is_dir():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise RenderError(
        f"no deploy/ directory with base/ and overlays/ at {looked}; pass --deploy-dir, or reinstall "
        "cassava-serving (its wheel ships deploy/ as cassava/ops/deploy)"
    )


def kustomize_command() -> list[str]:
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    if kustomize := shutil.which("kustomize"):
        return [kustomize, "build"]
    raise RenderError(
        "kubectl is not installed (it renders the kustomize overlays); install kubectl 1.27 or newer, "
        "or the standalone kustomize, and make sure it is on PATH"
    )


def kustomize(directory: Path) -> str:
    try:
        done = subprocess.run(
            [*kustomize_command(), str(directory)],
            capture_output=True,
            text=True,
            timeout=_KUBECTL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise RenderError(f"kustomize did not finish within {_KUBECTL_TIMEOUT:.0f} s on {directory}") from err
    if done.returncode != 0:
        raise RenderError(f"kustomize failed on {directory}: {done.stderr.strip()}")
    return done.stdout


def load_all(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


# --- replica counts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaField:
    """One replica-count field of a rendered object, as a JSON pointer, with its role."""

    pointer: str
    role: str  # "replicas" (a fixed count), "min" or "max" (an autoscaler's bounds)
    value: int


def replica_fields(doc: dict[str, Any]) -> Iterator[ReplicaField]:
    """Every replica count this project's manifests set, wherever each platform keeps it."""
    kind, spec = doc.get("kind"), doc.get("spec") or {}

    def fields(node: dict[str, Any], prefix: str, names: dict[str, str]) -> Iterator[ReplicaField]:
        for key, role in names.items():
            if isinstance(node.get(key), int):
                yield ReplicaField(f"{prefix}/{key}", role, node[key])

    counts = {"replicas": "replicas", "minReplicas": "min", "maxReplicas": "max"}
    if kind in ("Deployment", "StatefulSet", "HorizontalPodAutoscaler", "Server", "Model"):
        yield from fields(spec, "/spec", counts)
    elif kind == "InferenceService":
        yield from fields(spec.get("predictor") or {}, "/spec/predictor", counts)
    elif kind == "SeldonDeployment":
        yield from fields(spec, "/spec", counts)
        for p, predictor in enumerate(spec.get("predictors") or []):
            for c, component in enumerate(predictor.get("componentSpecs") or []):
                hpa = component.get("hpaSpec")
                if isinstance(hpa, dict):
                    prefix = f"/spec/predictors/{p}/componentSpecs/{c}/hpaSpec"
                    yield from fields(hpa, prefix, counts)


def replica_patches(docs: list[dict[str, Any]], replicas: int) -> list[dict[str, Any]]:
    """JSON patches that make `replicas` the count everywhere: fixed counts become it, autoscalers'
    minimums become it, and a maximum below it is raised to it."""
    patches = []
    for doc in docs:
        ops = []
        for field in replica_fields(doc):
            if field.role in ("replicas", "min") or (field.role == "max" and field.value < replicas):
                ops.append({"op": "replace", "path": field.pointer, "value": replicas})
        if ops:
            target = {"kind": doc["kind"], "name": doc["metadata"]["name"]}
            patches.append({"target": target, "patch": yaml.safe_dump(ops, sort_keys=False)})
    return patches


# --- render -------------------------------------------------------------------------------------------


def render(
    target: str,
    image: str,
    *,
    replicas: int | None = None,
    namespace: str | None = None,
    model_uri: str | None = None,
    deploy_dir: Path | None = None,
    autoscale: bool = False,
    profile: str | None = None,
) -> str:
    """The YAML of `target`'s overlay with the given image, namespace and replica count; `autoscale`
    adds the overlay's autoscaling component where it has one (kserve and kubernetes always autoscale);
    `profile` the component that sets the serving profile (none: the image's, the default one)."""
    if target not in TARGETS:
        raise RenderError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if replicas is not None and replicas < 1:
        raise RenderError(f"--replicas {replicas}: at least 1")
    if namespace is not None and not _DNS_LABEL.match(namespace):
        raise RenderError(f"--namespace {namespace!r} is not a valid namespace name (RFC 1123 label)")
    if model_uri is not None and target != "seldon-v2":
        raise RenderError("--model-uri applies to --target seldon-v2 only (the others read no model URI)")
    ref = ImageRef.parse(image)
    source = find_deploy_dir(deploy_dir)
    if profile is not None and not (source / PROFILE_COMPONENTS / profile).is_dir():
        known = sorted(p.name for p in (source / PROFILE_COMPONENTS).glob("*") if p.is_dir())
        raise RenderError(f"unknown profile {profile!r}; choose one of {', '.join(known)}")
    overlay = TARGETS[target]
    with tempfile.TemporaryDirectory(prefix="cassava-render-") as tmp:
        work = Path(tmp)
        shutil.copytree(source, work / "deploy")
        (work / "render").mkdir()
        kustomization: dict[str, Any] = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [f"../deploy/overlays/{overlay}"],
        }
        components = []
        if autoscale and (work / "deploy" / AUTOSCALE_COMPONENTS / overlay).is_dir():
            components.append(f"../deploy/{AUTOSCALE_COMPONENTS.as_posix()}/{overlay}")
        if profile is not None:
            components.append(f"../deploy/{PROFILE_COMPONENTS.as_posix()}/{profile}")
        if components:
            kustomization["components"] = components
        # First without image and patches: the replica fields to patch are those of this variant.
        (work / "render" / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
        plain = load_all(kustomize(work / "render"))
        kustomization["images"] = [ref.kustomize_entry()]
        if namespace:
            kustomization["namespace"] = namespace
        patches = replica_patches(plain, replicas) if replicas is not None else []
        if model_uri is not None:
            ops = [{"op": "replace", "path": "/spec/storageUri", "value": model_uri}]
            target_ref = {"kind": "Model", "name": "cassava"}
            patches.append({"target": target_ref, "patch": yaml.safe_dump(ops, sort_keys=False)})
        if patches:
            kustomization["patches"] = patches
        (work / "render" / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
        rendered = kustomize(work / "render")
    header = f"# cassava deploy render --target {target} --image {image}"
    if autoscale:
        header += " --autoscale"
    if profile is not None:
        header += f" --profile {profile}"
    if replicas is not None:
        header += f" --replicas {replicas}"
    if namespace:
        header += f" --namespace {namespace}"
    return f"{header}\n# from deploy/overlays/{overlay}; do not edit, render again\n{rendered}"
