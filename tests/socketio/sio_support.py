"""Machinery for the Socket.IO interop tests: an app subprocess, Node scripts, bounded waits.

Rules this module keeps:
- The app runs as a subprocess (``sio_app.py`` or the conformance example) on a port it
  picks itself and prints; its output is drained by a thread for its whole life.
- Every wait is bounded; a timeout fails with the app's recent output in the message.
- Teardown sends SIGINT, waits, then kills.
- Node and npm are required tools: a missing one skips locally and fails under CI=true.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = ROOT / "tests" / "js"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
_LISTENING = re.compile(r"listening on http://(?P<host>[^:]+):(?P<port>\d+)")


class App:
    """A running app subprocess."""

    def __init__(self, proc: subprocess.Popen, host: str, port: int, output: collections.deque) -> None:
        self.proc = proc
        self.host = host
        self.port = port
        self.output = output

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def recent_output(self) -> str:
        return "".join(self.output)[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_app(script: Path, *args: str) -> App:
    """Start ``python script --host 127.0.0.1 --port 0 *args`` and wait for its port."""
    proc = subprocess.Popen(
        [sys.executable, str(script), "--host", "127.0.0.1", "--port", "0", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    output: collections.deque = collections.deque(maxlen=400)
    found: dict[str, Any] = {}
    ready = threading.Event()

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            match = _LISTENING.search(line)
            if match and not ready.is_set():
                found.update(host=match["host"], port=int(match["port"]))
                ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    if not ready.wait(START_TIMEOUT) or "port" not in found:
        proc.kill()
        raise AssertionError(f"{script.name} did not start:\n{''.join(output)}")
    return App(proc, found["host"], found["port"], output)


def node_ready() -> str:
    """The node executable, with tests/js's packages installed (npm ci when missing)."""
    node = require_tool("node")
    if not (JS_DIR / "node_modules" / "socket.io-client").is_dir():
        npm = require_tool("npm")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=JS_DIR, check=True,
                       timeout=300)
    return node


def run_node(spec: dict, *, timeout: float = 60.0, app: App | None = None) -> dict:
    """Run ``tests/js/socketio_client.mjs`` with ``spec``; its last stdout line (JSON)."""
    node = node_ready()
    started = time.monotonic()
    try:
        done = subprocess.run([node, "socketio_client.mjs", json.dumps(spec)], cwd=JS_DIR, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"node client timed out after {timeout} s: {exc.stdout}\n{exc.stderr}\n"
                             f"app: {app.recent_output() if app else ''}") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise AssertionError(
            f"node client failed (rc {done.returncode}, {time.monotonic() - started:.1f} s):\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}\napp: {app.recent_output() if app else ''}")
    return json.loads(lines[-1])
