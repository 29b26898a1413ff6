"""A message on its way to many connections, encoded at most once per wire format.

Rules this module keeps:
- A ``Publication`` is immutable once published. Wire formats are supplied by the edges
  (``WireFormat``: a name and an encode function); the core knows none of them. The cache
  is filled lazily, the first time a recipient of each format needs it, and then shared by
  every other recipient of that format (an unmasked server frame is the same for all).
- Per-connection variations (a reliable ``sequenceId``) are derived by the edge from cached
  parts, never by re-encoding the message.
- What crosses a process boundary is ``to_wire()`` / ``from_wire()``: payload bytes, data
  type and metadata, target, sender, exclusions, the filter as OData source text and the TTL
  as a wall-clock deadline. No closure and no trio-clock value ever leaves the process.
- An edge's own kind of publication (a subclass with a ``kind``, e.g. a Web PubSub stream
  fragment) crosses too: its ``wire_extension()`` (plain msgpack values the core never reads)
  travels beside the core's fields, and ``from_wire`` rebuilds the same subclass through
  ``register_kind``, so a subscriber on another node gets what a local one gets. An unknown
  kind or an extension its class refuses is a ``ValueError`` like any other junk.
- Nothing here imports an edge. ``trio.current_time`` is read only when a TTL is set.
"""

from __future__ import annotations

import time
from typing import Any, Callable, ClassVar, Literal, Mapping, TypeVar

import msgspec
import trio

from fabric.core.payload import DataType, Payload

Origin = Literal["group", "server"]

__all__ = ["Origin", "Publication", "WireFormat", "register_kind"]


class WireFormat:
    """One edge's encoding of publications: ``encode(publication) -> bytes``, called at most
    once per publication (the result is cached on the publication, keyed by this object)."""

    __slots__ = ("name", "encode")

    def __init__(self, name: str, encode: Callable[["Publication"], bytes]) -> None:
        self.name = name
        self.encode = encode

    def __repr__(self) -> str:
        return f"<WireFormat {self.name}>"


class Publication:
    """A message to a group or from the server (to all, a user or a connection).

    ``filter`` is a compiled predicate over a connection with a ``source`` attribute (the
    OData text), or None. ``expires_at`` is a trio-clock deadline (None: never expires).
    """

    __slots__ = (
        "origin", "group", "payload", "from_user_id", "sender_id", "no_echo", "excluded", "filter",
        "expires_at", "metadata", "_cache", "wire_id",
    )

    #: The wire name of an edge's subclass that carries more than the fields below (None: a
    #: plain publication). Such a subclass implements ``wire_extension`` and
    #: ``restore_extension`` and is passed to ``register_kind``.
    kind: ClassVar[str | None] = None

    def __init__(
        self,
        origin: Origin,
        payload: Payload,
        *,
        group: str | None = None,
        from_user_id: str | None = None,
        sender_id: str | None = None,
        no_echo: bool = False,
        excluded: frozenset[str] = frozenset(),
        filter: Callable[[Any], bool] | None = None,
        ttl_seconds: float | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.origin = origin
        #: trio clock deadline after which this message is dropped instead of delivered
        #: (REST ``messageTtlSeconds``; None or 0: never expires).
        self.expires_at = trio.current_time() + ttl_seconds if ttl_seconds else None
        self.payload = payload
        self.group = group
        self.from_user_id = from_user_id
        self.sender_id = sender_id
        self.no_echo = no_echo
        self.excluded = excluded
        #: Recipients must also satisfy this predicate (a compiled OData filter, called with
        #: the connection; it never raises). None: no filter.
        self.filter = filter
        self.metadata = metadata
        self._cache: dict[Any, bytes] | None = None
        #: Set by a broker that spans processes: the same bytes name this publish on every
        #: node (a reliable session moving between nodes drops what both nodes saw).
        self.wire_id: bytes | None = None

    def expired(self) -> bool:
        """True once the message outlived its TTL (checked at delivery and at replay)."""
        return self.expires_at is not None and trio.current_time() > self.expires_at

    def skips(self, connection_id: str) -> bool:
        """True if this publication must not reach that connection."""
        if self.no_echo and connection_id == self.sender_id:
            return True
        return connection_id in self.excluded

    def encoded(self, fmt: WireFormat) -> bytes:
        """This publication in ``fmt``, encoded on first use and cached. No checkpoint."""
        cache = self._cache
        if cache is None:
            cache = self._cache = {}
        else:
            data = cache.get(fmt)
            if data is not None:
                return data
        data = cache[fmt] = fmt.encode(self)
        return data

    # ---- crossing a process boundary ----------------------------------------------------

    def wire_extension(self) -> Any:
        """A subclass's own fields as plain msgpack values (None, bool, int, float, str,
        bytes, lists, dicts with string keys) for ``to_wire``. Plain publications: None."""
        return None

    def restore_extension(self, value: Any) -> None:
        """Set a subclass's own fields from what its ``wire_extension`` returned on another
        node (``from_wire`` calls it once the core's fields are set). Raise ``ValueError``
        for anything that is not such a value."""
        raise ValueError(f"not a publication: {type(self).__name__} has no extension")

    def to_wire(self) -> bytes:
        """The publication as bytes for another process (msgpack). No checkpoint."""
        deadline = None
        if self.expires_at is not None:
            deadline = time.time() + (self.expires_at - trio.current_time())
        fields = (  # _Wire's order
            self.origin, self.payload.data_type.value, self.payload.body,
            dict(self.metadata) if self.metadata else None, self.group, self.from_user_id, self.sender_id,
            self.no_echo, sorted(self.excluded) if self.excluded else None,
            getattr(self.filter, "source", None) if self.filter is not None else None, deadline,
        )
        kind = self.kind
        if kind is None:  # the 12-element form every node of this envelope reads
            return _ENCODER.encode(_Wire(*fields))
        return _ENCODER.encode(_WireOfKind(*fields, kind, self.wire_extension()))

    @classmethod
    def from_wire(cls, data: bytes, *, compile_filter: Callable[[str], Any] | None = None) -> "Publication":
        """Rebuild a publication from ``to_wire`` bytes. Raises ``ValueError`` for anything
        that is not one (foreign or corrupt data). ``compile_filter`` turns the OData text
        back into a predicate; a filtered publication without it is refused."""
        try:
            wire = _DECODER.decode(data)
            data_type = DataType(wire.data_type)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            raise ValueError(f"not a publication: {exc}") from None
        if wire.origin not in ("group", "server") or (wire.origin == "group") != (wire.group is not None):
            raise ValueError("not a publication: origin and group disagree")
        kind = wire.kind
        if kind is None:
            if wire.extension is not None:
                raise ValueError("not a publication: an extension without a kind")
            made = Publication
        else:
            made = _KINDS.get(kind)
            if made is None:
                raise ValueError(f"not a publication this node knows: kind {kind!r}")
        selects = None
        if wire.filter is not None:
            if compile_filter is None:
                raise ValueError("a filtered publication needs a filter compiler")
            selects = compile_filter(wire.filter)
        publication = made.__new__(made)
        Publication.__init__(
            publication, wire.origin, Payload(data_type, wire.body), group=wire.group,
            from_user_id=wire.from_user_id, sender_id=wire.sender_id, no_echo=wire.no_echo,
            excluded=frozenset(wire.excluded or ()), filter=selects, metadata=wire.metadata,
        )
        if kind is not None:
            publication.restore_extension(wire.extension)
        if wire.expires_at is not None:
            publication.expires_at = trio.current_time() + (wire.expires_at - time.time())
        return publication

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.origin} group={self.group!r} {self.payload.data_type.value} {len(self.payload.body)}B>"


_P = TypeVar("_P", bound=type[Publication])
_KINDS: dict[str, type[Publication]] = {}


def register_kind(cls: _P) -> _P:
    """Let ``from_wire`` rebuild ``cls``, a subclass of ``Publication`` with a ``kind`` and
    its ``wire_extension``/``restore_extension``, on every node (a class decorator; the edge
    defining the subclass applies it, so any process that can make one can read one).
    ``from_wire`` creates it with ``cls.__new__`` and ``Publication.__init__``: its own
    fields are set by ``restore_extension`` alone."""
    kind = cls.kind
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"{cls.__name__}.kind must be a non-empty string to cross processes")
    known = _KINDS.setdefault(kind, cls)
    if known is not cls:
        raise ValueError(f"publication kind {kind!r} is {known.__qualname__}'s already")
    return cls


class _Wire(msgspec.Struct, array_like=True, forbid_unknown_fields=True, tag="pub1"):
    """Version-tagged field order; ``tag`` makes foreign msgpack arrays fail to decode.

    A plain publication is these 12 elements; one of an edge's kinds appends ``kind`` and
    ``extension`` (``_WireOfKind``). The decoder reads both lengths, so the plain form is
    unchanged from before kinds existed and such nodes still read it (the longer form they
    refuse as malformed: they could not show what it carries anyway)."""

    origin: str
    data_type: str
    body: bytes
    metadata: dict[str, str] | None
    group: str | None
    from_user_id: str | None
    sender_id: str | None
    no_echo: bool
    excluded: list[str] | None
    filter: str | None
    expires_at: float | None


class _WireOfKind(_Wire, array_like=True, forbid_unknown_fields=True, tag="pub1"):
    kind: str | None = None
    extension: Any = None


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(_WireOfKind)
