"""Domain values shared by every protocol codec and the routing core.

Rules this module keeps:
- A ``Payload`` is what a publisher sent, kept in its *wire-neutral* form: ``body`` is
  always ``bytes`` (UTF-8 text for TEXT, the raw JSON value's bytes for JSON, the decoded
  bytes for BINARY, the serialized ``google.protobuf.Any`` for PROTOBUF). Codecs turn it
  into their own representation once per publish, never per recipient.
- JSON that the fabric reads from outside is first checked by ``json_too_deep``: at most
  ``MAX_JSON_DEPTH`` levels, decided in C-speed passes plus a loop over structural
  brackets only (stopping as soon as the bound is passed), so hostile input costs O(n).
- Nothing here imports trio.
"""

from __future__ import annotations

import re

import attrs

from specs.datatype import DataType
from specs.webpubsub_json import MAX_JSON_DEPTH

__all__ = ["DataType", "MAX_JSON_DEPTH", "Payload", "json_too_deep"]

_ESCAPE = re.compile(rb"\\.", re.S)
_STRING = re.compile(rb'"[^"]*"')
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_AS_PARENS = bytes.maketrans(b"[]{}", b"()()")


def json_too_deep(raw: bytes | str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if ``raw`` (JSON text, valid or not) nests arrays/objects deeper than ``limit``.

    Brackets inside strings do not count. Cheap when there are few brackets (two ``count``
    calls); otherwise C-speed passes: escapes and strings removed, only brackets kept, then
    innermost pairs removed once per level (at most ``limit + 1`` passes). Unbalanced input
    counts its unclosed brackets as depth. No checkpoint.
    """
    text = isinstance(raw, str)
    if raw.count("[" if text else b"[") + raw.count("{" if text else b"{") <= limit:
        return False
    data = raw.encode("utf-8", "surrogatepass") if text else bytes(raw)
    nest = _STRING.sub(b"", _ESCAPE.sub(b"", data)).translate(_AS_PARENS, _NOT_BRACKETS)
    levels = 0
    while levels <= limit:
        inner = nest.replace(b"()", b"")
        if len(inner) == len(nest):
            break
        nest = inner
        levels += 1
    return levels + nest.count(b"(") > limit


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
