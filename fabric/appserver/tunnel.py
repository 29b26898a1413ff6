"""The server tunnel: ``/server/tunnel?hub=...``, how app servers reach us without a port.

An app server (``@azure/web-pubsub-socket.io``'s default mode, or the ``awps-tunnel`` tool in
front of a local event handler) opens a WebSocket to ``/server/tunnel`` and keeps it. Both
directions then carry HTTP-shaped messages (``tunnel_protocol``):

- **app -> service**: REST calls (``POST /api/hubs/{hub}/groups/{g}/:send``, ...). Each one
  is dispatched into the same REST router as ``/api/hubs/...`` over HTTP
  (``rest.handle(trusted=True)``), so there is one implementation of every operation.
  Operations REST does not have (the Socket.IO edge's streamed ``:invoke``) are added with
  ``TunnelEdge.add_operation``; their answers may stream (``NotCompleted``).
- **service -> app**: event requests. ``TunnelEdge.request`` sends one through a connected
  tunnel and returns its (possibly streamed) answer; ``TunnelEdge.transport(hub)`` wraps that
  as an ``httpx`` transport, so a hub whose event handler URL is ``tunnel:///path`` gets its
  CloudEvents through the tunnel with the unchanged webhook client.

Rules this module keeps:
- Authentication before anything: an HS256 JWT (``access_token`` query or Bearer header)
  signed with an access key, ``exp`` required, ``aud`` = the tunnel URL (its path is
  compared, and its ``hub`` query, when present, must name the requested hub). Failures are
  401 with the token error's code, before the upgrade.
- ``ConnectionConnected`` is the first message on every tunnel (the package's ``start()``
  resolves on it).
- App servers are told apart by the token's ``sub`` (the package signs every tunnel of one
  process with the same random id): ``Tunnel.server``. Service -> app requests pick a
  tunnel by rendezvous hashing of a consistency key (a connection id) over the live tunnels
  (of one app server, when the caller pins it), so one key's requests share a tunnel while
  it lives and move when it goes. The app server that accepted a connection's ``connect``
  is remembered per hub (``pin``), so its later events can follow it (``TunnelTransport``
  ``sticky``): a stateful app knows the connection only there.
- The tunnel carries the access key's authority, as a REST token does: its requests may
  name any hub.
- Requests from one tunnel are served one at a time, in arrival order (the package locks a
  tunnel per consistency key and expects order); a streamed answer's tail is pumped by its
  own task so it never holds the queue. Responses are matched to pending requests at once
  by the reader, never behind a request.
- Bounded everything: inbound frames (``max_message_bytes``), queued requests per tunnel
  (the reader waits: TCP pushes back), pending service -> app requests per tunnel, bytes
  buffered per streamed answer, concurrent streams, the outbox (bytes and count: past them
  the tunnel is closed as a slow consumer), and the time a tunnel may hold data without
  taking any (``stall_timeout``). A tunnel silent past ``idle_timeout`` (pings unanswered)
  is closed; an idle tunnel gets a ``ServiceStatus`` each keepalive interval, because the
  package's client drops a connection that received nothing for 120 s.
- Tunnel loss fails every pending request on it at once (``TunnelLost``); new requests go
  to the remaining tunnels; the app's automatic reconnect resumes service.
- Bad input gets a clear answer and touches nothing else: a malformed request that names its
  AckId is answered 400; a frame that cannot be read closes that tunnel with 1007 (a text
  frame: 1003) and a reason; a response to an unknown or abandoned AckId is counted and
  dropped; an unknown message type is counted and ignored.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import httpx
import msgspec
import trio

from fabric.appserver import rest
from fabric.appserver import tunnel_protocol as tp
from fabric.config import FabricConfig, HubConfig
from fabric.core import auth
from fabric.core.counters import Counters, CounterSpec
from fabric.core.hubs import HubRegistry
from specs import names
from specs.errors import CloseCode
from transport.frames import encode_frame
from transport.http import Request, Response, WebSocketAccept
from transport.websocket import WebSocket

log = logging.getLogger(__name__)

__all__ = [
    "TUNNEL_PATH",
    "Tunnel",
    "TunnelBusy",
    "TunnelEdge",
    "TunnelError",
    "TunnelLost",
    "TunnelReply",
    "TunnelResponse",
    "TunnelTransport",
    "TunnelUnavailable",
    "uses_tunnel",
]

TUNNEL_PATH = "/server/tunnel"
#: Scheme of an event handler URL template whose events go through a tunnel.
TUNNEL_SCHEME = "tunnel"
#: Bytes a frame may carry beyond the largest body (the length prefix, MessagePack, the JSON).
ENVELOPE_BYTES = 64 * 1024
#: App -> service requests queued per tunnel before its reader waits.
MAX_QUEUED_REQUESTS = 64
#: Service -> app requests in flight per tunnel.
MAX_PENDING = 1024
#: Streamed answers being pumped per tunnel.
MAX_STREAMS = 256
#: Header values hop-by-hop or bound to the socket: never forwarded through a tunnel.
_HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host",
                          "proxy-connection"})

TUNNEL_COUNTERS = (
    CounterSpec("tunnels_opened", "Tunnels accepted (after authentication)."),
    CounterSpec("tunnels_closed", "Tunnels ended, for any reason."),
    CounterSpec("tunnels_refused", "Tunnel upgrades refused (bad hub, missing or invalid token)."),
    CounterSpec("requests_served", "App -> service requests answered."),
    CounterSpec("requests_streamed", "App -> service requests answered with a streamed body."),
    CounterSpec("requests_invalid", "App -> service requests answered 400 because the message was malformed."),
    CounterSpec("requests_sent", "Service -> app requests sent."),
    CounterSpec("requests_failed", "Service -> app requests that ended without a complete answer."),
    CounterSpec("responses_unknown", "Responses naming an AckId never sent on that tunnel."),
    CounterSpec("responses_late", "Responses for a request already answered or abandoned."),
    CounterSpec("messages_unknown", "Well-formed messages of a type this server does not know (ignored)."),
    CounterSpec("messages_unexpected", "Control messages only a service sends, received from an app (ignored)."),
    CounterSpec("frames_malformed", "Frames that could not be read (the tunnel was closed with 1007)."),
    CounterSpec("frames_text", "Text frames (the tunnel was closed with 1003)."),
    CounterSpec("slow_consumers", "Tunnels closed because the app stopped reading."),
    CounterSpec("idle_timeouts", "Tunnels closed because the app went silent past idle_timeout."),
)

_LOG_INTERVAL = 5.0


class _LogOnce:
    """At most one log line per key per interval (bad input must not flood the log)."""

    def __init__(self) -> None:
        self._last: dict[Any, float] = {}

    def log(self, key: Any, level: int, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -math.inf) < _LOG_INTERVAL:
            return
        if len(self._last) > 256:
            self._last.clear()
        self._last[key] = now
        log.log(level, msg, *args)


# ---- errors --------------------------------------------------------------------------------


class TunnelError(Exception):
    """A service -> app request that could not complete. ``str()`` says why."""


class TunnelUnavailable(TunnelError):
    """No tunnel is connected for the hub (or for the pinned app server)."""


class TunnelLost(TunnelError):
    """The tunnel carrying the request closed before its answer was complete."""


class TunnelBusy(TunnelError):
    """The tunnel has too many requests in flight, or an answer over its buffer bound."""


# ---- service -> app: answers ------------------------------------------------------------


class _Pending:
    """One service -> app request waiting for (the rest of) its answer."""

    __slots__ = ("ack_id", "buffered", "limit", "receive", "send")

    def __init__(self, ack_id: int, limit: int) -> None:
        self.ack_id = ack_id
        self.send, self.receive = trio.open_memory_channel(math.inf)
        self.buffered = 0
        self.limit = limit

    def feed(self, item: tp.HttpResponse | TunnelError) -> bool:
        """Queue a part (or the failure); False if that passes the buffer bound."""
        if isinstance(item, tp.HttpResponse) and item.content:
            self.buffered += len(item.content)
            if self.buffered > self.limit:
                return False
        try:
            self.send.send_nowait(item)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        return True

    def finish(self) -> None:
        self.send.close()


class TunnelResponse:
    """The answer to a service -> app request: status and headers from its first part, the
    body as it arrives (``chunks``/``read``). ``close`` abandons the rest."""

    def __init__(self, tunnel: Tunnel, pending: _Pending, first: tp.HttpResponse) -> None:
        self.tunnel = tunnel
        self.status = first.status_code
        self.headers: dict[str, tuple[str, ...]] = dict(first.headers)
        self._pending = pending
        self._first: bytes | None = first.content or None
        self.complete = not first.not_completed

    @property
    def server(self) -> str:
        """The app server that answered (``Tunnel.server``): pin later requests to it."""
        return self.tunnel.server

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, part by part. Raises ``TunnelLost``/``TunnelBusy`` if it breaks off."""
        pending = self._pending
        try:
            if self._first:
                first, self._first = self._first, None
                pending.buffered -= len(first)
                yield first
            while True:
                try:
                    item = await pending.receive.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    return
                if isinstance(item, TunnelError):
                    raise item
                if item.content:
                    pending.buffered -= len(item.content)
                    yield item.content
                if not item.not_completed:
                    self.complete = True
                    return
        finally:
            self.close()

    async def read(self) -> bytes:
        """The whole body (bounded by the tunnel's per-answer buffer limit)."""
        parts = [chunk async for chunk in self.chunks()]
        return b"".join(parts)

    def close(self) -> None:
        """Stop waiting for the rest (later parts are counted as late and dropped)."""
        self.tunnel._forget(self._pending.ack_id)
        self._pending.receive.close()


# ---- app -> service: replies -------------------------------------------------------------


@attrs.frozen
class TunnelReply:
    """What an operation answers through a tunnel. With ``stream``, ``body`` goes first
    (``NotCompleted``), then each chunk of ``stream``, then an empty final part."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    stream: AsyncIterator[bytes] | None = None

    @classmethod
    def from_response(cls, response: Response) -> TunnelReply:
        return cls(response.status, response.body, response.headers)

    @classmethod
    def error(cls, status: int, code: str, message: str) -> TunnelReply:
        return cls.from_response(rest.error_response(status, code, message))


#: ``handler(hub, request) -> TunnelReply`` for an operation REST does not have (or serves
#: differently for some targets); None hands the request to the REST router.
Operation = Callable[[str, Request], Awaitable[TunnelReply | None]]


def _header_map(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        out.setdefault(name, []).append(value)
    return out


def to_request(message: tp.HttpRequest, *, max_body: int) -> Request | TunnelReply:
    """The HTTP front's ``Request`` for a tunnelled request, or the error reply (the adapter
    between the tunnel and the REST router). The URL's scheme and host are ignored: the
    package names a dummy ``https://host``."""
    body = message.content or b""
    if len(body) > max_body:
        return TunnelReply.error(413, "PayloadTooLarge", f"the body is {len(body)} bytes; at most {max_body} are accepted")
    method = message.method.upper()
    if not method or not method.isalpha() or len(method) > 16:
        return TunnelReply.error(400, "BadRequest", f"invalid HttpMethod {message.method[:20]!r}")
    try:
        parts = urllib.parse.urlsplit(message.url)
    except ValueError as exc:
        return TunnelReply.error(400, "BadRequest", f"invalid Url {message.url[:120]!r}: {exc}")
    raw_path = parts.path or "/"
    if not raw_path.startswith("/") or any(ord(c) < 0x21 or ord(c) == 0x7F for c in raw_path):
        return TunnelReply.error(400, "BadRequest", f"invalid Url {message.url[:120]!r}: the path must be absolute")
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True) if parts.query else {}
    # As the HTTP front hands them over: names lower-cased, values as latin-1 text of their bytes.
    headers = tuple((name.lower(), value.encode("utf-8", "surrogateescape").decode("latin-1"))
                    for name, values in message.headers.items()
                    if name.lower() not in _HOP_HEADERS for value in values)
    target = raw_path + (f"?{parts.query}" if parts.query else "")
    return Request(method=method, target=target, path=urllib.parse.unquote(raw_path), raw_path=raw_path,
                   query=query, headers=headers, body=body)


# ---- one tunnel -------------------------------------------------------------------------------


class Tunnel:
    """One connected tunnel (create through ``TunnelEdge``; ``run`` owns its socket)."""

    def __init__(self, edge: TunnelEdge, hub: str, server: str, target: str | None) -> None:
        self.edge = edge
        self.hub = hub
        #: Our id for it (sent as ``ConnectionConnected.ConnectionId``).
        self.id = secrets.token_urlsafe(12)
        #: The app server it belongs to: the token's ``sub`` (one per app process).
        self.server = server
        #: The ``target`` query it was opened with (after a Reconnect/Rebalance), if any.
        self.target = target
        self.ws: WebSocket | None = None
        self.opened_at = time.time()
        self._next_ack = 0
        self._pending: dict[int, _Pending] = {}
        self._requests_send, self._requests_receive = trio.open_memory_channel(MAX_QUEUED_REQUESTS)
        self._streams = trio.Semaphore(MAX_STREAMS)
        self._nursery: trio.Nursery | None = None
        self._sent_since_tick = False
        self.requests_received = 0
        self.requests_sent = 0

    def __repr__(self) -> str:
        return f"<Tunnel {self.id} hub={self.hub!r} server={self.server!r}>"

    @property
    def usable(self) -> bool:
        ws = self.ws
        return ws is not None and not ws.closing

    # ---- sending (no checkpoints) ------------------------------------------------------

    def send(self, message: tp.Message, *, reply: bool = False) -> bool:
        """Queue one message. False if the tunnel is closing, or its outbox is full (then it
        is closed as a slow consumer)."""
        ws = self.ws
        if ws is None or ws.closing:
            return False
        if ws.send_nowait(encode_frame(tp.encode(message), text=False), reply=reply):
            self._sent_since_tick = True
            return True
        self.edge.counters["slow_consumers"] += 1
        log.warning("tunnel %s (hub %r): closed, the app server is not reading (outbox full)", self.id, self.hub)
        self.close(CloseCode.SLOW_CONSUMER, "slow consumer: the tunnel's outbound queue is full", discard=True)
        return False

    def close(self, code: int = CloseCode.NORMAL, reason: str = "", *, discard: bool = False) -> None:
        """Close the tunnel's socket (the app reconnects); its pending requests fail now, not
        when the socket is finally gone. No checkpoint."""
        if self.ws is not None:
            self.ws.close(code, reason, discard=discard)
        self._fail_pending(TunnelLost(f"tunnel {self.id} of hub {self.hub!r} is closing ({code} {reason})"))

    def reconnect(self, *, endpoint: str | None = None, target: str | None = None, message: str = "") -> bool:
        """Ask the app to replace this tunnel with one to ``endpoint`` (``target=``)."""
        return self.send(tp.ConnectionReconnect(target, endpoint, message))

    def rebalance(self, *, endpoint: str | None = None, target: str | None = None, message: str = "") -> bool:
        """Ask the app to open one more tunnel to ``endpoint`` (``target=``), keeping this one."""
        return self.send(tp.ConnectionRebalance(target, endpoint, message))

    def stop(self, message: str = "") -> bool:
        """Ask the app to stop this tunnel for good (``ConnectionClose``; it does not reconnect
        it, and an app whose last tunnel stops ends its service link)."""
        return self.send(tp.ConnectionClose(message))

    # ---- service -> app ---------------------------------------------------------------

    async def request(self, method: str, url: str, headers: Mapping[str, Sequence[str]] | None = None,
                      content: bytes | None = None, *, max_buffered: int | None = None) -> TunnelResponse:
        """Send one request to the app and wait for the first part of its answer. Raises
        ``TunnelLost``/``TunnelBusy``. Cancelling abandons the request. Checkpoint."""
        if not self.usable:
            raise TunnelLost(f"tunnel {self.id} of hub {self.hub!r} is closed")
        if len(self._pending) >= MAX_PENDING:
            raise TunnelBusy(f"tunnel {self.id} of hub {self.hub!r} has {MAX_PENDING} requests in flight")
        self._next_ack += 1
        ack = self._next_ack
        pending = _Pending(ack, max_buffered if max_buffered is not None else self.edge.max_buffered)
        self._pending[ack] = pending
        try:
            message = tp.HttpRequest(ack, method, url, {k: tuple(v) for k, v in (headers or {}).items()}, content)
            if not self.send(message):
                raise TunnelLost(f"tunnel {self.id} of hub {self.hub!r} closed before the request could be sent")
            self.requests_sent += 1
            self.edge.counters["requests_sent"] += 1
            try:
                first = await pending.receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                raise TunnelLost(f"tunnel {self.id} of hub {self.hub!r} closed before answering") from None
            if isinstance(first, TunnelError):
                raise first
        except BaseException:
            self.edge.counters["requests_failed"] += 1
            self._forget(ack)
            pending.receive.close()
            raise
        response = TunnelResponse(self, pending, first)
        if response.complete:
            self._forget(ack)
        return response

    def _forget(self, ack: int) -> None:
        pending = self._pending.pop(ack, None)
        if pending is not None:
            pending.finish()

    def _fail_pending(self, error: TunnelError) -> None:
        pending, self._pending = self._pending, {}
        for item in pending.values():
            item.feed(error)
            item.finish()
        if pending:
            self.edge.counters["requests_failed"] += len(pending)

    def _on_response(self, message: tp.HttpResponse) -> None:
        pending = self._pending.get(message.ack_id)
        if pending is None:
            if 0 < message.ack_id <= self._next_ack:
                self.edge.counters["responses_late"] += 1
            else:
                self.edge.counters["responses_unknown"] += 1
                self.edge.log_once.log(
                    ("unknown-ack", self.id), logging.WARNING,
                    "tunnel %s (hub %r): a response names AckId %d, which this tunnel never sent (dropped)",
                    self.id, self.hub, message.ack_id)
            return
        if not pending.feed(message):
            pending.feed(TunnelBusy(f"the answer to request {message.ack_id} passed {pending.limit} buffered bytes"))
            self._forget(message.ack_id)
            return
        if not message.not_completed:
            self._forget(message.ack_id)

    # ---- the socket ------------------------------------------------------------------

    async def run(self, ws: WebSocket) -> None:
        """Own the tunnel until its socket ends. Checkpoint."""
        self.ws = ws
        edge = self.edge
        await edge._announce(self)  # before the tunnel takes requests or says it is connected
        edge._add(self)
        ws.farewell = self._farewell
        try:
            self.send(tp.ConnectionConnected(self.id, self.server))
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._serve_requests)
                nursery.start_soon(self._keepalive)
                await ws.run(self._on_frame)
                nursery.cancel_scope.cancel()
        finally:
            edge._remove(self)
            self._fail_pending(TunnelLost(f"tunnel {self.id} of hub {self.hub!r} closed "
                                          f"(code {ws.close_code}) before answering"))
            edge.counters["tunnels_closed"] += 1
            log.info("tunnel %s (hub %r, app server %s) closed with %s %s", self.id, self.hub, self.server,
                     ws.close_code, ws.close_reason)

    def _farewell(self, code: int, reason: str) -> None:
        log.warning("tunnel %s (hub %r): closed by the transport: %d %s", self.id, self.hub, code, reason)

    async def _on_frame(self, data: str | bytes) -> None:
        edge = self.edge
        if isinstance(data, str):
            edge.counters["frames_text"] += 1
            log.warning("tunnel %s (hub %r): a text frame; the tunnel carries binary frames only (closing)",
                        self.id, self.hub)
            self.close(CloseCode.WRONG_FRAME_TYPE, "the tunnel carries binary frames only")
            return
        try:
            message = tp.decode(data, max_bytes=edge.max_frame_bytes)
        except tp.TunnelProtocolError as exc:
            self._on_bad_frame(exc)
            return
        if isinstance(message, tp.HttpRequest):
            self.requests_received += 1
            await self._requests_send.send(message)  # full queue: stop reading (backpressure)
        elif isinstance(message, tp.HttpResponse):
            self._on_response(message)
        elif isinstance(message, tp.ServiceStatus):
            log.debug("tunnel %s: status from the app: %s", self.id, message.message)
        elif isinstance(message, tp.Unknown):
            edge.counters["messages_unknown"] += 1
            edge.log_once.log(("unknown-type", message.type), logging.INFO,
                              "tunnel %s (hub %r): ignored a message of unknown type %d", self.id, self.hub,
                              message.type)
        else:
            edge.counters["messages_unexpected"] += 1
            edge.log_once.log(("unexpected", type(message).__name__), logging.INFO,
                              "tunnel %s (hub %r): ignored %s, which only a service sends", self.id, self.hub,
                              type(message).__name__)

    def _on_bad_frame(self, exc: tp.TunnelProtocolError) -> None:
        edge = self.edge
        if exc.kind is tp.MessageType.HTTP_REQUEST and exc.ack_id is not None:
            edge.counters["requests_invalid"] += 1
            edge.log_once.log(("bad-request", self.id), logging.WARNING, "tunnel %s (hub %r): %s (answered 400)",
                              self.id, self.hub, exc.message)
            reply = TunnelReply.error(400, "InvalidTunnelMessage", exc.message)
            self.send(tp.HttpResponse(exc.ack_id, reply.status, _header_map(reply.headers), reply.body), reply=True)
            return
        if exc.kind is tp.MessageType.HTTP_RESPONSE and exc.ack_id is not None and exc.ack_id in self._pending:
            self._pending[exc.ack_id].feed(TunnelError(
                f"the app server answered request {exc.ack_id} with a malformed response: {exc.message}"))
            self._forget(exc.ack_id)
            return
        edge.counters["frames_malformed"] += 1
        log.warning("tunnel %s (hub %r): malformed frame: %s (closing)", self.id, self.hub, exc.message)
        self.close(CloseCode.INVALID_PAYLOAD, f"malformed tunnel frame: {exc.message}")

    async def _serve_requests(self) -> None:
        async for message in self._requests_receive:
            await self._serve(message)

    async def _serve(self, message: tp.HttpRequest) -> None:
        try:
            reply = await self.edge.dispatch(self, message)
        except Exception:
            log.exception("tunnel %s (hub %r): %s %s failed", self.id, self.hub, message.method, message.url[:200])
            reply = TunnelReply.error(500, "InternalServerError", "the request failed inside the service")
        self.edge.counters["requests_served"] += 1
        streamed = reply.stream is not None
        self.send(tp.HttpResponse(message.ack_id, reply.status, _header_map(reply.headers), reply.body or None,
                                  not_completed=streamed, local_routing=message.local_routing,
                                  channel_name=message.channel_name), reply=True)
        if streamed:
            self.edge.counters["requests_streamed"] += 1
            await self._streams.acquire()  # bounded; the queue waits for a free slot
            assert self._nursery is not None
            self._nursery.start_soon(self._pump, message, reply)

    async def _pump(self, message: tp.HttpRequest, reply: TunnelReply) -> None:
        """Send a streamed answer's parts, then its final (empty) part."""
        stream = reply.stream
        try:
            async for chunk in stream:  # type: ignore[union-attr]
                if chunk and not self.send(tp.HttpResponse(message.ack_id, reply.status, {}, bytes(chunk), True,
                                                           message.local_routing, message.channel_name),
                                           reply=True):
                    return
        except Exception:
            log.exception("tunnel %s (hub %r): the streamed answer to %s %s failed", self.id, self.hub,
                          message.method, message.url[:200])
        finally:
            self._streams.release()
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with trio.CancelScope(shield=True):
                    try:
                        await aclose()
                    except Exception:
                        log.exception("closing a streamed answer failed")
        self.send(tp.HttpResponse(message.ack_id, reply.status, {}, None, False, message.local_routing,
                                  message.channel_name), reply=True)

    async def _keepalive(self) -> None:
        """Ping; close a tunnel that stopped reading or went silent; keep an idle one alive."""
        server = self.edge.config.server
        tick = max(0.05, min(server.keepalive_interval, server.stall_timeout / 2))
        ws = self.ws
        assert ws is not None
        last_status = trio.current_time()
        while not ws.closing:
            await trio.sleep(tick)
            now = trio.current_time()
            blocked = ws.send_blocked_since
            if blocked is not None and now - blocked > server.stall_timeout:
                self.edge.counters["slow_consumers"] += 1
                log.warning("tunnel %s (hub %r): closed, the app server took none of our data for %.1f s",
                            self.id, self.hub, now - blocked)
                self.close(CloseCode.SLOW_CONSUMER, "slow consumer: the app server stopped reading", discard=True)
                return
            if now - ws.last_received > server.idle_timeout:
                self.edge.counters["idle_timeouts"] += 1
                log.warning("tunnel %s (hub %r): closed, nothing received for %.0f s", self.id, self.hub,
                            now - ws.last_received)
                self.close(CloseCode.GOING_AWAY, "idle timeout: the app server stopped answering pings")
                return
            if now - last_status >= server.keepalive_interval:
                ws.ping_nowait()
                if not self._sent_since_tick:
                    self.send(tp.ServiceStatus("keepalive"))
                self._sent_since_tick = False
                last_status = now

    def statistics(self) -> dict:
        return {
            "id": self.id, "hub": self.hub, "server": self.server, "target": self.target,
            "opened_at": self.opened_at, "pending": len(self._pending),
            "requests_received": self.requests_received, "requests_sent": self.requests_sent,
            "socket": self.ws.statistics() if self.ws is not None else None,
        }


# ---- the edge: registry, routing, the HTTP entry --------------------------------------------


class TunnelEdge:
    """Every tunnel of this fabric, by hub; the ``/server/tunnel`` endpoint."""

    def __init__(self, registry: HubRegistry) -> None:
        self.registry = registry
        self.counters = Counters(TUNNEL_COUNTERS)
        self.log_once = _LogOnce()
        self._hubs: dict[str, dict[str, Tunnel]] = {}  # by lower-cased hub name, then tunnel id
        self._changed: dict[str, trio.Event] = {}
        self._operations: dict[tuple[str, tuple[str, ...]], Operation] = {}
        self._listeners: list[Any] = []
        #: Per hub: connection id -> the app server that accepted it (insertion-ordered).
        self._pins: dict[str, dict[str, str]] = {}

    # ---- settings (read at use: a configuration reload applies to open tunnels) -----

    @property
    def config(self) -> FabricConfig:
        return self.registry.config

    @property
    def max_body(self) -> int:
        return self.config.server.max_request_body_bytes

    @property
    def max_frame_bytes(self) -> int:
        server = self.config.server
        return max(server.max_request_body_bytes, server.max_message_bytes) + ENVELOPE_BYTES

    @property
    def max_buffered(self) -> int:
        """Bytes of one streamed answer buffered before its reader takes them."""
        return 4 * self.config.server.max_message_bytes + ENVELOPE_BYTES

    # ---- extension point -----------------------------------------------------------

    def add_operation(self, method: str, action: str, handler: Operation) -> None:
        """Serve ``METHOD /api/hubs/{hub}/{action}`` through the tunnels with
        ``handler(hub, request)`` before the REST router. ``action`` is one path segment
        (``:invoke``) or several, where ``{name}`` matches any one segment
        (``connections/{connectionId}/:send``); literal segments compare case-insensitively.
        A handler answering None leaves the request to the REST router."""
        pattern = tuple(part if part.startswith("{") else part.lower() for part in action.strip("/").split("/"))
        self._operations[(method.upper(), pattern)] = handler

    def add_listener(self, listener: Any) -> None:
        """Tell ``listener`` about tunnels coming and app servers going, with whichever of
        these methods it has (no checkpoint; they must not block):
        ``tunnel_opened(hub, server)`` and ``server_lost(hub, server)`` (the last tunnel of
        that app server for that hub closed); and an async ``tunnel_started(hub, server)``,
        awaited before the app server hears that its tunnel is connected."""
        self._listeners.append(listener)

    def _operation(self, method: str, segments: list[str]) -> Operation | None:
        rest_of = [urllib.parse.unquote(part) for part in segments[3:]]
        for (op_method, pattern), handler in self._operations.items():
            if op_method != method or len(pattern) != len(rest_of):
                continue
            if all(p.startswith("{") or p == part.lower() for p, part in zip(pattern, rest_of)):
                return handler
        return None

    # ---- routing ---------------------------------------------------------------------

    @staticmethod
    def owns(request: Request) -> bool:
        return request.path.rstrip("/") == TUNNEL_PATH

    def tunnels(self, hub: str | None = None) -> list[Tunnel]:
        """Live tunnels (of one hub)."""
        if hub is not None:
            return [t for t in self._hubs.get(hub.lower(), {}).values() if t.usable]
        return [t for tunnels in self._hubs.values() for t in tunnels.values() if t.usable]

    def servers(self, hub: str) -> dict[str, list[Tunnel]]:
        """The app servers with a live tunnel for ``hub``, and their tunnels."""
        out: dict[str, list[Tunnel]] = {}
        for tunnel in self.tunnels(hub):
            out.setdefault(tunnel.server, []).append(tunnel)
        return out

    def pick(self, hub: str, key: str = "", server: str | None = None) -> Tunnel | None:
        """The tunnel for ``key`` (rendezvous hashing over the live tunnels, of ``server``
        only when given), or None."""
        candidates = [t for t in self.tunnels(hub) if server is None or t.server == server]
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        return max(candidates, key=lambda t: hash((key, t.id)))

    async def wait_for_tunnel(self, hub: str, server: str | None = None) -> Tunnel:
        """Wait until ``hub`` (and ``server``, if given) has a live tunnel. Checkpoint."""
        while True:
            tunnel = self.pick(hub, "", server)
            if tunnel is not None:
                await trio.lowlevel.checkpoint()
                return tunnel
            event = self._changed.setdefault(hub.lower(), trio.Event())
            await event.wait()

    async def request(self, hub: str, method: str, url: str, headers: Mapping[str, Sequence[str]] | None = None,
                      content: bytes | None = None, *, key: str = "", server: str | None = None,
                      wait: float = 0.0) -> TunnelResponse:
        """Send one request to an app server of ``hub`` (``server`` pins one) through the
        tunnel ``key`` picks; wait up to ``wait`` seconds for a tunnel to connect. Raises
        ``TunnelUnavailable``, ``TunnelLost``, ``TunnelBusy``. Checkpoint."""
        tunnel = self.pick(hub, key, server)
        if tunnel is None and wait > 0:
            with trio.move_on_after(wait):
                await self.wait_for_tunnel(hub, server)
            tunnel = self.pick(hub, key, server)
        if tunnel is None:
            who = f"app server {server}" if server is not None else "any app server"
            raise TunnelUnavailable(f"no tunnel from {who} is connected for hub {hub!r}")
        return await tunnel.request(method, url, headers, content)

    # ---- which app server a connection belongs to -------------------------------------

    #: Connections remembered per hub; the oldest is forgotten first past it (a hub whose
    #: handlers do not take ``disconnected`` never unpins: this bounds it).
    MAX_PINS = 100_000

    def pin(self, hub: str, connection_id: str, server: str) -> None:
        """Remember that ``server`` accepted the connection (its later events go there)."""
        pins = self._pins.setdefault(hub.lower(), {})
        pins.pop(connection_id, None)
        if len(pins) >= self.MAX_PINS:
            del pins[next(iter(pins))]
        pins[connection_id] = server

    def pinned(self, hub: str, connection_id: str) -> str | None:
        pins = self._pins.get(hub.lower())
        return pins.get(connection_id) if pins else None

    def unpin(self, hub: str, connection_id: str) -> None:
        pins = self._pins.get(hub.lower())
        if pins:
            pins.pop(connection_id, None)

    def transport(self, hub: str, fallback: httpx.AsyncBaseTransport | None = None, *,
                  sticky: str = "prefer") -> TunnelTransport:
        """An httpx transport that sends ``tunnel://`` URLs through ``hub``'s tunnels and
        everything else through ``fallback`` (a default HTTP transport when None); see
        ``TunnelTransport`` for ``sticky``."""
        return TunnelTransport(self, hub, fallback, sticky=sticky)

    def _add(self, tunnel: Tunnel) -> None:
        self._hubs.setdefault(tunnel.hub.lower(), {})[tunnel.id] = tunnel
        self.counters["tunnels_opened"] += 1
        event = self._changed.pop(tunnel.hub.lower(), None)
        if event is not None:
            event.set()
        log.info("tunnel %s opened for hub %r by app server %s%s", tunnel.id, tunnel.hub, tunnel.server,
                 f" (target {tunnel.target})" if tunnel.target else "")
        self._tell("tunnel_opened", tunnel.hub, tunnel.server)

    def _remove(self, tunnel: Tunnel) -> None:
        tunnels = self._hubs.get(tunnel.hub.lower())
        if tunnels is not None:
            if tunnels.pop(tunnel.id, None) is None:
                return
            if not tunnels:
                del self._hubs[tunnel.hub.lower()]
            if not any(t.server == tunnel.server for t in (tunnels or {}).values()):
                self._tell("server_lost", tunnel.hub, tunnel.server)

    async def _announce(self, tunnel: Tunnel) -> None:
        """Listeners' ``tunnel_started(hub, server)``, awaited before the app server is told
        it is connected. Checkpoint."""
        for listener in self._listeners:
            method = getattr(listener, "tunnel_started", None)
            if method is None:
                continue
            try:
                await method(tunnel.hub, tunnel.server)
            except Exception:
                log.exception("tunnel listener %r failed in tunnel_started", listener)

    def _tell(self, what: str, hub: str, server: str) -> None:
        for listener in self._listeners:
            method = getattr(listener, what, None)
            if method is None:
                continue
            try:
                method(hub, server)
            except Exception:
                log.exception("tunnel listener %r failed in %s", listener, what)

    # ---- app -> service dispatch -------------------------------------------------------

    async def dispatch(self, tunnel: Tunnel, message: tp.HttpRequest) -> TunnelReply:
        """Answer one request from an app server: an added operation, or the REST router
        (authenticated: the tunnel is). Checkpoint."""
        request = to_request(message, max_body=self.max_body)
        if isinstance(request, TunnelReply):
            return request
        segments = request.raw_path.strip("/").split("/")
        if len(segments) >= 4 and segments[0] == "api" and segments[1] == "hubs" and self._operations:
            handler = self._operation(request.method, segments)
            if handler is not None:
                hub = urllib.parse.unquote(segments[2])
                if not names.is_valid_hub_name(hub):
                    return TunnelReply.error(400, "InvalidHubName", f"invalid hub name {hub[:80]!r}")
                reply = await handler(hub, request)
                if reply is not None:
                    return reply
        if not request.raw_path.startswith("/api/"):
            return TunnelReply.error(404, "NotFound", f"no such resource: {request.method} {request.raw_path[:200]}")
        reply = TunnelReply.from_response(await rest.handle(self.registry, request, trusted=True))
        return attrs.evolve(reply, body=b"") if request.method == "HEAD" else reply

    # ---- the endpoint ------------------------------------------------------------------

    def _refuse(self, status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
        self.counters["tunnels_refused"] += 1
        self.log_once.log(("refused", code), logging.WARNING, "tunnel refused: %s: %s", code, message)
        return Response.error(status, code, message, headers)

    def authenticate(self, request: Request, hub: str) -> dict:
        """The verified token claims of a tunnel upgrade. Raises ``auth.TokenError``."""
        token = request.query_one("access_token")
        authorization = request.header("authorization")
        if token is None and authorization and authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
        if token is None or not token.strip():
            raise auth.TokenError("MissingToken",
                                  "no access token: pass ?access_token=<JWT> or an 'Authorization: Bearer <JWT>' header")
        server = self.config.server
        claims = auth.verify_rest_token(f"Bearer {token.strip()}", keys=self.registry.access_keys,
                                        request_path=request.raw_path, leeway=server.token_leeway,
                                        public_endpoint=server.public_endpoint)
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        for aud in audiences:
            named = urllib.parse.parse_qs(urllib.parse.urlsplit(aud).query).get("hub")
            if named and all(h.lower() != hub.lower() for h in named):
                raise auth.TokenError("InvalidAudience",
                                      f"the token is for the tunnel of hub {named[0][:80]!r}, not {hub[:80]!r}")
        sub = claims.get("sub")
        if sub is not None and not isinstance(sub, str):
            raise auth.TokenError("InvalidToken", "claim 'sub' (the app server id) must be a string")
        return claims

    async def handle_websocket(self, request: Request) -> Response | WebSocketAccept:
        """A tunnel upgrade: authenticate, then accept. Checkpoint."""
        await trio.lowlevel.checkpoint()
        hub = request.query_one("hub")
        if hub is None:
            return self._refuse(400, "MissingHub", "the tunnel URL needs ?hub=<hub name>")
        if not names.is_valid_hub_name(hub):
            return self._refuse(400, "InvalidHubName", f"invalid hub name {hub[:80]!r}")
        try:
            claims = self.authenticate(request, hub)
        except auth.TokenError as exc:
            return self._refuse(exc.status, exc.code, exc.message,
                                (("www-authenticate", 'Bearer error="invalid_token"'),))
        tunnel = Tunnel(self, hub, claims.get("sub") or "", request.query_one("target"))
        if not tunnel.server:
            tunnel.server = tunnel.id  # no app-server id: the tunnel is its own server
        offered = [p.strip() for p in (request.header("sec-websocket-protocol") or "").split(",") if p.strip()]
        server = self.config.server
        return WebSocketAccept(
            subprotocol=offered[0] if offered else None, run=tunnel.run,
            max_message_bytes=self.max_frame_bytes, max_message_fragments=server.max_message_fragments,
            outbox_max_items=server.outbox_max_messages, outbox_max_bytes=server.outbox_max_bytes,
            close_timeout=server.close_timeout)

    def close_all(self, reason: str = "the service is shutting down") -> None:
        """Close every tunnel with 1001 (the apps reconnect when we are back). No checkpoint."""
        for tunnel in self.tunnels():
            tunnel.close(CloseCode.GOING_AWAY, reason)

    async def aclose(self) -> None:
        """``close_all``, then wait (at most ``close_timeout``) for the sockets to finish."""
        self.close_all()
        with trio.move_on_after(self.config.server.close_timeout):
            while self._hubs:
                await trio.sleep(0.01)

    def statistics(self) -> dict:
        return {
            "tunnels": [t.statistics() for t in self.tunnels()],
            "counters": self.counters.as_dict(),
        }


# ---- service -> app over httpx (tunnel:// event handlers) ---------------------------------------


def uses_tunnel(hub_config: HubConfig) -> bool:
    """Whether some event handler of the hub is a ``tunnel:///...`` URL."""
    return any(h.url_template.lower().startswith(f"{TUNNEL_SCHEME}:") for h in hub_config.event_handlers)


class _TunnelBody(httpx.AsyncByteStream):
    def __init__(self, response: TunnelResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.chunks():
                yield chunk
        except TunnelError as exc:
            raise httpx.ReadError(str(exc), request=self._request) from None

    async def aclose(self) -> None:
        self._response.close()


class TunnelTransport(httpx.AsyncBaseTransport):
    """Sends ``tunnel://`` requests through a hub's tunnels; others through ``fallback``.

    The consistency key is the ``ce-connectionId`` header, so one connection's events share
    a tunnel. The app server that accepted a connection's ``connect`` event is remembered
    until its ``disconnected`` event: ``sticky="prefer"`` sends the connection's later events
    to it while it has a live tunnel (else to any), ``"require"`` only to it (waiting up to
    ``PIN_WAIT`` seconds for it to reconnect; a stateful app such as a Socket.IO server in
    default mode knows the connection only there), ``"off"`` ignores it. The URL the app
    sees is ``http://<host><path>?<query>`` with the host from ``WebHook-Request-Origin``
    (``awps-tunnel`` and the package use only the path). A failure to reach an app is an
    ``httpx.ConnectError`` (the webhook client's ``Unreachable``); an answer that breaks off
    is an ``httpx.ReadError``.
    """

    #: Seconds a ``require``-pinned request waits for its app server to come back.
    PIN_WAIT = 5.0

    def __init__(self, edge: TunnelEdge, hub: str, fallback: httpx.AsyncBaseTransport | None = None, *,
                 sticky: str = "prefer") -> None:
        if sticky not in ("prefer", "require", "off"):
            raise ValueError(f"sticky must be prefer, require or off, got {sticky!r}")
        self.edge = edge
        self.hub = hub
        self.sticky = sticky
        self._fallback = fallback
        self._own_fallback = fallback is None

    def pinned(self, connection_id: str) -> str | None:
        """The app server that accepted the connection, while it is remembered (kept by the
        edge, so a new transport after a configuration reload knows it too)."""
        return self.edge.pinned(self.hub, connection_id)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != TUNNEL_SCHEME:
            if self._fallback is None:
                self._fallback = httpx.AsyncHTTPTransport(trust_env=False)
            return await self._fallback.handle_async_request(request)
        host = url.host or request.headers.get("webhook-request-origin") or "localhost"
        target = url.raw_path.decode("ascii")
        if not target.startswith("/"):
            target = "/" + target
        headers: dict[str, list[str]] = {}
        for name, value in request.headers.multi_items():
            if name.lower() not in _HOP_HEADERS:
                headers.setdefault(name, []).append(value)
        content = await request.aread()
        key = request.headers.get("ce-connectionid", "")
        ce_type = request.headers.get("ce-type", "")
        server, wait = self._route(key)
        try:
            response = await self.edge.request(self.hub, request.method, f"http://{host}{target}", headers,
                                               content or None, key=key, server=server, wait=wait)
        except TunnelError as exc:
            raise httpx.ConnectError(str(exc), request=request) from None
        if key and self.sticky != "off":
            if ce_type == "azure.webpubsub.sys.connect" and 200 <= response.status < 300:
                self.edge.pin(self.hub, key, response.server)
            elif ce_type == "azure.webpubsub.sys.disconnected":
                self.edge.unpin(self.hub, key)
        pairs = [(name, value) for name, values in response.headers.items() for value in values]
        try:
            return httpx.Response(response.status, headers=pairs, stream=_TunnelBody(response, request),
                                  request=request)
        except (TypeError, ValueError) as exc:  # UnicodeEncodeError: a header httpx cannot carry
            # The app's answer is broken, not the fabric: closed (its later parts are dropped,
            # its slot freed) and failed as a broken answer, like one that breaks off.
            response.close()
            raise httpx.RemoteProtocolError(f"the app server answered a header that HTTP cannot carry ({exc})",
                                            request=request) from None

    def _route(self, key: str) -> tuple[str | None, float]:
        server = self.edge.pinned(self.hub, key) if key and self.sticky != "off" else None
        if server is None:
            return None, 0.0
        if self.sticky == "require":
            return server, self.PIN_WAIT
        return (server if self.edge.pick(self.hub, key, server) is not None else None), 0.0

    async def aclose(self) -> None:
        if self._fallback is not None and self._own_fallback:
            await self._fallback.aclose()


def reply_json(status: int, body: Any) -> TunnelReply:
    """A JSON reply (for added operations)."""
    return TunnelReply(status, msgspec.json.encode(body), (("content-type", "application/json; charset=utf-8"),))
