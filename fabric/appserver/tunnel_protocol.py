"""The server tunnel's wire format (sans-IO): what ``@azure/web-pubsub-socket.io`` and the
``awps-tunnel`` tool put in each binary WebSocket frame of ``/server/tunnel``.

One frame carries one message: a 4-byte little-endian length, then that many bytes of
MessagePack: the array ``[Type, json, content]``. ``json`` is the message object as JSON
text (PascalCase fields, ``Type`` included) without its ``Content``; ``content`` is the
body bytes of an HTTP-shaped message, or nil (``serverProxies/tunnels/messages.js`` and
``TunnelMessageProtocol.js`` in the package's dist; reference §d.2 and §d.9.5).

Rules this module keeps:
- Sans-IO: bytes in, message objects out, and back. No trio, no clock, no sockets.
- ``decode`` accepts any ``bytes`` and either returns a message or raises
  ``TunnelProtocolError`` with a message that says what was wrong and where (length
  prefix, MessagePack, JSON field); nothing else escapes. When the frame was readable far
  enough to name the request, the error carries its ``ack_id`` and ``kind`` so the caller
  can answer that request instead of dropping it.
- Strict framing: the length prefix must account for every byte of the frame (the package
  never sends trailing bytes; a frame that disagrees is a peer out of step).
- A well-formed message of a type this module does not know decodes to ``Unknown`` (the
  package ignores unknown types too), so a newer peer is not cut off.
- ``encode`` writes the JSON in the package's field order with ``Type`` last, as
  ``JSON.stringify`` of its message classes does.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping

import attrs
import msgspec

__all__ = [
    "MAX_ACK_ID",
    "ConnectionClose",
    "ConnectionConnected",
    "ConnectionRebalance",
    "ConnectionReconnect",
    "Headers",
    "HttpRequest",
    "HttpResponse",
    "Message",
    "MessageType",
    "ServiceStatus",
    "TunnelProtocolError",
    "Unknown",
    "decode",
    "encode",
]

#: Bytes of the length prefix.
LENGTH_BYTES = 4
#: Largest AckId accepted (the package counts from 1 in a JavaScript number).
MAX_ACK_ID = 2**53 - 1
#: Header names and values kept per message (the package sends a handful).
MAX_HEADERS = 256

_LENGTH = struct.Struct("<I")


class MessageType(enum.IntEnum):
    """``TunnelMessageType`` of the package."""

    NONE = 0
    HTTP_REQUEST = 1
    HTTP_RESPONSE = 2
    SERVICE_STATUS = 5
    CONNECTION_RECONNECT = 6
    CONNECTION_CLOSE = 7
    CONNECTION_REBALANCE = 8
    CONNECTION_CONNECTED = 10


#: Header name -> its values, as the tunnel carries them (``{"Content-Type": ["text/plain"]}``).
Headers = Mapping[str, tuple[str, ...]]


def _headers(value: Mapping[str, object] | None) -> dict[str, tuple[str, ...]]:
    if not value:
        return {}
    return {name: (values,) if isinstance(values, str) else tuple(values) for name, values in value.items()}


@attrs.frozen
class HttpRequest:
    """Type 1: an HTTP request travelling through the tunnel (either direction)."""

    ack_id: int
    method: str
    url: str
    headers: Headers = attrs.field(factory=dict, converter=_headers)
    content: bytes | None = None
    local_routing: bool = False
    channel_name: str = ""
    tracing_id: str | None = None

    def header(self, name: str) -> str | None:
        """The first value of a header, its name compared case-insensitively."""
        lowered = name.lower()
        for key, values in self.headers.items():
            if key.lower() == lowered and values:
                return values[0]
        return None


@attrs.frozen
class HttpResponse:
    """Type 2: (a part of) the answer to the request with the same ``ack_id``.

    A streamed answer is several responses with one ``ack_id``; every one but the last has
    ``not_completed``. Status and headers count from the first.
    """

    ack_id: int
    status_code: int
    headers: Headers = attrs.field(factory=dict, converter=_headers)
    content: bytes | None = None
    not_completed: bool = False
    local_routing: bool = False
    channel_name: str = ""
    tracing_id: str | None = None


@attrs.frozen
class ServiceStatus:
    """Type 5: a status line for the app's log (also what keeps an idle tunnel alive)."""

    message: str = ""


@attrs.frozen
class ConnectionReconnect:
    """Type 6: "drop this tunnel and open one to ``endpoint`` with ``target=target_id``"."""

    target_id: str | None = None
    endpoint: str | None = None
    message: str = ""


@attrs.frozen
class ConnectionClose:
    """Type 7: "stop this tunnel, do not reconnect it"."""

    message: str = ""


@attrs.frozen
class ConnectionRebalance:
    """Type 8: "keep this tunnel and open another to ``endpoint`` with ``target=target_id``"."""

    target_id: str | None = None
    endpoint: str | None = None
    message: str = ""


@attrs.frozen
class ConnectionConnected:
    """Type 10: the service's hello; the app's tunnel counts as started on it."""

    connection_id: str
    user_id: str | None = None
    reconnection_token: str | None = None


@attrs.frozen
class Unknown:
    """A well-formed message of a type this module does not know."""

    type: int


Message = (HttpRequest | HttpResponse | ServiceStatus | ConnectionReconnect | ConnectionClose
           | ConnectionRebalance | ConnectionConnected | Unknown)


class TunnelProtocolError(ValueError):
    """A frame that is not a valid tunnel message. ``str()`` says why.

    ``ack_id`` and ``kind`` are set when the frame got far enough to name an HTTP request
    or response (its JSON parsed but a field was wrong).
    """

    def __init__(self, message: str, *, ack_id: int | None = None, kind: MessageType | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.ack_id = ack_id
        self.kind = kind


# ---- decoding -----------------------------------------------------------------------------


class _RequestJson(msgspec.Struct, rename="pascal"):
    ack_id: int
    http_method: str
    url: str
    headers: dict[str, list[str]] | None = None
    local_routing: bool = False
    channel_name: str | None = None
    tracing_id: str | None = None


class _ResponseJson(msgspec.Struct, rename="pascal"):
    ack_id: int
    status_code: int
    headers: dict[str, list[str]] | None = None
    not_completed: bool = False
    local_routing: bool = False
    channel_name: str | None = None
    tracing_id: str | None = None


class _StatusJson(msgspec.Struct, rename="pascal"):
    message: str | None = None


class _TargetJson(msgspec.Struct, rename="pascal"):
    target_id: str | None = None
    endpoint: str | None = None
    message: str | None = None


class _ConnectedJson(msgspec.Struct, rename="pascal"):
    connection_id: str
    user_id: str | None = None
    reconnection_token: str | None = None


class _AckOnly(msgspec.Struct, rename="pascal"):
    ack_id: int | None = None


_NAMES = {
    MessageType.HTTP_REQUEST: "HttpRequest",
    MessageType.HTTP_RESPONSE: "HttpResponse",
    MessageType.SERVICE_STATUS: "ServiceStatus",
    MessageType.CONNECTION_RECONNECT: "ConnectionReconnect",
    MessageType.CONNECTION_CLOSE: "ConnectionClose",
    MessageType.CONNECTION_REBALANCE: "ConnectionRebalance",
    MessageType.CONNECTION_CONNECTED: "ConnectionConnected",
}


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json(kind: MessageType, text: str, struct_type: type) -> object:
    try:
        return msgspec.json.decode(text, type=struct_type)
    except msgspec.ValidationError as exc:
        ack_id = None
        if kind in (MessageType.HTTP_REQUEST, MessageType.HTTP_RESPONSE):
            try:
                found = msgspec.json.decode(text, type=_AckOnly).ack_id
            except msgspec.MsgspecError:
                found = None
            if found is not None and 0 <= found <= MAX_ACK_ID:
                ack_id = found
        raise TunnelProtocolError(f"invalid {_NAMES[kind]}: {exc}", ack_id=ack_id, kind=kind) from None
    except msgspec.DecodeError as exc:
        raise TunnelProtocolError(f"the JSON part of a {_NAMES[kind]} message is not valid JSON: {exc}") from None


def _check_ack(ack_id: int, kind: MessageType) -> None:
    if not 0 <= ack_id <= MAX_ACK_ID:
        raise TunnelProtocolError(f"invalid {_NAMES[kind]}: AckId {ack_id} is out of range (0 to 2**53-1)")


def _check_headers(headers: dict[str, list[str]] | None, kind: MessageType, ack_id: int) -> dict:
    if not headers:
        return {}
    if len(headers) > MAX_HEADERS or sum(len(v) for v in headers.values()) > MAX_HEADERS:
        raise TunnelProtocolError(f"invalid {_NAMES[kind]}: more than {MAX_HEADERS} headers", ack_id=ack_id,
                                  kind=kind)
    return headers


def decode(frame: bytes, *, max_bytes: int | None = None) -> Message:
    """One message from one frame. Raises ``TunnelProtocolError`` (see the module rules)."""
    if len(frame) < LENGTH_BYTES:
        raise TunnelProtocolError(f"the frame is {len(frame)} bytes, shorter than the 4-byte length prefix")
    (length,) = _LENGTH.unpack_from(frame)
    body_bytes = len(frame) - LENGTH_BYTES
    if max_bytes is not None and length > max_bytes:
        raise TunnelProtocolError(f"the length prefix announces {length} bytes; at most {max_bytes} are accepted")
    if length != body_bytes:
        raise TunnelProtocolError(
            f"the length prefix announces {length} bytes but {body_bytes} follow it (one message per frame)")
    try:
        array = msgspec.msgpack.decode(memoryview(frame)[LENGTH_BYTES:])
    except (msgspec.DecodeError, RecursionError) as exc:
        raise TunnelProtocolError(f"the message is not valid MessagePack ({type(exc).__name__}: {exc})") from None
    if not isinstance(array, list) or len(array) not in (2, 3):
        raise TunnelProtocolError(
            f"the message must be a MessagePack array [Type, json, content], got {_short(array)}")
    kind_value, text = array[0], array[1]
    content = array[2] if len(array) == 3 else None
    if isinstance(kind_value, bool) or not isinstance(kind_value, int):
        raise TunnelProtocolError(f"the message Type must be an integer, got {_short(kind_value)}")
    if not isinstance(text, str):
        raise TunnelProtocolError(f"the message's second element must be its JSON text, got {_short(text)}")
    if content is not None and not isinstance(content, bytes):
        raise TunnelProtocolError(f"the message's content must be binary or nil, got {type(content).__name__}")
    try:
        kind = MessageType(kind_value)
    except ValueError:
        return Unknown(kind_value)
    if kind is MessageType.HTTP_REQUEST:
        req = _json(kind, text, _RequestJson)
        _check_ack(req.ack_id, kind)
        return HttpRequest(req.ack_id, req.http_method, req.url, _check_headers(req.headers, kind, req.ack_id),
                           content, req.local_routing, req.channel_name or "", req.tracing_id)
    if kind is MessageType.HTTP_RESPONSE:
        res = _json(kind, text, _ResponseJson)
        _check_ack(res.ack_id, kind)
        if not 100 <= res.status_code <= 999:
            raise TunnelProtocolError(f"invalid HttpResponse: StatusCode {res.status_code} is not an HTTP status",
                                      ack_id=res.ack_id, kind=kind)
        return HttpResponse(res.ack_id, res.status_code, _check_headers(res.headers, kind, res.ack_id), content,
                            res.not_completed, res.local_routing, res.channel_name or "", res.tracing_id)
    if kind is MessageType.SERVICE_STATUS:
        return ServiceStatus(_json(kind, text, _StatusJson).message or "")
    if kind is MessageType.CONNECTION_CONNECTED:
        c = _json(kind, text, _ConnectedJson)
        return ConnectionConnected(c.connection_id, c.user_id, c.reconnection_token)
    if kind is MessageType.CONNECTION_CLOSE:
        return ConnectionClose(_json(kind, text, _StatusJson).message or "")
    if kind is MessageType.NONE:
        return Unknown(kind_value)
    t = _json(kind, text, _TargetJson)
    cls = ConnectionReconnect if kind is MessageType.CONNECTION_RECONNECT else ConnectionRebalance
    return cls(t.target_id, t.endpoint, t.message or "")


# ---- encoding -----------------------------------------------------------------------------


def _header_json(headers: Headers) -> dict[str, list[str]]:
    return {name: list(values) for name, values in headers.items()}


def _fields(message: Message) -> tuple[MessageType, dict, bytes | None]:
    if isinstance(message, HttpRequest):
        fields: dict = {}
        if message.tracing_id is not None:
            fields["TracingId"] = message.tracing_id
        fields.update(AckId=message.ack_id, LocalRouting=message.local_routing,
                      ChannelName=message.channel_name, HttpMethod=message.method, Url=message.url,
                      Headers=_header_json(message.headers))
        return MessageType.HTTP_REQUEST, fields, message.content
    if isinstance(message, HttpResponse):
        fields = {}
        if message.tracing_id is not None:
            fields["TracingId"] = message.tracing_id
        fields.update(AckId=message.ack_id, LocalRouting=message.local_routing, StatusCode=message.status_code,
                      ChannelName=message.channel_name, NotCompleted=message.not_completed,
                      Headers=_header_json(message.headers))
        return MessageType.HTTP_RESPONSE, fields, message.content
    if isinstance(message, ServiceStatus):
        return MessageType.SERVICE_STATUS, {"Message": message.message}, None
    if isinstance(message, ConnectionClose):
        return MessageType.CONNECTION_CLOSE, {"Message": message.message}, None
    if isinstance(message, (ConnectionReconnect, ConnectionRebalance)):
        kind = (MessageType.CONNECTION_RECONNECT if isinstance(message, ConnectionReconnect)
                else MessageType.CONNECTION_REBALANCE)
        fields = {"TargetId": message.target_id, "Endpoint": message.endpoint, "Message": message.message}
        return kind, {k: v for k, v in fields.items() if v is not None}, None
    if isinstance(message, ConnectionConnected):
        fields = {"ConnectionId": message.connection_id}
        if message.user_id is not None:
            fields["UserId"] = message.user_id
        if message.reconnection_token is not None:
            fields["ReconnectionToken"] = message.reconnection_token
        return MessageType.CONNECTION_CONNECTED, fields, None
    raise TypeError(f"cannot encode {type(message).__name__}")


def encode(message: Message) -> bytes:
    """The frame bytes of one message (length prefix included)."""
    kind, fields, content = _fields(message)
    fields["Type"] = int(kind)
    text = msgspec.json.encode(fields).decode("utf-8")
    body = msgspec.msgpack.encode([int(kind), text, content])
    return _LENGTH.pack(len(body)) + body
