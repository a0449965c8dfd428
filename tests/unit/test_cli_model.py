"""`cassava model fetch | demo | path` through the command line, as a user types them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cassava.cli.main import app
from cassava.model_store import PROVENANCE_FILE, SAVED_MODEL_FILE, UNTRAINED_MARKER, read_info


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    # Never the user's real cache: every default path lands in this test's directory.
    monkeypatch.setenv("CASSAVA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def flat(text: str) -> str:
    """Console text with rich's line wrapping undone: long paths move the breaks around."""
    return " ".join(text.split())


def test_path_prints_the_cache_model_dir(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["model", "path"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "home" / "model")


def test_fetch_from_a_directory_into_the_cache(
    runner: CliRunner, demo_model_dir: Path, tmp_path: Path
) -> None:
    result = runner.invoke(app, ["model", "fetch", "--from", str(demo_model_dir)])
    assert result.exit_code == 0, result.output
    dest = tmp_path / "home" / "model"
    assert (dest / SAVED_MODEL_FILE).is_file()
    assert (dest / PROVENANCE_FILE).is_file()
    assert f"model verified and installed at {dest}" in flat(result.stdout)
    # The stand-in stays a stand-in wherever it is copied, and says so.
    assert "UNTRAINED STAND-IN MODEL" in flat(result.stderr)


def test_fetch_from_a_tarball_to_a_chosen_dest(
    runner: CliRunner, demo_model_dir: Path, tmp_path: Path
) -> None:
    # What a real model's archive holds: the SavedModel, no UNTRAINED marker.
    real = tmp_path / "real"
    shutil.copytree(demo_model_dir, real, ignore=shutil.ignore_patterns(UNTRAINED_MARKER))
    archive = shutil.make_archive(str(tmp_path / "cropnet"), "gztar", root_dir=real)
    dest = tmp_path / "elsewhere" / "model"
    result = runner.invoke(app, ["model", "fetch", "--from", archive, "--dest", str(dest)])
    assert result.exit_code == 0, result.output
    assert not read_info(dest).untrained
    assert "UNTRAINED" not in flat(result.output)


def test_fetch_failure_is_one_red_line(runner: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.tar.gz"
    result = runner.invoke(app, ["model", "fetch", "--from", str(missing)])
    assert result.exit_code == 1
    assert "Traceback" not in flat(result.output)
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] != []
    assert flat(result.stderr).count("error:") == 1
    assert "nowhere.tar.gz" in flat(result.stderr)
    assert not (tmp_path / "home" / "model").exists()


def test_fetch_onto_an_existing_model_asks_for_force(
    runner: CliRunner, demo_model_dir: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "model"
    shutil.copytree(demo_model_dir, dest)
    result = runner.invoke(app, ["model", "fetch", "--from", str(demo_model_dir), "--dest", str(dest)])
    assert result.exit_code == 1
    assert "pass --force" in flat(result.stderr)
    forced = runner.invoke(
        app, ["model", "fetch", "--from", str(demo_model_dir), "--dest", str(dest), "--force"]
    )
    assert forced.exit_code == 0, forced.output


def test_demo_writes_the_stand_in_and_warns(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["model", "demo"])
    assert result.exit_code == 0, result.output
    dest = tmp_path / "home" / "model"
    assert (dest / UNTRAINED_MARKER).is_file()
    assert read_info(dest).untrained
    assert f"wrote the stand-in to {dest}" in flat(result.stdout)
    assert "WARNING" in flat(result.stderr)
    assert "UNTRAINED STAND-IN MODEL" in flat(result.stderr)
    assert "cassava model fetch" in flat(result.stderr)


def test_demo_will_not_overwrite_a_real_model(
    runner: CliRunner, demo_model_dir: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "real"
    shutil.copytree(demo_model_dir, dest, ignore=shutil.ignore_patterns(UNTRAINED_MARKER))
    result = runner.invoke(app, ["model", "demo", "--dest", str(dest)])
    assert result.exit_code == 1
    assert "holds a real model" in flat(result.stderr)
    assert not (dest / UNTRAINED_MARKER).exists()
