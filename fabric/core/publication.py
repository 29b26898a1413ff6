"""A message on its way to many connections, encoded at most once per wire format.

Rules:
- A ``Publication`` is immutable once published; the frame cache is filled lazily, the
  first time a recipient of each wire format needs it, and then shared by every other
  recipient of that format (the bytes of an unmasked server frame are the same for all).
- Per-connection variations (the reliable ``sequenceId``) are derived from the cached
  JSON body, not by re-encoding the message.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import trio

from transport.frames import encode_frame

from fabric.webpubsub import codec_json

from fabric.webpubsub import codec_protobuf

from fabric.webpubsub import codec_simple
from fabric.core.payload import Payload

Origin = Literal["group", "server"]


class Publication:
    __slots__ = (
        "origin", "group", "payload", "from_user_id", "sender_id", "no_echo", "excluded", "filter", "expires_at",
        "_json", "_json_frame", "_json_rel", "_simple_frame", "_pb", "_pb_frame",
    )

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
        ttl_seconds: int | None = None,
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
        #: Recipients must also satisfy this predicate (a compiled ``fabric.odata`` filter,
        #: called with the connection; it never raises). None: no filter.
        self.filter = filter
        self._json: bytes | None = None
        self._json_frame: bytes | None = None
        self._simple_frame: bytes | None = None
        self._json_rel: dict[int, bytes] | None = None
        self._pb: bytes | None = None
        self._pb_frame: bytes | None = None

    def expired(self) -> bool:
        """True once the message outlived its TTL (checked at delivery and at replay)."""
        return self.expires_at is not None and trio.current_time() > self.expires_at

    def skips(self, connection_id: str) -> bool:
        """True if this publication must not reach that connection."""
        if self.no_echo and connection_id == self.sender_id:
            return True
        return connection_id in self.excluded

    def json_body(self) -> bytes:
        body = self._json
        if body is None:
            if self.origin == "group":
                body = codec_json.encode_group_message(self.group, self.payload, self.from_user_id)
            else:
                body = codec_json.encode_server_message(self.payload)
            self._json = body
        return body

    def json_frame(self) -> bytes:
        frame = self._json_frame
        if frame is None:
            frame = self._json_frame = encode_frame(self.json_body(), text=True)
        return frame

    def json_frame_with_sequence(self, sequence_id: int) -> bytes:
        """The reliable variant for one connection: what ``codec_json.with_sequence_id``
        makes, framed. This runs once per recipient, so the frame header plus the body up
        to the id is cut once per publication (per id width) and each recipient's frame is
        one concatenation: ``head + b"1234}"``."""
        tail = b"%d}" % sequence_id
        heads = self._json_rel
        if heads is None:
            heads = self._json_rel = {}
        head = heads.get(len(tail))
        if head is None:
            prefix = self.json_body()[:-1] + b',"sequenceId":'
            head = heads[len(tail)] = encode_frame(prefix + tail, text=True)[: -len(tail)]
        return head + tail

    def protobuf_body(self) -> bytes:
        body = self._pb
        if body is None:
            if self.origin == "group":
                body = codec_protobuf.encode_group_message(self.group, self.payload, self.from_user_id)
            else:
                body = codec_protobuf.encode_server_message(self.payload)
            self._pb = body
        return body

    def protobuf_frame(self) -> bytes:
        frame = self._pb_frame
        if frame is None:
            frame = self._pb_frame = encode_frame(self.protobuf_body(), text=False)
        return frame

    def protobuf_frame_with_sequence(self, sequence_id: int) -> bytes:
        return encode_frame(codec_protobuf.with_sequence_id(self.protobuf_body(), sequence_id), text=False)

    def simple_frame(self) -> bytes:
        frame = self._simple_frame
        if frame is None:
            is_text, data = codec_simple.frame_for(self.payload)
            frame = self._simple_frame = encode_frame(data, text=is_text)
        return frame

    def __repr__(self) -> str:
        return f"<Publication {self.origin} group={self.group!r} {self.payload.data_type.value} {len(self.payload.body)}B>"
