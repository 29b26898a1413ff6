"""One RESP3 connection to Redis on a trio stream: connect, HELLO, send, read, publish.

Rules this module keeps:
- ``open_connection`` either returns a connection that said ``HELLO 3`` (with AUTH and
  SETNAME) or raises one clear ``RedisBrokerError`` naming the URL with the password
  redacted: unreachable or too slow (``RedisUnavailable``), refused credentials
  (``RedisAuthError``), no RESP3 (``RedisProtocolError``: Redis 6 or later, or Valkey, is
  needed). Whatever fails, the stream is closed.
- Nothing is read ahead: the owner reads (``receive``) when it is ready, so a slow owner
  leaves the data in the kernel and in Redis, never in an unbounded buffer here. What the
  parser holds is bounded by ``max_message_bytes``.
- Replies are matched to commands by order (RESP): ``send(..., expects_reply=True)``
  records the command under the write lock, so the record order is the wire order.
"""

from __future__ import annotations

import collections
import re
import select
import ssl
from typing import Any

import trio

from transport import sockets

from fabric.core.redis_resp import (
    NEED_MORE,
    Push,
    RedisAuthError,
    RedisBrokerError,
    RedisProtocolError,
    RedisUnavailable,
    RedisURL,
    RespError,
    RespParser,
    encode_command,
)

RECEIVE_BYTES = 65536


class StaleConnection(RedisUnavailable):
    """Redis closed this connection while it was idle; nothing was sent on it since, so
    the caller may send the same commands again on a new connection."""


def client_name(kind: str, node_id: str) -> str:
    """A CLIENT SETNAME value (Redis refuses spaces, newlines and "special characters")."""
    return re.sub(r"[^A-Za-z0-9_.:\-]", "_", f"fabric-{kind}:{node_id}")[:100]


def encode_publish(channel: bytes, data: bytes) -> bytes:
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(channel), channel, len(data), data)


class RespConnection:
    """A trio stream, its parser, a write lock, and the replies awaited in the order their
    commands were sent: (a marker chosen by the caller, time sent)."""

    __slots__ = ("_send_lock", "parser", "raw", "replies", "server_version", "stream", "url")

    def __init__(self, url: RedisURL, stream: trio.abc.Stream, max_message_bytes: int) -> None:
        self.url = url
        self.stream = stream
        self.raw = sockets.os_socket(stream)  # None (TLS): use ``stream``
        self.parser = RespParser(max_message_bytes)
        self.replies: collections.deque[tuple[Any, float]] = collections.deque()
        self._send_lock = trio.StrictFIFOLock()
        self.server_version = "?"

    async def send(self, data: bytes, marker: Any = None, expects_reply: bool = False) -> None:
        async with self._send_lock:
            if expects_reply:
                self.replies.append((marker, trio.current_time()))
            await self.stream.send_all(data)

    async def receive(self) -> Any:
        """The next value from Redis (waiting for the socket only when none is buffered)."""
        while True:
            item = self.parser.parse()
            if item is not NEED_MORE:
                return item
            data = await self.receive_some()
            if not data:
                raise RedisUnavailable(f"Redis at {self.url.redacted} closed the connection")
            self.parser.feed(data)

    async def receive_some(self) -> bytes:
        """At most ``RECEIVE_BYTES`` (b"" at EOF), waiting until the socket is readable.
        Called when everything read so far was parsed, so the data is not there yet: wait
        first, then one ``recv`` (``transport.sockets``). Checkpoint: yes."""
        try:
            return await sockets.receive_some(self.stream, self.raw, RECEIVE_BYTES)
        except OSError as e:
            raise trio.BrokenResourceError(f"Redis at {self.url.redacted}: {e}") from e

    async def send_batch(self, data: bytes) -> None:
        """Send all of ``data``: one non-blocking ``send`` and trio's ``send_all`` only for
        what the kernel did not take (``transport.sockets``). Not a checkpoint when the
        kernel took it all (the caller's next ``receive_some`` is). Callers serialize sends
        (the publisher's one writer task)."""
        try:
            await sockets.send_all(self.stream, self.raw, data)
        except OSError as e:
            raise trio.BrokenResourceError(f"Redis at {self.url.redacted}: {e}") from e

    async def publish_batch(self, commands: list[tuple[bytes, bytes]]) -> list[Any]:
        """PUBLISH each (channel, data) in one write, then read as many answers (each the
        channel's subscriber count), returned in order. A refusal (an ACL without publish
        rights, say) raises ``RedisUnavailable``; a connection Redis closed while it was
        idle raises ``StaleConnection`` before sending anything."""
        await self._check_idle_close()
        await self.send_batch(b"".join([encode_publish(c, d) for c, d in commands]))
        results: list[Any] = []
        while len(results) < len(commands):
            item = await self.receive()
            if type(item) is Push:
                continue  # out-of-band data (none is expected on a publisher)
            if isinstance(item, RespError):
                raise RedisUnavailable(f"Redis at {self.url.redacted} refused PUBLISH: {item}")
            results.append(item)
        return results

    async def execute(self, *args: bytes | str | int, timeout: float) -> Any:
        """One command and its answer (a ``RespError`` is returned, not raised). Callers
        serialize their use of a connection (no concurrent ``execute``)."""
        with trio.fail_after(timeout):
            await self.stream.send_all(encode_command(*args))
            while True:
                item = await self.receive()
                if type(item) is not Push:
                    return item

    async def _check_idle_close(self) -> None:
        """Between batches nothing should arrive; if the socket is readable, Redis closed
        it (a restart, a timeout) or sent something we must see before reusing it."""
        sock = getattr(self.stream, "socket", None)  # plain TCP and unix streams only
        if sock is None or not select.select([sock.fileno()], [], [], 0)[0]:
            return
        try:
            data = await self.stream.receive_some(RECEIVE_BYTES)
        except (OSError, trio.BrokenResourceError):
            data = b""
        if not data:
            raise StaleConnection(f"Redis at {self.url.redacted} closed the idle publisher connection")
        self.parser.feed(data)
        while (item := self.parser.parse()) is not NEED_MORE:
            if isinstance(item, RespError):  # e.g. "-ERR ... idle timeout" before a close
                raise StaleConnection(f"Redis at {self.url.redacted} closed the idle publisher connection: {item}")

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


async def _open_stream(url: RedisURL, timeout: float) -> trio.abc.Stream:
    stream: trio.abc.Stream | None = None
    try:
        with trio.fail_after(timeout):
            if url.path is not None:
                stream = await trio.open_unix_socket(url.path)
            else:
                stream = await trio.open_tcp_stream(url.host, url.port)
            if url.tls:
                stream = trio.SSLStream(stream, ssl.create_default_context(), server_hostname=url.host)
                await stream.do_handshake()
        return stream
    except trio.TooSlowError:
        error: Exception = RedisUnavailable(f"cannot connect to Redis at {url.redacted}: no answer within {timeout:g} s")
    except (OSError, trio.BrokenResourceError, ssl.SSLError) as e:
        error = RedisUnavailable(f"cannot connect to Redis at {url.redacted}: {e}")
    if stream is not None:
        await trio.aclose_forcefully(stream)
    raise error


def _hello_error(url: RedisURL, reply: RespError) -> RedisBrokerError:
    text = str(reply)
    if reply.code == "NOAUTH":
        return RedisAuthError(f"Redis at {url.redacted} requires a password (give it in the URL: "
                              f"redis://[user]:PASSWORD@host:port/db): {text}")
    if reply.code == "WRONGPASS" or "password" in text.lower():
        return RedisAuthError(f"Redis at {url.redacted} refused the credentials: {text}")
    if reply.code == "NOPROTO" or "unknown command" in text.lower():
        return RedisProtocolError(f"Redis at {url.redacted} does not speak RESP3 (HELLO 3 failed: {text}); "
                                  "Redis 6 or later, or Valkey, is required")
    return RedisProtocolError(f"Redis at {url.redacted} refused HELLO 3: {text}")


async def open_connection(url: RedisURL, *, name: str, timeout: float, max_message_bytes: int) -> RespConnection:
    """Connect and say HELLO 3 (with AUTH and SETNAME): a clear error for each way it fails."""
    conn = RespConnection(url, await _open_stream(url, timeout), max_message_bytes)
    try:
        args: list[Any] = ["HELLO", 3]
        if url.password is not None or url.username:
            args += ["AUTH", url.username or "default", url.password or ""]
        args += ["SETNAME", name]
        with trio.fail_after(timeout):
            await conn.send(encode_command(*args))
            reply = await conn.receive()
        if isinstance(reply, RespError):
            raise _hello_error(url, reply)
        if not isinstance(reply, dict) or reply.get(b"proto") != 3:
            raise RedisProtocolError(f"Redis at {url.redacted} answered HELLO 3 without switching to RESP3: {reply!r:.200}")
        version = reply.get(b"version", b"?")
        conn.server_version = version.decode("ascii", "replace") if isinstance(version, bytes) else str(version)
        return conn
    except trio.TooSlowError:
        await conn.aclose()
        raise RedisUnavailable(f"Redis at {url.redacted} did not answer HELLO within {timeout:g} s") from None
    except RedisProtocolError as e:
        await conn.aclose()
        if str(e).startswith("Redis at"):
            raise
        raise RedisProtocolError(f"Redis at {url.redacted} answered HELLO 3 with something that is not RESP3: {e}") from None
    except (OSError, trio.BrokenResourceError) as e:
        await conn.aclose()
        raise RedisUnavailable(f"Redis at {url.redacted} closed the connection during the handshake: {e}") from None
    except BaseException:
        await conn.aclose()
        raise
