"""Several ``fabric serve`` processes (nodes) sharing one redis-server, as users run them.

Rules this module keeps:
- A node is ``python -m fabric serve --redis URL`` with a config file for the ``[broker]``
  table (a channel prefix per test, so tests sharing a redis-server stay apart) and the
  same access key on every node (tokens and REST signatures are valid on any node).
- Startup, stop and diagnostics are ``tests/interop/interop_support.py``'s (bounded waits,
  drained pipes, SIGINT then SIGKILL); ``kill``/``pause``/``resume`` act on exactly the
  node's PID.
- ``SwitchingProxy`` is ``tests/interop/chaos_proxy.py``'s proxy whose upstream changes
  per connection (round robin over the nodes): a client that reconnects lands on the next
  node, as behind a load balancer without sticky sessions.
"""

from __future__ import annotations

import itertools
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

_INTEROP = str(Path(__file__).resolve().parents[1] / "interop")
if _INTEROP not in sys.path:
    sys.path.insert(0, _INTEROP)

import interop_support as interop
from chaos_proxy import ChaosProxy

ROOT = Path(__file__).resolve().parents[2]
_prefixes = itertools.count(1)


def new_fabric(redis_url: str, *, node_ttl: float | None = None, request_timeout: float | None = None) -> Fabric:
    return Fabric(redis_url, node_ttl=node_ttl, request_timeout=request_timeout)


class Fabric:
    """The settings every node of one test's fabric shares."""

    def __init__(self, redis_url: str, *, node_ttl: float | None = None, request_timeout: float | None = None) -> None:
        self.redis_url = redis_url
        self.key = "k" + secrets.token_urlsafe(32)
        self._dir = tempfile.TemporaryDirectory(prefix="fabric-nodes-")
        self.config = Path(self._dir.name) / "fabric.toml"
        lines = ["[broker]", f'channel_prefix = "n{next(_prefixes)}{secrets.token_hex(2)}:"']
        if node_ttl is not None:
            lines.append(f"node_ttl = {node_ttl}")
        if request_timeout is not None:
            lines.append(f"request_timeout = {request_timeout}")
        lines += ["[server]", "shutdown_timeout = 2.0"]
        self.config.write_text("\n".join(lines) + "\n")
        self.nodes: list[interop.FabricServer] = []

    def command(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "fabric", "serve", "--host", "127.0.0.1", "--port", "0",
                f"--access-key={self.key}", "--redis", self.redis_url, "--config", str(self.config), *extra]

    def start(self, *extra: str) -> interop.FabricServer:
        cmd = self.command(*extra)
        env = interop._child_env()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        node = interop.FabricServer(proc, cmd, interop._OutputTail(proc.stdout, "stdout"),
                                    interop._OutputTail(proc.stderr, "stderr", queueing=False))
        try:
            interop._await_listening(node, self.key, None)
        except BaseException:
            interop.stop_server(node, check=False)
            raise
        node.stdout.queueing = False
        self.nodes.append(node)
        return node

    def close(self) -> None:
        failures = []
        for node in self.nodes:
            if node.proc.poll() is None:
                os.kill(node.proc.pid, signal.SIGCONT)  # a paused node must be able to stop
                try:
                    interop.stop_server(node)
                except BaseException as exc:  # noqa: BLE001 - report all, then fail
                    failures.append(exc)
            else:
                interop.stop_server(node, check=False)
        self._dir.cleanup()
        if failures:
            raise failures[0]


def kill(node: interop.FabricServer) -> None:
    """SIGKILL: the node vanishes as in a crash."""
    node.proc.kill()
    node.proc.wait(10)


def pause(node: interop.FabricServer) -> None:
    """SIGSTOP: the node keeps its sockets open but does nothing (a hang, a partition)."""
    os.kill(node.proc.pid, signal.SIGSTOP)


def resume(node: interop.FabricServer) -> None:
    os.kill(node.proc.pid, signal.SIGCONT)


class SwitchingProxy(ChaosProxy):
    """A chaos proxy whose upstream is the next node for every new connection."""

    def __init__(self, ports: list[int], name: str = "switch") -> None:
        self._ports = itertools.cycle(ports)
        self.upstreams: list[int] = []
        super().__init__(ports[0], name=name)

    @property
    def upstream(self):  # read once per connection, in the proxy's loop thread
        port = next(self._ports)
        self.upstreams.append(port)
        return ("127.0.0.1", port)

    @upstream.setter
    def upstream(self, value) -> None:
        pass  # the base class sets it once; we choose per connection
