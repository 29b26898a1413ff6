"""Starting, probing and stopping the processes of a benchmark run.

Rules this module keeps:
- Every child is started in a new session (its own process group, pgid == pid) and is stopped
  only through that group: SIGTERM, a bounded wait, then SIGKILL. Nothing else is ever signalled.
- Every stop happens in ``finally`` (``running_server`` is a context manager; ``run_command``
  kills its child on timeout and on any exception).
- Every wait is bounded: readiness by ``ready_timeout``, commands by ``timeout``, stops by
  ``TERM_GRACE_S`` + ``KILL_WAIT_S``.
- Servers bind 127.0.0.1 only; ports come from a range below the ephemeral range, so the
  generator's TIME_WAIT sockets never sit on a port we want to listen on.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
TERM_GRACE_S = 8.0
KILL_WAIT_S = 5.0


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (capped at 1M when unlimited); children
    started afterwards inherit it. Returns the resulting (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class PortAllocator:
    """Hands out free loopback ports from ``[base, base + span)``, never the same one twice in a
    row, so a new server never lands on the port the previous one just left."""

    def __init__(self, base: int = 31100, span: int = 800) -> None:
        self._base = base
        self._span = span
        self._next = 0

    def take(self) -> int:
        for _ in range(self._span):  # bounded: at most one pass over the range
            port = self._base + self._next
            self._next = (self._next + 1) % self._span
            if port_is_free(port):
                return port
        raise RuntimeError(f"no free port in {self._base}..{self._base + self._span - 1}")


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return not port_accepts(port, timeout=0.2)


def port_accepts(port: int, timeout: float = 0.2) -> bool:
    try:
        socket.create_connection((HOST, port), timeout).close()
        return True
    except OSError:
        return False


def group_pids(pgid: int) -> list[int]:
    """The live pids whose process group is ``pgid`` (read from /proc; nothing is signalled)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        # fields[0] = state, [1] = ppid, [2] = pgrp
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            pids.append(int(entry))
    return sorted(pids)


def stop_group(proc: subprocess.Popen) -> int | None:
    """Stop ``proc`` and its process group (which we created): SIGTERM, wait, SIGKILL.

    Returns the leader's exit code (None if it could not be reaped, which should not happen).
    """
    pgid = proc.pid
    if proc.poll() is None:
        _killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(TERM_GRACE_S)
        except subprocess.TimeoutExpired:
            _killpg(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(KILL_WAIT_S)
    # The leader is gone; take down anything it left behind in its own group.
    if group_pids(pgid):
        _killpg(pgid, signal.SIGKILL)
    return proc.poll()


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def tail(path: Path, max_bytes: int = 4000) -> str:
    """The last ``max_bytes`` of a log file, as text."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


class ServerFailed(Exception):
    """The server exited or never listened. ``log_tail`` holds the end of its output."""

    def __init__(self, message: str, log_tail: str) -> None:
        super().__init__(message)
        self.log_tail = log_tail


@dataclass
class RunningServer:
    proc: subprocess.Popen
    port: int
    log_path: Path
    log_offset: int  # where this start's output begins in the (shared, appended) log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        """The leader plus any children in its process group (for RSS/CPU accounting)."""
        return group_pids(self.proc.pid) or [self.proc.pid]

    def output(self, max_bytes: int = 4000) -> str:
        """This start's output so far (at most the last ``max_bytes``)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                end = f.tell()
                f.seek(max(self.log_offset, end - max_bytes))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


@contextlib.contextmanager
def running_server(
    cmd: Sequence[str],
    port: int,
    log_path: Path,
    *,
    cwd: Path,
    env: dict[str, str] | None = None,
    ready_timeout: float = 30.0,
) -> Iterator[RunningServer]:
    """Start ``cmd`` in its own process group, wait until 127.0.0.1:``port`` accepts, yield it,
    and stop the whole group on exit, whatever happens."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n### {time.strftime('%H:%M:%S')} start: {' '.join(cmd)}\n".encode())
        log.flush()
        offset = log.tell()
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    server = RunningServer(proc, port, log_path, offset)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:  # bounded by ready_timeout
            code = proc.poll()
            if code is not None:
                raise ServerFailed(f"exited with code {code} before listening", server.output())
            if port_accepts(port):
                break
            if time.monotonic() > deadline:
                raise ServerFailed(f"not listening on {HOST}:{port} after {ready_timeout:.0f} s", server.output())
            time.sleep(0.1)
        yield server
    finally:
        code = stop_group(proc)
        with open(log_path, "ab") as log:
            log.write(f"### {time.strftime('%H:%M:%S')} stopped, exit code {code}\n".encode())


@dataclass
class CommandResult:
    returncode: int | None  # None: killed after the timeout
    stdout: str
    stderr: str
    wall_s: float
    timed_out: bool


def run_command(cmd: Sequence[str], *, cwd: Path, timeout: float, env: dict[str, str] | None = None) -> CommandResult:
    """Run ``cmd`` in its own process group with a hard timeout; the group is killed on timeout
    or on any exception (KeyboardInterrupt included)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        text=True,
        start_new_session=True,
    )
    timed_out = False
    try:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate(timeout=KILL_WAIT_S)
    finally:
        if proc.poll() is None:
            stop_group(proc)
    return CommandResult(None if timed_out else proc.returncode, out or "", err or "", time.monotonic() - t0, timed_out)
