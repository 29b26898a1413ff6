"""Control commands between the nodes of a hub, and the wire form of everything a broker carries.

A service-API operation that targets connections on other nodes (join, leave, close,
permissions, listing members, ...) travels as a ``Command`` on the same topic as a send to
the same target: a connection topic reaches the node that holds the connection, a user
topic every node with one of the user's connections, a group topic every node with members,
the hub topic every node running the hub. Each node that gets a command applies it to its
local members and, when the command names a ``reply_to`` topic, answers with a ``Reply``
carrying the same ``request_id``. The requester knows how many answers to wait for: the
broker's ``publish`` says how many nodes the command reached.

Rules this module keeps:
- A command is plain data: an operation name from ``OPS`` and msgpack-able arguments. A
  filter travels as its OData source text and is compiled again on arrival; values may
  hold ``Publication`` objects (a session's unacked messages), which cross as their own
  wire form (``Publication.to_wire``) with their wire id.
- With the memory broker nothing here is used: commands and replies stay Python objects.
- The wire form is version-tagged msgpack (``cmd1``, ``rep1``) beside the publication's
  (``pub1``); ``decode_message`` tells them apart by the tag and raises ``ValueError`` for
  anything else, so a foreign or corrupt message is a counted drop in the broker.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import msgspec

from fabric.core.publication import Publication

__all__ = ["OPS", "PROBE", "Command", "Reply", "decode_message", "encode_message", "wire_codec"]

#: The operations a node applies for another. Anything else arriving is refused on decode.
OPS = frozenset({
    "probe",  # no-op: published only to learn how many nodes hold a target (exists)
    "join", "leave", "leave_all",  # (connection_id, group) / (connection_id,)
    "ujoin", "uleave", "uleave_all",  # (user_id, group) / (user_id,)
    "fjoin", "fleave",  # (groups,) + filter: every selected connection of the node
    "members",  # (group,)
    "close", "close_all", "close_group", "close_user",
    "grant", "revoke", "has_perm",  # (connection_id, permission, target)
    "claim", "release",  # moving a reliable session between nodes
    "edge",  # (name, *args) + filter: an edge's own operation (``Hub.on_edge``)
})


class Command:
    """One operation for the nodes a topic reaches. ``request_id`` 0: no answer wanted."""

    __slots__ = ("args", "filter", "op", "reply_to", "request_id", "wire_id")

    def __init__(self, op: str, args: tuple = (), *, filter: Any = None, request_id: int = 0,
                 reply_to: str | None = None) -> None:
        self.op = op
        self.args = args
        #: A compiled filter (a callable with a ``source`` attribute), or None.
        self.filter = filter
        self.request_id = request_id
        self.reply_to = reply_to
        self.wire_id: bytes | None = None

    def __repr__(self) -> str:
        return f"<Command {self.op} {self.args!r:.80} #{self.request_id}>"


class Reply:
    """One node's answer to a command (``value`` None: "nothing of that here")."""

    __slots__ = ("node", "request_id", "value", "wire_id")

    def __init__(self, request_id: int, value: Any, node: str | None = None) -> None:
        self.request_id = request_id
        self.value = value
        #: The answering node's reply topic (so the requester can address it alone).
        self.node = node
        self.wire_id: bytes | None = None

    def __repr__(self) -> str:
        return f"<Reply #{self.request_id} {self.value!r:.80}>"


PROBE = Command("probe")


# ---- the wire form ----------------------------------------------------------------------

_PUBLICATION_EXT = 1


class _CommandWire(msgspec.Struct, array_like=True, forbid_unknown_fields=True, tag="cmd1"):
    op: str
    args: list[Any]
    filter: str | None
    request_id: int
    reply_to: str | None


class _ReplyWire(msgspec.Struct, array_like=True, forbid_unknown_fields=True, tag="rep1"):
    request_id: int
    value: Any
    node: str | None


def _enc_hook(value: Any) -> Any:
    if isinstance(value, Publication):
        wire_id = getattr(value, "wire_id", None) or b""
        return msgspec.msgpack.Ext(_PUBLICATION_EXT, bytes([len(wire_id)]) + wire_id + value.to_wire())
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise NotImplementedError(f"cannot send a {type(value).__name__} between nodes")


_ENCODER = msgspec.msgpack.Encoder(enc_hook=_enc_hook)


def encode_message(message: Any) -> bytes:
    """A publication, command or reply as bytes for another process. No checkpoint."""
    if type(message) is Command:
        source = getattr(message.filter, "source", None) if message.filter is not None else None
        if message.filter is not None and source is None:
            raise ValueError("a command's filter must carry its OData source text to cross nodes")
        return _ENCODER.encode(_CommandWire(message.op, list(message.args), source, message.request_id,
                                            message.reply_to))
    if type(message) is Reply:
        return _ENCODER.encode(_ReplyWire(message.request_id, message.value, message.node))
    return message.to_wire()


def _ext_hook(compile_filter: Callable[[str], Any] | None, code: int, data: memoryview) -> Any:
    if code != _PUBLICATION_EXT:
        raise ValueError(f"unknown msgpack extension {code}")
    raw = bytes(data)
    n = raw[0]
    publication = Publication.from_wire(raw[1 + n:], compile_filter=compile_filter)
    publication.wire_id = raw[1:1 + n] or None
    return publication


def _tag(data: bytes) -> bytes:
    """The version tag of a msgpack array whose first element is a 4-byte string."""
    if not data:
        return b""
    head = data[0]
    if 0x90 <= head <= 0x9F:
        at = 1
    elif head == 0xDC:
        at = 3
    elif head == 0xDD:
        at = 5
    else:
        return b""
    if data[at:at + 1] != b"\xa4":
        return b""
    return data[at + 1:at + 5]


def decode_message(data: bytes, *, compile_filter: Callable[[str], Any] | None = None) -> Any:
    """The inverse of ``encode_message``. Raises ``ValueError`` for anything else."""
    tag = _tag(data)
    if tag == b"pub1":
        return Publication.from_wire(data, compile_filter=compile_filter)
    decoder = _decoders(compile_filter)
    try:
        if tag == b"cmd1":
            wire = decoder[0].decode(data)
        elif tag == b"rep1":
            wire = decoder[1].decode(data)
            return Reply(wire.request_id, wire.value, wire.node)
        else:
            raise ValueError("not a fabric message (unknown tag)")
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"not a fabric message: {exc}") from None
    if wire.op not in OPS:
        raise ValueError(f"unknown command {wire.op!r}")
    selects = None
    if wire.filter is not None:
        if compile_filter is None:
            raise ValueError("a filtered command needs a filter compiler")
        selects = compile_filter(wire.filter)
    return Command(wire.op, tuple(wire.args), filter=selects, request_id=wire.request_id, reply_to=wire.reply_to)


@functools.lru_cache(maxsize=8)
def _decoders(compile_filter: Callable[[str], Any] | None) -> tuple[msgspec.msgpack.Decoder, msgspec.msgpack.Decoder]:
    hook = functools.partial(_ext_hook, compile_filter)
    return (msgspec.msgpack.Decoder(_CommandWire, ext_hook=hook), msgspec.msgpack.Decoder(_ReplyWire, ext_hook=hook))


def wire_codec(compile_filter: Callable[[str], Any] | None) -> dict[str, Callable]:
    """``encode``/``decode`` keyword arguments for ``RedisBus``."""
    return {"encode": encode_message, "decode": functools.partial(decode_message, compile_filter=compile_filter)}
