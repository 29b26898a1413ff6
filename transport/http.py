"""The HTTP/1.1 front (h11) on one listening port: plain requests and WebSocket upgrades.

Rules this module keeps:
- Every TCP connection is read by h11 with bounded head size, a bounded body
  (``max_body_bytes``, 413 beyond), a deadline for the first request head and an idle
  deadline between keep-alive requests. A slow or oversize request ties up only its own
  task.
- A request is either answered with a ``Response`` (keep-alive honoured) or, for a valid
  WebSocket upgrade the application accepts, switched to a ``WebSocket`` whose opening
  handshake we complete here (101, echoed ``Sec-WebSocket-Protocol``). We never negotiate
  extensions.
- The application never sees a malformed request: those get 400 (or 426 for a wrong
  WebSocket version) with a JSON body. An exception in the application becomes a 500 with
  a JSON body and a log line; it never kills the listener.
- A request whose body length is not certain is refused with 400 and the connection is
  closed, so nothing after it is ever read as a next request (request smuggling, RFC 9112
  §6.3 and §11.2). h11 already refuses differing Content-Length values and any
  Transfer-Encoding but one ``chunked``; we also refuse Content-Length together with
  Transfer-Encoding (h11 would let chunked win and keep the connection), Transfer-Encoding
  in HTTP/1.0 (§6.1), and a body on an upgrade request (its bytes would go to the
  WebSocket). A transfer coding h11 refuses is a 400 too, not the 501 RFC 9112 §6.1
  suggests: h11 does not tell us whether ``chunked`` was final, and when it is not,
  §6.3 requires 400 and close. Repeated identical Content-Length values are accepted as one
  (RFC 9110 §8.6 allows it; every parser agrees on that length).
- We own the accept loop (not ``trio.serve_listeners``) so that a connection's stream can
  outlive the task that accepted it when the application hands it to a supervisor.
- Connections are served in the order they were accepted: each connection's task takes
  its first step (its request head, when already in the kernel, is read and handed to the
  application) before the next one is started. Two requests a client sends at once on two
  connections (an Engine.IO long-poll GET and the POST that closes the session, in the
  official conformance suite) are thus handled in the order they arrived, as Node does;
  tasks started in one scheduler pass would run in either order (trio reverses a pass's
  order at random).
- Connection setup costs as few scheduler passes as it can: on an OS socket the accept loop
  takes what the kernel has (one yield between two connections, for the order above, and
  none to find the backlog empty), a request head already in
  the kernel is read and parsed without a deadline scope or a yield, reads wait for
  readability and then ``recv`` once, and the 101 goes out in one non-blocking ``send``.
  Every other response goes through ``send_all``, which yields, so a client pipelining
  keep-alive requests cannot hold the loop.
- A handler that holds a request open (a long poll) can learn that its client went away:
  ``request.disconnected`` is an event set when the peer closes the connection while the
  handler still runs. Watching costs a task, so it starts on first access of the property;
  bytes the peer pipelines meanwhile are handed to h11 for the next request, not lost.
- An application may bound a request's body below the front's ``max_body_bytes`` with an
  optional ``body_limit(request) -> int | None`` (the request without its body). Past that
  smaller limit the front stops reading and the application answers the request itself with
  ``body_over_limit`` set and an empty body (e.g. Engine.IO's 413, which keeps its session);
  the connection then closes, as the rest of the body is unread.
"""

from __future__ import annotations

import errno
import http
import logging
import re
import socket
import urllib.parse
from typing import Awaitable, Callable, Protocol

import attrs
import h11
import msgspec
import trio

from .frames import accept_key, valid_client_key
from .sockets import os_socket
from .websocket import CLOSE_TIMEOUT, MAX_MESSAGE_FRAGMENTS, WebSocket, close_stream

log = logging.getLogger("transport.http")

MAX_HEAD_BYTES = 16 * 1024
RECEIVE_SIZE = 65536


@attrs.frozen
class Request:
    method: str
    target: str  # raw request target, as sent
    path: str  # percent-decoded path
    raw_path: str  # path as sent (still percent-encoded)
    query: dict[str, list[str]]
    headers: tuple[tuple[str, str], ...]  # lower-cased names, latin-1 decoded values
    body: bytes = b""
    #: The body passed the application's ``body_limit``: it was not read (``body`` is empty).
    body_over_limit: bool = False
    #: serve_connection's watch on the client (None for requests made elsewhere).
    peer: "_PeerWatch | None" = attrs.field(default=None, eq=False, repr=False)

    @property
    def disconnected(self) -> trio.Event | None:
        """Set when the client closes its connection while the handler is still running.

        None when the request does not come from ``serve_connection`` (nothing watches its
        client). The first access starts the watch (one task, for as long as the handler
        runs), so handlers that never look cost nothing. No checkpoint.
        """
        peer = self.peer
        return None if peer is None else peer.watch()

    def watch_disconnect(self, wake: Callable[[], None]) -> trio.Event | None:
        """``disconnected``, and also call ``wake()`` (no checkpoint, in the watching task)
        when it is set: a handler parked on its own event can wake up for both."""
        peer = self.peer
        return None if peer is None else peer.watch(wake)

    def header(self, name: str) -> str | None:
        name = name.lower()
        values = [v for k, v in self.headers if k == name]
        return ", ".join(values) if values else None

    def query_one(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    @property
    def host(self) -> str:
        return self.header("host") or "localhost"


@attrs.frozen
class Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, status: int, obj: object, headers: tuple[tuple[str, str], ...] = ()) -> "Response":
        return cls(status, msgspec.json.encode(obj), (("content-type", "application/json; charset=utf-8"), *headers))

    @classmethod
    def error(cls, status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()) -> "Response":
        """The Azure ``ErrorDetail`` body with an ``x-ms-error-code`` header."""
        return cls.json(status, {"code": code, "message": message}, (("x-ms-error-code", code), *headers))


@attrs.frozen
class WebSocketAccept:
    """The application's yes to an upgrade: the subprotocol to echo and who runs the socket."""

    subprotocol: str | None
    run: Callable[[WebSocket], Awaitable[None]]
    max_message_bytes: int = 1 << 20
    max_message_fragments: int = MAX_MESSAGE_FRAGMENTS
    outbox_max_items: int = 1024
    outbox_max_bytes: int = 4 << 20
    close_timeout: float = CLOSE_TIMEOUT


class Application(Protocol):
    """What the front serves. It may also have ``body_limit(request) -> int | None``: a
    smaller body bound for that request, whose excess the application answers itself (see
    the module rules)."""

    async def handle_http(self, request: Request) -> Response: ...

    async def handle_websocket(self, request: Request) -> Response | WebSocketAccept: ...


class _PeerWatch:
    """Watches a client for EOF while the application handles one of its requests.

    Started on demand (``watch``) as a system task, so a request whose handler never asks
    costs no task and no nursery; ``stop`` ends it before the front reads the stream again.
    """

    __slots__ = ("conn", "done", "event", "scope", "stream", "wakers")

    #: Pipelined bytes taken from the client while watching; past this the watch stops (the
    #: bytes wait in the kernel, and a close is then noticed when the next request is read).
    MAX_BUFFERED = 64 * 1024

    def __init__(self, stream: trio.abc.Stream, conn: h11.Connection) -> None:
        self.stream = stream
        self.conn = conn
        self.event: trio.Event | None = None
        self.scope: trio.CancelScope | None = None
        self.done: trio.Event | None = None
        self.wakers: list[Callable[[], None]] | None = None

    def watch(self, wake: Callable[[], None] | None = None) -> trio.Event:
        if wake is not None:
            if self.wakers is None:
                self.wakers = []
            self.wakers.append(wake)
        event = self.event
        if event is None:
            event = self.event = trio.Event()
            if self.done is None:  # not stopped yet
                self.scope = trio.CancelScope()
                self.done = trio.Event()
                trio.lowlevel.spawn_system_task(self._watch, name="transport.http peer watch")
        return event

    async def stop(self) -> None:
        """End the watch (if one runs) and wait until it no longer reads the stream. Checkpoint
        only when a watch ran."""
        done = self.done
        if done is None:
            self.done = trio.Event()  # a late ``watch`` starts nothing
            self.done.set()
            return
        if self.scope is not None:
            self.scope.cancel()
        await done.wait()

    async def _watch(self) -> None:
        try:
            with self.scope:  # type: ignore[union-attr]
                buffered = 0
                while buffered < self.MAX_BUFFERED:
                    try:
                        data = await self.stream.receive_some(RECEIVE_SIZE)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
                        data = b""
                    try:
                        self.conn.receive_data(data)  # b"": EOF, so h11 ends the connection after this response
                    except RuntimeError:  # h11 refuses data after EOF: nothing more to watch
                        return
                    if not data:
                        self.event.set()  # type: ignore[union-attr]
                        for wake in self.wakers or ():
                            wake()
                        return
                    buffered += len(data)
        except Exception:  # a system task must never raise
            log.exception("watching a client for EOF failed")
        finally:
            self.done.set()  # type: ignore[union-attr]


@attrs.define
class HttpLimits:
    max_body_bytes: int = 1 << 20
    handshake_timeout: float = 10.0
    keepalive_timeout: float = 60.0


def _parse_target(target: str) -> tuple[str, str, dict[str, list[str]]]:
    raw_path, _, qs = target.partition("?")
    return urllib.parse.unquote(raw_path), raw_path, _parse_query(qs) if qs else {}


def _parse_query(qs: str) -> dict[str, list[str]]:
    """``urllib.parse.parse_qs(qs, keep_blank_values=True)``; without a ``%`` or ``+`` there is
    nothing to decode, and splitting is all it does (a tenth of the cost)."""
    if "%" in qs or "+" in qs:
        return urllib.parse.parse_qs(qs, keep_blank_values=True)
    query: dict[str, list[str]] = {}
    for field in qs.split("&"):
        if field:
            name, _, value = field.partition("=")
            values = query.get(name)
            if values is None:
                query[name] = [value]
            else:
                values.append(value)
    return query


def _is_upgrade(headers: tuple[tuple[str, str], ...]) -> bool:
    upgrade = connection = False
    for k, v in headers:
        if k == "upgrade" and v.strip().lower() == "websocket":
            upgrade = True
        elif k == "connection" and "upgrade" in [t.strip().lower() for t in v.split(",")]:
            connection = True
    return upgrade and connection


async def serve_connection(
    stream: trio.abc.Stream, app: Application, limits: HttpLimits
) -> None:
    """Serve one TCP connection until it closes or is upgraded and finished. Checkpoint: not
    always (an upgrade whose head was already in the kernel may complete without one)."""
    raw = os_socket(stream)
    conn = None if raw is not None else _h11_connection()  # made once a head needs h11
    first = True
    handed_off = False
    try:
        while True:
            deadline = trio.current_time() + (limits.handshake_timeout if first else limits.keepalive_timeout)
            if first and raw is not None:
                # The first head, read from the kernel without a yield when it is there
                # already (a new WebSocket's request usually is), and taken without h11 when
                # it is plainly a WebSocket upgrade (see _quick_upgrade_head).
                data = await _first_data(raw, deadline)
                if data is None:
                    return
                quick = _quick_upgrade_head(data) if data else None
                if quick is not None:
                    target, headers, end = quick
                    trailing = data[end:]
                    data = None  # not kept while the application decides (a hole in the heap per connection)
                    path, raw_path, query = _parse_target(target)
                    handed_off = await _upgrade(
                        stream, None, app, Request("GET", target, path, raw_path, query, headers), limits, raw,
                        quick=True, trailing=trailing)
                    return
                conn = _h11_connection()
                conn.receive_data(data)
            first = False
            # A head already in the kernel is read and parsed without a deadline or a yield.
            event = _next_event_nowait(raw, conn) if raw is not None else h11.NEED_DATA
            if event is h11.NEED_DATA:
                with trio.CancelScope(deadline=deadline) as scope:
                    event = await _next_event(stream, conn, raw)
                if scope.cancelled_caught:
                    if conn.our_state is h11.IDLE and conn.their_state is h11.SEND_BODY:
                        await _send_simple(stream, conn, Response.error(408, "RequestTimeout", "request body too slow"))
                    return
            if event is None or isinstance(event, h11.ConnectionClosed):
                return
            if isinstance(event, _BadRequest):
                await _send_simple(stream, conn, Response.error(event.status, "BadRequest", event.message))
                return
            if not isinstance(event, h11.Request):  # h11 never does this; close rather than guess
                log.error("h11 gave %r where a request head was due; closing", event)
                return
            headers = tuple(
                (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers
            )
            upgrade = _is_upgrade(headers)
            problem = _framing_problem(event, upgrade)
            if problem is not None:
                await _send_simple(stream, conn, Response.error(400, "BadRequest", problem))
                return
            target = event.target.decode("latin-1")
            path, raw_path, query = _parse_target(target)
            method = event.method.decode("ascii", "replace")

            if upgrade:
                handed_off = await _upgrade(stream, conn, app, Request(method, target, path, raw_path, query, headers), limits,
                                            raw)
                return

            # Plain request: read its body, bounded (by the application's smaller limit, if any).
            limit = limits.max_body_bytes
            app_limit = None
            body_limit = getattr(app, "body_limit", None)
            if body_limit is not None:
                app_limit = body_limit(Request(method, target, path, raw_path, query, headers))
                if app_limit is not None and app_limit < limit:
                    limit = max(0, app_limit)
                else:
                    app_limit = None
            body = bytearray()
            too_big = False
            with trio.move_on_after(limits.handshake_timeout) as scope:
                while True:
                    ev = await _next_event(stream, conn)
                    if ev is None or isinstance(ev, (h11.ConnectionClosed, _BadRequest)):
                        if isinstance(ev, _BadRequest):
                            await _send_simple(stream, conn, Response.error(ev.status, "BadRequest", ev.message))
                        return
                    if isinstance(ev, h11.Data):
                        if len(body) + len(ev.data) > limit:
                            too_big = True
                            break
                        body += ev.data
                    elif isinstance(ev, h11.EndOfMessage):
                        break
            if scope.cancelled_caught:
                await _send_simple(stream, conn, Response.error(408, "RequestTimeout", "request body not received in time"))
                return
            if too_big and app_limit is None:
                await _send_simple(stream, conn, Response.error(
                    413, "PayloadTooLarge", f"request body exceeds {limits.max_body_bytes} bytes"))
                return
            peer = _PeerWatch(stream, conn)
            if too_big:  # the application answers its own limit; the unread rest ends the connection
                request = Request(method, target, path, raw_path, query, headers, b"", True, peer)
            else:
                request = Request(method, target, path, raw_path, query, headers, bytes(body), False, peer)
            try:
                response = await app.handle_http(request)
            except Exception:
                log.exception("HTTP handler failed for %s %s", method, raw_path)
                response = Response.error(500, "InternalServerError", "internal error")
            finally:
                with trio.CancelScope(shield=True):
                    await peer.stop()
            if too_big:
                await _send_simple(stream, conn, response)
                return
            if not await _send_response(stream, conn, response, head=(method == "HEAD")):
                return
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return
    finally:
        if not handed_off:
            await close_stream(stream)


@attrs.frozen
class _BadRequest:
    status: int
    message: str


def _framing_problem(event: h11.Request, upgrade: bool) -> str | None:
    """Why this request's body length is ambiguous (to us or to a proxy before us), or None.

    h11 has already refused differing Content-Length values and any Transfer-Encoding other
    than one ``chunked``; its header names are lower-cased.
    """
    chunked = has_length = False
    length = b""
    for name, value in event.headers:
        if name == b"transfer-encoding":
            chunked = True
        elif name == b"content-length":
            has_length = True
            length = value
    if chunked and has_length:
        return ("malformed HTTP request: both Content-Length and Transfer-Encoding; "
                "the body length is ambiguous (RFC 9112 section 6.3)")
    if chunked and event.http_version == b"1.0":
        return "malformed HTTP request: Transfer-Encoding in an HTTP/1.0 request (RFC 9112 section 6.1)"
    if upgrade and (chunked or (has_length and length.lstrip(b"0") != b"")):
        return "malformed HTTP request: an upgrade request must not carry a body"
    return None


def _h11_event(conn: h11.Connection):
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError as exc:
        # h11 hints 501 for a transfer coding it refuses; for us any unframeable body
        # is a 400 (see the module header).
        status = 400 if exc.error_status_hint == 501 else exc.error_status_hint
        return _BadRequest(status, f"malformed HTTP request: {exc}")
    if event is h11.PAUSED:
        return None
    return event


async def _first_data(raw: socket.socket, deadline: float) -> bytes | None:
    """The connection's first bytes (b"" at EOF), or None if none came by ``deadline`` or the
    socket failed. No checkpoint when they are there already."""
    while True:
        try:
            return raw.recv(RECEIVE_SIZE)
        except BlockingIOError:
            pass
        except OSError:
            return None
        with trio.CancelScope(deadline=deadline):
            try:
                await trio.lowlevel.wait_readable(raw)
            except (OSError, trio.ClosedResourceError, trio.BusyResourceError):
                return None
            continue
        return None  # the deadline passed


#: RFC 9110 field line, as h11 matches it (token ":" OWS value OWS; no NUL, no CR or LF).
_QUICK_FIELD = re.compile(rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*((?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?)[ \t]*")
_QUICK_TARGET = re.compile(rb"[\x21-\x7e]+")


def _quick_upgrade_head(data: bytes) -> tuple[str, tuple[tuple[str, str], ...], int] | None:
    """``(target, headers, head length)`` when ``data`` starts with a complete request head
    that is plainly a WebSocket upgrade, else None (h11 then parses it as usual).

    Plainly: ``GET <target> HTTP/1.1``, CRLF line ends only, every line one field as h11's
    own grammar has it (no obsolete line folding), one Host, no Content-Length or
    Transfer-Encoding, and the Upgrade/Connection pair; the head below ``MAX_HEAD_BYTES``.
    h11 accepts every such head and gives the same request (names lower-cased, values
    without the surrounding whitespace), at a tenth of the cost; anything else goes to h11,
    which decides exactly as before. No checkpoint.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0 or end >= MAX_HEAD_BYTES:
        return None
    lines = data[:end].split(b"\r\n")
    line = lines[0]
    if not (line[:4] == b"GET " and line[-9:] == b" HTTP/1.1"):
        return None
    target = line[4:-9]
    if _QUICK_TARGET.fullmatch(target) is None:
        return None
    headers = []
    hosts = 0
    for i in range(1, len(lines)):
        field = _QUICK_FIELD.fullmatch(lines[i])
        if field is None:
            return None
        name = field[1].lower()
        if name == b"host":
            hosts += 1
        elif name == b"content-length" or name == b"transfer-encoding":
            return None
        headers.append((name.decode("latin-1"), field[2].decode("latin-1")))
    if hosts != 1:
        return None
    fields = tuple(headers)
    if not _is_upgrade(fields):
        return None
    return target.decode("latin-1"), fields, end + 4


def _h11_connection() -> h11.Connection:
    return h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)


def _catch_up(conn: h11.Connection, request: Request) -> bool:
    """Let h11 read the head of a request taken by ``_quick_upgrade_head``, to answer it with
    a refusal. The head is rebuilt from the request (the same request line and fields, names
    lower-cased and values trimmed as h11 gives them anyway), so the bytes received need not
    be kept while the application decides."""
    head = [f"{request.method} {request.target} HTTP/1.1\r\n"]
    head.extend(f"{name}: {value}\r\n" for name, value in request.headers)
    head.append("\r\n")
    conn.receive_data("".join(head).encode("latin-1"))
    try:
        return isinstance(conn.next_event(), h11.Request)
    except h11.RemoteProtocolError:
        return False


def _next_event_nowait(raw: socket.socket, conn: h11.Connection):
    """The next event from what h11 holds plus at most one non-blocking ``recv``; NEED_DATA
    when the kernel has nothing yet. No checkpoint."""
    event = _h11_event(conn)
    if event is not h11.NEED_DATA:
        return event
    try:
        data = raw.recv(RECEIVE_SIZE)
    except BlockingIOError:
        return h11.NEED_DATA
    except OSError:
        return None
    conn.receive_data(data)
    return _h11_event(conn)


async def _next_event(stream: trio.abc.Stream, conn: h11.Connection, raw: socket.socket | None = None):
    """The next event, waiting for data as needed. With ``raw`` (the stream's OS socket),
    a read waits for readability and then calls ``recv`` once (trio's ``receive_some``
    would first try a ``recv`` that fails and yield after the one that works)."""
    while True:
        event = _h11_event(conn)
        if event is not h11.NEED_DATA:
            return event
        if raw is not None:
            try:
                await trio.lowlevel.wait_readable(raw)
                data = raw.recv(RECEIVE_SIZE)
            except BlockingIOError:
                continue
            except (OSError, trio.ClosedResourceError, trio.BusyResourceError):
                return None
        else:
            try:
                data = await stream.receive_some(RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
        conn.receive_data(data)


async def _send_response(stream, conn: h11.Connection, response: Response, *, head: bool = False) -> bool:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    if not any(k.lower() == b"content-length" for k, _ in headers):
        headers.append((b"content-length", str(len(response.body)).encode()))
    headers.append((b"server", b"fabric"))
    try:
        data = conn.send(h11.Response(status_code=response.status, headers=headers, reason=_reason(response.status)))
        if response.body and not head:
            data += conn.send(h11.Data(data=response.body))
        data += conn.send(h11.EndOfMessage())
    except h11.LocalProtocolError:
        return False
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return False
    return True


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


async def _send_simple(stream, conn: h11.Connection, response: Response) -> None:
    """Answer and close (for errors where the request stream is not trustworthy)."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    response = attrs.evolve(response, headers=(*response.headers, ("connection", "close")))
    await _send_response(stream, conn, response)


async def _refuse(stream, conn: h11.Connection | None, quick: Request | None, response: Response) -> None:
    if quick is not None:
        conn = _h11_connection()
        if not _catch_up(conn, quick):
            return
    await _send_simple(stream, conn, response)


_SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "


async def _upgrade(stream, conn: h11.Connection | None, app: Application, request: Request, limits: HttpLimits,
                   raw: socket.socket | None = None, *, quick: bool = False,
                   trailing: bytes | None = None) -> bool:
    """Complete or refuse a WebSocket upgrade. True if the stream now belongs to a WebSocket.

    ``quick``: the head was taken by ``_quick_upgrade_head`` (no h11 connection yet: one is
    made only to refuse); ``trailing``: what followed that head."""
    key = request.header("sec-websocket-key")
    if request.method != "GET":
        await _refuse(stream, conn, request if quick else None, Response.error(400, "BadRequest", "WebSocket upgrade must use GET"))
        return False
    if request.header("sec-websocket-version") != "13":
        await _refuse(stream, conn, request if quick else None, Response.error(
            426, "UpgradeRequired", "only WebSocket version 13 is supported",
            (("sec-websocket-version", "13"),)))
        return False
    if key is None or not valid_client_key(key.encode("latin-1")):
        await _refuse(stream, conn, request if quick else None, Response.error(400, "BadRequest", "missing or invalid Sec-WebSocket-Key"))
        return False
    try:
        decision = await app.handle_websocket(request)
    except Exception:
        log.exception("WebSocket handler failed for %s", request.raw_path)
        decision = Response.error(500, "InternalServerError", "internal error")
    if isinstance(decision, Response):
        await _refuse(stream, conn, request if quick else None, decision)
        return False
    # An upgrade request has no body; whatever followed the head belongs to the WebSocket.
    if trailing is None:
        trailing, _closed = conn.trailing_data
    head = _SWITCHING + accept_key(key).encode("ascii")
    if decision.subprotocol:
        head += b"\r\nSec-WebSocket-Protocol: " + decision.subprotocol.encode("latin-1")
    head += b"\r\nServer: fabric\r\n\r\n"
    if raw is not None:  # one non-blocking send; trio's send_all would yield after it
        try:
            sent = raw.send(head)
        except BlockingIOError:
            sent = 0
        except OSError:
            return False
        head = head[sent:]
    if head:
        try:
            await stream.send_all(head)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
    ws = WebSocket(
        stream,
        subprotocol=decision.subprotocol,
        trailing_data=bytes(trailing),
        max_message_bytes=decision.max_message_bytes,
        max_message_fragments=decision.max_message_fragments,
        outbox_max_items=decision.outbox_max_items,
        outbox_max_bytes=decision.outbox_max_bytes,
        close_timeout=decision.close_timeout,
    )
    await decision.run(ws)
    return True


async def serve_tcp(
    app: Application,
    host: str,
    port: int,
    *,
    limits: HttpLimits | None = None,
    reuse_port: bool = False,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on host:port and serve every connection. ``task_status.started(port)``.

    Runs until cancelled. Accept errors from resource exhaustion (EMFILE...) are logged
    and retried after a short pause rather than killing the listener. With ``reuse_port``
    the sockets set ``SO_REUSEPORT``: several processes listen on one port and the kernel
    spreads new connections over them (``fabric serve --workers N``).
    """
    limits = limits or HttpLimits()
    if reuse_port:
        listeners = await _reuse_port_listeners(host, port, backlog=4096)
    else:
        listeners = await trio.open_tcp_listeners(port, host=host, backlog=4096)
    bound_port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_accept_loop, listener, app, limits, nursery)
        task_status.started(bound_port)


async def _reuse_port_listeners(host: str, port: int, *, backlog: int) -> list[trio.SocketListener]:
    """Like ``trio.open_tcp_listeners`` (one socket per address of ``host``), with
    ``SO_REUSEPORT`` set before ``bind``."""
    import socket as stdlib_socket

    infos = await trio.socket.getaddrinfo(host or None, port, type=stdlib_socket.SOCK_STREAM,
                                          flags=stdlib_socket.AI_PASSIVE)
    listeners: list[trio.SocketListener] = []
    try:
        for family, kind, proto, _, address in infos:
            sock = trio.socket.socket(family, kind, proto)
            try:
                sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
                sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEPORT, 1)
                if family == stdlib_socket.AF_INET6:
                    sock.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 1)
                await sock.bind(address)
                sock.listen(backlog)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


_ACCEPT_RETRY = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
#: What accept() may say about a connection that went away before we took it (trio's list):
#: skip it and take the next.
_ACCEPT_SKIP = {getattr(errno, name) for name in (
    "EPERM", "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET", "EHOSTUNREACH",
    "EOPNOTSUPP", "ENETUNREACH", "ENOSR", "ESOCKTNOSUPPORT", "EPROTONOSUPPORT", "ETIMEDOUT", "ECONNRESET",
) if hasattr(errno, name)}


async def _accept_loop(listener: trio.SocketListener, app: Application, limits: HttpLimits, nursery) -> None:
    """Accept connections, each served in its own task, in accept order (see the module
    rules). On an OS socket: ``accept()`` until the kernel has no more (then wait for
    readability), yielding once between two connections; trio's ``accept`` yields after
    each one."""
    async with listener:
        raw = getattr(listener.socket, "_sock", None)
        if not isinstance(raw, socket.socket):
            raw = None
        started = 0  # connections started since the backlog was last found empty
        while True:
            try:
                if raw is None:
                    stream = await listener.accept()
                else:
                    try:
                        sock, _ = raw.accept()
                    except BlockingIOError:
                        started = 0
                        await trio.lowlevel.wait_readable(raw)
                        continue
                    except OSError as exc:
                        if exc.errno in _ACCEPT_SKIP:
                            continue
                        if exc.errno in (errno.EBADF, errno.ENOTSOCK):
                            raise trio.ClosedResourceError from None
                        raise
                    stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            except OSError as exc:
                if exc.errno in _ACCEPT_RETRY:
                    log.error("accept failed (%s); pausing 100 ms", exc)
                    await trio.sleep(0.1)
                    continue
                raise
            if started:
                # Let the connection started last take its first step before this one
                # starts (the order rule in the module header).
                await trio.lowlevel.checkpoint()
            nursery.start_soon(serve_connection, stream, app, limits)
            started += 1
