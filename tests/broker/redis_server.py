"""A real ``redis-server`` for tests: started on a free port of 127.0.0.1, stopped by its PID.

Rules this module keeps:
- No persistence (``--save "" --appendonly no``), no daemonizing: the process is ours, and
  ``stop`` ends exactly that PID (SIGTERM, then SIGKILL after a bounded wait).
- ``start`` returns only once the server answers PING (a ``-NOAUTH`` answer counts: the
  server is up, it wants a password).
- Without ``redis-server`` on PATH the test is skipped, or fails under ``CI=true``
  (``tests/conftest.py::require_tool``).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def _load_require_tool():
    """``tests/conftest.py::require_tool``, loaded by path (tests/ is not a package)."""
    path = Path(__file__).resolve().parents[1] / "conftest.py"
    spec = importlib.util.spec_from_file_location("_fabric_tests_root_conftest_redis", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.require_tool


require_tool = _load_require_tool()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """One redis-server process. ``restart`` keeps the port, so clients can reconnect."""

    def __init__(self, *, password: str | None = None, port: int | None = None, unix_socket: bool = False) -> None:
        self.executable = require_tool("redis-server")
        self.password = password
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self._dir = tempfile.TemporaryDirectory(prefix="fabric-redis-")
        self._log = Path(self._dir.name) / "redis.log"
        self.unix_socket = str(Path(self._dir.name) / "redis.sock") if unix_socket else None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        if not self.unix_socket:
            raise RuntimeError("started without a unix socket")
        return f"unix://{self.unix_socket}?db=0"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> RedisServer:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("redis-server is already running")
        args = [
            self.executable, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", self._dir.name, "--logfile", str(self._log),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        if self.unix_socket:
            args += ["--unixsocket", self.unix_socket, "--unixsocketperm", "700"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode} at start:\n{self.log_tail()}")
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING within {START_TIMEOUT} s:\n{self.log_tail()}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # in case a test paused it
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL: connections drop at once, as in a crash."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(STOP_TIMEOUT)

    def restart(self, *, down_for: float = 0.0) -> None:
        self.kill()
        if down_for:
            time.sleep(down_for)
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a stall)."""
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def command(self, *args: bytes | str | int):
        """One command on a fresh connection (after AUTH when there is a password): the
        parsed reply (a ``RespError`` for an error reply)."""
        from fabric.core.redis_resp import NEED_MORE, RespParser, encode_command

        payload = encode_command(*args)
        expected = 1
        if self.password:
            payload = encode_command("AUTH", self.password) + payload
            expected = 2
        parser = RespParser()
        replies = []
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(payload)
            while len(replies) < expected:
                item = parser.parse()
                if item is NEED_MORE:
                    data = s.recv(65536)
                    if not data:
                        raise RuntimeError("redis-server closed the connection")
                    parser.feed(data)
                else:
                    replies.append(item)
        return replies[-1]

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()
