"""The layers hold: every import of ours points down, and edges never import each other.

Order, bottom to top (a module may import its own layer and the layers below it):
    specs  <  actors, transport  <  fabric.config  <  fabric.core  <  edges  <  fabric top
where the edges are fabric.webpubsub, fabric.socketio, fabric.appserver and fabric.demo, and the top is
fabric.app, fabric.cli, fabric.testing, fabric/__init__ and fabric/__main__.
Extra rules: ``specs`` imports nothing of ours (its conformance suite ``specs.conform``
included: a checker that shares the server's code cannot find the server's bugs);
``fabric.config`` imports only ``specs``; no edge imports another edge.
The walk reads every ``import``/``from`` statement (including those inside functions and
``TYPE_CHECKING`` blocks) with ``ast``, so nothing is executed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("specs", "actors", "transport", "fabric")
EDGES = ("fabric.webpubsub", "fabric.socketio", "fabric.appserver", "fabric.demo")
TOP = ("fabric.app", "fabric.cli", "fabric.testing", "fabric", "fabric.__main__")


def layer(module: str) -> tuple[int, str]:
    """(rank, name) of the layer a module belongs to."""
    if module == "specs" or module.startswith("specs."):
        return 0, "specs"
    if module.split(".")[0] in ("actors", "transport"):
        return 1, module.split(".")[0]
    if module == "fabric.config":
        return 2, "fabric.config"
    if module == "fabric.core" or module.startswith("fabric.core."):
        return 3, "fabric.core"
    for edge in EDGES:
        if module == edge or module.startswith(edge + "."):
            return 4, edge
    if module in TOP or module.startswith("fabric."):
        return 5, "fabric (top)"
    raise ValueError(module)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # ``from fabric import x`` names a submodule: judge it as that module.
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names
                      if (ROOT / Path(*target.split("."), alias.name)).exists()
                      or (ROOT / Path(*target.split("."), alias.name + ".py")).exists()]
    return [(line, name) for line, name in found if name.split(".")[0] in PACKAGES]


def all_modules() -> list[tuple[Path, str]]:
    out = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "node_modules" not in path.parts:
                out.append((path, module_name(path)))
    return out


def forbidden(module: str, target: str) -> str | None:
    """Why ``module`` may not import ``target``, or None when it may."""
    rank, name = layer(module)
    t_rank, t_name = layer(target)
    if name == "specs" and t_name != "specs":
        return "specs imports nothing of ours"
    if name == "fabric.config" and t_name not in ("specs", "fabric.config"):
        return "fabric.config may import only specs"
    if rank == 4 and t_rank == 4 and t_name != name:
        return f"an edge ({name}) imports another edge ({t_name})"
    if name == "actors" and t_name == "transport":
        return "actors knows nothing about transport"
    if t_rank > rank:
        return f"{name} (layer {rank}) imports upwards into {t_name} (layer {t_rank})"
    return None


def test_every_import_points_down():
    problems = []
    for path, module in all_modules():
        for line, target in imports_of(path, module):
            why = forbidden(module, target)
            if why is not None:
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {target}: {why}")
    assert not problems, "forbidden imports:\n" + "\n".join(problems)


@pytest.mark.parametrize(("module", "target", "ok"), [
    ("fabric.core.hub", "fabric.webpubsub.connection", False),
    ("fabric.webpubsub.connection", "fabric.appserver.rest", False),
    ("fabric.socketio.parser", "fabric.webpubsub.codec_json", False),
    ("specs.names", "fabric.core.payload", False),
    ("specs.conform.driver", "fabric.testing", False),
    ("fabric.config", "fabric.core.auth", False),
    ("transport.http", "fabric.core.hub", False),
    ("actors._actor", "transport.websocket", False),
    ("fabric.appserver.rest", "fabric.core.hub", True),
    ("fabric.app", "fabric.webpubsub.handshake", True),
    ("fabric.core.hub", "actors", True),
    ("fabric.config", "specs.names", True),
])
def test_the_rule_judges_known_edges(module, target, ok):
    """So that a passing walk means something."""
    assert (forbidden(module, target) is None) is ok


def test_the_walk_sees_every_package_and_relative_imports():
    modules = {m for _, m in all_modules()}
    assert {"specs.names", "fabric.core.hub", "fabric.webpubsub.connection", "fabric.appserver.rest",
            "transport.http", "actors"} <= modules
    imported = {name for _, name in imports_of(ROOT / "actors" / "__init__.py", "actors")}
    assert "actors._actor" in imported  # ``from ._actor import ...`` resolved
