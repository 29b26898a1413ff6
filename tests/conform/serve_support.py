"""A ``fabric serve`` subprocess for the conformance tests, exactly as users start it.

Rules this module keeps:
- Every wait is bounded; a server that does not print its ``Endpoint=`` line within
  ``START_TIMEOUT`` fails the test with the server's own output.
- The server's output is drained by a reader thread for its whole life (a full pipe would
  stall it) and kept (bounded) for failure messages.
- Stopping is SIGINT, a bounded wait, then SIGKILL.
"""

from __future__ import annotations

import collections
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
ACCESS_KEY = "conform-test-key-0123456789abcdef0123456789"


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    connection_string: str
    output: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))

    @property
    def endpoint(self) -> str:
        return self.connection_string.split(";", 1)[0].split("=", 1)[1]

    def tail(self) -> str:
        return "\n".join(self.output)


def start_fabric(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
    """``python -m fabric serve --port 0 [args]`` with a fixed access key."""
    full_env = {**os.environ, "FABRIC_ACCESS_KEY": ACCESS_KEY, "FABRIC_LOG_LEVEL": "WARNING", **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "fabric", "serve", "--host", "127.0.0.1", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env, text=True)
    lines: queue.Queue[str | None] = queue.Queue()
    output: collections.deque = collections.deque(maxlen=200)
    found = threading.Event()

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            output.append(line)
            if not found.is_set():
                lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=START_TIMEOUT)
        except queue.Empty:
            stop(ServerProcess(proc, "", output))
            raise RuntimeError("fabric serve printed no Endpoint= line in time:\n" + "\n".join(output)) from None
        if line is None:
            raise RuntimeError(f"fabric serve exited ({proc.wait()}) before it listened:\n" + "\n".join(output))
        if line.startswith("Endpoint="):
            found.set()
            return ServerProcess(proc, line.strip(), output)


def stop(server: ServerProcess) -> int:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGINT)
        try:
            return server.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            return server.proc.wait(STOP_TIMEOUT)
    return server.proc.returncode


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
