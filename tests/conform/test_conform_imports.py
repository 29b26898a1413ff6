"""``specs/conform`` imports nothing from ``fabric/`` (a checker sharing the server's codecs could
not find the server's codec bugs) and only the libraries the design brief allows it."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

CONFORM = Path(__file__).resolve().parents[2] / "specs" / "conform"
ALLOWED = {"specs", "msgspec", "hypothesis", "trio", "trio_websocket", "httpx", "jwt", "pytest"}
ALLOWED_RENDER = {"specs", "attrs"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_conform_imports_only_what_it_may() -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for path in sorted(CONFORM.glob("*.py")):
        extra = imported_roots(path) - stdlib - ALLOWED
        assert not extra, f"{path.name} imports {sorted(extra)}"
        assert "fabric" not in imported_roots(path), path.name


def test_render_imports_nothing_of_ours_but_specs() -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    extra = imported_roots(CONFORM.parent / "render.py") - stdlib - ALLOWED_RENDER
    assert not extra, extra
