"""A TCP proxy for chaos tests: clients connect to it, it forwards to the server, and a test can
abort every live connection abruptly (RST both ways, no WebSocket close frame), leave the
server's side half-open, or hold new connections for a while. It also watches the WebSocket
traffic go by (requests, `connected` frames, `sequenceAck`s, data frames, close codes), so a
test can pace a publisher on the acks the client really sent and check how every recovery
request was answered.

Rules this module keeps:
- One thread runs a `selectors` loop and owns every socket; other threads talk to it only
  through a command queue plus a wake-up socketpair, and wait for its answer a bounded time.
- Buffers are bounded: each direction of a connection holds at most `buffer_bytes`; a side is
  not read while the buffer towards the other side is full (TCP back-pressure reaches the
  sender). The sniffer keeps at most SNIFF_MAX_MESSAGE bytes of one message and the proxy at
  most HISTORY connection records and MAX_LIVE live connections (more are reset at accept).
- Every loop is bounded: the event loop wakes at least every TICK seconds and ends on
  `close()`; a pass handles only the events `select()` returned; the frame parser consumes at
  least one byte per iteration or returns.
- An abort sets SO_LINGER (on, 0) and closes: the peer gets a TCP RST, never a FIN or a
  WebSocket close frame.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import queue
import selectors
import socket
import struct
import threading
import time
import urllib.parse
from typing import Any, Callable

TICK = 0.05  # the loop's longest sleep
COMMAND_TIMEOUT = 5.0  # how long a caller waits for the loop thread to run its command
UPSTREAM_CONNECT_TIMEOUT = 2.0
HISTORY = 256
MAX_LIVE = 64
SNIFF_MAX_MESSAGE = 64 * 1024
MAX_HTTP_HEAD = 16 * 1024


def _rst_close(sock: socket.socket | None) -> None:
    """Close so that the peer gets a TCP RST (SO_LINGER on, 0 s)."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def _unmask(data: bytes, key: bytes, offset: int) -> bytes:
    if not data:
        return data
    shift = offset % 4
    rotated = key[shift:] + key[:shift]
    n = len(data)
    mask = (rotated * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")


@dataclasses.dataclass
class ConnectionRecord:
    """What the proxy saw on one client connection (a copy is handed out, never the live one)."""

    serial: int
    opened_at: float
    request_line: str = ""  # "GET /client/hubs/h?access_token=... HTTP/1.1"
    status_line: str = ""  # "HTTP/1.1 101 Switching Protocols"
    connection_ids: list[str] = dataclasses.field(default_factory=list)  # from system/connected frames
    max_sequence_ack: int = 0  # largest sequenceAck the client sent on this connection
    sequence_acks: int = 0
    data_frames: int = 0  # server->client data messages carrying a sequenceId
    max_sequence_id: int = 0
    server_close_code: int | None = None  # code of a close frame the server sent
    client_close_code: int | None = None
    compressed_frames: int = 0  # frames with RSV1 (permessage-deflate): not inspected
    held: bool = False  # accepted while the proxy was holding; upstream connected later
    ended: str | None = None  # "closed", "aborted", "half-open", "reset by client", ...

    @property
    def target(self) -> str:
        parts = self.request_line.split(" ")
        return parts[1] if len(parts) >= 2 else ""

    @property
    def query(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.target).query))

    @property
    def is_recovery(self) -> bool:
        return "awps_connection_id" in self.query

    @property
    def status(self) -> int | None:
        parts = self.status_line.split(" ")
        return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None

    def summary(self) -> str:
        q = self.query
        kind = f"recovery of {q.get('awps_connection_id')!r}" if self.is_recovery else "new"
        return (
            f"#{self.serial} {kind}: status={self.status} connected={self.connection_ids} "
            f"data_frames={self.data_frames} max_seq={self.max_sequence_id} max_ack={self.max_sequence_ack} "
            f"server_close={self.server_close_code} client_close={self.client_close_code} "
            f"held={self.held} ended={self.ended}"
        )


class _FrameParser:
    """Incremental WebSocket frame parser for one direction; reports whole text messages and
    close codes. Keeps at most one frame header's bytes between calls."""

    def __init__(self, masked: bool, on_text: Callable[[bytes], None], on_close: Callable[[int], None],
                 on_compressed: Callable[[], None]) -> None:
        self._masked = masked
        self._on_text = on_text
        self._on_close = on_close
        self._on_compressed = on_compressed
        self._buf = bytearray()
        self._frame: tuple[bool, int, bytes, int] | None = None  # fin, opcode, mask key, length
        self._got = 0
        self._control = bytearray()
        self._message = bytearray()
        self._message_opcode = 0
        self._skip_message = False

    def _parse_header(self) -> tuple[bool, int, bytes, int] | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        length = b1 & 0x7F
        pos = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length = int.from_bytes(buf[2:4], "big")
            pos = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length = int.from_bytes(buf[2:10], "big")
            pos = 10
        key = b""
        if b1 & 0x80:
            if len(buf) < pos + 4:
                return None
            key = bytes(buf[pos:pos + 4])
            pos += 4
        del buf[:pos]
        opcode = b0 & 0x0F
        if b0 & 0x40 and opcode in (0x1, 0x2):
            self._on_compressed()
            self._skip_message = True
        return bool(b0 & 0x80), opcode, key, length

    def feed(self, data: bytes) -> None:
        self._buf += data
        while True:  # each pass parses a header or consumes payload bytes, else returns
            if self._frame is None:
                self._frame = self._parse_header()
                if self._frame is None:
                    return
                self._got = 0
                if self._frame[3] == 0:
                    self._frame_done()
                    continue
            fin, opcode, key, length = self._frame
            take = min(length - self._got, len(self._buf))
            if take == 0:
                return
            chunk = bytes(self._buf[:take])
            del self._buf[:take]
            if key:
                chunk = _unmask(chunk, key, self._got)
            self._got += take
            if opcode >= 0x8:
                if len(self._control) < 125:
                    self._control += chunk[: 125 - len(self._control)]
            elif not self._skip_message:
                if len(self._message) + len(chunk) > SNIFF_MAX_MESSAGE:
                    self._skip_message = True
                    self._message.clear()
                else:
                    self._message += chunk
            if self._got == length:
                self._frame_done()

    def _frame_done(self) -> None:
        assert self._frame is not None
        fin, opcode, _, _ = self._frame
        self._frame = None
        if opcode >= 0x8:
            if opcode == 0x8:
                code = int.from_bytes(self._control[:2], "big") if len(self._control) >= 2 else 1005
                self._on_close(code)
            self._control.clear()
            return
        if opcode != 0x0:
            self._message_opcode = opcode
        if fin:
            if self._message_opcode == 0x1 and not self._skip_message:
                self._on_text(bytes(self._message))
            self._message.clear()
            self._skip_message = False


class _Sniffer:
    """One direction of one connection: the HTTP head, then WebSocket frames."""

    def __init__(self, proxy: "ChaosProxy", record: ConnectionRecord, from_client: bool) -> None:
        self._proxy = proxy
        self._record = record
        self._from_client = from_client
        self._head = bytearray()
        self._phase = "http"  # then "frames", or "off" (not a WebSocket, or a head too large)
        self._frames = _FrameParser(
            masked=from_client, on_text=self._text, on_close=self._close, on_compressed=self._compressed,
        )

    def feed(self, data: bytes) -> None:
        if self._phase == "http":
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > MAX_HTTP_HEAD:
                    self._phase = "off"
                    self._head.clear()
                return
            head, rest = bytes(self._head[:end]), bytes(self._head[end + 4:])
            self._head.clear()
            first = head.split(b"\r\n", 1)[0].decode("latin-1")
            with self._proxy._lock:
                if self._from_client:
                    self._record.request_line = first
                else:
                    self._record.status_line = first
                self._proxy._changed.notify_all()
            if self._from_client or first.split(" ")[1:2] == ["101"]:
                self._phase = "frames"
                data = rest
            else:
                self._phase = "off"
                return
        if self._phase == "frames" and data:
            self._frames.feed(data)

    def _text(self, payload: bytes) -> None:
        proxy, rec = self._proxy, self._record
        if self._from_client:
            if b"sequenceAck" not in payload:
                return
            try:
                msg = json.loads(payload)
                seq = int(msg["sequenceId"]) if msg.get("type") == "sequenceAck" else None
            except (ValueError, KeyError, TypeError):
                return
            if seq is None:
                return
            with proxy._lock:
                rec.sequence_acks += 1
                rec.max_sequence_ack = max(rec.max_sequence_ack, seq)
                proxy.max_sequence_ack = max(proxy.max_sequence_ack, seq)
                proxy._changed.notify_all()
            return
        if b'"sequenceId"' not in payload and b'"connected"' not in payload:
            return
        try:
            msg = json.loads(payload)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        with proxy._lock:
            if msg.get("type") == "message" and isinstance(msg.get("sequenceId"), int):
                rec.data_frames += 1
                rec.max_sequence_id = max(rec.max_sequence_id, msg["sequenceId"])
            elif msg.get("type") == "system" and msg.get("event") == "connected":
                rec.connection_ids.append(str(msg.get("connectionId")))
            proxy._changed.notify_all()

    def _close(self, code: int) -> None:
        with self._proxy._lock:
            if self._from_client:
                self._record.client_close_code = code
            else:
                self._record.server_close_code = code
            self._proxy._changed.notify_all()

    def _compressed(self) -> None:
        with self._proxy._lock:
            self._record.compressed_frames += 1


class _Pipe:
    """One proxied connection: the client's socket, the upstream socket, a buffer each way."""

    def __init__(self, proxy: "ChaosProxy", client: socket.socket, record: ConnectionRecord) -> None:
        self.proxy = proxy
        self.client: socket.socket | None = client
        self.upstream: socket.socket | None = None
        self.record = record
        self.to_upstream = bytearray()
        self.to_client = bytearray()
        self.client_eof = False
        self.upstream_eof = False
        self.upstream_shut = False
        self.client_shut = False
        self.draining = False  # half-open: the client is gone; upstream is read and discarded
        self.done = False
        self.c2s = _Sniffer(proxy, record, from_client=True)
        self.s2c = _Sniffer(proxy, record, from_client=False)

    # -- called by the loop thread only --

    def connect_upstream(self) -> None:
        try:
            sock = socket.create_connection(self.proxy.upstream, timeout=UPSTREAM_CONNECT_TIMEOUT)
        except OSError:
            self.finish("upstream unreachable", rst=True)
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.upstream = sock
        self.update()

    def on_client(self, mask: int) -> None:
        if self.client is None:
            return
        cap = self.proxy.buffer_bytes
        if mask & selectors.EVENT_READ:
            try:
                data = self.client.recv(max(1, min(65536, cap - len(self.to_upstream))))
            except BlockingIOError:
                data = None
            except OSError:
                self.finish("reset by client", rst=True)
                return
            if data == b"":
                self.client_eof = True
            elif data:
                self.c2s.feed(data)
                self.to_upstream += data
        if mask & selectors.EVENT_WRITE and self.to_client and self.client is not None:
            try:
                sent = self.client.send(self.to_client)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.finish("reset by client", rst=True)
                return
            del self.to_client[:sent]
        self.update()

    def on_upstream(self, mask: int) -> None:
        if self.upstream is None:
            return
        cap = self.proxy.buffer_bytes
        if mask & selectors.EVENT_READ:
            room = 65536 if self.draining else max(1, min(65536, cap - len(self.to_client)))
            try:
                data = self.upstream.recv(room)
            except BlockingIOError:
                data = None
            except OSError:
                self.finish("reset by server", rst=True)
                return
            if data == b"":
                self.upstream_eof = True
            elif data and not self.draining:
                self.s2c.feed(data)
                self.to_client += data
        if mask & selectors.EVENT_WRITE and self.to_upstream and self.upstream is not None:
            try:
                sent = self.upstream.send(self.to_upstream)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.finish("reset by server", rst=True)
                return
            del self.to_upstream[:sent]
        self.update()

    def update(self) -> None:
        """Propagate EOFs, end the pipe when both sides are done, and set the interest sets."""
        if self.done:
            return
        if self.draining:
            if self.upstream_eof:
                self.finish("closed by server", rst=False)
                return
        else:
            if self.client_eof and not self.to_upstream and self.upstream is not None and not self.upstream_shut:
                self.upstream_shut = True
                try:
                    self.upstream.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            if self.upstream_eof and not self.to_client and self.client is not None and not self.client_shut:
                self.client_shut = True
                try:
                    self.client.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            if self.client_eof and self.upstream_eof and not self.to_client and not self.to_upstream:
                self.finish("closed", rst=False)
                return
        cap = self.proxy.buffer_bytes
        if self.client is not None:
            events = 0
            if not self.client_eof and len(self.to_upstream) < cap:
                events |= selectors.EVENT_READ
            if self.to_client:
                events |= selectors.EVENT_WRITE
            self.proxy._interest(self.client, events, self.on_client)
        if self.upstream is not None:
            events = 0
            if not self.upstream_eof and (self.draining or len(self.to_client) < cap):
                events |= selectors.EVENT_READ
            if self.to_upstream and not self.draining:
                events |= selectors.EVENT_WRITE
            self.proxy._interest(self.upstream, events, self.on_upstream)

    def abort(self, half_open: bool) -> None:
        """RST the client; RST the server too unless `half_open` (then drain what it sends)."""
        if half_open and self.upstream is not None:
            self.proxy._interest(self.client, 0, self.on_client)
            _rst_close(self.client)
            self.client = None
            self.to_client.clear()
            self.to_upstream.clear()
            self.draining = True
            with self.proxy._lock:
                self.record.ended = "half-open"
                self.proxy._changed.notify_all()
            self.update()
        else:
            self.finish("aborted", rst=True)

    def finish(self, why: str, *, rst: bool) -> None:
        if self.done:
            return
        self.done = True
        for sock, handler in ((self.client, self.on_client), (self.upstream, self.on_upstream)):
            if sock is not None:
                self.proxy._interest(sock, 0, handler)
                if rst:
                    _rst_close(sock)
                else:
                    try:
                        sock.close()
                    except OSError:
                        pass
        self.client = self.upstream = None
        self.to_client.clear()
        self.to_upstream.clear()
        self.proxy._pipes.discard(self)
        with self.proxy._lock:
            if self.record.ended is None or self.record.ended == "half-open":
                self.record.ended = why if self.record.ended is None else f"half-open, then {why}"
            self.proxy._changed.notify_all()


class ChaosProxy:
    """`with ChaosProxy(server_port) as proxy:` clients connect to `proxy.port` (see `proxied`).

    Thread-safe API: `abort_all`, `hold`, `records`, `wait_for`, `max_sequence_ack`,
    `live_count`, `describe`. Everything socket-related runs in the proxy's own thread.
    """

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1", *, buffer_bytes: int = 256 * 1024,
                 name: str = "chaos-proxy") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.buffer_bytes = buffer_bytes
        self.name = name
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._records: collections.deque[ConnectionRecord] = collections.deque(maxlen=HISTORY)
        self.max_sequence_ack = 0  # largest sequenceAck any client sent through this proxy
        self.refused = 0  # connections reset at accept (over MAX_LIVE)
        self._serial = 0
        self._pipes: set[_Pipe] = set()
        self._held: list[_Pipe] = []
        self._holding = False
        self._registered: dict[socket.socket, int] = {}
        self._sel = selectors.DefaultSelector()
        self._commands: queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    # -- lifecycle --

    def start(self) -> "ChaosProxy":
        self._sel.register(self._listener, selectors.EVENT_READ, self._on_accept)
        self._sel.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        self._started = True
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the loop (bounded) and close every socket (live connections get a FIN)."""
        if not self._started:
            return
        self._started = False
        self._stopping = True
        self._wake()
        self._thread.join(COMMAND_TIMEOUT)
        for pipe in list(self._pipes):
            for sock in (pipe.client, pipe.upstream):
                if sock is not None:
                    try:
                        sock.close()
                    except OSError:
                        pass
        self._pipes.clear()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        self._sel.close()

    def __enter__(self) -> "ChaosProxy":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- the thread-safe API --

    def proxied(self, url: str) -> str:
        """The same ws:// URL, pointing at the proxy instead of the server."""
        parts = urllib.parse.urlsplit(url)
        assert parts.port == self.upstream[1], f"{url} does not point at the proxied server {self.upstream}"
        return urllib.parse.urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.port}"))

    def abort_all(self, *, half_open: bool = False) -> int:
        """Abort every live client connection now; returns how many there were.

        The client always gets a RST. The server gets one too, unless `half_open`: then its
        socket stays open (whatever it sends is read and dropped) until the server closes it.
        """
        def run() -> int:
            victims = [p for p in self._pipes if p.client is not None]
            for pipe in victims:
                pipe.abort(half_open)
            return len(victims)

        return self._call(run)

    def hold(self, on: bool) -> None:
        """While on, new connections are accepted but not forwarded (their bytes are buffered,
        bounded); turning it off connects them upstream and forwards what they sent."""
        def run() -> None:
            self._holding = on
            if not on:
                held, self._held = self._held, []
                for pipe in held:
                    if not pipe.done:
                        pipe.connect_upstream()

        self._call(run)

    def records(self) -> list[ConnectionRecord]:
        """Copies of every connection's record, oldest first."""
        with self._lock:
            return [dataclasses.replace(r, connection_ids=list(r.connection_ids)) for r in self._records]

    def live_count(self) -> int:
        return self._call(lambda: sum(1 for p in self._pipes if p.client is not None))

    def wait_for(self, predicate: Callable[["ChaosProxy"], bool], timeout: float) -> bool:
        """Block (at most `timeout`) until `predicate(self)` holds; it runs under the proxy's
        lock, so it may read `_records_unlocked()` and `max_sequence_ack` but not call the API."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    def _records_unlocked(self) -> collections.deque[ConnectionRecord]:
        return self._records

    def describe(self) -> str:
        lines = [f"proxy :{self.port} -> {self.upstream[0]}:{self.upstream[1]}: max_sequence_ack="
                 f"{self.max_sequence_ack} refused={self.refused}"]
        lines += ["  " + r.summary() for r in self.records()]
        return "\n".join(lines)

    # -- the loop thread --

    def _call(self, fn: Callable[[], Any]) -> Any:
        if threading.current_thread() is self._thread:
            return fn()
        if not self._started:
            raise RuntimeError("the proxy is not running")
        box: list[Any] = []
        done = threading.Event()
        self._commands.put((fn, box, done))
        self._wake()
        if not done.wait(COMMAND_TIMEOUT):
            raise TimeoutError(f"{self.name}: the proxy thread did not answer within {COMMAND_TIMEOUT} s")
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending

    def _on_wake(self, mask: int) -> None:
        try:
            self._wake_r.recv(4096)
        except (BlockingIOError, OSError):
            pass

    def _interest(self, sock: socket.socket | None, events: int, handler: Callable[[int], None]) -> None:
        if sock is None:
            return
        old = self._registered.get(sock, 0)
        if events == old:
            return
        if events == 0:
            self._sel.unregister(sock)
            del self._registered[sock]
        elif old == 0:
            self._sel.register(sock, events, handler)
            self._registered[sock] = events
        else:
            self._sel.modify(sock, events, handler)
            self._registered[sock] = events

    def _on_accept(self, mask: int) -> None:
        for _ in range(64):  # bounded: at most the listen backlog per pass
            try:
                client, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if len(self._pipes) >= MAX_LIVE:
                self.refused += 1
                _rst_close(client)
                continue
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._serial += 1
                record = ConnectionRecord(serial=self._serial, opened_at=time.monotonic(), held=self._holding)
                self._records.append(record)
                self._changed.notify_all()
            pipe = _Pipe(self, client, record)
            self._pipes.add(pipe)
            if self._holding:
                self._held.append(pipe)
                pipe.update()
            else:
                pipe.connect_upstream()

    def _run(self) -> None:
        try:
            while not self._stopping:
                for key, mask in self._sel.select(TICK):
                    if self._stopping:
                        break
                    key.data(mask)
                while True:  # bounded: commands queued before this pass
                    try:
                        fn, box, done = self._commands.get_nowait()
                    except queue.Empty:
                        break
                    try:
                        box.append(fn())
                    except BaseException as exc:  # handed to the caller
                        box.append(exc)
                    done.set()
        finally:
            while True:
                try:
                    _fn, box, done = self._commands.get_nowait()
                except queue.Empty:
                    break
                box.append(RuntimeError("the proxy stopped"))
                done.set()

