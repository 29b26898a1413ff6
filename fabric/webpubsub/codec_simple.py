"""The one mapping between Payloads and frames for simple WebSocket clients (no subprotocol).

Rules this module keeps (``specs.webpubsub_json.DATA_ENCODINGS``; what simple clients in a group
receive: Microsoft Learn's ``reference-json-webpubsub-subprotocol.md``):
- Outbound: TEXT and JSON payloads are text frames carrying the body bytes (UTF-8; a JSON
  string arrives with its quotes); BINARY and PROTOBUF payloads are binary frames carrying
  the body bytes (for PROTOBUF: the serialized ``google.protobuf.Any``).
- Inbound: a text frame is a TEXT payload, a binary frame a BINARY payload.
- Sans-IO; never raises on data; never imports trio.
"""

from __future__ import annotations

from fabric.core.payload import DataType, Payload

__all__ = ["frame_for", "payload_from_frame"]


def frame_for(payload: Payload) -> tuple[bool, bytes]:
    """``(is_text, data)`` for sending ``payload`` to a simple client.

    For a text frame ``data`` is the UTF-8 body; the transport decodes it to ``str`` for
    wsproto (a TEXT body that is not UTF-8 can only come from an unchecked REST body and
    should be decoded with ``errors="replace"``).
    """
    return payload.data_type.is_text_frame, payload.body


def payload_from_frame(data: str | bytes | bytearray | memoryview) -> Payload:
    """The payload of one message from a simple client: ``str`` = text frame, else binary."""
    if isinstance(data, str):
        # wsproto hands over valid text; "replace" only guards lone surrogates from elsewhere.
        return Payload(DataType.TEXT, data.encode("utf-8", "replace"))
    return Payload(DataType.BINARY, bytes(data))
