"""The Socket.IO v5 server on trio: connections as hub members, sockets, and the handler API.

``Server`` is what an app uses (python-socketio's ``AsyncServer`` vocabulary: ``on``/``event``
decorators, namespace classes, ``emit``/``send``/``call`` with ``to``/``room``/``skip_sid``/
``namespace``, ``enter_room``/``leave_room``/``rooms``, sessions, ``disconnect``) plus Node's
broadcast operators (``to``/``except_``/``volatile``/``local``/``timeout``). One ``Server``
serves one hub; the fabric routes every Socket.IO path of that hub to it.

Rules this module keeps (reference: socketio-protocol.md §b, §e):
- An Engine.IO connection is one hub ``Member`` (``SioConnection``; its connection id is the
  Engine.IO sid). Its sockets (one per namespace) are this module's objects. Rooms are hub
  groups (``formats.room_group``); a connected socket is in its namespace's group; so a send
  to a room is a hub group publication, encoded once per format for all recipients.
- Every socket is in its own room (its sid), as in socket.io: the hub group
  ``0~b64(nsp)~b64(sid)``, joined *inline* (``Hub.join_group(..., inline=True)``: a registry
  entry and a broker subscription, no group actor), so a server on any node, REST and the
  OData filters reach a socket by its sid wherever it lives. A send from this node to one of
  its own sockets still goes to the socket directly; ``enter_room``/``leave_room``/
  ``disconnect`` of a socket held by another node go through the hub (its own room's member
  is its connection there), and so do the operators' ``sockets_join``/``sockets_leave``/
  ``disconnect_sockets`` (a filter over groups, as Azure's adapter sends them). Still this
  node's sockets only: ``fetch_sockets``, ``emit_with_ack`` to rooms, ``call`` and acks.
- CONNECT: an unknown namespace gets ``44{"message":"Invalid namespace"}``, one past
  ``MAX_NAMESPACES_PER_CONNECTION`` on one Engine.IO connection ``44`` saying so (Node has
  no bound, but each namespace is a socket, two groups and a linear scan when the
  connection closes: 8,000 namespaces on one connection stalled a close 15 s); the connect
  handler runs before the reply and may refuse (``False`` or ``ConnectionRefusedError``);
  what the handler emits to the socket is held and written after the ``40`` reply. A packet
  for a namespace the client has not joined, a second CONNECT for a joined one, or an
  undecodable packet closes the whole Engine.IO connection.
- Event handlers: plain functions run inline in the connection's reader (their return value
  is the ack); coroutine functions run as tasks in the server's handler nursery, at most
  ``max_handlers_per_connection`` at a time per connection (the reader waits for a slot:
  backpressure), so a slow handler or one awaiting the client's own ack never blocks other
  connections or deadlocks its own. A handler that raises is logged and counted; the
  connection carries on.
- Disconnect reasons are Socket.IO's (§b.5). ``disconnect`` handlers run once per socket,
  after its rooms were left, as tasks.
- Connection-state recovery (§b.6), when enabled, on any node: every broadcast without ack
  and not volatile gets an offset unique across nodes (appended as the last argument, and in
  the publication's metadata, which crosses nodes); each node records the ones it delivers,
  in delivery order, in a bounded log. A socket closed for a recoverable reason is kept for
  ``max_disconnection_duration``: its closed connection stays registered and in the socket's
  groups (``_linger``), so the log goes on recording what the socket is sent. A CONNECT with
  its ``pid`` and an ``offset`` still in the log restores sid, rooms and session data and
  replays what the log holds for it after that offset, after the ``40`` reply. On another
  node the CONNECT claims the socket from the node keeping it through the hub (every node is
  asked; the kept socket answers as an alias named after a hash of its pid), joins its groups
  first, then gets its missed broadcasts and session; what arrives meanwhile waits behind the
  replay (``_Hold``), once. Unknown pid, expired socket, lost offset or owner gone: a fresh
  socket (``recovered`` false), as socket.io does. Rules and bounds: ``specs/socketio.py``.
- Bounded: attachments per packet, acks pending per socket, handler tasks per connection,
  the recovery buffer (packets and sessions), the outbox (slow consumers are closed).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import inspect
import itertools
import logging
import re
import secrets
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterable

import msgspec
import trio

from specs.errors import CloseSituation
from specs.socketio import RECOVERY_KEPT_SOCKETS, RECOVERY_LOG_ENTRIES

from fabric.core import ids
from fabric.core.counters import CounterSpec, Counters
from fabric.core.events import ConnectionContext
from fabric.core.permissions import Permissions
from fabric.core.payload import DataType, Payload
from fabric.core.publication import Publication
from fabric.socketio import parser
from fabric.socketio.eio_packets import EncodedPacket, join_segments, text_message
from fabric.socketio.eio_session import CloseReason
from fabric.socketio.engine import EngineConnection
from fabric.socketio.exceptions import ConnectionRefusedError, DisconnectedError, TimeoutError
from fabric.socketio import serverless
from fabric.socketio.formats import (
    DISCONNECTS,
    PACKETS,
    WS_FRAMES,
    SioPublication,
    namespace_group,
    own_room_group,
    packets_of,
    parse_group,
    room_group,
)

if TYPE_CHECKING:
    from transport.http import Request

    from fabric.core.hub import Hub

log = logging.getLogger(__name__)

__all__ = ["BroadcastOperator", "Namespace", "Reason", "Server", "SioConnection", "Socket"]

SOCKETIO_COUNTERS = tuple(CounterSpec(n, h) for n, h in (
    ("connections", "Engine.IO connections opened for Socket.IO."),
    ("sockets_connected", "Namespace connections accepted."),
    ("sockets_refused", "Namespace connections refused (unknown namespace or connect handler)."),
    ("sockets_recovered", "Sockets restored by connection-state recovery."),
    ("invalid_packets", "Connections closed for an undecodable or out-of-state packet."),
    ("events", "Events received from clients."),
    ("unhandled_events", "Events with no handler."),
    ("handler_failures", "Handlers that raised."),
    ("acks_timed_out", "Acknowledgements not received in time."),
    ("broadcasts", "Broadcasts published."),
    ("connect_timeouts", "Connections closed because no namespace was joined in time."),
    ("upstream_refusals", "Serverless mode: sockets the upstream connect handler refused."),
    ("invalid_replies", "Serverless mode: event handler answers that were not Engine.IO payloads."),
    ("upstream_disconnects", "Sockets disconnected by a DISCONNECT packet sent through the service API."),
))


class Reason:
    """Disconnect reasons (socket.io's ``DisconnectReason``; python-socketio's ``sio.reason``)."""

    TRANSPORT_ERROR = "transport error"
    TRANSPORT_CLOSE = "transport close"
    FORCED_CLOSE = "forced close"
    PING_TIMEOUT = "ping timeout"
    PARSE_ERROR = "parse error"
    SERVER_SHUTTING_DOWN = "server shutting down"
    FORCED_SERVER_CLOSE = "forced server close"
    CLIENT_DISCONNECT = "client namespace disconnect"
    SERVER_DISCONNECT = "server namespace disconnect"


_RECOVERABLE = frozenset({
    Reason.TRANSPORT_ERROR, Reason.TRANSPORT_CLOSE, Reason.FORCED_CLOSE, Reason.PING_TIMEOUT,
    Reason.SERVER_SHUTTING_DOWN, Reason.FORCED_SERVER_CLOSE,
})
_MAX_PENDING_ACKS = 1024
#: Namespaces one Engine.IO connection may join (see the module header: CONNECT).
MAX_NAMESPACES_PER_CONNECTION = 64
_NO_AUTH: dict = {}
_json_decode = msgspec.json.decode


def _new_id() -> str:
    return ids.random_id(15)


def _as_args(data: Any) -> list:
    """python-socketio's ``data``: a tuple is several arguments, None none, else one."""
    if data is None:
        return []
    if type(data) is tuple:
        return list(data)
    return [data]


def _ack_value(args: list) -> Any:
    """``call``'s result: None, the one argument, or a tuple of them."""
    if not args:
        return None
    if len(args) == 1:
        return args[0]
    return tuple(args)


def _encode_event(nsp: str, args: list, ack_id: int | None = None) -> tuple[EncodedPacket, ...]:
    if parser.has_binary(args):
        header, attachments = parser.encode(parser.Packet(parser.PacketType.EVENT, nsp, args, ack_id))
        return packets_of(header, attachments)
    return (text_message(parser.encode_event(args, nsp, ack_id)),)


def _encode_ack(nsp: str, args: list, ack_id: int) -> tuple[EncodedPacket, ...]:
    if parser.has_binary(args):
        header, attachments = parser.encode(parser.Packet(parser.PacketType.ACK, nsp, args, ack_id))
        return packets_of(header, attachments)
    return (text_message(parser.encode_ack(args, ack_id, nsp)),)


def _control(ptype: parser.PacketType, nsp: str, data: Any = None) -> EncodedPacket:
    header, _ = parser.encode(parser.Packet(ptype, nsp, data))
    return text_message(header)


def _arity(fn: Callable) -> int:
    """Positional parameters a handler takes (a large number for ``*args``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return 99
    n = 0
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            return 99
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            n += 1
    return n


#: Result types of a handler that are never awaitable: the common acks skip
#: ``inspect.isawaitable`` (an ABC check, measurable on the emit-with-ack path).
_PLAIN_RESULTS = frozenset({type(None), bool, int, float, str, bytes, list, tuple, dict})


def _is_async(fn: Callable) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


class _Handler:
    """A registered handler with what calling it needs (arity, sync or async)."""

    __slots__ = ("fn", "is_async", "arity")

    def __init__(self, fn: Callable) -> None:
        self.fn = fn
        self.is_async = _is_async(fn)
        self.arity = _arity(fn)


class _RoomFilter:
    """A broadcast's recipients as a predicate over members, with its OData ``source`` (so it
    can cross a process): in any of ``groups`` or one of ``connections``, and in none of
    ``except_groups``."""

    __slots__ = ("connections", "except_groups", "groups", "source")

    def __init__(self, groups: frozenset[str], connections: frozenset[str], except_groups: frozenset[str],
                 everyone_in: str | None) -> None:
        self.groups = groups
        self.connections = connections
        self.except_groups = except_groups
        picks = [f"'{g}' in groups" for g in sorted(groups)]
        picks += [f"connectionId eq '{c}'" for c in sorted(connections)]
        if everyone_in is not None and not picks:
            picks = [f"'{everyone_in}' in groups"]
            self.groups = frozenset((everyone_in,))
        source = " or ".join(picks)
        if except_groups:
            nots = " and ".join(f"not ('{g}' in groups)" for g in sorted(except_groups))
            source = f"({source}) and {nots}" if source else nots
        self.source = source

    def __call__(self, member: Any) -> bool:
        groups = member.groups
        if self.except_groups and not self.except_groups.isdisjoint(groups):
            return False
        if member.connection_id in self.connections:
            return True
        return not self.groups.isdisjoint(groups)


class _AckWaiter:
    """One pending acknowledgement: a callback, or an event a caller waits on."""

    __slots__ = ("args", "callback", "event")

    def __init__(self, callback: Callable | None) -> None:
        self.callback = callback
        self.event: trio.Event | None = None if callback is not None else trio.Event()
        self.args: list | None = None


class Socket:
    """One namespace connection of a client (python-socketio's ``sid``)."""

    __slots__ = (
        "_ack_ids", "_session", "acks", "auth", "conn", "connected", "key", "nsp", "pending", "pid", "recovered",
        "sid",
    )

    def __init__(self, conn: "SioConnection", nsp: str, sid: str, auth: dict, key: str | None = None) -> None:
        self.conn = conn
        self.nsp = nsp
        #: The handlers serving its namespace (``Server._resolve``, decided once at CONNECT).
        self.key = key if key is not None else nsp
        self.sid = sid
        #: The CONNECT payload (the empty dict is shared: sockets without auth are the norm).
        self.auth = auth if auth else _NO_AUTH
        self.pid: str | None = None
        self._session: dict | None = None  # made on first use (most sockets never have one)
        self.acks: dict[int, _AckWaiter] | None = None
        self._ack_ids = 0
        self.connected = False
        self.recovered = False
        #: Packets emitted while the connect handler runs (written after the ``40`` reply).
        self.pending: list[EncodedPacket] | None = []

    def __repr__(self) -> str:
        return f"<Socket {self.nsp} {self.sid} on {self.conn.connection_id}>"

    @property
    def session(self) -> dict:
        session = self._session
        if session is None:
            session = self._session = {}
        return session

    @session.setter
    def session(self, value: dict) -> None:
        self._session = value

    def send_packets(self, packets: Iterable[EncodedPacket]) -> bool:
        if self.pending is not None:
            self.pending.extend(packets)
            return True
        return self.conn.engine.send_packets(packets)

    def next_ack_id(self) -> int:
        self._ack_ids += 1
        return self._ack_ids

    def add_ack(self, callback: Callable | None) -> tuple[int, _AckWaiter]:
        acks = self.acks
        if acks is None:
            acks = self.acks = {}
        if len(acks) >= _MAX_PENDING_ACKS:
            raise DisconnectedError(f"too many acknowledgements pending for {self.sid}")
        ack_id = self.next_ack_id()
        waiter = acks[ack_id] = _AckWaiter(callback)
        return ack_id, waiter


class SioConnection:
    """One Engine.IO connection speaking Socket.IO: a hub ``Member`` with its sockets."""

    __slots__ = (
        "_environ", "_initial_groups", "_permissions", "_roles", "_slot_free", "_slots", "connection_id", "decoder",
        "engine", "groups", "hub", "identity", "server", "sockets", "user_id",
    )

    def __init__(self, server: "Server", hub: "Hub", engine: EngineConnection, *, user_id: str | None,
                 roles: tuple[str, ...], groups: tuple[str, ...], identity: Any) -> None:
        self.server = server
        self.hub = hub
        self.engine = engine
        self.connection_id = engine.sid
        self.user_id = user_id
        # Made on first use: an idle connection keeps only what it needs (the memory budget).
        self._roles = roles
        self._permissions: Permissions | None = None
        self._environ: dict | None = None
        self.groups: set[str] = set()
        self._initial_groups = groups
        self.identity = identity
        self.decoder = parser.Decoder(server.max_attachments)
        self.sockets: dict[str, Socket] = {}
        self._slots = server.max_handlers_per_connection
        self._slot_free: trio.Event | None = None

    def __repr__(self) -> str:
        return f"<SioConnection {self.hub.name}/{self.connection_id} {self.engine.transport}>"

    @property
    def permissions(self) -> Permissions:
        permissions = self._permissions
        if permissions is None:
            permissions = self._permissions = Permissions(self._roles)
        return permissions

    @property
    def environ(self) -> dict:
        """A WSGI-style environ of the handshake request (python-socketio's), built on first use."""
        environ = self._environ
        if environ is None:
            environ = self._environ = _environ(self.engine.request)
        return environ

    # ---- Member ------------------------------------------------------------------------

    @property
    def context(self) -> ConnectionContext:
        return ConnectionContext(hub=self.hub.name, connection_id=self.connection_id, user_id=self.user_id,
                                 subprotocol="socket.io")

    def deliver_nowait(self, publication: Publication) -> None:
        """The fan-out path: the publication's shared frames or packets, never awaiting."""
        engine = self.engine
        if publication.metadata is not None and engine.__class__ is not _Hold:
            self.server._delivered(publication)  # a recoverable broadcast, maybe: recorded (once)
        out = engine.ws_out
        if out is not None:  # open on a WebSocket: one outbox item, the frames built once for all
            if type(publication) is SioPublication:
                if publication.volatile and len(out):
                    return  # volatile and the socket is not writable now
            elif publication.encoded(DISCONNECTS):
                self._deliver_disconnects(publication)
                return
            frames = publication.encoded(WS_FRAMES)
            if frames:
                engine.put_frames(out, frames)
            return
        if engine.__class__ is _Hold:
            engine.hold(publication)
            return
        if type(publication) is not SioPublication and publication.encoded(DISCONNECTS):
            self._deliver_disconnects(publication)
            return
        packets = publication.encoded(PACKETS)
        if not packets:
            return
        if getattr(publication, "volatile", False) and not engine.writable:
            return
        engine.send_ws_frames(publication.encoded(WS_FRAMES), packets)

    def _deliver_disconnects(self, publication: Publication) -> None:
        """A service-API payload with DISCONNECT packets: sent as it is, then each of this
        connection's sockets it names is closed here too (reason: server namespace disconnect)."""
        self.engine.send_ws_frames(publication.encoded(WS_FRAMES), publication.encoded(PACKETS))
        for nsp in publication.encoded(DISCONNECTS):
            socket = self.sockets.get(nsp)
            if socket is not None and socket.connected:
                self.server.counters["upstream_disconnects"] += 1
                self.server._close_socket(socket, Reason.SERVER_DISCONNECT)

    def close_for(self, situation: CloseSituation, message: str | None = None, *, discard: bool = False) -> None:
        engine = self.engine
        if engine.closed:  # lingering for its kept sockets: they go now
            recovery = self.server._recovery
            if recovery is not None:
                recovery.let_go_conn(self.connection_id)
            return
        if situation is CloseSituation.SERVER_SHUTDOWN:
            engine.close(CloseReason.SERVER_SHUTTING_DOWN)
        elif situation is CloseSituation.SLOW_CLIENT:
            engine._overflow()
        elif situation is CloseSituation.CLOSED_BY_APP_SERVER:
            for socket in list(self.sockets.values()):
                if socket.connected:
                    self.server._close_socket(socket, Reason.SERVER_DISCONNECT, send=True)
            engine.close(CloseReason.FORCED_SERVER_CLOSE)
        else:
            engine.close(CloseReason.FORCED_CLOSE)

    def heartbeat(self, now: float, idle_timeout: float) -> bool:
        return False  # Engine.IO's own pings (the engine server's ticker) keep this connection

    def statistics(self) -> dict:
        return {
            "connection_id": self.connection_id, "user_id": self.user_id, "transport": self.engine.transport,
            "namespaces": sorted(self.sockets), "groups": len(self.groups),
            "close_reason": getattr(self.engine.session.close_reason, "value", None),
        }

    # ---- the connection's task ---------------------------------------------------------

    # The connection's task is the engine connection's ``serve`` (a hub child, see
    # ``Server._start_member``); ``_SioApp`` runs these two in it, first and last: register, then
    # the initial groups; unregister. No frame of ours stays on an idle connection's stack.

    async def _setup(self) -> None:
        hub = self.hub
        await hub.register(self)
        for group in self._initial_groups:
            await hub.join_group(self, group)

    async def _teardown(self) -> None:
        server = self.server
        for socket in list(self.sockets.values()):
            server._close_socket(socket, server._engine_reason(self.engine))
        if self.hub.local_member(self.connection_id) is not self:
            return
        recovery = server._recovery
        if recovery is not None and self.connection_id in recovery.by_conn and server._nursery is not None:
            server._nursery.start_soon(server._linger, self)  # unregisters when its kept sockets are gone
            return
        await self.hub.unregister(self)

    # ---- inbound -----------------------------------------------------------------------

    async def on_message(self, data: str | bytes) -> None:
        """One Engine.IO message from the client. Checkpoint: maybe."""
        try:
            packet = self.decoder.feed(data)
        except parser.ParseError as exc:
            self._invalid(f"invalid Socket.IO packet: {exc}", CloseReason.PARSE_ERROR)
            return
        if packet is None:
            return
        ptype, nsp, payload, ack_id = packet
        server = self.server
        if ptype is parser.PacketType.EVENT:
            socket = self.sockets.get(nsp)
            if socket is None or not socket.connected:
                self._invalid(f"event for namespace {nsp!r}, not connected")
                return
            await server._on_event(socket, payload, ack_id)
        elif ptype is parser.PacketType.ACK:
            socket = self.sockets.get(nsp)
            if socket is None or not socket.connected:
                self._invalid(f"ack for namespace {nsp!r}, not connected")
                return
            server._on_ack(socket, payload, ack_id)
        elif ptype is parser.PacketType.CONNECT:
            if nsp in self.sockets:
                self._invalid(f"second CONNECT for namespace {nsp!r}")
                return
            await server._on_connect(self, nsp, payload if payload is not None else {})
        elif ptype is parser.PacketType.DISCONNECT:
            socket = self.sockets.get(nsp)
            if socket is None or not socket.connected:
                self._invalid(f"DISCONNECT for namespace {nsp!r}, not connected")
                return
            server._close_socket(socket, Reason.CLIENT_DISCONNECT)
        else:  # CONNECT_ERROR from a client
            self._invalid("CONNECT_ERROR from a client")

    def _invalid(self, why: str, reason: CloseReason = CloseReason.FORCED_CLOSE) -> None:
        self.server.counters["invalid_packets"] += 1
        log.info("%r closed: %s", self, why)
        self.engine.close(reason)

    async def _take_slot(self) -> None:
        while self._slots <= 0:
            if self._slot_free is None:
                self._slot_free = trio.Event()
            await self._slot_free.wait()
        self._slots -= 1

    def _give_slot(self) -> None:
        self._slots += 1
        event = self._slot_free
        if event is not None:
            self._slot_free = None
            event.set()


#: Metadata keys of a recoverable broadcast (they cross nodes with the publication).
_OFFSET = "socketio.offset"
_NSP = "socketio.nsp"
#: The ``protocol`` of a Socket.IO claim (``Hub.claim_session``).
_CLAIM_PROTOCOL = "socket.io"


def _claim_name(pid: str) -> str:
    """The name a kept socket answers claims under: derived from its private id, which it
    does not reveal."""
    return "sio:" + hashlib.sha256(pid.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _selects(publication: Publication, probe: Any) -> bool:
    """Whether a recorded broadcast was for ``probe`` (a kept socket: its connection id and
    groups), as the hub would have decided."""
    if publication.group is not None and publication.group not in probe.groups:
        return False
    if publication.excluded and probe.connection_id in publication.excluded:
        return False
    selects = publication.filter
    return selects is None or bool(selects(probe))


class _Kept:
    """A socket closed for a recoverable reason, kept for ``max_disconnection`` seconds.

    Its connection stays registered and in the socket's groups meanwhile (``Server._linger``),
    so this node keeps receiving and recording what the socket is sent. It is also the hub
    alias another node claims it through (``export_session``/``release_session``)."""

    __slots__ = ("at", "claim", "conn", "connection_id", "groups", "name", "nsp", "pid", "recovery",
                 "session", "sid", "user_id")

    def __init__(self, recovery: "_Recovery", socket: Socket, groups: set[str], at: float) -> None:
        self.recovery = recovery
        self.conn = socket.conn
        self.connection_id = socket.conn.connection_id
        self.user_id = socket.conn.user_id
        self.sid = socket.sid
        self.pid: str = socket.pid  # type: ignore[assignment]
        self.nsp = socket.nsp
        self.groups = groups
        self.session = socket._session
        self.at = at
        self.name = _claim_name(self.pid)
        #: (claim id, deadline, offset) while another node takes it over.
        self.claim: tuple[str, float, str] | None = None

    def claimed(self) -> bool:
        return self.claim is not None and trio.current_time() < self.claim[1]

    # ---- the owner's side of a claim (the hub's command task calls these: no checkpoint) ----

    def export_session(self, token: str, protocol: str | None, timeout: float) -> dict | None:
        """Step 1: the claimer sends ``[pid, namespace, offset]``; if they fit, the socket is
        reserved for it and described (sid, groups)."""
        if protocol != _CLAIM_PROTOCOL or self.recovery.sessions.get(self.pid) is not self or self.claimed():
            return None
        try:
            pid, nsp, offset = _json_decode(token)
        except (msgspec.DecodeError, TypeError, ValueError):
            return None
        if pid != self.pid or nsp != self.nsp or not isinstance(offset, str) or offset not in self.recovery.index:
            return None
        claim = secrets.token_urlsafe(12)
        self.claim = (claim, trio.current_time() + 3 * timeout, offset)
        return {"claim": claim, "sid": self.sid, "groups": sorted(self.groups)}

    def release_session(self, claim: str) -> dict | None:
        """Step 2 (after the hub flushed the socket's groups here): what the socket missed
        since the claimed offset and its session data; the socket is forgotten here."""
        current = self.claim
        if current is None or current[0] != claim or not self.claimed():
            return None
        recovery = self.recovery
        if recovery.sessions.get(self.pid) is not self:
            return None
        missed = recovery.missed(current[2], self)
        if missed is None:
            return None
        session = self.session
        try:
            msgspec.msgpack.encode(session)  # it must cross nodes
        except (TypeError, ValueError, OverflowError):
            log.warning("session data of %s cannot move to another node: not serializable", self.sid)
            return None
        recovery.take(self)
        recovery.let_go(self)
        return {"entries": missed, "session": session}


class _Recovery:
    """Connection-state recovery on one node: the recent recoverable broadcasts this node
    delivered (in delivery order, by offset) and the kept sockets (by pid). Bounded by
    count and by ``max_disconnection``."""

    def __init__(self, server: "Server", max_disconnection: float, max_packets: int = RECOVERY_LOG_ENTRIES,
                 max_sessions: int = RECOVERY_KEPT_SOCKETS) -> None:
        self.server = server
        self.max_disconnection = max_disconnection
        self.max_packets = max_packets
        self.max_sessions = max_sessions
        self.packets: collections.deque = collections.deque()  # (offset, at, publication)
        self.index: dict[str, int] = {}
        self._first = 0
        self._last: Publication | None = None
        self.sessions: dict[str, _Kept] = {}  # pid -> kept, oldest first
        #: Connection id -> pids of its kept sockets, and the event its linger waits on.
        self.by_conn: dict[str, set[str]] = {}
        self.wakers: dict[str, trio.Event] = {}
        self._counter = itertools.count(1)
        self._epoch = secrets.token_hex(4)  # offsets are unique across nodes and restarts

    def new_offset(self) -> str:
        return f"{self._epoch}-{next(self._counter)}"

    def _expire(self, now: float) -> None:
        limit = now - self.max_disconnection
        packets = self.packets
        while packets and (packets[0][1] < limit or len(packets) > self.max_packets):
            offset = packets.popleft()[0]
            self.index.pop(offset, None)
            self._first += 1
        sessions = self.sessions
        while sessions:
            first = next(iter(sessions.values()))
            if (first.at >= limit and len(sessions) <= self.max_sessions) or first.claimed():
                break
            self.take(first)
            self.let_go(first)

    def record(self, publication: Publication, offset: str) -> None:
        """A recoverable broadcast delivered here (once: its recipients come one after the
        other, and an offset is recorded once). No checkpoint."""
        if publication is self._last:
            return
        self._last = publication
        if offset in self.index:
            return
        now = trio.current_time()
        self._expire(now)
        self.index[offset] = self._first + len(self.packets)
        self.packets.append((offset, now, publication))

    def mark(self, offset: str) -> None:
        """Note an offset a socket claimed from another node stands at (an entry for no
        one), so that it can recover here from it too. No checkpoint."""
        if offset not in self.index:
            now = trio.current_time()
            self._expire(now)
            self.index[offset] = self._first + len(self.packets)
            self.packets.append((offset, now, None))

    def missed(self, offset: str, probe: Any) -> list[Publication] | None:
        """The broadcasts after ``offset`` that were for ``probe``, in delivery order; None if
        the offset is no longer (or never was) here."""
        position = self.index.get(offset)
        if position is None:
            return None
        packets = self.packets
        return [p for i in range(position - self._first + 1, len(packets))
                for p in (packets[i][2],) if p is not None and _selects(p, probe)]

    def keep(self, socket: Socket, groups: set[str]) -> None:
        if socket.pid is None:
            return
        now = trio.current_time()
        self._expire(now)
        kept = _Kept(self, socket, groups, now)
        self.sessions[kept.pid] = kept
        self.by_conn.setdefault(kept.connection_id, set()).add(kept.pid)
        socket.conn.hub.alias(kept.name, kept)

    def find(self, pid: Any, offset: Any, nsp: str) -> _Kept | None:
        """The kept socket a local CONNECT with ``pid`` and ``offset`` recovers, or None."""
        if not isinstance(pid, str) or not isinstance(offset, str):
            return None
        self._expire(trio.current_time())
        kept = self.sessions.get(pid)
        if kept is None or kept.nsp != nsp or kept.claimed() or offset not in self.index:
            return None
        return kept

    def take(self, kept: _Kept) -> None:
        """Forget a kept socket (recovered, claimed or expired); its connection still holds
        its groups until ``let_go``. No checkpoint."""
        if self.sessions.get(kept.pid) is kept:
            del self.sessions[kept.pid]
        kept.conn.hub.alias(kept.name, None)

    def let_go(self, kept: _Kept) -> None:
        """Its connection no longer holds the socket's groups (its linger ends with its last
        kept socket). No checkpoint."""
        cid = kept.connection_id
        pids = self.by_conn.get(cid)
        if pids is None or kept.pid not in pids:
            return
        pids.discard(kept.pid)
        if pids:
            groups = kept.groups - set().union(*(self.sessions[p].groups for p in pids if p in self.sessions))
            self.server._spawn(self.server._leave_all, kept.conn, sorted(groups))
            return
        del self.by_conn[cid]
        waker = self.wakers.pop(cid, None)
        if waker is not None:
            waker.set()

    def let_go_conn(self, cid: str) -> None:
        """Forget every kept socket of a connection (its linger ended). No checkpoint."""
        for pid in list(self.by_conn.get(cid, ())):
            kept = self.sessions.get(pid)
            if kept is not None:
                self.take(kept)
        self.by_conn.pop(cid, None)
        waker = self.wakers.pop(cid, None)
        if waker is not None:
            waker.set()


class _Restoring:
    """A socket being recovered by a CONNECT: from this node (``kept``) or claimed from
    another (``owner``, ``claim``)."""

    __slots__ = ("claim", "groups", "kept", "name", "offset", "owner", "pid", "sid")

    def __init__(self, sid: str, pid: str, groups: set[str], offset: str, *, kept: _Kept | None = None,
                 owner: str | None = None, claim: str | None = None, name: str | None = None) -> None:
        self.sid, self.pid, self.groups, self.offset = sid, pid, groups, offset
        self.kept, self.owner, self.claim, self.name = kept, owner, claim, name


class _Hold:
    """Stands in for a connection's engine while a recovered socket's state arrives: what
    is sent to the connection meanwhile waits, in order, and goes out after the replay
    (what the replay already holds, once). Bounded: more than ``limit`` items close the
    connection as a slow consumer would be."""

    __slots__ = ("engine", "items", "limit")

    ws_out = None
    writable = False

    def __init__(self, engine: EngineConnection, limit: int) -> None:
        object.__setattr__(self, "engine", engine)
        object.__setattr__(self, "items", [])
        object.__setattr__(self, "limit", limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.engine, name, value)

    def _add(self, item: Any) -> bool:
        if len(self.items) >= self.limit:
            self.engine._overflow()
            return False
        self.items.append(item)
        return True

    def hold(self, publication: Publication) -> None:
        self._add(publication)

    def send(self, packet: EncodedPacket) -> bool:
        return self._add((packet,))

    def send_packets(self, packets: Iterable[EncodedPacket]) -> bool:
        return self._add(tuple(packets))

    def send_ws_frames(self, frames: bytes, packets: tuple[EncodedPacket, ...]) -> bool:
        return self._add(packets)


class BroadcastOperator:
    """Node's broadcast operators: ``sio.to("a").except_("b").volatile.timeout(5).emit(...)``.

    Immutable: each operator returns a new one. ``emit`` takes Node-style positional
    arguments; with a ``timeout`` use ``emit_with_ack`` to collect every recipient's answer.
    """

    __slots__ = ("_except", "_local", "_nsp", "_rooms", "_server", "_timeout", "_volatile")

    def __init__(self, server: "Server", nsp: str, rooms: frozenset[str] = frozenset(),
                 excepts: frozenset[str] = frozenset(), volatile: bool = False, local: bool = False,
                 timeout: float | None = None) -> None:
        self._server, self._nsp, self._rooms, self._except = server, nsp, rooms, excepts
        self._volatile, self._local, self._timeout = volatile, local, timeout

    def _with(self, **changes: Any) -> "BroadcastOperator":
        fields = {"rooms": self._rooms, "excepts": self._except, "volatile": self._volatile,
                  "local": self._local, "timeout": self._timeout}
        fields.update(changes)
        return BroadcastOperator(self._server, self._nsp, **fields)

    def to(self, room: str | Iterable[str]) -> "BroadcastOperator":
        rooms = {room} if isinstance(room, str) else set(room)
        return self._with(rooms=self._rooms | rooms)

    in_ = to

    def except_(self, room: str | Iterable[str]) -> "BroadcastOperator":
        rooms = {room} if isinstance(room, str) else set(room)
        return self._with(excepts=self._except | rooms)

    @property
    def volatile(self) -> "BroadcastOperator":
        return self._with(volatile=True)

    @property
    def local(self) -> "BroadcastOperator":
        return self._with(local=True)

    def timeout(self, seconds: float) -> "BroadcastOperator":
        return self._with(timeout=seconds)

    async def emit(self, event: str, *args: Any) -> None:
        """Send ``event`` with ``args`` to every targeted socket. Checkpoint."""
        await self._server._broadcast(self._nsp, event, list(args), self._rooms, self._except,
                                      volatile=self._volatile)

    async def emit_with_ack(self, event: str, *args: Any) -> list:
        """Send and collect one acknowledgement per targeted (local) socket, within the
        operator's timeout (default 60 s). Raises ``TimeoutError`` (its ``responses``
        attribute has what arrived) if some did not answer. Checkpoint."""
        return await self._server._broadcast_with_ack(self._nsp, event, list(args), self._rooms, self._except,
                                                      self._timeout if self._timeout is not None else 60.0)

    async def disconnect_sockets(self, close: bool = False) -> None:
        """Disconnect the targeted sockets, on every node (a DISCONNECT packet to them, as a
        service-API send of one). ``close``: their Engine.IO connections end too (on this
        node). Checkpoint."""
        server = self._server
        local = await server._targets(self._nsp, self._rooms, self._except)
        hub = await server._get_hub()
        body = join_segments((_control(parser.PacketType.DISCONNECT, self._nsp),))
        await hub.send_to_all(Publication("server", Payload(DataType.TEXT, body),
                                          filter=server._selection(self._nsp, self._rooms, self._except)))
        if close:
            for socket in local:
                socket.conn.engine.close(CloseReason.FORCED_SERVER_CLOSE)

    async def sockets_join(self, room: str | Iterable[str]) -> None:
        """Put the targeted sockets, on every node, in ``room``. Checkpoint."""
        await self._server._rooms_of_targets(self._nsp, self._rooms, self._except, room, join=True)

    async def sockets_leave(self, room: str | Iterable[str]) -> None:
        """Take the targeted sockets, on every node, out of ``room``. Checkpoint."""
        await self._server._rooms_of_targets(self._nsp, self._rooms, self._except, room, join=False)

    async def fetch_sockets(self) -> list[str]:
        """The sids of the targeted (local) sockets."""
        return [s.sid for s in await self._server._targets(self._nsp, self._rooms, self._except)]


class Namespace:
    """A class-based namespace: ``on_<event>(self, sid, *args)`` methods are its handlers
    (``on_connect(self, sid, environ[, auth])``, ``on_disconnect(self, sid[, reason])``).
    Register with ``server.register_namespace(MyNamespace("/chat"))``; inside, ``self.emit``
    and the other helpers have the namespace filled in."""

    def __init__(self, namespace: str = "/") -> None:
        self.namespace = namespace
        self.server: Server | None = None

    def _set_server(self, server: "Server") -> None:
        self.server = server

    def handler_for(self, event: str) -> Callable | None:
        name = "on_" + event
        fn = getattr(self, name, None)
        return fn if callable(fn) else None

    async def emit(self, event: str, data: Any = None, to: Any = None, room: Any = None, skip_sid: Any = None,
                   namespace: str | None = None, callback: Callable | None = None) -> None:
        await self.server.emit(event, data, to=to, room=room, skip_sid=skip_sid,
                               namespace=namespace or self.namespace, callback=callback)

    async def send(self, data: Any, to: Any = None, room: Any = None, skip_sid: Any = None,
                   namespace: str | None = None, callback: Callable | None = None) -> None:
        await self.server.send(data, to=to, room=room, skip_sid=skip_sid,
                               namespace=namespace or self.namespace, callback=callback)

    async def call(self, event: str, data: Any = None, to: Any = None, sid: Any = None,
                   namespace: str | None = None, timeout: float = 60) -> Any:
        return await self.server.call(event, data, to=to, sid=sid, namespace=namespace or self.namespace,
                                      timeout=timeout)

    async def enter_room(self, sid: str, room: str, namespace: str | None = None) -> None:
        await self.server.enter_room(sid, room, namespace=namespace or self.namespace)

    async def leave_room(self, sid: str, room: str, namespace: str | None = None) -> None:
        await self.server.leave_room(sid, room, namespace=namespace or self.namespace)

    async def close_room(self, room: str, namespace: str | None = None) -> None:
        await self.server.close_room(room, namespace=namespace or self.namespace)

    def rooms(self, sid: str, namespace: str | None = None) -> list[str]:
        return self.server.rooms(sid, namespace=namespace or self.namespace)

    async def get_session(self, sid: str, namespace: str | None = None) -> dict:
        return await self.server.get_session(sid, namespace=namespace or self.namespace)

    async def save_session(self, sid: str, session: dict, namespace: str | None = None) -> None:
        await self.server.save_session(sid, session, namespace=namespace or self.namespace)

    def session(self, sid: str, namespace: str | None = None):
        return self.server.session(sid, namespace=namespace or self.namespace)

    async def disconnect(self, sid: str, namespace: str | None = None) -> None:
        await self.server.disconnect(sid, namespace=namespace or self.namespace)


class Server:
    """A Socket.IO server on the fabric (see the module docstring).

    Get one with ``fabric.socketio(hub)``; register handlers before clients connect.

    - ``namespaces``: the namespaces accepted besides those with handlers: a list, or
      ``"*"`` for every namespace. Default: those with handlers, and ``/``.
    - ``connection_state_recovery``: ``None`` (off) or the seconds a dropped socket is kept
      for recovery (Node's ``maxDisconnectionDuration``, 120 in Node).
    - ``connect_timeout``: seconds a connection has to join a namespace (Node: 45).
    - ``max_handlers_per_connection``: async handlers running at once per connection.
    - ``serverless``: Azure's serverless mode (``fabric.socketio.serverless``).
    - ``async_handlers`` (python-socketio's option): True runs each coroutine handler as a
      task (a handler awaiting the client's own ack cannot deadlock it; events of one client
      may then finish out of order); False awaits it in the connection's reader, so one
      client's events are handled one after the other, in order (what Node does for
      handlers that do not await).
    """

    reason = Reason

    def __init__(
        self,
        *,
        namespaces: Iterable[str] | str | None = None,
        connection_state_recovery: float | None = None,
        connect_timeout: float = 45.0,
        max_attachments: int = parser.DEFAULT_MAX_ATTACHMENTS,
        max_handlers_per_connection: int = 64,
        async_handlers: bool = True,
        serverless: bool = False,
    ) -> None:
        self.namespaces: set[str] | str | None = (
            namespaces if namespaces == "*" or namespaces is None else set(namespaces))  # type: ignore[arg-type]
        self.connect_timeout = connect_timeout
        self.max_attachments = max_attachments
        self.max_handlers_per_connection = max_handlers_per_connection
        self.async_handlers = async_handlers
        #: Azure's serverless mode: the hub's upstream event handlers serve the sockets
        #: (``fabric.socketio.serverless``); handlers registered here are not called.
        self.serverless = serverless
        self._handlers: dict[str, dict[str, _Handler]] = {}
        self._dynamic: list[tuple[re.Pattern | Callable, str]] = []  # (matcher, handler key)
        self._namespace_objects: dict[str, Namespace] = {}
        self._sockets: dict[str, Socket] = {}
        self._by_nsp: dict[str, dict[str, Socket]] = {}
        self._recovery = _Recovery(self, connection_state_recovery) if connection_state_recovery else None
        self._hub: Hub | None = None
        self._hub_getter: Callable[[], Any] | None = None
        self._nursery: trio.Nursery | None = None
        self.counters = Counters(SOCKETIO_COUNTERS)

    # ---- binding (the fabric calls these) ----------------------------------------------

    def _bind(self, hub_getter: Callable[[], Any]) -> None:
        self._hub_getter = hub_getter

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """The server's handler nursery (the fabric runs it). Runs until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def _start_member(self, hub: "Hub", member: "SioConnection") -> None:
        """Start a connection's task as a hub child; raises what starting raised. No
        checkpoint. ``Supervisor.start_child_soon`` spawns it straight into the hub's
        nursery: no ``nursery.start``, whose status would keep the task that opened the
        connection referenced for the connection's whole life."""
        hub.start_connection_soon(member.connection_id, member.engine.serve)

    async def _get_hub(self) -> "Hub":
        if self._hub is None:
            if self._hub_getter is None:
                raise RuntimeError("this Server is not attached to a fabric (use fabric.socketio(hub))")
            self._hub = await self._hub_getter()
        return self._hub

    # ---- handlers ----------------------------------------------------------------------

    def on(self, event: str, handler: Callable | None = None, namespace: "str | re.Pattern | None" = None):
        """Register ``handler`` for ``event`` in ``namespace`` (default ``/``); usable as a
        decorator. ``namespace`` may be a compiled regex: a dynamic namespace (any matching
        name is accepted and served by these handlers). ``"*"`` as event: every event without
        its own handler, called ``(event, sid, *args)``."""
        key = self._namespace_key(namespace)

        def register(fn: Callable) -> Callable:
            self._handlers.setdefault(key, {})[event] = _Handler(fn)
            return fn

        if handler is not None:
            register(handler)
            return handler
        return register

    def event(self, handler: Callable | None = None, namespace: "str | re.Pattern | None" = None):
        """``@sio.event``: register a handler under its function name."""
        if handler is not None and callable(handler):
            return self.on(handler.__name__, handler, namespace)

        def register(fn: Callable) -> Callable:
            return self.on(fn.__name__, fn, namespace)

        return register

    def register_namespace(self, namespace: Namespace) -> None:
        """Serve a class-based namespace."""
        namespace._set_server(self)
        self._namespace_objects[namespace.namespace] = namespace

    def _namespace_key(self, namespace: "str | re.Pattern | None") -> str:
        if namespace is None:
            return "/"
        if isinstance(namespace, str):
            return namespace
        key = f"\x00dynamic:{id(namespace)}"
        if all(k != key for _, k in self._dynamic):
            self._dynamic.append((namespace, key))
        return key

    def dynamic_namespace(self, matcher: "re.Pattern | Callable[[str, dict], bool]") -> str:
        """Accept every namespace ``matcher`` matches (a regex, or ``f(name, auth) -> bool``);
        returns the key to pass as ``namespace=`` when registering its handlers."""
        key = f"\x00dynamic:{id(matcher)}"
        if all(k != key for _, k in self._dynamic):
            self._dynamic.append((matcher, key))
        return key

    def _resolve(self, nsp: str, auth: dict) -> str | None:
        """The handler key serving ``nsp``, or None if the namespace is not accepted."""
        if nsp in self._handlers or nsp in self._namespace_objects:
            return nsp
        for matcher, key in self._dynamic:
            if isinstance(matcher, re.Pattern):
                if matcher.fullmatch(nsp):
                    return key
            else:
                try:
                    if matcher(nsp, auth):
                        return key
                except Exception:
                    log.exception("dynamic namespace matcher failed for %r", nsp)
        allowed = self.namespaces
        if allowed == "*" or (allowed is None and nsp == "/") or (isinstance(allowed, set) and nsp in allowed):
            return nsp
        return None

    def _handler(self, key: str, event: str) -> tuple[_Handler | Callable | None, bool]:
        """(handler, catch_all) for ``event`` in the namespace served by ``key``."""
        handlers = self._handlers.get(key)
        if handlers is not None:
            found = handlers.get(event)
            if found is not None:
                return found, False
        obj = self._namespace_objects.get(key)
        if obj is not None:
            fn = obj.handler_for(event)
            if fn is not None:
                return fn, False
        star = self._handlers.get("*")
        if star is not None and event in star:
            return star[event], False
        if handlers is not None and "*" in handlers and event not in ("connect", "disconnect"):
            return handlers["*"], True
        return None, False

    # ---- the Engine.IO app (called by engine connections) ------------------------------

    def engine_app(self, identify: Callable[["Request"], Any] | None = None) -> "_SioApp":
        return _SioApp(self, identify)

    def _engine_reason(self, engine: EngineConnection) -> str:
        reason = engine.session.close_reason
        return reason.value if reason is not None else Reason.TRANSPORT_CLOSE

    # ---- connect -----------------------------------------------------------------------

    async def _on_connect(self, conn: SioConnection, nsp: str, auth: Any) -> None:
        if type(auth) is not dict:
            auth = {}
        key = self._resolve(nsp, auth)
        if key is None:
            self.counters["sockets_refused"] += 1
            conn.engine.send(_control(parser.PacketType.CONNECT_ERROR, nsp, {"message": "Invalid namespace"}))
            return
        if len(conn.sockets) >= MAX_NAMESPACES_PER_CONNECTION and nsp not in conn.sockets:
            self.counters["sockets_refused"] += 1
            conn.engine.send(_control(parser.PacketType.CONNECT_ERROR, nsp, {
                "message": f"Too many namespaces: at most {MAX_NAMESPACES_PER_CONNECTION} per connection"}))
            return
        restoring = None
        recovery = self._recovery
        if recovery is not None and "pid" in auth:
            restoring = await self._find_kept(conn, nsp, auth.get("pid"), auth.get("offset"))
            auth = {k: v for k, v in auth.items() if k not in ("pid", "offset")}
            if conn.sockets.get(nsp) is not None or conn.engine.closed:  # a second CONNECT meanwhile, or gone
                if restoring is not None and restoring.kept is not None:
                    recovery.let_go(restoring.kept)
                return
        sid = restoring.sid if restoring is not None else _new_id()
        if sid in self._sockets:  # the old socket is somehow still here: start afresh
            if restoring is not None and restoring.kept is not None:
                recovery.let_go(restoring.kept)
            restoring, sid = None, _new_id()
        socket = Socket(conn, nsp, sid, auth, key)
        conn.sockets[nsp] = socket
        self._sockets[sid] = socket
        self._by_nsp.setdefault(nsp, {})[sid] = socket
        if restoring is not None:
            socket.pid = restoring.pid
            if restoring.kept is not None and restoring.kept.session is not None:
                socket.session = restoring.kept.session
        if recovery is not None and socket.pid is None:
            socket.pid = _new_id()
        refusal: dict | None = None
        handler = None if self.serverless else self._connect_handler(key)
        if self.serverless:
            message = await serverless.connect(self, conn, socket, auth)
            if message is not None:
                refusal = {"message": message}
        elif handler is not None:
            try:
                accepted = await self._call_connect(handler, key, nsp, socket, conn.environ, auth)
            except ConnectionRefusedError as exc:
                refusal = exc.error_args()
            except Exception:
                self.counters["handler_failures"] += 1
                log.exception("connect handler failed for %r", socket)
                refusal = {"message": "Connection rejected by server"}
            else:
                if accepted is False:
                    refusal = {"message": "Connection rejected by server"}
        if conn.sockets.get(nsp) is not socket or conn.engine.closed or refusal is not None:
            self._forget(socket)
            if restoring is not None and restoring.kept is not None:
                recovery.let_go(restoring.kept)
            if refusal is not None and not conn.engine.closed:
                self.counters["sockets_refused"] += 1
                conn.engine.send(_control(parser.PacketType.CONNECT_ERROR, nsp, refusal))
            return
        hub = conn.hub
        hold = None
        if restoring is not None:  # what reaches the connection while the socket's state arrives waits
            hold = _Hold(conn.engine, recovery.max_packets)
            conn.engine = hold  # type: ignore[assignment]
        missed: list[Publication] | None = None
        try:
            await hub.join_group(conn, namespace_group(nsp))
            # Every socket is in its own room, a hub group without an actor: sends to its sid
            # (REST or a server on any node) reach it wherever it lives.
            await hub.join_group(conn, own_room_group(nsp, sid), inline=True)
            if restoring is not None:
                for group in sorted(restoring.groups):
                    await hub.join_group(conn, group)
                missed = await self._restore(conn, socket, restoring)
                if missed is None:  # the owner let go meanwhile: a fresh socket
                    await self._start_afresh(conn, socket, restoring)
        finally:
            if hold is not None:
                conn.engine = hold.engine
        engine = conn.engine
        if conn.sockets.get(nsp) is not socket or engine.closed:
            self._forget(socket)
            if hub.local_member(conn.connection_id) is not conn:  # unregistered while it joined
                await self._leave_all(conn, sorted(conn.groups))
            return
        reply = {"sid": socket.sid, "pid": socket.pid} if socket.pid is not None else {"sid": socket.sid}
        socket.connected = True
        pending, socket.pending = socket.pending, None
        engine.send(_control(parser.PacketType.CONNECT, nsp, reply))
        if missed is not None:
            socket.recovered = True
            self.counters["sockets_recovered"] += 1
            if restoring.kept is None:  # claimed: the client's offset is a place in this log too
                recovery.mark(restoring.offset)
            replayed = set()
            for publication in missed:
                offset = publication.metadata[_OFFSET]
                replayed.add(offset)
                recovery.record(publication, offset)
                engine.send_packets(publication.encoded(PACKETS))
        if pending:
            engine.send_packets(pending)
        if hold is not None:
            for item in hold.items:
                if type(item) is tuple:
                    engine.send_packets(item)
                elif (missed is None or (item.metadata or {}).get(_OFFSET) not in replayed) and _selects(item, conn):
                    conn.deliver_nowait(item)
        self.counters["sockets_connected"] += 1
        engine.app_deadline = float("inf")
        if self.serverless:
            serverless.connected(socket)

    async def _find_kept(self, conn: SioConnection, nsp: str, pid: Any, offset: Any) -> _Restoring | None:
        """The socket a CONNECT with ``pid`` and ``offset`` recovers: kept here, or claimed
        from the node that keeps it (every node is asked). None: a fresh socket. Checkpoint."""
        recovery = self._recovery
        kept = recovery.find(pid, offset, nsp)
        if kept is not None:
            recovery.take(kept)
            return _Restoring(kept.sid, kept.pid, set(kept.groups), offset, kept=kept)
        if not isinstance(pid, str) or not isinstance(offset, str) or len(pid) > 128 or len(offset) > 128:
            return None
        token = msgspec.json.encode([pid, nsp, offset]).decode()
        name = _claim_name(pid)
        found = await conn.hub.claim_session(name, token, _CLAIM_PROTOCOL, anywhere=True)
        if found is None:
            return None
        snapshot, owner = found
        try:
            sid, claim, groups = snapshot["sid"], snapshot["claim"], snapshot["groups"]
        except (KeyError, TypeError):
            return None
        if not isinstance(sid, str) or not isinstance(claim, str) or not isinstance(groups, (list, tuple)):
            return None
        prefix = namespace_group(nsp)
        groups = {g for g in groups if isinstance(g, str) and g.startswith(prefix)}
        return _Restoring(sid, pid, groups, offset, owner=owner, claim=claim, name=name)

    async def _restore(self, conn: SioConnection, socket: Socket, restoring: _Restoring) -> list[Publication] | None:
        """The broadcasts the recovering socket missed, once it is in its groups here (so
        nothing published from now on escapes it); None if they cannot be had. Checkpoint."""
        recovery = self._recovery
        kept = restoring.kept
        if kept is not None:
            missed = recovery.missed(restoring.offset, kept)
            recovery.let_go(kept)  # its old connection leaves the groups now that this one is in them
            return missed
        tail = await conn.hub.release_session(restoring.owner, restoring.name, restoring.claim)
        if not isinstance(tail, dict) or not isinstance(tail.get("entries"), list):
            return None
        session = tail.get("session")
        if session is not None:
            socket.session = session if isinstance(session, dict) else {}
        # What this node's group actors still queue for the socket is a copy of something the
        # owner had, or new: deliver it into the hold before merging.
        await conn.hub.flush_groups(conn)
        return [p for p in tail["entries"] if isinstance(p, Publication) and isinstance(p.metadata, dict)
                and isinstance(p.metadata.get(_OFFSET), str)]

    async def _start_afresh(self, conn: SioConnection, socket: Socket, restoring: _Restoring) -> None:
        """A claim that fell through after the socket joined its old rooms (the owner let go
        or vanished meanwhile): it leaves them and starts without state, under a new pid, so
        the client sees ``recovered`` false. Checkpoint."""
        keep = (namespace_group(socket.nsp), room_group(socket.nsp, socket.sid))
        for group in sorted(restoring.groups):
            if group not in keep:
                await conn.hub.leave_group(conn, group)
        socket.pid = _new_id()
        socket.session = {}

    def _connect_handler(self, key: str) -> _Handler | Callable | None:
        handler, _ = self._handler(key, "connect")
        return handler

    async def _call_connect(self, handler: Any, key: str, nsp: str, socket: Socket, environ: dict, auth: dict) -> Any:
        fn = handler.fn if isinstance(handler, _Handler) else handler
        arity = handler.arity if isinstance(handler, _Handler) else _arity(fn)
        star_ns = self._handlers.get("*", {}).get("connect") is handler
        args: list = [nsp] if star_ns else []
        args += [socket.sid, environ]
        if arity >= len(args) + 1:
            args.append(auth if auth else None)
        result = fn(*args)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _forget(self, socket: Socket) -> None:
        conn = socket.conn
        if conn.sockets.get(socket.nsp) is socket:
            del conn.sockets[socket.nsp]
        if self._sockets.get(socket.sid) is socket:
            del self._sockets[socket.sid]
        mine = self._by_nsp.get(socket.nsp)
        if mine is not None and mine.get(socket.sid) is socket:
            del mine[socket.sid]
            if not mine:
                del self._by_nsp[socket.nsp]

    # ---- disconnect --------------------------------------------------------------------

    def _close_socket(self, socket: Socket, reason: str, *, send: bool = False) -> None:
        """Close one socket (no checkpoint): optional ``41`` to the client, rooms left (as a
        task), recovery kept, ``disconnect`` handler started."""
        was_connected = socket.connected
        socket.connected = False
        conn = socket.conn
        if send and was_connected:
            conn.engine.send(_control(parser.PacketType.DISCONNECT, socket.nsp))
        self._forget(socket)
        acks = socket.acks
        if acks:
            socket.acks = None
            for waiter in acks.values():
                if waiter.event is not None:
                    waiter.event.set()
        if not was_connected:
            return
        prefix = namespace_group(socket.nsp)
        rooms = [g for g in conn.groups if g.startswith(prefix) and g != prefix]
        if self._recovery is not None and reason in _RECOVERABLE and conn.engine.closed:
            # Kept with its groups: the closed connection stays in them (``_linger``).
            self._recovery.keep(socket, {prefix, *rooms})
        if not conn.engine.closed:  # leave now; a closed connection leaves them all when it unregisters
            self._spawn(self._leave_all, conn, [prefix, *rooms])
        if self.serverless:
            serverless.disconnected(socket, reason)
            return
        handler, _ = self._handler(socket.key, "disconnect")
        if handler is not None:
            self._spawn(self._call_disconnect, handler, socket, reason)

    async def _linger(self, conn: SioConnection) -> None:
        """A closed connection with kept sockets stays registered, in their groups, so this
        node keeps recording what they are sent, until the last is recovered, claimed or
        expired (or the connection is closed through the service API)."""
        recovery = self._recovery
        cid = conn.connection_id
        try:
            while cid in recovery.by_conn:
                waker = recovery.wakers.get(cid)
                if waker is None:
                    waker = recovery.wakers[cid] = trio.Event()
                with trio.move_on_after(recovery.max_disconnection):
                    await waker.wait()
                recovery._expire(trio.current_time())
        finally:
            recovery.let_go_conn(cid)
            with trio.CancelScope(shield=True):
                if conn.hub.local_member(cid) is conn:
                    await conn.hub.unregister(conn)

    def _delivered(self, publication: Publication) -> None:
        """A publication with metadata reached a connection here: recorded if it is a
        recoverable broadcast. No checkpoint."""
        recovery = self._recovery
        if recovery is not None:
            offset = publication.metadata.get(_OFFSET)
            if type(offset) is str:
                recovery.record(publication, offset)

    async def _leave_all(self, conn: SioConnection, groups: list[str]) -> None:
        for group in groups:
            await conn.hub.leave_group(conn, group)

    async def _call_disconnect(self, handler: Any, socket: Socket, reason: str) -> None:
        fn = handler.fn if isinstance(handler, _Handler) else handler
        arity = handler.arity if isinstance(handler, _Handler) else _arity(fn)
        star_ns = self._handlers.get("*", {}).get("disconnect") is handler
        args: list = [socket.nsp] if star_ns else []
        args.append(socket.sid)
        if arity >= len(args) + 1:
            args.append(reason)
        try:
            result = fn(*args)
            if inspect.isawaitable(result):
                await result
        except Exception:
            self.counters["handler_failures"] += 1
            log.exception("disconnect handler failed for %r", socket)

    def _spawn(self, fn: Callable, *args: Any) -> None:
        nursery = self._nursery
        if nursery is None:
            log.warning("Socket.IO server not running: %s dropped", getattr(fn, "__name__", fn))
            return
        nursery.start_soon(fn, *args)

    # ---- events and acks ---------------------------------------------------------------

    async def _on_event(self, socket: Socket, data: list, ack_id: int | None) -> None:
        self.counters["events"] += 1
        if self.serverless:  # in the reader: one socket's events reach the handler in order
            await serverless.event(self, socket, data, ack_id)
            return
        event = data[0]
        handler, catch_all = self._handler(socket.key, event if isinstance(event, str) else str(event))
        if handler is None:
            self.counters["unhandled_events"] += 1
            return
        star = self._handlers.get("*")
        star_ns = star is not None and isinstance(handler, _Handler) and star.get(event) is handler
        args = [socket.sid, *data[1:]]
        if catch_all:
            args.insert(0, event)
        if star_ns:
            args.insert(0, socket.nsp)
        if isinstance(handler, _Handler):
            fn, is_async = handler.fn, handler.is_async
        else:
            fn, is_async = handler, _is_async(handler)
        if not is_async:
            try:
                result = fn(*args)
            except Exception:
                self.counters["handler_failures"] += 1
                log.exception("handler for %r failed on %r", event, socket)
                return
            if type(result) not in _PLAIN_RESULTS and inspect.isawaitable(result):
                # a sync callable returning an awaitable: run it as a task
                if self.async_handlers:
                    await self._start_task(socket, self._finish_awaitable(socket, event, result, ack_id))
                else:
                    await self._finish_awaitable(socket, event, result, ack_id)
                return
            if ack_id is not None:
                self._send_ack(socket, result, ack_id)
            return
        if self.async_handlers:
            await self._start_task(socket, self._run_handler(socket, event, fn, args, ack_id))
        else:
            await self._run_handler(socket, event, fn, args, ack_id)

    async def _start_task(self, socket: Socket, coro: Any) -> None:
        conn = socket.conn
        await conn._take_slot()
        nursery = self._nursery
        if nursery is None:
            conn._give_slot()
            coro.close()
            log.warning("Socket.IO server not running: event dropped")
            return

        async def runner() -> None:
            try:
                await coro
            finally:
                conn._give_slot()

        nursery.start_soon(runner)

    async def _finish_awaitable(self, socket: Socket, event: Any, awaitable: Any, ack_id: int | None) -> None:
        try:
            result = await awaitable
        except Exception:
            self.counters["handler_failures"] += 1
            log.exception("handler for %r failed on %r", event, socket)
            return
        if ack_id is not None:
            self._send_ack(socket, result, ack_id)

    async def _run_handler(self, socket: Socket, event: Any, fn: Callable, args: list, ack_id: int | None) -> None:
        try:
            result = await fn(*args)
        except Exception:
            self.counters["handler_failures"] += 1
            log.exception("handler for %r failed on %r", event, socket)
            return
        if ack_id is not None:
            self._send_ack(socket, result, ack_id)

    def _send_ack(self, socket: Socket, result: Any, ack_id: int) -> None:
        if socket.conn.sockets.get(socket.nsp) is not socket:
            return
        try:
            packets = _encode_ack(socket.nsp, _as_args(result), ack_id)
        except parser.InvalidPacket as exc:
            log.error("cannot acknowledge on %r: %s", socket, exc)
            return
        socket.send_packets(packets)

    def _on_ack(self, socket: Socket, data: list, ack_id: int) -> None:
        acks = socket.acks
        waiter = acks.pop(ack_id, None) if acks else None
        if waiter is None:
            return  # unknown or late ack: ignored, as Node does
        if waiter.callback is not None:
            try:
                result = waiter.callback(*data)
                if inspect.isawaitable(result):
                    self._spawn(_await, result)
            except Exception:
                self.counters["handler_failures"] += 1
                log.exception("ack callback failed on %r", socket)
        else:
            waiter.args = data
            waiter.event.set()

    # ---- lookups -----------------------------------------------------------------------

    def _socket(self, sid: str, namespace: str | None) -> Socket:
        socket = self._sockets.get(sid)
        if socket is None or (namespace is not None and socket.nsp != namespace):
            raise DisconnectedError(f"no connected socket {sid!r}" + (f" in {namespace!r}" if namespace else ""))
        return socket

    def _local_socket(self, room: str, nsp: str) -> Socket | None:
        """The socket whose sid is ``room`` in ``nsp`` (connected, or still connecting: what
        is sent to it then is written after its CONNECT reply)."""
        socket = self._sockets.get(room)
        if socket is not None and socket.nsp == nsp:
            return socket
        return None

    # ---- sending: the python-socketio API ----------------------------------------------

    async def emit(self, event: str, data: Any = None, to: Any = None, room: Any = None, skip_sid: Any = None,
                   namespace: str | None = None, callback: Callable | None = None, *, volatile: bool = False,
                   **_ignored: Any) -> None:
        """Emit ``event`` to one socket (``to=sid``), to rooms (``to=room`` or a list), or to
        the whole namespace; ``skip_sid`` excludes sockets. ``callback(*args)`` receives the
        acknowledgement of a single-socket emit. Checkpoint."""
        nsp = namespace or "/"
        args = [event, *_as_args(data)]
        target = to if to is not None else room
        rooms = frozenset() if target is None else frozenset((target,) if isinstance(target, str) else target)
        skips = frozenset() if skip_sid is None else frozenset((skip_sid,) if isinstance(skip_sid, str) else skip_sid)
        if callback is not None:
            if len(rooms) != 1:
                raise ValueError("a callback needs a single recipient (to=sid)")
            socket = self._socket(next(iter(rooms)), nsp)
            ack_id, _ = socket.add_ack(callback)
            socket.send_packets(_encode_event(nsp, args, ack_id))
            return
        await self._broadcast(nsp, event, args[1:], rooms, skips, volatile=volatile)

    async def send(self, data: Any, to: Any = None, room: Any = None, skip_sid: Any = None,
                   namespace: str | None = None, callback: Callable | None = None, **kwargs: Any) -> None:
        """``emit("message", data, ...)``."""
        await self.emit("message", data, to=to, room=room, skip_sid=skip_sid, namespace=namespace,
                        callback=callback, **kwargs)

    async def call(self, event: str, data: Any = None, to: Any = None, sid: Any = None,
                   namespace: str | None = None, timeout: float = 60, **_ignored: Any) -> Any:
        """Emit to one socket and wait for its acknowledgement: None, its one argument, or a
        tuple of them. Raises ``TimeoutError`` or ``DisconnectedError``. Checkpoint."""
        target = to if to is not None else sid
        socket = self._socket(target, namespace or "/")
        ack_id, waiter = socket.add_ack(None)
        socket.send_packets(_encode_event(socket.nsp, [event, *_as_args(data)], ack_id))
        with trio.move_on_after(timeout):
            await waiter.event.wait()
        if waiter.args is None:
            if socket.acks is not None:
                socket.acks.pop(ack_id, None)
            if not socket.connected:
                raise DisconnectedError(f"{socket.sid} disconnected before acknowledging {event!r}")
            self.counters["acks_timed_out"] += 1
            raise TimeoutError(f"no acknowledgement of {event!r} from {socket.sid} within {timeout} s")
        return _ack_value(waiter.args)

    def to(self, room: str | Iterable[str], namespace: str = "/") -> BroadcastOperator:
        """Node's ``io.to(room)``: a broadcast operator for ``namespace``."""
        return BroadcastOperator(self, namespace).to(room)

    in_ = to

    def except_(self, room: str | Iterable[str], namespace: str = "/") -> BroadcastOperator:
        return BroadcastOperator(self, namespace).except_(room)

    def of(self, namespace: str) -> BroadcastOperator:
        """Every socket of ``namespace`` (chain ``.to``/``.except_``/...)."""
        return BroadcastOperator(self, namespace)

    @property
    def volatile(self) -> BroadcastOperator:
        return BroadcastOperator(self, "/").volatile

    @property
    def local(self) -> BroadcastOperator:
        return BroadcastOperator(self, "/").local

    def timeout(self, seconds: float, namespace: str = "/") -> BroadcastOperator:
        return BroadcastOperator(self, namespace).timeout(seconds)

    # ---- broadcasting ------------------------------------------------------------------

    async def _broadcast(self, nsp: str, event: str, args: list, rooms: frozenset[str], excepts: frozenset[str],
                         *, volatile: bool = False) -> None:
        hub = await self._get_hub()
        self.counters["broadcasts"] += 1
        recovery = self._recovery
        offset = metadata = None
        if recovery is not None and not volatile:
            offset = recovery.new_offset()
            args = [*args, offset]
            metadata = {_OFFSET: offset, _NSP: nsp}
        packets = _encode_event(nsp, [event, *args])
        # A sid is a room (its socket's own group); a local socket is reached directly.
        sid_targets = [s for s in (self._local_socket(r, nsp) for r in rooms) if s is not None]
        room_names = [r for r in rooms if self._local_socket(r, nsp) is None]
        except_sockets = [s for s in (self._local_socket(r, nsp) for r in excepts) if s is not None]
        except_cids = frozenset(s.conn.connection_id for s in except_sockets)
        except_groups = frozenset(room_group(nsp, r) for r in excepts if self._local_socket(r, nsp) is None)
        if rooms and not room_names and len(sid_targets) == 1 and not except_groups:
            socket = sid_targets[0]
            if socket.conn.connection_id not in except_cids:
                if offset is not None:
                    recovery.record(SioPublication(packets, nsp=nsp, group=room_group(nsp, socket.sid),
                                                   metadata=metadata), offset)
                if not volatile or socket.conn.engine.writable:
                    socket.send_packets(packets)
            return
        selects = None
        if len(room_names) == 1 and not sid_targets:
            group = room_group(nsp, room_names[0])
            if except_groups:
                selects = _RoomFilter(frozenset((group,)), frozenset(), except_groups, None)
        elif not rooms:
            group = namespace_group(nsp)
            if except_groups:
                selects = _RoomFilter(frozenset((group,)), frozenset(), except_groups, None)
        else:
            group = None
            selects = _RoomFilter(frozenset(room_group(nsp, r) for r in room_names),
                                  frozenset(s.conn.connection_id for s in sid_targets), except_groups, None)
        publication = SioPublication(packets, nsp=nsp, group=group, excluded=except_cids, filter=selects,
                                     volatile=volatile, metadata=metadata)
        if group is not None:
            await hub.publish(publication)
        else:
            await hub.send_to_all(publication)

    async def _targets(self, nsp: str, rooms: frozenset[str], excepts: frozenset[str]) -> list[Socket]:
        """The local sockets a broadcast with these rooms and excepts reaches."""
        mine = self._by_nsp.get(nsp, {})
        room_groups = frozenset(room_group(nsp, r) for r in rooms)
        except_groups = frozenset(room_group(nsp, r) for r in excepts)
        out = []
        for socket in list(mine.values()):
            if not socket.connected:
                continue
            groups = socket.conn.groups
            if socket.sid in excepts or not except_groups.isdisjoint(groups):
                continue
            if rooms and socket.sid not in rooms and room_groups.isdisjoint(groups):
                continue
            out.append(socket)
        return out

    async def _broadcast_with_ack(self, nsp: str, event: str, args: list, rooms: frozenset[str],
                                  excepts: frozenset[str], timeout: float) -> list:
        targets = await self._targets(nsp, rooms, excepts)
        waiters = []
        for socket in targets:
            try:
                ack_id, waiter = socket.add_ack(None)
            except DisconnectedError:
                continue
            socket.send_packets(_encode_event(nsp, [event, *args], ack_id))
            waiters.append((socket, ack_id, waiter))
        with trio.move_on_after(timeout):
            for _, _, waiter in waiters:
                await waiter.event.wait()
        responses = [_ack_value(w.args) for _, _, w in waiters if w.args is not None]
        missing = [(s, i) for s, i, w in waiters if w.args is None]
        for socket, ack_id in missing:
            if socket.acks is not None:
                socket.acks.pop(ack_id, None)
        if missing:
            self.counters["acks_timed_out"] += len(missing)
            error = TimeoutError(f"{len(missing)} of {len(waiters)} sockets did not acknowledge {event!r} in time")
            error.responses = responses  # type: ignore[attr-defined]
            raise error
        return responses

    # ---- rooms -------------------------------------------------------------------------

    async def enter_room(self, sid: str, room: str | Iterable[str], namespace: str | None = None) -> None:
        """Put a socket in a room (a hub group); a socket on another node too. Checkpoint."""
        names = (room,) if isinstance(room, str) else tuple(room)
        socket = self._sockets.get(sid)
        if socket is None or (namespace is not None and socket.nsp != namespace):
            await self._remote_rooms(sid, namespace or "/", names, join=True)
            return
        for name in names:
            if name == socket.sid:
                continue  # every socket is in its own room already
            await socket.conn.hub.join_group(socket.conn, room_group(socket.nsp, name))

    async def leave_room(self, sid: str, room: str | Iterable[str], namespace: str | None = None) -> None:
        """Take a socket out of a room (not its own); a socket on another node too. Checkpoint."""
        names = (room,) if isinstance(room, str) else tuple(room)
        socket = self._sockets.get(sid)
        if socket is None or (namespace is not None and socket.nsp != namespace):
            await self._remote_rooms(sid, namespace or "/", names, join=False)
            return
        for name in names:
            if name != socket.sid:
                await socket.conn.hub.leave_group(socket.conn, room_group(socket.nsp, name))

    def _selection(self, nsp: str, rooms: frozenset[str], excepts: frozenset[str]) -> _RoomFilter:
        """The connections with a socket a broadcast operator targets (in any of ``rooms``,
        else in ``nsp``; in none of ``excepts``), as a filter that crosses nodes."""
        groups = frozenset(room_group(nsp, r) for r in rooms) or frozenset((namespace_group(nsp),))
        return _RoomFilter(groups, frozenset(), frozenset(room_group(nsp, r) for r in excepts), None)

    async def _rooms_of_targets(self, nsp: str, rooms: frozenset[str], excepts: frozenset[str],
                                room: str | Iterable[str], *, join: bool) -> None:
        names = (room,) if isinstance(room, str) else tuple(room)
        hub = await self._get_hub()
        groups = [room_group(nsp, name) for name in names]
        selects = self._selection(nsp, rooms, excepts)
        if join:
            await hub.add_connections_to_groups(groups, selects)
        else:
            await hub.remove_connections_from_groups(groups, selects)

    async def _remote_rooms(self, sid: str, nsp: str, names: Iterable[str], *, join: bool) -> None:
        """Rooms of a socket this node does not hold: its connection is the member of its own
        room's group wherever it lives, and the hub joins or removes that connection there.
        Raises ``DisconnectedError`` if no node has the socket."""
        hub = await self._get_hub()
        members = await hub.group_members(room_group(nsp, sid))
        if not members:
            raise DisconnectedError(f"no connected socket {sid!r} in {nsp!r}")
        for cid, _user in members:
            for name in names:
                if name == sid:
                    continue
                if join:
                    await hub.add_to_group(cid, room_group(nsp, name))
                else:
                    await hub.remove_from_group(cid, room_group(nsp, name))

    async def close_room(self, room: str, namespace: str | None = None) -> None:
        """Take every socket out of ``room``."""
        nsp = namespace or "/"
        hub = await self._get_hub()
        group = room_group(nsp, room)
        for cid, _user in await hub.group_members(group):
            await hub.remove_from_group(cid, group)

    def rooms(self, sid: str, namespace: str | None = None) -> list[str]:
        """The rooms of a socket, its own (the sid) first. No checkpoint."""
        socket = self._socket(sid, namespace)
        out = [socket.sid]
        prefix = namespace_group(socket.nsp)
        for group in socket.conn.groups:
            if group.startswith(prefix) and group != prefix:
                parsed = parse_group(group)
                if parsed is not None and parsed[1] is not None and parsed[1] != socket.sid:
                    out.append(parsed[1])
        return out

    # ---- sessions and lifecycle --------------------------------------------------------

    async def get_session(self, sid: str, namespace: str | None = None) -> dict:
        return self._socket(sid, namespace).session

    async def save_session(self, sid: str, session: dict, namespace: str | None = None) -> None:
        self._socket(sid, namespace).session = session

    @contextlib.asynccontextmanager
    async def session(self, sid: str, namespace: str | None = None) -> AsyncIterator[dict]:
        """``async with sio.session(sid) as session:`` edits the socket's session in place."""
        socket = self._socket(sid, namespace)
        yield socket.session

    async def disconnect(self, sid: str, namespace: str | None = None, *, close: bool = False,
                         **_ignored: Any) -> None:
        """Disconnect a socket (the client gets ``41``; reason ``server namespace disconnect``).
        ``close=True`` closes its whole Engine.IO connection too. Checkpoint."""
        socket = self._sockets.get(sid)
        if socket is None or (namespace is not None and socket.nsp != namespace):
            # Maybe on another node: a DISCONNECT packet to its own room ends it there too
            # (``formats.DISCONNECTS``), as a REST send of one does.
            nsp = namespace or "/"
            body = join_segments((_control(parser.PacketType.DISCONNECT, nsp),))
            hub = await self._get_hub()
            await hub.publish(Publication("group", Payload(DataType.TEXT, body), group=room_group(nsp, sid)))
            return
        self._close_socket(socket, Reason.SERVER_DISCONNECT, send=True)
        if close:
            socket.conn.engine.close(CloseReason.FORCED_SERVER_CLOSE)
        await trio.lowlevel.checkpoint()

    def transport(self, sid: str, namespace: str | None = None) -> str:
        """``"polling"`` or ``"websocket"``."""
        return self._socket(sid, namespace).conn.engine.transport

    def get_environ(self, sid: str, namespace: str | None = None) -> dict:
        return self._socket(sid, namespace).conn.environ

    def connection_id(self, sid: str, namespace: str | None = None) -> str:
        """The hub connection id (the Engine.IO sid) of a socket, for the service API."""
        return self._socket(sid, namespace).conn.connection_id

    def recovered(self, sid: str, namespace: str | None = None) -> bool:
        """True if the socket was restored by connection-state recovery."""
        return self._socket(sid, namespace).recovered

    def sids(self, namespace: str = "/") -> list[str]:
        """The connected sockets of a namespace (this process)."""
        return [sid for sid, s in self._by_nsp.get(namespace, {}).items() if s.connected]

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)

    def start_background_task(self, fn: Callable, *args: Any) -> None:
        """Run ``await fn(*args)`` in the server's handler nursery."""
        self._spawn(fn, *args)

    def statistics(self) -> dict:
        return {
            "sockets": len(self._sockets), "namespaces": {n: len(s) for n, s in self._by_nsp.items()},
            "counters": self.counters.as_dict(),
            "recovery": None if self._recovery is None else {
                "packets": len(self._recovery.packets), "sessions": len(self._recovery.sessions)},
        }


async def _await(awaitable: Any) -> None:
    await awaitable


def _environ(request: "Request") -> dict:
    """A WSGI-style environ for handlers (what python-socketio passes)."""
    path, _, query = request.target.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method, "PATH_INFO": request.path, "QUERY_STRING": query,
        "RAW_URI": request.target, "fabric.request": request,
    }
    for name, value in request.headers:
        key = "HTTP_" + name.upper().replace("-", "_")
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


class _SioApp:
    """The Engine.IO app of one Socket.IO endpoint: connections become hub members."""

    def __init__(self, server: Server, identify: Callable[["Request"], Any] | None) -> None:
        self.server = server
        #: ``identify(request) -> (user_id, roles, groups, identity)``; None: anonymous.
        self.identify = identify

    async def on_open(self, conn: EngineConnection, request: "Request") -> None:
        server = self.server
        hub = await server._get_hub()
        user_id, roles, groups, identity = (None, (), (), None)
        if self.identify is not None:
            user_id, roles, groups, identity = self.identify(request)
        member = SioConnection(server, hub, conn, user_id=user_id, roles=roles, groups=groups, identity=identity)
        conn.app_state = member
        server.counters["connections"] += 1
        conn.app_deadline = trio.current_time() + server.connect_timeout
        server._start_member(hub, member)

    async def on_task_start(self, conn: EngineConnection) -> None:
        await conn.app_state._setup()

    async def on_task_end(self, conn: EngineConnection) -> None:
        try:
            await conn.app_state._teardown()
        finally:
            # The engine connection and ours refer to each other (``app_state``, ``engine``):
            # undone when the connection's task ends, so both are freed by reference counting
            # at once rather than by a full garbage collection later. Every reader of
            # ``app_state`` treats None as "no connection".
            conn.app_state = None

    async def on_message(self, conn: EngineConnection, data: str | bytes) -> None:
        member = conn.app_state
        if member is not None:
            await member.on_message(data)

    def on_close(self, conn: EngineConnection, reason: CloseReason, description: str) -> None:
        member = conn.app_state
        if member is None:
            return
        for socket in list(member.sockets.values()):
            self.server._close_socket(socket, reason.value)

    def on_deadline(self, conn: EngineConnection) -> None:
        member = conn.app_state
        if member is not None and not any(s.connected for s in member.sockets.values()):
            self.server.counters["connect_timeouts"] += 1
            conn.close(CloseReason.FORCED_SERVER_CLOSE)
