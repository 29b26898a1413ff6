"""Machinery for the interop tests: a real `fabric serve` process, SDK and raw clients.

Rules this module keeps:
- Every wait is bounded (constants below); a timeout fails the test with the server's recent
  output in the message, so a hang never looks like a test bug.
- The server runs as a subprocess, exactly as users run it. Its stdout and stderr are drained
  by reader threads for its whole life (a full pipe would otherwise stall the server).
- Teardown sends SIGINT, waits a bounded time, then SIGKILLs, and asserts a clean exit (0).
- `FABRIC_TEST_SERVER_CMD` replaces the command (a format string with `{port}` and `{key}`),
  so the harness can run against a stand-in such as
  `node /work/shared/bench/servers/wps_node.js {port} {key}`. A command with `{port}` gets a
  free port picked here; if it prints no `Endpoint=` line, readiness is "the port accepts TCP".
- Python SDK clients are wrapped by `SdkClient` (see its docstring for the 1.1.0 workarounds).
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import itertools
import os
import queue
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = ROOT / "tests" / "js"

SERVER_CMD_ENV = "FABRIC_TEST_SERVER_CMD"
SERVER_START_TIMEOUT = 20.0  # until the Endpoint= line (or, for a stand-in, the open port)
SERVER_STOP_TIMEOUT = 10.0  # from SIGINT to exit, before SIGKILL
WAIT_TIMEOUT = 5.0  # any single expected message / event / close
SDK_START_TIMEOUT = 5.0  # WebPubSubClient(start_timeout=...): see SdkClient
SDK_ACK_TIMEOUT = 5.0  # WebPubSubClient(ack_timeout=...): see SdkClient

_ENDPOINT_LINE = re.compile(r"^Endpoint=(?P<endpoint>https?://[^;]+);AccessKey=(?P<key>[^;]+);Version=1\.0;?$")


def load_require_tool() -> Callable[[str], str]:
    """`tests/conftest.py::require_tool`, loaded by path (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location("_fabric_tests_root_conftest", ROOT / "tests" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.require_tool


require_tool = load_require_tool()

_names = itertools.count(1)


def unique(prefix: str) -> str:
    """A hub/group/user name unique within this run (hub-name rule: letter first, then [A-Za-z0-9_])."""
    return f"{prefix}_{next(_names)}_{secrets.token_hex(3)}"


# --------------------------------------------------------------------------------------------
# The server process


class _OutputTail:
    """Drains one pipe in a daemon thread and keeps its last lines.

    While `queueing` is true, every line is also put on `new_lines` for a reader to await
    (None marks EOF); turn it off once nobody reads them, so the queue stays bounded.
    """

    def __init__(self, stream: Any, name: str, maxlen: int = 400, *, queueing: bool = True) -> None:
        self.name = name
        self.lines: collections.deque[str] = collections.deque(maxlen=maxlen)
        self.new_lines: queue.Queue[str | None] = queue.Queue()
        self.queueing = queueing
        self._thread = threading.Thread(target=self._run, args=(stream,), name=f"drain-{name}", daemon=True)
        self._thread.start()

    def _run(self, stream: Any) -> None:
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                self.lines.append(line)
                if self.queueing:
                    self.new_lines.put(line)
        finally:
            self.new_lines.put(None)

    def text(self, last: int = 80) -> str:
        lines = list(self.lines)[-last:]
        return "\n".join(lines) or "(nothing)"

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class FabricServer:
    """A running server under test: where it listens, its key, and helpers to reach it."""

    def __init__(self, proc: subprocess.Popen[bytes], cmd: list[str], stdout: _OutputTail, stderr: _OutputTail) -> None:
        self.proc = proc
        self.cmd = cmd
        self.stdout = stdout
        self.stderr = stderr
        self.endpoint = ""  # http://127.0.0.1:PORT
        self.port = 0
        self.key = ""
        self.connection_string = ""
        self._service_clients: dict[str, Any] = {}

    # -- addresses and tokens --

    ECHO_HUB = "echo"  # embedded_echo_server.py: the hub with the echo/broadcast/fail handler

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def ws_base(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def service_client(self, hub: str) -> Any:
        from azure.messaging.webpubsubservice import WebPubSubServiceClient

        if hub not in self._service_clients:
            self._service_clients[hub] = WebPubSubServiceClient.from_connection_string(self.connection_string, hub=hub)
        return self._service_clients[hub]

    def client_url(
        self,
        hub: str,
        *,
        user_id: str | None = None,
        roles: tuple[str, ...] | list[str] = (),
        groups: tuple[str, ...] | list[str] = (),
        minutes_to_expire: int = 10,
    ) -> str:
        """A client URL with a token minted by the Python service SDK (locally, no HTTP)."""
        kwargs: dict[str, Any] = {"minutes_to_expire": minutes_to_expire}
        if user_id is not None:
            kwargs["user_id"] = user_id
        if roles:
            kwargs["roles"] = list(roles)
        if groups:
            kwargs["groups"] = list(groups)
        url = self.service_client(hub).get_client_access_token(**kwargs)["url"]
        assert url.startswith(f"{self.ws_base}/client/hubs/{hub}?access_token="), url
        return url

    # -- diagnostics --

    def describe(self) -> str:
        state = "running" if self.proc.poll() is None else f"exited with {self.proc.returncode}"
        return (
            f"server {shlex.join(self.cmd)} ({state})\n"
            f"--- server stdout (tail) ---\n{self.stdout.text()}\n"
            f"--- server stderr (tail) ---\n{self.stderr.text()}"
        )

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            pytest.fail("the server under test died\n" + self.describe(), pytrace=False)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _server_command(key: str, kind: str) -> tuple[list[str], int | None]:
    """The command line, and the port when this harness chose it (stand-in mode).

    `kind`: "serve" is `python -m fabric serve`; "echo" is `embedded_echo_server.py` (the
    embedded API with an in-process event handler, for server-originated messages).
    """
    template = os.environ.get(SERVER_CMD_ENV)
    if not template:
        if kind == "echo":
            script = str(Path(__file__).resolve().parent / "embedded_echo_server.py")
            return [sys.executable, script, "--host", "127.0.0.1", "--port", "0", f"--access-key={key}"], None
        return [sys.executable, "-m", "fabric", "serve", "--host", "127.0.0.1", "--port", "0", f"--access-key={key}"], None
    port = _free_port() if "{port}" in template else None
    return shlex.split(template.format(port=port, key=key)), port


def _child_env() -> dict[str, str]:
    # $FABRIC_* overrides flags (design.md, config): a developer's FABRIC_PORT must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    node_modules = JS_DIR / "node_modules"
    if node_modules.is_dir():  # lets a Node stand-in `require("ws")`
        env["NODE_PATH"] = os.pathsep.join(filter(None, [str(node_modules), env.get("NODE_PATH", "")]))
    return env


def start_server(kind: str = "serve") -> FabricServer:
    """Start the server and wait (bounded) until it listens. The caller must `stop_server`."""
    # >= 32 bytes (PyJWT warns about shorter HMAC keys); never starting with "-", which
    # argparse would take for an option in `--access-key KEY` (a stand-in template may use that form).
    key = "k" + secrets.token_urlsafe(32)
    cmd, chosen_port = _server_command(key, kind)
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=_child_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # our SIGINT only; a terminal ^C reaches pytest, which stops us
    )
    server = FabricServer(proc, cmd, _OutputTail(proc.stdout, "stdout"), _OutputTail(proc.stderr, "stderr", queueing=False))
    try:
        _await_listening(server, key, chosen_port)
    except BaseException:
        stop_server(server, check=False)
        raise
    server.stdout.queueing = False  # from here on only the tail is kept
    return server


def _await_listening(server: FabricServer, key: str, chosen_port: int | None) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(
                f"the server printed no Endpoint= line within {SERVER_START_TIMEOUT:.0f} s\n" + server.describe(),
                pytrace=False,
            )
        try:
            # Stand-in mode polls the port too, so wake up often; otherwise just wait for a line.
            line = server.stdout.new_lines.get(timeout=min(remaining, 0.1 if chosen_port else remaining))
        except queue.Empty:
            if chosen_port is not None and _port_open(chosen_port):
                server.port = chosen_port
                server.key = key
                server.endpoint = f"http://127.0.0.1:{chosen_port}"
                server.connection_string = f"Endpoint={server.endpoint};AccessKey={key};Version=1.0;"
                return
            continue
        if line is None:
            server.proc.wait(5)
            pytest.fail("the server exited before printing an Endpoint= line\n" + server.describe(), pytrace=False)
        m = _ENDPOINT_LINE.match(line.strip())
        if m is None:
            if line.lstrip().startswith("Endpoint="):
                pytest.fail(f"malformed connection-string line {line!r}\n" + server.describe(), pytrace=False)
            continue
        endpoint = m["endpoint"]
        parsed = urllib.parse.urlsplit(endpoint)
        assert parsed.scheme == "http" and parsed.hostname == "127.0.0.1", f"unexpected endpoint in {line!r}"
        assert parsed.port not in (None, 0), f"the printed endpoint must carry the real port: {line!r}"
        assert "port=" not in line.lower().replace("endpoint=", ""), f"no Port= part allowed: {line!r}"
        assert m["key"] == key, f"the printed AccessKey is not the --access-key given: {line!r}"
        server.endpoint = endpoint.rstrip("/")
        server.port = parsed.port
        server.key = key
        server.connection_string = line.strip()
        return


def stop_server(server: FabricServer, *, check: bool = True) -> None:
    """SIGINT, bounded wait, SIGKILL if needed; with `check`, fail unless it exited 0 by itself."""
    proc = server.proc
    problem = None
    if proc.poll() is not None:
        problem = f"the server had already exited with {proc.returncode} before teardown"
    else:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            problem = f"the server did not exit within {SERVER_STOP_TIMEOUT:.0f} s of SIGINT (SIGKILLed)"
        else:
            if proc.returncode != 0:
                problem = f"the server exited with {proc.returncode} after SIGINT (expected a clean 0)"
    server.stdout.join(2)
    server.stderr.join(2)
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    if check and problem:
        pytest.fail(problem + "\n" + server.describe(), pytrace=False)


# --------------------------------------------------------------------------------------------
# The Python client SDK (azure-messaging-webpubsubclient, sync, thread-based)

_GROUP_CALLBACK = "_fabric_test_on_group_message"
_SERVER_CALLBACK = "_fabric_test_on_server_message"
_THREAD_SERIAL = re.compile(r"^Thread-(\d+)")


def _thread_serial() -> int:
    """The N of the current thread's default name "Thread-N (target)".

    The SDK runs every callback in a new thread, created in the listener thread in arrival
    order; CPython numbers default thread names from one increasing counter, so N orders
    callbacks by arrival even when the threads run out of order.
    """
    m = _THREAD_SERIAL.match(threading.current_thread().name)
    return int(m.group(1)) if m else sys.maxsize


class Received:
    """One data message seen by an SdkClient, in a form that is easy to compare."""

    def __init__(self, serial: int, kind: str, args: Any) -> None:
        self.serial = serial
        self.kind = kind  # "group" or "server"
        self.data_type = str(getattr(args.data_type, "value", args.data_type))
        data = args.data
        self.data = bytes(data) if isinstance(data, (memoryview, bytearray)) else data
        self.group = getattr(args, "group", None)
        self.from_user_id = getattr(args, "from_user_id", None)
        self.sequence_id = args.sequence_id

    def __repr__(self) -> str:
        return (
            f"Received({self.kind}, group={self.group!r}, {self.data_type}={self.data!r}, "
            f"from={self.from_user_id!r}, seq={self.sequence_id})"
        )


class SdkClient:
    """A `WebPubSubClient` with its callbacks wired to queues and events.

    Workarounds for azure-messaging-webpubsubclient 1.1.0 (the newest release; read in its
    `_client.py`):
    - Lost wake-ups. `open()` and every acked call wait on a `threading.Condition` *without a
      predicate* (`cv.wait(start_timeout)`, `cv.wait(ack_timeout)`), notified by the listener
      thread. When the answer arrives before the caller reaches `wait()`, the notification is
      lost and the caller sleeps the whole timeout (30 s by default), then checks the real
      state and succeeds. Measured against a fast Node server: 9% of acks, 2.5% of opens.
      Options alone can only bound that penalty (a short timeout), so:
      * acked calls go through `_acked`: it takes the next ackId, pre-registers the SDK's ack
        entry and holds that entry's condition (an RLock) while the SDK sends, so the listener
        cannot notify before the SDK waits. Only the public `ack_id=` keyword reaches the SDK
        call; the pre-registration uses the private `_ack_map` (if a later SDK lacks it, this
        falls back to the plain call, still bounded by `ack_timeout`).
      * `open()` runs the SDK's `open()` in a helper thread and returns as soon as the
        `connected` callback fires (or `open()` fails). That is the right moment anyway: the
        SDK's `open()` returns when the WebSocket opens, before `system/connected` is parsed.
    - `message_retry_total=0`: otherwise a failed ack is retried up to 3 times with backoff
      (about 5.6 s) and a *new* ackId, and `send_to_group` retries drop `no_echo`; a server bug
      would be masked or slowed.
    - `reconnect_retry_total=0`, `auto_rejoin_groups=False`: a test sees the first failure.
    - The SDK fires every callback in a new thread: `Received.serial` restores arrival order
      and `collect_until` joins the callback threads started before its fence.
    """

    def __init__(self, url: str, *, protocol: Any = None, label: str = "client", server: FabricServer | None = None) -> None:
        from azure.messaging.webpubsubclient import WebPubSubClient
        from azure.messaging.webpubsubclient.models import CallbackType, WebPubSubProtocolType

        self.label = label
        self.server = server
        self.client = WebPubSubClient(
            url,
            protocol_type=protocol if protocol is not None else WebPubSubProtocolType.JSON_RELIABLE,
            start_timeout=SDK_START_TIMEOUT,
            ack_timeout=SDK_ACK_TIMEOUT,
            message_retry_total=0,
            reconnect_retry_total=0,
            auto_rejoin_groups=False,
        )
        self.connected = threading.Event()
        self.connected_args: Any = None
        self.disconnected = threading.Event()
        self.disconnected_args: Any = None
        self.stopped = threading.Event()
        self.messages: queue.Queue[Received] = queue.Queue()
        self._opened = False
        self._open_progress = threading.Event()  # connected callback fired, or open() ended
        self._open_error: BaseException | None = None

        def on_connected(args: Any) -> None:
            self.connected_args = args
            self.connected.set()
            self._open_progress.set()

        def on_disconnected(args: Any) -> None:
            self.disconnected_args = args
            self.disconnected.set()

        def on_stopped(*_: Any) -> None:
            self.stopped.set()

        def on_group(args: Any) -> None:
            self.messages.put(Received(_thread_serial(), "group", args))

        def on_server(args: Any) -> None:
            self.messages.put(Received(_thread_serial(), "server", args))

        on_group.__name__ = _GROUP_CALLBACK
        on_server.__name__ = _SERVER_CALLBACK
        self.client.subscribe(CallbackType.CONNECTED, on_connected)
        self.client.subscribe(CallbackType.DISCONNECTED, on_disconnected)
        self.client.subscribe(CallbackType.STOPPED, on_stopped)
        self.client.subscribe(CallbackType.GROUP_MESSAGE, on_group)
        self.client.subscribe(CallbackType.SERVER_MESSAGE, on_server)

    def _fail(self, what: str) -> None:
        extra = ("\n" + self.server.describe()) if self.server is not None else ""
        pytest.fail(f"[{self.label}] {what}{extra}", pytrace=False)

    def open(self) -> "SdkClient":
        """Open and wait (bounded) for `system/connected`; raise what `open()` raised."""
        self._opened = True

        def run_open() -> None:
            try:
                self.client.open()
            except BaseException as exc:  # handed to the test thread below
                self._open_error = exc
            finally:
                self._open_progress.set()

        threading.Thread(target=run_open, name=f"sdk-open-{self.label}", daemon=True).start()
        if not self._open_progress.wait(SDK_START_TIMEOUT + WAIT_TIMEOUT):
            self._fail(f"open() neither failed nor produced system/connected within {SDK_START_TIMEOUT + WAIT_TIMEOUT} s")
        if self._open_error is not None:
            raise self._open_error
        if not self.connected.wait(WAIT_TIMEOUT):
            self._fail(f"no system/connected message within {WAIT_TIMEOUT} s of the WebSocket opening")
        return self

    def close(self) -> None:
        if self._opened:
            self._opened = False
            self.client.close()

    # -- acked operations (race-free: see the class docstring) --

    def _acked(self, call: Callable[[int | None], None]) -> None:
        ack_map = getattr(self.client, "_ack_map", None)
        next_ack_id = getattr(self.client, "_next_ack_id", None)
        try:
            from azure.messaging.webpubsubclient.models._models import AckMessageError, SendMessageErrorOptions
        except ImportError:
            ack_map = None
        if ack_map is None or next_ack_id is None:
            call(None)
            return
        ack_id = next_ack_id()
        entry = SendMessageErrorOptions(
            error_detail=AckMessageError(name="", message="Timeout while waiting for ack message.")
        )
        ack_map.add(ack_id, entry)
        try:
            with entry.cv:  # the SDK re-enters it and releases it in wait()
                call(ack_id)
        finally:
            ack_map.pop(ack_id)  # already popped by the SDK unless the send itself failed

    def join(self, group: str) -> None:
        """`join_group` with an ack; raises SendMessageError on an ack error."""
        self._acked(lambda ack_id: self.client.join_group(group, ack_id=ack_id))

    def leave(self, group: str) -> None:
        self._acked(lambda ack_id: self.client.leave_group(group, ack_id=ack_id))

    def send_to_group(self, group: str, content: Any, data_type: Any, *, no_echo: bool = False) -> None:
        self._acked(lambda ack_id: self.client.send_to_group(group, content, data_type, no_echo=no_echo, ack_id=ack_id))

    def send_event(self, event: str, content: Any, data_type: Any) -> None:
        self._acked(lambda ack_id: self.client.send_event(event, content, data_type, ack_id=ack_id))

    @property
    def connection_id(self) -> str:
        return self.connected_args.connection_id

    def next_message(self, timeout: float = WAIT_TIMEOUT) -> Received:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            self._fail(f"no message arrived within {timeout} s")
            raise  # unreachable

    def collect_until(self, predicate: Callable[[Received], bool], timeout: float = WAIT_TIMEOUT) -> list[Received]:
        """All messages up to and including the first matching one, in arrival order.

        Once the match is seen, the SDK's callback threads started before it are joined, so a
        message that arrived earlier but whose thread ran late is included too: that is what
        makes "X arrived / did not arrive before the fence" a sound check.
        """
        deadline = time.monotonic() + timeout
        seen: list[Received] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail(f"no matching message within {timeout} s; saw {seen}")
            try:
                msg = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            seen.append(msg)
            if predicate(msg):
                break
        _join_callback_threads(until_serial=seen[-1].serial)
        while True:
            try:
                seen.append(self.messages.get_nowait())
            except queue.Empty:
                break
        seen.sort(key=lambda m: m.serial)
        fence = next(i for i, m in enumerate(seen) if predicate(m))
        for late in reversed(seen[fence + 1 :]):  # arrived after the fence: leave for the next read
            self.messages.put(late)
        return seen[: fence + 1]


def _join_callback_threads(until_serial: int) -> None:
    for t in threading.enumerate():
        if t is threading.current_thread() or not t.name.endswith((f"({_GROUP_CALLBACK})", f"({_SERVER_CALLBACK})")):
            continue
        m = _THREAD_SERIAL.match(t.name)
        if m and int(m.group(1)) < until_serial:
            try:
                t.join(WAIT_TIMEOUT)
            except RuntimeError:
                # Not started yet: then it is another client's (a client's listener thread
                # returns from Thread.start() before it creates the next callback thread).
                pass




# --------------------------------------------------------------------------------------------
# Plain WebSocket clients (trio-websocket) and raw HTTP (h11 over a socket)

RAW_MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # what our raw clients accept (the server's limit is 1 MiB inbound)
JSON_SUBPROTOCOL = "json.webpubsub.azure.v1"
JSON_RELIABLE = "json.reliable.webpubsub.azure.v1"


class Closed(Exception):
    """The peer closed the WebSocket: `code` 1006 means no close frame arrived."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason or ""


class RawClient:
    """A plain WebSocket client on trio-websocket. With no subprotocol it is a Web PubSub
    "simple client". Open with `open_raw_client` / `open_json_client` (async context managers)."""

    def __init__(self, ws: Any, label: str, server: FabricServer | None) -> None:
        self.ws = ws
        self.label = label
        self.server = server

    def _fail(self, what: str) -> None:
        extra = ("\n" + self.server.describe()) if self.server is not None else ""
        pytest.fail(f"[{self.label}] {what}{extra}", pytrace=False)

    async def send(self, data: str | bytes) -> None:
        """Send one message (one frame). Raises `Closed` if the connection is already closed."""
        import trio_websocket

        try:
            await self.ws.send_message(data)
        except trio_websocket.ConnectionClosed as exc:
            raise Closed(exc.reason.code, exc.reason.reason) from None

    async def recv(self, timeout: float = WAIT_TIMEOUT) -> str | bytes:
        """The next message; fails the test on timeout; raises `Closed` once the peer closed."""
        import trio
        import trio_websocket

        with trio.move_on_after(timeout):
            try:
                return await self.ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                raise Closed(exc.reason.code, exc.reason.reason) from None
        self._fail(f"no frame within {timeout} s")
        raise AssertionError("unreachable")

    async def try_recv(self, timeout: float) -> str | bytes | None:
        """Like `recv`, but None on timeout (for probes)."""
        import trio

        with trio.move_on_after(timeout):
            return await self.recv(timeout + 1)
        return None

    async def expect_close(self, timeout: float = WAIT_TIMEOUT) -> tuple[list[str | bytes], Closed]:
        """Read frames until the server closes; return them and how it closed."""
        import trio

        frames: list[str | bytes] = []
        with trio.move_on_after(timeout):
            while True:
                try:
                    frames.append(await self.recv(timeout + 1))
                except Closed as closed:
                    return frames, closed
        self._fail(f"the server did not close the connection within {timeout} s (frames {frames!r:.500})")
        raise AssertionError("unreachable")


class JsonClient(RawClient):
    """Hand-written frames on a JSON subprotocol; `connected` holds the first frame."""

    def __init__(self, ws: Any, label: str, server: FabricServer | None) -> None:
        super().__init__(ws, label, server)
        self._ack_ids = itertools.count(1)
        self.pending: collections.deque[dict[str, Any]] = collections.deque()
        self.connected: dict[str, Any] = {}

    async def _read_connected(self) -> None:
        first = await self.recv_json()
        assert first.get("type") == "system" and first.get("event") == "connected", f"first frame must be connected: {first}"
        assert isinstance(first.get("connectionId"), str) and first["connectionId"], first
        self.connected = first

    async def send_json(self, obj: Any) -> None:
        import json

        await self.send(json.dumps(obj, separators=(",", ":")))

    async def recv_json(self, timeout: float = WAIT_TIMEOUT) -> dict[str, Any]:
        import json

        frame = await self.recv(timeout)
        assert isinstance(frame, str), f"JSON subprotocols use text frames only, got {frame!r:.200}"
        return json.loads(frame)

    async def request(self, obj: dict[str, Any], timeout: float = WAIT_TIMEOUT) -> dict[str, Any]:
        """Send with a fresh ackId; return the ack (other frames are kept in `pending`)."""
        import trio

        ack_id = next(self._ack_ids)
        await self.send_json({**obj, "ackId": ack_id})
        with trio.move_on_after(timeout):
            while True:
                msg = await self.recv_json(timeout + 1)
                if msg.get("type") == "ack" and msg.get("ackId") == ack_id:
                    return msg
                self.pending.append(msg)
        self._fail(f"no ack for {obj.get('type')} ackId={ack_id} within {timeout} s")
        raise AssertionError("unreachable")

    async def join(self, group: str) -> None:
        ack = await self.request({"type": "joinGroup", "group": group})
        assert ack.get("success") is True, f"joinGroup {group!r} failed: {ack}"

    async def publish(self, group: str, data: Any, data_type: str = "text", *, no_echo: bool = False) -> None:
        ack = await self.request({"type": "sendToGroup", "group": group, "dataType": data_type, "data": data, "noEcho": no_echo})
        assert ack.get("success") is True, f"sendToGroup {group!r} failed: {ack}"

    async def next_message(self, timeout: float = WAIT_TIMEOUT) -> dict[str, Any]:
        """The next `type: message` frame (acks and other frames in between are skipped)."""
        import trio

        with trio.move_on_after(timeout):
            while True:
                msg = self.pending.popleft() if self.pending else await self.recv_json(timeout + 1)
                if msg.get("type") == "message":
                    return msg
        self._fail(f"no message within {timeout} s")
        raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def open_raw_client(
    url: str,
    *,
    subprotocol: str | None = None,
    label: str = "raw",
    server: FabricServer | None = None,
    cls: type = RawClient,
    queue_size: int = 64,
) -> AsyncIterator[Any]:
    """Connect (bounded); with a subprotocol, check the server echoed it.

    `queue_size`: messages trio-websocket buffers before it stops reading the socket (so a
    client that never calls `recv` pushes back on the server after that many).
    """
    import trio_websocket

    async with trio_websocket.open_websocket_url(
        url,
        subprotocols=[subprotocol] if subprotocol else None,
        max_message_size=RAW_MAX_MESSAGE_BYTES,
        message_queue_size=queue_size,
        connect_timeout=WAIT_TIMEOUT,
        disconnect_timeout=2,
        receive_buffer_size=256 * 1024,
    ) as ws:
        if subprotocol is not None:
            assert ws.subprotocol == subprotocol, (
                f"the server must echo Sec-WebSocket-Protocol {subprotocol!r}, got {ws.subprotocol!r}"
            )
        client = cls(ws, label, server)
        if isinstance(client, JsonClient):
            await client._read_connected()
        yield client


def open_json_client(
    url: str, *, reliable: bool = False, label: str = "json", server: FabricServer | None = None, queue_size: int = 64
) -> Any:
    """`async with open_json_client(url) as c:` a JsonClient, `system/connected` already read."""
    return open_raw_client(
        url, subprotocol=JSON_RELIABLE if reliable else JSON_SUBPROTOCOL, label=label, server=server, cls=JsonClient,
        queue_size=queue_size,
    )


class HttpResponse:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        import json

        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"HttpResponse({self.status}, {self.headers}, {self.body[:300]!r})"


def http_request(
    port: int,
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    timeout: float = WAIT_TIMEOUT,
) -> HttpResponse:
    """One HTTP/1.1 request over a fresh socket, parsed with h11. A 101 answer is returned as is."""
    import h11

    conn = h11.Connection(our_role=h11.CLIENT)
    all_headers = [("Host", f"127.0.0.1:{port}"), ("Connection", "close"), *(headers or [])]
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(conn.send(h11.Request(method=method, target=target, headers=all_headers)))
        sock.sendall(conn.send(h11.EndOfMessage()))
        status = 0
        resp_headers: dict[str, str] = {}
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                conn.receive_data(sock.recv(65536))
                continue
            if isinstance(event, (h11.Response, h11.InformationalResponse)):
                status = event.status_code
                resp_headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
                if isinstance(event, h11.InformationalResponse):
                    return HttpResponse(status, resp_headers, b"")
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return HttpResponse(status, resp_headers, bytes(body))


async def ahttp_request(*args: Any, **kwargs: Any) -> HttpResponse:
    """`http_request` from trio code (in a worker thread)."""
    import functools

    import trio

    return await trio.to_thread.run_sync(functools.partial(http_request, *args, **kwargs))


def upgrade_headers(subprotocol: str | None = JSON_SUBPROTOCOL) -> list[tuple[str, str]]:
    """Headers of a WebSocket upgrade request (RFC 6455 §4.1)."""
    import base64

    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", base64.b64encode(secrets.token_bytes(16)).decode()),
    ]
    if subprotocol:
        headers.append(("Sec-WebSocket-Protocol", subprotocol))
    return headers


# --------------------------------------------------------------------------------------------
# The JavaScript client SDK, driven through tests/js/client.mjs

NODE_DEADLINE_MS = 60_000  # a driver process never outlives this, whatever the test does


def require_node_modules() -> str:
    """The `node` executable, after checking tests/js has its npm packages installed."""
    node = require_tool("node")
    if not (JS_DIR / "node_modules" / "@azure" / "web-pubsub-client").is_dir():
        pytest.fail(
            f"{JS_DIR / 'node_modules'} is missing or incomplete: run ./dev test "
            "(it runs `npm ci` in tests/js before pytest)",
            pytrace=False,
        )
    return node


class NodeClient:
    """One `WebPubSubClient` (npm @azure/web-pubsub-client) in a `node client.mjs` process.

    Commands go to its stdin as JSON lines; results and events come back on stdout (see the
    header of tests/js/client.mjs). Node delivers events in arrival order, so `events` is in
    arrival order too. Every wait is bounded; `close()` ends the process (bounded).
    """

    def __init__(
        self,
        server: FabricServer,
        *,
        url: str | None = None,
        hub: str | None = None,
        user_id: str | None = None,
        roles: tuple[str, ...] | list[str] = (),
        groups: tuple[str, ...] | list[str] = (),
        protocol: str = "reliable",
        label: str = "node",
    ) -> None:
        node = require_node_modules()
        self.server = server
        self.label = label
        cmd = [node, str(JS_DIR / "client.mjs"), "--protocol", protocol, "--deadline-ms", str(NODE_DEADLINE_MS),
               "--op-timeout-ms", str(int(WAIT_TIMEOUT * 1000))]
        if url is not None:
            cmd += ["--url", url]
        else:  # the JavaScript service SDK mints the token
            assert hub is not None
            cmd += ["--connection-string", server.connection_string, "--hub", hub]
            if user_id is not None:
                cmd += ["--user", user_id]
            for role in roles:
                cmd += ["--role", role]
            for group in groups:
                cmd += ["--group", group]
        self.cmd = cmd
        self.proc = subprocess.Popen(
            cmd, cwd=JS_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.stdout = _OutputTail(self.proc.stdout, f"{label}-stdout")  # read by _next_line
        self.stderr = _OutputTail(self.proc.stderr, f"{label}-stderr", queueing=False)
        self.events: collections.deque[dict[str, Any]] = collections.deque()
        self._ids = itertools.count(1)
        self.connected: dict[str, Any] | None = None
        self.ready = self._next_line(lambda m: m.get("type") == "ready", "the ready line")

    # -- plumbing --

    def describe(self) -> str:
        state = "running" if self.proc.poll() is None else f"exited with {self.proc.returncode}"
        return (
            f"node driver {self.label} ({state})\n--- its stdout ---\n{self.stdout.text()}\n"
            f"--- its stderr ---\n{self.stderr.text()}\n{self.server.describe()}"
        )

    def _fail(self, what: str) -> None:
        pytest.fail(f"[{self.label}] {what}\n{self.describe()}", pytrace=False)

    def _next_line(self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = WAIT_TIMEOUT) -> dict[str, Any]:
        """Read lines until one matches; events seen meanwhile are kept in `events`."""
        import json

        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._fail(f"no {what} within {timeout} s")
            try:
                line = self.stdout.new_lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait(5)
                self._fail(f"the node driver ended while waiting for {what}")
            try:
                msg = json.loads(line)
            except ValueError:
                self._fail(f"the node driver printed a non-JSON line {line!r}")
            if msg.get("type") == "fatal":
                self._fail(f"the node driver failed: {msg.get('error')}")
            if predicate(msg):
                return msg
            if msg.get("type") == "event":
                self.events.append(msg)

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """Run one command; return its result line (`ok` true or false)."""
        import json

        cmd_id = next(self._ids)
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps({"id": cmd_id, "op": op, **fields}) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            self._fail(f"the node driver is gone (sending {op})")
        return self._next_line(
            lambda m: m.get("type") == "result" and m.get("id") == cmd_id, f"result of {op}", timeout=WAIT_TIMEOUT + 2
        )

    def ok(self, op: str, **fields: Any) -> dict[str, Any]:
        result = self.call(op, **fields)
        if not result.get("ok"):
            self._fail(f"{op} {fields} failed: {result.get('error')}")
        return result

    # -- operations --

    def start(self) -> "NodeClient":
        self.ok("start")
        self.connected = self.next_event("connected")
        return self

    def join(self, group: str) -> dict[str, Any]:
        return self.ok("join", group=group)

    def leave(self, group: str) -> dict[str, Any]:
        return self.ok("leave", group=group)

    def send(self, group: str, data: Any, data_type: str = "text", *, no_echo: bool = False) -> dict[str, Any]:
        import base64

        if data_type in ("binary", "protobuf"):
            data = base64.b64encode(data).decode()
        return self.ok("send", group=group, data=data, dataType=data_type, noEcho=no_echo)

    def next_event(self, kind: str, timeout: float = WAIT_TIMEOUT) -> dict[str, Any]:
        """The next event of this kind, in arrival order (earlier other events are dropped)."""
        while self.events:
            msg = self.events.popleft()
            if msg.get("event") == kind:
                return msg
        return self._next_line(lambda m: m.get("type") == "event" and m.get("event") == kind, f"a {kind} event", timeout)

    def collect_until(self, kind: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = WAIT_TIMEOUT) -> list[dict[str, Any]]:
        """All `kind` events up to and including the first matching one, in arrival order."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            msg = self.next_event(kind, max(0.01, deadline - time.monotonic()))
            seen.append(msg)
            if predicate(msg):
                return seen

    def close(self) -> int:
        """End the driver: stdin EOF makes it stop the client and exit 0. Returns the exit code."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(WAIT_TIMEOUT + 2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.stdout.join(2)
        self.stderr.join(2)
        return self.proc.returncode


def node_data(msg: dict[str, Any]) -> Any:
    """A driver-reported payload in Python form (binary arrives as {"base64": ...})."""
    import base64

    data = msg.get("data")
    if msg.get("dataType") in ("binary", "protobuf") and isinstance(data, dict):
        return base64.b64decode(data["base64"])
    return data
