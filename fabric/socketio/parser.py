"""Socket.IO v5 packets: encoder, decoder and binary attachments (socket.io-parser's rules).

Wire form of one packet (each travels as one Engine.IO ``message``; binary attachments
follow as one binary Engine.IO ``message`` each, in ``num`` order)::

    <type>[<attachments>-][<nsp>,][<ack id>][<JSON payload>]

Rules this module keeps (reference: socketio-protocol.md §b.1; socket.io-parser
``Decoder.decodeString``/``isPayloadValid``/``isPacketValid``, ``binary.ts``):
- Types: CONNECT 0, DISCONNECT 1, EVENT 2, ACK 3, CONNECT_ERROR 4, BINARY_EVENT 5,
  BINARY_ACK 6. The namespace is written only when it is not ``/``, followed by ``,``;
  the decoder reads it up to ``,`` or the end (``40/random`` is a CONNECT to ``/random``).
- Payload rules are ``isPayloadValid``'s, exactly: CONNECT an object; DISCONNECT none;
  CONNECT_ERROR a string or an object; EVENT/BINARY_EVENT a non-empty array whose first
  element is a number or a string not in ``RESERVED_EVENTS``; ACK/BINARY_ACK an array.
  JSON ``null`` is never a valid payload, so ``data=None`` means "no payload".
- Stricter than Node, where Node accepts what no conforming client sends (each is a
  ``ParseError``): an empty packet or a type that is not one ASCII digit 0-6 (Node reads
  ``""`` and ``" "`` as CONNECT); a missing payload for EVENT, ACK, CONNECT_ERROR and the
  binary types (Node's decoder skips the check, its ``isPacketValid`` requires it); an ack
  id on CONNECT, DISCONNECT or CONNECT_ERROR, or a missing one on ACK; an ack id above
  2**53-1; an attachment count that is not ASCII digits; a namespace with control
  characters; placeholders that are not exactly ``{"_placeholder":true,"num":<int>}``, or
  whose ``num`` values are not each attachment index exactly once (Node tolerates unused,
  repeated and fractional ones). JSON is decoded by msgspec: a lone surrogate escape
  (``"\\ud800"``) and numbers beyond float range are errors where ``JSON.parse`` accepts them.
- The decoder is a state machine: after a BINARY_EVENT/BINARY_ACK header it takes exactly
  the announced number of binary messages, then returns the packet with every placeholder
  replaced by its ``bytes``, typed EVENT/ACK as Node does. Text while attachments are
  awaited, binary when none are, more than ``max_attachments`` (default 10, Node's
  ``maxAttachments``) are errors. Every decoding failure is a ``ParseError`` with a human
  message; nothing else escapes (deeply nested JSON included).
- The encoder turns EVENT/ACK data containing ``bytes``/``bytearray``/``memoryview`` into
  BINARY_EVENT/BINARY_ACK with ``{"_placeholder":true,"num":N}`` and returns the header and
  the attachments; it never mutates the caller's data. Invalid packets raise
  ``InvalidPacket``.
- Fast path: ``encode_event``/``encode_ack`` do one msgspec encode and one concatenation,
  with the namespace prefix cached. Their data must hold no binary (msgspec would write
  ``bytes`` as base64 text): use ``encode`` when in doubt, or check with ``has_binary``.
- Output is UTF-8 bytes (what msgspec produces and frames carry); input text is ``str``.
- Sans-IO: imports nothing of ours.
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

import msgspec

__all__ = [
    "DEFAULT_MAX_ATTACHMENTS",
    "MAX_ACK_ID",
    "RESERVED_EVENTS",
    "Decoder",
    "InvalidPacket",
    "Packet",
    "PacketType",
    "ParseError",
    "SocketIOError",
    "decode",
    "encode",
    "encode_ack",
    "scan_header",
    "encode_event",
    "has_binary",
]

DEFAULT_MAX_ATTACHMENTS = 10
MAX_ACK_ID = 2**53 - 1  # JavaScript's Number.MAX_SAFE_INTEGER

#: Event names an EVENT may not use (socket.io-parser ``RESERVED_EVENTS``).
RESERVED_EVENTS = frozenset({
    "connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener",
})


class PacketType(enum.IntEnum):
    """Socket.IO v5 packet types; the wire form is the decimal digit."""

    CONNECT = 0
    DISCONNECT = 1
    EVENT = 2
    ACK = 3
    CONNECT_ERROR = 4
    BINARY_EVENT = 5
    BINARY_ACK = 6


_CONNECT, _DISCONNECT, _EVENT, _ACK, _CONNECT_ERROR, _BINARY_EVENT, _BINARY_ACK = PacketType
_TYPE_BY_CHAR = {str(int(t)): t for t in PacketType}
_BINARY_TYPES = (_BINARY_EVENT, _BINARY_ACK)
_NO_ID_TYPES = (_CONNECT, _DISCONNECT, _CONNECT_ERROR)
_BYTES_TYPES = (bytes, bytearray, memoryview)


class Packet(NamedTuple):
    """One Socket.IO packet. ``data``: the decoded JSON payload (``None`` = none), with
    ``bytes`` where attachments were; ``id``: the ack id or ``None``."""

    type: PacketType
    nsp: str = "/"
    data: Any = None
    id: int | None = None


class SocketIOError(ValueError):
    """Base of this module's errors."""


class ParseError(SocketIOError):
    """Input that is not a valid Socket.IO v5 packet; the message says why. The server
    closes the connection."""


class InvalidPacket(SocketIOError):
    """A packet given to the encoder breaks the protocol's rules."""


# =========================================================================== validation


def _is_number(value: Any) -> bool:
    t = type(value)
    return t is int or t is float


def _payload_problem(ptype: PacketType, data: Any) -> str | None:
    """Why ``data`` is not a valid payload for ``ptype`` (isPayloadValid), or ``None``."""
    if ptype is _EVENT or ptype is _BINARY_EVENT:
        if type(data) is not list:
            return "an EVENT payload must be an array"
        if not data:
            return "an EVENT payload must not be empty"
        name = data[0]
        if type(name) is str:
            if name in RESERVED_EVENTS:
                return f"{name!r} is a reserved event name"
            return None
        if _is_number(name):
            return None
        return "an EVENT's first element must be a string (the event name) or a number"
    if ptype is _ACK or ptype is _BINARY_ACK:
        return None if type(data) is list else "an ACK payload must be an array"
    if ptype is _CONNECT:
        return None if type(data) is dict else "a CONNECT payload must be an object"
    if ptype is _CONNECT_ERROR:
        return None if type(data) in (str, dict) else "a CONNECT_ERROR payload must be an object or a string"
    return "a DISCONNECT takes no payload"


def _namespace_problem(nsp: str) -> str | None:
    if not nsp.isprintable() and any(ord(c) < 0x20 or ord(c) == 0x7F for c in nsp):
        return f"namespace {nsp!r} contains control characters"
    return None


# =========================================================================== decoding


def scan_header(text: str, max_attachments: int) -> tuple[PacketType, int, str, int | None, int]:
    """The header of one text packet: ``(type, attachments, nsp, ack id, index of the
    data)``. The one place the header's rules live (the decoder, and the default mode's
    routing, which reads only the header and leaves the rest to the app). Raises
    ``ParseError``. No checkpoint."""
    n = len(text)
    if n == 0:
        raise ParseError("empty packet")
    ptype = _TYPE_BY_CHAR.get(text[0])
    if ptype is None:
        raise ParseError(f"unknown packet type {text[0]!r}")
    i = 1
    attachments = 0
    if ptype is _BINARY_EVENT or ptype is _BINARY_ACK:
        dash = text.find("-", 1)
        count = text[1:dash] if dash != -1 else ""
        if dash == -1 or not count or not count.isascii() or not count.isdigit():
            raise ParseError("illegal attachments: a binary packet needs '<count>-' after its type")
        if len(count) > 9 or int(count) > max_attachments:
            raise ParseError(f"too many attachments: {count} (at most {max_attachments})")
        attachments = int(count)
        i = dash + 1

    nsp = "/"
    if i < n and text[i] == "/":
        comma = text.find(",", i)
        if comma == -1:
            nsp, i = text[i:], n
        else:
            nsp, i = text[i:comma], comma + 1
        problem = _namespace_problem(nsp)
        if problem:
            raise ParseError(f"bad namespace: {problem}")

    ack_id = None
    j = i
    while j < n and "0" <= text[j] <= "9":
        j += 1
    if j > i:
        if j - i > 16 or int(text[i:j]) > MAX_ACK_ID:
            raise ParseError(f"ack id {text[i:j][:20]} is too large (at most 2**53-1)")
        ack_id = int(text[i:j])
        i = j
    return ptype, attachments, nsp, ack_id, i


def _parse(text: str, max_attachments: int) -> tuple[PacketType, str, Any, int | None, int]:
    """Header and payload of one text packet: ``(type, nsp, data, id, attachments)``."""
    ptype, attachments, nsp, ack_id, i = scan_header(text, max_attachments)
    n = len(text)
    if i < n:
        try:
            data = msgspec.json.decode(text[i:])
        except (msgspec.DecodeError, RecursionError, UnicodeError) as exc:
            raise ParseError(f"invalid JSON payload: {exc}") from None
        problem = _payload_problem(ptype, data)
        if problem:
            raise ParseError(f"invalid payload: {problem}")
    else:
        data = None
        if ptype is not _CONNECT and ptype is not _DISCONNECT:
            raise ParseError(f"{ptype.name} packets need a payload")

    if ack_id is not None and ptype in _NO_ID_TYPES:
        raise ParseError(f"{ptype.name} packets cannot carry an ack id")
    if ack_id is None and (ptype is _ACK or ptype is _BINARY_ACK):
        raise ParseError(f"{ptype.name} packets need an ack id")
    return ptype, nsp, data, ack_id, attachments


def _find_placeholders(data: Any, attachments: int) -> list[tuple[Any, Any, int]]:
    """Every placeholder in ``data`` as ``(container, key, num)``; iterative (no recursion
    limit), checks shape, range and that each index is used exactly once."""
    slots: list[tuple[Any, Any, int]] = []
    stack = [data]
    while stack:
        node = stack.pop()
        items = enumerate(node) if type(node) is list else node.items()
        for key, value in items:
            tv = type(value)
            if tv is dict:
                if "_placeholder" in value and value["_placeholder"] is True:
                    num = value.get("num")
                    if len(value) != 2 or type(num) is not int:
                        raise ParseError('malformed placeholder: expected {"_placeholder":true,"num":<integer>}')
                    if not 0 <= num < attachments:
                        raise ParseError(f"placeholder num {num} out of range ({attachments} attachments)")
                    slots.append((node, key, num))
                else:
                    stack.append(value)
            elif tv is list:
                stack.append(value)
    if len(slots) != attachments or len({s[2] for s in slots}) != attachments:
        raise ParseError(
            f"attachment count mismatch: {attachments} announced, "
            f"placeholders reference {sorted(s[2] for s in slots)}"
        )
    return slots


def decode(text: str, *, max_attachments: int = DEFAULT_MAX_ATTACHMENTS) -> Packet:
    """Decode one complete text packet. A binary packet with attachments is a
    ``ParseError`` here (feed it to a ``Decoder``); one with ``0-`` is returned."""
    ptype, nsp, data, ack_id, attachments = _parse(text, max_attachments)
    if ptype is _BINARY_EVENT or ptype is _BINARY_ACK:
        if attachments:
            raise ParseError("a binary packet with attachments needs a Decoder")
        _find_placeholders(data, 0)
        ptype = _EVENT if ptype is _BINARY_EVENT else _ACK
    return Packet(ptype, nsp, data, ack_id)


class Decoder:
    """Decodes one connection's Socket.IO packets, reassembling binary ones.

    ``feed(data)`` takes one Engine.IO message (``str`` text, ``bytes`` binary) and returns
    a complete ``Packet`` or ``None`` (attachments still awaited; see ``awaiting``). Any
    error raises ``ParseError`` and resets the decoder.
    """

    __slots__ = ("_buffers", "_expected", "_header", "_slots", "max_attachments")

    def __init__(self, max_attachments: int = DEFAULT_MAX_ATTACHMENTS) -> None:
        if max_attachments < 0:
            raise ValueError("max_attachments must be >= 0")
        self.max_attachments = max_attachments
        self._header: Packet | None = None
        # Only while a binary packet is reassembled (one decoder per connection: no lists idle).
        self._slots: list[tuple[Any, Any, int]] | tuple = ()
        self._buffers: list[bytes] | None = None
        self._expected = 0

    @property
    def awaiting(self) -> int:
        """How many binary attachments the packet being reassembled still needs (0: none)."""
        return self._expected - len(self._buffers or ()) if self._header is not None else 0

    def reset(self) -> None:
        """Drop a packet being reassembled."""
        self._header = None
        self._slots = ()
        self._buffers = None
        self._expected = 0

    def feed(self, data: str | bytes | bytearray | memoryview) -> Packet | None:
        if isinstance(data, str):
            return self.feed_text(data)
        return self.feed_binary(data)

    def feed_text(self, text: str) -> Packet | None:
        if self._header is not None:
            self.reset()
            raise ParseError("got text data while awaiting binary attachments")
        ptype, nsp, data, ack_id, attachments = _parse(text, self.max_attachments)
        if ptype is not _BINARY_EVENT and ptype is not _BINARY_ACK:
            return Packet(ptype, nsp, data, ack_id)
        slots = _find_placeholders(data, attachments)
        ptype = _EVENT if ptype is _BINARY_EVENT else _ACK
        packet = Packet(ptype, nsp, data, ack_id)
        if not attachments:
            return packet
        self._header = packet
        self._slots = slots
        self._buffers = []
        self._expected = attachments
        return None

    def feed_binary(self, data: bytes | bytearray | memoryview) -> Packet | None:
        if self._header is None:
            raise ParseError("got binary data while not reassembling a binary packet")
        buffers = self._buffers
        buffers.append(data if type(data) is bytes else bytes(data))
        if len(buffers) < self._expected:
            return None
        for container, key, num in self._slots:
            container[key] = buffers[num]
        packet = self._header
        self.reset()
        return packet


# =========================================================================== encoding


def has_binary(data: Any) -> bool:
    """Whether ``data`` holds ``bytes``/``bytearray``/``memoryview`` anywhere in its lists,
    tuples and dict values."""
    stack = [data]
    while stack:
        node = stack.pop()
        t = type(node)
        if t is list or t is tuple:
            stack.extend(node)
        elif t is dict:
            stack.extend(node.values())
        elif isinstance(node, _BYTES_TYPES):
            return True
    return False


def _deconstruct(data: Any, buffers: list[bytes]) -> Any:
    """A copy of ``data`` with every binary leaf replaced by a placeholder (in order)."""
    t = type(data)
    if t is list or t is tuple:
        return [_deconstruct(v, buffers) for v in data]
    if t is dict:
        if data.get("_placeholder") is True:
            raise InvalidPacket("data of a binary packet cannot contain a {'_placeholder': True} object")
        return {k: _deconstruct(v, buffers) for k, v in data.items()}
    if isinstance(data, _BYTES_TYPES):
        buffers.append(data if type(data) is bytes else bytes(data))
        return {"_placeholder": True, "num": len(buffers) - 1}
    return data


def _check_common(ptype: PacketType, nsp: str, ack_id: int | None) -> None:
    if type(nsp) is not str or not nsp.startswith("/") or "," in nsp:
        raise InvalidPacket(f"namespace must be a string starting with '/' without ',': {nsp!r}")
    problem = _namespace_problem(nsp)
    if problem:
        raise InvalidPacket(problem)
    if ack_id is not None:
        if type(ack_id) is not int or not 0 <= ack_id <= MAX_ACK_ID:
            raise InvalidPacket(f"ack id must be an integer in 0..2**53-1, not {ack_id!r}")
        if ptype in _NO_ID_TYPES:
            raise InvalidPacket(f"{ptype.name} packets cannot carry an ack id")
    elif ptype is _ACK or ptype is _BINARY_ACK:
        raise InvalidPacket(f"{ptype.name} packets need an ack id")


_json_encode = msgspec.json.Encoder().encode


def _json(data: Any) -> bytes:
    try:
        return _json_encode(data)
    except (TypeError, ValueError, OverflowError) as exc:  # UnicodeEncodeError is a ValueError
        raise InvalidPacket(f"payload is not JSON-encodable: {exc}") from None
    except RecursionError:  # an ack echoing arguments that decoding only just accepted (~985 deep)
        raise InvalidPacket("payload nests too deeply to encode") from None


def encode(packet: Packet) -> tuple[bytes, list[bytes]]:
    """``(header, attachments)``: the packet's text (UTF-8) and its binary attachments, to
    send as one text message followed by one binary message each. EVENT/ACK data with
    binary leaves becomes BINARY_EVENT/BINARY_ACK."""
    ptype, nsp, data, ack_id = packet
    ptype = PacketType(ptype)
    _check_common(ptype, nsp, ack_id)
    buffers: list[bytes] = []
    if ptype in (_EVENT, _ACK, _BINARY_EVENT, _BINARY_ACK):
        problem = _payload_problem(ptype, data)
        if problem:
            raise InvalidPacket(problem)
        if ptype in _BINARY_TYPES or has_binary(data):
            data = _deconstruct(data, buffers)
            ptype = _BINARY_EVENT if ptype in (_EVENT, _BINARY_EVENT) else _BINARY_ACK
    elif ptype is _DISCONNECT:
        if data is not None:
            raise InvalidPacket("a DISCONNECT takes no payload")
    elif data is not None or ptype is _CONNECT_ERROR:
        problem = _payload_problem(ptype, data)
        if problem:
            raise InvalidPacket(problem)
        if has_binary(data):
            raise InvalidPacket(f"{ptype.name} payloads cannot hold binary data")
    head = str(int(ptype))
    if ptype is _BINARY_EVENT or ptype is _BINARY_ACK:
        head += f"{len(buffers)}-"
    if nsp != "/":
        head += nsp + ","
    if ack_id is not None:
        head += str(ack_id)
    header = head.encode("utf-8")
    if data is not None:
        header += _json(data)
    return header, buffers


_EVENT_PREFIX: dict[str, bytes] = {"/": b"2"}
_ACK_PREFIX: dict[str, bytes] = {"/": b"3"}


def _prefix(cache: dict[str, bytes], ptype: PacketType, nsp: str) -> bytes:
    _check_common(ptype, nsp, 0 if ptype is _ACK else None)
    prefix = (str(int(ptype)) + ("" if nsp == "/" else nsp + ",")).encode("utf-8")
    if len(cache) >= 4096:  # bounded
        cache.clear()
    cache[nsp] = prefix
    return prefix


def encode_event(data: list, nsp: str = "/", ack_id: int | None = None) -> bytes:
    """Fast path: the text of an EVENT whose ``data`` (event name first) holds no binary.

    One msgspec encode and one concatenation; the namespace prefix is cached. Raises
    ``InvalidPacket`` for a bad event name, namespace or ack id; binary leaves are *not*
    detected (see the module rules).
    """
    if type(data) is not list or not data:
        raise InvalidPacket(_payload_problem(_EVENT, data) or "invalid EVENT payload")
    name = data[0]
    if type(name) is str:
        if name in RESERVED_EVENTS:
            raise InvalidPacket(f"{name!r} is a reserved event name")
    elif type(name) is not int and type(name) is not float:
        raise InvalidPacket(_payload_problem(_EVENT, data) or "invalid EVENT payload")
    prefix = _EVENT_PREFIX.get(nsp) or _prefix(_EVENT_PREFIX, _EVENT, nsp)
    try:
        body = _json_encode(data)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidPacket(f"payload is not JSON-encodable: {exc}") from None
    if ack_id is None:
        return prefix + body
    if type(ack_id) is not int or not 0 <= ack_id <= MAX_ACK_ID:
        raise InvalidPacket(f"ack id must be an integer in 0..2**53-1, not {ack_id!r}")
    return b"".join((prefix, str(ack_id).encode("ascii"), body))


def encode_ack(data: list, ack_id: int, nsp: str = "/") -> bytes:
    """Fast path: the text of an ACK whose ``data`` (the ack arguments) holds no binary."""
    if type(data) is not list:
        raise InvalidPacket("an ACK payload must be an array")
    if type(ack_id) is not int or not 0 <= ack_id <= MAX_ACK_ID:
        raise InvalidPacket(f"ack id must be an integer in 0..2**53-1, not {ack_id!r}")
    prefix = _ACK_PREFIX.get(nsp) or _prefix(_ACK_PREFIX, _ACK, nsp)
    return b"".join((prefix, str(ack_id).encode("ascii"), _json(data)))
