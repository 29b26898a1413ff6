"""Hypothesis strategies shared by the codec tests: client messages as a client would write them.

Each ``*_cases`` strategy yields ``(expected_message, frame)`` where ``frame`` is a ``str`` or
``bytes`` serialised with random key order, extra properties, spacing, ``ensure_ascii``,
``dataType`` spellings and numeric-string ``ackId``s.
"""

from __future__ import annotations

import base64
import json

from hypothesis import strategies as st

from fabric.core.payload import DataType, Payload
from fabric.webpubsub import codec_json as cj
from specs import webpubsub_json as spec
from specs.invocation import identifier_problem
from specs.metadata import metadata_problem

KNOWN_PROPERTIES = frozenset(
    {
        "type",
        "ackId",
        "group",
        "noEcho",
        "dataType",
        "data",
        "event",
        "sequenceId",
        "stream",
        "metadata",
        "invocationId",
        "streamId",
        "ttlSeconds",
        "streamSequenceId",
        "target",
        "error",
    }
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)

groups = st.text(min_size=1, max_size=30).filter(spec.is_valid_group_name)
identifiers = st.text(min_size=1, max_size=20).filter(lambda t: identifier_problem("id", t) is None)
metadata_keys = st.text("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                        min_size=1, max_size=12)
metadata_values = st.text(max_size=20).filter(lambda v: metadata_problem({"k": v}) is None)
metadata_maps = st.dictionaries(metadata_keys, metadata_values, max_size=4).filter(
    lambda m: len({k.lower() for k in m}) == len(m))
event_names = st.text(min_size=1, max_size=30).filter(spec.is_valid_event_name)
ack_ids = st.none() | st.integers(min_value=0, max_value=spec.UINT64_MAX)
extra_properties = st.dictionaries(
    st.text(max_size=10).filter(lambda k: k not in KNOWN_PROPERTIES), json_values, max_size=3
)


@st.composite
def case_variant(draw, word: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.upper() if f else c for c, f in zip(word, flips))


@st.composite
def serialise(draw, obj: dict) -> tuple[str | bytes, tuple, bool]:
    """JSON text for ``obj`` with shuffled keys; returns (frame, separators, ensure_ascii)."""
    items = draw(st.permutations(list(obj.items())))
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]))
    ensure_ascii = draw(st.booleans())
    text = json.dumps(dict(items), separators=separators, ensure_ascii=ensure_ascii)
    if draw(st.booleans()):
        text = " " * draw(st.integers(0, 2)) + text + "\n" * draw(st.integers(0, 2))
    frame: str | bytes = text.encode("utf-8") if draw(st.booleans()) else text
    return frame, separators, ensure_ascii


@st.composite
def wire_ack_id(draw, obj: dict, ack_id: int | None) -> None:
    if ack_id is None:
        if draw(st.booleans()):
            obj["ackId"] = None
    else:
        obj["ackId"] = str(ack_id) if draw(st.booleans()) else ack_id


payload_values = st.one_of(
    st.tuples(st.just(DataType.TEXT), st.text(max_size=40)),
    st.tuples(st.just(DataType.JSON), json_values.filter(lambda v: v is not None)),
    st.tuples(st.just(DataType.BINARY), st.binary(max_size=40)),
    st.tuples(st.just(DataType.PROTOBUF), st.binary(max_size=40)),
)


@st.composite
def wire_payload(draw, obj: dict) -> tuple[DataType, object]:
    """Put dataType/data into ``obj``; returns (data_type, value) to build the expectation."""
    data_type, value = draw(payload_values)
    if data_type is DataType.JSON and draw(st.booleans()):
        if draw(st.booleans()):
            obj["dataType"] = None
    else:
        obj["dataType"] = draw(case_variant(data_type.value))
    if data_type in (DataType.BINARY, DataType.PROTOBUF):
        obj["data"] = base64.b64encode(value).decode("ascii")
    else:
        obj["data"] = value
    return data_type, value


def expected_payload(data_type: DataType, value, separators, ensure_ascii) -> Payload:
    if data_type is DataType.TEXT:
        return Payload.text(value)
    if data_type is DataType.JSON:
        raw = json.dumps(value, separators=separators, ensure_ascii=ensure_ascii)
        return Payload.json(raw.encode("utf-8"))
    return Payload(data_type, value)


@st.composite
def group_op_cases(draw):
    type_ = draw(st.sampled_from(["joinGroup", "leaveGroup"]))
    group, ack_id = draw(groups), draw(ack_ids)
    obj = {"type": type_, "group": group, **draw(extra_properties)}
    draw(wire_ack_id(obj, ack_id))
    frame, _, _ = draw(serialise(obj))
    cls = cj.JoinGroup if type_ == "joinGroup" else cj.LeaveGroup
    return cls(group, ack_id), frame


@st.composite
def wire_metadata(draw, obj: dict) -> dict | None:
    """Maybe put ``metadata`` into ``obj``; returns the expected (lower-cased) map or None."""
    metadata = draw(st.none() | metadata_maps)
    if metadata is None:
        if draw(st.booleans()):
            obj["metadata"] = None
        return None
    obj["metadata"] = metadata
    return {k.lower(): v for k, v in metadata.items()} or None


@st.composite
def send_to_group_cases(draw):
    group, ack_id, no_echo = draw(groups), draw(ack_ids), draw(st.booleans())
    obj = {"type": "sendToGroup", "group": group, **draw(extra_properties)}
    draw(wire_ack_id(obj, ack_id))
    if no_echo or draw(st.booleans()):
        obj["noEcho"] = no_echo
    elif draw(st.booleans()):
        obj["noEcho"] = None
    metadata = draw(wire_metadata(obj))
    ttl = draw(st.none() | st.integers(0, spec.MAX_TTL_SECONDS))
    if ttl is not None:
        obj["ttlSeconds"] = ttl
    data_type, value = draw(wire_payload(obj))
    frame, separators, ensure_ascii = draw(serialise(obj))
    payload = expected_payload(data_type, value, separators, ensure_ascii)
    return cj.SendToGroup(group, payload, ack_id, no_echo, metadata, ttl or None), frame


@st.composite
def event_cases(draw):
    event, ack_id = draw(event_names), draw(ack_ids)
    obj = {"type": "event", "event": event, **draw(extra_properties)}
    draw(wire_ack_id(obj, ack_id))
    metadata = draw(wire_metadata(obj))
    data_type, value = draw(wire_payload(obj))
    frame, separators, ensure_ascii = draw(serialise(obj))
    payload = expected_payload(data_type, value, separators, ensure_ascii)
    return cj.Event(event, payload, ack_id, metadata), frame


@st.composite
def stream_start_cases(draw):
    group, ack_id, no_echo, stream_id = draw(groups), draw(ack_ids), draw(st.booleans()), draw(identifiers)
    stream: dict = {"streamId": stream_id}
    idle = draw(st.none() | st.integers(1, 2**32 - 1))
    if idle is not None:
        stream["idleTimeoutMs"] = idle
    obj = {"type": "sendToGroup", "group": group, "stream": stream, "noEcho": no_echo, **draw(extra_properties)}
    draw(wire_ack_id(obj, ack_id))
    metadata = draw(wire_metadata(obj))
    frame, _, _ = draw(serialise(obj))
    return cj.StreamStart(group, stream_id, ack_id, no_echo, idle or 300_000, metadata), frame


@st.composite
def stream_data_cases(draw):
    stream_id = draw(identifiers)
    obj = {"type": "streamData", "streamId": stream_id, **draw(extra_properties)}
    if draw(st.booleans()):  # a keepalive
        frame, _, _ = draw(serialise(obj))
        return cj.StreamData(stream_id), frame
    sequence_id = draw(st.integers(0, spec.UINT64_MAX))
    obj["streamSequenceId"] = str(sequence_id) if draw(st.booleans()) else sequence_id
    data_type, value = draw(wire_payload(obj))
    if "dataType" not in obj or obj["dataType"] is None:
        obj["dataType"] = "json"  # a fragment needs its dataType
    frame, separators, ensure_ascii = draw(serialise(obj))
    return cj.StreamData(stream_id, sequence_id, expected_payload(data_type, value, separators, ensure_ascii)), frame


@st.composite
def stream_end_cases(draw):
    stream_id = draw(identifiers)
    obj = {"type": "streamEnd", "streamId": stream_id, **draw(extra_properties)}
    expected = cj.StreamEnd(stream_id)
    if draw(st.booleans()):
        message, code = draw(st.none() | st.text(max_size=10)), draw(st.none() | st.text(max_size=10))
        error = {k: v for k, v in (("message", message), ("userErrorCode", code)) if v is not None}
        obj["error"] = error
        expected = cj.StreamEnd(stream_id, True, message, code)
    frame, _, _ = draw(serialise(obj))
    return expected, frame


@st.composite
def invoke_cases(draw):
    invocation_id, event = draw(identifiers), draw(event_names)
    obj = {"type": "invoke", "invocationId": invocation_id, "event": event, **draw(extra_properties)}
    if draw(st.booleans()):
        obj["target"] = "event"
    metadata = draw(wire_metadata(obj))
    if draw(st.booleans()):
        frame, _, _ = draw(serialise(obj))
        return cj.Invoke(invocation_id, event, Payload.text(""), metadata), frame
    data_type, value = draw(wire_payload(obj))
    frame, separators, ensure_ascii = draw(serialise(obj))
    return cj.Invoke(invocation_id, event, expected_payload(data_type, value, separators, ensure_ascii),
                     metadata), frame


@st.composite
def cancel_cases(draw):
    invocation_id = draw(st.text(max_size=10))
    frame, _, _ = draw(serialise({"type": "cancelInvocation", "invocationId": invocation_id,
                                  **draw(extra_properties)}))
    return cj.CancelInvocation(invocation_id), frame


@st.composite
def sequence_ack_cases(draw):
    sequence_id = draw(st.integers(min_value=0, max_value=spec.UINT64_MAX))
    wire = str(sequence_id) if draw(st.booleans()) else sequence_id
    obj = {"type": "sequenceAck", "sequenceId": wire, **draw(extra_properties)}
    frame, _, _ = draw(serialise(obj))
    return cj.SequenceAck(sequence_id), frame


@st.composite
def ping_cases(draw):
    frame, _, _ = draw(serialise({"type": "ping", **draw(extra_properties)}))
    return cj.Ping(), frame


@st.composite
def unsupported_cases(draw):
    type_ = draw(
        st.sampled_from(sorted(spec.KNOWN_UNSUPPORTED_CLIENT_TYPES))
        | st.text(max_size=15).filter(lambda t: t not in spec.SUPPORTED_CLIENT_TYPES)
    )
    ack_id = draw(ack_ids)
    obj = {"type": type_, **draw(extra_properties)}
    draw(wire_ack_id(obj, ack_id))
    invocation_id = draw(st.none() | st.text(max_size=10))
    if invocation_id is not None:
        obj["invocationId"] = invocation_id
    stream_id = draw(st.none() | st.text(max_size=10))
    if stream_id is not None:
        obj["streamId"] = stream_id
    frame, _, _ = draw(serialise(obj))
    return cj.Unsupported(type_, ack_id, None, invocation_id, stream_id), frame


client_cases = st.one_of(
    group_op_cases(),
    send_to_group_cases(),
    event_cases(),
    sequence_ack_cases(),
    ping_cases(),
    stream_start_cases(),
    stream_data_cases(),
    stream_end_cases(),
    invoke_cases(),
    cancel_cases(),
    unsupported_cases(),
)

# ---- near misses: a known type with random (often wrong) field values

field_values = st.one_of(
    json_values,
    st.sampled_from(["", " ", "\n", "g", "a" * 1025, "-1", "1", "00", "1e3", "text", "Binary", "aGk="]),
    st.integers(min_value=-3, max_value=3),
    st.just(2**64),
    st.just(2**64 - 1),
    st.just(1.0),
)


@st.composite
def near_miss_objects(draw) -> dict:
    obj: dict = {"type": draw(st.sampled_from(sorted(spec.CLIENT_MESSAGES)) | st.text(max_size=5))}
    for name in draw(st.sets(st.sampled_from(sorted(KNOWN_PROPERTIES - {"type"})))):
        obj[name] = draw(field_values)
    return obj


@st.composite
def near_miss_frames(draw) -> str | bytes:
    frame, _, _ = draw(serialise(draw(near_miss_objects())))
    return frame
