"""Every overlay renders, and `cassava deploy render` gives each target the image, namespace and replicas
asked for, through kustomize on the overlays (no second copy of the manifests)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import (
    CRDS,
    DEPLOY,
    IMAGE,
    NAMESPACE,
    all_renders,
    autoscale_targets,
    needs_kubectl,
    needs_shared,
    overlay_docs,
    pod_specs,
    rendered_docs,
)
from typer.testing import CliRunner

from cassava.cli.main import app
from cassava.ops.manifests import TARGETS, RenderError, load_all, render

#: the objects each target is made of (kind, name)
EXPECTED = {
    "seldon-core-v1": {("SeldonDeployment", "cassava"), ("ServiceAccount", "cassava")},
    "seldon-core-v2": {("ServerConfig", "cassava-mlserver"), ("Server", "cassava"), ("Model", "cassava")},
    "kserve": {
        ("InferenceService", "cassava"),
        ("ServingRuntime", "cassava-mlserver"),
        ("ServiceAccount", "cassava"),
    },
    "kubernetes": {
        ("Deployment", "cassava"),
        ("Service", "cassava"),
        ("HorizontalPodAutoscaler", "cassava"),
        ("PodDisruptionBudget", "cassava"),
        ("NetworkPolicy", "cassava"),
        ("ServiceAccount", "cassava"),
    },
    "../monitoring": {
        ("PodMonitor", "cassava"),
        ("PrometheusRule", "cassava"),
        ("ConfigMap", "cassava-grafana-dashboard"),
    },
}
# The KEDA extra: the kubernetes target with KEDA's ScaledObject in place of the HPA.
EXPECTED["../extras/keda"] = EXPECTED["kubernetes"] - {("HorizontalPodAutoscaler", "cassava")} | {
    ("ScaledObject", "cassava")
}


@pytest.fixture(autouse=True)
def _kubectl() -> None:
    needs_kubectl()


@pytest.mark.parametrize("overlay", sorted(EXPECTED))
def test_every_overlay_renders_exactly_its_objects(overlay: str) -> None:
    docs = overlay_docs(f"overlays/{overlay}")
    assert {(d["kind"], d["metadata"]["name"]) for d in docs} == EXPECTED[overlay]
    # The shared pod definition is copied into the platform's object and never shipped itself.
    assert all(d["kind"] != "PodTemplate" for d in docs)


def test_the_targets_are_the_overlays() -> None:
    assert set(TARGETS.values()) == {p.name for p in (DEPLOY / "overlays").iterdir() if p.is_dir()}


def test_autoscaling_is_opt_in_exactly_where_the_seed_scales_by_hand() -> None:
    """Seldon Core v1 (the seed) and Seldon Core 2 have fixed counts unless `--autoscale`; what it adds."""
    assert autoscale_targets() == ["seldon-v1", "seldon-v2"]
    for target in autoscale_targets():
        plain, scaled = rendered_docs(target), rendered_docs(f"{target}+autoscale")
        assert not [d for d in plain if d["kind"] == "HorizontalPodAutoscaler"]
        assert "hpaSpec" not in yaml.safe_dump_all(plain)
        added = {(d["kind"], d["metadata"]["name"]) for d in scaled} - {
            (d["kind"], d["metadata"]["name"]) for d in plain
        }
        assert added == ({("HorizontalPodAutoscaler", "cassava")} if target == "seldon-v2" else set())


@pytest.mark.parametrize("target", all_renders())
def test_render_sets_image_namespace_and_replicas(target: str) -> None:
    docs = rendered_docs(target)
    assert all(d["metadata"]["namespace"] == NAMESPACE for d in docs)
    # KServe's predictor names no image: KServe takes the ServingRuntime's.
    images = [c["image"] for p in pod_specs(docs) for c in p.spec["containers"] if "image" in c]
    images += [c["image"] for d in docs if d["kind"] == "ServingRuntime" for c in d["spec"]["containers"]]
    ours = [i for i in images if "seldonio/" not in i]  # Seldon Core 2's agent and rclone keep theirs
    assert ours, images
    assert all(i == IMAGE for i in ours), images
    by_kind = {d["kind"]: d for d in docs}
    if target == "seldon-v1":
        sdep = by_kind["SeldonDeployment"]
        assert sdep["spec"]["replicas"] == 3
        assert "hpaSpec" not in sdep["spec"]["predictors"][0]["componentSpecs"][0]
    elif target == "seldon-v1+autoscale":
        sdep = by_kind["SeldonDeployment"]
        assert sdep["spec"]["predictors"][0]["componentSpecs"][0]["hpaSpec"]["minReplicas"] == 3
    elif target == "seldon-v2":
        for kind in ("Server", "Model"):
            assert by_kind[kind]["spec"]["replicas"] == 3
            assert "minReplicas" not in by_kind[kind]["spec"]
    elif target == "seldon-v2+autoscale":
        hpa = by_kind["HorizontalPodAutoscaler"]
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "mlops.seldon.io/v1alpha1",
            "kind": "Server",
            "name": "cassava",
        }
        assert hpa["spec"]["minReplicas"] == 3
        # The HPA owns the Server's count; a fixed one would be reset on every apply.
        assert "replicas" not in by_kind["Server"]["spec"]
        assert by_kind["Model"]["spec"]["minReplicas"] == 3
    elif target == "kserve":
        assert by_kind["InferenceService"]["spec"]["predictor"]["minReplicas"] == 3
    else:
        assert by_kind["HorizontalPodAutoscaler"]["spec"]["minReplicas"] == 3
        # The HPA owns the count: a fixed one in the Deployment would fight it on every apply.
        assert "replicas" not in by_kind["Deployment"]["spec"]


def test_more_replicas_than_the_autoscalers_maximum_raises_the_maximum() -> None:
    needs_kubectl()
    docs = load_all(render("kubernetes", "cassava:1.0", replicas=25))
    (hpa,) = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (25, 25)


def test_without_options_the_overlay_values_stay() -> None:
    docs = load_all(render("seldon-v1", "registry.example.com/cassava:0.1.0"))
    (sdep,) = [d for d in docs if d["kind"] == "SeldonDeployment"]
    overlay = yaml.safe_load((DEPLOY / "overlays/seldon-core-v1/seldondeployment.yaml").read_text())
    assert sdep["spec"]["replicas"] == overlay["spec"]["replicas"]
    assert all("namespace" not in d["metadata"] for d in docs)


def test_seldon_v2_model_uri() -> None:
    docs = load_all(render("seldon-v2", "cassava:1.0", model_uri="s3://models/cassava/1"))
    (model,) = [d for d in docs if d["kind"] == "Model"]
    assert model["spec"]["storageUri"] == "s3://models/cassava/1"


def test_the_seldon_deployment_scales_with_kubectl_scale() -> None:
    """`kubectl scale sdep cassava --replicas=3` writes the scale subresource's specReplicasPath."""
    needs_shared()
    from deploy_helpers import crd_file_of

    crd = crd_file_of("SeldonDeployment")
    assert "sdep" in crd["spec"]["names"]["shortNames"]
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    assert v1["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    (sdep,) = [d for d in overlay_docs("overlays/seldon-core-v1") if d["kind"] == "SeldonDeployment"]
    assert sdep["apiVersion"] == "machinelearning.seldon.io/v1"
    assert isinstance(sdep["spec"]["replicas"], int)
    # Likewise `kubectl scale server cassava --replicas=3` on Seldon Core 2.
    server_crd = crd_file_of("Server")
    assert server_crd["spec"]["versions"][0]["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert CRDS.is_dir()


def test_the_seed_deployment_is_kept() -> None:
    """The seed tutorial's SeldonDeployment, field for field, inside ours."""
    (sdep,) = [d for d in overlay_docs("overlays/seldon-core-v1") if d["kind"] == "SeldonDeployment"]
    assert sdep["metadata"]["name"] == "cassava"
    assert sdep["spec"]["protocol"] == "v2"
    (predictor,) = sdep["spec"]["predictors"]
    assert predictor["name"] == "cassava"
    assert {k: predictor["graph"][k] for k in ("name", "type")} == {"name": "cassava", "type": "MODEL"}
    (container,) = predictor["componentSpecs"][0]["spec"]["containers"]
    assert container["name"] == "cassava"


def test_kserve_declares_the_v2_protocol() -> None:
    docs = overlay_docs("overlays/kserve")
    (isvc,) = [d for d in docs if d["kind"] == "InferenceService"]
    (runtime,) = [d for d in docs if d["kind"] == "ServingRuntime"]
    model = isvc["spec"]["predictor"]["model"]
    assert model["protocolVersion"] == "v2"
    assert model["runtime"] == runtime["metadata"]["name"]
    assert "v2" in runtime["spec"]["protocolVersions"]
    assert isvc["spec"]["predictor"]["scaleMetric"] == "cpu"
    assert isvc["spec"]["predictor"]["minReplicas"] <= isvc["spec"]["predictor"]["maxReplicas"]


#: KServe's deployment modes (kserve/kserve `pkg/constants/constants.go`, `DeploymentModeType`): from
#: v0.16.0 on, `Standard` is the name and `RawDeployment` a deprecated alias that `ParseDeploymentMode`
#: maps to it; v0.15.0 knows only `RawDeployment`. Checked at v0.15.0, v0.16.0 and v0.20.0.
KSERVE_STANDARD_MODE = "Standard"
KSERVE_LEGACY_MODE = "RawDeployment"


def test_kserve_uses_the_current_deployment_mode_name() -> None:
    (isvc,) = [d for d in overlay_docs("overlays/kserve") if d["kind"] == "InferenceService"]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == KSERVE_STANDARD_MODE
    # Older releases need the old name: the deploy guide says so.
    guide = (DEPLOY.parent / "docs" / "deploy.md").read_text()
    assert KSERVE_LEGACY_MODE in guide
    assert "0.15" in guide


def test_every_autoscaler_has_the_same_bounds_and_target() -> None:
    """2-10 replicas at 70 % CPU wherever an autoscaler is rendered (the numbers live in four places)."""
    found = {}
    for variant in [r for r in all_renders() if r not in ("seldon-v1", "seldon-v2")]:
        for doc in load_all(render(variant.partition("+")[0], "c:1", autoscale="+" in variant)):
            spec = doc.get("spec") or {}
            if doc["kind"] == "HorizontalPodAutoscaler":
                (metric,) = spec["metrics"]
                found[variant] = (spec["minReplicas"], spec["maxReplicas"], metric["resource"])
            elif doc["kind"] == "SeldonDeployment":
                hpa = spec["predictors"][0]["componentSpecs"][0]["hpaSpec"]
                (metric,) = hpa["metricsv2"]
                found[variant] = (hpa["minReplicas"], hpa["maxReplicas"], metric["resource"])
            elif doc["kind"] == "InferenceService":
                predictor = spec["predictor"]
                cpu = {"name": predictor["scaleMetric"], "target": {"type": "Utilization"}}
                cpu["target"]["averageUtilization"] = predictor["scaleTarget"]
                found[variant] = (predictor["minReplicas"], predictor["maxReplicas"], cpu)
    cpu70 = {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
    assert found == dict.fromkeys(
        ["seldon-v1+autoscale", "seldon-v2+autoscale", "kserve", "kubernetes"], (2, 10, cpu70)
    )


def test_the_web_page_is_exposed_wherever_the_rest_api_is() -> None:
    """The page is served at `/` of MLServer's REST port (CassavaSettings.web_ui, on by default): no
    render turns it off, and the kubernetes target's Service and NetworkPolicy open that port whole
    (NetworkPolicies filter ports, not paths)."""
    from deploy_helpers import our_container, pod_specs

    from cassava.settings import CassavaSettings

    assert CassavaSettings().web_ui is True
    for variant in all_renders():
        for pod in pod_specs(rendered_docs(variant)):
            env = {e["name"]: e.get("value") for e in our_container(pod.spec).get("env") or []}
            assert "CASSAVA_WEB_UI" not in env, variant
    docs = {d["kind"]: d for d in rendered_docs("kubernetes")}
    (container,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    (rest,) = [p["name"] for p in container["ports"] if p["containerPort"] == 8080]
    assert rest in {p["targetPort"] for p in docs["Service"]["spec"]["ports"]}
    open_ports = {p["port"] for rule in docs["NetworkPolicy"]["spec"]["ingress"] for p in rule["ports"]}
    assert rest in open_ports


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("registry.example.com/cassava", "neither a tag nor a digest"),
        ("cassava@sha256:abc", "64 hex digits"),
        (":1.0", "no image name"),
    ],
)
def test_bad_images_are_refused(image: str, message: str) -> None:
    with pytest.raises(RenderError, match=message):
        render("kubernetes", image)


def test_cli_render(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["deploy", "render", "--target", "kserve", "--image", "reg.example/cassava:2.0", "-n", "ml"]
    result = runner.invoke(app, [*args, "--replicas", "4"])
    assert result.exit_code == 0, result.output
    docs = load_all(result.stdout)
    assert {d["metadata"]["namespace"] for d in docs} == {"ml"}
    (isvc,) = [d for d in docs if d["kind"] == "InferenceService"]
    assert isvc["spec"]["predictor"]["minReplicas"] == 4
    out = tmp_path / "kserve.yaml"
    result = runner.invoke(app, [*args, "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert load_all(out.read_text())


def test_cli_render_autoscale_and_the_web_page_switch() -> None:
    runner = CliRunner()
    args = ["deploy", "render", "--target", "seldon-v1", "--image", "reg.example/cassava:2.0"]
    result = runner.invoke(app, [*args, "--autoscale"])
    assert result.exit_code == 0, result.output
    (sdep,) = [d for d in load_all(result.stdout) if d["kind"] == "SeldonDeployment"]
    assert "hpaSpec" in sdep["spec"]["predictors"][0]["componentSpecs"][0]
    assert result.stdout.startswith(f"# cassava {' '.join(args[:2])} --target seldon-v1")
    assert "--autoscale" in result.stdout.splitlines()[0]
    help_text = " ".join(runner.invoke(app, ["deploy", "render", "--help"]).output.split())
    assert "CASSAVA_WEB_UI=false" in help_text.replace("│", "").replace("  ", " ")


def test_cli_render_bad_target_and_namespace() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["deploy", "render", "--target", "nomad", "--image", "c:1"])
    assert result.exit_code != 0
    assert "nomad" in result.output
    result = runner.invoke(
        app, ["deploy", "render", "--target", "kubernetes", "--image", "c:1", "--namespace", "Not_Valid"]
    )
    assert result.exit_code == 1
    assert "not a valid namespace name" in result.stderr


def test_cli_render_without_kubectl_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no kubectl, no kustomize
    result = CliRunner().invoke(app, ["deploy", "render", "--target", "kubernetes", "--image", "c:1"])
    assert result.exit_code == 1
    assert "kubectl is not installed" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3  # one message (wrapped at most), no traceback
    assert shutil.which("kubectl", path=str(tmp_path)) is None


def _env_lists(node: Any) -> list[list[dict[str, Any]]]:
    """Every container `env` list in a rendered object, wherever the target's kind keeps it."""
    found: list[list[dict[str, Any]]] = []
    if isinstance(node, dict):
        env = node.get("env")
        if isinstance(env, list) and all(isinstance(e, dict) and "name" in e for e in env):
            found.append(env)
        for value in node.values():
            found += _env_lists(value)
    elif isinstance(node, list):
        for value in node:
            found += _env_lists(value)
    return found


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("profile", ["latency", "throughput"])
def test_a_profile_reaches_the_model_server_of_every_target(target: str, profile: str) -> None:
    """deploy/components/profile/NAME: CASSAVA_PROFILE in the container that runs the launcher (the one
    with cassava's own variables), and nowhere else; without --profile the image's default stays."""
    docs = load_all(render(target, "reg.example/cassava:1.0", profile=profile))
    ours = [
        env
        for doc in docs
        for env in _env_lists(doc)
        if any(e["name"] == "CASSAVA_SHUTDOWN_GRACE_SECONDS" for e in env)
    ]
    assert len(ours) == 1, ours
    assert {"name": "CASSAVA_PROFILE", "value": profile} in ours[0]
    others = [env for doc in docs for env in _env_lists(doc) if env is not ours[0]]
    assert not [e for env in others for e in env if e["name"] == "CASSAVA_PROFILE"]
    plain = load_all(render(target, "reg.example/cassava:1.0"))
    assert not [e for doc in plain for env in _env_lists(doc) for e in env if e["name"] == "CASSAVA_PROFILE"]


def test_an_unknown_profile_is_refused_with_the_choices() -> None:
    with pytest.raises(RenderError, match="unknown profile 'fast'; choose one of latency, throughput"):
        render("kubernetes", "reg.example/cassava:1.0", profile="fast")


def test_the_profile_components_are_the_serving_profiles() -> None:
    from cassava.server.config import PROFILES

    root = Path(__file__).resolve().parents[2] / "deploy" / "components" / "profile"
    assert sorted(p.name for p in root.iterdir()) == sorted(PROFILES)
