"""The Socket.IO cores are sans-IO: they import only the standard library, msgspec and each other."""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

import fabric.socketio

PACKAGE = pathlib.Path(fabric.socketio.__file__).parent
MODULES = sorted(PACKAGE.glob("*.py"))
ALLOWED_THIRD_PARTY = {"msgspec"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_imports_are_sans_io(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if name.startswith("fabric.socketio.") or top == "__future__":
                continue
            assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, f"{path.name} imports {name}"
