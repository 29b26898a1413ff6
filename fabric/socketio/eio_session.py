"""One Engine.IO v4 server session as a sans-IO state machine.

The trio adapter owns sockets, HTTP requests and the clock; this object owns the rules. The
adapter calls a method for each thing that happens (a frame arrived, a GET came in, a POST
body was read, time passed) and does what the answer says (write these bytes, answer this
HTTP reply, park this GET, close that WebSocket). Events (``MessageReceived``,
``SessionClosed``, ``Upgraded``, ``UpgradeAborted``) are returned, never called back.

Rules this module keeps (reference: socketio-protocol.md §a.3-§a.9; engine.io ``socket.ts``
and ``transports/polling.ts``; the official Engine.IO v4 suite):
- Handshake JSON has exactly the keys ``sid, upgrades, pingInterval, pingTimeout,
  maxPayload`` in that order, times in integer milliseconds; ``upgrades`` is
  ``["websocket"]`` for a polling session (when upgrades are allowed), ``[]`` otherwise.
- Heartbeat is server-driven and given as data: a ping is due ``pingInterval`` after the
  open and after each pong; a pong is overdue ``pingTimeout`` after the ping was queued
  (even if no GET has carried it yet). ``next_deadline()`` says when to call ``tick(now)``.
  A ping from the client is a protocol error (``"transport error"``).
- Polling: one GET and one POST at a time. A GET is answered at once with everything
  queued, or parked until something is queued. A second GET while one is parked closes the
  session (``"transport error"``): the second gets 400 and the parked one ``1``. A GET whose
  client went away closes it too. A POST ``application/octet-stream`` body is refused (400,
  closed); a body above ``max_payload`` gets 413 and the session stays; a POST answers
  ``200 text/html ok``. A ``1`` packet from the client answers a parked GET with ``6`` and
  closes (``"transport close"``); so does a ``1`` over WebSocket (Node ignores it there).
- Any other close while a GET is parked answers it with ``1``. A server close of a polling
  session without a parked GET waits up to ``close_timeout`` for one to carry ``1`` after
  the queued packets.
- Upgrade: a probe WebSocket answers ``2probe`` with ``3probe`` and from then on a GET is
  never parked (it gets ``6``, Node's noop, if nothing is queued); ``5`` switches the
  session to the WebSocket (``Upgraded``; a parked GET gets ``6``; the queue then flows on
  the WebSocket, nothing is written before it). Anything else on the probe, its close, or
  ``upgrade_timeout`` aborts the upgrade and the session stays on polling.
- Closing: ``SessionClosed`` is returned exactly once, with one of ``CloseReason``. After
  it the session yields no events and no data except a final parked-GET reply or the last
  WebSocket batch (only a server ``close()`` keeps the queue for that; every other reason
  discards it); requests still reaching it get 400 ``Session ID unknown``.
- The outgoing queue is bounded in packets and bytes; ``send`` never grows past the bounds
  and returns ``OVERFLOW`` instead (the caller applies its slow-consumer policy). Control
  packets (open, ping) are always queued: they take a place in the count but no bytes.
- Polling requests apply the heartbeat deadlines themselves before answering, so a GET
  arriving just after a ping fell due gets the ping, and one arriving after the pong
  deadline gets 400, whatever the adapter's timer precision. The pong deadline counts from
  when the ping fell due when no GET was parked to carry it (the client could not have
  seen it earlier on a punctual server either), from when it was queued otherwise.
- No clock, no I/O, no trio: ``now`` is passed in (seconds, any monotonic origin).
"""

from __future__ import annotations

import enum
import math
import secrets
from dataclasses import dataclass
from typing import NamedTuple

import msgspec

from fabric.socketio.eio_packets import (
    EncodedPacket,
    PacketDecodeError,
    PacketType,
    decode_text,
    iter_payload,
    join_segments,
)
from fabric.socketio.eio_requests import ErrorCode, RequestRejected

__all__ = [
    "NOOP_REPLY",
    "POLLING_HEADERS",
    "CloseReason",
    "EngineConfig",
    "HttpReply",
    "MessageReceived",
    "ProbeOutcome",
    "SendResult",
    "Session",
    "SessionClosed",
    "SessionMisuse",
    "SessionState",
    "UpgradeAborted",
    "Upgraded",
    "generate_sid",
]

_INF = math.inf

#: Headers Node adds to every polling reply (GET and POST); the adapter adds them too.
POLLING_HEADERS = (("cache-control", "no-store"),)

_PING = EncodedPacket(True, b"2")
_PONG_PROBE = EncodedPacket(True, b"3probe")
_NOOP_BODY = b"6"
_CLOSE_BODY = b"1"
_CLOSE_SEGMENT = b"\x1e1"
_TEXT_PLAIN = "text/plain; charset=UTF-8"
_TEXT_HTML = "text/html"
_JSON = "application/json"


def generate_sid() -> str:
    """A fresh session id: 15 random bytes, base64url (20 characters), like Node's base64id."""
    return secrets.token_urlsafe(15)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Engine.IO server options (Node's names in the comments; times in milliseconds)."""

    ping_interval_ms: int = 25_000  # pingInterval
    ping_timeout_ms: int = 20_000  # pingTimeout
    upgrade_timeout_ms: int = 10_000  # upgradeTimeout
    max_payload: int = 1_000_000  # maxHttpBufferSize, advertised as maxPayload
    close_timeout_ms: int = 30_000  # polling closeTimeout
    allow_upgrades: bool = True  # allowUpgrades
    transports: tuple[str, ...] = ("polling", "websocket")
    max_queue_packets: int = 1024
    max_queue_bytes: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("ping_interval_ms", "ping_timeout_ms", "upgrade_timeout_ms", "close_timeout_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_payload < 1 or self.max_queue_packets < 1 or self.max_queue_bytes < 1:
            raise ValueError("max_payload and queue bounds must be positive")


class SessionState(enum.Enum):
    """OPENING until the open packet has been handed to a transport; UPGRADING while a
    probe WebSocket is attached; CLOSING while a server close waits for a GET to carry
    ``1``; CLOSED after ``SessionClosed``."""

    OPENING = "opening"
    OPEN = "open"
    UPGRADING = "upgrading"
    CLOSING = "closing"
    CLOSED = "closed"


class CloseReason(str, enum.Enum):
    """Why a session closed (Node's ``close`` event reasons; the last two are Socket.IO's)."""

    TRANSPORT_CLOSE = "transport close"
    TRANSPORT_ERROR = "transport error"
    PING_TIMEOUT = "ping timeout"
    PARSE_ERROR = "parse error"
    FORCED_CLOSE = "forced close"
    FORCED_SERVER_CLOSE = "forced server close"
    SERVER_SHUTTING_DOWN = "server shutting down"


class SendResult(enum.Enum):
    """The outcome of ``Session.send``."""

    QUEUED = "queued"  # queued; nothing to wake
    WAKE = "wake"  # queued; the writer / parked GET may be waiting: wake it
    OVERFLOW = "overflow"  # not queued: a bound would be exceeded (slow consumer)
    CLOSED = "closed"  # not queued: the session is closing or closed


# =========================================================================== events


class MessageReceived(NamedTuple):
    """A ``message`` packet from the client: ``str`` for text, ``bytes`` for binary."""

    data: str | bytes


class SessionClosed(NamedTuple):
    """The session is over: close every transport of it (probe included) and forget the sid."""

    reason: CloseReason
    description: str = ""


class Upgraded(NamedTuple):
    """The probe WebSocket is now the session's transport; polling is discarded."""


class UpgradeAborted(NamedTuple):
    """The upgrade failed: close the probe WebSocket; the session stays on polling."""

    description: str


Event = MessageReceived | SessionClosed | Upgraded | UpgradeAborted


class HttpReply(NamedTuple):
    """An HTTP answer to write: ``status``, ``content_type`` (``None``: no body),
    ``body``, and the events the request caused (in order)."""

    status: int
    content_type: str | None
    body: bytes
    events: tuple[Event, ...] = ()


#: The answer to a polling GET that only says "nothing for you" (Node's noop, ``6``).
NOOP_REPLY = HttpReply(200, _TEXT_PLAIN, _NOOP_BODY)


class ProbeOutcome(NamedTuple):
    """What to do after a probe frame: send ``reply`` on the probe WebSocket if set, handle
    ``events``, and close the probe WebSocket if ``close_probe``."""

    reply: EncodedPacket | None
    events: tuple[Event, ...]
    close_probe: bool


class SessionMisuse(RuntimeError):
    """The adapter called a method that does not apply (e.g. a GET on a WebSocket session)."""


_OK = b"ok"
_UNKNOWN_SID = RequestRejected(ErrorCode.UNKNOWN_SID)
_BAD_REQUEST = RequestRejected(ErrorCode.BAD_REQUEST)
_NO_EVENTS: tuple = ()


def _error_reply(rejected: RequestRejected, events: tuple = ()) -> HttpReply:
    return HttpReply(rejected.http_status, _JSON, rejected.http_body(), events)


class Session:
    """One Engine.IO session (``sid``) from handshake to close; see the module rules.

    Create it when ``route_request`` says ``OPEN_POLLING`` / ``OPEN_WEBSOCKET``; the open
    packet is queued at once (a polling handshake then answers with ``begin_get``, a
    WebSocket one writes ``take_ws_batch()``). Public read-only attributes: ``sid``,
    ``config``, ``transport`` (``"polling"`` or ``"websocket"``; changes on ``Upgraded``),
    ``state``, ``close_reason`` (after ``SessionClosed``).
    """

    __slots__ = (
        "_close_deadline",
        "_final_get",
        "_get_parked",
        "_interval",
        "_next_ping",
        "_pong_deadline",
        "_post_pending",
        "_probed",
        "_qbytes",
        "_queue",
        "_timeout",
        "_upgrade_deadline",
        "close_reason",
        "config",
        "sid",
        "state",
        "transport",
    )

    def __init__(self, sid: str, config: EngineConfig, transport: str, now: float) -> None:
        if transport not in ("polling", "websocket"):
            raise ValueError(f"unknown transport {transport!r}")
        self.sid = sid
        self.config = config
        self.transport = transport
        self.state = SessionState.OPENING
        self.close_reason: CloseReason | None = None
        self._interval = config.ping_interval_ms / 1000
        self._timeout = config.ping_timeout_ms / 1000
        self._next_ping = now + self._interval
        self._pong_deadline = _INF
        self._upgrade_deadline = _INF
        self._close_deadline = _INF
        self._get_parked = False
        self._final_get: bytes | None = None
        self._post_pending = False
        self._probed = False
        self._queue: list[EncodedPacket] = [EncodedPacket(True, b"0" + self.handshake_json())]
        self._qbytes = 0

    # ------------------------------------------------------------------ introspection

    def handshake_json(self) -> bytes:
        """The open packet's JSON (after the ``0``)."""
        c = self.config
        upgrades = (
            ["websocket"]
            if self.transport == "polling" and c.allow_upgrades and "websocket" in c.transports
            else []
        )
        return msgspec.json.encode({
            "sid": self.sid,
            "upgrades": upgrades,
            "pingInterval": c.ping_interval_ms,
            "pingTimeout": c.ping_timeout_ms,
            "maxPayload": c.max_payload,
        })

    @property
    def accepts_probe(self) -> bool:
        """A WebSocket with this sid may start an upgrade now (else: accept and close it)."""
        return (
            self.transport == "polling"
            and self.state in (SessionState.OPENING, SessionState.OPEN)
            and self.config.allow_upgrades
            and "websocket" in self.config.transports
        )

    @property
    def queued(self) -> int:
        """Packets waiting for a transport."""
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        """Bytes of data packets waiting (control packets are not counted)."""
        return self._qbytes

    @property
    def get_parked(self) -> bool:
        """A polling GET is parked, waiting for something to carry."""
        return self._get_parked

    @property
    def get_ready(self) -> bool:
        """A parked GET can be answered now (``take_get_reply`` returns a reply)."""
        return self._get_parked and (
            self._final_get is not None
            or self.state is SessionState.CLOSING
            or (self.transport == "polling" and (bool(self._queue) or self._probed))
        )

    @property
    def wants_write(self) -> bool:
        """Something can be written now: WebSocket packets queued, or ``get_ready``."""
        if self.transport == "websocket" and self._queue:
            return True
        return self.get_ready

    def next_deadline(self) -> float:
        """The earliest ``now`` at which ``tick`` has something to do (``inf``: nothing)."""
        if self.state is SessionState.CLOSED:
            return _INF
        return min(self._next_ping, self._pong_deadline, self._upgrade_deadline, self._close_deadline)

    # ------------------------------------------------------------------ sending

    def send(self, packet: EncodedPacket) -> SendResult:
        """Queue a data packet for the client (usually a ``message``); see ``SendResult``.
        On a polling session a text packet containing U+001E raises ``PacketEncodeError``
        (it cannot be framed; it could go over a WebSocket only)."""
        state = self.state
        if state is SessionState.CLOSING or state is SessionState.CLOSED:
            return SendResult.CLOSED
        q = self._queue
        n = len(packet.ws)
        if len(q) >= self.config.max_queue_packets or self._qbytes + n > self.config.max_queue_bytes:
            return SendResult.OVERFLOW
        if self.transport == "websocket":
            q.append(packet)
            self._qbytes += n
            return SendResult.WAKE if len(q) == 1 else SendResult.QUEUED
        packet.segment  # noqa: B018 - raises for an unframeable packet; cached for the GET
        q.append(packet)
        self._qbytes += n
        return SendResult.WAKE if self._get_parked else SendResult.QUEUED

    def _take_queue(self) -> list[EncodedPacket]:
        q = self._queue
        self._queue = []
        self._qbytes = 0
        if self.state is SessionState.OPENING:
            self.state = SessionState.OPEN
        return q

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> tuple[Event, ...]:
        """Apply every deadline reached at ``now``: queue a due ping (then check
        ``wants_write``), close on an overdue pong or an expired close wait, abort an
        upgrade that took too long."""
        state = self.state
        if state is SessionState.CLOSED:
            return _NO_EVENTS
        if state is SessionState.CLOSING:
            if now >= self._close_deadline:
                return (self._finish(self.close_reason or CloseReason.FORCED_CLOSE, "close timeout"),)
            return _NO_EVENTS
        events: list[Event] = []
        if now >= self._upgrade_deadline:
            events.append(self._abort_upgrade("upgrade timeout"))
        events.extend(self._heartbeat(now))
        return tuple(events)

    def _heartbeat(self, now: float) -> tuple[Event, ...]:
        """Close on an overdue pong, or queue a due ping (only when OPENING/OPEN/UPGRADING)."""
        state = self.state
        if state is SessionState.CLOSED or state is SessionState.CLOSING:
            return _NO_EVENTS
        if now >= self._pong_deadline:
            return (self._close(CloseReason.PING_TIMEOUT, ""),)
        if now >= self._next_ping:
            self._queue.append(_PING)
            if self.transport == "websocket" or self._get_parked:
                # Written now: the client gets its full pingTimeout from now, even if this
                # tick came late (a loaded loop must not cut a healthy client's time).
                self._pong_deadline = now + self._timeout
            else:
                # Polling with no GET parked: the client sees the ping only when it polls,
                # so the clock runs from when the ping fell due, as on a punctual server
                # (Node: setTimeout at the ping). A GET arriving past that closes at once.
                self._pong_deadline = self._next_ping + self._timeout
            self._next_ping = _INF
            if now >= self._pong_deadline:
                return (self._close(CloseReason.PING_TIMEOUT, ""),)
        return _NO_EVENTS

    def _on_pong(self, now: float) -> None:
        self._pong_deadline = _INF
        self._next_ping = now + self._interval

    # ------------------------------------------------------------------ closing

    def close(self, now: float, reason: CloseReason = CloseReason.FORCED_CLOSE) -> tuple[Event, ...]:
        """Close from the server side. Queued packets still go out: a WebSocket adapter
        takes the last batch after ``SessionClosed`` and then closes the socket; a polling
        session ends once a GET has carried ``1`` (at once if one is parked; else it is
        CLOSING until a GET comes or ``close_timeout`` passes)."""
        state = self.state
        if state is SessionState.CLOSED or state is SessionState.CLOSING:
            return _NO_EVENTS
        events: list[Event] = []
        if state is SessionState.UPGRADING:
            events.append(self._abort_upgrade("session closed"))
        if self.transport == "websocket":
            events.append(self._finish(reason, "", keep_queue=True))
        elif self._get_parked:
            self._final_get = self._body_with_close()
            events.append(self._finish(reason, ""))
        else:
            self.state = SessionState.CLOSING
            self.close_reason = reason
            self._next_ping = self._pong_deadline = _INF
            self._close_deadline = now + self.config.close_timeout_ms / 1000
        return tuple(events)

    def _body_with_close(self) -> bytes:
        q = self._take_queue()
        return join_segments(q) + _CLOSE_SEGMENT if q else _CLOSE_BODY

    def _close(self, reason: CloseReason, description: str, get_body: bytes = _CLOSE_BODY) -> SessionClosed:
        """Close at once (errors, timeouts, client close): the queue is discarded and a
        parked GET is answered with ``get_body``."""
        if self._get_parked and self._final_get is None:
            self._final_get = get_body
        self._queue = []
        self._qbytes = 0
        return self._finish(reason, description)

    def _finish(self, reason: CloseReason, description: str, keep_queue: bool = False) -> SessionClosed:
        if not keep_queue and self.state is SessionState.CLOSING:
            self._queue = []
            self._qbytes = 0
        self.state = SessionState.CLOSED
        self.close_reason = reason
        self._next_ping = self._pong_deadline = self._upgrade_deadline = self._close_deadline = _INF
        self._probed = False
        return SessionClosed(reason, description)

    # ------------------------------------------------------------------ inbound packets

    def _on_packet(self, ptype: PacketType, data: str | bytes, now: float) -> Event | None:
        """Apply one decoded packet from the active transport (state is OPENING/OPEN/UPGRADING)."""
        if ptype is PacketType.MESSAGE:
            return MessageReceived(data)
        if ptype is PacketType.PONG:
            self._on_pong(now)
            return None
        if ptype is PacketType.PING:
            return self._close(CloseReason.TRANSPORT_ERROR, "invalid heartbeat direction")
        if ptype is PacketType.CLOSE:
            return self._close(CloseReason.TRANSPORT_CLOSE, "close packet from client", _NOOP_BODY)
        return None  # open, upgrade, noop on the active transport: ignored, as Node does

    # ------------------------------------------------------------------ WebSocket transport

    def take_ws_batch(self) -> list[EncodedPacket]:
        """Everything queued, in order, for the WebSocket writer (one frame per packet)."""
        if self.transport != "websocket":
            raise SessionMisuse("take_ws_batch on a polling session")
        return self._take_queue() if self._queue else []

    def receive_ws(self, data: str | bytes | bytearray | memoryview, now: float) -> Event | None:
        """One WebSocket message on the session's own WebSocket (``str`` = text frame).
        Returns ``MessageReceived``, ``SessionClosed`` or ``None`` (one packet, one event)."""
        state = self.state
        if state is SessionState.CLOSED or state is SessionState.CLOSING:
            return None
        if self.transport != "websocket":
            raise SessionMisuse("receive_ws on a polling session (use receive_probe)")
        if not isinstance(data, str):
            return MessageReceived(bytes(data))
        if data[:1] == "4":
            return MessageReceived(data[1:])
        try:
            ptype, payload = decode_text(data)
        except PacketDecodeError as exc:
            return self._close(CloseReason.PARSE_ERROR, str(exc))
        return self._on_packet(ptype, payload, now)

    def ws_closed(self, now: float, *, error: bool = False) -> SessionClosed | None:
        """The session's WebSocket is gone (close frame, EOF, or a transport ``error``)."""
        if self.state is SessionState.CLOSED:
            return None
        if self.transport != "websocket":
            raise SessionMisuse("ws_closed on a polling session (use probe_closed)")
        if error:
            return self._close(CloseReason.TRANSPORT_ERROR, "websocket error")
        return self._close(CloseReason.TRANSPORT_CLOSE, "websocket closed")

    # ------------------------------------------------------------------ polling: GET

    def begin_get(self, now: float) -> HttpReply | None:
        """A polling GET arrived. Returns the reply to write now, or ``None``: park the GET
        until ``wants_write`` and then answer it with ``take_get_reply()``."""
        due = self._heartbeat(now)  # a late timer must not change the answer
        if self.state is SessionState.CLOSED:
            return _error_reply(_UNKNOWN_SID, due)
        if self.transport != "polling":
            return _error_reply(RequestRejected(ErrorCode.BAD_REQUEST, context="TRANSPORT_MISMATCH"))
        if self._get_parked:
            closed = self._close(CloseReason.TRANSPORT_ERROR, "overlap from client")
            return _error_reply(_BAD_REQUEST, (closed,))
        self._get_parked = True
        return self.take_get_reply()

    def take_get_reply(self) -> HttpReply | None:
        """The reply for the parked GET if it can be answered now (then it is no longer
        parked), else ``None`` (keep waiting)."""
        if not self._get_parked:
            return None
        body = self._final_get
        events: tuple[Event, ...] = _NO_EVENTS
        if body is not None:
            self._final_get = None
        elif self.state is SessionState.CLOSING:
            body = self._body_with_close()
            events = (self._finish(self.close_reason or CloseReason.FORCED_CLOSE, ""),)
        elif self.transport != "polling":
            return None
        elif self._queue:
            body = join_segments(self._take_queue())
        elif self._probed:
            body = _NOOP_BODY
        else:
            return None
        self._get_parked = False
        return HttpReply(200, _TEXT_PLAIN, body, events)

    def get_aborted(self, now: float) -> SessionClosed | None:
        """The parked GET's client went away before it was answered: the session closes
        (``"transport error"``), as Node's "poll connection closed prematurely"."""
        if not self._get_parked:
            return None
        self._get_parked = False
        self._final_get = None
        if self.state is SessionState.CLOSED:
            return None
        return self._close(CloseReason.TRANSPORT_ERROR, "poll connection closed prematurely")

    # ------------------------------------------------------------------ polling: POST

    def begin_post(self, content_type: str | None, now: float) -> HttpReply | None:
        """A polling POST arrived (headers only). Returns a reply to write now (refused),
        or ``None``: read the body, at most ``config.max_payload`` bytes, then call
        ``end_post`` (or ``post_too_large`` / ``post_aborted``)."""
        due = self._heartbeat(now)
        if self.state is SessionState.CLOSED:
            return _error_reply(_UNKNOWN_SID, due)
        if self._post_pending:
            closed = self._close(CloseReason.TRANSPORT_ERROR, "data request overlap from client")
            return _error_reply(_BAD_REQUEST, (closed,))
        if content_type is not None:
            media = content_type.partition(";")[0].strip().lower()
            if media == "application/octet-stream":
                closed = self._close(CloseReason.TRANSPORT_ERROR, "invalid content")
                return _error_reply(_BAD_REQUEST, (closed,))
        self._post_pending = True
        return None

    def post_too_large(self) -> HttpReply:
        """The body exceeded ``max_payload``: 413, and the session stays open (as Node 6.x)."""
        self._post_pending = False
        return HttpReply(413, None, b"")

    def post_aborted(self) -> SessionClosed | None:
        """The POST's client went away before the body was read: close (``"transport error"``)."""
        self._post_pending = False
        if self.state is SessionState.CLOSED:
            return None
        return self._close(CloseReason.TRANSPORT_ERROR, "data request connection closed prematurely")

    def end_post(self, body: bytes | bytearray | memoryview | str, now: float) -> HttpReply:
        """The whole POST body: decode and apply its packets. 200 ``ok`` with the events;
        400 if the session was closed meanwhile or the body is not a valid payload (then
        the packets before the bad one are still delivered and the session closes)."""
        self._post_pending = False
        state = self.state
        if state is SessionState.CLOSED:
            return _error_reply(_UNKNOWN_SID)
        if len(body) > self.config.max_payload:
            return HttpReply(413, None, b"")
        if state is SessionState.CLOSING:
            return HttpReply(200, _TEXT_HTML, _OK)  # packets ignored while closing, as Node
        events: list[Event] = []
        try:
            for ptype, data in iter_payload(body):
                event = self._on_packet(ptype, data, now)
                if event is not None:
                    events.append(event)
                    if self.state is SessionState.CLOSED:
                        break
        except PacketDecodeError as exc:
            events.append(self._close(CloseReason.PARSE_ERROR, str(exc)))
            return _error_reply(_BAD_REQUEST, tuple(events))
        return HttpReply(200, _TEXT_HTML, _OK, tuple(events))

    # ------------------------------------------------------------------ upgrade

    def attach_probe(self, now: float) -> None:
        """A WebSocket with this sid was accepted for an upgrade (route ``PROBE``)."""
        if not self.accepts_probe:
            raise SessionMisuse("this session cannot take a probe now (route says ACCEPT_AND_CLOSE)")
        self.state = SessionState.UPGRADING
        self._upgrade_deadline = now + self.config.upgrade_timeout_ms / 1000
        self._probed = False

    def receive_probe(self, data: str | bytes | bytearray | memoryview, now: float) -> ProbeOutcome:
        """One message on the probe WebSocket: ``2probe`` → reply ``3probe`` (then check
        ``wants_write``: a parked GET gets ``6``); ``5`` → ``Upgraded``; anything else aborts
        the upgrade."""
        if self.state is not SessionState.UPGRADING:
            return ProbeOutcome(None, _NO_EVENTS, True)
        packet = None
        if isinstance(data, str):
            try:
                packet = decode_text(data)
            except PacketDecodeError:
                packet = None
        if packet is not None:
            ptype, payload = packet
            if ptype is PacketType.PING and payload == "probe":
                self._probed = True
                return ProbeOutcome(_PONG_PROBE, _NO_EVENTS, False)
            if ptype is PacketType.UPGRADE:
                if self._get_parked and self._final_get is None:
                    self._final_get = _NOOP_BODY
                self.transport = "websocket"
                self.state = SessionState.OPEN
                self._upgrade_deadline = _INF
                self._probed = False
                return ProbeOutcome(None, (Upgraded(),), False)
        return ProbeOutcome(None, (self._abort_upgrade("unexpected packet during upgrade"),), True)

    def probe_closed(self) -> UpgradeAborted | None:
        """The probe WebSocket went away before the upgrade completed."""
        if self.state is not SessionState.UPGRADING:
            return None
        return self._abort_upgrade("probe transport closed")

    def _abort_upgrade(self, description: str) -> UpgradeAborted:
        if self.state is SessionState.UPGRADING:
            self.state = SessionState.OPEN
        self._upgrade_deadline = _INF
        self._probed = False
        return UpgradeAborted(description)

    def __repr__(self) -> str:
        return f"<Session {self.sid} {self.transport} {self.state.value} queued={len(self._queue)}>"
