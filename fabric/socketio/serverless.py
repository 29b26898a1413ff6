"""Azure's Socket.IO serverless mode: sockets served by the hub's upstream event handlers.

With ``[hubs.NAME.socketio] service_mode = "serverless"`` (Azure's ``socketIO.serviceMode``;
reference: socketio-protocol.md §d.8, Microsoft's "Socket.IO Serverless Mode Specification")
the fabric keeps the Engine.IO and Socket.IO protocols and the app keeps the logic, behind the
hub's ``EventHandler`` (``fabric.core.events``: in-process, or the webhook client built from the
hub's ``event_handlers``; this edge never imports the webhook client):

- A namespace CONNECT is the ``connect`` event (blocking, bounded by ``upstream_timeout``):
  accepted unless the handler refuses (``ConnectRejected``, a 4xx/5xx answer), which the client
  gets as ``44{"message": ...}``. Then the socket joins its namespace's group and *its own
  group* ``0~b64(nsp)~b64(sid)``, and ``connected`` is notified.
- Every EVENT is a user event named after the Socket.IO event, carrying the packet as an
  Engine.IO payload (``text/plain``; binary attachments as ``b<base64>`` segments). The
  handler's answer, an Engine.IO payload too (an ACK, usually), goes to the client unchanged;
  nothing (204) sends nothing. One socket's events reach the handler one at a time, in order.
- A socket that goes (its DISCONNECT, a server disconnect, its connection's end) leaves its
  rooms and is notified ``disconnected`` with a reason: empty for a normal close, Socket.IO's
  reason otherwise (``ping timeout``, ``transport error``, ...).
- The app drives rooms and emits with the REST API: ``:addToGroups``/``:removeFromGroups`` with
  the filter ``'0~<nsp>~<b64 sid>' in groups`` (true of exactly that socket's connection,
  because the socket is in its own group), and group sends of Engine.IO payloads to a room, a
  namespace or a socket group. A ``41/nsp,`` in such a payload disconnects that socket here too
  (``formats.DISCONNECTS``).

Every event's context is a ``SocketContext`` (a ``ConnectionContext`` with ``namespace`` and
``socket_id``; ``extensions`` holds them under Azure's CloudEvents names, ``namespace`` and
``socketId``); connect gets a ``SocketConnectRequest`` with the same plus the CONNECT payload
(``auth``). An in-process handler reads them directly; the webhook client writes
``extensions`` as ``ce-namespace`` and ``ce-socketId``. One difference from Azure remains: a
user event's ``ce-type`` is ``azure.webpubsub.user.<event>`` (Azure:
``azure.webpubsub.user.message``, the event name only in ``ce-eventName``), which the webhook
client derives from the event name.

A socket's own group is the same in every mode: an inline hub group (no actor), joined by
``server.py`` when the CONNECT succeeds.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping

import attrs

from fabric.core.events import (
    ConnectionContext,
    ConnectRejected,
    ConnectRequest,
    call_connect,
    call_user_event,
    handles_system_event,
)
from fabric.core.payload import DataType, Payload
from fabric.socketio import parser
from fabric.socketio.eio_packets import join_segments
from fabric.socketio.formats import packets_of, parse_payload

if TYPE_CHECKING:
    from fabric.socketio.server import Server, SioConnection, Socket

log = logging.getLogger(__name__)

__all__ = ["SocketConnectRequest", "SocketContext", "azure_reason", "connect", "disconnected", "event"]

SUBPROTOCOL = "socket.io"

#: Disconnect reasons Azure reports as a normal close (an empty ``reason``).
_NORMAL = frozenset({"client namespace disconnect", "server namespace disconnect", "transport close",
                     "forced close"})


@attrs.frozen
class SocketContext(ConnectionContext):
    """The context of one socket's event: its connection's, plus the socket."""

    namespace: str = "/"
    socket_id: str = ""

    @property
    def extensions(self) -> Mapping[str, str]:
        """The CloudEvents extension attributes of this socket's events (``ce-<name>``)."""
        return {"namespace": self.namespace, "socketId": self.socket_id}


@attrs.frozen
class SocketConnectRequest(ConnectRequest):
    """A socket's ``connect`` event: the Engine.IO handshake's claims, query and headers, the
    socket, and its CONNECT payload (``auth``, ``{}`` when it sent none)."""

    namespace: str = "/"
    socket_id: str = ""
    auth: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def extensions(self) -> Mapping[str, str]:
        return {"namespace": self.namespace, "socketId": self.socket_id}


class _Notice:
    """What ``Hub.notify`` needs of a member: the context of the event."""

    __slots__ = ("context",)

    def __init__(self, context: SocketContext) -> None:
        self.context = context


def context_of(socket: "Socket") -> SocketContext:
    conn = socket.conn
    return SocketContext(hub=conn.hub.name, connection_id=conn.connection_id, user_id=conn.user_id,
                         subprotocol=SUBPROTOCOL, namespace=socket.nsp, socket_id=socket.sid)


def azure_reason(reason: str) -> str:
    """The ``disconnected`` event's reason: empty for a normal close (Azure's rule)."""
    return "" if reason in _NORMAL else reason


def _header_map(request: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in request.headers:
        if name != "authorization":
            out.setdefault(name, []).append(value)
    return out


async def connect(server: "Server", conn: "SioConnection", socket: "Socket", auth: dict) -> str | None:
    """Run the socket's ``connect`` event. None: accepted; else the refusal's message.
    Checkpoint."""
    hub = conn.hub
    handler = hub.handler
    if not handles_system_event(handler, "connect"):
        return None
    request = conn.engine.request
    identity = conn.identity
    connect_request = SocketConnectRequest(
        hub=hub.name, connection_id=conn.connection_id, user_id=conn.user_id,
        claims=dict(identity.claims) if identity is not None else {},
        query={k: v for k, v in request.query.items() if k != "access_token"},
        headers=_header_map(request), subprotocols=(), roles=tuple(conn._roles), groups=(),
        namespace=socket.nsp, socket_id=socket.sid, auth=dict(auth),
    )
    try:
        await call_connect(handler, connect_request, timeout=hub.server_config.upstream_timeout)
    except ConnectRejected as exc:
        server.counters["upstream_refusals"] += 1
        return exc.message or "Connection rejected by server"
    return None


def connected(socket: "Socket") -> None:
    """Notify ``connected`` (no checkpoint; the hub's notifier runs it)."""
    socket.conn.hub.notify("connected", _Notice(context_of(socket)))


def disconnected(socket: "Socket", reason: str) -> None:
    """Notify ``disconnected`` (no checkpoint)."""
    socket.conn.hub.notify("disconnected", _Notice(context_of(socket)), azure_reason(reason))


def event_payload(nsp: str, data: list, ack_id: int | None) -> bytes:
    """The Engine.IO payload of an EVENT (what the client sent, re-encoded)."""
    header, attachments = parser.encode(parser.Packet(parser.PacketType.EVENT, nsp, data, ack_id))
    return join_segments(packets_of(header, attachments))


async def event(server: "Server", socket: "Socket", data: list, ack_id: int | None) -> None:
    """One EVENT through the hub's handler; its answer to the client. Checkpoint."""
    conn = socket.conn
    hub = conn.hub
    handler = hub.handler
    name = data[0] if isinstance(data[0], str) else str(data[0])
    check = getattr(handler, "handles_user_event", None)
    if handler is None or (check is not None and not check(name)):
        server.counters["unhandled_events"] += 1
        return
    body = event_payload(socket.nsp, data, ack_id)
    outcome = await call_user_event(handler, context_of(socket), name, Payload(DataType.TEXT, body),
                                    timeout=hub.server_config.upstream_timeout)
    if outcome.error is not None:
        server.counters["handler_failures"] += 1
        log.info("hub %r: the event handler failed for %r of socket %s: %s: %s", hub.name, name, socket.sid,
                 outcome.error.name, outcome.error.message)
        return
    reply = outcome.reply
    if reply is None or not reply.body or conn.sockets.get(socket.nsp) is not socket:
        return
    packets = parse_payload(reply.body)
    if not packets:
        server.counters["invalid_replies"] += 1
        log.warning("hub %r: the event handler answered %r for socket %s with something that is not an "
                    "Engine.IO payload of Socket.IO packets; nothing sent", hub.name, name, socket.sid)
        return
    socket.send_packets(packets)
