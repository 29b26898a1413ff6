"""Redis URLs, errors and the RESP3 wire format, sans I/O (for the Redis broker's subscriber).

Rules this module keeps:
- A password never appears in a message or a repr: errors and statistics use
  ``RedisURL.redacted`` (``redis://user:***@host:port/db``).
- URLs follow the IANA ``redis``/``rediss`` schemes
  (https://www.iana.org/assignments/uri-schemes/prov/redis) plus ``unix://`` for a socket
  path; anything else (another scheme, a non-numeric db, an unknown query parameter) is a
  ``RedisURLError`` at construction, never a surprise at connect time.
- The parser reads RESP3 as specified in
  https://github.com/redis/redis-specifications/blob/master/protocol/RESP3.md. It holds at
  most ``max_bytes`` of unparsed input; a longer message is a ``RedisProtocolError`` (the
  connection is then dropped, so one oversized message cannot grow memory without bound).
- Server error replies are values (``RespError``), not exceptions: the caller decides.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from fabric.core.broker import BrokerUnavailable


class RedisBrokerError(Exception):
    """Base class of every error the Redis broker raises on purpose."""


class RedisURLError(RedisBrokerError, ValueError):
    """The Redis URL is malformed or unsupported."""


class RedisUnavailable(RedisBrokerError, BrokerUnavailable):
    """Redis cannot be reached, the connection was lost, or it stopped answering."""


class RedisAuthError(RedisBrokerError):
    """Redis refused our credentials (wrong password or user, or a password is required)."""


class RedisProtocolError(RedisBrokerError):
    """Redis does not speak what we need (RESP3 through HELLO: Redis 6+ or Valkey) or sent
    something we cannot parse."""


class RedisURL:
    """A parsed ``redis://``, ``rediss://`` or ``unix://`` URL."""

    __slots__ = ("db", "host", "password", "path", "port", "scheme", "username")

    def __init__(self, url: str) -> None:
        if not isinstance(url, str) or not url:
            raise RedisURLError("the Redis URL is empty")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise RedisURLError(f"bad Redis URL {_scrub(url)!r}: {e}") from None
        scheme = parts.scheme.lower()
        if scheme not in ("redis", "rediss", "unix"):
            raise RedisURLError(
                f"bad Redis URL {_scrub(url)!r}: the scheme must be redis://, rediss:// or unix://")
        self.scheme = scheme
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password is not None else None
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = sorted(set(query) - {"db"})
        if unknown:
            raise RedisURLError(f"bad Redis URL {_scrub(url)!r}: unknown parameter(s) {', '.join(unknown)}")
        db_text = query.get("db")
        if scheme == "unix":
            self.host = None
            self.port = None
            self.path = unquote(parts.path)
            if not self.path:
                raise RedisURLError(f"bad Redis URL {_scrub(url)!r}: no socket path")
        else:
            if not parts.hostname:
                raise RedisURLError(f"bad Redis URL {_scrub(url)!r}: no host")
            self.host = parts.hostname
            self.port = port if port is not None else 6379
            self.path = None
            path = parts.path.strip("/")
            if path and db_text is None:
                db_text = path
            elif path:
                raise RedisURLError(f"bad Redis URL {_scrub(url)!r}: the db is given twice")
        try:
            self.db = int(db_text) if db_text not in (None, "") else 0
        except ValueError:
            raise RedisURLError(f"bad Redis URL {_scrub(url)!r}: the db must be a number, not {db_text!r}") from None
        if self.db < 0:
            raise RedisURLError(f"bad Redis URL {_scrub(url)!r}: the db must not be negative")

    @property
    def tls(self) -> bool:
        return self.scheme == "rediss"

    @property
    def redacted(self) -> str:
        """The URL with the password replaced by ``***`` (safe for logs and errors)."""
        auth = ""
        if self.username or self.password is not None:
            auth = (self.username or "") + (":***" if self.password is not None else "") + "@"
        if self.scheme == "unix":
            return f"unix://{auth}{self.path}?db={self.db}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{self.scheme}://{auth}{host}:{self.port}/{self.db}"

    def __repr__(self) -> str:
        return f"<RedisURL {self.redacted}>"


def _scrub(url: str) -> str:
    """Hide whatever sits between ``://`` and ``@`` after the first ``:`` (a password),
    without trusting the URL to parse."""
    head, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    auth, _, tail = rest.rpartition("@")
    user, colon, _ = auth.partition(":")
    return f"{head}://{user}{':***' if colon else ''}@{tail}"


# ---- RESP3 --------------------------------------------------------------------------------


class RespError(str):
    """A server error reply (``-ERR ...`` or a blob error), as text."""

    @property
    def code(self) -> str:
        return self.split(" ", 1)[0]


class Push(list):
    """A RESP3 push (out-of-band data: pub/sub messages and subscription confirmations)."""


def encode_command(*args: bytes | str | int) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode("utf-8", "surrogatepass")
        elif isinstance(arg, int):
            arg = b"%d" % arg
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class _Incomplete(Exception):
    pass


_INCOMPLETE = _Incomplete()
#: What ``RespParser.parse`` returns while a value is incomplete (distinct from a RESP null).
NEED_MORE = object()
_MESSAGE_HEAD = b">3\r\n$7\r\nmessage\r\n$"
_MESSAGE_HEAD_LEN = len(_MESSAGE_HEAD)


class RespParser:
    """Incremental RESP3 parser: ``feed(bytes)``, then ``parse()`` until ``NEED_MORE``."""

    __slots__ = ("_buf", "_pos", "max_bytes")

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._buf = b""
        self._pos = 0
        self.max_bytes = max_bytes

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        if self._pos:
            self._buf = self._buf[self._pos:] + data
            self._pos = 0
        elif self._buf:
            self._buf += data
        else:
            self._buf = data
        if len(self._buf) > self.max_bytes:
            raise RedisProtocolError(
                f"a Redis message is larger than the limit of {self.max_bytes} bytes")

    def parse(self) -> Any:
        """The next complete value, or ``NEED_MORE`` when more input is needed."""
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            return NEED_MORE
        try:
            if buf.startswith(_MESSAGE_HEAD, pos):
                # Fast path for the common case, a pub/sub message: >3 message channel payload.
                channel, pos = _bulk(buf, pos + _MESSAGE_HEAD_LEN)
                if pos >= len(buf):
                    return NEED_MORE
                if buf[pos] != 36:  # '$'
                    raise RedisProtocolError("unexpected RESP3 pub/sub message layout")
                data, pos = _bulk(buf, pos + 1)
                value: Any = Push((b"message", channel, data))
            else:
                value, pos = _parse(buf, pos)
        except _Incomplete:
            return NEED_MORE
        except (ValueError, IndexError) as e:
            raise RedisProtocolError(f"malformed RESP3 from Redis: {e}") from None
        self._pos = pos
        if pos == len(buf):
            self._buf = b""
            self._pos = 0
        return value


def _bulk(buf: bytes, pos: int) -> tuple[bytes, int]:
    """A bulk string body after its ``$``: ``<len>\\r\\n<bytes>\\r\\n``."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _INCOMPLETE
    n = int(buf[pos:end])
    start = end + 2
    stop = start + n
    if len(buf) < stop + 2:
        raise _INCOMPLETE
    return buf[start:stop], stop + 2


def _parse(buf: bytes, pos: int) -> tuple[Any, int]:
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _INCOMPLETE
    kind = buf[pos]
    line = buf[pos + 1:end]
    pos = end + 2
    if kind in (36, 61, 33):  # '$' bulk, '=' verbatim, '!' blob error
        n = int(line)
        if n < 0:
            return None, pos
        stop = pos + n
        if len(buf) < stop + 2:
            raise _INCOMPLETE
        value = buf[pos:stop]
        if kind == 61:
            value = value[4:]  # "txt:" or "mkd:"
        elif kind == 33:
            value = RespError(value.decode("utf-8", "replace"))
        return value, stop + 2
    if kind in (42, 62, 126):  # '*' array, '>' push, '~' set
        n = int(line)
        if n < 0:
            return None, pos
        items = Push() if kind == 62 else []
        for _ in range(n):
            item, pos = _parse(buf, pos)
            items.append(item)
        return items, pos
    if kind in (37, 124):  # '%' map, '|' attribute
        n = int(line)
        result = {}
        for _ in range(n):
            key, pos = _parse(buf, pos)
            val, pos = _parse(buf, pos)
            result[key if not isinstance(key, list) else tuple(key)] = val
        if kind == 124:  # attributes annotate the value that follows: skip them
            return _parse(buf, pos)
        return result, pos
    if kind == 43:  # '+'
        return line, pos
    if kind == 45:  # '-'
        return RespError(line.decode("utf-8", "replace")), pos
    if kind in (58, 40):  # ':' integer, '(' big number
        return int(line), pos
    if kind == 95:  # '_' null
        return None, pos
    if kind == 35:  # '#' boolean
        return line == b"t", pos
    if kind == 44:  # ',' double
        return float(line), pos
    raise RedisProtocolError(f"unknown RESP3 type byte {chr(kind)!r}")
