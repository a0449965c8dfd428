"""The Dockerfile, .dockerignore and the seed's `mlserver build` path, checked without a Docker engine
(the container's command itself runs in tests/integration/test_container_command.py)."""

from __future__ import annotations

import fnmatch
from pathlib import Path

from cassava.ops.dockerfile import parse

ROOT = Path(__file__).resolve().parents[2]
STAGES = {s.name: s for s in parse((ROOT / "Dockerfile").read_text())}
FINAL = parse((ROOT / "Dockerfile").read_text())[-1]


def test_stages_and_base_image() -> None:
    assert list(STAGES) == ["python", "model-source", "builder", "weights", "server"]
    base = STAGES["python"].base
    name, _, tag = base.partition(":")
    assert name == "python"
    assert tag.startswith("3.11-slim")
    assert tag != "latest"
    # Every real stage starts from that one image, so one --build-context pins them all.
    assert {STAGES[s].base for s in ("builder", "weights", "server")} == {"python"}


def test_the_final_stage_only_copies_the_venv_the_model_folder_and_the_weights() -> None:
    assert FINAL.runs == []  # no package manager, compiler or cache ever runs in the final image
    assert FINAL.copies == [
        ["--from=builder", "/opt/venv", "/opt/venv"],
        ["model/model-settings.json", "model/settings.json", "/opt/cassava/model/"],
        ["--from=weights", "/opt/cassava/weights", "/opt/cassava/weights"],
    ]
    assert FINAL.env["CASSAVA_MODEL_DIR"] == "/opt/cassava/weights"
    assert FINAL.command == ["python", "-m", "cassava.server.launcher", "/opt/cassava/model"]
    assert FINAL.env["PATH"].split(":")[0] == "/opt/venv/bin"
    assert set(FINAL.expose) == {"8080", "8081", "8082"}


def test_the_runtime_venv_comes_from_the_hashed_lock_without_pip() -> None:
    builder = " ".join(STAGES["builder"].runs)
    assert "venv --without-pip /opt/venv" in builder
    assert "--no-deps --require-hashes" in builder
    assert "requirements/runtime-${BACKEND}.lock" in builder
    for backend in ("tensorflow", "onnx"):
        assert (ROOT / "requirements" / f"runtime-{backend}.lock").is_file()


def test_the_weights_are_fetched_and_verified_at_build_time() -> None:
    weights = " ".join(STAGES["weights"].runs)
    assert "cassava model fetch --dest /opt/cassava/weights" in weights
    assert "demo) " in weights  # the stand-in only when asked for by name
    assert "cassava model demo --dest /opt/cassava/weights" in weights


def test_oci_labels() -> None:
    labels = FINAL.labels
    for key in ("title", "description", "version", "revision", "created", "licenses", "base.name"):
        assert labels[f"org.opencontainers.image.{key}"], key
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert "UNTRAINED" in labels["cassava.model.note"]


def test_read_only_root_filesystem_needs_only_tmp() -> None:
    for key in ("MLSERVER_METRICS_DIR", "MLSERVER_ENVIRONMENTS_DIR", "HOME", "TMPDIR", "KERAS_HOME"):
        assert FINAL.env[key] == "/tmp" or FINAL.env[key].startswith("/tmp/"), key
    assert FINAL.env["PYTHONDONTWRITEBYTECODE"] == "1"


# --- .dockerignore ----------------------------------------------------------------------------------


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, for the patterns used here: the last matching pattern wins; `!` re-includes."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if glob.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(p, glob[3:]) for p in parts)
        else:
            hit = any(fnmatch.fnmatchcase(p, glob) for p in prefixes)
        if hit:
            result = not negate
    return result


def test_dockerignore_sends_what_the_build_copies_and_nothing_else() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    needed = [
        "Dockerfile",
        "pyproject.toml",
        "README.md",
        "src/cassava/server/runtime.py",
        "model/settings.json",
    ]
    needed += ["deploy/base/kustomization.yaml"]
    needed += ["model/model-settings.json", "requirements/runtime-tensorflow.lock", "requirements/fetch.lock"]
    needed += ["requirements/runtime-onnx.lock"]
    for path in needed:
        assert not ignored(path, patterns), path
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "docs/deploy.md",
        "model/saved_model.pb",
    ):
        assert ignored(path, patterns), path
    assert ignored("src/cassava/server/__pycache__/runtime.cpython-311.pyc", patterns)
    # Every file a COPY names (outside other stages) is in the context.
    sources = [w for s in STAGES.values() for c in s.copies if not c[0].startswith("--") for w in c[:-1]]
    for source in sources:
        assert not ignored(source.rstrip("/"), patterns), source


# --- the seed's `mlserver build model/` path ------------------------------------------------------------


def test_mlserver_build_copies_only_the_requirements_before_installing_them() -> None:
    """Why an `mlserver build` folder's requirements.txt cannot name a local wheel: the generated
    Dockerfile (mlserver/cli/constants.py `DockerfileTemplate`, MLServer 1.7.1) runs pip before it copies
    the rest of the folder (src/cassava/ops/mlserver_folder.py unpacks the wheel into the folder)."""
    from mlserver.cli.build import generate_dockerfile

    lines = [ln.strip() for ln in generate_dockerfile().splitlines()]
    install = next(i for i, ln in enumerate(lines) if "build-env.sh" in ln)
    copy_all = next(i for i, ln in enumerate(lines) if ln == "COPY . .")
    assert install < copy_all
    copied_before = " ".join(lines[:install])
    assert "./requirements.tx[t]" in copied_before
