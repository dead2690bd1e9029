"""The package structure the README's Layout section describes: each floor imports only what stands below it,
and modules stay small enough to read top to bottom."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 400
# package or module -> the packages it must never import (directly or lazily inside a function)
FORBIDDEN = {
    "fcft/data": ("fcft.tracking", "fcft.runs", "fcft.report", "fcft.worker", "launchers"),
    "fcft/spec": ("fcft.tracking", "fcft.runs", "fcft.report", "fcft.worker", "launchers"),
    "fcft/models.py": ("fcft.tracking", "fcft.runs", "fcft.report", "fcft.worker", "launchers"),
    "fcft/train": ("fcft.tracking", "fcft.runs", "fcft.report", "fcft.worker", "launchers"),
    "fcft/eval": ("fcft.tracking", "fcft.runs", "fcft.report", "fcft.worker", "launchers"),
    "fcft/rundir.py": ("fcft",),
    "fcft": ("launchers",),
}


def _modules(where: str) -> list[Path]:
    path = ROOT / where
    return [path] if path.is_file() else sorted(path.rglob("*.py"))


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("where", sorted(FORBIDDEN))
def test_no_module_imports_a_higher_floor(where):
    for path in _modules(where):
        imported = _imports(path)
        bad = sorted(
            name for name in imported for banned in FORBIDDEN[where] if name == banned or name.startswith(f"{banned}.")
        )
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}, which stand above it"


def test_modules_read_top_to_bottom():
    long = {
        str(p.relative_to(ROOT)): n
        for p in _modules("fcft") + _modules("launchers")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_import_scan_sees_imports_inside_functions():
    """A guard for the guard: the import scan sees lazy imports inside functions too."""
    imported = _imports(ROOT / "fcft" / "worker.py")
    assert "fcft.eval.mcq" in imported and "fcft.report" in imported
