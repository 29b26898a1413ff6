"""Socket.IO publications: rooms as hub groups, and the wire formats of a broadcast.

Rules this module keeps (reference: socketio-protocol.md §d.4, §d.8):
- A room is the hub group ``0~<base64url(namespace)>~<base64url(room)>`` and a namespace the
  group ``0~<base64url(namespace)>~`` (no padding; ``/`` is ``0~Lw~``), as Azure's Socket.IO
  service names them, so a REST or embedded send to such a group reaches the room.
- A publication for Socket.IO clients carries an Engine.IO *payload* (the polling form:
  packets joined by U+001E, binary as ``b<base64>``), as Azure's serverless protocol does.
  The Socket.IO server builds ``SioPublication``s whose packets are already encoded; any
  other publication (REST, embedded ``send_to_group``, another node) is parsed and checked
  once, when the first Socket.IO recipient needs it: only ``message`` packets that are valid
  Socket.IO packets (attachments included) pass; anything else reaches no Socket.IO client.
  A DISCONNECT in such a payload (``41/nsp,``) also ends that socket on the server
  (``DISCONNECTS``), as the client's socket ends when it reads it.
- Each broadcast is encoded once per format and every recipient gets the same objects:
  ``PACKETS`` (the ``EncodedPacket`` tuple, for polling sessions) and ``WS_FRAMES`` (all its
  WebSocket frames in one ``bytes``, one outbox item per recipient).
"""

from __future__ import annotations

import base64
import functools
from typing import Any

from fabric.core.payload import DataType, Payload
from fabric.core.publication import Publication, WireFormat
from fabric.socketio import parser
from fabric.socketio.eio_packets import (
    EncodedPacket,
    PacketDecodeError,
    PacketType,
    binary_message,
    decode_text,
    join_segments,
    text_message,
)
from fabric.socketio.engine import frame_of

__all__ = [
    "DISCONNECTS",
    "PACKETS",
    "WS_FRAMES",
    "SioPublication",
    "namespace_group",
    "own_room_group",
    "parse_group",
    "parse_payload",
    "room_group",
]


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("utf-8")).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> str:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True).decode("utf-8")


@functools.lru_cache(maxsize=4096)
def namespace_group(nsp: str) -> str:
    """The hub group holding every socket of a namespace: ``0~<b64(nsp)>~``."""
    return f"0~{_b64(nsp)}~"


@functools.lru_cache(maxsize=65536)
def room_group(nsp: str, room: str) -> str:
    """The hub group of a room: ``0~<b64(nsp)>~<b64(room)>``."""
    return f"0~{_b64(nsp)}~{_b64(room)}"


def own_room_group(nsp: str, sid: str) -> str:
    """``room_group`` for a socket's own room, not cached: each is made once, when the socket
    joins it, and a cache entry per socket would cost more than the name."""
    return f"0~{_b64(nsp)}~{_b64(sid)}"


def parse_group(group: str) -> tuple[str, str | None] | None:
    """``(namespace, room)`` of a Socket.IO group (room ``None`` for a namespace group), or
    ``None`` for any other group name."""
    if not group.startswith("0~"):
        return None
    parts = group.split("~")
    if len(parts) != 3:
        return None
    try:
        nsp = _unb64(parts[1])
        room = _unb64(parts[2]) if parts[2] else None
    except (ValueError, UnicodeDecodeError):
        return None
    if not nsp.startswith("/"):
        return None
    return nsp, room


class SioPublication(Publication):
    """A publication the Socket.IO server built: its packets are encoded already.

    ``volatile``: recipients whose transport is not writable now skip it. ``nsp``: the
    namespace it belongs to. ``metadata``: a recoverable broadcast's offset (it crosses nodes
    with the publication; ``server.py``).
    """

    __slots__ = ("nsp", "packets", "volatile")

    def __init__(self, packets: tuple[EncodedPacket, ...], *, nsp: str, group: str | None,
                 excluded: frozenset[str] = frozenset(), filter: Any = None, volatile: bool = False,
                 metadata: Any = None) -> None:
        body = join_segments(packets)
        super().__init__("group" if group is not None else "server", Payload(DataType.TEXT, body),
                         group=group, excluded=excluded, filter=filter, metadata=metadata)
        self.packets = packets
        self.volatile = volatile
        self.nsp = nsp


def packets_of(header: bytes, attachments: list[bytes]) -> tuple[EncodedPacket, ...]:
    """The Engine.IO packets of one encoded Socket.IO packet (header, then attachments)."""
    if not attachments:
        return (text_message(header),)
    return (text_message(header), *(binary_message(a) for a in attachments))


def _decode_payload(body: bytes) -> tuple[tuple[EncodedPacket, ...], tuple[str, ...]]:
    """``(packets, disconnected namespaces)`` of an Engine.IO payload of Socket.IO packets, or
    ``((), ())`` if it is not one."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return (), ()
    decoder = parser.Decoder()
    out: list[EncodedPacket] = []
    disconnects: list[str] = []
    try:
        for segment in text.split("\x1e"):
            ptype, data = decode_text(segment)
            if ptype is not PacketType.MESSAGE:
                return (), ()
            packet = decoder.feed(data)
            if packet is not None and packet.type is parser.PacketType.DISCONNECT:
                disconnects.append(packet.nsp)
            if isinstance(data, str):
                out.append(text_message(data.encode("utf-8")))
            else:
                out.append(binary_message(data))
    except (PacketDecodeError, parser.ParseError):
        return (), ()
    if decoder.awaiting:
        return (), ()
    return tuple(out), tuple(disconnects)


def parse_payload(body: bytes) -> tuple[EncodedPacket, ...]:
    """The packets of an Engine.IO payload of Socket.IO packets (what REST sends and serverless
    handlers answer), ready to send; () if it is not one."""
    return _decode_payload(body)[0]


def _packets(publication: Publication) -> tuple[EncodedPacket, ...]:
    packets = getattr(publication, "packets", None)
    if packets is not None:
        return packets
    return _decode_payload(publication.payload.body)[0]


def _disconnects(publication: Publication) -> tuple[str, ...]:
    if getattr(publication, "packets", None) is not None:
        return ()  # built by the Socket.IO server: its disconnects close their sockets there
    return _decode_payload(publication.payload.body)[1]


def _ws_frames(publication: Publication) -> bytes:
    packets = publication.encoded(PACKETS)
    if not packets:
        return b""  # not a Socket.IO payload: nothing for Socket.IO clients
    if len(packets) == 1:
        return frame_of(packets[0])
    return b"".join([frame_of(p) for p in packets])


#: The Engine.IO packets of a publication (a tuple, not bytes: the core caches what an
#: encoder returns, once per publication).
PACKETS = WireFormat("socketio/packets", _packets)  # type: ignore[arg-type]
#: Every WebSocket frame of the publication, concatenated.
WS_FRAMES = WireFormat("socketio/ws", _ws_frames)
#: The namespaces a foreign publication disconnects (its ``41`` packets): a REST send of
#: ``41/nsp,`` to a socket's group is a server disconnect of that socket.
DISCONNECTS = WireFormat("socketio/disconnects", _disconnects)  # type: ignore[arg-type]
