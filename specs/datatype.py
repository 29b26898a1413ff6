"""The ``dataType`` of a message: the four kinds of payload Web PubSub carries."""

from __future__ import annotations

import enum


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
