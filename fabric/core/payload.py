"""Domain values shared by every protocol codec and the routing core.

Rules this module keeps:
- A ``Payload`` is what a publisher sent, kept in its *wire-neutral* form: ``body`` is
  always ``bytes`` (UTF-8 text for TEXT, the raw JSON value's bytes for JSON, the decoded
  bytes for BINARY, the serialized ``google.protobuf.Any`` for PROTOBUF). Codecs turn it
  into their own representation once per publish, never per recipient.
- Nothing here imports trio.
"""

from __future__ import annotations

import attrs

from specs.datatype import DataType

__all__ = ["DataType", "Payload"]


@attrs.frozen(slots=True)
class Payload:
    """What a publisher sent, in its wire-neutral form (see the module's rules)."""

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
