"""Engine.IO v4 request verification: which HTTP request goes where, and every refusal.

Rules this module keeps (reference: socketio-protocol.md §a.2-§a.4, §a.7; engine.io
``server.ts`` ``verify``/``handshake``/``abortRequest``/``abortUpgrade``/``onWebSocket``):
- The six error codes and their messages are Node's, exactly: 0 ``Transport unknown``,
  1 ``Session ID unknown``, 2 ``Bad handshake method``, 3 ``Bad request``, 4 ``Forbidden``,
  5 ``Unsupported protocol version``.
- Checks run in Node's order: transport known → Origin header characters → with a ``sid``:
  session known, same transport unless it is a WebSocket upgrade → without a ``sid``
  (a handshake): method GET, a ``websocket`` handshake must be an Upgrade, the optional
  ``allow`` hook (code 4), then ``EIO`` must be ``"4"`` (code 5; a missing ``EIO`` counts as 3).
- A refused polling request answers 403 for FORBIDDEN and 400 otherwise, ``application/json``
  ``{"code":<n>,"message":"<text>"}``. A refused WebSocket upgrade is answered with a raw
  ``HTTP/1.1 400 Bad Request`` (``text/html``, the message as body, ``Connection: close``)
  and the TCP connection is then closed; also for FORBIDDEN, as Node.
- Some upgrades are accepted and then closed at once, never refused with a status (the
  official suite needs that for a second WebSocket on an upgraded session, and Node does
  the same for ``transport=polling`` with an Upgrade header).
- An empty ``sid`` is no ``sid`` (Node tests truthiness). For duplicate query parameters
  the last one wins (``URLSearchParams`` → ``Object.fromEntries``).
- Sans-IO: the caller parses nothing but the request line and headers; sessions are looked
  up through a callable, so this module does not know the session class.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from typing import NamedTuple, Protocol
from urllib.parse import parse_qsl

import msgspec

__all__ = [
    "ERROR_MESSAGES",
    "TRANSPORTS",
    "ErrorCode",
    "RequestRejected",
    "Route",
    "RouteKind",
    "parse_query",
    "route_request",
]

TRANSPORTS = ("polling", "websocket")


class ErrorCode(enum.IntEnum):
    """Engine.IO ``Server.errors``."""

    UNKNOWN_TRANSPORT = 0
    UNKNOWN_SID = 1
    BAD_HANDSHAKE_METHOD = 2
    BAD_REQUEST = 3
    FORBIDDEN = 4
    UNSUPPORTED_PROTOCOL_VERSION = 5


ERROR_MESSAGES: Mapping[ErrorCode, str] = {
    ErrorCode.UNKNOWN_TRANSPORT: "Transport unknown",
    ErrorCode.UNKNOWN_SID: "Session ID unknown",
    ErrorCode.BAD_HANDSHAKE_METHOD: "Bad handshake method",
    ErrorCode.BAD_REQUEST: "Bad request",
    ErrorCode.FORBIDDEN: "Forbidden",
    ErrorCode.UNSUPPORTED_PROTOCOL_VERSION: "Unsupported protocol version",
}


class RequestRejected(Exception):
    """An Engine.IO request refused with one of the six error codes.

    ``code``: the ``ErrorCode``; ``message``: the text sent (the code's message, or the
    ``allow`` hook's message for FORBIDDEN); ``context``: Node's context name for logs
    (``"TRANSPORT_MISMATCH"``, ``"INVALID_ORIGIN"``...) or ``""``.
    ``http_status``/``http_content_type``/``http_body()`` answer a polling request;
    ``upgrade_response()`` is the whole raw answer to a refused WebSocket upgrade.
    """

    def __init__(self, code: ErrorCode, message: str | None = None, context: str = "") -> None:
        self.code = code
        self.message = message or ERROR_MESSAGES[code]
        self.context = context
        super().__init__(f"{int(code)} {self.message}" + (f" ({context})" if context else ""))

    @property
    def http_status(self) -> int:
        return 403 if self.code is ErrorCode.FORBIDDEN else 400

    http_content_type = "application/json"

    def http_body(self) -> bytes:
        return msgspec.json.encode({"code": int(self.code), "message": self.message})

    def upgrade_response(self) -> bytes:
        body = self.message.encode("utf-8")
        return (
            b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-type: text/html\r\n"
            b"Content-Length: " + str(len(body)).encode("ascii") + b"\r\n\r\n" + body
        )


class RouteKind(enum.Enum):
    """What the adapter does with a verified request."""

    #: Polling handshake: create a polling session and answer with its first GET.
    OPEN_POLLING = "open_polling"
    #: WebSocket handshake: accept the WebSocket and create a WebSocket session.
    OPEN_WEBSOCKET = "open_websocket"
    #: GET on an existing polling session (``Session.begin_get``).
    POLL = "poll"
    #: POST on an existing polling session (``Session.begin_post``).
    POST = "post"
    #: Another method on an existing polling session: answer 500 with an empty body (Node).
    BAD_METHOD = "bad_method"
    #: Upgrade of an existing polling session: accept, then ``Session.attach_probe``.
    PROBE = "probe"
    #: Accept the WebSocket and close it at once (no error status: Node's behaviour).
    ACCEPT_AND_CLOSE = "accept_and_close"


class Route(NamedTuple):
    """The verdict on a request; ``session`` is set for POLL, POST, BAD_METHOD and PROBE."""

    kind: RouteKind
    transport: str
    sid: str | None = None
    session: object | None = None


class SessionView(Protocol):
    """What routing needs to know about a live session."""

    @property
    def transport(self) -> str: ...

    @property
    def accepts_probe(self) -> bool: ...


def parse_query(raw: str | bytes) -> dict[str, str]:
    """A query string (without ``?``) as a dict; the last of duplicate keys wins."""
    if isinstance(raw, bytes):
        raw = raw.decode("latin-1")
    return dict(parse_qsl(raw, keep_blank_values=True))


_BAD_HEADER_TEXT = re.compile("[^\t\x20-\x7e\x80-\xff]")
_BAD_HEADER_BYTES = re.compile(b"[^\t\x20-\x7e\x80-\xff]")


def _origin_invalid(origin: str | bytes | None) -> bool:
    # Node's checkInvalidHeaderChar: only TAB, 0x20-0x7E and 0x80-0xFF are valid.
    if origin is None:
        return False
    if isinstance(origin, str):
        return _BAD_HEADER_TEXT.search(origin) is not None
    return _BAD_HEADER_BYTES.search(origin) is not None


def route_request(
    *,
    method: str,
    query: Mapping[str, str],
    upgrade: bool,
    lookup: Callable[[str], SessionView | None],
    origin: str | bytes | None = None,
    transports: tuple[str, ...] = TRANSPORTS,
    allow: Callable[[], str | None] | None = None,
) -> Route:
    """Verify an Engine.IO request and say what to do with it, or raise ``RequestRejected``.

    ``method``: the HTTP method (upper case); ``query``: the parsed query (``parse_query``);
    ``upgrade``: the request asks for a WebSocket upgrade (``Upgrade: websocket``);
    ``lookup(sid)``: the live session with that id or ``None``; ``origin``: the Origin
    header if any; ``transports``: the enabled transports; ``allow``: an optional
    handshake hook returning ``None`` to allow or a message to refuse with FORBIDDEN.
    """
    transport = query.get("transport")
    if transport not in transports or transport not in TRANSPORTS:  # never webtransport
        raise RequestRejected(ErrorCode.UNKNOWN_TRANSPORT)
    if _origin_invalid(origin):
        raise RequestRejected(ErrorCode.BAD_REQUEST, context="INVALID_ORIGIN")

    sid = query.get("sid")
    if sid:
        session = lookup(sid)
        if session is None:
            raise RequestRejected(ErrorCode.UNKNOWN_SID)
        if not upgrade:
            if session.transport != transport:
                raise RequestRejected(ErrorCode.BAD_REQUEST, context="TRANSPORT_MISMATCH")
            if transport == "websocket":
                # Node leaves such a request hanging (WebSocket.onRequest is a no-op).
                raise RequestRejected(ErrorCode.BAD_REQUEST, context="WEBSOCKET_WITHOUT_UPGRADE")
            if method == "GET":
                return Route(RouteKind.POLL, transport, sid, session)
            if method == "POST":
                return Route(RouteKind.POST, transport, sid, session)
            return Route(RouteKind.BAD_METHOD, transport, sid, session)
        if transport != "websocket" or not session.accepts_probe:
            return Route(RouteKind.ACCEPT_AND_CLOSE, transport, sid, session)
        return Route(RouteKind.PROBE, transport, sid, session)

    if method != "GET":
        raise RequestRejected(ErrorCode.BAD_HANDSHAKE_METHOD)
    if transport == "websocket" and not upgrade:
        raise RequestRejected(ErrorCode.BAD_REQUEST, context="TRANSPORT_HANDSHAKE_ERROR")
    if allow is not None:
        refusal = allow()
        if refusal is not None:
            raise RequestRejected(ErrorCode.FORBIDDEN, refusal or None)
    if upgrade and transport != "websocket":
        return Route(RouteKind.ACCEPT_AND_CLOSE, transport)
    if query.get("EIO") != "4":
        raise RequestRejected(ErrorCode.UNSUPPORTED_PROTOCOL_VERSION)
    if transport == "websocket":
        return Route(RouteKind.OPEN_WEBSOCKET, transport)
    return Route(RouteKind.OPEN_POLLING, transport)
