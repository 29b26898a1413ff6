"""The HTTP/1.1 front (h11) on one listening port: plain requests and WebSocket upgrades.

Rules this module keeps:
- Every TCP connection is read by h11 with a bounded head (``max_head_bytes``, the fabric's
  ``[server] max_header_bytes``: the request line, fields and blank line counted however
  their bytes arrive, in one read or many; 431 ``RequestHeaderFieldsTooLarge`` beyond), a
  bounded body (``max_body_bytes``, 413 beyond; a Content-Length over the bound is refused
  from the head, without reading the body), a deadline for the first request head and an
  idle deadline between keep-alive requests. A slow or oversize request ties up only its
  own task.
- A body is read only when the application is to get it: a client that sent ``Expect:
  100-continue`` gets ``100 Continue`` just before the front waits for the body, and none
  when the head already earns a refusal (RFC 9110 section 10.1.1).
- A body costs CPU per h11 ``Data`` event as well as per byte, so the events are bounded
  too (``max_body_chunks`` beyond one per ``BODY_CHUNK_BYTES``; 400 ``InvalidRequest`` and
  close beyond), and the reader yields every ``BODY_EVENTS_PER_YIELD`` events: a body in
  one-byte chunks, many to a read, can neither cost a thousand times its size nor hold the
  loop.
- The request target is origin-form (``/path?query``), absolute-form (``http(s)://host/path
  ?query``: its path and query are used, the target reduced to them, and the Host header
  is left as sent) or ``*`` for OPTIONS; anything else is a 400. The path and the query are
  percent-decoded strictly: a ``%`` that does not start two hex digits, or escapes that do
  not decode as UTF-8, are a 400 ``InvalidRequest`` (a lossy decoding would make different
  paths one, e.g. two group names). ``+`` is a plus in the path and a space in the query.
- A request is either answered with a ``Response`` (keep-alive honoured) or, for a valid
  WebSocket upgrade the application accepts, switched to a ``WebSocket`` whose opening
  handshake we complete here (101, echoed ``Sec-WebSocket-Protocol``). We never negotiate
  extensions.
- The application never sees a malformed request: those get 400 (or 426 for a wrong
  WebSocket version, 505 for an HTTP version other than 1.0 and 1.1, 501 for a method
  longer than ``MAX_METHOD_CHARS``) with a JSON body. A control character (other than tab)
  in a field value is malformed too, though h11 lets it through. An exception in the
  application becomes a 500 with a JSON body and a log line; it never kills the listener.
- An error answer that closes the connection ends with a FIN, not a reset: on an OS socket
  the front shuts down its side and reads and drops what the client still sends (at most
  ``LINGER_SECONDS`` and ``LINGER_BYTES``) before closing, so the unread rest of a refused
  request cannot destroy the answer (RFC 9112 section 9.6).
- An error message quotes at most ``ECHO_CHARS`` characters of any one piece of request
  input: ``Response.error`` cuts every longer word short (``bound_message``), and ``echo``
  does it for messages built elsewhere.
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
  smaller limit (or at once, without ``100 Continue``, when the Content-Length is over it)
  the front stops reading and the application answers the request itself with
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
from .sockets import os_socket, receive_some
from .websocket import CLOSE_TIMEOUT, MAX_MESSAGE_FRAGMENTS, WebSocket, close_stream

log = logging.getLogger("transport.http")

#: The default bound on a request head (request line, fields and the blank line), however its
#: bytes arrive; ``[server] max_header_bytes`` sets it for the fabric (``HttpLimits``).
MAX_HEAD_BYTES = 64 * 1024
RECEIVE_SIZE = 65536
#: The body reader yields to other tasks after this many h11 events in a row.
BODY_EVENTS_PER_YIELD = 64
#: A request body may take one h11 ``Data`` event per this many bytes beyond
#: ``HttpLimits.max_body_chunks`` (so a large body read in small TCP segments still fits).
BODY_CHUNK_BYTES = 256
#: Longest request method the front passes on; a longer one is a 501 (RFC 9112 section 3).
MAX_METHOD_CHARS = 32
#: How much of one piece of request input (a path, a method) an error message quotes.
ECHO_CHARS = 200
#: After an error answer that closes the connection: how long, and how many bytes, the front
#: reads and drops what the client still sends, so that the close is a FIN and not a reset
#: that could destroy the answer before the client reads it (RFC 9112 section 9.6).
LINGER_SECONDS = 2.0
LINGER_BYTES = 1 << 20


@attrs.frozen
class Request:
    method: str
    target: str  # request target as sent (an absolute-form one reduced to its path and query)
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
        """The Azure ``ErrorDetail`` body with an ``x-ms-error-code`` header. The message is
        passed through ``bound_message``: request input it quotes is cut short."""
        return cls.json(status, {"code": code, "message": bound_message(message)},
                        (("x-ms-error-code", code), *headers))


def echo(text: str, limit: int = ECHO_CHARS) -> str:
    """``text`` (request input an error message quotes) cut to ``limit`` characters and an
    ellipsis when longer. No checkpoint."""
    return text if len(text) <= limit else text[:limit] + "\u2026"


def bound_message(message: str) -> str:
    """An error message with every space-separated word longer than ``ECHO_CHARS`` cut short
    (``echo``), and the whole at most four times that: what a message quotes of a request
    (a method, a path) is one word, so a 10,000-character one costs its answer no more than
    200. A message of short words is returned as it is. No checkpoint."""
    if len(message) <= ECHO_CHARS:
        return message
    message = " ".join([echo(word) for word in message.split(" ")])
    return echo(message, 4 * ECHO_CHARS)


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
    #: Largest request head (request line, fields, blank line), however its bytes arrive;
    #: 431 beyond. Also h11's ``max_incomplete_event_size`` (which bounds only heads not yet
    #: complete, and chunked-body lines).
    max_head_bytes: int = MAX_HEAD_BYTES
    #: h11 ``Data`` events (chunks, or reads of a Content-Length body) a request body may
    #: take beyond one per ``BODY_CHUNK_BYTES`` bytes of it; 400 beyond. Each event costs CPU
    #: whatever its size: a body in 1-byte chunks would cost a thousand times its bytes.
    max_body_chunks: int = 4096


class _TargetError(Exception):
    """A request target the front refuses: status, ``ErrorDetail.code`` and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


#: A ``%`` not followed by two hex digits.
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
#: The scheme and authority of an absolute-form target (RFC 9112 section 3.2.2).
_ABSOLUTE = re.compile(r"(?i:https?)://([^/?#]*)")


def _request_target(target: str, method: str = "GET") -> tuple[str, str, str, dict[str, list[str]]]:
    """``(target, path, raw_path, query)`` of a request target: origin-form as sent, the
    path and query of an absolute-form ``http(s)://authority/path?query`` (with the target
    reduced to ``/path?query``), or ``*`` for OPTIONS. The path and the query are
    percent-decoded strictly (``_unquote``). Raises ``_TargetError`` (400) for any other
    form, a malformed escape, or escapes that are not UTF-8. No checkpoint."""
    if target[:1] != "/":
        absolute = _ABSOLUTE.match(target)
        if absolute is not None:
            if not absolute[1] or "@" in absolute[1]:  # RFC 9110 sections 4.2.1 and 4.2.4
                raise _TargetError(400, "BadRequest", "malformed HTTP request: an http URI needs a host "
                                   "and no userinfo")
            target = target[absolute.end():]
            if target[:1] != "/":
                target = "/" + target  # an empty path is "/" (RFC 9110 section 4.2.3)
        elif target == "*" and method == "OPTIONS":
            return target, target, target, {}
        else:
            raise _TargetError(400, "BadRequest", "malformed HTTP request: the request target must be a path "
                               "starting with '/' or an absolute http(s) URI")
    raw_path, _, qs = target.partition("?")
    path = _unquote(raw_path, "path") if "%" in raw_path else raw_path
    return target, path, raw_path, _parse_query(qs) if qs else {}


def _parse_target(target: str) -> tuple[str, str, dict[str, list[str]]]:
    """``(path, raw_path, query)`` of an origin-form target, as ``_request_target`` has them
    (tests build requests with it). Raises ``_TargetError``. No checkpoint."""
    return _request_target(target)[1:]


def _unquote(text: str, where: str) -> str:
    """``text`` percent-decoded strictly: every ``%`` starts an escape of two hex digits and
    the bytes decode as UTF-8, else ``_TargetError`` (400 ``InvalidRequest``). ``+`` is left
    as it is. No checkpoint."""
    if _BAD_ESCAPE.search(text) is not None:
        raise _TargetError(400, "InvalidRequest", f"malformed percent-escape in the request {where}")
    try:
        return urllib.parse.unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise _TargetError(400, "InvalidRequest",
                           f"percent-escapes in the request {where} that are not UTF-8") from None


def _parse_query(qs: str) -> dict[str, list[str]]:
    """``urllib.parse.parse_qs(qs, keep_blank_values=True)`` (``&`` separates fields, ``+`` is
    a space), but strict: a malformed escape or escapes that are not UTF-8, in a name or a
    value, raise ``_TargetError`` where parse_qs would keep the text or put U+FFFD in. Without
    a ``%`` or ``+`` there is nothing to decode, and splitting is all it does."""
    decode = "%" in qs or "+" in qs
    query: dict[str, list[str]] = {}
    for field in qs.split("&"):
        if field:
            name, _, value = field.partition("=")
            if decode:
                name = _unquote(name.replace("+", " "), "query") if "%" in name else name.replace("+", " ")
                value = _unquote(value.replace("+", " "), "query") if "%" in value else value.replace("+", " ")
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
    max_head = limits.max_head_bytes
    conn = None if raw is not None else _h11_connection(max_head)  # made once a head needs h11
    first = True
    handed_off = False
    linger = False  # an error answer went out: read what the client still sends before closing
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
                quick = _quick_upgrade_head(data, max_head) if data else None
                if quick is not None:
                    target, headers, end = quick
                    try:
                        target, path, raw_path, query = _request_target(target)
                    except _TargetError:
                        quick = None  # h11 reads it again, and the refusal is answered below
                if quick is not None:
                    trailing = data[end:]
                    data = None  # not kept while the application decides (a hole in the heap per connection)
                    handed_off = await _upgrade(
                        stream, None, app, Request("GET", target, path, raw_path, query, headers), limits, raw,
                        quick=True, trailing=trailing)
                    return
                conn = _h11_connection(max_head)
                conn.receive_data(data)
            first = False
            # A head already in the kernel is read and parsed without a deadline or a yield.
            event = _next_event_nowait(raw, conn) if raw is not None else h11.NEED_DATA
            if event is h11.NEED_DATA:
                with trio.CancelScope(deadline=deadline) as scope:
                    event = await _next_event(stream, conn, raw)
                if scope.cancelled_caught:
                    if conn.our_state is h11.IDLE and conn.their_state is h11.SEND_BODY:
                        linger = True
                        await _send_simple(stream, conn, Response.error(408, "RequestTimeout", "request body too slow"))
                    return
            if event is None or isinstance(event, h11.ConnectionClosed):
                return
            if isinstance(event, _BadRequest):
                linger = True
                await _send_simple(stream, conn, Response.error(event.status, event.code, event.message))
                return
            if not isinstance(event, h11.Request):  # h11 never does this; close rather than guess
                log.error("h11 gave %r where a request head was due; closing", event)
                return
            refusal = _head_problem(conn, event, max_head)
            headers = []
            length = None
            for k, v in event.headers:
                if refusal is None and _CONTROL_CHARACTER(v) is not None:
                    refusal = Response.error(400, "BadRequest", "malformed HTTP request: a control character "
                                             f"in the value of {echo(k.decode('latin-1'))}")
                if k == b"content-length":
                    length = int(v)
                headers.append((k.decode("latin-1").lower(), v.decode("latin-1")))
            headers = tuple(headers)
            upgrade = _is_upgrade(headers)
            if refusal is None:
                problem = _framing_problem(event, upgrade)
                if problem is not None:
                    refusal = Response.error(400, "BadRequest", problem)
            method = event.method.decode("ascii", "replace")
            if refusal is None:
                try:
                    target, path, raw_path, query = _request_target(event.target.decode("latin-1"), method)
                except _TargetError as exc:
                    refusal = Response.error(exc.status, exc.code, exc.message)
            if refusal is not None:
                linger = True
                await _send_simple(stream, conn, refusal)
                return

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
            # A Content-Length over the limit is refused from the head: no body is read, and a
            # client waiting for 100 Continue gets the refusal instead.
            too_big = length is not None and length > limit
            if not too_big:
                events = 0
                with trio.move_on_after(limits.handshake_timeout) as scope:
                    while True:
                        ev = _h11_event(conn)
                        if ev is h11.NEED_DATA:
                            if conn.client_is_waiting_for_100_continue:
                                await _send_continue(stream, conn)
                            ev = await _next_event(stream, conn)
                        if ev is None or isinstance(ev, (h11.ConnectionClosed, _BadRequest)):
                            if isinstance(ev, _BadRequest):
                                linger = True
                                await _send_simple(stream, conn, Response.error(ev.status, ev.code, ev.message))
                            return
                        if isinstance(ev, h11.Data):
                            if len(body) + len(ev.data) > limit:
                                too_big = True
                                break
                            events += 1
                            if events > limits.max_body_chunks + len(body) // BODY_CHUNK_BYTES:
                                linger = True
                                await _send_simple(stream, conn, Response.error(
                                    400, "InvalidRequest", f"request body sent in too many chunks (more than "
                                    f"{limits.max_body_chunks} beyond one per {BODY_CHUNK_BYTES} bytes)"))
                                return
                            body += ev.data
                            if events % BODY_EVENTS_PER_YIELD == 0:  # many events from one read
                                await trio.lowlevel.checkpoint()
                        elif isinstance(ev, h11.EndOfMessage):
                            break
                if scope.cancelled_caught:
                    linger = True
                    await _send_simple(stream, conn, Response.error(408, "RequestTimeout", "request body not received in time"))
                    return
            if too_big and app_limit is None:
                linger = True
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
                log.exception("HTTP handler failed for %s %s", method, echo(raw_path))
                response = Response.error(500, "InternalServerError", "internal error")
            finally:
                with trio.CancelScope(shield=True):
                    await peer.stop()
            if too_big:
                linger = True
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
            conn.next_head()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return
    finally:
        if not handed_off:
            try:
                if linger and raw is not None:
                    await _linger(stream, raw)
            finally:
                await close_stream(stream)


@attrs.frozen
class _BadRequest:
    status: int
    message: str
    code: str = "BadRequest"


#: A control character h11 lets through in a field value (RFC 9110 section 5.5: a value
#: is visible characters, obs-text, and spaces or tabs between them).
_CONTROL_CHARACTER = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]").search


def _head_problem(conn: "_Connection", event: h11.Request, max_head: int) -> Response | None:
    """The refusal a request head earns before its fields are looked at (its size, its HTTP
    version, its method's length), or None. No checkpoint."""
    if conn.head_too_big():
        return Response.error(431, "RequestHeaderFieldsTooLarge", f"request head larger than {max_head} bytes")
    if event.http_version not in (b"1.1", b"1.0"):
        return Response.error(505, "HTTPVersionNotSupported",
                              f"HTTP/{event.http_version.decode('ascii')} is not supported; use HTTP/1.1")
    if len(event.method) > MAX_METHOD_CHARS:
        return Response.error(501, "NotImplemented", "request method longer than any this server implements")
    return None


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


def _h11_event(conn: _Connection):
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError as exc:
        # h11 hints 501 for a transfer coding it refuses; for us any unframeable body
        # is a 400 (see the module header).
        status = 400 if exc.error_status_hint == 501 else exc.error_status_hint
        if status == 431:  # an incomplete head already over the bound
            return _BadRequest(431, f"request head larger than {conn.max_head} bytes", "RequestHeaderFieldsTooLarge")
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


#: RFC 9110 field line, as h11 matches it (token ":" OWS value OWS; no NUL, no CR or LF),
#: and without the control characters h11 would let through but the front refuses.
_QUICK_FIELD = re.compile(rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*((?:[^\x00-\x20\x7f]+(?:[ \t]+[^\x00-\x20\x7f]+)*)?)[ \t]*")
_QUICK_TARGET = re.compile(rb"[\x21-\x7e]+")


def _quick_upgrade_head(data: bytes, max_head: int = MAX_HEAD_BYTES) -> tuple[str, tuple[tuple[str, str], ...], int] | None:
    """``(target, headers, head length)`` when ``data`` starts with a complete request head
    that is plainly a WebSocket upgrade, else None (h11 then parses it as usual).

    Plainly: ``GET <target> HTTP/1.1``, CRLF line ends only, every line one field as h11's
    own grammar has it (no obsolete line folding), one Host, no Content-Length or
    Transfer-Encoding, no control character in a value, and the Upgrade/Connection pair; the
    head (with its blank line) at most ``max_head`` bytes. h11 accepts every such head and
    gives the same request (names lower-cased, values without the surrounding whitespace),
    at a tenth of the cost; anything else goes to h11, which decides exactly as before. No
    checkpoint.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0 or end + 4 > max_head:
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


class _Connection(h11.Connection):
    """h11's server side, counting the bytes it is given so that a request head can be
    measured however its bytes arrived (h11's ``max_incomplete_event_size`` bounds only a
    head still incomplete: a bigger one that completes in one read would pass)."""

    def __init__(self, max_head: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=max_head)
        self.max_head = max_head
        #: Bytes given to ``receive_data`` so far.
        self.received = 0
        #: Where the current request's head starts in those bytes.
        self.head_start = 0

    def receive_data(self, data: bytes) -> None:
        self.received += len(data)
        super().receive_data(data)

    def head_too_big(self) -> bool:
        """Whether the request head h11 has just given is over ``max_head`` bytes (it ends
        where what h11 still holds begins). Copies what h11 holds only when all received
        since the head began is over the bound. No checkpoint."""
        received = self.received - self.head_start
        return received > self.max_head and received - len(self.trailing_data[0]) > self.max_head

    def next_head(self) -> None:
        """Note where the next request's head starts (after ``start_next_cycle``)."""
        self.head_start = self.received - len(self.trailing_data[0])


def _h11_connection(max_head: int = MAX_HEAD_BYTES) -> _Connection:
    return _Connection(max_head)


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
                data = await receive_some(stream, raw, RECEIVE_SIZE)
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


async def _send_continue(stream, conn: h11.Connection) -> None:
    """``100 Continue``: the client waits for it before it sends the body (RFC 9110
    section 10.1.1). Checkpoint."""
    await stream.send_all(conn.send(h11.InformationalResponse(status_code=100, headers=(), reason=b"Continue")))


async def _linger(stream: trio.abc.Stream, raw: socket.socket) -> None:
    """End our side of the connection (FIN) and read and drop what the client still sends,
    until it closes too, for at most ``LINGER_SECONDS`` and ``LINGER_BYTES``. Closing a
    socket with unread bytes resets the connection, and a reset can destroy the answer we
    just sent before the client reads it (RFC 9112 section 9.6). Checkpoint: yes, unless the
    socket already failed."""
    try:
        raw.shutdown(socket.SHUT_WR)
    except OSError:
        return
    budget = LINGER_BYTES
    with trio.move_on_after(LINGER_SECONDS):
        while budget > 0:
            try:
                data = await receive_some(stream, raw, RECEIVE_SIZE)
            except (OSError, trio.ClosedResourceError, trio.BusyResourceError):
                return
            if not data:
                return
            budget -= len(data)


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
