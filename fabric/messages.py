"""Domain values shared by every protocol codec and the routing core.

Rules this module keeps:
- A ``Payload`` is what a publisher sent, kept in its *wire-neutral* form: ``body`` is
  always ``bytes`` (UTF-8 text for TEXT, the raw JSON value's bytes for JSON, the decoded
  bytes for BINARY, the serialized ``google.protobuf.Any`` for PROTOBUF). Codecs turn it
  into their own representation once per publish, never per recipient.
- Nothing here imports trio.
"""

from __future__ import annotations

import enum

import attrs


class DataType(enum.Enum):
    """The ``dataType`` of a Web PubSub message. Values are the JSON spellings."""

    TEXT = "text"
    JSON = "json"
    BINARY = "binary"
    PROTOBUF = "protobuf"

    @classmethod
    def parse(cls, value: str) -> "DataType":
        """Case-insensitive (the .NET client writes ``"Text"``). Raises ValueError."""
        try:
            return _DATATYPE_BY_LOWER[value.lower()]
        except (KeyError, AttributeError):
            raise ValueError(f"unknown dataType {value!r}") from None

    @property
    def is_text_frame(self) -> bool:
        """True when a simple WebSocket client receives this as a text frame."""
        return self is DataType.TEXT or self is DataType.JSON


_DATATYPE_BY_LOWER = {d.value: d for d in DataType}


@attrs.frozen(slots=True)
class Payload:
    data_type: DataType
    body: bytes

    @classmethod
    def text(cls, s: str) -> "Payload":
        return cls(DataType.TEXT, s.encode("utf-8"))

    @classmethod
    def json(cls, raw: bytes) -> "Payload":
        """``raw`` must already be one valid JSON value."""
        return cls(DataType.JSON, raw)

    @classmethod
    def binary(cls, b: bytes) -> "Payload":
        return cls(DataType.BINARY, b)
