"""Policy checks: checkov on the Dockerfile and the rendered manifests, and hadolint on the Dockerfile.

Checkov does not look inside custom resources, so the pod specs of the SeldonDeployment, the
InferenceService and the ServerConfig are also written out as Pods and checked as such. Any failed
check must be accepted, with its reason, in deploy/checkov-skips.yaml (the one allow-list); an entry
there that no longer matches a failure fails too, so the list cannot rot.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import (
    IMAGE,
    NAMESPACE,
    ROOT,
    all_renders,
    needs_kubectl,
    overlay_docs,
    pod_specs,
    rendered_docs,
)

ALLOW_LIST = ROOT / "deploy" / "checkov-skips.yaml"
DOCS = ROOT / "docs" / "deploy.md"
CHECKOV = Path(sys.executable).with_name("checkov")
HADOLINT = Path(sys.executable).with_name("hadolint")

pytestmark = pytest.mark.slow


def accepted() -> list[dict[str, str]]:
    return list(yaml.safe_load(ALLOW_LIST.read_text())["accepted"])


def in_namespace(docs: Iterable[dict[str, Any]], namespace: str) -> list[dict[str, Any]]:
    return [dict(d, metadata={**d["metadata"], "namespace": namespace}) for d in docs]


def namespace_of(render: str) -> str:
    return f"{NAMESPACE}-{render.replace('+', '-')}"


def write_inputs(folder: Path) -> None:
    """The Dockerfile, each rendered target, the monitoring objects, and the CRs' pods as Pods.

    Each target in its own namespace, and the custom resources' pods in a folder of their own, checked
    by a second run: checkov links a NetworkPolicy to pods with matching labels whatever their
    namespace, and the kubernetes target's policy must not count for the other targets' pods."""
    shutil.copy2(ROOT / "Dockerfile", folder / "Dockerfile")
    for target in all_renders():
        docs = in_namespace(rendered_docs(target), namespace_of(target))
        (folder / f"{target}.yaml").write_text(yaml.safe_dump_all(docs))
    (folder / "monitoring.yaml").write_text(
        yaml.safe_dump_all(in_namespace(overlay_docs("monitoring"), NAMESPACE))
    )
    pods = []
    for target in all_renders():
        for pod in pod_specs(rendered_docs(target)):
            kind, name = pod.where.split()[0].split("/")
            if kind in ("Deployment", "StatefulSet"):
                continue  # checkov reads those itself
            containers = [{"image": IMAGE, **c} for c in pod.spec["containers"]]  # KServe: the runtime's
            metadata = {
                "name": f"{kind.lower()}-{name}",
                "namespace": namespace_of(target),
                "labels": pod.labels,
            }
            pods.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": metadata,
                    "spec": {**pod.spec, "containers": containers},
                }
            )
    (folder / "custom-resources").mkdir()
    (folder / "custom-resources" / "pods.yaml").write_text(yaml.safe_dump_all(pods))


@functools.cache
def checkov_failures(folder: Path) -> tuple[dict[str, Any], ...]:
    if not CHECKOV.exists():
        pytest.skip(f"checkov is not installed in this virtualenv ({CHECKOV})")
    write_inputs(folder)
    failed = run_checkov(folder, ["kubernetes", "dockerfile"], skip="custom-resources")
    failed += run_checkov(folder / "custom-resources", ["kubernetes"])
    return tuple(failed)


def run_checkov(folder: Path, frameworks: list[str], skip: str | None = None) -> list[dict[str, Any]]:
    command = [str(CHECKOV), "--directory", str(folder), "--framework", *frameworks]
    # --skip-download: no Prisma Cloud look-ups (offline, and nothing leaves the machine).
    command += ["--output", "json", "--quiet", "--skip-download", "--compact"]
    if skip:
        command += ["--skip-path", skip]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert {r["check_type"] for r in reports} == set(frameworks), done.stderr[-2000:]
    for report in reports:
        assert report["summary"]["parsing_errors"] == 0, report["results"].get("parsing_errors")
        assert report["summary"]["passed"] > 0
    return [f for r in reports for f in r["results"]["failed_checks"]]


@pytest.fixture(scope="module")
def failures(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], ...]:
    needs_kubectl()
    return checkov_failures(tmp_path_factory.mktemp("checkov"))


def is_accepted(failure: dict[str, Any], entry: dict[str, str]) -> bool:
    return failure["check_id"] == entry["check"] and fnmatch.fnmatchcase(
        failure["resource"], entry["resource"]
    )


def test_every_checkov_failure_is_accepted_with_a_reason(failures: tuple[dict[str, Any], ...]) -> None:
    entries = accepted()
    unexplained = [
        f"{f['check_id']} {f['resource']} ({f['file_path']}): {f['check_name']}"
        for f in failures
        if not any(is_accepted(f, e) for e in entries)
    ]
    assert not unexplained, "fix these or accept them in deploy/checkov-skips.yaml:\n" + "\n".join(
        unexplained
    )


def test_the_allow_list_has_no_stale_entries(failures: tuple[dict[str, Any], ...]) -> None:
    stale = [e for e in accepted() if not any(is_accepted(f, e) for f in failures)]
    assert not stale, f"these accepted checks no longer fail; remove them: {stale}"


def test_no_dockerfile_check_is_accepted(failures: tuple[dict[str, Any], ...]) -> None:
    assert [f for f in failures if f["check_id"].startswith("CKV_DOCKER")] == []


def test_accepted_checks_have_reasons_and_are_documented() -> None:
    docs = DOCS.read_text()
    for entry in accepted():
        assert len(entry["reason"].split()) >= 8, entry
        assert entry["check"] in docs, f"{entry['check']} is accepted but docs/deploy.md does not explain it"


def test_hadolint_is_clean() -> None:
    if not HADOLINT.exists():
        pytest.skip(f"hadolint is not installed in this virtualenv ({HADOLINT})")
    # No .hadolint.yaml: nothing is configured away.
    assert not (ROOT / ".hadolint.yaml").exists()
    done = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "style", "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == ""
