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


@st.composite
def send_to_group_cases(draw):
    group, ack_id = draw(groups), draw(ack_ids)
    no_echo = draw(st.none() | st.booleans())
    payload, fill = draw(payloads())
    metadata = draw(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2))
    ttl = draw(st.none() | st.integers(0, 300))
    expected = cp.SendToGroup(group, payload, ack_id, bool(no_echo))

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
    expected = cp.Event(event, payload, ack_id)

    def build(pb):
        U = pb.UpstreamMessage
        m = U.EventMessage(**_kw(event=event, ack_id=ack_id))
        fill(m.data)
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
def unsupported_cases(draw):
    """Kinds we do not implement, stream starts and metadata-only messages."""
    which = draw(
        st.sampled_from(
            [
                "invoke",
                "cancel",
                "stream_data",
                "stream_end",
                "set_state",
                "subscribe",
                "unsubscribe",
                "stg_stream",
                "event_stream",
                "stg_metadata",
                "event_metadata",
            ]
        )
    )
    some_id = draw(ids)
    ack_id = draw(ack_ids)
    group = draw(groups)
    payload_fill = draw(st.none() | payloads())

    def with_data(m, field="data"):
        if payload_fill is not None:
            payload_fill[1](getattr(m, field))
        return m

    if which == "invoke":
        expected = cp.Unsupported("invoke", None, None, some_id or None)
        return expected, lambda pb: pb.UpstreamMessage(
            invoke_event_message=with_data(
                pb.UpstreamMessage.InvokeEventMessage(event="e", invocation_id=some_id)
            )
        )
    if which == "cancel":
        expected = cp.Unsupported("cancelInvocation", None, None, some_id or None)
        return expected, lambda pb: pb.UpstreamMessage(
            cancel_invocation_message=pb.UpstreamMessage.CancelInvocationMessage(
                invocation_id=some_id
            )
        )
    if which == "stream_data":
        expected = cp.Unsupported("streamData", None, None, None, some_id or None)
        return expected, lambda pb: pb.UpstreamMessage(
            stream_data_message=with_data(
                pb.UpstreamMessage.StreamDataMessage(stream_id=some_id, stream_sequence_id=3)
            )
        )
    if which == "stream_end":
        expected = cp.Unsupported("streamEnd", None, None, None, some_id or None)

        def build(pb):
            U = pb.UpstreamMessage
            m = U.StreamEndMessage(stream_id=some_id)
            m.error.message = "boom"
            return U(stream_end_message=m)

        return expected, build
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
    if which in ("stg_stream", "event_stream"):
        json_type = "sendToGroup" if which == "stg_stream" else "event"
        expected = cp.Unsupported(json_type, ack_id, "stream", None, some_id or None)

        def build(pb):
            U = pb.UpstreamMessage
            if which == "stg_stream":
                m = U.SendToGroupMessage(**_kw(group=group, ack_id=ack_id))
                wrap = "send_to_group_message"
            else:
                m = U.EventMessage(**_kw(event="ev", ack_id=ack_id))
                wrap = "event_message"
            m.stream.stream_id = some_id
            m.stream.idle_timeout_ms = 1000
            with_data(m)
            return U(**{wrap: m})

        return expected, build
    json_type = "sendToGroup" if which == "stg_metadata" else "event"
    expected = cp.Unsupported(json_type, ack_id, "metadata")

    def build(pb):
        U = pb.UpstreamMessage
        if which == "stg_metadata":
            m = U.SendToGroupMessage(**_kw(group=group, ack_id=ack_id))
            wrap = "send_to_group_message"
        else:
            m = U.EventMessage(**_kw(event="ev", ack_id=ack_id))
            wrap = "event_message"
        m.metadata["trace"] = some_id
        return U(**{wrap: m})

    return expected, build


client_cases = (
    join_leave_cases()
    | send_to_group_cases()
    | event_cases()
    | small_cases()
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
        if case in ("send_to_group_message", "event_message"):
            if m.HasField("stream"):
                stream_id = m.stream.stream_id or None
                return ("ok", cp.Unsupported(json_type, ack_id, "stream", None, stream_id))
            if case == "send_to_group_message":
                _check(ack_id, js.group_name_problem(m.group))
            else:
                _check(ack_id, js.event_name_problem(m.event))
            payload = _model_payload(m, ack_id)
            if payload is None:
                return ("ok", cp.Unsupported(json_type, ack_id, "metadata"))
            if case == "send_to_group_message":
                return ("ok", normalise(cp.SendToGroup(m.group, payload, ack_id, m.no_echo)))
            return ("ok", normalise(cp.Event(m.event, payload, ack_id)))
    except _Invalid as e:
        return ("invalid", e.args[0], e.args[1])
    if case == "sequence_ack_message":
        return ("ok", cp.SequenceAck(m.sequence_id))
    if case == "ping_message":
        return ("ok", cp.Ping())
    fields = m.DESCRIPTOR.fields_by_name
    return (
        "ok",
        cp.Unsupported(
            json_type,
            ack_id,
            None,
            (m.invocation_id or None) if "invocation_id" in fields else None,
            (m.stream_id or None) if "stream_id" in fields else None,
        ),
    )


class _Invalid(Exception):
    pass


def _check(ack_id, problem):
    if problem is not None:
        raise _Invalid(ack_id, problem)


def _model_payload(m, ack_id):
    which = m.data.WhichOneof("data") if m.HasField("data") else None
    if which is None:
        if len(m.metadata):
            return None
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
