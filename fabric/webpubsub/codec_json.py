"""Sans-IO codec for the Web PubSub JSON subprotocols (``json[.reliable].webpubsub.azure.v1``).

Rules this module keeps:
- Never imports trio; pure functions from frames to message objects and back to bytes.
- Decoding is two-path. The fast path is one typed msgspec decode into a tagged union of
  Structs (``data`` kept as ``msgspec.Raw``). Anything it rejects (numeric-string ids, unknown
  types, wrong types, garbage) goes to the slow path, which decodes every property as Raw and
  applies the lenient rules one by one. Both paths finish in the same ``_build_*`` functions,
  so they cannot disagree about the result (a property test checks that).
- ``decode_client`` raises only ``ProtocolError`` subclasses: ``MalformedFrame`` when the frame
  cannot be read as a JSON object with a string ``type`` (the server closes), and
  ``InvalidMessage`` when a readable message has a bad field (the server acks an error when
  ``ack_id`` is set).
- JSON ``data`` stays the exact raw bytes the client sent; it is never re-encoded.
- Encoders return compact UTF-8 JSON with the exact key orders of
  ``specs.webpubsub_json.SERVER_MESSAGES``; they never write ``"error": null`` and never raise
  on data (bad UTF-8 and lone surrogates are replaced/escaped).
- Names, ranges and defaults come from ``specs.webpubsub_json``, ``specs.metadata``,
  ``specs.invocation`` and ``specs.streams``; decisions are recorded there.
- Metadata is read into a plain dict with lower-case keys (``specs.metadata.normalize``) and is
  None when absent or empty; an invalid map is an ``InvalidMessage``.
"""

from __future__ import annotations

import binascii
import json as _stdlib_json
import re
from typing import Annotated, Union

import msgspec

from fabric.core.payload import DataType, Payload, json_too_deep
from specs import errors as _errors
from specs import invocation as _invocation
from specs import metadata as _metadata
from specs import streams as _streams
from specs import webpubsub_json as _spec

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
    "with_sequence_id",
]

# =========================================================================== errors


class ProtocolError(Exception):
    """Base class of everything ``decode_client`` raises. ``message`` says what is wrong."""

    message: str

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedFrame(ProtocolError):
    """The frame is not a JSON object with a string ``type``: the server closes the connection
    (``specs.errors.CLOSE_RULES["malformed_frame"]``)."""


class InvalidMessage(ProtocolError):
    """A readable message with a missing or invalid field.

    Attributes:
        ack_id: the message's ``ackId`` when one could be read (answer with an ack error
            named ``BadRequest``), else None.
        message: what is wrong, suitable for the ack error's ``message``.
        invocation_id: an ``invoke``'s ``invocationId`` when it is a string (answer with an
            ``invokeResponse`` error ``BadRequest``), else None.
        stream_id: a stream message's ``streamId`` when it is a valid one (answer with
            ``streamClosed``; ``specs.streams``), else None; ``stream_start`` says whether the
            message was a stream start.
    """

    ack_id: int | None
    invocation_id: str | None
    stream_id: str | None
    stream_start: bool

    def __init__(self, ack_id: int | None, message: str, *, invocation_id: str | None = None,
                 stream_id: str | None = None) -> None:
        super().__init__(message)
        self.ack_id = ack_id
        self.invocation_id = invocation_id
        self.stream_id = stream_id
        #: True when the message was a stream start (``sendToGroup`` with ``stream``).
        self.stream_start = False

    def __repr__(self) -> str:
        extra = ""
        if self.invocation_id is not None:
            extra += f", invocation_id={self.invocation_id!r}"
        if self.stream_id is not None:
            extra += f", stream_id={self.stream_id!r}"
        return f"InvalidMessage(ack_id={self.ack_id!r}, message={self.message!r}{extra})"


# =========================================================================== client messages


class JoinGroup(msgspec.Struct, frozen=True, gc=False):
    group: str
    ack_id: int | None = None


class LeaveGroup(msgspec.Struct, frozen=True, gc=False):
    group: str
    ack_id: int | None = None


class SendToGroup(msgspec.Struct, frozen=True, gc=False):
    """``metadata``: lower-case keys, None when absent. ``ttl_seconds``: None or 1..300 (0 and
    absent both mean 'never expires')."""

    group: str
    payload: Payload
    ack_id: int | None = None
    no_echo: bool = False
    metadata: dict | None = None
    ttl_seconds: int | None = None


class Event(msgspec.Struct, frozen=True, gc=False):
    event: str
    payload: Payload
    ack_id: int | None = None
    metadata: dict | None = None


class StreamStart(msgspec.Struct, frozen=True, gc=False):
    """A ``sendToGroup`` with ``stream`` (client spec §3.6.1): no payload."""

    group: str
    stream_id: str
    ack_id: int | None = None
    no_echo: bool = False
    idle_timeout_ms: int = _streams.DEFAULT_IDLE_TIMEOUT_MS
    metadata: dict | None = None
    ttl_seconds: int | None = None


class StreamData(msgspec.Struct, frozen=True, gc=False):
    """One fragment (``sequence_id`` and ``payload`` set) or a keepalive (both None)."""

    stream_id: str
    sequence_id: int | None = None
    payload: Payload | None = None


class StreamEnd(msgspec.Struct, frozen=True, gc=False):
    """``has_error``: the end carried an ``error`` object (its ``message``/``userErrorCode``,
    each None when absent)."""

    stream_id: str
    has_error: bool = False
    error_message: str | None = None
    user_error_code: str | None = None


class Invoke(msgspec.Struct, frozen=True, gc=False):
    """An invocation of a user event (``specs.invocation``); without data the payload is an
    empty text (decision ``invoke.no-payload``)."""

    invocation_id: str
    event: str
    payload: Payload
    metadata: dict | None = None


class CancelInvocation(msgspec.Struct, frozen=True, gc=False):
    invocation_id: str


class SequenceAck(msgspec.Struct, frozen=True, gc=False):
    sequence_id: int


class Ping(msgspec.Struct, frozen=True, gc=False):
    pass


class Unsupported(msgspec.Struct, frozen=True, gc=False):
    """A well-formed message we do not implement (forward compatibility).

    Attributes:
        type: the message's ``type`` (``invoke``, ``streamData``, ``sendToGroup`` for a stream
            start, or anything unknown).
        ack_id: its ``ackId`` when present and valid, else None.
        feature: for a known type used with an unimplemented feature: ``"stream"`` (stream
            start) or ``"metadata"`` (metadata-only message); else None.
        invocation_id: ``invocationId`` of ``invoke``/``cancelInvocation`` when a string.
        stream_id: ``streamId`` of stream messages / ``stream.streamId`` of a stream start.
    """

    type: str
    ack_id: int | None = None
    feature: str | None = None
    invocation_id: str | None = None
    stream_id: str | None = None


class StreamInfo(msgspec.Struct, frozen=True, gc=False):
    """The ``stream`` object of a group message to subscribers (both codecs encode it)."""

    stream_id: str
    sequence_id: int
    end_of_stream: bool = False
    error_name: str | None = None
    error_message: str | None = None
    user_error_code: str | None = None


ClientMessage = Union[
    JoinGroup, LeaveGroup, SendToGroup, Event, SequenceAck, Ping, StreamStart, StreamData, StreamEnd,
    Invoke, CancelInvocation, Unsupported,
]

_PING = Ping()
_EMPTY_TEXT = Payload(DataType.TEXT, b"")

# =========================================================================== fast path

# msgspec bounds must fit an int64; ids in 2**63..2**64-1 take the slow path (still accepted).
_U64 = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
_RAW_ABSENT = msgspec.Raw()
_RAW_NULL = msgspec.Raw(b"null")


class _FJoinGroup(msgspec.Struct, tag_field="type", tag="joinGroup", rename="camel"):
    group: str
    ack_id: _U64 | None = None


class _FLeaveGroup(msgspec.Struct, tag_field="type", tag="leaveGroup", rename="camel"):
    group: str
    ack_id: _U64 | None = None


class _FSendToGroup(msgspec.Struct, tag_field="type", tag="sendToGroup", rename="camel"):
    group: str
    ack_id: _U64 | None = None
    no_echo: bool | None = None
    data_type: str | None = None
    data: msgspec.Raw = _RAW_ABSENT
    stream: msgspec.Raw = _RAW_ABSENT
    metadata: msgspec.Raw = _RAW_ABSENT
    ttl_seconds: msgspec.Raw = _RAW_ABSENT


class _FEvent(msgspec.Struct, tag_field="type", tag="event", rename="camel"):
    event: str
    ack_id: _U64 | None = None
    data_type: str | None = None
    data: msgspec.Raw = _RAW_ABSENT
    stream: msgspec.Raw = _RAW_ABSENT
    metadata: msgspec.Raw = _RAW_ABSENT


class _FSequenceAck(msgspec.Struct, tag_field="type", tag="sequenceAck", rename="camel"):
    sequence_id: _U64


class _FPing(msgspec.Struct, tag_field="type", tag="ping"):
    pass


class _FStreamData(msgspec.Struct, tag_field="type", tag="streamData", rename="camel"):
    stream_id: str
    stream_sequence_id: _U64 | None = None
    data_type: str | None = None
    data: msgspec.Raw = _RAW_ABSENT


class _FInvoke(msgspec.Struct, tag_field="type", tag="invoke", rename="camel"):
    invocation_id: str
    event: str
    target: str | None = None
    data_type: str | None = None
    data: msgspec.Raw = _RAW_ABSENT
    stream: msgspec.Raw = _RAW_ABSENT
    metadata: msgspec.Raw = _RAW_ABSENT


_fast_decoder = msgspec.json.Decoder(
    Union[_FJoinGroup, _FLeaveGroup, _FSendToGroup, _FEvent, _FSequenceAck, _FPing, _FStreamData, _FInvoke]
)

# =========================================================================== slow path


class _Loose(msgspec.Struct, rename="camel"):
    """Every property we may look at, undecoded; anything else is skipped."""

    type: msgspec.Raw = _RAW_ABSENT
    ack_id: msgspec.Raw = _RAW_ABSENT
    group: msgspec.Raw = _RAW_ABSENT
    no_echo: msgspec.Raw = _RAW_ABSENT
    data_type: msgspec.Raw = _RAW_ABSENT
    data: msgspec.Raw = _RAW_ABSENT
    event: msgspec.Raw = _RAW_ABSENT
    sequence_id: msgspec.Raw = _RAW_ABSENT
    stream: msgspec.Raw = _RAW_ABSENT
    metadata: msgspec.Raw = _RAW_ABSENT
    invocation_id: msgspec.Raw = _RAW_ABSENT
    stream_id: msgspec.Raw = _RAW_ABSENT
    ttl_seconds: msgspec.Raw = _RAW_ABSENT
    stream_sequence_id: msgspec.Raw = _RAW_ABSENT
    target: msgspec.Raw = _RAW_ABSENT
    error: msgspec.Raw = _RAW_ABSENT


class _StreamStart(msgspec.Struct, rename="camel"):
    stream_id: msgspec.Raw = _RAW_ABSENT
    idle_timeout_ms: msgspec.Raw = _RAW_ABSENT


class _StreamEndError(msgspec.Struct, rename="camel"):
    message: msgspec.Raw = _RAW_ABSENT
    user_error_code: msgspec.Raw = _RAW_ABSENT


_loose_decoder = msgspec.json.Decoder(_Loose)
_stream_start_decoder = msgspec.json.Decoder(_StreamStart)
_stream_end_error_decoder = msgspec.json.Decoder(_StreamEndError)
_any_decoder = msgspec.json.Decoder()
_str_decoder = msgspec.json.Decoder(str)
_opt_str_decoder = msgspec.json.Decoder(Union[str, None])
_opt_bool_decoder = msgspec.json.Decoder(Union[bool, None])
_bytes_decoder = msgspec.json.Decoder(bytes)
_NUMERIC_STRING_RE = re.compile(_spec.NUMERIC_STRING_PATTERN)

# Errors a decode of untrusted input may raise: msgspec's own, UnicodeDecodeError (bytes that
# are not UTF-8), UnicodeEncodeError (a str frame with a lone surrogate), RecursionError
# (nesting deeper than the interpreter allows).
_DECODE_ERRORS = (msgspec.DecodeError, UnicodeError, RecursionError)


def _absent(raw: msgspec.Raw) -> bool:
    """True for a property that was not sent or was sent as null."""
    return len(raw) == 0 or raw == _RAW_NULL


def _lenient_u64(raw: msgspec.Raw) -> int | None:
    """An unsigned 64-bit integer from a JSON integer or numeric string; None if invalid."""
    try:
        value = _any_decoder.decode(raw)
    except _DECODE_ERRORS:
        return None
    if type(value) is int:
        return value if 0 <= value <= _spec.UINT64_MAX else None
    if type(value) is str and _NUMERIC_STRING_RE.fullmatch(value):
        n = int(value)
        return n if n <= _spec.UINT64_MAX else None
    return None


def _strict_ack_id(raw: msgspec.Raw) -> int | None:
    if _absent(raw):
        return None
    ack_id = _lenient_u64(raw)
    if ack_id is None:
        raise InvalidMessage(
            None, "'ackId' must be an integer from 0 to 2**64-1 (or a string of its digits)"
        )
    return ack_id


def _best_effort_ack_id(raw: msgspec.Raw) -> int | None:
    return None if _absent(raw) else _lenient_u64(raw)


def _best_effort_str(raw: msgspec.Raw) -> str | None:
    if _absent(raw):
        return None
    try:
        return _str_decoder.decode(raw)
    except _DECODE_ERRORS:
        return None


def _required_str(raw: msgspec.Raw, name: str, ack_id: int | None, stream_id: str | None = None) -> str:
    if _absent(raw):
        raise InvalidMessage(ack_id, f"'{name}' is required", stream_id=stream_id)
    try:
        return _str_decoder.decode(raw)
    except _DECODE_ERRORS:
        raise InvalidMessage(ack_id, f"'{name}' must be a string", stream_id=stream_id) from None


def _decode_slow(frame: str | bytes) -> ClientMessage:
    """The lenient path: every rule of ``specs.webpubsub_json``, one property at a time."""
    try:
        loose = _loose_decoder.decode(frame)
    except msgspec.ValidationError:
        raise MalformedFrame("the frame is not a JSON object") from None
    except _DECODE_ERRORS:
        raise MalformedFrame("the frame is not valid JSON text") from None
    type_ = _best_effort_str(loose.type)
    if type_ is None:
        raise MalformedFrame("the frame has no string 'type'")

    if type_ == "joinGroup" or type_ == "leaveGroup":
        ack_id = _strict_ack_id(loose.ack_id)
        group = _required_str(loose.group, "group", ack_id)
        return _build_group_op(type_, group, ack_id)

    if type_ == "sendToGroup":
        try:
            return _slow_send_to_group(loose)
        except InvalidMessage as exc:
            exc.stream_start = exc.stream_id is not None
            raise

    if type_ == "event":
        ack_id = _strict_ack_id(loose.ack_id)
        if not _absent(loose.stream):
            return _unsupported_stream("event", ack_id, loose.stream)
        event = _required_str(loose.event, "event", ack_id)
        data_type = _lenient_data_type(loose.data_type, ack_id)
        return _build_event(event, ack_id, data_type, loose.data, _RAW_ABSENT, loose.metadata)

    if type_ == "sequenceAck":
        if _absent(loose.sequence_id):
            raise InvalidMessage(None, "'sequenceId' is required")
        sequence_id = _lenient_u64(loose.sequence_id)
        if sequence_id is None:
            raise InvalidMessage(
                None,
                "'sequenceId' must be an integer from 0 to 2**64-1 (or a string of its digits)",
            )
        return SequenceAck(sequence_id)

    if type_ == "ping":
        return _PING

    if type_ == "streamData":
        stream_id = _required_stream_id(loose.stream_id)
        sequence_id = None
        if not _absent(loose.stream_sequence_id):
            sequence_id = _lenient_u64(loose.stream_sequence_id)
            if sequence_id is None:
                raise InvalidMessage(
                    None, "'streamSequenceId' must be an integer from 0 to 2**64-1", stream_id=stream_id
                )
        data_type = _lenient_data_type(loose.data_type, None, stream_id=stream_id)
        return _build_stream_data(stream_id, sequence_id, data_type, loose.data)

    if type_ == "streamEnd":
        stream_id = _required_stream_id(loose.stream_id)
        if _absent(loose.error):
            return StreamEnd(stream_id)
        try:
            error = _stream_end_error_decoder.decode(loose.error)
        except _DECODE_ERRORS:
            raise InvalidMessage(None, "'error' must be an object", stream_id=stream_id) from None
        message = _optional_str(error.message, "error.message", stream_id)
        code = _optional_str(error.user_error_code, "error.userErrorCode", stream_id)
        return StreamEnd(stream_id, True, message, code)

    if type_ == "invoke":
        invocation_id = _best_effort_str(loose.invocation_id)
        if invocation_id is None:
            raise InvalidMessage(None, "'invocationId' is required and must be a string")
        if not _absent(loose.stream):
            return _unsupported_stream("invoke", None, loose.stream, invocation_id)
        event = _best_effort_str(loose.event)
        if event is None:
            raise InvalidMessage(None, "'event' is required and must be a string", invocation_id=invocation_id)
        target = None
        if not _absent(loose.target):
            target = _best_effort_str(loose.target)
            if target is None:
                raise InvalidMessage(None, "'target' must be a string", invocation_id=invocation_id)
        data_type = _lenient_data_type(loose.data_type, None, invocation_id=invocation_id)
        return _build_invoke(invocation_id, event, target, data_type, loose.data, loose.metadata)

    if type_ == "cancelInvocation":
        invocation_id = _best_effort_str(loose.invocation_id)
        if invocation_id is None:
            raise InvalidMessage(None, "'invocationId' is required and must be a string")
        return CancelInvocation(invocation_id)

    return Unsupported(
        type_,
        _best_effort_ack_id(loose.ack_id),
        None,
        _best_effort_str(loose.invocation_id),
        _best_effort_str(loose.stream_id),
    )


def _slow_send_to_group(loose: "_Loose") -> SendToGroup | StreamStart:
    ack_id = _strict_ack_id(loose.ack_id)
    stream_id = None
    if not _absent(loose.stream):
        stream_id = _stream_id_of_start(loose.stream, ack_id)
    group = _required_str(loose.group, "group", ack_id, stream_id)
    try:
        no_echo = _opt_bool_decoder.decode(loose.no_echo) if len(loose.no_echo) else None
    except _DECODE_ERRORS:
        raise InvalidMessage(ack_id, "'noEcho' must be a boolean", stream_id=stream_id) from None
    data_type = _lenient_data_type(loose.data_type, ack_id, stream_id=stream_id)
    return _build_send_to_group(
        group, ack_id, no_echo, data_type, loose.data, loose.stream, loose.metadata, loose.ttl_seconds
    )


def _optional_str(raw: msgspec.Raw, name: str, stream_id: str | None) -> str | None:
    if _absent(raw):
        return None
    try:
        return _str_decoder.decode(raw)
    except _DECODE_ERRORS:
        raise InvalidMessage(None, f"'{name}' must be a string", stream_id=stream_id) from None


def _required_stream_id(raw: msgspec.Raw) -> str:
    """A stream message's streamId; without a valid one there is no stream to answer."""
    stream_id = _best_effort_str(raw)
    if stream_id is None:
        raise InvalidMessage(None, "'streamId' is required and must be a string")
    problem = _id_problem("streamId", stream_id)
    if problem is not None:
        raise InvalidMessage(None, problem)
    return stream_id


def _lenient_data_type(raw: msgspec.Raw, ack_id: int | None, *, invocation_id: str | None = None,
                       stream_id: str | None = None) -> str | None:
    if not len(raw):
        return None
    try:
        return _opt_str_decoder.decode(raw)
    except _DECODE_ERRORS:
        raise InvalidMessage(ack_id, "'dataType' must be a string", invocation_id=invocation_id,
                             stream_id=stream_id) from None


def _unsupported_stream(type_: str, ack_id: int | None, stream: msgspec.Raw,
                        invocation_id: str | None = None) -> Unsupported:
    """A stream on ``event``/``invoke``: client streams target groups only."""
    stream_id = None
    try:
        start = _stream_start_decoder.decode(stream)
    except _DECODE_ERRORS:
        pass
    else:
        stream_id = _best_effort_str(start.stream_id)
    return Unsupported(type_, ack_id, "stream", invocation_id, stream_id)


def _stream_id_of_start(stream: msgspec.Raw, ack_id: int | None) -> str:
    """The streamId of a stream start (``stream`` not absent); raises InvalidMessage."""
    try:
        start = _stream_start_decoder.decode(stream)
    except _DECODE_ERRORS:
        raise InvalidMessage(ack_id, "'stream' must be an object") from None
    stream_id = _best_effort_str(start.stream_id)
    if stream_id is None:
        raise InvalidMessage(ack_id, "'stream.streamId' is required and must be a string")
    problem = _id_problem("stream.streamId", stream_id)
    if problem is not None:
        raise InvalidMessage(ack_id, problem)
    return stream_id


def _idle_timeout(stream: msgspec.Raw, ack_id: int | None, stream_id: str) -> int:
    start = _stream_start_decoder.decode(stream)  # already read once by _stream_id_of_start
    raw = start.idle_timeout_ms
    if _absent(raw):
        return _streams.DEFAULT_IDLE_TIMEOUT_MS
    try:
        value = _any_decoder.decode(raw)
    except _DECODE_ERRORS:
        value = None
    if type(value) is not int or not 1 <= value <= _streams.MAX_IDLE_TIMEOUT_MS:
        raise InvalidMessage(
            ack_id, f"'stream.idleTimeoutMs' must be an integer from 1 to {_streams.MAX_IDLE_TIMEOUT_MS}",
            stream_id=stream_id,
        )
    return value


# =========================================================================== shared builders

_DATA_TYPES_TEXT = ", ".join(d.value for d in DataType)
# The exact spellings clients write (JS/Python lower case, .NET capitalised); any other case
# goes through DataType.parse.
_DATA_TYPE_EXACT: dict[str, DataType] = {
    **{d.value: d for d in DataType},
    **{d.value.capitalize(): d for d in DataType},
}
_id_problem = _invocation.identifier_problem
#: A metadata object longer than this cannot be valid (every character of a key or value
#: costs at least one byte, a JSON escape at most 12): refused before it is parsed.
_MAX_METADATA_JSON_BYTES = 12 * _metadata.MAX_TOTAL_CHARS + 8 * _metadata.MAX_ENTRIES


def _metadata_of(raw: msgspec.Raw, ack_id: int | None, invocation_id: str | None = None,
                 stream_id: str | None = None) -> dict | None:
    """The metadata object (``specs.metadata``): None when absent, null or empty."""
    if _absent(raw):
        return None

    def bad(message: str) -> InvalidMessage:
        return InvalidMessage(ack_id, message, invocation_id=invocation_id, stream_id=stream_id)

    text = bytes(raw).strip()
    if len(text) > _MAX_METADATA_JSON_BYTES:
        raise bad(f"'metadata' is longer than {_metadata.MAX_TOTAL_CHARS} characters")
    if text[:1] != b"{":
        raise bad("'metadata' must be an object of strings")
    try:
        # The stdlib parser keeps repeated keys apart (object_pairs_hook), which the rule needs.
        pairs = _stdlib_json.loads(text, object_pairs_hook=list)
    except (ValueError, RecursionError):
        raise bad("'metadata' must be an object of strings") from None
    metadata, problem = _metadata.normalize(pairs)
    if problem is not None:
        raise bad(problem)
    return metadata


def _ttl_of(raw: msgspec.Raw, ack_id: int | None, stream_id: str | None = None) -> int | None:
    if _absent(raw):
        return None
    try:
        value = _any_decoder.decode(raw)
    except _DECODE_ERRORS:
        value = None
    if type(value) is not int or not 0 <= value <= _spec.MAX_TTL_SECONDS:
        raise InvalidMessage(ack_id, f"'ttlSeconds' is out of range. Allowed range is [0,{_spec.MAX_TTL_SECONDS}].",
                             stream_id=stream_id)
    return value or None


def _payload(
    ack_id: int | None, data_type: str | None, data: msgspec.Raw, metadata: dict | None, *,
    invocation_id: str | None = None, stream_id: str | None = None, optional: bool = False,
) -> Payload:
    """The payload of a sendToGroup/event/invoke/streamData. Without data: an empty text when
    the message has metadata or the data is optional (an invoke), else InvalidMessage."""

    def bad(message: str) -> InvalidMessage:
        return InvalidMessage(ack_id, message, invocation_id=invocation_id, stream_id=stream_id)

    if data_type is None:
        dt = _spec.DEFAULT_DATA_TYPE
    else:
        dt = _DATA_TYPE_EXACT.get(data_type)
        if dt is None:
            try:
                dt = DataType.parse(data_type)
            except ValueError:
                raise bad(f"'dataType' must be one of {_DATA_TYPES_TEXT}, not {data_type!r}") from None
    if not len(data):
        if (metadata is not None or optional) and data_type is None:
            return _EMPTY_TEXT
        raise bad("'data' is required")
    if dt is DataType.JSON:
        if data == _RAW_NULL:
            raise bad("'data' must not be null for dataType json")
        return Payload(DataType.JSON, bytes(data))
    if dt is DataType.TEXT:
        try:
            text = _str_decoder.decode(data)
        except _DECODE_ERRORS:
            raise bad("'data' must be a string for dataType text") from None
        return Payload(DataType.TEXT, text.encode("utf-8"))
    try:
        body = _bytes_decoder.decode(data)
    except _DECODE_ERRORS:
        raise bad(f"'data' must be a base64 string for dataType {dt.value}") from None
    return Payload(dt, body)


def _build_group_op(type_: str, group: str, ack_id: int | None) -> JoinGroup | LeaveGroup:
    problem = _spec.group_name_problem(group)
    if problem is not None:
        raise InvalidMessage(ack_id, problem)
    return JoinGroup(group, ack_id) if type_ == "joinGroup" else LeaveGroup(group, ack_id)


def _build_send_to_group(
    group: str,
    ack_id: int | None,
    no_echo: bool | None,
    data_type: str | None,
    data: msgspec.Raw,
    stream: msgspec.Raw,
    metadata_raw: msgspec.Raw,
    ttl_raw: msgspec.Raw,
) -> SendToGroup | StreamStart:
    stream_id = None
    if len(stream) and stream != _RAW_NULL:
        stream_id = _stream_id_of_start(stream, ack_id)
    problem = _spec.group_name_problem(group)
    if problem is not None:
        raise InvalidMessage(ack_id, problem, stream_id=stream_id)
    metadata = _metadata_of(metadata_raw, ack_id, stream_id=stream_id)
    ttl = _ttl_of(ttl_raw, ack_id, stream_id)
    if stream_id is not None:
        if len(data) or data_type is not None:
            raise InvalidMessage(ack_id, "a stream start must not carry 'data' or 'dataType'", stream_id=stream_id)
        idle = _idle_timeout(stream, ack_id, stream_id)
        return StreamStart(group, stream_id, ack_id, bool(no_echo), idle, metadata, ttl)
    payload = _payload(ack_id, data_type, data, metadata)
    return SendToGroup(group, payload, ack_id, bool(no_echo), metadata, ttl)


def _build_event(
    event: str,
    ack_id: int | None,
    data_type: str | None,
    data: msgspec.Raw,
    stream: msgspec.Raw,
    metadata_raw: msgspec.Raw,
) -> Event | Unsupported:
    if len(stream) and stream != _RAW_NULL:
        return _unsupported_stream("event", ack_id, stream)
    problem = _spec.event_name_problem(event)
    if problem is not None:
        raise InvalidMessage(ack_id, problem)
    metadata = _metadata_of(metadata_raw, ack_id)
    payload = _payload(ack_id, data_type, data, metadata)
    return Event(event, payload, ack_id, metadata)


def _build_stream_data(
    stream_id: str, sequence_id: int | None, data_type: str | None, data: msgspec.Raw
) -> StreamData:
    has_data = len(data) and data != _RAW_NULL
    if sequence_id is None and data_type is None and not has_data:
        return StreamData(stream_id)  # a keepalive
    if sequence_id is None or data_type is None or not has_data:
        raise InvalidMessage(
            None, "a stream fragment needs all of 'streamSequenceId', 'dataType' and 'data'", stream_id=stream_id
        )
    return StreamData(stream_id, sequence_id, _payload(None, data_type, data, None, stream_id=stream_id))


def _build_invoke(
    invocation_id: str, event: str, target: str | None, data_type: str | None, data: msgspec.Raw,
    metadata_raw: msgspec.Raw,
) -> Invoke:
    problem = _id_problem("invocationId", invocation_id) or _spec.event_name_problem(event)
    if problem is None and target is not None and target != _invocation.TARGET_EVENT:
        problem = f"'target' must be '{_invocation.TARGET_EVENT}', not {target[:40]!r}"
    if problem is not None:
        raise InvalidMessage(None, problem, invocation_id=invocation_id)
    metadata = _metadata_of(metadata_raw, None, invocation_id=invocation_id)
    payload = _payload(None, data_type, data, metadata, invocation_id=invocation_id, optional=True)
    return Invoke(invocation_id, event, payload, metadata)


# =========================================================================== decode


def decode_client(frame: str | bytes) -> ClientMessage:
    """Decode one client text frame (a ``str`` or its UTF-8 bytes).

    Returns one of ``JoinGroup``, ``LeaveGroup``, ``SendToGroup``, ``Event``, ``SequenceAck``,
    ``Ping``, ``StreamStart``, ``StreamData``, ``StreamEnd``, ``Invoke``, ``CancelInvocation``,
    ``Unsupported``.

    Raises:
        MalformedFrame: not UTF-8/JSON, not an object, or no string ``type``.
        InvalidMessage: a known message type with a missing or invalid field.
    """
    if json_too_deep(frame):
        raise MalformedFrame(f"the frame nests JSON deeper than {_spec.MAX_JSON_DEPTH} levels")
    try:
        m = _fast_decoder.decode(frame)
    except _DECODE_ERRORS:
        return _decode_slow(frame)
    cls = type(m)
    if cls is _FSendToGroup:
        if not len(m.metadata) and not len(m.ttl_seconds):
            payload = _common_payload(m.data_type, m.data, m.stream)
            if payload is not None and _group_name_problem(m.group) is None:
                return SendToGroup(m.group, payload, m.ack_id, m.no_echo is True)
        try:
            return _build_send_to_group(
                m.group, m.ack_id, m.no_echo, m.data_type, m.data, m.stream, m.metadata, m.ttl_seconds
            )
        except InvalidMessage as exc:
            exc.stream_start = exc.stream_id is not None
            raise
    if cls is _FStreamData:
        stream_id = m.stream_id
        if _id_problem("streamId", stream_id) is not None:
            return _decode_slow(frame)
        if m.stream_sequence_id is not None and len(m.data):
            payload = _common_payload(m.data_type, m.data, _RAW_ABSENT) if m.data_type is not None else None
            if payload is not None:
                return StreamData(stream_id, m.stream_sequence_id, payload)
        return _build_stream_data(stream_id, m.stream_sequence_id, m.data_type, m.data)
    if cls is _FEvent:
        if not len(m.metadata):
            payload = _common_payload(m.data_type, m.data, m.stream)
            if payload is not None and _event_name_problem(m.event) is None:
                return Event(m.event, payload, m.ack_id)
        return _build_event(m.event, m.ack_id, m.data_type, m.data, m.stream, m.metadata)
    if cls is _FInvoke:
        if len(m.stream) and m.stream != _RAW_NULL:
            return _unsupported_stream("invoke", None, m.stream, m.invocation_id)
        return _build_invoke(m.invocation_id, m.event, m.target, m.data_type, m.data, m.metadata)
    if cls is _FJoinGroup:
        return _build_group_op("joinGroup", m.group, m.ack_id)
    if cls is _FLeaveGroup:
        return _build_group_op("leaveGroup", m.group, m.ack_id)
    if cls is _FSequenceAck:
        return SequenceAck(m.sequence_id)
    return _PING


_group_name_problem = _spec.group_name_problem
_event_name_problem = _spec.event_name_problem
_TEXT = DataType.TEXT
_JSON = DataType.JSON
_DEFAULT_DATA_TYPE = _spec.DEFAULT_DATA_TYPE


def _common_payload(
    data_type: str | None, data: msgspec.Raw, stream: msgspec.Raw
) -> Payload | None:
    """The payload of the common case (text or json data, no stream), or None to let the
    general builder decide (which also produces every error)."""
    if len(stream) or not len(data):
        return None
    dt = _DEFAULT_DATA_TYPE if data_type is None else _DATA_TYPE_EXACT.get(data_type)
    if dt is _TEXT:
        try:
            return Payload(_TEXT, _str_decoder.decode(data).encode("utf-8"))
        except _DECODE_ERRORS:
            return None
    if dt is _JSON and data != _RAW_NULL:
        return Payload(_JSON, bytes(data))
    return None


# =========================================================================== encode

_encode = msgspec.json.encode


def _s(value: str) -> bytes:
    """A JSON string. Never raises: a lone surrogate becomes a \\u escape."""
    try:
        return _encode(value)
    except UnicodeEncodeError:
        return _stdlib_json.dumps(value).encode("ascii")


_DATA_TYPE_JSON: dict[DataType, bytes] = {d: b'"' + d.value.encode() + b'"' for d in DataType}


def _data(payload: Payload) -> bytes:
    dt = payload.data_type
    if dt is _JSON:
        return payload.body
    if dt is _TEXT:
        return _encode(payload.body.decode("utf-8", "replace"))
    return b'"' + binascii.b2a_base64(payload.body, newline=False) + b'"'


def _error_object(name: str, message: str) -> bytes:
    return b'{"name":' + _s(name) + b',"message":' + _s(message) + b"}"


def encode_ack(
    ack_id: int,
    success: bool,
    error_name: str | None = None,
    error_message: str | None = None,
) -> bytes:
    """``{"type":"ack","ackId":N,"success":true}`` or with ``"success":false,"error":{...}``.

    A failed ack always carries ``error`` with both ``name`` and ``message``: the name
    defaults to ``InternalServerError`` and the message to the taxonomy's text for the name
    (``specs.errors.default_ack_message``). A successful ack never carries ``error``.

    Raises:
        ValueError: success is true and an error was given, or ack_id is not a uint64.
    """
    if not 0 <= ack_id <= _spec.UINT64_MAX:
        raise ValueError(f"ack_id out of range: {ack_id}")
    if success:
        if error_name is not None or error_message is not None:
            raise ValueError("a successful ack carries no error")
        return b'{"type":"ack","ackId":%d,"success":true}' % ack_id
    name = error_name if error_name is not None else _errors.AckErrorName.INTERNAL_SERVER_ERROR.value
    message = error_message if error_message is not None else _errors.default_ack_message(name)
    return (
        b'{"type":"ack","ackId":%d,"success":false,"error":' % ack_id
        + _error_object(name, message)
        + b"}"
    )


def encode_connected(
    connection_id: str, user_id: str | None, reconnection_token: str | None = None
) -> bytes:
    """``{"type":"system","event":"connected","userId":...,"connectionId":...}``.

    ``userId`` is null for anonymous connections; ``reconnectionToken`` is written only when
    not None (reliable subprotocols).
    """
    out = (
        b'{"type":"system","event":"connected","userId":'
        + (b"null" if user_id is None else _s(user_id))
        + b',"connectionId":'
        + _s(connection_id)
    )
    if reconnection_token is not None:
        out += b',"reconnectionToken":' + _s(reconnection_token)
    return out + b"}"


def encode_disconnected(message: str) -> bytes:
    """``{"type":"system","event":"disconnected","message":"..."}``."""
    return b'{"type":"system","event":"disconnected","message":' + _s(message) + b"}"


_PONG = b'{"type":"pong"}'


def encode_pong() -> bytes:
    """``{"type":"pong"}``; send it only in reply to ``ping`` (.NET rejects unknown types)."""
    return _PONG


def _metadata_json(metadata) -> bytes:
    return b"{" + b",".join(_s(k) + b":" + _s(v) for k, v in metadata.items()) + b"}"


def _stream_json(stream: StreamInfo) -> bytes:
    out = b'{"streamId":' + _s(stream.stream_id) + b',"streamSequenceId":%d' % stream.sequence_id
    if stream.end_of_stream:
        out += b',"endOfStream":true'
    if stream.error_name is not None:
        out += b',"error":{"name":' + _s(stream.error_name)
        if stream.error_message is not None:
            out += b',"message":' + _s(stream.error_message)
        if stream.user_error_code is not None:
            out += b',"userErrorCode":' + _s(stream.user_error_code)
        out += b"}"
    return out + b"}"


def encode_group_message(
    group: str,
    payload: Payload,
    from_user_id: str | None,
    *,
    metadata=None,
    stream: StreamInfo | None = None,
    sequence_id: int | None = None,
) -> bytes:
    """``{"type":"message","from":"group","group":..,"dataType":..,"data":..,"fromUserId":..,
    "metadata":{..},"stream":{..}}``.

    ``fromUserId``, ``metadata`` (when empty) and ``stream`` are omitted when None.
    ``sequence_id`` (reliable) is normally added per connection with ``with_sequence_id``; the
    keyword exists for the one-shot case.
    """
    out = (
        b'{"type":"message","from":"group","group":'
        + _s(group)
        + b',"dataType":'
        + _DATA_TYPE_JSON[payload.data_type]
        + b',"data":'
        + _data(payload)
    )
    if from_user_id is not None:
        out += b',"fromUserId":' + _s(from_user_id)
    if metadata:
        out += b',"metadata":' + _metadata_json(metadata)
    if stream is not None:
        out += b',"stream":' + _stream_json(stream)
    if sequence_id is not None:
        return with_sequence_id(out + b"}", sequence_id)
    return out + b"}"


def encode_server_message(payload: Payload, *, metadata=None, sequence_id: int | None = None) -> bytes:
    """``{"type":"message","from":"server","dataType":..,"data":..,"metadata":{..}}`` (byte-exact
    per Microsoft's integration test for ``Payload.text("Hello")``; metadata omitted when empty)."""
    out = (
        b'{"type":"message","from":"server","dataType":'
        + _DATA_TYPE_JSON[payload.data_type]
        + b',"data":'
        + _data(payload)
    )
    if metadata:
        out += b',"metadata":' + _metadata_json(metadata)
    out += b"}"
    if sequence_id is not None:
        return with_sequence_id(out, sequence_id)
    return out


def with_sequence_id(encoded_message: bytes, sequence_id: int) -> bytes:
    """Insert ``,"sequenceId":N`` before the final ``}`` of an encoded ``message`` frame.

    O(len) slicing, no re-encode: the group actor encodes once, each reliable connection
    stamps its own id.

    Raises:
        ValueError: the input does not end with ``}`` or the id is not in 1..2**64-1.
    """
    if not 1 <= sequence_id <= _spec.UINT64_MAX:
        raise ValueError(f"sequence_id out of range: {sequence_id}")
    if encoded_message[-1:] != b"}":
        raise ValueError("not an encoded JSON object")
    return encoded_message[:-1] + b',"sequenceId":%d}' % sequence_id


def encode_invoke_response(invocation_id: str, payload: Payload | None = None, metadata=None) -> bytes:
    """``{"type":"invokeResponse","invocationId":..,"success":true,"dataType":..,"data":..,
    "metadata":{..}}``; ``dataType``/``data`` omitted without a payload, ``metadata`` when empty."""
    out = b'{"type":"invokeResponse","invocationId":' + _s(invocation_id) + b',"success":true'
    if payload is not None:
        out += b',"dataType":' + _DATA_TYPE_JSON[payload.data_type] + b',"data":' + _data(payload)
    if metadata:
        out += b',"metadata":' + _metadata_json(metadata)
    return out + b"}"


def encode_invoke_response_error(invocation_id: str, error_name: str, error_message: str) -> bytes:
    """``{"type":"invokeResponse","invocationId":..,"success":false,"error":{name,message}}``
    (``specs.invocation``: every failed or refused invocation)."""
    return (
        b'{"type":"invokeResponse","invocationId":'
        + _s(invocation_id)
        + b',"success":false,"error":'
        + _error_object(error_name, error_message)
        + b"}"
    )


def encode_stream_closed(
    stream_id: str, error_name: str | None = None, error_message: str | None = None
) -> bytes:
    """``{"type":"streamClosed","streamId":..,"error":{name,message}}`` (error omitted when
    ``error_name`` is None): the end of a stream (``specs.streams``)."""
    out = b'{"type":"streamClosed","streamId":' + _s(stream_id)
    if error_name is not None:
        message = error_message if error_message is not None else _errors.default_ack_message(error_name)
        out += b',"error":' + _error_object(error_name, message)
    return out + b"}"


def encode_stream_ack(stream_id: str, expected_sequence_id: int) -> bytes:
    """``{"type":"streamAck","streamId":..,"expectedSequenceId":N}``."""
    return b'{"type":"streamAck","streamId":' + _s(stream_id) + b',"expectedSequenceId":%d}' % expected_sequence_id


def encode_stream_nack(stream_id: str, expected_sequence_id: int, name: str, message: str) -> bytes:
    """``{"type":"streamNack","streamId":..,"expectedSequenceId":N,"name":..,"message":..}``."""
    return (
        b'{"type":"streamNack","streamId":' + _s(stream_id)
        + b',"expectedSequenceId":%d,"name":' % expected_sequence_id + _s(name)
        + b',"message":' + _s(message) + b"}"
    )
