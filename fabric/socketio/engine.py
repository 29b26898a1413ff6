"""Engine.IO v4 on trio: the two transports on the shared listener, over the sans-IO ``Session``.

An ``EngineServer`` serves one Engine.IO path. It answers the HTTP front's requests
(``handle_http`` for polling, ``handle_websocket`` for upgrades), keeps its sessions by sid and
runs one heartbeat task for all of them. What a message means is its ``EngineApp``'s business
(Socket.IO, or the plain echo endpoint of the conformance suite).

Rules this module keeps:
- The ``Session`` decides; this module performs. Every event a session returns is handled
  in one place (``EngineConnection._handle``), in order, and ``SessionClosed`` exactly once
  ends the connection: its sid is forgotten, its WebSocket closed, a parked GET answered, and
  the app told (``on_close``).
- A long-polling connection outlives each HTTP request. A parked GET is an awaiting
  ``handle_http`` call woken when the session can answer it; a POST is answered once its
  packets were handed to the app (inbound backpressure: a slow app slows the client). The
  connection's own task (``serve``) waits for the end of the session, whatever transport it
  is on; a WebSocket-only connection's task runs the socket itself.
- Heartbeats are deadlines, not tasks: one ticker per server over a heap of
  ``(deadline, seq, sid)``. An entry whose deadline is no longer the connection's current
  one, or whose sid is no longer a session, is stale and skipped, so rescheduling is a
  push, never a search. Entries name the sid, not the connection: a closed connection is
  then held by nothing here (it was held until its next heartbeat was due, up to
  ``pingInterval + pingTimeout`` later: ~36 objects per closed connection, tens of
  megabytes for a server that churns thousands of connections a second). The ticker
  sleeps in a cancel scope whose deadline is moved forward when an earlier entry arrives.
- Sending never awaits. On a WebSocket the session's queue is drained into the socket's
  bounded outbox at once (pings included), so publications may bypass the session queue
  (``send_ws_frames``) without reordering. A full outbox or queue is a slow consumer: the
  connection closes (``transport error``), and the app hears about it like any close.
- Upgrade: the probe WebSocket runs in the request task that accepted it (the HTTP front's);
  after ``5`` it is the session's transport and its messages go to the normal path. A probe
  that fails is closed; the session stays on polling.
- Bad requests get exactly Node's answers (``eio_requests``); nothing a client sends raises
  out of here, and other sessions carry on.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from typing import Any, Awaitable, Callable, Iterable, Protocol

import trio

from specs import socketio as sio_specs
from transport.frames import encode_frame
from transport.http import Request, Response, WebSocketAccept
from transport.outbox import Outbox
from transport.websocket import WebSocket

from fabric.socketio.eio_packets import EncodedPacket, Packet, PacketEncodeError, PacketType, encode_packet
from fabric.socketio.eio_requests import ErrorCode, RequestRejected, RouteKind, parse_query, route_request
from fabric.socketio.eio_session import (
    POLLING_HEADERS,
    CloseReason,
    EngineConfig,
    HttpReply,
    NOOP_REPLY,
    MessageReceived,
    SendResult,
    Session,
    SessionClosed,
    SessionState,
    UpgradeAborted,
    Upgraded,
    generate_sid,
)

log = logging.getLogger(__name__)

__all__ = ["CorsOptions", "EngineApp", "EngineConnection", "EngineServer", "frame_of"]

_INF = math.inf
#: A polling session closed by the client's close packet before any GET was parked keeps
#: a tombstone this long, and at most this many are kept (oldest dropped first): see
#: ``EngineServer._late_get`` and the decision ``socketio.late-poll-after-close``.
LATE_GET_GRACE = sio_specs.LATE_GET_GRACE_SECONDS
LATE_GET_TOMBSTONES = sio_specs.LATE_GET_TOMBSTONES
_WS_CLOSE_NORMAL = 1000


def frame_of(packet: EncodedPacket) -> bytes:
    """The WebSocket frame of an encoded packet, built once and kept on it (shared packets
    are framed once for all recipients)."""
    frame = packet.ws_frame
    if frame is None:
        frame = packet.ws_frame = encode_frame(packet.ws, text=packet.is_text)
    return frame


class EngineApp(Protocol):
    """What an Engine.IO endpoint does with its connections."""

    async def on_open(self, conn: "EngineConnection", request: Request) -> None:
        """A session opened (its open packet is queued). Start a task running ``conn.serve()``
        (the app decides where it is supervised). Raising refuses the connection."""

    async def on_message(self, conn: "EngineConnection", data: str | bytes) -> None:
        """One ``message`` packet from the client (awaited: inbound backpressure)."""

    def on_close(self, conn: "EngineConnection", reason: CloseReason, description: str) -> None:
        """The session is over (called once, no checkpoint)."""

    # Optional: ``async def on_task_start(conn)`` / ``async def on_task_end(conn)``, awaited
    # by ``conn.serve()`` first and last (the end shielded), in the connection's task.
    # Optional: ``async def on_handshake(request, sid) -> EngineConfig | Response | None``,
    # awaited before a new session exists (its sid chosen): a ``Response`` refuses the
    # handshake with it, an ``EngineConfig`` is that session's (what its open packet says).


class CorsOptions:
    """CORS for polling requests (``origins``: ``("*",)``, explicit origins, or empty: off)."""

    __slots__ = ("credentials", "origins")

    def __init__(self, origins: Iterable[str] = (), credentials: bool = True) -> None:
        self.origins = tuple(origins)
        self.credentials = credentials

    def headers_for(self, request: Request) -> tuple[tuple[str, str], ...]:
        if not self.origins:
            return ()
        origin = request.header("origin")
        if "*" in self.origins:
            if origin and self.credentials:
                return (("access-control-allow-origin", origin), ("access-control-allow-credentials", "true"),
                        ("vary", "Origin"))
            return (("access-control-allow-origin", "*"),)
        if origin and origin in self.origins:
            out = [("access-control-allow-origin", origin), ("vary", "Origin")]
            if self.credentials:
                out.append(("access-control-allow-credentials", "true"))
            return tuple(out)
        return ()

    def preflight(self, request: Request) -> Response:
        headers = list(self.headers_for(request))
        headers.append(("access-control-allow-methods", "GET,POST"))
        wanted = request.header("access-control-request-headers")
        if wanted:
            headers.append(("access-control-allow-headers", wanted))
        headers.append(("access-control-max-age", "86400"))
        return Response(204, b"", tuple(headers))


def rejection(cors: CorsOptions, request: Request, exc: RequestRejected) -> Response:
    """Engine.IO's answer to a refused request: its status and ``{"code","message"}`` body,
    with the CORS headers for the request's origin."""
    headers = [("content-type", exc.http_content_type), *cors.headers_for(request)]
    return Response(exc.http_status, exc.http_body(), tuple(headers))


class EngineConnection:
    """One Engine.IO session on trio: its ``Session`` core, its current WebSocket (if any),
    a parked GET (if any) and the app's per-connection object (``app_state``).

    Sending (``send``, ``send_packets``, ``send_ws_frames``) never awaits; each returns False
    when the packet could not be queued (closing, or a slow consumer, which closes).
    """

    __slots__ = (
        "_done", "_get_event", "_probe", "_scheduled", "app_deadline", "app_state", "closed", "request",
        "server", "session", "sid", "ws", "ws_out",
    )

    def __init__(self, server: "EngineServer", session: Session, request: Request) -> None:
        self.server = server
        self.session = session
        self.sid = session.sid
        self.request = request
        self.ws: WebSocket | None = None
        #: The WebSocket's outbox while the session is open on it, else None: the fan-out path
        #: queues frames there directly (``put_frames``), skipping the session.
        self.ws_out: Outbox | None = None
        self._probe: WebSocket | None = None
        self._get_event: trio.Event | None = None
        self._done: trio.Event | None = None
        self._scheduled = _INF
        #: An extra deadline the app may set (e.g. Socket.IO's connect timeout): at it the
        #: server calls ``app.on_deadline(conn)``. ``inf``: none.
        self.app_deadline = _INF
        self.app_state: Any = None
        self.closed = False

    def __repr__(self) -> str:
        return f"<EngineConnection {self.sid} {self.session.transport} {self.session.state.value}>"

    @property
    def transport(self) -> str:
        return self.session.transport

    @property
    def writable(self) -> bool:
        """The transport could take a packet now without waiting (Socket.IO's ``volatile``):
        an open WebSocket with an empty outbox, or a parked GET."""
        if self.closed:
            return False
        ws = self.ws
        if ws is not None and self.session.transport == "websocket":
            return not ws.closing and len(ws.outbox) == 0
        return self._get_event is not None

    # ------------------------------------------------------------------ sending

    def send(self, packet: EncodedPacket) -> bool:
        """Queue one packet for the client. No checkpoint."""
        if self.closed:
            return False
        session = self.session
        ws = self.ws
        if ws is not None and session.transport == "websocket":
            if session.state is not SessionState.OPEN:
                return False
            # Usually an answer to what the client just sent (an ack, the CONNECT reply, an
            # emit to one socket): written at once when the writer is idle (WebSocket.send_now;
            # measured: emit-with-ack echo +15-40%). Broadcasts go through the outbox.
            if ws.send_now(frame_of(packet)):
                return True
            if not ws.closing:
                self._overflow()
            return False
        try:
            result = session.send(packet)
        except PacketEncodeError:
            return False
        if result is SendResult.WAKE:
            self._wake_get()
        elif result is SendResult.OVERFLOW:
            self._overflow()
            return False
        return result is not SendResult.CLOSED

    def send_message(self, data: str | bytes) -> bool:
        """Queue one Engine.IO ``message`` (text or binary). No checkpoint."""
        return self.send(encode_packet(Packet(PacketType.MESSAGE, data)))

    def send_packets(self, packets: Iterable[EncodedPacket]) -> bool:
        """Queue several packets in order (a Socket.IO packet and its attachments)."""
        ok = True
        for packet in packets:
            ok = self.send(packet) and ok
        return ok

    def send_ws_frames(self, frames: bytes, packets: tuple[EncodedPacket, ...]) -> bool:
        """The fan-out path: already framed bytes on a WebSocket (one outbox item), else
        ``packets`` through the session queue. No checkpoint."""
        ws = self.ws
        if ws is not None and self.session.transport == "websocket" and not self.closed:
            if self.session.state is not SessionState.OPEN:
                return False
            if ws.send_nowait(frames):
                return True
            if not ws.closing:
                self._overflow()
            return False
        return self.send_packets(packets)

    def put_frames(self, out: Outbox, frames: bytes) -> None:
        """The fan-out fast path: already framed bytes into ``ws_out`` (the caller read it and
        found it set). A refusal is a slow consumer unless the socket is closing. No checkpoint."""
        if not out.put_nowait(frames):
            ws = self.ws
            if ws is not None and not ws.closing and not self.closed:
                self._overflow()

    def _overflow(self) -> None:
        self.server.counters_slow += 1
        log.warning("%r closed as a slow consumer", self)
        self._handle(self.session.close(trio.current_time(), CloseReason.TRANSPORT_ERROR), discard=True)

    def _wake_get(self) -> None:
        event = self._get_event
        if event is not None:
            event.set()

    def _flush(self) -> None:
        """Move what the session queued onto the WebSocket, or wake the parked GET."""
        session = self.session
        ws = self.ws
        if ws is not None and session.transport == "websocket":
            if session.queued:
                for packet in session.take_ws_batch():
                    if not ws.send_nowait(frame_of(packet)):
                        if not ws.closing:
                            self._overflow()
                        return
        elif session.get_ready:
            self._wake_get()

    # ------------------------------------------------------------------ closing

    def close(self, reason: CloseReason = CloseReason.FORCED_CLOSE) -> None:
        """Close from the server side (what is queued still goes out). No checkpoint."""
        if self.closed:
            return
        self._handle(self.session.close(trio.current_time(), reason))
        self._flush()

    def _handle(self, events: Iterable[Any], *, discard: bool = False) -> list[str | bytes]:
        """Perform the session's events; returns the messages for the app (in order)."""
        messages: list[str | bytes] = []
        for event in events:
            kind = type(event)
            if kind is MessageReceived:
                messages.append(event.data)
            elif kind is SessionClosed:
                self._finish(event.reason, event.description, discard=discard)
            elif kind is Upgraded:
                probe = self._probe
                self._probe = None
                self.ws = probe
                self._wake_get()  # the parked GET gets its noop
                self._flush()
                if not self.closed and probe is not None:
                    self.ws_out = probe.outbox
            elif kind is UpgradeAborted:
                probe = self._probe
                self._probe = None
                if probe is not None:
                    probe.close(_WS_CLOSE_NORMAL)
        self.server._schedule(self)
        return messages

    def _finish(self, reason: CloseReason, description: str, *, discard: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.ws_out = None
        server = self.server
        if server.sessions.get(self.sid) is self:
            del server.sessions[self.sid]
        ws = self.ws
        if ws is not None and self.session.transport == "websocket":
            if not discard:
                for packet in self.session.take_ws_batch():  # a server close keeps the last batch
                    ws.send_nowait(frame_of(packet))
            ws.close(_WS_CLOSE_NORMAL, discard=discard)
        probe = self._probe
        if probe is not None:
            self._probe = None
            probe.close(_WS_CLOSE_NORMAL)
        self._wake_get()
        if self._done is not None:
            self._done.set()
        try:
            server.app.on_close(self, reason, description)
        except Exception:
            log.exception("Engine.IO app failed in on_close for %r", self)

    # ------------------------------------------------------------------ the connection's task

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run this connection until its session is over (the app's connection task).
        Checkpoint. Never raises for client faults.

        Usable as a supervised task child (``task_status.started()`` at once). The app's
        optional ``on_task_start(conn)`` is awaited first and ``on_task_end(conn)`` last
        (shielded), both in this task: an app that must do something around the connection's
        life (register it somewhere) need not wrap this coroutine in its own (one frame less
        per idle connection).
        """
        task_status.started()
        app = self.server.app
        try:
            start = getattr(app, "on_task_start", None)
            if start is not None:
                await start(self)
                start = None  # not kept on an idle connection's frame
            ws = self.ws
            if ws is not None and self.session.transport == "websocket" and self._probe is None:
                await ws.run(self._on_ws_message)
                if not self.closed:
                    self._handle((self.session.ws_closed(trio.current_time(), error=ws.close_code == 1006)
                                  or SessionClosed(CloseReason.TRANSPORT_CLOSE),))
                return
            if not self.closed:
                self._done = trio.Event()
                await self._done.wait()
        finally:
            if not self.closed:  # cancelled (shutdown), or setup failed: the session ends with us
                self._handle(self.session.close(trio.current_time(), CloseReason.SERVER_SHUTTING_DOWN), discard=True)
                if not self.closed:
                    self._finish(CloseReason.SERVER_SHUTTING_DOWN, "")
            end = getattr(app, "on_task_end", None)
            if end is not None:
                with trio.CancelScope(shield=True):
                    await end(self)

    async def _on_ws_message(self, data: str | bytes) -> None:
        session = self.session
        event = session.receive_ws(data, trio.current_time())
        if event is None:
            self.server._schedule(self)  # a pong moved the deadline
            return
        if type(event) is MessageReceived:
            await self.server.app.on_message(self, event.data)
            return
        self._handle((event,))

    # ------------------------------------------------------------------ polling requests

    async def _get(self, request: Request) -> Response:
        session = self.session
        reply = session.begin_get(trio.current_time())
        if reply is None:
            # Parked: wake for data, or when the client goes away (the HTTP front watches it).
            gone = request.watch_disconnect(self._wake_get)
            try:
                while True:
                    self._get_event = event = trio.Event()
                    await event.wait()
                    reply = session.take_get_reply()
                    if reply is not None:
                        break
                    if gone is not None and gone.is_set():
                        self._get_event = None
                        closed = session.get_aborted(trio.current_time())
                        self._handle((closed,) if closed is not None else ())
                        return Response(400, b"", ())  # nobody reads it: the client is gone
            except BaseException:
                self._get_event = None
                closed = session.get_aborted(trio.current_time())
                self._handle((closed,) if closed is not None else ())
                raise
            finally:
                self._get_event = None
        messages = self._handle(reply.events)
        for data in messages:  # never: a GET carries no client packets
            await self.server.app.on_message(self, data)
        return self.server._reply(request, reply)

    async def _post(self, request: Request) -> Response:
        session = self.session
        now = trio.current_time()
        reply = session.begin_post(request.header("content-type"), now)
        polled = session.get_parked
        if reply is None:
            body = request.body
            if request.body_over_limit or len(body) > session.config.max_payload:
                reply = session.post_too_large()
            else:
                reply = session.end_post(body, now)
        if (not polled and session.transport == "polling"
                and any(type(e) is SessionClosed and e.reason is CloseReason.TRANSPORT_CLOSE for e in reply.events)):
            self.server._client_closed_unpolled(self.sid)  # see EngineServer._late_get
        messages = self._handle(reply.events)
        app = self.server.app
        for data in messages:
            # A close the app made while handling an earlier packet (an invalid one, say)
            # leaves a polling session CLOSING, not closed: the rest of the body is dropped,
            # as Node does once the socket is no longer open (a 400 KB body of invalid
            # packets was read to its end, 200,000 closes and log lines: fuzz run).
            if self.closed or session.state is SessionState.CLOSING:
                break
            await app.on_message(self, data)
        return self.server._reply(request, reply)

    # ------------------------------------------------------------------ upgrade

    async def _run_probe(self, ws: WebSocket) -> None:
        """The probe WebSocket's life (in the accepting request's task)."""
        self._probe = ws
        session = self.session
        session.attach_probe(trio.current_time())
        self.server._schedule(self)

        async def on_message(data: str | bytes) -> None:
            if self.ws is ws:  # upgraded: the normal path
                await self._on_ws_message(data)
                return
            if self._probe is not ws:
                return
            outcome = session.receive_probe(data, trio.current_time())
            if outcome.reply is not None:
                ws.send_nowait(frame_of(outcome.reply))
            self._handle(outcome.events)
            if session.get_ready:
                self._wake_get()
            if outcome.close_probe and self._probe is ws:
                self._probe = None
                ws.close(_WS_CLOSE_NORMAL)
            elif outcome.close_probe:
                ws.close(_WS_CLOSE_NORMAL)

        try:
            await ws.run(on_message)
        finally:
            if self.ws is ws:
                if not self.closed:
                    self._handle((session.ws_closed(trio.current_time(), error=ws.close_code == 1006)
                                  or SessionClosed(CloseReason.TRANSPORT_CLOSE),))
            elif self._probe is ws:
                self._probe = None
                self._handle((session.probe_closed(),) if session.state is SessionState.UPGRADING else ())


class EngineServer:
    """One Engine.IO endpoint: sessions by sid, request routing, and the heartbeat ticker.

    Run it with ``await nursery.start(server.run)`` before routing requests to it.
    """

    def __init__(
        self,
        app: EngineApp,
        config: EngineConfig | None = None,
        *,
        cors: CorsOptions | None = None,
        cookie: str | None = None,
        outbox_max_items: int = 1024,
        outbox_max_bytes: int = 4 << 20,
        allow_request: Callable[[Request], Awaitable[str | None]] | None = None,
    ) -> None:
        self.app = app
        self.config = config or EngineConfig()
        self.cors = cors or CorsOptions()
        #: The cookie name set to the sid on a polling handshake (None: no cookie).
        self.cookie = cookie
        self.outbox_max_items = outbox_max_items
        self.outbox_max_bytes = outbox_max_bytes
        #: Optional async hook for handshakes: None allows, a message refuses (403 FORBIDDEN).
        self.allow_request = allow_request
        self.sessions: dict[str, EngineConnection] = {}
        #: sid -> trio time until which one late GET is answered with a noop (insertion
        #: ordered, bounded by LATE_GET_TOMBSTONES).
        self._closed_unpolled: dict[str, float] = {}
        self._heap: list[tuple[float, int, str]] = []  # (deadline, seq, sid)
        self._seq = itertools.count()
        self._ticker_scope: trio.CancelScope | None = None
        self._wake_at = _INF
        self.counters_slow = 0
        self.opened = 0
        self.ticks = 0

    # ------------------------------------------------------------------ the ticker

    def _schedule(self, conn: EngineConnection) -> None:
        """Make the heap hold ``conn``'s current deadline. No checkpoint."""
        if conn.closed:
            return
        deadline = conn.session.next_deadline()
        app_deadline = conn.app_deadline
        if app_deadline < deadline:
            deadline = app_deadline
        if deadline == conn._scheduled or deadline == _INF:
            conn._scheduled = deadline
            return
        conn._scheduled = deadline
        heapq.heappush(self._heap, (deadline, next(self._seq), conn.sid))
        if deadline < self._wake_at:
            self._wake_at = deadline
            scope = self._ticker_scope
            if scope is not None:
                scope.deadline = deadline

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """The heartbeat ticker (one task for every session of this server). Runs until
        cancelled; closes every session when it ends."""
        heap = self._heap
        sessions = self.sessions
        task_status.started()
        try:
            while True:
                self._wake_at = heap[0][0] if heap else _INF
                with trio.CancelScope(deadline=self._wake_at) as scope:
                    self._ticker_scope = scope
                    await trio.sleep_forever()
                self._ticker_scope = None
                now = trio.current_time()
                while heap and heap[0][0] <= now:
                    deadline, _, sid = heapq.heappop(heap)
                    conn = sessions.get(sid)
                    if conn is None or conn.closed or conn._scheduled != deadline:
                        continue  # stale
                    conn._scheduled = _INF
                    self.ticks += 1
                    try:
                        self._tick(conn, now)
                    except Exception:
                        log.exception("heartbeat failed for %r; closing it", conn)
                        conn._finish(CloseReason.TRANSPORT_ERROR, "internal error", discard=True)
                await trio.lowlevel.checkpoint()
        finally:
            self._ticker_scope = None
            for conn in list(self.sessions.values()):
                conn._handle(conn.session.close(trio.current_time(), CloseReason.SERVER_SHUTTING_DOWN), discard=True)
                if not conn.closed:
                    conn._finish(CloseReason.SERVER_SHUTTING_DOWN, "")

    def _tick(self, conn: EngineConnection, now: float) -> None:
        if conn.app_deadline <= now:
            conn.app_deadline = _INF
            on_deadline = getattr(self.app, "on_deadline", None)
            if on_deadline is not None:
                on_deadline(conn)
            if conn.closed:
                return
        conn._handle(conn.session.tick(now))
        if not conn.closed:
            conn._flush()

    # ------------------------------------------------------------------ requests

    def body_limit(self, request: Request) -> int | None:
        """The HTTP front's per-request body bound: a polling POST above ``max_payload`` is
        ours to answer (413, the session stays), not the front's."""
        return self.config.max_payload if request.method == "POST" else None

    def _lookup(self, sid: str):
        conn = self.sessions.get(sid)
        return conn.session if conn is not None else None

    def _reply(self, request: Request, reply: HttpReply, extra: tuple[tuple[str, str], ...] = ()) -> Response:
        headers = list(POLLING_HEADERS)
        if reply.content_type is not None:
            headers.append(("content-type", reply.content_type))
        headers.extend(self.cors.headers_for(request))
        headers.extend(extra)
        return Response(reply.status, reply.body, tuple(headers))

    def _rejected(self, request: Request, exc: RequestRejected) -> Response:
        return rejection(self.cors, request, exc)

    async def _allow(self, request: Request) -> str | None:
        if self.allow_request is None:
            return None
        return await self.allow_request(request)

    async def handle_http(self, request: Request) -> Response:
        """Answer one polling request (handshake, GET, POST) or a CORS preflight. Checkpoint:
        a GET may wait for data (it is the long poll)."""
        if request.method == "OPTIONS" and self.cors.origins:
            return self.cors.preflight(request)
        query = parse_query(request.target.partition("?")[2])
        try:
            refusal = None
            if not query.get("sid") and self.allow_request is not None:
                refusal = await self._allow(request)
            route = route_request(
                method=request.method, query=query, upgrade=False, lookup=self._lookup,
                origin=request.header("origin"), transports=self.config.transports,
                allow=(lambda: refusal) if refusal is not None else None,
            )
        except RequestRejected as exc:
            if exc.code is ErrorCode.UNKNOWN_SID and request.method == "GET":
                late = self._late_get(request, query.get("sid"))
                if late is not None:
                    return late
            return self._rejected(request, exc)
        kind = route.kind
        if kind is RouteKind.OPEN_POLLING:
            return await self._open_polling(request)
        conn = self.sessions.get(route.sid or "")
        if conn is None:  # closed meanwhile (the lookup saw it)
            late = self._late_get(request, route.sid) if kind is RouteKind.POLL else None
            return late if late is not None else self._rejected(request, RequestRejected(ErrorCode.UNKNOWN_SID))
        if kind is RouteKind.POLL:
            return await conn._get(request)
        if kind is RouteKind.POST:
            return await conn._post(request)
        # BAD_METHOD: Node answers 500 with an empty body.
        return Response(500, b"", tuple(self.cors.headers_for(request)))

    def _client_closed_unpolled(self, sid: str) -> None:
        """A polling session was closed by the client's close packet while no GET was
        parked. No checkpoint."""
        tombstones = self._closed_unpolled
        if len(tombstones) >= LATE_GET_TOMBSTONES:
            del tombstones[next(iter(tombstones))]
        tombstones[sid] = trio.current_time() + LATE_GET_GRACE

    def _late_get(self, request: Request, sid: str | None) -> Response | None:
        """The noop (``6``) for the first GET of a session its client closed by POST while
        no GET was parked, within ``LATE_GET_GRACE``; None otherwise (a 400 as usual).

        A client that sends its long-poll GET and the POST with its close packet at once,
        on two connections, has them handled in arrival order by Node: the GET is parked
        first and answered with a noop when the close comes. Here the two may run in
        either order; answering the GET that lost the race as it would have been answered
        had it won keeps that client's view the same (the official Engine.IO suite's
        "forcefully closes the session" does exactly this). Only the first such GET, and
        only for a moment: the session is closed all the same. No checkpoint."""
        if not sid:
            return None
        deadline = self._closed_unpolled.pop(sid, None)
        if deadline is None or trio.current_time() > deadline:
            return None
        return self._reply(request, NOOP_REPLY)

    async def _handshake(self, request: Request) -> tuple[str, EngineConfig] | Response:
        """A new session's sid and options, or the app's refusal (``on_handshake``)."""
        sid = generate_sid()
        hook = getattr(self.app, "on_handshake", None)
        if hook is None:
            return sid, self.config
        decided = await hook(request, sid)
        if isinstance(decided, Response):
            return decided
        return sid, decided if decided is not None else self.config

    async def _open_polling(self, request: Request) -> Response:
        decided = await self._handshake(request)
        if isinstance(decided, Response):  # refused: with CORS headers, so a browser reads why
            return Response(decided.status, decided.body, (*decided.headers, *self.cors.headers_for(request)))
        sid, config = decided
        now = trio.current_time()
        session = Session(sid, config, "polling", now)
        conn = EngineConnection(self, session, request)
        self.sessions[conn.sid] = conn
        try:
            await self.app.on_open(conn, request)
        except Exception as exc:
            self.sessions.pop(conn.sid, None)
            conn.closed = True
            log.warning("Engine.IO connection refused by the app: %s", exc)
            rejected = RequestRejected(ErrorCode.FORBIDDEN, str(exc) or None)
            return self._rejected(request, rejected)
        self.opened += 1
        reply = session.begin_get(now)
        self._handle_open(conn)
        extra: tuple[tuple[str, str], ...] = ()
        if self.cookie:
            extra = (("set-cookie", f"{self.cookie}={conn.sid}; Path=/; HttpOnly; SameSite=Lax"),)
        if reply is None:  # cannot happen: the open packet is queued
            return Response(500, b"", ())
        return self._reply(request, reply, extra)

    def _handle_open(self, conn: EngineConnection) -> None:
        self._schedule(conn)

    async def handle_websocket(self, request: Request) -> Response | WebSocketAccept:
        """Answer one upgrade: a WebSocket session, a probe for an upgrade, or a refusal.
        Checkpoint."""
        query = parse_query(request.target.partition("?")[2])
        try:
            refusal = None
            if not query.get("sid") and self.allow_request is not None:
                refusal = await self._allow(request)
            route = route_request(
                method=request.method, query=query, upgrade=True, lookup=self._lookup,
                origin=request.header("origin"), transports=self.config.transports,
                allow=(lambda: refusal) if refusal is not None else None,
            )
        except RequestRejected as exc:
            return Response(400, exc.message.encode("utf-8"), (("content-type", "text/html"),))
        kind = route.kind
        bounds = {"outbox_max_items": self.outbox_max_items, "outbox_max_bytes": self.outbox_max_bytes,
                  "max_message_bytes": self.config.max_payload}
        if kind is RouteKind.ACCEPT_AND_CLOSE:
            return WebSocketAccept(subprotocol=None, run=_accept_and_close)
        if kind is RouteKind.PROBE:
            conn = self.sessions.get(route.sid or "")
            if conn is None or not conn.session.accepts_probe:
                return WebSocketAccept(subprotocol=None, run=_accept_and_close)
            return WebSocketAccept(subprotocol=None, run=conn._run_probe, **bounds)
        # OPEN_WEBSOCKET
        decided = await self._handshake(request)
        if isinstance(decided, Response):
            return decided
        sid, config = decided

        async def run(ws: WebSocket) -> None:
            session = Session(sid, config, "websocket", trio.current_time())
            conn = EngineConnection(self, session, request)
            conn.ws = ws
            self.sessions[conn.sid] = conn
            for packet in session.take_ws_batch():  # the open packet
                ws.send_nowait(frame_of(packet))
            conn.ws_out = ws.outbox  # the session is open on this socket now
            try:
                await self.app.on_open(conn, request)
            except Exception as exc:
                self.sessions.pop(conn.sid, None)
                conn.closed = True
                log.warning("Engine.IO connection refused by the app: %s", exc)
                ws.abort_soon()
                await ws.run(_ignore)
                return
            self.opened += 1
            self._schedule(conn)

        return WebSocketAccept(subprotocol=None, run=run, **bounds)

    def statistics(self) -> dict:
        return {
            "sessions": len(self.sessions), "opened": self.opened, "heap": len(self._heap),
            "ticks": self.ticks, "slow_consumers_closed": self.counters_slow,
        }


async def _ignore(message: str | bytes) -> None:
    return None


async def _accept_and_close(ws: WebSocket) -> None:
    ws.close(_WS_CLOSE_NORMAL)
    await ws.run(_ignore)
