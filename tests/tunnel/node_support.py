"""Child processes for the package tests: ``fabric serve`` and the Node scripts of
``tests/tunnel_js/`` (``app.mjs``, ``upstream.mjs``), plus a small Web PubSub JSON client.

Rules this module keeps:
- Every wait is bounded; a timeout fails with the child's recent output in the message.
- A child's stdout and stderr are read by tasks for its whole life (a full pipe would stall
  it); stdout lines that are JSON objects are kept parsed.
- Stopping is SIGINT (fabric) or closing stdin (Node), a bounded wait, then SIGKILL.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url

from fabric.core import auth
from tests.conftest import IN_CI, require_tool

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = ROOT / "tests" / "tunnel_js"
WAIT = 20.0


def require_node() -> str:
    node = require_tool("node")
    if not (JS_DIR / "node_modules" / "@azure" / "web-pubsub-socket.io").is_dir():
        message = f"npm packages are not installed in {JS_DIR} (run ./dev test, or npm ci there)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return node


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict[str, str]:
    # $FABRIC_* overrides flags: a developer's FABRIC_PORT must not leak into the server.
    return {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}


class Child:
    """A running child process and what it printed."""

    def __init__(self, proc: trio.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.lines: collections.deque[str] = collections.deque(maxlen=400)
        self.errors: collections.deque[str] = collections.deque(maxlen=400)
        self.objects: list[dict] = []
        self._taken: set[int] = set()
        self._changed = trio.Event()
        self._ids = iter(range(1, 1 << 30))

    @classmethod
    async def start(cls, nursery: trio.Nursery, cmd: list[str], name: str, *, cwd: Path = ROOT) -> Child:
        proc = await trio.lowlevel.open_process(cmd, cwd=str(cwd), env=child_env(), stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                start_new_session=True)
        child = cls(proc, name)
        nursery.start_soon(child._read, proc.stdout, False)
        nursery.start_soon(child._read, proc.stderr, True)
        return child

    async def _read(self, stream, is_err: bool) -> None:
        buffer = b""
        try:
            async for chunk in stream:
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for raw in complete:
                    line = raw.decode("utf-8", "replace").rstrip("\r")
                    (self.errors if is_err else self.lines).append(line)
                    if not is_err and line.startswith("{"):
                        try:
                            self.objects.append(json.loads(line))
                        except ValueError:
                            pass
                    self._changed.set()
                    self._changed = trio.Event()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def describe(self) -> str:
        state = "running" if self.proc.returncode is None else f"exited with {self.proc.returncode}"
        return (f"--- {self.name} ({state}) stdout ---\n" + "\n".join(list(self.lines)[-40:])
                + f"\n--- {self.name} stderr ---\n" + "\n".join(list(self.errors)[-40:]))

    async def wait_for(self, predicate: Callable[[dict], bool], timeout: float = WAIT, what: str = "") -> dict:
        """The first printed JSON object matching ``predicate`` not returned before."""
        with trio.move_on_after(timeout):
            while True:
                for index, obj in enumerate(self.objects):
                    if index not in self._taken and predicate(obj):
                        self._taken.add(index)
                        return obj
                if self.proc.returncode is not None:
                    break
                await self._changed.wait()
        pytest.fail(f"{self.name}: no {what or 'matching output'} within {timeout:g} s\n{self.describe()}",
                    pytrace=False)

    async def wait_line(self, predicate: Callable[[str], bool], timeout: float = WAIT, *, stderr: bool = False,
                        what: str = "") -> str:
        with trio.move_on_after(timeout):
            while True:
                for line in (self.errors if stderr else self.lines):
                    if predicate(line):
                        return line
                if self.proc.returncode is not None:
                    break
                await self._changed.wait()
        pytest.fail(f"{self.name}: no {what or 'matching line'} within {timeout:g} s\n{self.describe()}",
                    pytrace=False)

    async def call(self, op: str, timeout: float = WAIT, **args: Any) -> Any:
        """Send a command to a Node script; its result, or AssertionError with its error."""
        answer = await self.request(op, timeout, **args)
        if not answer["ok"]:
            raise AssertionError(f"{self.name}: {op} failed: {answer['error']}")
        return answer["result"]

    async def request(self, op: str, timeout: float = WAIT, **args: Any) -> dict:
        """Send a command; its whole answer (``ok``, ``result`` or ``error``)."""
        ident = next(self._ids)
        await self.proc.stdin.send_all((json.dumps({"id": ident, "op": op, **args}) + "\n").encode())
        return await self.wait_for(lambda o: o.get("id") == ident, timeout, f"answer to {op}")

    async def stop(self, *, sig: int | None = None, grace: float = 8.0) -> int | None:
        proc = self.proc
        if proc.returncode is None:
            try:
                if sig is not None:
                    proc.send_signal(sig)
                else:
                    await proc.stdin.aclose()
            except (OSError, trio.ClosedResourceError, trio.BrokenResourceError):
                pass
            with trio.move_on_after(grace):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                with trio.move_on_after(5):
                    await proc.wait()
        return proc.returncode


class Serve:
    """``fabric serve`` as users run it, and what its ``Endpoint=`` line says."""

    def __init__(self, child: Child, key: str) -> None:
        self.child = child
        self.key = key
        self.connection_string = ""
        self.endpoint = ""

    def client_url(self, hub: str, *, user_id: str | None = None, roles=(), query: str = "") -> str:
        token = auth.mint_client_token(key=self.key, endpoint=self.endpoint, hub=hub, user_id=user_id, roles=roles)
        return auth.client_url(self.endpoint, hub, token) + (f"&{query}" if query else "")

    def rest_token(self, path: str) -> str:
        return auth.mint_rest_token(key=self.key, url=self.endpoint + path)


@asynccontextmanager
async def open_serve(*flags: str, key: str = "tunnel-package-test-key-0123456789abcdef", port: int = 0,
                     ) -> AsyncIterator[Serve]:
    async with trio.open_nursery() as nursery:
        cmd = [sys.executable, "-m", "fabric", "serve", "--host", "127.0.0.1", "--port", str(port),
               f"--access-key={key}", *flags]
        child = await Child.start(nursery, cmd, "fabric serve")
        serve = Serve(child, key)
        try:
            line = await child.wait_line(lambda s: s.startswith("Endpoint="), 20, what="Endpoint= line")
            serve.connection_string = line.strip()
            serve.endpoint = auth.parse_connection_string(line)[0]
            yield serve
        finally:
            code = await serve.child.stop(sig=signal.SIGINT)
            nursery.cancel_scope.cancel()
        assert code == 0, f"fabric serve exited with {code}\n{child.describe()}"


@asynccontextmanager
async def open_node(script: str, *args: str, ready: bool = True, name: str | None = None) -> AsyncIterator[Child]:
    """``node tests/tunnel_js/<script> args...``; waits for ``{"event": "ready"}``."""
    node = require_node()
    async with trio.open_nursery() as nursery:
        child = await Child.start(nursery, [node, script, *args], name or script, cwd=JS_DIR)
        try:
            if ready:
                await child.wait_for(lambda o: o.get("event") == "ready", 30, "ready line")
            yield child
        finally:
            await child.stop()
            nursery.cancel_scope.cancel()


class WpsClient:
    """A Web PubSub JSON client over a real socket (trio-websocket)."""

    def __init__(self, ws, connected: dict) -> None:
        self.ws = ws
        self.connected = connected
        self.connection_id = connected["connectionId"]

    async def next_data(self, timeout: float = 10.0) -> Any:
        with trio.fail_after(timeout):
            while True:
                message = json.loads(await self.ws.get_message())
                if message.get("type") == "message":
                    return message["data"]

    async def send_json(self, obj: Any) -> None:
        await self.ws.send_message(json.dumps(obj))

    async def next_json(self, timeout: float = 10.0) -> Any:
        with trio.fail_after(timeout):
            return json.loads(await self.ws.get_message())


@asynccontextmanager
async def wps_client(url: str) -> AsyncIterator[WpsClient]:
    async with open_websocket_url(url, subprotocols=["json.webpubsub.azure.v1"]) as ws:
        with trio.fail_after(5):
            connected = json.loads(await ws.get_message())
        assert connected["event"] == "connected", connected
        yield WpsClient(ws, connected)
