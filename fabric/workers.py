"""``fabric serve --workers N``: N fabric processes on one port, supervised by this one.

Python runs one core per process, so one machine's cores need several processes. Each
worker is a whole ``fabric serve`` (same flags, same config file and environment) that
listens with ``SO_REUSEPORT`` on the same port; the kernel spreads new connections over
them, and the broker (Redis: ``--workers`` > 1 needs a broker URL) makes them one fabric.

Rules this module keeps:
- The port is reserved by this process for its whole life (a bound, never listening
  ``SO_REUSEPORT`` socket): ``--port 0`` picks one port for every worker, and a restarted
  worker gets the same port back.
- Every worker has the same access keys: a key generated here (none configured) is handed
  to the workers in ``$FABRIC_ACCESS_KEY``.
- ``Endpoint=...`` is printed once, when every worker is listening. A worker that exits
  before it ever listened (Redis unreachable, a bad config) ends the whole group with its
  exit status: that is a configuration problem, not a crash to retry.
- A worker that exits later is restarted, with a capped backoff when it keeps crashing
  (5 exits within 30 s: wait 1 s, then 2, ... at most 10 s between starts).
- SIGTERM or SIGINT drains all: each worker gets SIGTERM and shuts down gracefully
  (closing its connections with 1001); one still running after ``shutdown_timeout`` + 5 s
  is killed. The exit status is then 0.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import socket
import subprocess
import sys

import trio

log = logging.getLogger("fabric.workers")

#: Set in a worker's environment: its index (0 .. N-1).
ENV_WORKER = "FABRIC_WORKER"
#: Set in a worker's environment: listen with SO_REUSEPORT.
ENV_REUSE_PORT = "FABRIC_REUSE_PORT"
_CRASH_WINDOW = 30.0
_CRASHES_BEFORE_BACKOFF = 5
_MAX_BACKOFF = 10.0
_START_TIMEOUT = 60.0


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound (not listening) ``SO_REUSEPORT`` socket holding ``host:port`` (0: any port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host or "0.0.0.0", port))
    except OSError:
        sock.close()
        raise
    return sock


def worker_argv(argv: list[str], port: int) -> list[str]:
    """The ``fabric serve`` arguments of a worker: ours without ``--workers``/``--port``,
    then ``--port PORT``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--workers", "--port"):
            skip = True
            continue
        if arg.startswith(("--workers=", "--port=")):
            continue
        out.append(arg)
    return [*out, "--port", str(port)]


class _Supervisor:
    def __init__(self, n: int, argv: list[str], env: dict[str, str], shutdown_timeout: float) -> None:
        self.n = n
        self.argv = argv
        self.env = env
        self.shutdown_timeout = shutdown_timeout
        self.procs: dict[int, trio.Process] = {}
        self.stopping = False
        self.failed: int | None = None  # exit status of a worker that never started
        self.endpoint: str | None = None
        self.ready = 0
        self.all_ready = trio.Event()
        self.restarts = 0

    async def run_slot(self, index: int, cancel: trio.CancelScope) -> None:
        crashes: collections.deque[float] = collections.deque()
        first = True
        while not self.stopping:
            env = dict(self.env, **{ENV_WORKER: str(index), ENV_REUSE_PORT: "1"})
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "fabric", *self.argv], env=env, stdout=subprocess.PIPE)
            self.procs[index] = proc
            listened = await self._read_output(proc, first)
            rc = await proc.wait()
            self.procs.pop(index, None)
            if self.stopping:
                return
            await trio.sleep(0.2)  # a SIGINT to the whole terminal group reaches us a moment later
            if self.stopping:
                return
            if not listened:
                log.error("worker %d exited with %s before it listened: stopping all workers", index, rc)
                self.failed = rc or 1
                self.stopping = True
                cancel.cancel()
                return
            first = False
            self.restarts += 1
            now = trio.current_time()
            crashes.append(now)
            while crashes and now - crashes[0] > _CRASH_WINDOW:
                crashes.popleft()
            delay = 0.0
            if len(crashes) >= _CRASHES_BEFORE_BACKOFF:
                delay = min(_MAX_BACKOFF, 2.0 ** (len(crashes) - _CRASHES_BEFORE_BACKOFF))
            log.warning("worker %d (pid %d) exited with %s; restarting%s", index, proc.pid, rc,
                        f" in {delay:g} s" if delay else "")
            await trio.sleep(delay)

    async def _read_output(self, proc: trio.Process, first: bool) -> bool:
        """Forward the worker's stdout; True once it printed its ``Endpoint=`` line (then
        keep draining in the background until it ends)."""
        buffer = b""
        listened = False
        async for chunk in proc.stdout:
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                text = line.decode("utf-8", "replace")
                if not listened and text.startswith("Endpoint="):
                    listened = True
                    if self.endpoint is None:
                        self.endpoint = text
                    if first:
                        self.ready += 1
                        if self.ready == self.n:
                            self.all_ready.set()
                elif text:
                    print(text, flush=True)
        return listened

    def signal_all(self, signum: int) -> None:
        for proc in list(self.procs.values()):
            if proc.returncode is None:
                try:
                    proc.send_signal(signum)
                except ProcessLookupError:
                    pass


async def _main(n: int, argv: list[str], env: dict[str, str], shutdown_timeout: float) -> int:
    sup = _Supervisor(n, argv, env, shutdown_timeout)
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                for index in range(n):
                    nursery.start_soon(sup.run_slot, index, nursery.cancel_scope)

                async def announce() -> None:
                    with trio.move_on_after(_START_TIMEOUT):
                        await sup.all_ready.wait()
                    if sup.all_ready.is_set():
                        print(sup.endpoint, flush=True)
                        log.info("%d workers listening (pids %s)", n,
                                 ", ".join(str(p.pid) for p in sup.procs.values()))
                    else:
                        log.error("not every worker listened within %g s", _START_TIMEOUT)

                nursery.start_soon(announce)
                async for signum in signals:
                    log.info("received %s: stopping %d workers", signal.Signals(signum).name, n)
                    break
                nursery.cancel_scope.cancel()
    finally:
        sup.stopping = True
        with trio.CancelScope(shield=True):
            await _stop_all(sup, shutdown_timeout + 5.0)
    return sup.failed or 0


async def _stop_all(sup: _Supervisor, grace: float) -> None:
    """SIGTERM every worker, wait up to ``grace`` seconds, then SIGKILL what remains."""
    procs = [p for p in sup.procs.values() if p.returncode is None]
    sup.signal_all(signal.SIGTERM)
    with trio.move_on_after(grace):
        for proc in procs:
            await proc.wait()
    left = [p for p in procs if p.returncode is None]
    if left:
        log.warning("killing %d worker(s) still running after %g s", len(left), grace)
        for proc in left:
            proc.kill()
            await proc.wait()


def serve_workers(n: int, config, argv: list[str], generated_key: str | None = None) -> int:
    """Run ``n`` workers of ``fabric serve`` (``argv``: its arguments after ``serve``)
    until SIGTERM/SIGINT; the process's exit status."""
    host, port = config.server.host, config.server.port
    try:
        holder = reserve_port(host, port)
    except OSError as exc:
        print(f"fabric: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    try:
        bound = holder.getsockname()[1]
        env = dict(os.environ)
        if generated_key is not None:
            env["FABRIC_ACCESS_KEY"] = generated_key
        try:
            return trio.run(_main, n, ["serve", *worker_argv(argv, bound)], env, config.server.shutdown_timeout)
        except KeyboardInterrupt:
            return 0
    finally:
        holder.close()
