"""The layers import downward only: the Ray glue never imports the command line above it (issue 22)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "mtssad"


def _imported_modules(source: str, package: str) -> set[str]:
    """Absolute names of the modules `source` (a module of `package`) imports, at module level or in functions."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            name = ".".join([*base, node.module] if node.module else base)
            out.add(name)
            out |= {f"{name}.{a.name}" for a in node.names}  # `from .. import cli`
    return out


def _imports_of(path: Path) -> set[str]:
    package = ".".join(path.relative_to(PKG.parent).with_suffix("").parts[:-1])
    return _imported_modules(path.read_text(), package)


def test_the_scan_reads_relative_imports():
    for src in ("from ..cli import main", "from .. import cli", "import mtssad.cli", "from mtssad.cli import x"):
        assert "mtssad.cli" in _imported_modules(src, "mtssad.distributed"), src
    assert "mtssad.cli" not in _imported_modules("from .cli import main", "mtssad.distributed")


@pytest.mark.parametrize("path", sorted((PKG / "distributed").glob("*.py")), ids=lambda p: p.name)
def test_the_ray_glue_never_imports_the_command_line(path):
    assert "mtssad.cli" not in _imports_of(path)


def test_the_shared_flags_import_neither_command_line():
    imported = _imports_of(PKG / "flags.py")
    assert "mtssad.cli" not in imported and not any(m.startswith("mtssad.distributed") for m in imported)
