"""A small pooled HTTP/1.1 client (h11 over trio TCP) for the webhook client's plain-http hops.

The webhook client sends one request after another to the same few origins and reads small
answers; httpx's generality (its request and response models, its transports and their
locks, its byte streams) was about half of the fabric's share of an upstream round trip. This
client does only what that hop needs, and httpx stays for TLS, the tunnel transport and
injected transports (``fabric.appserver.webhook`` chooses).

Rules this module keeps:
- At most ``max_per_origin`` connections per (host, port), in use or idle (a
  ``trio.Semaphore`` each); at most that many idle ones kept, each for ``keepalive_expiry``
  seconds.
- A connection goes back to the pool only after a complete exchange that both sides may
  continue (h11 says both are DONE) and nothing more has arrived: bytes past the answer's
  end (a Content-Length shorter than the body, a body on a 204 or 304, a second answer to
  one request) would otherwise be read as the *next* request's answer, which may be another
  client's. A cancelled, failed or partly read exchange closes it too.
- At most ``MAX_INTERIM`` interim (1xx) answers precede the answer; more is a malformed
  answer (an endless stream of ``100 Continue`` would otherwise be parsed forever).
- An idle connection that has become readable (the server closed it, or sent bytes nobody
  asked for) is closed instead of reused. A request on a reused connection whose send fails
  is retried once on a new connection: the server cannot have received all of it. Nothing
  else is retried (the request may have been handled).
- ``connect_timeout`` bounds connecting; the caller's cancel scope bounds the whole exchange.
- The response head is bounded by h11 (``max_head_bytes``, 100 KiB as httpcore's); the body
  is read by the caller chunk by chunk, so the caller bounds it. Chunked and Content-Length
  bodies, and bodies delimited by the server closing, are all h11's.
- Errors are ``HttpError`` subclasses named after the httpx ones they replace (the webhook
  client's messages name them).
"""

from __future__ import annotations

import collections
import select
import socket
from collections.abc import Sequence

import h11
import trio

from transport import sockets

#: Bytes read per receive.
READ_SIZE = 65536
#: Interim (1xx) answers accepted before the answer (Node's http client has no bound; curl
#: and httpcore none either, but nothing real sends more than one or two).
MAX_INTERIM = 8


class HttpError(Exception):
    """A failed exchange; the connection it used is closed."""


class ConnectError(HttpError):
    """The TCP connection could not be made (refused, unresolvable, or timed out)."""


class WriteError(HttpError):
    """Sending the request failed."""


class ReadError(HttpError):
    """The connection broke while the answer was read."""


class RemoteProtocolError(HttpError):
    """The answer is not valid HTTP/1.1, or the server closed before answering."""


class LocalProtocolError(HttpError):
    """The request cannot be sent as given (h11 refused it: a bad header, say)."""


class _Connection:
    __slots__ = ("h11", "idle_since", "raw", "reused", "stream")

    def __init__(self, stream: trio.SocketStream, max_head_bytes: int) -> None:
        self.stream = stream
        # The OS socket, read and written directly (``transport.sockets``). None for any
        # other stream.
        self.raw = sockets.os_socket(stream)
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_head_bytes)
        self.idle_since = 0.0
        self.reused = False

    def stale(self) -> bool:
        """Readable while idle: the server closed it (EOF) or sent something unasked."""
        raw = self.raw
        if raw is not None:  # one peek: b"" (EOF) or a byte both mean stale
            try:
                raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                return False
            except OSError:
                return True
            return True
        # poll, not select: a busy fabric's descriptors pass select's FD_SETSIZE (1024).
        poller = select.poll()
        try:
            poller.register(self.stream.socket.fileno(), select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self.stream.aclose()


class Response:
    """One answer: ``status``, ``headers`` (raw (name, value) byte pairs as received), and
    ``iter_body()``. Use inside ``HttpPool.request``."""

    __slots__ = ("_conn", "complete", "headers", "status")

    def __init__(self, status: int, headers: Sequence[tuple[bytes, bytes]], conn: _Connection) -> None:
        self.status = status
        self.headers = headers
        self._conn = conn
        self.complete = False

    def iter_body(self) -> Response:
        """The body's chunks (an async iterator; no generator to finalize if left early)."""
        return self

    def __aiter__(self) -> Response:
        return self

    async def __anext__(self) -> bytes:
        if self.complete:
            raise StopAsyncIteration
        event = await _next_event(self._conn)
        if isinstance(event, h11.Data):
            return bytes(event.data)
        if isinstance(event, h11.EndOfMessage):
            self.complete = True
            raise StopAsyncIteration
        raise RemoteProtocolError(f"unexpected {type(event).__name__} in the body")  # pragma: no cover


async def _next_event(conn: _Connection):
    while True:
        try:
            event = conn.h11.next_event()
        except h11.RemoteProtocolError as exc:
            raise RemoteProtocolError(f"malformed answer: {exc}") from None
        if event is h11.NEED_DATA:
            try:
                data = await sockets.receive_some(conn.stream, conn.raw, READ_SIZE)
            except (trio.BrokenResourceError, OSError) as exc:
                raise ReadError(f"the connection broke: {exc}") from None
            try:
                conn.h11.receive_data(data)
            except h11.RemoteProtocolError as exc:  # pragma: no cover - receive_data only buffers
                raise RemoteProtocolError(f"malformed answer: {exc}") from None
            continue
        if isinstance(event, h11.ConnectionClosed):
            raise RemoteProtocolError("the server closed the connection without a complete answer")
        return event


class _Origin:
    __slots__ = ("idle", "slots")

    def __init__(self, limit: int) -> None:
        self.slots = trio.Semaphore(limit)
        self.idle: collections.deque[_Connection] = collections.deque(maxlen=limit)


class HttpPool:
    """Pooled HTTP/1.1 over plain TCP. ``aclose()`` closes the idle connections.

    ``async with pool.request("POST", "127.0.0.1", 8080, b"127.0.0.1:8080", b"/path?q",
    headers, body) as response:`` then ``response.status``, ``response.headers`` and
    ``async for chunk in response.iter_body()``. ``headers`` are sent after ``Host`` in the
    given order and spelling; ``Content-Length`` is added when ``body`` is not None.
    """

    def __init__(self, *, max_per_origin: int = 64, keepalive_expiry: float = 30.0,
                 connect_timeout: float = 20.0, max_head_bytes: int = 100 * 1024, max_origins: int = 256) -> None:
        if max_per_origin < 1:
            raise ValueError("max_per_origin must be at least 1")
        self.max_per_origin = max_per_origin
        self.keepalive_expiry = keepalive_expiry
        self.connect_timeout = connect_timeout
        self.max_head_bytes = max_head_bytes
        self.max_origins = max_origins
        self._origins: dict[tuple[str, int], _Origin] = {}
        self.connections_made = 0
        self.closed = False

    def idle_count(self, host: str, port: int) -> int:
        origin = self._origins.get((host, port))
        return len(origin.idle) if origin else 0

    def request(self, method: str, host: str, port: int, netloc: bytes, target: bytes,
                headers: Sequence[tuple[bytes, bytes]], body: bytes | None) -> _Exchange:
        if self.closed:
            raise RuntimeError("the pool is closed")
        key = (host, port)
        origin = self._origins.get(key)
        if origin is None:
            if len(self._origins) >= self.max_origins:
                self._forget_unused_origins()
            origin = self._origins[key] = _Origin(self.max_per_origin)
        all_headers = [(b"Host", netloc), *headers]
        if body is not None:
            all_headers.append((b"Content-Length", str(len(body)).encode()))
        return _Exchange(self, origin, key, method.encode(), target, all_headers, body)

    def _forget_unused_origins(self) -> None:
        for key, origin in list(self._origins.items()):
            if origin.slots.value == self.max_per_origin:  # nothing in use
                for conn in origin.idle:
                    conn.stream.socket.close()
                del self._origins[key]

    async def _checkout(self, origin: _Origin, key: tuple[str, int]) -> _Connection:
        now = trio.current_time()
        while origin.idle:
            conn = origin.idle.pop()  # most recently used first: least likely to be closed
            if now - conn.idle_since < self.keepalive_expiry and not conn.stale():
                conn.reused = True
                return conn
            await conn.aclose()
        return await self._connect(key)

    async def _connect(self, key: tuple[str, int]) -> _Connection:
        host, port = key
        try:
            with trio.fail_after(self.connect_timeout):
                stream = await trio.open_tcp_stream(host, port)
        except trio.TooSlowError:
            raise ConnectError(f"connecting to {host}:{port} timed out") from None
        except OSError as exc:
            raise ConnectError(str(exc) or type(exc).__name__) from None
        self.connections_made += 1
        return _Connection(stream, self.max_head_bytes)

    def _checkin(self, origin: _Origin, conn: _Connection) -> bool:
        h = conn.h11
        if self.closed or h.our_state is not h11.DONE or h.their_state is not h11.DONE:
            return False
        extra, closed = h.trailing_data
        if extra or closed:  # bytes past the answer's end: never anyone's next answer
            return False
        try:
            h.start_next_cycle()
        except h11.LocalProtocolError:  # pragma: no cover - both DONE is what it needs
            return False
        conn.idle_since = trio.current_time()
        if len(origin.idle) == origin.idle.maxlen:  # pragma: no cover - the semaphore bounds it
            return False
        origin.idle.append(conn)
        return True

    async def aclose(self) -> None:
        self.closed = True
        origins, self._origins = self._origins, {}
        for origin in origins.values():
            while origin.idle:
                await origin.idle.pop().aclose()


class _Exchange:
    __slots__ = ("body", "conn", "headers", "key", "method", "origin", "pool", "response", "target")

    def __init__(self, pool: HttpPool, origin: _Origin, key: tuple[str, int], method: bytes, target: bytes,
                 headers: list[tuple[bytes, bytes]], body: bytes | None) -> None:
        self.pool, self.origin, self.key = pool, origin, key
        self.method, self.target, self.headers, self.body = method, target, headers, body
        self.conn: _Connection | None = None
        self.response: Response | None = None

    async def __aenter__(self) -> Response:
        await self.origin.slots.acquire()
        try:
            self.conn = await self.pool._checkout(self.origin, self.key)
            try:
                await self._send()
            except WriteError:
                if not self.conn.reused:
                    raise
                # The server closed a kept-alive connection before it got the whole request:
                # safe to send once more, on a new connection.
                await self.conn.aclose()
                self.conn = None
                self.conn = await self.pool._connect(self.key)
                await self._send()
            self.response = await self._read_head()
            return self.response
        except BaseException:
            await self._release(ok=False)
            raise

    async def __aexit__(self, exc_type, exc, tb) -> None:
        await self._release(ok=exc_type is None and self.response is not None and self.response.complete)

    async def _release(self, *, ok: bool) -> None:
        conn, self.conn = self.conn, None
        try:
            if conn is not None and not (ok and self.pool._checkin(self.origin, conn)):
                await conn.aclose()
        finally:
            self.origin.slots.release()

    async def _send(self) -> None:
        conn = self.conn
        h = conn.h11
        try:
            data = h.send(h11.Request(method=self.method, target=self.target, headers=self.headers))
            if self.body:
                data += h.send(h11.Data(data=self.body))
            data += h.send(h11.EndOfMessage())
        except h11.LocalProtocolError as exc:
            raise LocalProtocolError(f"the request cannot be sent: {exc}") from None
        try:
            await sockets.send_all(conn.stream, conn.raw, data)
        except (trio.BrokenResourceError, OSError) as exc:
            raise WriteError(f"sending the request failed: {exc}") from None

    async def _read_head(self) -> Response:
        conn = self.conn
        interim = 0
        while True:
            event = await _next_event(conn)
            if isinstance(event, h11.InformationalResponse):
                interim += 1
                if interim > MAX_INTERIM:
                    raise RemoteProtocolError(f"more than {MAX_INTERIM} interim (1xx) answers before the answer")
                continue
            if isinstance(event, h11.Response):
                return Response(event.status_code, event.headers.raw_items(), conn)
            raise RemoteProtocolError(f"unexpected {type(event).__name__} before the answer")  # pragma: no cover
