"""Engine.IO v4 packets: the codec for WebSocket frames and HTTP long-polling payloads.

Rules this module keeps (reference: socketio-protocol.md §a.1; engine.io-parser's
``encodePacket``/``decodePacket``/``encodePayload``/``decodePayload``):
- Seven packet types, one ASCII digit each: open 0, close 1, ping 2, pong 3, message 4,
  upgrade 5, noop 6. A text packet is ``<digit><data>`` (data may be empty). Only a
  ``message`` carries binary data.
- WebSocket: one packet per frame. A binary message is a binary frame of the raw bytes, no
  type prefix; every other packet is a text frame.
- Long-polling: packets are joined with U+001E (record separator); a binary message is
  ``b`` + standard padded base64. A body is UTF-8 text. ``b<base64>`` is also accepted in a
  WebSocket text frame (engine.io-client sends that with ``forceBase64``).
- Decoding is strict and raises only ``PacketDecodeError``, whose ``problem`` says what was
  wrong: an empty packet, an unknown type character, bad base64, a body that is not
  UTF-8. Where Node is lenient (base64 without padding or with junk in it, bad UTF-8
  silently replaced) we reject: no conforming client sends those.
- Text data is not interpreted here (``2probe`` is a ping whose data is ``probe``); what a
  packet means is the session's business.
- Encoding raises only ``PacketEncodeError``: binary data on a packet other than
  ``message``, or text containing U+001E when it must travel in a polling payload (it would
  split the packet; JSON never contains a raw U+001E, so Socket.IO traffic cannot hit this).
- Fan-out: ``EncodedPacket`` holds one packet's WebSocket frame payload and (built on first
  use) its polling segment, so a broadcaster encodes once per format and hands the same
  object to every recipient. For a text packet both formats are the same bytes object.
- Sans-IO: imports nothing of ours, reads no clock, does no I/O.
"""

from __future__ import annotations

import binascii
import enum
from collections.abc import Iterable, Iterator
from typing import NamedTuple

__all__ = [
    "SEPARATOR",
    "DecodeProblem",
    "EncodedPacket",
    "Packet",
    "PacketDecodeError",
    "PacketEncodeError",
    "PacketType",
    "binary_message",
    "decode_payload",
    "decode_text",
    "decode_ws",
    "encode_packet",
    "encode_payload",
    "encode_segment",
    "encode_ws",
    "iter_payload",
    "join_segments",
    "message_polling_segment",
    "message_ws_payload",
    "text_message",
]

SEPARATOR = "\x1e"
_SEP_BYTES = b"\x1e"


class PacketType(enum.IntEnum):
    """Engine.IO v4 packet types; the wire form is the decimal digit."""

    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


_TYPE_BY_CHAR = {str(int(t)): t for t in PacketType}
_CHAR_BY_TYPE = {t: str(int(t)) for t in PacketType}
_BYTE_BY_TYPE = {t: str(int(t)).encode("ascii") for t in PacketType}


class Packet(NamedTuple):
    """One Engine.IO packet. ``data`` is ``str`` for text (``""`` when absent) or ``bytes``
    for a binary ``message``."""

    type: PacketType
    data: str | bytes = ""


# =========================================================================== errors


class DecodeProblem(enum.Enum):
    """What made a packet or payload undecodable."""

    EMPTY_PACKET = "empty packet"
    UNKNOWN_TYPE = "unknown packet type"
    BAD_BASE64 = "invalid base64 in a binary packet"
    NOT_UTF8 = "payload is not valid UTF-8"


class PacketDecodeError(ValueError):
    """A frame or polling payload is not valid Engine.IO v4. The session closes with
    ``"parse error"``."""

    def __init__(self, problem: DecodeProblem, detail: str = "") -> None:
        self.problem = problem
        self.detail = detail
        super().__init__(f"{problem.value}: {detail}" if detail else problem.value)


class PacketEncodeError(ValueError):
    """A packet cannot be written in the requested framing."""


# =========================================================================== decoding


def decode_text(text: str) -> Packet:
    """Decode one text packet (a WebSocket text frame, or one segment of a polling payload)."""
    if not text:
        raise PacketDecodeError(DecodeProblem.EMPTY_PACKET)
    first = text[0]
    ptype = _TYPE_BY_CHAR.get(first)
    if ptype is not None:
        return Packet(ptype, text[1:])
    if first == "b":
        try:
            data = binascii.a2b_base64(text[1:].encode("ascii"), strict_mode=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise PacketDecodeError(DecodeProblem.BAD_BASE64, str(exc)) from None
        return Packet(PacketType.MESSAGE, data)
    raise PacketDecodeError(DecodeProblem.UNKNOWN_TYPE, repr(first))


def decode_ws(data: str | bytes | bytearray | memoryview) -> Packet:
    """Decode one WebSocket message: text is a packet, binary is a binary ``message``."""
    if isinstance(data, str):
        return decode_text(data)
    return Packet(PacketType.MESSAGE, bytes(data))


def _body_text(body: str | bytes | bytearray | memoryview) -> str:
    if isinstance(body, str):
        return body
    try:
        return bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PacketDecodeError(DecodeProblem.NOT_UTF8, str(exc)) from None


def iter_payload(body: str | bytes | bytearray | memoryview) -> Iterator[Packet]:
    """Yield the packets of a polling body in order; raise at the first bad one.

    The packets before a bad one are yielded first, as Node delivers them (it processes a
    payload packet by packet and closes at the error). An empty body is one empty packet.
    """
    for segment in _body_text(body).split(SEPARATOR):
        yield decode_text(segment)


def decode_payload(body: str | bytes | bytearray | memoryview) -> list[Packet]:
    """All packets of a polling body, or ``PacketDecodeError`` if any is bad."""
    return [decode_text(s) for s in _body_text(body).split(SEPARATOR)]


# =========================================================================== encoding


def _b64(data: bytes | bytearray | memoryview) -> bytes:
    return binascii.b2a_base64(data, newline=False)


def message_ws_payload(data: str | bytes | bytearray | memoryview) -> tuple[bool, bytes]:
    """``(is_text, payload)`` of the WebSocket frame carrying a ``message`` with ``data``.

    Text: ``b"4" + UTF-8``. Binary: the bytes themselves (a ``bytes`` argument is returned
    as is, no copy).
    """
    if isinstance(data, str):
        return True, b"4" + data.encode("utf-8")
    return False, data if type(data) is bytes else bytes(data)


def message_polling_segment(data: str | bytes | bytearray | memoryview) -> bytes:
    """The polling-payload segment (UTF-8) of a ``message`` with ``data``.

    Text: ``b"4" + UTF-8`` (the same bytes as the WebSocket payload). Binary: ``b"b" +
    base64``. Raises ``PacketEncodeError`` for text containing U+001E.
    """
    if isinstance(data, str):
        if SEPARATOR in data:
            raise PacketEncodeError("text containing U+001E cannot travel in a polling payload")
        return b"4" + data.encode("utf-8")
    return b"b" + _b64(data)


def encode_ws(packet: Packet) -> str | bytes:
    """The WebSocket message for ``packet``: ``str`` for a text frame, ``bytes`` for binary."""
    ptype, data = packet
    if isinstance(data, str):
        return _CHAR_BY_TYPE[ptype] + data
    if ptype is not PacketType.MESSAGE:
        raise PacketEncodeError(f"only a message packet can carry binary data, not {ptype.name}")
    return bytes(data)


def encode_segment(packet: Packet) -> bytes:
    """The polling-payload segment (UTF-8 bytes) for ``packet``."""
    ptype, data = packet
    if isinstance(data, str):
        if SEPARATOR in data:
            raise PacketEncodeError("text containing U+001E cannot travel in a polling payload")
        return _BYTE_BY_TYPE[ptype] + data.encode("utf-8")
    if ptype is not PacketType.MESSAGE:
        raise PacketEncodeError(f"only a message packet can carry binary data, not {ptype.name}")
    return b"b" + _b64(data)


def encode_payload(packets: Iterable[Packet]) -> bytes:
    """A polling body (UTF-8) carrying ``packets`` in order."""
    return _SEP_BYTES.join([encode_segment(p) for p in packets])


class EncodedPacket:
    """One outgoing packet, encoded for both transports; immutable and shareable.

    - ``is_text``: the WebSocket frame is a text frame.
    - ``ws``: the WebSocket frame payload (bytes; UTF-8 for text).
    - ``segment``: the polling-payload segment (bytes). For text it *is* ``ws``; for a
      binary message it is ``b"b" + base64``, built on first use and kept. Raises
      ``PacketEncodeError`` for text containing U+001E (such a packet can only go over a
      WebSocket).
    - ``nbytes``: ``len(ws)``, what queue bounds count.
    - ``ws_frame``: a free slot (``None``) where a WebSocket adapter may cache the complete
      frame it builds from ``ws``, so a broadcast frames once for all recipients.
    """

    __slots__ = ("_segment", "is_text", "ws", "ws_frame")

    def __init__(self, is_text: bool, ws: bytes) -> None:
        self.is_text = is_text
        self.ws = ws
        self._segment: bytes | None = None  # built on first use: most recipients are WebSockets
        self.ws_frame: bytes | None = None

    @property
    def nbytes(self) -> int:
        return len(self.ws)

    @property
    def segment(self) -> bytes:
        seg = self._segment
        if seg is None:
            ws = self.ws
            if not self.is_text:
                seg = b"b" + _b64(ws)
            elif _SEP_BYTES in ws:
                raise PacketEncodeError("text containing U+001E cannot travel in a polling payload")
            else:
                seg = ws  # for text, the segment is the WebSocket payload itself
            self._segment = seg
        return seg

    def __repr__(self) -> str:
        kind = "text" if self.is_text else "binary"
        return f"EncodedPacket({kind}, {self.ws[:40]!r}{'...' if len(self.ws) > 40 else ''})"


def text_message(utf8: bytes) -> EncodedPacket:
    """The fast path: a text ``message`` whose data is already UTF-8 (e.g. a Socket.IO packet)."""
    return EncodedPacket(True, b"4" + utf8)


def binary_message(data: bytes | bytearray | memoryview) -> EncodedPacket:
    """A binary ``message`` (a Socket.IO attachment); ``bytes`` are kept without a copy."""
    return EncodedPacket(False, data if type(data) is bytes else bytes(data))


def encode_packet(packet: Packet) -> EncodedPacket:
    """Any ``Packet`` as an ``EncodedPacket``."""
    ptype, data = packet
    if isinstance(data, str):
        return EncodedPacket(True, _BYTE_BY_TYPE[ptype] + data.encode("utf-8"))
    if ptype is not PacketType.MESSAGE:
        raise PacketEncodeError(f"only a message packet can carry binary data, not {ptype.name}")
    return binary_message(data)


def join_segments(packets: Iterable[EncodedPacket]) -> bytes:
    """A polling body (UTF-8) made of already encoded packets."""
    return _SEP_BYTES.join([p.segment for p in packets])
