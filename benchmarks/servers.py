"""The servers a run can measure. Each one binds 127.0.0.1 on the port it is given.

To add a server, add one ``Server`` to ``SERVERS``: its name, how loadgen talks to it
(``proto`` plus extra loadgen flags), what it supports (``features``: scenarios check these),
and how to start it on a port.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from benchmarks import NODE_DIR, PEERS_DIR, ROOT

EXAMPLES_DIR = ROOT / "examples"

ACCESS_KEY = "bench-secret"
HUB = "bench"
GROUP = "g"

WPS_ARGS = ("--proto", "wps", "--hub", HUB, "--group", GROUP, "--jwt-key", ACCESS_KEY)
SIO_ARGS = ("--proto", "sio")  # namespace /fanout, room "bench": loadgen's defaults


@dataclass(frozen=True)
class Server:
    name: str
    description: str
    loadgen_args: tuple[str, ...]
    command: Callable[[int], list[str]]
    features: frozenset[str] = field(default_factory=frozenset)
    # Returns a reason why it cannot run here, or None.
    missing: Callable[[], str | None] = lambda: None

    @property
    def proto(self) -> str:
        return self.loadgen_args[self.loadgen_args.index("--proto") + 1]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("NODE_ENV", "production")
        return env


def _python_missing(*modules: str) -> Callable[[], str | None]:
    def check() -> str | None:
        absent = [m for m in modules if importlib.util.find_spec(m) is None]
        if absent:
            return f"{sys.executable} lacks {', '.join(absent)} (pip install -e '.[bench]', or ./dev bench)"
        return None

    return check


def _node_missing(*packages: str) -> Callable[[], str | None]:
    def check() -> str | None:
        if shutil.which("node") is None:
            return "node is not on PATH (Node 20 is required)"
        absent = [p for p in packages if not (NODE_DIR / "node_modules" / p / "package.json").is_file()]
        if absent:
            return f"{', '.join(absent)} not installed in {NODE_DIR} (run: cd benchmarks/node && npm ci, or ./dev bench)"
        return None

    return check


def _fabric(port: int) -> list[str]:
    return [sys.executable, "-m", "fabric", "serve", "--host", "127.0.0.1", "--port", str(port), "--access-key", ACCESS_KEY]


def _fabric_sio(port: int) -> list[str]:
    return [sys.executable, str(EXAMPLES_DIR / "socketio_bench.py"), "--host", "127.0.0.1", "--port", str(port)]


def _sio_python(port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "--app-dir", str(PEERS_DIR), "sio_python:app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--loop", "uvloop",
    ]  # fmt: skip


def _node(script: str, *extra: str) -> Callable[[int], list[str]]:
    return lambda port: ["node", str(NODE_DIR / script), str(port), *extra]


SERVERS: dict[str, Server] = {
    s.name: s
    for s in [
        Server(
            "fabric",
            "the fabric: python -m fabric serve (Web PubSub JSON subprotocol)",
            WPS_ARGS,
            _fabric,
            frozenset({"wps", "rest", "reliable"}),
            _python_missing("fabric", "trio"),
        ),
        Server(
            "fabric_sio",
            "the fabric's Socket.IO edge: examples/socketio_bench.py (the loadgen contract on the embedded API)",
            SIO_ARGS,
            _fabric_sio,
            frozenset({"sio"}),
            _python_missing("fabric", "trio"),
        ),
        Server(
            "sio_python",
            "python-socketio 5 AsyncServer under uvicorn with uvloop",
            SIO_ARGS,
            _sio_python,
            frozenset({"sio"}),
            _python_missing("socketio", "uvicorn", "uvloop"),
        ),
        Server(
            "sio_node",
            "Node socket.io 4.8, default in-memory adapter",
            SIO_ARGS,
            _node("sio_node.js"),
            frozenset({"sio"}),
            _node_missing("socket.io", "ws"),
        ),
        Server(
            "wps_node",
            "minimal Web PubSub JSON-subprotocol server on Node ws (same protocol as the fabric)",
            WPS_ARGS,
            _node("wps_node.js", ACCESS_KEY),
            frozenset({"wps"}),
            _node_missing("ws"),
        ),
    ]
}

# Our servers (ratios are taken of these), and the peers they are compared with, in report order.
OURS = ("fabric", "fabric_sio")
PEERS = ("sio_python", "sio_node", "wps_node")
