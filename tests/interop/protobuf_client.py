"""A small Web PubSub client for the protobuf subprotocols, built on protoc's generated classes.

Microsoft's protobuf clients (`@azure/web-pubsub-client-protobuf`, the C# one) cannot be
installed here, so the interop tests use this one instead. It speaks
`protobuf.webpubsub.azure.v1` and `protobuf.reliable.webpubsub.azure.v1` over trio-websocket
and does what those clients do (reference webpubsub-protocol.md §4, §5; the JS client's
`WebPubSubClient` logic, which its protobuf protocol plugs into):
- the first frame of a new connection must be `system_message.connected_message`; its
  connection id, user id and reconnection token are kept (a later `connected`, e.g. after a
  recovery, updates them but is not a new connection);
- `join_group` / `leave_group` / `send_to_group` / `send_event` with an ackId from one
  per-client counter (never reset) and a bounded wait for the `ack_message`; a failed ack
  raises `AckError` (name, message); pending acks fail when their socket drops;
- reliable: every data message's `sequence_id` is tracked; a message whose id is <= the
  largest seen is a duplicate and dropped (counted); a cumulative `sequence_ack_message`
  with the largest id goes out once per `ack_interval` (1 s, like the SDKs) when something
  new arrived, and at once when `ack_every` new ids are unacknowledged (the JS client's 300);
- reliable, on a close with any code but 1008 (a TCP abort reads as 1006): recovery with the
  original URL + `awps_connection_id` + `awps_reconnection_token`, tried at once and then
  every `recovery_interval` (1 s) for up to `recovery_window` (30 s); a recovery socket that
  opens is the same connection (sequence tracking kept). A 1008 close, a failed recovery, or
  any close on the non-reliable subprotocol ends the session: a `disconnected` event, then
  (with `auto_reconnect`) a brand-new connection from `url_factory()` with sequence
  tracking reset and, with `auto_rejoin`, the groups joined through this client joined again.

Rules this module keeps:
- Independent of the server: frames are built and parsed only with the classes protoc
  generated from `tests/webpubsub/proto/webpubsub.v1.proto` (the `pb` module handed in) and the
  official protobuf runtime; nothing from `fabric` is imported.
- Every wait is bounded (`WAIT_TIMEOUT` unless told); failures carry `describe()`.
- One supervisor task owns the current socket and decides recover / reconnect / stop; the ack
  timer is a second task; both live in the nursery of `open_protobuf_client`, and leaving that
  context closes the socket with 1000 (a deliberate close: the server discards the session).
- Bounded memory: at most MAX_MESSAGES data messages are kept (more fail the client), the
  frame log keeps the last LOG_FRAMES entries, the socket history the last MAX_SOCKETS.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import json
import math
import types
import urllib.parse
from typing import Any, AsyncIterator, Callable

import trio
import trio_websocket
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

PROTOBUF = "protobuf.webpubsub.azure.v1"
PROTOBUF_RELIABLE = "protobuf.reliable.webpubsub.azure.v1"

WAIT_TIMEOUT = 5.0  # any single expected frame / ack / close
CONNECT_TIMEOUT = 5.0  # one WebSocket handshake
CLOSE_TIMEOUT = 2.0  # our close handshake when leaving the context
MAX_MESSAGES = 100_000
LOG_FRAMES = 2_000
MAX_SOCKETS = 256
MAX_FRAME_BYTES = 64 * 1024 * 1024
MESSAGE_QUEUE = 256  # frames trio-websocket buffers before it stops reading the socket

#: MessageData member <-> the data type names both SDKs use.
DATA_KIND_OF_FIELD = {"text_data": "text", "json_data": "json", "binary_data": "binary", "protobuf_data": "protobuf"}


class AckError(Exception):
    """The server answered an acked request with `success: false`."""

    def __init__(self, ack_id: int, name: str, message: str) -> None:
        super().__init__(f"ack {ack_id} failed: {name}: {message}")
        self.ack_id = ack_id
        self.name = name
        self.message = message


class NotConnected(Exception):
    """No socket is attached, or it dropped before the answer came."""


class ClientFailure(AssertionError):
    """A bounded wait ran out, or the server broke the protocol; carries the client's history."""


@dataclasses.dataclass
class ReceivedMessage:
    """One data message delivered to the application (duplicates already dropped)."""

    source: str  # DataMessage.from: "group" or "server"
    group: str | None  # None when the field is absent
    data_type: str  # "text", "json", "binary", "protobuf", or "none" (no MessageData member set)
    data: Any  # str (text / the JSON text), bytes, or a google.protobuf.Any
    sequence_id: int | None  # None when the field is absent
    socket_serial: int  # which of this client's sockets delivered it
    raw: Any  # the whole DownstreamMessage

    @property
    def json_value(self) -> Any:
        assert self.data_type == "json", self
        return json.loads(self.data)

    def __repr__(self) -> str:
        data = self.data
        if isinstance(data, any_pb2.Any):
            data = f"Any({data.type_url!r}, {data.value!r})"
        return (f"Received({self.source}, group={self.group!r}, {self.data_type}={data!r:.80}, "
                f"seq={self.sequence_id}, socket={self.socket_serial})")


@dataclasses.dataclass
class SocketRecord:
    """One WebSocket this client opened (new connection or recovery attempt)."""

    serial: int
    kind: str  # "new" or "recovery"
    status: str = "connecting"  # "open", "refused: <why>", "closed"
    connected: list[tuple[str, str, str | None]] = dataclasses.field(default_factory=list)  # (id, user, token)
    frames: int = 0
    data_frames: int = 0
    duplicates: int = 0
    acks_sent: int = 0
    max_ack_sent: int = 0
    close_code: int | None = None
    close_reason: str = ""
    disconnected: list[str] = dataclasses.field(default_factory=list)  # system disconnected reasons
    last_frame: str = ""  # kind of the newest frame: "data_message", "system_message.connected_message", ...

    def summary(self) -> str:
        return (f"#{self.serial} {self.kind}: {self.status} connected={self.connected} frames={self.frames} "
                f"data={self.data_frames} dup={self.duplicates} acks={self.acks_sent}(max {self.max_ack_sent}) "
                f"disconnected={self.disconnected} close={self.close_code} {self.close_reason!r}")


def with_query(url: str, **params: str) -> str:
    """`url` with `params` appended to its query (what the SDKs do for recovery URLs)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.urlencode(params)
    return urllib.parse.urlunsplit(parts._replace(query=f"{parts.query}&{query}" if parts.query else query))


def any_message(type_url: str, value: bytes) -> any_pb2.Any:
    return any_pb2.Any(type_url=type_url, value=value)


def message_data(pb: types.ModuleType, data_type: str, value: Any) -> Any:
    """A `MessageData` with the member for `data_type` (text / json / binary / protobuf).

    JSON values that are not `str` are serialized with `json.dumps` (a `str` is taken as the
    JSON text itself, as the JS client's `jsonData = JSON.stringify(data)` produces); a
    protobuf value is a `google.protobuf.Any`, or any message (packed into one).
    """
    if data_type == "text":
        return pb.MessageData(text_data=value)
    if data_type == "json":
        return pb.MessageData(json_data=value if isinstance(value, str) else json.dumps(value))
    if data_type == "binary":
        return pb.MessageData(binary_data=bytes(value))
    if data_type == "protobuf":
        if not isinstance(value, any_pb2.Any):
            packed = any_pb2.Any()
            packed.Pack(value)
            value = packed
        md = pb.MessageData()
        md.protobuf_data.CopyFrom(value)
        return md
    raise ValueError(f"unknown data type {data_type!r}")


def read_message_data(md: Any) -> tuple[str, Any]:
    """`(data_type, value)` of a received `MessageData` (see `ReceivedMessage.data`)."""
    member = md.WhichOneof("data")
    if member is None:
        return "none", None
    value = getattr(md, member)
    if member == "protobuf_data":
        copy = any_pb2.Any()
        copy.CopyFrom(value)
        value = copy
    return DATA_KIND_OF_FIELD[member], value


class ProtobufClient:
    """Use `open_protobuf_client`; the attributes below are for tests to read.

    Attributes:
        connection_id, user_id, reconnection_token: from the newest `connected` message.
        messages: data messages delivered, in arrival order, duplicates dropped.
        events: ("connected", id) for each *new* connection, ("disconnected", reason) when a
            session ends, ("stopped", None) when the client gives up or is closed.
        sockets: every socket opened, oldest first (see `SocketRecord`).
        duplicates: data messages dropped because their sequence id was already seen.
        protocol_errors: server frames this client could not accept (must stay empty).
        max_sequence_id, last_ack_sent: reliable bookkeeping (reset for a new connection).
    """

    def __init__(
        self,
        pb: types.ModuleType,
        url_factory: Callable[[], str],
        *,
        reliable: bool,
        label: str,
        describe_extra: Callable[[], str] | None,
        ack_interval: float,
        ack_every: int,
        recovery_interval: float,
        recovery_window: float,
        auto_reconnect: bool,
        auto_rejoin: bool,
    ) -> None:
        self.pb = pb
        self.url_factory = url_factory
        self.reliable = reliable
        self.subprotocol = PROTOBUF_RELIABLE if reliable else PROTOBUF
        self.label = label
        self.describe_extra = describe_extra
        self.ack_interval = ack_interval
        self.ack_every = ack_every
        self.recovery_interval = recovery_interval
        self.recovery_window = recovery_window
        self.auto_reconnect = auto_reconnect
        self.auto_rejoin = auto_rejoin

        self.url = ""  # the URL of the current connection (recoveries extend it)
        self.connection_id = ""
        self.user_id = ""
        self.reconnection_token: str | None = None
        self.messages: list[ReceivedMessage] = []
        self.events: list[tuple[str, Any]] = []
        self.sockets: collections.deque[SocketRecord] = collections.deque(maxlen=MAX_SOCKETS)
        self.duplicates = 0
        self.pongs = 0
        self.protocol_errors: list[str] = []
        self.other_frames: list[Any] = []  # DownstreamMessages of kinds this client ignores
        self.frame_log: collections.deque[tuple[int, str]] = collections.deque(maxlen=LOG_FRAMES)
        self.max_sequence_id = 0
        self.last_ack_sent = 0
        self.joined_groups: set[str] = set()
        self.stopped = False

        self._ack_ids = itertools.count(1)
        self._pending: dict[int, list[Any]] = {}  # ackId -> [trio.Event, DownstreamMessage | Exception | None]
        self._ws: trio_websocket.WebSocketConnection | None = None
        self._socket: SocketRecord | None = None
        self._serials = itertools.count(1)
        self._changed = trio.Event()
        self._closing = False
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------ diagnostics

    def describe(self) -> str:
        lines = [f"protobuf client {self.label} ({self.subprotocol}): connection {self.connection_id!r}, "
                 f"{len(self.messages)} messages, {self.duplicates} duplicates, max seq {self.max_sequence_id}, "
                 f"last ack {self.last_ack_sent}, events {self.events}, protocol errors {self.protocol_errors}"]
        lines += ["  socket " + s.summary() for s in self.sockets]
        lines += ["  last frames:"] + [f"    [{serial}] {text}" for serial, text in list(self.frame_log)[-15:]]
        if self.describe_extra is not None:
            lines.append(self.describe_extra())
        return "\n".join(lines)

    def fail(self, what: str) -> None:
        raise ClientFailure(f"[{self.label}] {what}\n{self.describe()}")

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = WAIT_TIMEOUT) -> None:
        """Wait (bounded) until `condition()` holds; it is re-checked whenever a frame arrives
        or the connection changes."""
        with trio.move_on_after(timeout):
            while not condition():
                await self._changed.wait()
            return
        self.fail(f"timed out after {timeout} s waiting for {what}")

    # ------------------------------------------------------------------ sending

    @property
    def is_open(self) -> bool:
        return self._ws is not None and self._ws.closed is None

    async def send_raw(self, frame: str | bytes) -> None:
        """Send one frame as is (bad-input tests). Raises NotConnected if no socket is open."""
        ws = self._ws
        if ws is None:
            raise NotConnected(f"[{self.label}] no socket")
        try:
            await ws.send_message(frame)
        except trio_websocket.ConnectionClosed as exc:
            raise NotConnected(f"[{self.label}] closed: {exc.reason}") from None

    async def send(self, upstream: Any) -> None:
        """Send one `UpstreamMessage`."""
        await self.send_raw(upstream.SerializeToString())

    async def request(self, build: Callable[[int], Any], *, ack_id: int | None = None,
                      timeout: float = WAIT_TIMEOUT) -> Any:
        """Send `build(ack_id)` and wait for its ack; return the AckMessage if it succeeded,
        raise AckError if not, NotConnected if the socket dropped first."""
        if ack_id is None:
            ack_id = next(self._ack_ids)
        slot: list[Any] = [trio.Event(), None]
        if ack_id in self._pending:
            raise ValueError(f"ackId {ack_id} is already pending")
        self._pending[ack_id] = slot
        try:
            await self.send(build(ack_id))
            with trio.move_on_after(timeout):
                await slot[0].wait()
        finally:
            self._pending.pop(ack_id, None)
        result = slot[1]
        if result is None:
            self.fail(f"no ack for ackId {ack_id} within {timeout} s")
        if isinstance(result, Exception):
            raise result
        if not result.success:
            raise AckError(ack_id, result.error.name, result.error.message)
        return result

    def _upstream(self, **kwargs: Any) -> Any:
        return self.pb.UpstreamMessage(**kwargs)

    async def join_group(self, group: str, *, ack_id: int | None = None) -> Any:
        U = self.pb.UpstreamMessage
        ack = await self.request(lambda a: self._upstream(join_group_message=U.JoinGroupMessage(group=group, ack_id=a)),
                                 ack_id=ack_id)
        self.joined_groups.add(group)
        return ack

    async def leave_group(self, group: str, *, ack_id: int | None = None) -> Any:
        U = self.pb.UpstreamMessage
        ack = await self.request(
            lambda a: self._upstream(leave_group_message=U.LeaveGroupMessage(group=group, ack_id=a)), ack_id=ack_id)
        self.joined_groups.discard(group)
        return ack

    def _send_to_group_message(self, group: str, data_type: str, value: Any, no_echo: bool,
                               ack_id: int | None) -> Any:
        U = self.pb.UpstreamMessage
        inner = U.SendToGroupMessage(group=group, data=message_data(self.pb, data_type, value))
        if no_echo:
            inner.no_echo = True
        if ack_id is not None:
            inner.ack_id = ack_id
        return self._upstream(send_to_group_message=inner)

    async def send_to_group(self, group: str, value: Any, data_type: str = "text", *, no_echo: bool = False,
                            ack: bool = True, ack_id: int | None = None) -> Any:
        """With `ack` (default) wait for the ack; without, just send (fire and forget)."""
        if not ack:
            await self.send(self._send_to_group_message(group, data_type, value, no_echo, None))
            return None
        return await self.request(lambda a: self._send_to_group_message(group, data_type, value, no_echo, a),
                                  ack_id=ack_id)

    async def send_event(self, event: str, value: Any, data_type: str = "text", *, ack: bool = True,
                         ack_id: int | None = None) -> Any:
        U = self.pb.UpstreamMessage

        def build(a: int | None) -> Any:
            inner = U.EventMessage(event=event, data=message_data(self.pb, data_type, value))
            if a is not None:
                inner.ack_id = a
            return self._upstream(event_message=inner)

        if not ack:
            await self.send(build(None))
            return None
        return await self.request(build, ack_id=ack_id)

    async def ping(self, timeout: float = WAIT_TIMEOUT) -> None:
        """Send `ping_message` and wait (bounded) for a `pong_message`."""
        before = self.pongs
        await self.send(self._upstream(ping_message=self.pb.UpstreamMessage.PingMessage()))
        await self.wait_for(lambda: self.pongs > before, "a pong", timeout)

    async def send_sequence_ack(self, sequence_id: int) -> None:
        """A `sequence_ack_message` (the ack timer sends these by itself)."""
        await self.send(self._upstream(
            sequence_ack_message=self.pb.UpstreamMessage.SequenceAckMessage(sequence_id=sequence_id)))
        rec = self._socket
        if rec is not None:
            rec.acks_sent += 1
            rec.max_ack_sent = max(rec.max_ack_sent, sequence_id)
        self.last_ack_sent = max(self.last_ack_sent, sequence_id)
        self._notify()

    async def _maybe_ack(self) -> None:
        if self.reliable and self.max_sequence_id > self.last_ack_sent and self.is_open:
            try:
                await self.send_sequence_ack(self.max_sequence_id)
            except NotConnected:
                pass  # the socket dropped meanwhile; the next one acks

    # ------------------------------------------------------------------ receiving

    def _record_frame(self, serial: int, text: str) -> None:
        self.frame_log.append((serial, text))

    async def _on_frame(self, frame: str | bytes, rec: SocketRecord) -> Any:
        """Handle one server frame; returns the parsed DownstreamMessage (None if unusable)."""
        rec.frames += 1
        if isinstance(frame, str):
            rec.last_frame = "text frame"
            self.protocol_errors.append(f"socket {rec.serial}: a text frame on {self.subprotocol}: {frame!r:.200}")
            self._record_frame(rec.serial, f"TEXT {frame!r:.200}")
            self._notify()
            return None
        msg = self.pb.DownstreamMessage()
        try:
            msg.ParseFromString(frame)
        except DecodeError as exc:
            self.protocol_errors.append(f"socket {rec.serial}: not a DownstreamMessage ({exc}): {frame!r:.200}")
            self._record_frame(rec.serial, f"UNPARSABLE {frame!r:.200}")
            self._notify()
            return None
        kind = msg.WhichOneof("message")
        rec.last_frame = str(kind)
        if kind == "system_message":
            rec.last_frame += f".{msg.system_message.WhichOneof('message')}"
        if kind != "data_message":
            self._record_frame(rec.serial, f"{kind}: {str(msg).strip()!r:.300}")
        if kind == "ack_message":
            slot = self._pending.get(msg.ack_message.ack_id)
            if slot is not None and slot[1] is None:
                slot[1] = msg.ack_message
                slot[0].set()
            else:
                self.other_frames.append(msg)  # an ack nobody waits for
        elif kind == "data_message":
            await self._on_data(msg, rec)
        elif kind == "system_message":
            sys_kind = msg.system_message.WhichOneof("message")
            if sys_kind == "connected_message":
                c = msg.system_message.connected_message
                token = c.reconnection_token if c.HasField("reconnection_token") else None
                rec.connected.append((c.connection_id, c.user_id, token))
                if self.connection_id and c.connection_id != self.connection_id and rec.kind == "recovery":
                    self.protocol_errors.append(
                        f"socket {rec.serial}: recovery of {self.connection_id!r} answered with "
                        f"connected for {c.connection_id!r}")
                self.connection_id, self.user_id = c.connection_id, c.user_id
                if token is not None:
                    self.reconnection_token = token
            elif sys_kind == "disconnected_message":
                rec.disconnected.append(msg.system_message.disconnected_message.reason)
            else:
                self.other_frames.append(msg)
        elif kind == "pong_message":
            self.pongs += 1
        else:
            self.other_frames.append(msg)
        self._notify()
        return msg

    async def _on_data(self, msg: Any, rec: SocketRecord) -> None:
        dm = msg.data_message
        rec.data_frames += 1
        seq = dm.sequence_id if dm.HasField("sequence_id") else None
        if self.reliable and seq:  # 0 means absent, as in the SDKs
            if seq <= self.max_sequence_id:
                self.duplicates += 1
                rec.duplicates += 1
                return
            self.max_sequence_id = seq
        if len(self.messages) >= MAX_MESSAGES:
            self.fail(f"more than {MAX_MESSAGES} messages")
        data_type, value = read_message_data(dm.data)
        self.messages.append(ReceivedMessage(
            source=getattr(dm, "from"), group=dm.group if dm.HasField("group") else None, data_type=data_type,
            data=value, sequence_id=seq, socket_serial=rec.serial, raw=msg))
        if self.reliable and self.max_sequence_id - self.last_ack_sent >= self.ack_every:
            await self._maybe_ack()

    # ------------------------------------------------------------------ connections

    async def _open_socket(self, url: str, kind: str) -> tuple[trio_websocket.WebSocketConnection | None, SocketRecord]:
        """One handshake (bounded). Returns (None, record) when it failed."""
        assert self._nursery is not None
        rec = SocketRecord(next(self._serials), kind)
        self.sockets.append(rec)
        ws = None
        with trio.move_on_after(CONNECT_TIMEOUT):
            try:
                ws = await trio_websocket.connect_websocket_url(
                    self._nursery, url, subprotocols=[self.subprotocol], message_queue_size=MESSAGE_QUEUE,
                    max_message_size=MAX_FRAME_BYTES, receive_buffer_size=256 * 1024)
            except trio_websocket.ConnectionRejected as exc:
                rec.status = f"refused: HTTP {exc.status_code}"
            except (trio_websocket.HandshakeError, OSError, trio.BrokenResourceError) as exc:
                rec.status = f"refused: {exc!r}"
        if ws is None:
            if rec.status == "connecting":
                rec.status = f"refused: no handshake within {CONNECT_TIMEOUT} s"
            self._notify()
            return None, rec
        if ws.subprotocol != self.subprotocol:
            self.protocol_errors.append(f"socket {rec.serial}: the server chose subprotocol {ws.subprotocol!r}")
        rec.status = "open"
        self._notify()
        return ws, rec

    def _attach(self, ws: trio_websocket.WebSocketConnection, rec: SocketRecord) -> None:
        self._ws, self._socket = ws, rec
        self._notify()

    def _detach(self, code: int | None, reason: str) -> None:
        rec = self._socket
        if rec is not None:
            rec.status = "closed"
            rec.close_code, rec.close_reason = code, reason
        self._ws = None
        for ack_id, slot in list(self._pending.items()):  # the SDKs fail pending acks on a drop
            if slot[1] is None:
                slot[1] = NotConnected(f"[{self.label}] the socket closed ({code}) before ack {ack_id}")
                slot[0].set()
        self._notify()

    async def _read_until_closed(self, ws: trio_websocket.WebSocketConnection,
                                 rec: SocketRecord) -> tuple[int | None, str]:
        while True:
            try:
                frame = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                return exc.reason.code, exc.reason.reason or ""
            await self._on_frame(frame, rec)

    async def _new_connection(self) -> bool:
        """Open a brand-new connection and read its `connected` frame. False if it failed."""
        self.url = self.url_factory()
        ws, rec = await self._open_socket(self.url, "new")
        if ws is None:
            return False
        first = None
        with trio.move_on_after(WAIT_TIMEOUT):
            try:
                first = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                rec.status = "closed"
                rec.close_code, rec.close_reason = exc.reason.code, exc.reason.reason or ""
                self.protocol_errors.append(f"socket {rec.serial}: closed before connected: {exc.reason}")
                self._notify()
                return False
        if first is None:
            self.protocol_errors.append(f"socket {rec.serial}: no frame within {WAIT_TIMEOUT} s of opening")
            await ws.aclose()
            return False
        # Sequence tracking belongs to a connection: reset it for the new one.
        self.max_sequence_id = self.last_ack_sent = 0
        self.connection_id, self.reconnection_token = "", None
        msg = await self._on_frame(first, rec)
        if msg is None or msg.WhichOneof("message") != "system_message" or \
                msg.system_message.WhichOneof("message") != "connected_message":
            self.protocol_errors.append(f"socket {rec.serial}: the first frame must be connected, got {msg}")
            await ws.aclose()
            return False
        if self.reliable and not self.reconnection_token:
            self.protocol_errors.append(f"socket {rec.serial}: no reconnection_token on a reliable connection")
        self.events.append(("connected", self.connection_id))
        self._attach(ws, rec)
        return True

    async def _recover(self) -> trio_websocket.WebSocketConnection | None:
        """Try the recovery URL at once and then every `recovery_interval`, for at most
        `recovery_window`. A socket that opens is returned (the server may still close it
        1008: then the session is gone, which the caller learns from the close)."""
        url = with_query(self.url, awps_connection_id=self.connection_id,
                         awps_reconnection_token=self.reconnection_token or "")
        deadline = trio.current_time() + self.recovery_window
        while trio.current_time() < deadline and not self._closing:
            ws, rec = await self._open_socket(url, "recovery")
            if ws is not None:
                self._attach(ws, rec)
                return ws
            await trio.sleep(min(self.recovery_interval, max(0.0, deadline - trio.current_time())))
        return None

    async def _supervise(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Own the socket for the client's life: read frames, recover, reconnect, or stop."""
        if not await self._new_connection():
            self.stopped = True
            self.fail("the first connection failed")
        task_status.started()
        try:
            while not self._closing:
                ws, rec = self._ws, self._socket
                assert ws is not None and rec is not None
                code, reason = await self._read_until_closed(ws, rec)
                self._detach(code, reason)
                if self._closing:
                    return
                # Reliable: anything but 1008 (a TCP abort reads as 1006) is worth a recovery.
                # A recovery socket the server closes 1008 comes back here with code 1008.
                if self.reliable and code != 1008 and self.reconnection_token:
                    if await self._recover() is not None:
                        continue
                last_reason = next((r.disconnected[-1] for r in reversed(self.sockets) if r.disconnected), "")
                self.events.append(("disconnected", last_reason))
                self._notify()
                if not self.auto_reconnect or not await self._new_connection():
                    return
                if self.auto_rejoin and self.joined_groups:
                    assert self._nursery is not None
                    self._nursery.start_soon(self._rejoin, sorted(self.joined_groups))
        finally:
            self.stopped = True
            self.events.append(("stopped", None))
            self._notify()

    async def _rejoin(self, groups: list[str]) -> None:
        for group in groups:
            with contextlib.suppress(AckError, NotConnected):
                await self.join_group(group)

    async def _ack_timer(self) -> None:
        while True:
            await trio.sleep(self.ack_interval)
            await self._maybe_ack()

    async def aclose(self) -> None:
        """Close deliberately (1000, bounded); the server discards a reliable session."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await ws.aclose()

    # ------------------------------------------------------------------ test helpers

    async def next_message(self, index: int, timeout: float = WAIT_TIMEOUT) -> ReceivedMessage:
        """`messages[index]`, waiting (bounded) for it to arrive."""
        await self.wait_for(lambda: len(self.messages) > index, f"message #{index}", timeout)
        return self.messages[index]

    async def wait_closed(self, timeout: float = WAIT_TIMEOUT) -> SocketRecord:
        """Wait until the first socket ever opened has closed; return its record."""
        first = self.sockets[0]
        await self.wait_for(lambda: first.status == "closed", "the server to close the connection", timeout)
        return first


@contextlib.asynccontextmanager
async def open_protobuf_client(
    pb: types.ModuleType,
    url: str | Callable[[], str],
    *,
    reliable: bool = False,
    label: str = "protobuf",
    describe_extra: Callable[[], str] | None = None,
    ack_interval: float = 1.0,
    ack_every: int = 300,
    recovery_interval: float = 1.0,
    recovery_window: float = 30.0,
    auto_reconnect: bool = True,
    auto_rejoin: bool = True,
) -> AsyncIterator[ProtobufClient]:
    """`async with open_protobuf_client(pb, url) as client:` connected (its `connected`
    message read); leaving closes it (1000). `url` may be a callable giving a fresh URL for
    every new connection (the SDKs' credential callback)."""
    factory = url if callable(url) else (lambda: url)  # type: ignore[assignment,return-value]
    client = ProtobufClient(
        pb, factory, reliable=reliable, label=label, describe_extra=describe_extra, ack_interval=ack_interval,
        ack_every=ack_every, recovery_interval=recovery_interval, recovery_window=recovery_window,
        auto_reconnect=auto_reconnect, auto_rejoin=auto_rejoin)
    if not math.isfinite(ack_interval) or ack_interval <= 0:
        raise ValueError("ack_interval must be positive")
    async with trio.open_nursery() as nursery:
        client._nursery = nursery
        await nursery.start(client._supervise)
        nursery.start_soon(client._ack_timer)
        try:
            yield client
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()
            nursery.cancel_scope.cancel()
