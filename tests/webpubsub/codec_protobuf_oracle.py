"""Test helpers for the protobuf codec: Hypothesis cases built with the protoc-generated
classes, and a reference model that derives the expected decode outcome from the oracle's own
parse of a frame.

A *case* is ``(expected, build)``: ``expected`` is the ClientMessage (or an outcome tuple)
``decode_client`` must produce, ``build(pb)`` returns the ``pb.UpstreamMessage`` that
represents it. Strategies cannot see fixtures, so the generated module is passed in late.
"""

from __future__ import annotations

import msgspec
from google.protobuf import any_pb2
from google.protobuf import unknown_fields as _unknown
from google.protobuf.message import DecodeError
from hypothesis import strategies as st

from fabric.core.payload import DataType, Payload
from fabric.webpubsub import codec_protobuf as cp
from specs import webpubsub_json as js
from specs import webpubsub_protobuf as ps
from specs.invocation import identifier_problem
from specs.metadata import metadata_problem, normalize

UINT64_MAX = 2**64 - 1

# --------------------------------------------------------------------------- outcomes


def outcome(fn, frame):
    """A comparable summary of decoding: the message, or the error's class/ack_id/text."""
    try:
        return ("ok", normalise(fn(frame)))
    except cp.InvalidMessage as e:
        return ("invalid", e.ack_id, e.message)
    except cp.MalformedFrame:
        return ("malformed",)


def normalise(message):
    """PROTOBUF payload bodies re-serialized canonically: a merged or reordered Any is the
    same Any (the codec keeps the bytes as sent)."""
    payload = getattr(message, "payload", None)
    if payload is not None and payload.data_type is DataType.PROTOBUF:
        canonical = any_pb2.Any.FromString(payload.body).SerializeToString(deterministic=True)
        return msgspec.structs.replace(message, payload=Payload(DataType.PROTOBUF, canonical))
    return message


# --------------------------------------------------------------------------- strategies

groups = st.text(min_size=1, max_size=24).filter(js.is_valid_group_name)
event_names = st.text(min_size=1, max_size=24).filter(js.is_valid_event_name)
ack_ids = st.none() | st.integers(0, UINT64_MAX)
ids = st.text(max_size=12)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
json_texts = json_values.map(msgspec.json.encode).filter(lambda b: b != b"null")


@st.composite
def payloads(draw):
    """``(Payload, fill)``: ``fill(md)`` sets that payload on a ``pb.MessageData``."""
    kind = draw(st.sampled_from(list(DataType)))
    if kind is DataType.TEXT:
        s = draw(st.text(max_size=40))

        def fill(md, s=s):
            md.text_data = s

        return Payload(DataType.TEXT, s.encode("utf-8")), fill
    if kind is DataType.BINARY:
        b = draw(st.binary(max_size=40))

        def fill(md, b=b):
            md.binary_data = b

        return Payload(DataType.BINARY, b), fill
    if kind is DataType.JSON:
        text = draw(json_texts)

        def fill(md, text=text):
            md.json_data = text.decode("utf-8")

        return Payload(DataType.JSON, text), fill
    any_msg = any_pb2.Any(type_url=draw(st.text(max_size=20)), value=draw(st.binary(max_size=20)))

    def fill(md, any_msg=any_msg):
        md.protobuf_data.CopyFrom(any_msg)

    return Payload(DataType.PROTOBUF, any_msg.SerializeToString()), fill


def _kw(**fields):
    return {k: v for k, v in fields.items() if v is not None}


@st.composite
def join_leave_cases(draw):
    join = draw(st.booleans())
    group, ack_id = draw(groups), draw(ack_ids)
    expected = (cp.JoinGroup if join else cp.LeaveGroup)(group, ack_id)

    def build(pb):
        U = pb.UpstreamMessage
        if join:
            return U(join_group_message=U.JoinGroupMessage(**_kw(group=group, ack_id=ack_id)))
        return U(leave_group_message=U.LeaveGroupMessage(**_kw(group=group, ack_id=ack_id)))

    return expected, build


metadata_keys = st.text("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                        min_size=1, max_size=8)
metadata_maps = st.dictionaries(metadata_keys, st.text(max_size=6).filter(lambda v: metadata_problem({"k": v}) is None),
                                max_size=3).filter(lambda m: len({k.lower() for k in m}) == len(m))
stream_ids = st.text(min_size=1, max_size=12).filter(lambda t: identifier_problem("id", t) is None)


def _lower(metadata: dict) -> dict | None:
    return {k.lower(): v for k, v in metadata.items()} or None


@st.composite
def send_to_group_cases(draw):
    group, ack_id = draw(groups), draw(ack_ids)
    no_echo = draw(st.none() | st.booleans())
    payload, fill = draw(payloads())
    metadata = draw(metadata_maps)
    ttl = draw(st.none() | st.integers(0, 300))
    expected = cp.SendToGroup(group, payload, ack_id, bool(no_echo), _lower(metadata), ttl or None)

    def build(pb):
        U = pb.UpstreamMessage
        m = U.SendToGroupMessage(
            **_kw(group=group, ack_id=ack_id, no_echo=no_echo, ttl_seconds=ttl)
        )
        fill(m.data)
        m.metadata.update(metadata)
        return U(send_to_group_message=m)

    return expected, build


@st.composite
def event_cases(draw):
    event, ack_id = draw(event_names), draw(ack_ids)
    payload, fill = draw(payloads())
    metadata = draw(metadata_maps)
    expected = cp.Event(event, payload, ack_id, _lower(metadata))

    def build(pb):
        U = pb.UpstreamMessage
        m = U.EventMessage(**_kw(event=event, ack_id=ack_id))
        fill(m.data)
        m.metadata.update(metadata)
        return U(event_message=m)

    return expected, build


@st.composite
def small_cases(draw):
    which = draw(st.sampled_from(["sequence_ack", "ping"]))
    if which == "ping":
        return cp.Ping(), lambda pb: pb.UpstreamMessage(
            ping_message=pb.UpstreamMessage.PingMessage()
        )
    seq = draw(st.integers(0, UINT64_MAX))
    return cp.SequenceAck(seq), lambda pb: pb.UpstreamMessage(
        sequence_ack_message=pb.UpstreamMessage.SequenceAckMessage(sequence_id=seq)
    )


@st.composite
def stream_cases(draw):
    """Stream starts, fragments, keepalives and ends."""
    which = draw(st.sampled_from(["start", "data", "keepalive", "end"]))
    stream_id = draw(stream_ids)
    if which == "start":
        group, ack_id = draw(groups), draw(ack_ids)
        no_echo = draw(st.none() | st.booleans())
        idle = draw(st.none() | st.integers(1, 2**32 - 1))
        metadata = draw(metadata_maps)
        expected = cp.StreamStart(group, stream_id, ack_id, bool(no_echo), idle or 300_000, _lower(metadata))

        def build(pb):
            U = pb.UpstreamMessage
            m = U.SendToGroupMessage(**_kw(group=group, ack_id=ack_id, no_echo=no_echo))
            m.stream.stream_id = stream_id
            if idle is not None:
                m.stream.idle_timeout_ms = idle
            m.metadata.update(metadata)
            return U(send_to_group_message=m)

        return expected, build
    if which == "data":
        seq = draw(st.integers(0, UINT64_MAX))
        payload, fill = draw(payloads())

        def build(pb):
            U = pb.UpstreamMessage
            m = U.StreamDataMessage(stream_id=stream_id, stream_sequence_id=seq)
            fill(m.data)
            return U(stream_data_message=m)

        return cp.StreamData(stream_id, seq, payload), build
    if which == "keepalive":
        return cp.StreamData(stream_id), lambda pb: pb.UpstreamMessage(
            stream_data_message=pb.UpstreamMessage.StreamDataMessage(stream_id=stream_id))
    error = draw(st.none() | st.tuples(st.none() | st.text(max_size=8), st.none() | st.text(max_size=8)))

    def build(pb):
        U = pb.UpstreamMessage
        m = U.StreamEndMessage(stream_id=stream_id)
        if error is not None:
            m.error.SetInParent()
            if error[0] is not None:
                m.error.message = error[0]
            if error[1] is not None:
                m.error.user_error_code = error[1]
        return U(stream_end_message=m)

    expected = cp.StreamEnd(stream_id) if error is None else cp.StreamEnd(stream_id, True, *error)
    return expected, build


@st.composite
def invocation_cases(draw):
    invocation_id = draw(stream_ids)
    if draw(st.booleans()):
        return cp.CancelInvocation(invocation_id), lambda pb: pb.UpstreamMessage(
            cancel_invocation_message=pb.UpstreamMessage.CancelInvocationMessage(invocation_id=invocation_id))
    event = draw(event_names)
    metadata = draw(metadata_maps)
    payload_fill = draw(st.none() | payloads())
    payload = payload_fill[0] if payload_fill is not None else Payload(DataType.TEXT, b"")

    def build(pb):
        U = pb.UpstreamMessage
        m = U.InvokeEventMessage(event=event, invocation_id=invocation_id)
        if payload_fill is not None:
            payload_fill[1](m.data)
        m.metadata.update(metadata)
        return U(invoke_event_message=m)

    return cp.Invoke(invocation_id, event, payload, _lower(metadata)), build


@st.composite
def unsupported_cases(draw):
    """Kinds we do not implement, and streams on event/invoke."""
    which = draw(st.sampled_from(["set_state", "subscribe", "unsubscribe", "event_stream", "invoke_stream"]))
    some_id = draw(ids)
    ack_id = draw(ack_ids)
    group = draw(groups)
    if which in ("set_state", "subscribe", "unsubscribe"):
        json_type, field, cls = {
            "set_state": ("setGroupState", "set_group_state_message", "SetGroupStateMessage"),
            "subscribe": (
                "subscribeGroupState",
                "subscribe_group_state_message",
                "SubscribeGroupStateMessage",
            ),
            "unsubscribe": (
                "unsubscribeGroupState",
                "unsubscribe_group_state_message",
                "UnsubscribeGroupStateMessage",
            ),
        }[which]
        expected = cp.Unsupported(json_type, ack_id)

        def build(pb):
            U = pb.UpstreamMessage
            m = getattr(U, cls)(**_kw(group=group, ack_id=ack_id))
            if which == "set_state":
                m.state.entries["k"] = "v"
            return U(**{field: m})

        return expected, build
    if which == "event_stream":
        expected = cp.Unsupported("event", ack_id, "stream", None, some_id or None)

        def build(pb):
            U = pb.UpstreamMessage
            m = U.EventMessage(**_kw(event="ev", ack_id=ack_id))
            m.stream.stream_id = some_id
            m.stream.idle_timeout_ms = 1000
            return U(event_message=m)

        return expected, build
    invocation_id = draw(stream_ids)
    expected = cp.Unsupported("invoke", None, "stream", invocation_id, some_id or None)

    def build(pb):
        U = pb.UpstreamMessage
        m = U.InvokeEventMessage(event="ev", invocation_id=invocation_id)
        m.stream.stream_id = some_id
        return U(invoke_event_message=m)

    return expected, build


client_cases = (
    join_leave_cases()
    | send_to_group_cases()
    | event_cases()
    | small_cases()
    | stream_cases()
    | invocation_cases()
    | unsupported_cases()
)


@st.composite
def mutations(draw, frame: bytes) -> bytes:
    """``frame`` with a few random byte flips, insertions, deletions or a truncation."""
    data = bytearray(frame)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if op == "insert" or not data:
            data.insert(draw(st.integers(0, len(data))), draw(st.integers(0, 255)))
            continue
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[i] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, 0x0A, 0x12, 0x1A, 0x0B, 0x0C]))
        elif op == "delete":
            del data[i]
        else:
            del data[i:]
    return bytes(data)


# --------------------------------------------------------------------------- reference model


def has_group(message) -> bool:
    """True when the oracle kept a group (wire types 3/4) among the unknown fields of the
    message or any message inside it: frames our codec rejects by decision. (Entries of
    map<string,string> fields are not messages in the Python runtime: see ``wire_has_group``.)"""
    for field in _unknown.UnknownFieldSet(message):
        if field.wire_type == 3:
            return True
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None or descriptor.message_type.GetOptions().map_entry:
            continue
        values = value if descriptor.is_repeated else [value]
        if any(has_group(v) for v in values):
            return True
    return False


def wire_has_group(buf: bytes, depth: int = 0) -> bool:
    """True when ``buf`` reads as wire format (groups allowed) with a group at some level,
    looking into every length-delimited field that itself reads as wire format. An
    over-approximation (a string may look like a message), used only to excuse a frame that
    the oracle accepts and we reject."""

    def varint(pos):
        result = shift = 0
        while True:
            b = buf[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            if b < 0x80:
                return result, pos
            shift += 7

    try:
        pos, found, nested = 0, False, []
        while pos < len(buf):
            tag, pos = varint(pos)
            wt = tag & 7
            if wt == 0:
                _, pos = varint(pos)
            elif wt == 1:
                pos += 8
            elif wt == 5:
                pos += 4
            elif wt == 2:
                n, pos = varint(pos)
                nested.append(buf[pos : pos + n])
                pos += n
            elif wt in (3, 4):
                found = True
            else:
                return False
        if pos != len(buf):
            return False
    except IndexError:
        return False
    return found or (depth < 4 and any(wire_has_group(b, depth + 1) for b in nested))


def model(pb, frame: bytes):
    """The expected ``outcome`` of ``decode_client(frame)``, derived from the oracle's parse
    and the decisions in specs; None when the frame holds a group (decision
    ``protobuf.unknown-fields``: malformed for us, skipped by protobuf)."""
    try:
        up = pb.UpstreamMessage.FromString(frame)
    except DecodeError:
        return ("malformed",)
    if has_group(up):
        return None
    case = up.WhichOneof("message")
    if case is None:
        last = None
        for field in _unknown.UnknownFieldSet(up):
            if field.wire_type == 2:
                last = field.field_number
        if last is None:
            return ("malformed",)
        return ("ok", cp.Unsupported(ps.unknown_upstream_type(last)))
    m = getattr(up, case)
    ack_id = m.ack_id if "ack_id" in m.DESCRIPTOR.fields_by_name and m.HasField("ack_id") else None
    json_type = ps.UPSTREAM_KINDS[case].json_type
    try:
        if case in ("join_group_message", "leave_group_message"):
            _check(ack_id, js.group_name_problem(m.group))
            cls = cp.JoinGroup if case == "join_group_message" else cp.LeaveGroup
            return ("ok", cls(m.group, ack_id))
        if case == "send_to_group_message":
            stream_id = None
            if m.HasField("stream"):
                stream_id = m.stream.stream_id
                _check(ack_id, identifier_problem("stream.stream_id", stream_id))
            _check(ack_id, js.group_name_problem(m.group))
            metadata = _model_metadata(m, ack_id)
            ttl = m.ttl_seconds if m.HasField("ttl_seconds") else None
            if ttl is not None and ttl > 300:
                raise _Invalid(ack_id, "'ttl_seconds' is out of range. Allowed range is [0,300].")
            if stream_id is not None:
                if m.HasField("data"):
                    raise _Invalid(ack_id, "a stream start must not carry 'data'")
                idle = m.stream.idle_timeout_ms if m.stream.HasField("idle_timeout_ms") else 300_000
                if idle < 1:
                    raise _Invalid(ack_id, "'stream.idle_timeout_ms' must be greater than 0")
                return ("ok", cp.StreamStart(m.group, stream_id, ack_id, m.no_echo, idle, metadata, ttl or None))
            payload = _model_payload(m, ack_id, metadata)
            return ("ok", normalise(cp.SendToGroup(m.group, payload, ack_id, m.no_echo, metadata, ttl or None)))
        if case == "event_message":
            if m.HasField("stream"):
                return ("ok", cp.Unsupported(json_type, ack_id, "stream", None, m.stream.stream_id or None))
            _check(ack_id, js.event_name_problem(m.event))
            metadata = _model_metadata(m, ack_id)
            payload = _model_payload(m, ack_id, metadata)
            return ("ok", normalise(cp.Event(m.event, payload, ack_id, metadata)))
        if case == "stream_data_message":
            _check(None, identifier_problem("stream_id", m.stream_id))
            has_seq, has_data = m.HasField("stream_sequence_id"), m.HasField("data")
            if not has_seq and not has_data:
                return ("ok", cp.StreamData(m.stream_id))
            if not has_seq or m.data.WhichOneof("data") is None:
                raise _Invalid(None, "a stream fragment needs both 'stream_sequence_id' and 'data' with a member")
            payload = _model_payload(m, None, None)
            return ("ok", normalise(cp.StreamData(m.stream_id, m.stream_sequence_id, payload)))
        if case == "stream_end_message":
            _check(None, identifier_problem("stream_id", m.stream_id))
            if not m.HasField("error"):
                return ("ok", cp.StreamEnd(m.stream_id))
            e = m.error
            return ("ok", cp.StreamEnd(m.stream_id, True, e.message if e.HasField("message") else None,
                                       e.user_error_code if e.HasField("user_error_code") else None))
        if case == "invoke_event_message":
            if m.HasField("stream"):
                return ("ok", cp.Unsupported("invoke", None, "stream", m.invocation_id, m.stream.stream_id or None))
            _check(None, identifier_problem("invocation_id", m.invocation_id) or js.event_name_problem(m.event))
            metadata = _model_metadata(m, None)
            payload = _model_payload(m, None, metadata, optional=True)
            return ("ok", normalise(cp.Invoke(m.invocation_id, m.event, payload, metadata)))
        if case == "cancel_invocation_message":
            return ("ok", cp.CancelInvocation(m.invocation_id))
    except _Invalid as e:
        return ("invalid", e.args[0], e.args[1])
    if case == "sequence_ack_message":
        return ("ok", cp.SequenceAck(m.sequence_id))
    if case == "ping_message":
        return ("ok", cp.Ping())
    return ("ok", cp.Unsupported(json_type, ack_id))


class _Invalid(Exception):
    pass


def _check(ack_id, problem):
    if problem is not None:
        raise _Invalid(ack_id, problem)


def _model_metadata(m, ack_id):
    if not len(m.metadata):
        return None
    metadata, problem = normalize(m.metadata.items())
    _check(ack_id, problem)
    return metadata


def _model_payload(m, ack_id, metadata, optional=False):
    which = m.data.WhichOneof("data") if m.HasField("data") else None
    if which is None:
        if metadata is not None or optional:
            return Payload(DataType.TEXT, b"")
        raise _Invalid(ack_id, "'data' is required")
    if which == "text_data":
        return Payload(DataType.TEXT, m.data.text_data.encode("utf-8"))
    if which == "binary_data":
        return Payload(DataType.BINARY, m.data.binary_data)
    if which == "protobuf_data":
        return Payload(DataType.PROTOBUF, m.data.protobuf_data.SerializeToString())
    text = m.data.json_data.encode("utf-8")
    try:
        raw = msgspec.json.decode(text, type=msgspec.Raw)
    except (msgspec.DecodeError, RecursionError):
        raise _Invalid(ack_id, "'json_data' must be one JSON value") from None
    if bytes(raw) == b"null":
        raise _Invalid(ack_id, "'json_data' must not be null")
    return Payload(DataType.JSON, bytes(raw))
