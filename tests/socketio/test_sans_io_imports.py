"""The Socket.IO cores are sans-IO: they import only the standard library, msgspec and each other.

The trio adapters beside them (``engine``, ``server``, ``endpoint``, ``formats``, ...) are
not cores; the list below names the cores, and a new core must be added to it.
"""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

import fabric.socketio

PACKAGE = pathlib.Path(fabric.socketio.__file__).parent
SANS_IO = ("eio_packets.py", "eio_requests.py", "eio_session.py", "parser.py")
MODULES = [PACKAGE / name for name in SANS_IO]
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
            if name.startswith("fabric.socketio.") and name.rpartition(".")[2] + ".py" in SANS_IO:
                continue
            if top == "__future__":
                continue
            assert top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY, f"{path.name} imports {name}"
