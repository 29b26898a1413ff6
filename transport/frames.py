"""Server-side WebSocket frame building and the RFC 6455 handshake arithmetic.

Rules:
- Frames a server sends are never masked, so one encoded frame can be handed, byte for
  byte, to every recipient's outbox: fan-out builds each frame once.
- We never negotiate extensions (no permessage-deflate), so frames built here are valid
  beside the ones wsproto builds for control traffic on the same connection.
"""

from __future__ import annotations

import base64
import hashlib
import struct

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_pack_short = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack


def encode_frame(payload: bytes, *, text: bool) -> bytes:
    """One complete (FIN) unmasked data frame carrying ``payload``."""
    first = 0x81 if text else 0x82
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return _pack_short(first, 126, n) + payload
    return _pack_long(first, 127, n) + payload


def accept_key(client_key: str | bytes) -> str:
    """The ``Sec-WebSocket-Accept`` value for a ``Sec-WebSocket-Key``."""
    if isinstance(client_key, str):
        client_key = client_key.encode("ascii")
    return base64.b64encode(hashlib.sha1(client_key.strip() + _GUID).digest()).decode("ascii")


def valid_client_key(client_key: bytes) -> bool:
    """A key must be base64 of 16 bytes (RFC 6455 §4.1)."""
    try:
        return len(base64.b64decode(client_key.strip(), validate=True)) == 16
    except Exception:
        return False
