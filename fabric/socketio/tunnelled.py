"""Web PubSub for Socket.IO's default mode: Socket.IO clients served by a Node app server
through its tunnel.

An unmodified socket.io app with ``useAzureSocketIO(io, {hub, connectionString})`` from
``@azure/web-pubsub-socket.io`` keeps its Socket.IO logic; the service keeps the clients'
Engine.IO connections. This module is the service's half, as the package's code expects it
(its ``dist/EIO`` and ``dist/SIO/components/web-pubsub-adapter.js``; Microsoft Learn's
socketio-service-internal.md describes the split).
It reaches the app through an ``AppLink`` (the fabric gives it the server tunnel; this edge
never imports another edge):

- **Handshake**: a new Engine.IO session's sid is its connection id; the ``connect``
  CloudEvent (query values as arrays, claims as ``{name: [values]}``) goes to an app server
  of the hub, which answers with its own Engine.IO handshake (sid forced to the connection
  id). Its ``pingInterval``/``pingTimeout``/``maxPayload`` become the session's, so clients
  see what the app configured; the upgrades offered are ours (polling clients may upgrade).
  A refusal is the client's handshake answer; no app server within ``APP_WAIT`` is a 503.
- **Client -> app**: every Engine.IO message is a segment of a polling-format payload in a
  ``azure.webpubsub.user.message`` event (``text/plain``), one connection's in order, batched
  while the previous call is in flight, to the app server that accepted the connection.
  Engine.IO heartbeats towards the client are ours; the app's engine.io pings (``2`` through
  ``:send``) are answered by us with ``3``. The end of the session is a ``disconnected``
  event, after everything the client sent.
- **App -> client**: the app's REST calls (through the tunnel, as any REST call) reach the
  hub; each connection is a hub ``Member`` whose deliveries are Engine.IO payloads written
  to the client. The service keeps what the package leaves to it: a ``40`` reply
  joins the connection to its namespace's group ``0~b64(nsp)~``; a DISCONNECT for a
  namespace (from the client, from the app, or translated) takes the connection out of
  every group of that namespace (the package never removes rooms at a socket's end); a
  DISCONNECT with data (``disconnectSockets``: ``41{"close":false}``, which a client would
  reject) is sent as a plain ``41``, and the app is told the socket left (a ``41`` from the
  client), or with ``close`` the connection ends; a ``1`` closes it.
- **``:invoke``** (broadcasts with acks): the EVENT (which the package sends without an ack
  id: the service numbers it) goes to the connections the filter selects that have its
  namespace; each client's ACK with that namespace and id is taken
  out of the stream to the app and streamed back as a line ``{"Payload": "<EIO payload>"}``;
  the stream ends when every recipient answered or left, or after ``INVOKE_TIMEOUT``. With
  other nodes it is the hub's edge operation ``INVOKE_OP`` on every node (this one too):
  each sends the EVENT to its own recipients, answers their number, then streams their acks
  and a last ``done`` to the requester, which merges them (``_spread``, ``_invoke_here``).

Which hubs: see ``DefaultMode.serves``; the choices where Azure is silent are in
``specs/socketio_default.py``. Rules this module keeps: one app server per
connection (pinned at connect; its loss past ``APP_WAIT`` ends the connection, so the
client reconnects to an app that knows it); bounded queues (client messages waiting for
the app, answers of an invoke, invokes relayed for other nodes); nothing a client or an app
sends raises out of here.
"""

from __future__ import annotations

import binascii
import collections
import contextlib
import dataclasses
import functools
import itertools
import logging
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from typing import (
    Any,
    Protocol,
)

import msgspec
import trio

from fabric.core import auth
from fabric.core.counters import Counters, CounterSpec
from fabric.core.events import ConnectionContext
from fabric.core.permissions import Permissions
from fabric.core.publication import Publication, WireFormat
from fabric.socketio.eio_packets import (
    EncodedPacket,
    PacketEncodeError,
    binary_message,
    message_polling_segment,
)
from fabric.socketio.eio_session import CloseReason, EngineConfig
from fabric.socketio.endpoint import AZURE_PREFIX, Starter, engine_config
from fabric.socketio.engine import CorsOptions, EngineConnection, EngineServer
from fabric.socketio.formats import namespace_group
from fabric.socketio.parser import ParseError, scan_header
from specs import names
from specs import socketio_default as defaults
from specs import upstream as up
from specs.errors import CloseSituation
from transport.http import Request, Response, WebSocketAccept

log = logging.getLogger(__name__)

__all__ = ["TUNNELLED_COUNTERS", "AppLink", "AppResponse", "AppUnreachable", "DefaultMode", "TunnelledConnection"]

#: Seconds a handshake waits for an app server of the hub, and a connection for its own
#: app server to come back (a tunnel reconnecting) before it is closed.
APP_WAIT = defaults.APP_WAIT_SECONDS
#: Longest an ``:invoke`` stream stays open for acks (the app's own timeout normally ends
#: its wait first; the stream must not end before it, or the app sees fewer clients).
INVOKE_TIMEOUT = defaults.INVOKE_TIMEOUT_SECONDS
#: Client messages queued per connection while its app server is busy (the reader waits).
MAX_QUEUED = 256
#: Messages and bytes sent to the app in one user event.
MAX_BATCH = 64
MAX_BATCH_BYTES = 256 * 1024
#: Handshakes the app accepted whose session has not opened yet (kept at most this long).
PENDING_SECONDS = 30.0
#: ... and at most this many per hub (more handshakes at once are refused with 503).
MAX_PENDING = 10_000
EVENT_PATH = "/eventhandler/"
#: Ack ids the service gives the EVENTs of ``:invoke`` (the app's own count from 0 per
#: namespace; socket.io-client takes any integer up to 2**53).
FIRST_INVOKE_ACK_ID = defaults.FIRST_INVOKE_ACK_ID
#: The hub mark (``Hub.mark``) of a node that serves the hub in default mode.
APP_MARK = "socketio-default-app"
#: Seconds between a node's checks of whether another node serves a hub it does not.
ELSEWHERE_CHECK = defaults.ELSEWHERE_CHECK_SECONDS
#: Hubs a node keeps checking (handshakes for more are left to the embedded server).
MAX_WATCHED = 1024
#: The hub's edge operations of ``:invoke`` across nodes (``Hub.on_edge``).
INVOKE_OP = "socketio-invoke"
INVOKE_END_OP = "socketio-invoke-end"
#: Acks from other nodes waiting for the app to read them, per ``:invoke``.
MAX_INVOKE_BUFFER = 4096
#: ``:invoke`` from other nodes this node relays acks for at once.
MAX_RELAYS = 1024

TUNNELLED_COUNTERS = tuple(CounterSpec(n, h) for n, h in (
    ("handshakes", "Handshakes sent to an app server (connect events)."),
    ("handshakes_refused", "Handshakes an app server refused."),
    ("handshakes_unavailable", "Handshakes refused because no app server was connected (503)."),
    ("handshakes_elsewhere", "Handshakes refused because the hub's app servers are attached to other nodes (503)."),
    ("events_sent", "User events sent to app servers (each a batch of client packets)."),
    ("events_failed", "User events that failed (the connection was closed)."),
    ("pongs", "Engine.IO pings of app servers answered by the service."),
    ("namespace_joins", "Connections joined to a namespace group on the app's CONNECT reply."),
    ("disconnects_translated", "DISCONNECT packets with data (disconnectSockets) translated."),
    ("payloads_ignored", "Deliveries that were not Engine.IO payloads (not sent to Socket.IO clients)."),
    ("invokes", "Broadcasts with acks (:invoke) served."),
    ("invoke_answers", "Client acks streamed back to app servers."),
    ("invoke_answers_dropped", "Acks from other nodes dropped: the app server read too slowly."),
    ("invokes_not_spread", "Broadcasts with acks kept to this node: too many in flight across nodes."),
    ("invokes_refused", "Broadcasts with acks from other nodes not delivered here: too many in flight."),
    ("orphan_checks", "App servers whose connections were checked after losing their last tunnel."),
    ("orphans_closed", "Connections closed because their app server left."),
))

_json_decode = msgspec.json.decode
_json_encode = msgspec.json.encode


class AppUnreachable(Exception):
    """No app server answered (none connected, or its tunnel broke)."""


class AppResponse(Protocol):
    status: int
    headers: Mapping[str, Sequence[str]]

    @property
    def server(self) -> str: ...

    async def read(self) -> bytes: ...


class AppLink(Protocol):
    """How this edge reaches app servers (the fabric wraps its server tunnel)."""

    async def request(self, hub: str, method: str, url: str, headers: Mapping[str, Sequence[str]],
                      content: bytes | None, *, key: str, server: str | None, wait: float) -> AppResponse:
        """Raises ``AppUnreachable``."""

    def has_server(self, hub: str, server: str) -> bool: ...


# ---- Socket.IO packet headers (only what routing needs; the app parses the rest) ----------


#: The default mode only routes: the app sends what it likes, so no lower attachment bound
#: than the digits the header may spell.
_ROUTING_MAX_ATTACHMENTS = 999_999


def _sio_header(text: str) -> tuple[str, int, str, int | None, int] | None:
    """``(type digit, attachments, nsp, ack id, index of the data)`` of a Socket.IO packet's
    text, or None if it is not one (``parser.scan_header``'s rules: the decoder's)."""
    try:
        ptype, attachments, nsp, ack_id, start = scan_header(text, _ROUTING_MAX_ATTACHMENTS)
    except ParseError:
        return None
    return "0123456"[ptype], attachments, nsp, ack_id, start


# ---- what the app's payloads say, parsed once per publication ---------------------------

_SEND, _CONNECT, _DISCONNECT, _DISCONNECT_WITH_DATA, _PING, _CLOSE, _IGNORED = (
    "send", "connect", "disconnect", "disconnect-with-data", "ping", "close", "ignored")


def parse_app_payload(body: bytes) -> tuple:
    """The actions of an Engine.IO payload from the app: ``(_SEND, packet)``, ``(_CONNECT,
    nsp, packet)``, ``(_DISCONNECT, nsp, packet)``, ``(_DISCONNECT_WITH_DATA, nsp, close)``,
    ``(_PING,)``, ``(_CLOSE,)`` (last), ``(_IGNORED,)`` (a packet that is not Engine.IO or
    Socket.IO: the rest of the payload is dropped with it when it is not Engine.IO). The
    packets are shared by every recipient (their WebSocket frames are built once)."""
    if not body:
        return ()
    try:
        body.decode("utf-8")  # text frames must be UTF-8: a payload that is not is nobody's
    except UnicodeDecodeError:
        return ((_IGNORED,),)
    actions: list[tuple] = []
    for raw in body.split(b"\x1e"):
        kind = raw[:1]
        if kind == b"4":
            second = raw[1:2]
            if second not in (b"0", b"1"):
                actions.append((_SEND, EncodedPacket(True, raw)))
                continue
            text = raw[1:].decode("utf-8")
            header = _sio_header(text)
            if header is None:
                actions.append((_IGNORED,))
                continue
            nsp, start = header[2], header[4]
            if second == b"0":
                actions.append((_CONNECT, nsp, EncodedPacket(True, raw)))
                continue
            data = text[start:]
            if not data:
                actions.append((_DISCONNECT, nsp, EncodedPacket(True, raw)))
                continue
            try:
                decoded = _json_decode(data)
            except msgspec.DecodeError:
                decoded = None
            actions.append((_DISCONNECT_WITH_DATA, nsp, isinstance(decoded, dict) and decoded.get("close") is True))
        elif kind == b"b":  # a binary attachment
            try:
                actions.append((_SEND, binary_message(binascii.a2b_base64(raw[1:], strict_mode=True))))
            except binascii.Error:
                actions.append((_IGNORED,))
                break
        elif kind == b"2":
            actions.append((_PING,))
        elif kind == b"1":
            actions.append((_CLOSE,))
            break
        elif kind in (b"3", b"6"):  # pong, noop: nothing for the client
            continue
        else:
            actions.append((_IGNORED,))
            break
    return tuple(actions)


#: A publication's actions, parsed once for all default-mode recipients.
APP_ACTIONS = WireFormat("socketio/default-mode", lambda p: parse_app_payload(p.payload.body))  # type: ignore[arg-type,return-value]


def _disconnect(nsp: str) -> EncodedPacket:
    """The Engine.IO message carrying a plain Socket.IO DISCONNECT for ``nsp``."""
    return EncodedPacket(True, _disconnect_segment(nsp))


def _disconnect_segment(nsp: str) -> bytes:
    return b"41" if nsp == "/" else f"41{nsp},".encode()


def _group_prefix(nsp: str) -> str:
    return namespace_group(nsp)  # "0~<b64 nsp>~": the namespace group and every room of it


# ---- bounded queue of segments for the app -------------------------------------------------


class _Upstream:
    """One connection's packets for the app, in order (polling-format segments)."""

    __slots__ = ("_ready", "_space", "closed", "items")

    def __init__(self) -> None:
        self.items: collections.deque[bytes] = collections.deque()
        self._ready = trio.Event()
        self._space: trio.Event | None = None
        self.closed = False

    async def put(self, segment: bytes) -> None:
        while len(self.items) >= MAX_QUEUED and not self.closed:
            if self._space is None:
                self._space = trio.Event()
            await self._space.wait()
        if self.closed:
            return
        self.items.append(segment)
        self._ready.set()

    def put_nowait(self, segment: bytes) -> bool:
        """For what the service itself says (pongs, translated DISCONNECTs): a little room
        past the bound; False when even that is full."""
        if self.closed or len(self.items) >= 2 * MAX_QUEUED:
            return False
        self.items.append(segment)
        self._ready.set()
        return True

    async def take(self) -> list[bytes] | None:
        """The next batch, or None once closed and drained."""
        while not self.items:
            if self.closed:
                return None
            self._ready = trio.Event()
            await self._ready.wait()
        batch = []
        size = 0
        items = self.items
        while items and len(batch) < MAX_BATCH and (not batch or size + len(items[0]) <= MAX_BATCH_BYTES):
            segment = items.popleft()
            size += len(segment) + 1
            batch.append(segment)
        space = self._space
        if space is not None and len(items) < MAX_QUEUED:
            self._space = None
            space.set()
        return batch

    def close(self) -> None:
        self.closed = True
        self._ready.set()
        if self._space is not None:
            self._space.set()


# ---- broadcasts with acks --------------------------------------------------------------


class _Invoke:
    """One ``:invoke``: the recipients still owing an answer, and the answers."""

    def __init__(self, key: tuple[str, int], recipients: list[TunnelledConnection]) -> None:
        self.key = key
        self.waiting = {m.connection_id for m in recipients}
        self.recipients = recipients
        self.send, self.receive = trio.open_memory_channel(max(1, len(recipients)))
        #: Where a relay to another node waits (``DefaultMode._relay``), to end it early.
        self.scope: trio.CancelScope | None = None
        if not self.waiting:
            self.send.close()

    def answer(self, member: TunnelledConnection, payload: str) -> None:
        if member.connection_id not in self.waiting:
            return
        self.waiting.discard(member.connection_id)
        try:
            self.send.send_nowait(payload)  # capacity = recipients: never full
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        if not self.waiting:
            self.send.close()

    def gone(self, member: TunnelledConnection) -> None:
        if member.connection_id in self.waiting:
            self.waiting.discard(member.connection_id)
            if not self.waiting:
                self.send.close()

    def forget(self) -> None:
        for member in self.recipients:
            if member.invokes.get(self.key) is self:
                del member.invokes[self.key]
        self.send.close()


class _Merge:
    """What other nodes stream for one ``:invoke`` of this node, in arrival order: acks
    (at most ``MAX_INVOKE_BUFFER`` waiting; more are dropped and counted) and each node's
    ``done`` (never dropped: one per node)."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.items: collections.deque[Any] = collections.deque()
        self.done_from: set[str] = set()
        self._ready = trio.Event()

    def arrived(self, reply: Any) -> None:
        if reply.value == ["d"]:
            if reply.node in self.done_from:
                return
            self.done_from.add(reply.node)
        elif len(self.items) - len(self.done_from) >= MAX_INVOKE_BUFFER:
            self.counters["invoke_answers_dropped"] += 1
            return
        self.items.append(reply)
        self._ready.set()

    async def next(self) -> Any:
        while not self.items:
            self._ready = trio.Event()
            await self._ready.wait()
        return self.items.popleft()


# ---- one client connection ------------------------------------------------------------------


class TunnelledConnection:
    """One client's Engine.IO connection in default mode: a hub ``Member`` whose Socket.IO
    is run by an app server."""

    def __init__(self, mode: DefaultMode, hub: Any, engine: EngineConnection, server: str,
                 identity: auth.ClientIdentity | None) -> None:
        self.mode = mode
        self.hub = hub
        self.engine = engine
        self.connection_id = engine.sid
        self.server = server
        self.identity = identity
        self.user_id = identity.user_id if identity is not None else None
        self.groups: set[str] = set()
        self.permissions = Permissions(identity.roles if identity is not None else ())
        #: Namespaces the app accepted a CONNECT for (and no DISCONNECT since).
        self.namespaces: set[str] = set()
        #: ``(nsp, ack id)`` -> the ``:invoke`` waiting for this client's ack.
        self.invokes: dict[tuple[str, int], _Invoke] = {}
        self.upstream = _Upstream()
        self.closed = False
        self._capture: list[str | bytes] | None = None
        self._capture_left = 0
        self._capture_invoke: _Invoke | None = None
        self._forward_left = 0

    def __repr__(self) -> str:
        return f"<TunnelledConnection {self.hub.name}/{self.connection_id} app={self.server}>"

    # ---- Member ------------------------------------------------------------------------

    @property
    def context(self) -> ConnectionContext:
        return ConnectionContext(hub=self.hub.name, connection_id=self.connection_id, user_id=self.user_id,
                                 subprotocol="socket.io")

    def deliver_nowait(self, publication: Publication) -> None:
        effects = self.act(publication.encoded(APP_ACTIONS))
        if effects:
            self.mode._spawn(self._apply, effects)

    def close_for(self, situation: CloseSituation, message: str | None = None, *, discard: bool = False) -> None:
        engine = self.engine
        if situation is CloseSituation.SERVER_SHUTDOWN:
            engine.close(CloseReason.SERVER_SHUTTING_DOWN)
        elif situation is CloseSituation.SLOW_CLIENT:
            engine._overflow()
        elif situation is CloseSituation.CLOSED_BY_APP_SERVER:
            for nsp in sorted(self.namespaces):
                engine.send(_disconnect(nsp))
            engine.close(CloseReason.FORCED_SERVER_CLOSE)
        else:
            engine.close(CloseReason.FORCED_CLOSE)

    def heartbeat(self, now: float, idle_timeout: float) -> bool:
        return False  # Engine.IO's own pings keep this connection

    def statistics(self) -> dict:
        return {"connection_id": self.connection_id, "user_id": self.user_id, "transport": self.engine.transport,
                "app_server": self.server, "namespaces": sorted(self.namespaces), "groups": len(self.groups),
                "queued": len(self.upstream.items), "invokes": len(self.invokes),
                "close_reason": getattr(self.engine.session.close_reason, "value", None)}

    # ---- the connection's task -------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        hub = self.hub
        try:
            await hub.register(self)
            for group in (self.identity.groups if self.identity is not None else ()):
                await hub.join_group(self, group)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump)
                await self.engine.serve()
                self.upstream.close()
        finally:
            self.upstream.close()
            with trio.CancelScope(shield=True):
                with trio.move_on_after(APP_WAIT):
                    await self._send_disconnected()
                for invoke in list(self.invokes.values()):
                    invoke.gone(self)
                self.invokes.clear()
                if hub.local_member(self.connection_id) is self:
                    await hub.unregister(self)
                self.mode._forget(self)
            self.engine.app_state = None  # the engine connection and we refer to each other: undone (design.md)

    async def _pump(self) -> None:
        """Client packets to the app, in order, batched while a call is in flight."""
        mode = self.mode
        while True:
            batch = await self.upstream.take()
            if batch is None:
                return
            ok = await mode._event(self, "message", b"\x1e".join(batch))
            if not ok:
                self.upstream.close()
                self.engine.close(CloseReason.TRANSPORT_ERROR)
                return

    async def _send_disconnected(self) -> None:
        await self.mode._event(self, "disconnected", b'{"reason":""}', system=True, wait=0.0)

    # ---- client -> app ---------------------------------------------------------------

    async def from_client(self, data: str | bytes) -> None:
        """One Engine.IO message from the client. Checkpoint: when the queue is full."""
        if self._capture_left:
            if not isinstance(data, str):
                self._capture.append(data)  # type: ignore[union-attr]
                self._capture_left -= 1
                if not self._capture_left:
                    self._finish_capture()
                return
            self._capture, self._capture_left, self._capture_invoke = None, 0, None
        if self._forward_left:
            if not isinstance(data, str):
                self._forward_left -= 1
                await self.upstream.put(message_polling_segment(data))
                return
            self._forward_left = 0
        if isinstance(data, str):
            header = _sio_header(data)
            if header is not None:
                kind, attachments, nsp, ack_id, _ = header
                if kind in "36" and ack_id is not None and self.invokes:
                    invoke = self.invokes.get((nsp, ack_id))
                    if invoke is not None:
                        if attachments:
                            self._capture, self._capture_left, self._capture_invoke = [data], attachments, invoke
                        else:
                            self._answer(invoke, [data])
                        return
                elif kind == "1" and nsp in self.namespaces:
                    await self._leave_namespace(nsp)
                if attachments:
                    self._forward_left = attachments
            try:
                segment = message_polling_segment(data)
            except PacketEncodeError:
                log.info("%r: a client packet contains U+001E, which cannot travel to the app (closing)", self)
                self.engine.close(CloseReason.PARSE_ERROR)
                return
            await self.upstream.put(segment)
            return
        await self.upstream.put(message_polling_segment(data))

    def _finish_capture(self) -> None:
        parts, invoke = self._capture or [], self._capture_invoke
        self._capture, self._capture_left, self._capture_invoke = None, 0, None
        if invoke is not None:
            self._answer(invoke, parts)

    def _answer(self, invoke: _Invoke, parts: list[str | bytes]) -> None:
        if self.invokes.get(invoke.key) is invoke:
            del self.invokes[invoke.key]
        segments = [message_polling_segment(p).decode("ascii" if not isinstance(p, str) else "utf-8") for p in parts]
        invoke.answer(self, "\x1e".join(segments))

    # ---- app -> client ---------------------------------------------------------------

    def from_app(self, body: bytes) -> list[Callable[[], Awaitable[None]]]:
        """Write an Engine.IO payload from the app to the client (what the service keeps
        for itself is handled here). Returns the group changes still to await, in order.
        No checkpoint."""
        return self.act(parse_app_payload(body))

    def act(self, actions: tuple) -> list[Callable[[], Awaitable[None]]]:
        """Perform a payload's actions (``parse_app_payload``) for this connection; the
        group changes still to await, in order. No checkpoint."""
        if self.closed:
            return []
        effects: list[Callable[[], Awaitable[None]]] = []
        engine = self.engine
        counters = self.mode.counters
        for action in actions:
            kind = action[0]
            if kind is _SEND:
                engine.send(action[1])
            elif kind is _CONNECT:  # the app accepted a CONNECT: the socket is in its namespace now
                nsp = action[1]
                engine.send(action[2])
                if nsp not in self.namespaces:
                    self.namespaces.add(nsp)
                    counters["namespace_joins"] += 1
                    effects.append(lambda nsp=nsp: self._join(namespace_group(nsp)))
            elif kind is _DISCONNECT:
                nsp = action[1]
                if nsp in self.namespaces:  # else the socket is gone already (the client left)
                    engine.send(action[2])
                    self.namespaces.discard(nsp)
                    effects.append(lambda nsp=nsp: self._leave_namespace(nsp))
            elif kind is _DISCONNECT_WITH_DATA:  # disconnectSockets: a plain DISCONNECT instead
                nsp, close = action[1], action[2]
                counters["disconnects_translated"] += 1
                if close:
                    for other in sorted(self.namespaces):
                        engine.send(_disconnect(other))
                    self.namespaces.clear()
                    engine.close(CloseReason.FORCED_SERVER_CLOSE)
                    return effects
                if nsp in self.namespaces:
                    engine.send(_disconnect(nsp))
                    self.namespaces.discard(nsp)
                    self.upstream.put_nowait(_disconnect_segment(nsp))  # the app's socket leaves too
                    effects.append(lambda nsp=nsp: self._leave_namespace(nsp))
            elif kind is _PING:  # the app's engine.io ping, answered here
                if self.upstream.put_nowait(b"3"):
                    counters["pongs"] += 1
            elif kind is _CLOSE:  # the app closed the Engine.IO socket
                engine.close(CloseReason.FORCED_CLOSE)
                return effects
            else:  # _IGNORED
                counters["payloads_ignored"] += 1
        return effects

    async def _apply(self, effects: Iterable[Callable[[], Awaitable[None]]]) -> None:
        for effect in effects:
            await effect()

    async def _join(self, group: str) -> None:
        hub = self.hub
        if self.closed or hub.local_member(self.connection_id) is not self:
            return
        await hub.join_group(self, group)
        if self.closed or hub.local_member(self.connection_id) is not self:
            await hub.leave_group(self, group)

    async def _leave_namespace(self, nsp: str) -> None:
        self.namespaces.discard(nsp)
        prefix = _group_prefix(nsp)
        for group in [g for g in self.groups if g.startswith(prefix)]:
            await self.hub.leave_group(self, group)

    def _closed(self) -> None:
        self.closed = True
        self.upstream.close()
        for invoke in list(self.invokes.values()):
            invoke.gone(self)


# ---- the Engine.IO app ------------------------------------------------------------------


class _Pending:
    __slots__ = ("at", "identity", "server")

    def __init__(self, server: str, identity: auth.ClientIdentity | None, at: float) -> None:
        self.server, self.identity, self.at = server, identity, at


class _HubApp:
    """The Engine.IO app of one default-mode hub."""

    def __init__(self, mode: DefaultMode, hub: str) -> None:
        self.mode = mode
        self.hub = hub
        self.pending: dict[str, _Pending] = {}

    async def on_handshake(self, request: Request, sid: str) -> EngineConfig | Response:
        return await self.mode._handshake(self, request, sid)

    async def on_open(self, conn: EngineConnection, request: Request) -> None:
        pending = self.pending.pop(conn.sid, None)
        if pending is None:
            raise RuntimeError("the handshake was not accepted by an app server")
        mode = self.mode
        hub = await mode.registry.get(self.hub)
        mode._listen(hub)
        member = TunnelledConnection(mode, hub, conn, pending.server, pending.identity)
        conn.app_state = member
        mode.connections.setdefault(self.hub.lower(), {})[member.connection_id] = member
        hub.start_connection_soon(member.connection_id, member.run)

    async def on_message(self, conn: EngineConnection, data: str | bytes) -> None:
        member = conn.app_state
        if member is not None and not member.closed:
            await member.from_client(data)

    def on_close(self, conn: EngineConnection, reason: CloseReason, description: str) -> None:
        member = conn.app_state
        if member is not None:
            member._closed()


# ---- the edge ------------------------------------------------------------------------------


class DefaultMode:
    """Default-mode hubs at ``/clients/socketio/hubs/{hub}/`` (see the module docstring).

    Which hubs: a hub is served by its app servers once one of them opened a tunnel for it
    (``tunnel_opened``), for the rest of this process's life, provided it is Socket.IO
    enabled, its ``service_mode`` is ``"default"`` and none of its event handlers is a
    ``tunnel:`` URL (such a hub's tunnel serves plain Web PubSub events). Other hubs keep
    the embedded Socket.IO server (``fabric.socketio.server``).
    """

    def __init__(self, registry: Any, link: AppLink, start: Starter) -> None:
        self.registry = registry
        self.link = link
        self._start = start
        self.counters = Counters(TUNNELLED_COUNTERS)
        self._tunnelled: set[str] = set()  # lower-cased hub names an app server tunnelled for
        self._engines: dict[str, EngineServer] = {}
        self._apps: dict[str, _HubApp] = {}
        self._started: dict[str, trio.Event] = {}
        self.connections: dict[str, dict[str, TunnelledConnection]] = {}
        self._nursery: trio.Nursery | None = None
        self._running: trio.Event | None = None
        self._ids = itertools.count(1)
        self._ack_ids = itertools.count(FIRST_INVOKE_ACK_ID)
        #: ``:invoke`` of any node whose acks this node streams back, by (reply topic, stream).
        self._relays: dict[tuple[str, int], _Invoke] = {}
        #: Lower-cased hubs another node served in default mode at the last check.
        self._elsewhere: set[str] = set()
        #: Hubs this node checks for that (lower-cased name -> name), and whether it does.
        self._watched: dict[str, str] = {}
        self._watching = False

    @property
    def config(self):
        return self.registry.config

    # ---- which hubs ------------------------------------------------------------------

    def serves(self, hub: str) -> bool:
        return hub.lower() in self._tunnelled and self._eligible(hub)

    def _eligible(self, hub: str) -> bool:
        hub_config = self.config.hub(hub)
        if not hub_config.socketio.enabled or hub_config.socketio.service_mode != "default":
            return False
        return not any(h.url_template.lower().startswith("tunnel:") for h in hub_config.event_handlers)

    def tunnel_opened(self, hub: str, server: str) -> None:
        self._tunnelled.add(hub.lower())

    async def tunnel_started(self, hub: str, server: str) -> None:
        """Before the app server hears that its tunnel is up: the hub's mark, so that the
        other nodes refuse its handshakes instead of serving them with the embedded server
        (``specs/socketio_default.py``: socketio-default.other-nodes). Checkpoint."""
        if self._eligible(hub):
            with trio.move_on_after(APP_WAIT):
                await (await self.registry.get(hub)).mark(APP_MARK)

    def _watch(self, hub: str) -> None:
        """Keep checking whether another node serves ``hub`` in default mode. No checkpoint."""
        key = hub.lower()
        if key not in self._watched and len(self._watched) < MAX_WATCHED:
            self._watched[key] = hub
        if not self._watching:
            self._watching = True
            # owns() is synchronous and this node may have no task of ours yet (no tunnel,
            # no default-mode session): the checks run as a system task until the run ends.
            trio.lowlevel.spawn_system_task(self._check_elsewhere, name="socketio-default-elsewhere")

    async def _check_elsewhere(self) -> None:
        try:
            while True:
                for key, hub in list(self._watched.items()):
                    elsewhere = False
                    try:
                        with trio.move_on_after(ELSEWHERE_CHECK * 5):
                            elsewhere = await (await self.registry.get(hub)).marked(APP_MARK)
                    except Exception as exc:  # a hub shutting down, a broker down: ask again later
                        log.debug("default mode: could not check hub %r on other nodes: %r", hub, exc)
                    if elsewhere:
                        self._elsewhere.add(key)
                    else:
                        self._elsewhere.discard(key)
                await trio.sleep(ELSEWHERE_CHECK)
        finally:
            self._watching = False

    def server_lost(self, hub: str, server: str) -> None:
        """An app server's last tunnel for ``hub`` closed: its connections end unless it is
        back within ``APP_WAIT``."""
        if self.connections.get(hub.lower()):
            self._spawn(self._orphans, hub, server)

    async def _orphans(self, hub: str, server: str) -> None:
        await trio.sleep(APP_WAIT)
        self.counters["orphan_checks"] += 1
        if self.link.has_server(hub, server):
            return
        for member in list(self.connections.get(hub.lower(), {}).values()):
            if member.server == server and not member.closed:
                self.counters["orphans_closed"] += 1
                member.engine.close(CloseReason.TRANSPORT_CLOSE)

    def _hub_of(self, request: Request) -> str | None:
        path = request.path
        if not path.startswith(AZURE_PREFIX):
            return None
        return path[len(AZURE_PREFIX):].split("/", 1)[0]

    def owns(self, request: Request) -> bool:
        """Handshakes of the hubs we serve, and every later request of our sessions (a
        session stays with the engine that opened it, whichever way the hub goes meanwhile:
        the embedded server's sessions when a hub becomes ours, ours after a reload)."""
        hub = self._hub_of(request)
        if hub is None or not names.is_valid_hub_name(hub):
            return False
        sid = request.query_one("sid")
        if sid:
            engine = self._engines.get(hub.lower())
            return engine is not None and sid in engine.sessions
        if self.serves(hub):
            return True
        if self.config.broker.url is None or hub.lower() in self._tunnelled or not self._eligible(hub):
            return False
        self._watch(hub)
        return hub.lower() in self._elsewhere  # refused by _handshake

    # ---- tasks -----------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Timers and deferred group changes (the fabric runs it). Runs until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    def _spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        nursery = self._nursery
        if nursery is not None:
            with contextlib.suppress(RuntimeError):  # shutting down: nothing more to do
                nursery.start_soon(fn, *args)

    async def _ensure(self, hub: str) -> EngineServer:
        key = hub.lower()
        engine = self._engines.get(key)
        if engine is not None and self._started[key].is_set():
            return engine
        if engine is None:
            app = self._apps[key] = _HubApp(self, hub)
            s = self.config.socketio
            engine = self._engines[key] = EngineServer(
                app, engine_config(self.config), cors=CorsOptions(s.cors_allowed_origins, s.cors_credentials),
                cookie=s.cookie or None, outbox_max_items=self.config.server.outbox_max_messages,
                outbox_max_bytes=self.config.server.outbox_max_bytes)
            self._started[key] = started = trio.Event()
            try:
                if self._running is None:
                    self._running = trio.Event()
                    try:
                        await self._start("socketio-default-mode", self.run)
                    finally:
                        self._running.set()
                else:
                    await self._running.wait()
                await self._start(f"engineio-default:{key}", engine.run)
            finally:
                started.set()
        else:
            await self._started[key].wait()
        return engine

    # ---- the HTTP front's entry points ---------------------------------------------

    async def handle_http(self, request: Request) -> Response:
        engine = await self._ensure(self._hub_of(request) or "")
        return await engine.handle_http(request)

    async def handle_websocket(self, request: Request) -> Response | WebSocketAccept:
        engine = await self._ensure(self._hub_of(request) or "")
        return await engine.handle_websocket(request)

    # ---- the handshake -----------------------------------------------------------------

    def _verify(self, hub: str, request: Request) -> auth.ClientIdentity | None:
        token = request.query_one("access_token")
        authorization = request.header("authorization")
        if token is None and authorization and authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
        if token is None and self.config.hub(hub).anonymous_connect:
            return None
        return auth.verify_client_token(token, keys=self.registry.access_keys, hub=hub,
                                        client_path_prefixes=(AZURE_PREFIX,),
                                        public_endpoint=self.config.server.public_endpoint)

    async def _handshake(self, app: _HubApp, request: Request, sid: str) -> EngineConfig | Response:
        hub = app.hub
        if not self.serves(hub):
            self.counters["handshakes_elsewhere"] += 1
            return Response.error(
                503, "ServiceUnavailable",
                f"hub {hub!r} is served in Socket.IO default mode by app servers attached to other nodes of "
                f"this fabric, and none is attached to this node: connect through a node the app server's "
                f"tunnel reaches, or attach an instance of the app to this node")
        try:
            identity = self._verify(hub, request)
        except auth.TokenError as exc:
            return Response.error(exc.status, exc.code, str(exc))
        now = trio.current_time()
        for stale in [s for s, p in app.pending.items() if now - p.at > PENDING_SECONDS]:
            # accepted by the app, but the session never opened (the upgrade failed): forget it there too
            self._spawn(self._abandon, hub, stale, app.pending.pop(stale))
        if len(app.pending) >= MAX_PENDING:
            self.counters["handshakes_unavailable"] += 1
            return Response.error(503, "ServiceUnavailable", f"too many handshakes in progress for hub {hub!r}")
        body = _json_encode({
            "claims": dict(identity.claims) if identity is not None else {},
            "query": {k: list(v) for k, v in request.query.items() if k != "access_token"},
            "headers": _header_map(request.headers),
            "subprotocols": [],
            "clientCertificates": [],
        })
        self.counters["handshakes"] += 1
        try:
            response = await self.link.request(
                hub, "POST", self._url(), self._headers(hub, sid, identity.user_id if identity else None,
                                                        "connect", system=True), body,
                key=sid, server=None, wait=APP_WAIT)
            answer = await response.read()
        except AppUnreachable as exc:
            self.counters["handshakes_unavailable"] += 1
            return Response.error(503, "ServiceUnavailable", f"no app server is connected for hub {hub!r}: {exc}")
        if response.status != 200:
            self.counters["handshakes_refused"] += 1
            message = answer.decode("utf-8", "replace")[:up.ERROR_DETAIL_CHARS]
            status = response.status if 400 <= response.status < 500 else 500
            return Response(status, _json_encode({"code": 3, "message": message or "Bad request"}),
                            (("content-type", "application/json"),))
        app.pending[sid] = _Pending(response.server, identity, now)
        return self._config_from(answer)

    def _config_from(self, answer: bytes) -> EngineConfig:
        """The session's options: ours, with the app's heartbeat and payload bound."""
        config = engine_config(self.config)
        try:
            handshake = _json_decode(answer).get("socketio") or {}
        except (msgspec.DecodeError, AttributeError):
            return config
        changes: dict[str, int] = {}
        for field, name in (("ping_interval_ms", "pingInterval"), ("ping_timeout_ms", "pingTimeout")):
            value = handshake.get(name)
            if type(value) is int and 0 < value <= 3_600_000:
                changes[field] = value
        value = handshake.get("maxPayload")
        if type(value) is int and value > 0:
            changes["max_payload"] = min(value, config.max_payload)
        return dataclasses.replace(config, **changes)

    # ---- events to the app -----------------------------------------------------------

    def _url(self) -> str:
        return f"http://{self._origin()}{EVENT_PATH}"

    def _origin(self) -> str:
        endpoint = self.config.server.public_endpoint or self.registry.endpoint or "http://localhost"
        host = endpoint.split("://", 1)[-1].split("/", 1)[0]
        return host.rsplit(":", 1)[0] if host.count(":") == 1 else host

    def _headers(self, hub: str, connection_id: str, user_id: str | None, event: str, *,
                 system: bool) -> dict[str, list[str]]:
        headers = {
            up.H_ORIGIN: [self._origin()],
            up.H_CONTENT_TYPE: [up.SYSTEM_CONTENT_TYPE if system else up.USER_CONTENT_TYPES["text"]],
            up.H_SPECVERSION: [up.SPEC_VERSION],
            up.H_TYPE: [up.ce_type(event, system=system)],
            up.H_SOURCE: [up.ce_source(hub, connection_id)],
            up.H_ID: [str(next(self._ids))],
            up.H_TIME: [up.ce_time()],
            up.H_SIGNATURE: [up.signature(self.registry.access_keys, connection_id)],
            up.H_CONNECTION_ID: [connection_id],
            up.H_HUB: [hub],
            up.H_EVENT_NAME: [event],
            up.H_AWPS_VERSION: [up.AWPS_VERSION],
        }
        if user_id is not None:
            headers[up.H_USER_ID] = [user_id]
        return headers

    async def _abandon(self, hub: str, sid: str, pending: _Pending) -> None:
        user_id = pending.identity.user_id if pending.identity is not None else None
        with contextlib.suppress(AppUnreachable):
            response = await self.link.request(
                hub, "POST", self._url(), self._headers(hub, sid, user_id, "disconnected", system=True),
                b'{"reason":""}', key=sid, server=pending.server, wait=0.0)
            await response.read()

    async def _event(self, member: TunnelledConnection, event: str, body: bytes, *, system: bool = False,
                     wait: float = APP_WAIT) -> bool:
        """Send one event of a connection to its app server; False if it failed."""
        hub = member.hub.name
        try:
            response = await self.link.request(
                hub, "POST", self._url(), self._headers(hub, member.connection_id, member.user_id, event,
                                                        system=system),
                body, key=member.connection_id, server=member.server, wait=wait)
            answer = await response.read()
        except AppUnreachable as exc:
            if not system:
                self.counters["events_failed"] += 1
                log.info("%r: its app server is unreachable (%s): closing", member, exc)
            return False
        if system:
            return True
        self.counters["events_sent"] += 1
        if response.status >= 300:
            self.counters["events_failed"] += 1
            log.info("%r: the app server answered %d to a client event (%s): closing", member, response.status,
                     answer[:up.ERROR_DETAIL_CHARS].decode("utf-8", "replace"))
            return False
        return True

    # ---- operations the app calls (through the fabric's tunnel) ----------------------

    def local(self, hub: str, connection_id: str) -> TunnelledConnection | None:
        """The default-mode connection with that id on this node, if any."""
        return self.connections.get(hub.lower(), {}).get(connection_id)

    async def send_to_connection(self, member: TunnelledConnection, body: bytes) -> None:
        """``connections/{id}/:send`` from the app: written, and the group changes it implies
        done, before the app hears back (so a broadcast it sends next sees them)."""
        for effect in member.from_app(body):
            await effect()

    async def invoke(self, hub: str, selects: Callable[[Any], bool] | None, body: bytes) -> AsyncIterator[bytes]:
        """``:invoke``: the EVENT (with an ack id of ours if it has none) goes to the
        selected connections of every node; the answer's stream yields one NDJSON line
        ``{"Payload": ...}`` per client ack. Raises ``ValueError`` for a body that is not an
        Engine.IO payload of a Socket.IO EVENT. Alone, the EVENT is sent before this
        returns; with other nodes, when the stream is first read (an ``invoke`` command to
        every node, whose acks stream back: ``_spread``). Checkpoint."""
        key, body = self._numbered(body)
        self.counters["invokes"] += 1
        node = await self.registry.get(hub)
        self._listen(node)
        if node.single_node():
            return self._answers(self._start_invoke(hub, selects, body, key))
        return self._spread(node, selects, body, key)

    def _numbered(self, body: bytes) -> tuple[tuple[str, int], bytes]:
        """``(nsp, ack id)`` of an ``:invoke``'s EVENT, and the body with that id in it."""
        text = body.decode("utf-8", "replace")
        first, sep, rest = text.partition("\x1e")
        header = _sio_header(first[1:]) if first.startswith("4") else None
        if header is None or header[0] not in "25":
            raise ValueError(f"the body must be an Engine.IO payload of a Socket.IO EVENT, got {text[:40]!r}")
        nsp, ack_id, start = header[2], header[3], header[4]
        if ack_id is None:
            # The package's adapter sends the EVENT without an id (it overrides the adapter
            # method that would set one): the service numbers it, far above the app's own ids.
            ack_id = next(self._ack_ids)
            sio = first[1:]
            body = ("4" + sio[:start] + str(ack_id) + sio[start:] + sep + rest).encode("utf-8")
        return (nsp, ack_id), body

    def _start_invoke(self, hub: str, selects: Callable[[Any], bool] | None, body: bytes,
                      key: tuple[str, int]) -> _Invoke:
        """Send the EVENT to this node's selected connections that have its namespace. No
        checkpoint."""
        nsp = key[0]
        recipients = [m for m in list(self.connections.get(hub.lower(), {}).values())
                      if not m.closed and nsp in m.namespaces and (selects is None or selects(m))]
        invoke = _Invoke(key, recipients)
        for member in recipients:
            previous = member.invokes.get(key)
            if previous is not None:
                previous.gone(member)
            member.invokes[key] = invoke
        for member in recipients:
            member.from_app(body)
        return invoke

    async def _answers(self, invoke: _Invoke) -> AsyncIterator[bytes]:
        try:
            with trio.move_on_after(INVOKE_TIMEOUT):
                async for payload in invoke.receive:
                    self.counters["invoke_answers"] += 1
                    yield _json_encode({"Payload": payload}) + b"\n"
        finally:
            invoke.forget()

    # ---- :invoke across nodes ----------------------------------------------------------

    async def _spread(self, hub: Any, selects: Callable[[Any], bool] | None, body: bytes,
                      key: tuple[str, int]) -> AsyncIterator[bytes]:
        """The requesting node's half: an ``invoke`` edge command to every node (this one
        included), each answering how many clients it sent the EVENT to, then streaming
        their acks and a last ``done``; the stream ends when every node that had recipients
        is done (a node that did not answer in time counts as none), or after
        ``INVOKE_TIMEOUT``. Acks waiting to be read are bounded (``MAX_INVOKE_BUFFER``)."""
        merge = _Merge(self.counters)
        stream_id = hub.open_stream(merge.arrived)
        if stream_id is None:  # too many at once: this node's clients only, as alone
            self.counters["invokes_not_spread"] += 1
            log.warning("hub %r: too many :invoke in flight across nodes: this one reaches this node only", hub.name)
            async for line in self._answers(self._start_invoke(hub.name, selects, body, key)):
                yield line
            return
        owing: set[str] = set()
        done: set[str] = set()
        finished = False
        try:
            with trio.move_on_after(INVOKE_TIMEOUT):
                replies = await hub.edge_request(INVOKE_OP, (hub.reply_topic, stream_id, body), filter=selects)
                owing = {r.node for r in replies if type(r.value) is int and r.value > 0 and r.node}
                while not owing <= done:
                    reply = await merge.next()
                    value = reply.value
                    if type(value) is list and len(value) == 2 and value[0] == "a" and type(value[1]) is str:
                        self.counters["invoke_answers"] += 1
                        yield _json_encode({"Payload": value[1]}) + b"\n"
                    elif value == ["d"]:
                        done.add(reply.node)
                finished = True
        finally:
            hub.close_stream(stream_id)
            if not finished:  # timed out, or the app stopped reading: the others stop waiting
                with trio.CancelScope(shield=True), trio.move_on_after(APP_WAIT):
                    await hub.edge_tell(INVOKE_END_OP, (hub.reply_topic, stream_id))

    def _listen(self, hub: Any) -> None:
        """Serve the ``:invoke`` of other nodes for ``hub`` (idempotent). No checkpoint."""
        hub.on_edge(INVOKE_OP, functools.partial(self._invoke_here, hub))
        hub.on_edge(INVOKE_END_OP, self._invoke_end)

    async def _invoke_here(self, hub: Any, args: tuple, selects: Callable[[Any], bool] | None) -> int:
        """A node's half of an ``:invoke`` from any node: the EVENT to its selected
        connections now, their acks streamed to the requester; the number of recipients."""
        if len(args) != 3 or type(args[0]) is not str or type(args[1]) is not int or type(args[2]) is not bytes:
            return 0
        reply_to, stream_id, body = args
        try:
            key, numbered = self._numbered(body)
        except ValueError:
            return 0
        if numbered is not body or self._nursery is None:
            return 0  # the requester numbers the EVENT; no task of ours: no connection either
        if len(self._relays) >= MAX_RELAYS:
            self.counters["invokes_refused"] += 1
            log.warning("hub %r: too many :invoke from other nodes in flight: one is not delivered here", hub.name)
            return 0
        invoke = self._start_invoke(hub.name, selects, body, key)
        if not invoke.recipients:
            return 0
        relay = (reply_to, stream_id)
        invoke.scope = trio.CancelScope(deadline=trio.current_time() + INVOKE_TIMEOUT)
        self._relays[relay] = invoke
        self._spawn(self._relay, hub, relay, invoke)
        return len(invoke.recipients)

    async def _relay(self, hub: Any, relay: tuple[str, int], invoke: _Invoke) -> None:
        reply_to, stream_id = relay
        try:
            with invoke.scope:  # type: ignore[union-attr]
                async for payload in invoke.receive:
                    await hub.stream_send(reply_to, stream_id, ["a", payload])
        finally:
            invoke.forget()
            self._relays.pop(relay, None)
            with trio.CancelScope(shield=True), trio.move_on_after(APP_WAIT):
                await hub.stream_send(reply_to, stream_id, ["d"])

    async def _invoke_end(self, args: tuple, selects: Any) -> None:
        if len(args) != 2 or type(args[0]) is not str or type(args[1]) is not int:
            return
        invoke = self._relays.get((args[0], args[1]))
        if invoke is not None and invoke.scope is not None:
            invoke.scope.cancel()

    def _forget(self, member: TunnelledConnection) -> None:
        mine = self.connections.get(member.hub.name.lower())
        if mine is not None and mine.get(member.connection_id) is member:
            del mine[member.connection_id]

    def statistics(self) -> dict:
        return {
            "hubs": sorted(self._tunnelled),
            "served_elsewhere": sorted(self._elsewhere),
            "invokes_relayed": len(self._relays),  # for other nodes, acks still owed
            "connections": {hub: len(c) for hub, c in self.connections.items()},
            "endpoints": {hub: e.statistics() for hub, e in self._engines.items()},
            "counters": self.counters.as_dict(),
        }


def _header_map(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        if name != "authorization":
            out.setdefault(name, []).append(value)
    return out

