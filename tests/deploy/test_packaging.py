"""`cassava deploy render` outside a checkout: the wheel carries deploy/, and rendering finds it there."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from deploy_helpers import DEPLOY, ROOT, needs_kubectl

pytestmark = pytest.mark.slow

UV = Path(sys.executable).with_name("uv")
#: where pyproject.toml's hatch `force-include` puts deploy/ inside the wheel
PACKAGED = "cassava/ops/deploy"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not UV.exists():
        pytest.skip(f"uv is not installed in this virtualenv ({UV}); it builds the wheel")
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [str(UV), "build", "--wheel", "--out-dir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (built,) = out.glob("cassava_serving-*.whl")
    return built


def test_the_wheel_ships_every_deploy_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    # What kustomize reads: every file under deploy/ that git would ship.
    expected = {
        f"{PACKAGED}/{p.relative_to(DEPLOY).as_posix()}"
        for p in DEPLOY.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert expected
    assert expected <= names, sorted(expected - names)


def test_render_works_from_the_installed_wheel_alone(wheel: Path, tmp_path: Path) -> None:
    """Unpacked like an install (no checkout above it, no ./deploy), the packaged copy is used."""
    needs_kubectl()
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = (
        "from cassava.ops.manifests import find_deploy_dir, render, load_all\n"
        "print(find_deploy_dir())\n"
        "docs = load_all(render('seldon-v1', 'registry.example.com/cassava:1.0', autoscale=True))\n"
        "print(sorted(d['kind'] for d in docs))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found, kinds = done.stdout.strip().splitlines()
    assert Path(found) == site / PACKAGED
    assert kinds == "['SeldonDeployment', 'ServiceAccount']"
