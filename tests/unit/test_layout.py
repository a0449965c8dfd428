"""The rooms of the package and which may import which (docs/architecture.md, "Rooms").

Imports point down only: the pipeline (the package root and `backends/`) imports no room; `server/`
imports the pipeline; `bench/` and `ops/` may use `server/`'s process and config helpers; only `cli/`
imports everything. Lazy imports inside functions count: they are what breaks an ONNX-only image.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cassava

PACKAGE = Path(cassava.__file__).parent
ROOMS = ("server", "bench", "ops", "cli")

#: room -> rooms it must not import (the pipeline is the room "")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "": ("server", "bench", "ops", "cli"),
    "backends": ("server", "bench", "ops", "cli"),
    "server": ("bench", "ops", "cli"),
    "bench": ("cli", "ops"),
    "ops": ("cli", "bench"),
    "cli": (),
}


def room_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else ""


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from cassava import bench` imports the room itself.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    room = room_of(path)
    forbidden = FORBIDDEN[room]
    wrong = sorted(
        name
        for name in imported_modules(path)
        if any(name == f"cassava.{r}" or name.startswith(f"cassava.{r}.") for r in forbidden)
    )
    assert not wrong, f"{path.relative_to(PACKAGE)} (room {room or 'pipeline'!r}) imports {wrong}"


def test_every_module_is_in_a_known_room() -> None:
    rooms = {room_of(p) for p in modules()}
    assert rooms <= set(FORBIDDEN), f"modules outside the documented rooms: {rooms - set(FORBIDDEN)}"


def test_the_wheel_holds_no_benchmark_matrix() -> None:
    """The matrix behind `make bench` is a repository script (benchmarks/), not part of the product."""
    for path in modules():
        assert "benchmarks" not in imported_modules(path), f"{path} imports the repository's benchmarks"
    assert not (PACKAGE / "bench_matrix.py").exists()


def test_the_runtime_import_path_names_the_runtime_class() -> None:
    """model-settings.json's `implementation` is written as a string (no MLServer import to write a
    folder); it must stay the class's real path."""
    from cassava.server.config import RUNTIME_IMPLEMENTATION
    from cassava.server.runtime import CassavaRuntime

    assert f"{CassavaRuntime.__module__}.{CassavaRuntime.__qualname__}" == RUNTIME_IMPLEMENTATION
