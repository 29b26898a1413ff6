"""Sans-IO codec for the Web PubSub protobuf subprotocols
(``protobuf.webpubsub.azure.v1``, ``protobuf.reliable.webpubsub.azure.v1``).

Rules this module keeps:
- Never imports trio, and needs no protobuf runtime: the proto3 wire format is read and written
  by hand from the schema in ``specs.webpubsub_protobuf`` (tags are derived from it).
- ``decode_client`` returns the message classes of ``fabric.codec_json`` (one dispatch in the
  server for every subprotocol) and raises only its ``ProtocolError`` subclasses:
  ``MalformedFrame`` when the bytes are not a well-formed ``UpstreamMessage`` (what a protobuf
  parser would reject, plus groups and a frame with no message), ``InvalidMessage`` for a
  well-formed message with a bad field (same rules and texts as the JSON codec).
- Decoding is two-path, like the JSON codec. The fast path reads, straight through, the layout
  every real client writes (join/leave/send/event without metadata, TTL or stream, sequence
  acks, pings and stream fragments; fields in number order, each at most once); anything else
  (another order, a repeat, unknown fields, metadata, stream starts, invocations, anything
  malformed) goes to the slow path: a schema-driven decoder with
  protobuf's full semantics (last scalar wins, repeated message fields merge, a later oneof
  member replaces an earlier one, every occurrence validated). Both finish in the same
  ``_build_*`` functions, and both read the whole frame before any semantic check, so a
  malformed frame is always ``MalformedFrame`` (the slow path produces every one of them).
- Payload bodies stay the bytes the client sent (the serialized ``google.protobuf.Any`` for
  PROTOBUF, the JSON text for JSON); nothing is re-encoded.
- Metadata maps are read entry by entry (protobuf semantics: a repeated key's last value wins),
  then checked and lower-cased by ``specs.metadata.normalize`` (keys that differ only in case
  are a duplicate, as in JSON).
- Encoders write canonical proto3 (fields in number order, implicit-presence defaults
  omitted): the same bytes protobuf's own serializer produces, up to the order of map
  entries. They never raise on data.
- Everything is linear in the frame size; per-byte Python loops only inside varints.
"""

from __future__ import annotations

import msgspec

from fabric.core.payload import MAX_JSON_DEPTH, DataType, Payload, json_too_deep
from fabric.webpubsub.codec_json import (
    CancelInvocation,
    ClientMessage,
    Event,
    InvalidMessage,
    Invoke,
    JoinGroup,
    LeaveGroup,
    MalformedFrame,
    Ping,
    ProtocolError,
    SendToGroup,
    SequenceAck,
    StreamData,
    StreamEnd,
    StreamInfo,
    StreamStart,
    Unsupported,
)
from specs import errors as _errors
from specs import invocation as _invocation
from specs import metadata as _metadata
from specs import streams as _streams
from specs import webpubsub_json as _json_spec
from specs import webpubsub_protobuf as _spec

__all__ = [
    "CancelInvocation",
    "ClientMessage",
    "Event",
    "InvalidMessage",
    "Invoke",
    "JoinGroup",
    "LeaveGroup",
    "MalformedFrame",
    "Ping",
    "ProtocolError",
    "SendToGroup",
    "SequenceAck",
    "StreamData",
    "StreamEnd",
    "StreamInfo",
    "StreamStart",
    "Unsupported",
    "decode_client",
    "encode_ack",
    "encode_connected",
    "encode_disconnected",
    "encode_group_message",
    "encode_invoke_response",
    "encode_invoke_response_error",
    "encode_pong",
    "encode_server_message",
    "encode_stream_ack",
    "encode_stream_closed",
    "encode_stream_nack",
    "is_valid_any",
    "with_sequence_id",
]

_MASK64 = _spec.UINT64_MASK
_MAX_VARINT = _spec.MAX_VARINT_BYTES
_UINT64_MAX = _json_spec.UINT64_MAX


class _SlowPath(Exception):
    """Raised inside the fast path when the frame needs the schema-driven decoder. Always a
    fresh instance: re-raising one shared instance would grow its traceback forever."""


def _truncated() -> MalformedFrame:
    return MalformedFrame("the frame is not a valid UpstreamMessage: truncated")


def _bad_utf8() -> MalformedFrame:
    return MalformedFrame("the frame is not a valid UpstreamMessage: a string is not UTF-8")


# =========================================================================== wire reading


def _varint(buf: bytes, pos: int, end: int, max_bytes: int = _MAX_VARINT) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it: at most ``max_bytes`` bytes (10 for
    values, 5 for tags and lengths, as protobuf's parsers allow), truncated to 64 bits."""
    if pos + 1 < end:  # the common 1- to 3-byte cases, unrolled
        b0 = buf[pos]
        if b0 < 0x80:
            return b0, pos + 1
        b1 = buf[pos + 1]
        if b1 < 0x80:
            return (b0 & 0x7F) | b1 << 7, pos + 2
        if pos + 2 < end:
            b2 = buf[pos + 2]
            if b2 < 0x80:
                return (b0 & 0x7F) | (b1 & 0x7F) << 7 | b2 << 14, pos + 3
    result = 0
    shift = 0
    limit = pos + max_bytes
    while pos < end:
        if pos == limit:
            raise MalformedFrame("the frame is not a valid UpstreamMessage: varint too long")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & _MASK64, pos
        shift += 7
    raise _truncated()


# =========================================================================== schema tables

# Kinds of the schema-driven decoder.
_K_STRING, _K_BYTES, _K_BOOL, _K_UINT64, _K_UINT32, _K_INT64 = range(6)
_K_MESSAGE, _K_ANY, _K_COUNT, _K_MAP = 6, 7, 8, 9

_SCALAR_KINDS = {
    "string": _K_STRING,
    "bytes": _K_BYTES,
    "bool": _K_BOOL,
    "uint64": _K_UINT64,
    "uint32": _K_UINT32,
    "int64": _K_INT64,
}

_MAP_ENTRY = _spec.ProtoMessage(
    "<map<string,string> entry>",
    (_spec.ProtoField(1, "key", "string"), _spec.ProtoField(2, "value", "string")),
)

# message name -> {tag: (field name, kind, sub-table or None, oneof name or None)}
_TABLES: dict[str, dict[int, tuple]] = {}


def _table(message: _spec.ProtoMessage) -> dict[int, tuple]:
    table = _TABLES.get(message.name)
    if table is not None:
        return table
    table = _TABLES[message.name] = {}
    for f in message.fields:
        if f.type == _spec.MAP_STRING_STRING:
            entry = (f.name, _K_MAP, _table(_MAP_ENTRY), None)
        elif f.type == "google.protobuf.Any":
            entry = (f.name, _K_ANY, _table(_spec.MESSAGES[f.type]), f.oneof)
        elif f.is_message:
            kind = _K_COUNT if f.label == "repeated" else _K_MESSAGE
            entry = (f.name, kind, _table(_spec.MESSAGES[f.type]), f.oneof)
        else:
            entry = (f.name, _SCALAR_KINDS[f.type], None, f.oneof)
        table[f.tag] = entry
    return table


for _m in _spec.MESSAGES.values():
    _table(_m)
del _m

_UPSTREAM_TABLE = _TABLES["UpstreamMessage"]
_ANY_TABLE = _TABLES["google.protobuf.Any"]


def _t(message: str, field: str) -> int:
    return _spec.tag(message, field)


_U = "UpstreamMessage"
_STG = "UpstreamMessage.SendToGroupMessage"
_EV = "UpstreamMessage.EventMessage"
_JG = "UpstreamMessage.JoinGroupMessage"
_LG = "UpstreamMessage.LeaveGroupMessage"

_T_SEND_TO_GROUP = _t(_U, "send_to_group_message")
_T_EVENT = _t(_U, "event_message")
_T_JOIN = _t(_U, "join_group_message")
_T_LEAVE = _t(_U, "leave_group_message")
_T_SEQ_ACK = _t(_U, "sequence_ack_message")
_T_PING = _t(_U, "ping_message")
_T_STREAM_DATA = _t(_U, "stream_data_message")



def _require(condition: bool, what: str) -> None:
    if not condition:
        raise RuntimeError(f"specs.webpubsub_protobuf disagrees with the codec: {what}")


# The fast path spells the one-byte field tags of these messages inline; they must be these.
_require(
    [_t(_STG, f) for f in ("group", "ack_id", "data", "no_echo")] == [0x0A, 0x10, 0x1A, 0x20],
    "SendToGroupMessage tags",
)
_require([_t(_JG, f) for f in ("group", "ack_id")] == [0x0A, 0x10], "JoinGroupMessage tags")
_require([_t(_LG, f) for f in ("group", "ack_id")] == [0x0A, 0x10], "LeaveGroupMessage tags")
_require(
    [_t(_EV, f) for f in ("event", "data", "ack_id")] == [0x0A, 0x12, 0x18], "EventMessage tags"
)
_require(_t("UpstreamMessage.SequenceAckMessage", "sequence_id") == 0x08, "SequenceAck tag")
_require(
    [_t("UpstreamMessage.StreamDataMessage", f) for f in ("stream_id", "stream_sequence_id", "data")]
    == [0x0A, 0x10, 0x1A],
    "StreamDataMessage tags",
)
_require(
    max(_T_SEND_TO_GROUP, _T_EVENT, _T_JOIN, _T_LEAVE, _T_SEQ_ACK, _T_PING, _T_STREAM_DATA) < 0x80,
    "one-byte UpstreamMessage tags",
)
_T_ANY_TYPE_URL = _t("google.protobuf.Any", "type_url")
_T_ANY_VALUE = _t("google.protobuf.Any", "value")

_T_TEXT = _t("MessageData", "text_data")
_T_BINARY = _t("MessageData", "binary_data")
_T_PROTOBUF = _t("MessageData", "protobuf_data")
_T_JSON = _t("MessageData", "json_data")
_DATA_FIELD_TYPES = _spec.DATA_TYPE_OF_FIELD

_KINDS_BY_FIELD = _spec.UPSTREAM_KINDS

# =========================================================================== slow path


def _decode_generic(
    buf: bytes, pos: int, end: int, table: dict[int, tuple], budget: list[int]
) -> dict:
    """Decode one message with protobuf's semantics into ``{field name: value}``.

    Strings are ``str``, bytes ``bytes``, messages nested dicts, ``google.protobuf.Any`` its
    serialized bytes, map fields a dict (a repeated key's last value wins), repeated message
    fields the number of entries (the server never reads them; each entry is validated). A oneof's member name is stored under ``"oneof <name>"``.
    Absent fields are absent. ``budget[0]`` is the number of fields still allowed in the frame
    (decision ``protobuf.field-budget``); every field read, at any level, spends one.
    """
    out: dict = {}
    firsts: dict | None = None  # message field name -> (start, end) of its first occurrence
    merged: dict | None = None  # message field name -> [bytearray of occurrences, kind, sub]
    cases: dict | None = None  # oneof name -> member name
    while pos < end:
        budget[0] -= 1
        if budget[0] < 0:
            raise MalformedFrame(
                f"the frame has more than {_spec.MAX_FIELDS_PER_FRAME} protobuf fields"
            )
        tag = buf[pos]
        pos += 1
        if tag >= 0x80:
            tag, pos = _varint(buf, pos - 1, end, 5)
            if tag > 0xFFFFFFFF:
                raise MalformedFrame("the frame is not a valid UpstreamMessage: bad tag")
        if tag < 8:
            raise MalformedFrame("the frame is not a valid UpstreamMessage: field number 0")
        wt = tag & 7
        if wt == 2:
            if pos >= end:
                raise _truncated()
            n = buf[pos]
            pos += 1
            if n >= 0x80:
                n, pos = _varint(buf, pos - 1, end, 5)
            s, e = pos, pos + n
            if e > end:
                raise _truncated()
            pos = e
            value = 0
        elif wt == 0:
            if pos >= end:
                raise _truncated()
            value = buf[pos]
            pos += 1
            if value >= 0x80:
                value, pos = _varint(buf, pos - 1, end)
        elif wt == 1 or wt == 5:
            pos += 8 if wt == 1 else 4
            if pos > end:
                raise _truncated()
            continue
        else:
            raise MalformedFrame(
                f"the frame is not a valid UpstreamMessage: unsupported wire type {wt}"
            )
        entry = table.get(tag)
        if entry is None:
            continue  # unknown field, or a known one with another wire type
        name, kind, sub, oneof = entry
        if oneof is not None:
            if cases is None:
                cases = {}
            previous = cases.get(oneof)
            if previous != name:
                if previous is not None:
                    # A different member of the oneof replaces the earlier one.
                    out.pop(previous, None)
                    if merged is not None:
                        merged.pop(previous, None)
                cases[oneof] = name
        if kind == _K_STRING:
            try:
                out[name] = buf[s:e].decode("utf-8")
            except UnicodeDecodeError:
                raise _bad_utf8() from None
        elif kind == _K_UINT64:
            out[name] = value
        elif kind == _K_BOOL:
            out[name] = value != 0
        elif kind == _K_BYTES:
            out[name] = buf[s:e]
        elif kind == _K_MESSAGE or kind == _K_ANY:
            this = _decode_generic(buf, s, e, sub, budget)  # every occurrence must be valid
            if name not in out:
                out[name] = this if kind == _K_MESSAGE else buf[s:e]
                if firsts is None:
                    firsts = {}
                firsts[name] = (s, e)
            else:
                # A repeated message field merges: protobuf parses each occurrence into the
                # same object, which equals parsing their concatenation (done once, below).
                if merged is None:
                    merged = {}
                m = merged.get(name)
                if m is None:
                    fs, fe = firsts[name]  # type: ignore[index]
                    m = merged[name] = [bytearray(buf[fs:fe]), kind, sub]
                m[0] += buf[s:e]
        elif kind == _K_COUNT:
            _decode_generic(buf, s, e, sub, budget)
            out[name] = out.get(name, 0) + 1
        elif kind == _K_MAP:
            pair = _decode_generic(buf, s, e, sub, budget)
            entries = out.get(name)
            if entries is None:
                entries = out[name] = {}
            key = pair.get("key", "")
            entries.pop(key, None)  # protobuf: a repeated key's last value wins
            entries[key] = pair.get("value", "")
        elif kind == _K_UINT32:
            out[name] = value & 0xFFFFFFFF
        else:  # _K_INT64
            out[name] = value - (1 << 64) if value >> 63 else value
    if merged:
        for name, (acc, kind, sub) in merged.items():
            whole = bytes(acc)
            if kind == _K_MESSAGE:
                out[name] = _decode_generic(whole, 0, len(whole), sub, budget)
            else:
                out[name] = whole
    if cases:
        for oneof, member in cases.items():
            out["oneof " + oneof] = member
    return out


def _decode_slow(frame: bytes) -> ClientMessage:
    """The schema-driven path: protobuf's full semantics, then the shared builders."""
    budget = [_spec.MAX_FIELDS_PER_FRAME]
    top = _decode_generic(frame, 0, len(frame), _UPSTREAM_TABLE, budget)
    case = top.get("oneof message")
    if case is None:
        return _no_message(frame)
    m = top[case]
    kind = _KINDS_BY_FIELD[case]
    if case == "send_to_group_message":
        try:
            return _build_send_to_group(
                m.get("group", ""),
                m.get("ack_id"),
                m.get("no_echo", False),
                _generic_data(m.get("data")),
                m.get("stream"),
                m.get("metadata"),
                m.get("ttl_seconds"),
            )
        except InvalidMessage as exc:
            exc.stream_start = exc.stream_id is not None
            raise
    if case == "event_message":
        return _build_event(
            m.get("event", ""),
            m.get("ack_id"),
            _generic_data(m.get("data")),
            m.get("stream"),
            m.get("metadata"),
        )
    if case == "join_group_message" or case == "leave_group_message":
        return _build_group_op(kind.json_type, m.get("group", ""), m.get("ack_id"))
    if case == "sequence_ack_message":
        return SequenceAck(m.get("sequence_id", 0))
    if case == "ping_message":
        return _PING
    if case == "stream_data_message":
        data = m.get("data")
        return _build_stream_data(m.get("stream_id", ""), m.get("stream_sequence_id"),
                                  None if data is None else _generic_data(data), data is not None)
    if case == "stream_end_message":
        stream_id = _stream_id_or_invalid(m.get("stream_id", ""))
        error = m.get("error")
        if error is None:
            return StreamEnd(stream_id)
        return StreamEnd(stream_id, True, error.get("message"), error.get("user_error_code"))
    if case == "invoke_event_message":
        return _build_invoke(m.get("invocation_id", ""), m.get("event", ""), _generic_data(m.get("data")),
                             m.get("stream"), m.get("metadata"))
    if case == "cancel_invocation_message":
        return CancelInvocation(m.get("invocation_id", ""))
    return Unsupported(
        kind.json_type,
        m.get("ack_id"),
        None,
        m.get("invocation_id") or None,
        m.get("stream_id") or None,
    )


def _generic_data(data: dict | None) -> tuple[DataType, bytes] | None:
    if data is None:
        return None
    case = data.get("oneof data")
    if case is None:
        return None
    value = data[case]
    if type(value) is str:
        value = value.encode("utf-8")
    return _DATA_FIELD_TYPES[case], value


def _stream_id_or_invalid(stream_id: str) -> str:
    problem = _invocation.identifier_problem("stream_id", stream_id)
    if problem is not None:
        raise InvalidMessage(None, problem)
    return stream_id


def _no_message(frame: bytes) -> Unsupported:
    """An UpstreamMessage without a known member (decision ``protobuf.no-message``)."""
    pos, end, last = 0, len(frame), None
    while pos < end:  # the frame is known to be well formed here
        tag, pos = _varint(frame, pos, end)
        wt = tag & 7
        if wt == 2:
            n, pos = _varint(frame, pos, end)
            pos += n
            last = tag >> 3
        elif wt == 0:
            _, pos = _varint(frame, pos, end)
        else:
            pos += 8 if wt == 1 else 4
    if last is None:
        raise MalformedFrame("the frame is not an UpstreamMessage: it carries no message")
    return Unsupported(_spec.unknown_upstream_type(last))


# =========================================================================== fast path
#
# Real clients (protobufjs, Google.Protobuf, protoc-generated code) write fields in number
# order, each once. The fast path reads exactly that shape, straight through with no
# intermediate dicts; any deviation (another order, a repeat, an unknown or ignored field,
# metadata, a stream, anything malformed) raises _SlowPath or an IndexError and the frame is
# decoded again by the slow path, which also produces every MalformedFrame.


def _len(buf: bytes, pos: int, limit: int) -> tuple[int, int]:
    """At the length of a length-delimited field: (value start, value end) within limit."""
    n = buf[pos]
    pos += 1
    if n >= 0x80:
        n, pos = _varint(buf, pos - 1, limit, 5)
    end = pos + n
    if end > limit:
        raise _SlowPath
    return pos, end


def _fast_data(buf: bytes, pos: int, end: int) -> tuple[DataType, bytes] | None:
    """A MessageData holding exactly one member (or nothing)."""
    if pos == end:
        return None
    tag = buf[pos]
    s, e = _len(buf, pos + 1, end)
    if e != end:
        raise _SlowPath
    body = buf[s:e]
    if tag == _T_TEXT or tag == _T_JSON:
        if not body.isascii():
            body.decode("utf-8")  # UnicodeDecodeError: the slow path reports it
        return (_TEXT_DT if tag == _T_TEXT else _JSON_DT), body
    if tag == _T_BINARY:
        return _BINARY_DT, body
    if tag == _T_PROTOBUF:
        # google.protobuf.Any: type_url (1, string), value (2, bytes), in that order.
        if s < e and buf[s] == _T_ANY_TYPE_URL:
            us, s = _len(buf, s + 1, e)
            buf[us:s].decode("utf-8")
        if s < e and buf[s] == _T_ANY_VALUE:
            s = _len(buf, s + 1, e)[1]
        if s != e:
            raise _SlowPath
        return _PROTOBUF_DT, body
    raise _SlowPath


def _decode_fast(buf: bytes) -> ClientMessage:
    end = len(buf)
    kind = buf[0]
    pos, e = _len(buf, 1, end)
    if e != end:
        raise _SlowPath
    ack_id = None
    if kind == _T_SEND_TO_GROUP or kind == _T_JOIN or kind == _T_LEAVE:
        group = ""
        if pos < end and buf[pos] == 0x0A:  # group = 1
            s, pos = _len(buf, pos + 1, end)
            group = buf[s:pos].decode("utf-8")
        if pos < end and buf[pos] == 0x10:  # ack_id = 2
            ack_id = buf[pos + 1]
            pos += 2
            if ack_id >= 0x80:
                ack_id, pos = _varint(buf, pos - 1, end)
        if kind != _T_SEND_TO_GROUP:
            if pos != end:
                raise _SlowPath
            return _build_group_op("joinGroup" if kind == _T_JOIN else "leaveGroup", group, ack_id)
        data = None
        if pos < end and buf[pos] == 0x1A:  # data = 3
            s, pos = _len(buf, pos + 1, end)
            data = _fast_data(buf, s, pos)
        no_echo = False
        if pos < end and buf[pos] == 0x20:  # no_echo = 4
            v = buf[pos + 1]
            pos += 2
            if v >= 0x80:
                v, pos = _varint(buf, pos - 1, end)
            no_echo = v != 0
        if pos != end:
            raise _SlowPath
        return _build_send_to_group(group, ack_id, no_echo, data, None, None, None)
    if kind == _T_EVENT:
        event = ""
        if pos < end and buf[pos] == 0x0A:  # event = 1
            s, pos = _len(buf, pos + 1, end)
            event = buf[s:pos].decode("utf-8")
        data = None
        if pos < end and buf[pos] == 0x12:  # data = 2
            s, pos = _len(buf, pos + 1, end)
            data = _fast_data(buf, s, pos)
        if pos < end and buf[pos] == 0x18:  # ack_id = 3
            ack_id = buf[pos + 1]
            pos += 2
            if ack_id >= 0x80:
                ack_id, pos = _varint(buf, pos - 1, end)
        if pos != end:
            raise _SlowPath
        return _build_event(event, ack_id, data, None, None)
    if kind == _T_SEQ_ACK:
        sequence_id = 0
        if pos < end and buf[pos] == 0x08:  # sequence_id = 1
            sequence_id = buf[pos + 1]
            pos += 2
            if sequence_id >= 0x80:
                sequence_id, pos = _varint(buf, pos - 1, end)
        if pos != end:
            raise _SlowPath
        return SequenceAck(sequence_id)
    if kind == _T_STREAM_DATA:
        stream_id = ""
        if pos < end and buf[pos] == 0x0A:  # stream_id = 1
            s, pos = _len(buf, pos + 1, end)
            stream_id = buf[s:pos].decode("utf-8")
        sequence_id = None
        if pos < end and buf[pos] == 0x10:  # stream_sequence_id = 2
            sequence_id = buf[pos + 1]
            pos += 2
            if sequence_id >= 0x80:
                sequence_id, pos = _varint(buf, pos - 1, end)
        data = None
        has_data = False
        if pos < end and buf[pos] == 0x1A:  # data = 3
            s, pos = _len(buf, pos + 1, end)
            data = _fast_data(buf, s, pos)
            has_data = True
        if pos != end:
            raise _SlowPath
        return _build_stream_data(stream_id, sequence_id, data, has_data)
    if kind == _T_PING and pos == end:
        return _PING
    raise _SlowPath


_TEXT_DT = DataType.TEXT
_JSON_DT = DataType.JSON
_BINARY_DT = DataType.BINARY
_PROTOBUF_DT = DataType.PROTOBUF
_FAST_ERRORS = (_SlowPath, IndexError, UnicodeDecodeError, MalformedFrame)


def decode_client(frame: bytes) -> ClientMessage:
    """Decode one client binary frame (a serialized ``UpstreamMessage``).

    Returns one of ``JoinGroup``, ``LeaveGroup``, ``SendToGroup``, ``Event``, ``SequenceAck``,
    ``Ping``, ``Unsupported`` (the classes of ``fabric.codec_json``).

    Raises:
        MalformedFrame: not a well-formed ``UpstreamMessage`` (truncated, bad wire type or
            varint, a string that is not UTF-8, a group, an unparseable Any) or no message.
        InvalidMessage: a well-formed message with an invalid field (``ack_id`` set when
            the message carried one).
    """
    if type(frame) is not bytes:
        if isinstance(frame, str):
            raise MalformedFrame("protobuf frames are binary")
        frame = bytes(frame)
    try:
        return _decode_fast(frame)
    except _FAST_ERRORS:
        return _decode_slow(frame)


# =========================================================================== shared builders

_PING = Ping()
_group_name_problem = _json_spec.group_name_problem
_event_name_problem = _json_spec.event_name_problem
_raw_json = msgspec.json.Decoder(msgspec.Raw)
_JSON_NULL = msgspec.Raw(b"null")
_EMPTY_TEXT = Payload(DataType.TEXT, b"")


def _payload(
    ack_id: int | None, data: tuple[DataType, bytes] | None, metadata: dict | None, *,
    invocation_id: str | None = None, stream_id: str | None = None, optional: bool = False,
) -> Payload:
    """The payload of a send_to_group/event/invoke/stream fragment. Without data: an empty
    text when the message has metadata or the data is optional (an invoke), else invalid."""

    def bad(message: str) -> InvalidMessage:
        return InvalidMessage(ack_id, message, invocation_id=invocation_id, stream_id=stream_id)

    if data is None:
        if metadata is not None or optional:
            return _EMPTY_TEXT
        raise bad("'data' is required")
    dt, body = data
    if dt is _JSON_DT:
        if json_too_deep(body):
            raise bad(f"'json_data' nests deeper than {MAX_JSON_DEPTH} levels")
        try:
            raw = _raw_json.decode(body)
        except (msgspec.DecodeError, RecursionError):
            raise bad("'json_data' must be one JSON value") from None
        if raw == _JSON_NULL:
            raise bad("'json_data' must not be null")
        if len(raw) != len(body):
            body = bytes(raw)  # surrounding whitespace dropped, as the JSON codec does
    return Payload(dt, body)


def _metadata_of(entries: dict | None, ack_id: int | None, invocation_id: str | None = None,
                 stream_id: str | None = None) -> dict | None:
    if not entries:
        return None
    metadata, problem = _metadata.normalize(entries.items())
    if problem is not None:
        raise InvalidMessage(ack_id, problem, invocation_id=invocation_id, stream_id=stream_id)
    return metadata


def _build_group_op(type_: str, group: str, ack_id: int | None) -> JoinGroup | LeaveGroup:
    problem = _group_name_problem(group)
    if problem is not None:
        raise InvalidMessage(ack_id, problem)
    return JoinGroup(group, ack_id) if type_ == "joinGroup" else LeaveGroup(group, ack_id)


def _build_send_to_group(
    group: str,
    ack_id: int | None,
    no_echo: bool,
    data: tuple[DataType, bytes] | None,
    stream: dict | None,
    metadata_entries: dict | None,
    ttl_seconds: int | None,
) -> SendToGroup | StreamStart:
    stream_id = None
    if stream is not None:
        stream_id = stream.get("stream_id", "")
        problem = _invocation.identifier_problem("stream.stream_id", stream_id)
        if problem is not None:
            raise InvalidMessage(ack_id, problem)
    problem = _group_name_problem(group)
    if problem is not None:
        raise InvalidMessage(ack_id, problem, stream_id=stream_id)
    metadata = _metadata_of(metadata_entries, ack_id, stream_id=stream_id)
    if ttl_seconds is not None and ttl_seconds > _json_spec.MAX_TTL_SECONDS:
        raise InvalidMessage(ack_id, f"'ttl_seconds' is out of range. Allowed range is [0,{_json_spec.MAX_TTL_SECONDS}].",
                             stream_id=stream_id)
    ttl = ttl_seconds or None
    if stream is not None:
        if data is not None:
            raise InvalidMessage(ack_id, "a stream start must not carry 'data'", stream_id=stream_id)
        idle = stream.get("idle_timeout_ms")
        if idle is None:
            idle = _streams.DEFAULT_IDLE_TIMEOUT_MS
        elif idle < 1:
            raise InvalidMessage(ack_id, "'stream.idle_timeout_ms' must be greater than 0", stream_id=stream_id)
        return StreamStart(group, stream_id, ack_id, no_echo, idle, metadata, ttl)
    payload = _payload(ack_id, data, metadata)
    return SendToGroup(group, payload, ack_id, no_echo, metadata, ttl)


def _build_event(
    event: str,
    ack_id: int | None,
    data: tuple[DataType, bytes] | None,
    stream: dict | None,
    metadata_entries: dict | None,
) -> Event | Unsupported:
    if stream is not None:
        return Unsupported("event", ack_id, "stream", None, stream.get("stream_id") or None)
    problem = _event_name_problem(event)
    if problem is not None:
        raise InvalidMessage(ack_id, problem)
    metadata = _metadata_of(metadata_entries, ack_id)
    payload = _payload(ack_id, data, metadata)
    return Event(event, payload, ack_id, metadata)


def _build_stream_data(
    stream_id: str, sequence_id: int | None, data: tuple[DataType, bytes] | None, has_data: bool
) -> StreamData:
    """A fragment (sequence id and a MessageData with a member) or a keepalive (neither)."""
    stream_id = _stream_id_or_invalid(stream_id)
    if sequence_id is None and not has_data:
        return StreamData(stream_id)
    if sequence_id is None or data is None:
        raise InvalidMessage(
            None, "a stream fragment needs both 'stream_sequence_id' and 'data' with a member", stream_id=stream_id
        )
    return StreamData(stream_id, sequence_id, _payload(None, data, None, stream_id=stream_id))


def _build_invoke(
    invocation_id: str, event: str, data: tuple[DataType, bytes] | None, stream: dict | None,
    metadata_entries: dict | None,
) -> Invoke | Unsupported:
    if stream is not None:
        return Unsupported("invoke", None, "stream", invocation_id, stream.get("stream_id") or None)
    problem = _invocation.identifier_problem("invocation_id", invocation_id) or _event_name_problem(event)
    if problem is not None:
        raise InvalidMessage(None, problem, invocation_id=invocation_id)
    metadata = _metadata_of(metadata_entries, None, invocation_id=invocation_id)
    payload = _payload(None, data, metadata, invocation_id=invocation_id, optional=True)
    return Invoke(invocation_id, event, payload, metadata)


def is_valid_any(body: bytes) -> bool:
    """True when ``body`` parses as a serialized ``google.protobuf.Any`` (what a PROTOBUF
    payload must be for protobuf subscribers to read it)."""
    try:
        _decode_generic(body, 0, len(body), _ANY_TABLE, [_spec.MAX_FIELDS_PER_FRAME])
    except MalformedFrame:
        return False
    return True


# =========================================================================== encode

_SMALL_VARINTS = tuple(bytes((i,)) for i in range(128))


def _vi(n: int) -> bytes:
    """A varint (n >= 0)."""
    if n < 0x80:
        return _SMALL_VARINTS[n]
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _u(s: str) -> bytes:
    """UTF-8 of a str; lone surrogates become U+FFFD (never raises)."""
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError:
        return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def _clean_utf8(body: bytes) -> bytes:
    """A TEXT/JSON body as a valid proto3 string (invalid sequences become U+FFFD)."""
    if body.isascii():
        return body
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("utf-8", "replace").encode("utf-8")
    return body


def _ld(tag: bytes, body: bytes) -> bytes:
    """A length-delimited field."""
    return tag + _vi(len(body)) + body


def _opt_ld(tag: bytes, body: bytes) -> bytes:
    """A length-delimited implicit-presence field: omitted when empty."""
    return tag + _vi(len(body)) + body if body else b""


def _td(field: str) -> bytes:
    return _vi(_spec.tag("DownstreamMessage", field))


_D = "DownstreamMessage."
_TB_ACK = _td("ack_message")
_TB_DATA = _td("data_message")
_TB_SYSTEM = _td("system_message")
_TB_PONG = _td("pong_message")
_TB_INVOKE_RESPONSE = _td("invoke_response_message")
_TB_STREAM_ACK = _td("stream_ack_message")
_TB_STREAM_NACK = _td("stream_nack_message")
_TB_STREAM_CLOSED = _td("stream_closed_message")


def _tf(message: str, field: str) -> bytes:
    return _vi(_spec.tag(message, field))


_TB_ACK_ID = _tf(_D + "AckMessage", "ack_id")
_TB_ACK_SUCCESS = _tf(_D + "AckMessage", "success")
_TB_ACK_ERROR = _tf(_D + "AckMessage", "error")
_TB_ERR_NAME = _tf(_D + "AckMessage.ErrorMessage", "name")
_TB_ERR_MESSAGE = _tf(_D + "AckMessage.ErrorMessage", "message")
_TB_DM_FROM = _tf(_D + "DataMessage", "from")
_TB_DM_GROUP = _tf(_D + "DataMessage", "group")
_TB_DM_DATA = _tf(_D + "DataMessage", "data")
_TB_DM_SEQ = _tf(_D + "DataMessage", "sequence_id")
_TB_SYS_CONNECTED = _tf(_D + "SystemMessage", "connected_message")
_TB_SYS_DISCONNECTED = _tf(_D + "SystemMessage", "disconnected_message")
_TB_CONN_ID = _tf(_D + "SystemMessage.ConnectedMessage", "connection_id")
_TB_CONN_USER = _tf(_D + "SystemMessage.ConnectedMessage", "user_id")
_TB_CONN_TOKEN = _tf(_D + "SystemMessage.ConnectedMessage", "reconnection_token")
_TB_DISC_REASON = _tf(_D + "SystemMessage.DisconnectedMessage", "reason")
_TB_IR_ID = _tf(_D + "InvokeResponseMessage", "invocation_id")
_TB_IR_ERROR = _tf(_D + "InvokeResponseMessage", "error")
_TB_IR_ERR_NAME = _tf(_D + "InvokeResponseMessage.ErrorMessage", "name")
_TB_IR_ERR_MESSAGE = _tf(_D + "InvokeResponseMessage.ErrorMessage", "message")
_TB_SC_ID = _tf(_D + "StreamClosedMessage", "stream_id")
_TB_SC_ERROR = _tf(_D + "StreamClosedMessage", "error")
_TB_SC_ERR_NAME = _tf(_D + "StreamClosedMessage.StreamClosedError", "name")
_TB_SC_ERR_MESSAGE = _tf(_D + "StreamClosedMessage.StreamClosedError", "message")
_TB_DM_METADATA = _tf(_D + "DataMessage", "metadata")
_TB_DM_STREAM = _tf(_D + "DataMessage", "stream")
_TB_MAP_KEY = b"\x0a"  # map<string,string> entry: key = 1, value = 2
_TB_MAP_VALUE = b"\x12"
_TB_SI_ID = _tf("StreamInfo", "stream_id")
_TB_SI_SEQ = _tf("StreamInfo", "stream_sequence_id")
_TB_SI_END = _tf("StreamInfo", "end_of_stream")
_TB_SI_ERROR = _tf("StreamInfo", "error")
_TB_SE_NAME = _tf("StreamInfo.StreamError", "name")
_TB_SE_MESSAGE = _tf("StreamInfo.StreamError", "message")
_TB_SE_CODE = _tf("StreamInfo.StreamError", "user_error_code")
_TB_IR_SUCCESS = _tf(_D + "InvokeResponseMessage", "success")
_TB_IR_DATA = _tf(_D + "InvokeResponseMessage", "data")
_TB_IR_METADATA = _tf(_D + "InvokeResponseMessage", "metadata")
_TB_SA_ID = _tf(_D + "StreamAckMessage", "stream_id")
_TB_SA_EXPECTED = _tf(_D + "StreamAckMessage", "expected_sequence_id")
_TB_SN_ID = _tf(_D + "StreamNackMessage", "stream_id")
_TB_SN_NAME = _tf(_D + "StreamNackMessage", "name")
_TB_SN_MESSAGE = _tf(_D + "StreamNackMessage", "message")
_TB_SN_EXPECTED = _tf(_D + "StreamNackMessage", "expected_sequence_id")
_require(_TB_DM_METADATA == b"\x2a" and _TB_DM_STREAM == b"\x32", "DataMessage metadata/stream tags")
_require(_TB_IR_DATA == _tf(_D + "DataMessage", "data"), "InvokeResponseMessage.data tag")

# The MessageData tag of each data type (decision protobuf.json-data).
_DATA_TAG_BYTES: dict[DataType, bytes] = {
    dt: _tf("MessageData", field) for dt, field in _spec.DATA_FIELDS.items()
}
_FROM_GROUP = _ld(_TB_DM_FROM, _spec.FROM_GROUP.encode())
_FROM_SERVER = _ld(_TB_DM_FROM, _spec.FROM_SERVER.encode())

# These tags are one byte each, which with_sequence_id relies on.
_require(_TB_DATA == b"\x12" and _TB_DM_SEQ == b"\x20", "DataMessage tags")


def _message_data(payload: Payload) -> tuple[bytes, bytes]:
    """(MessageData field header, body): the body is joined in once, never copied twice."""
    dt = payload.data_type
    body = payload.body
    if dt is _TEXT_DT or dt is _JSON_DT:
        body = _clean_utf8(body)
    head = _DATA_TAG_BYTES[dt] + _vi(len(body))
    return _TB_DM_DATA + _vi(len(head) + len(body)) + head, body


def _metadata_fields(tag: bytes, metadata) -> bytes:
    """A ``map<string,string>`` field: one entry (key = 1, value = 2, both written) per item."""
    return b"".join(
        _ld(tag, _ld(_TB_MAP_KEY, _u(k)) + _ld(_TB_MAP_VALUE, _u(v))) for k, v in metadata.items()
    )


def _stream_info(stream: StreamInfo) -> bytes:
    inner = _opt_ld(_TB_SI_ID, _u(stream.stream_id))
    if stream.sequence_id:
        inner += _TB_SI_SEQ + _vi(stream.sequence_id)
    if stream.end_of_stream:
        inner += _TB_SI_END + b"\x01"
    if stream.error_name is not None:
        error = _opt_ld(_TB_SE_NAME, _u(stream.error_name))
        if stream.error_message:
            error += _opt_ld(_TB_SE_MESSAGE, _u(stream.error_message))
        if stream.user_error_code:
            error += _opt_ld(_TB_SE_CODE, _u(stream.user_error_code))
        inner += _ld(_TB_SI_ERROR, error)
    return _ld(_TB_DM_STREAM, inner)


def _data_message(prefix: bytes, payload: Payload, sequence_id: int | None, metadata=None,
                  stream: StreamInfo | None = None) -> bytes:
    data_head, body = _message_data(payload)
    if sequence_id is None:
        tail = b""
    else:
        if not 1 <= sequence_id <= _UINT64_MAX:
            raise ValueError(f"sequence_id out of range: {sequence_id}")
        tail = _TB_DM_SEQ + _vi(sequence_id)
    if metadata:
        tail += _metadata_fields(_TB_DM_METADATA, metadata)
    if stream is not None:
        tail += _stream_info(stream)
    inner_len = len(prefix) + len(data_head) + len(body) + len(tail)
    return b"".join((_TB_DATA, _vi(inner_len), prefix, data_head, body, tail))


def encode_group_message(
    group: str,
    payload: Payload,
    from_user_id: str | None,
    *,
    metadata=None,
    stream: StreamInfo | None = None,
    sequence_id: int | None = None,
) -> bytes:
    """``DownstreamMessage{data_message{from "group", group, data, sequence_id?, metadata,
    stream?}}``.

    ``from_user_id`` is accepted for symmetry with the JSON codec and ignored: DataMessage has
    no such field. ``sequence_id`` (reliable) is normally added per connection with
    ``with_sequence_id``; the keyword exists for the one-shot case.

    Raises:
        ValueError: sequence_id is not in 1..2**64-1.
    """
    return _data_message(_FROM_GROUP + _ld(_TB_DM_GROUP, _u(group)), payload, sequence_id, metadata, stream)


def encode_server_message(payload: Payload, *, metadata=None, sequence_id: int | None = None) -> bytes:
    """``DownstreamMessage{data_message{from "server", data, sequence_id?, metadata}}``.

    Raises:
        ValueError: sequence_id is not in 1..2**64-1.
    """
    return _data_message(_FROM_SERVER, payload, sequence_id, metadata)


def with_sequence_id(encoded_message: bytes, sequence_id: int, *, plain: bool = False) -> bytes:
    """The reliable variant of a message from ``encode_group_message``/``encode_server_message``
    (encoded without a sequence id): insert ``sequence_id`` (field 4) after the data field,
    before metadata (5) and stream (6) if the message has them, and re-frame the outer length.
    O(len) bytes work, payload not re-encoded; equal to a full encode with ``sequence_id``.

    ``plain``: the caller knows the message has neither metadata nor stream (the fan-out path
    checks the publication), so the id is appended without looking for them.

    Raises:
        ValueError: the input is not one encoded data message, or the id is not in
            1..2**64-1.
    """
    total = len(encoded_message)
    if total < 2 or encoded_message[0] != 0x12:  # DownstreamMessage.data_message
        raise ValueError("not an encoded data message")
    inner_len = encoded_message[1]
    pos = 2
    if inner_len >= 0x80:
        try:
            inner_len, pos = _varint(encoded_message, 1, total)
        except MalformedFrame:
            raise ValueError("not an encoded data message") from None
    if pos + inner_len != total:
        raise ValueError("not an encoded data message")
    split = total if plain else _fields_after_data(encoded_message, pos, total)
    if split != total:  # metadata/stream follow: the id goes between, in field order
        if not 1 <= sequence_id <= _UINT64_MAX:
            raise ValueError(f"sequence_id out of range: {sequence_id}")
        seq = _TB_DM_SEQ + _vi(sequence_id)
        return b"".join((_TB_DATA, _vi(inner_len + len(seq)), encoded_message[pos:split], seq,
                         encoded_message[split:]))
    # DataMessage.sequence_id (tag 0x20) and its varint, the common sizes inline.
    if sequence_id < 0x80:
        if sequence_id < 1:
            raise ValueError(f"sequence_id out of range: {sequence_id}")
        seq = _SEQ_TAG_SMALL[sequence_id]
    elif sequence_id < 0x4000:
        seq = bytes((0x20, sequence_id & 0x7F | 0x80, sequence_id >> 7))
    elif sequence_id < 0x200000:
        seq = bytes(
            (0x20, sequence_id & 0x7F | 0x80, sequence_id >> 7 & 0x7F | 0x80, sequence_id >> 14)
        )
    elif sequence_id <= _UINT64_MAX:
        seq = _TB_DM_SEQ + _vi(sequence_id)
    else:
        raise ValueError(f"sequence_id out of range: {sequence_id}")
    new_len = inner_len + len(seq)
    if new_len < 0x80:
        return _DATA_HEADS[new_len] + encoded_message[2:] + seq
    if total < 4096:  # small: concatenation beats building a memoryview
        return _TB_DATA + _vi(new_len) + encoded_message[pos:] + seq
    return b"".join((_TB_DATA, _vi(new_len), memoryview(encoded_message)[pos:], seq))


_SEQ_TAG_SMALL = tuple(_TB_DM_SEQ + _vi(i) for i in range(0x80))


def _fields_after_data(buf: bytes, pos: int, end: int) -> int:
    """Where the first DataMessage field numbered above 4 starts (``end`` when none): from,
    group and data are skipped by their lengths, never parsed."""
    while pos < end:
        tag = buf[pos]
        if tag > 0x20:  # field 5 (metadata) or 6 (stream): every tag here is one byte
            return pos
        n, p = _varint(buf, pos + 1, end, 5)
        pos = p + n
    return end
_DATA_HEADS = tuple(_TB_DATA + _vi(i) for i in range(0x80))


def encode_ack(
    ack_id: int,
    success: bool,
    error_name: str | None = None,
    error_message: str | None = None,
) -> bytes:
    """``DownstreamMessage{ack_message{ack_id, success, error?{name, message}}}``.

    A failed ack always carries ``error`` with a name (default ``InternalServerError``) and a
    message (default ``specs.errors.default_ack_message(name)``); a successful one never does.

    Raises:
        ValueError: success is true and an error was given, or ack_id is not a uint64.
    """
    if not 0 <= ack_id <= _UINT64_MAX:
        raise ValueError(f"ack_id out of range: {ack_id}")
    head = _TB_ACK_ID + _vi(ack_id) if ack_id else b""
    if success:
        if error_name is not None or error_message is not None:
            raise ValueError("a successful ack carries no error")
        inner = head + _TB_ACK_SUCCESS + b"\x01"
    else:
        name = (
            error_name
            if error_name is not None
            else _errors.AckErrorName.INTERNAL_SERVER_ERROR.value
        )
        message = (
            error_message if error_message is not None else _errors.default_ack_message(name)
        )
        error = _opt_ld(_TB_ERR_NAME, _u(name)) + _opt_ld(_TB_ERR_MESSAGE, _u(message))
        inner = head + _ld(_TB_ACK_ERROR, error)
    return _ld(_TB_ACK, inner)


def encode_connected(
    connection_id: str, user_id: str | None, reconnection_token: str | None = None
) -> bytes:
    """``DownstreamMessage{system_message{connected_message{connection_id, user_id,
    reconnection_token?}}}``.

    ``user_id`` None (anonymous) is written as absent, which parsers read as ``""``;
    ``reconnection_token`` is written only when not None (reliable subprotocols).
    """
    inner = _opt_ld(_TB_CONN_ID, _u(connection_id))
    if user_id is not None:
        inner += _opt_ld(_TB_CONN_USER, _u(user_id))
    if reconnection_token is not None:
        inner += _ld(_TB_CONN_TOKEN, _u(reconnection_token))
    return _ld(_TB_SYSTEM, _ld(_TB_SYS_CONNECTED, inner))


def encode_disconnected(message: str) -> bytes:
    """``DownstreamMessage{system_message{disconnected_message{reason}}}`` (reason is field 2)."""
    return _ld(_TB_SYSTEM, _ld(_TB_SYS_DISCONNECTED, _opt_ld(_TB_DISC_REASON, _u(message))))


_PONG = _ld(_TB_PONG, b"")


def encode_pong() -> bytes:
    """``DownstreamMessage{pong_message{}}``; only in reply to ``ping_message``."""
    return _PONG


def encode_invoke_response(invocation_id: str, payload: Payload | None = None, metadata=None) -> bytes:
    """``DownstreamMessage{invoke_response_message{invocation_id, success true, data?, metadata}}``."""
    inner = _opt_ld(_TB_IR_ID, _u(invocation_id)) + _TB_IR_SUCCESS + b"\x01"
    if payload is not None:
        data_head, body = _message_data(payload)
        # _message_data frames it as DataMessage.data (3); InvokeResponseMessage.data is 3 too.
        inner += data_head + body
    if metadata:
        inner += _metadata_fields(_TB_IR_METADATA, metadata)
    return _ld(_TB_INVOKE_RESPONSE, inner)


def encode_stream_ack(stream_id: str, expected_sequence_id: int) -> bytes:
    """``DownstreamMessage{stream_ack_message{stream_id, expected_sequence_id}}``."""
    inner = _opt_ld(_TB_SA_ID, _u(stream_id))
    if expected_sequence_id:
        inner += _TB_SA_EXPECTED + _vi(expected_sequence_id)
    return _ld(_TB_STREAM_ACK, inner)


def encode_stream_nack(stream_id: str, expected_sequence_id: int, name: str, message: str) -> bytes:
    """``DownstreamMessage{stream_nack_message{stream_id, name, message, expected_sequence_id}}``."""
    inner = _opt_ld(_TB_SN_ID, _u(stream_id)) + _opt_ld(_TB_SN_NAME, _u(name)) + _opt_ld(_TB_SN_MESSAGE, _u(message))
    if expected_sequence_id:
        inner += _TB_SN_EXPECTED + _vi(expected_sequence_id)
    return _ld(_TB_STREAM_NACK, inner)


def encode_invoke_response_error(invocation_id: str, error_name: str, error_message: str) -> bytes:
    """``DownstreamMessage{invoke_response_message{invocation_id, success false, error}}``
    (``specs.invocation``: every failed or refused invocation)."""
    error = _opt_ld(_TB_IR_ERR_NAME, _u(error_name)) + _opt_ld(
        _TB_IR_ERR_MESSAGE, _u(error_message)
    )
    inner = _opt_ld(_TB_IR_ID, _u(invocation_id)) + _ld(_TB_IR_ERROR, error)
    return _ld(_TB_INVOKE_RESPONSE, inner)


def encode_stream_closed(
    stream_id: str, error_name: str | None = None, error_message: str | None = None
) -> bytes:
    """``DownstreamMessage{stream_closed_message{stream_id, error?{name, message}}}`` (error
    omitted when ``error_name`` is None): the end of a stream (``specs.streams``)."""
    inner = _opt_ld(_TB_SC_ID, _u(stream_id))
    if error_name is not None:
        message = (
            error_message
            if error_message is not None
            else _errors.default_ack_message(error_name)
        )
        error = _opt_ld(_TB_SC_ERR_NAME, _u(error_name)) + _opt_ld(
            _TB_SC_ERR_MESSAGE, _u(message)
        )
        inner += _ld(_TB_SC_ERROR, error)
    return _ld(_TB_STREAM_CLOSED, inner)
