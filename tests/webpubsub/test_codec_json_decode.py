"""decode_client: round trips, leniency, recorded decisions, and garbage in."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric.core.payload import DataType, Payload
from fabric.webpubsub import codec_json as cj
from fabric.webpubsub.codec_json import (
    CancelInvocation,
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
    StreamStart,
    Unsupported,
    decode_client,
)
from specs import webpubsub_json as spec

from .codec_strategies import client_cases, json_values, near_miss_frames, near_miss_objects

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(fn, frame):
    """A comparable summary of decoding: the message, or the error's class/ack_id/text."""
    try:
        return ("ok", fn(frame))
    except InvalidMessage as e:
        return ("invalid", e.ack_id, e.message)
    except MalformedFrame as e:
        return ("malformed", e.message)


# --------------------------------------------------------------------------- round trips


@FAST
@given(client_cases)
def test_round_trip_every_client_message_type(case):
    expected, frame = case
    assert decode_client(frame) == expected


@FAST
@given(client_cases)
def test_fast_and_slow_paths_agree_on_valid_messages(case):
    _, frame = case
    assert outcome(decode_client, frame) == outcome(cj._decode_slow, frame)


@FAST
@given(near_miss_frames())
def test_fast_and_slow_paths_agree_on_near_misses(frame):
    assert outcome(decode_client, frame) == outcome(cj._decode_slow, frame)


def test_frames_sent_by_the_python_client_as_observed():
    # webpubsub-protocol.md §3.1 [OBS]
    assert decode_client('{"type": "joinGroup", "group": "g1", "ackId": 1}') == JoinGroup("g1", 1)
    assert decode_client(
        '{"type": "sendToGroup", "group": "g1", "ackId": 2, "dataType": "text", "data": "hi", '
        '"noEcho": true}'
    ) == SendToGroup("g1", Payload.text("hi"), 2, True)
    assert decode_client(
        '{"type": "event", "event": "ev1", "ackId": 3, "dataType": "json", "data": {"a": 1}}'
    ) == Event("ev1", Payload.json(b'{"a": 1}'), 3)
    assert decode_client('{"type": "sequenceAck", "sequenceId": 2}') == SequenceAck(2)


def test_dotnet_capitalised_data_types_and_numeric_strings():
    frame = b'{"type":"sendToGroup","group":"g","ackId":"42","dataType":"Binary","data":"AAEC"}'
    assert decode_client(frame) == SendToGroup("g", Payload.binary(b"\x00\x01\x02"), 42)
    frame = b'{"type":"event","event":"e","dataType":"PROTOBUF","data":"AAEC"}'
    assert decode_client(frame) == Event("e", Payload(DataType.PROTOBUF, b"\x00\x01\x02"))


def test_json_data_is_kept_byte_for_byte():
    frame = b'{"type":"sendToGroup","group":"g","data":  {"b" : [1.50, 2e3, "\\u00e9"]}  }'
    msg = decode_client(frame)
    assert msg.payload == Payload.json(b'{"b" : [1.50, 2e3, "\\u00e9"]}')


def test_absent_and_null_data_type_mean_json():
    assert decode_client(b'{"type":"event","event":"e","data":1}').payload == Payload.json(b"1")
    assert decode_client(b'{"type":"event","event":"e","dataType":null,"data":"s"}').payload == (
        Payload.json(b'"s"')
    )


def test_uint64_bounds_on_both_paths():
    top = spec.UINT64_MAX
    assert decode_client(b'{"type":"joinGroup","group":"g","ackId":%d}' % top).ack_id == top
    assert decode_client(b'{"type":"joinGroup","group":"g","ackId":"%d"}' % top).ack_id == top
    assert decode_client(b'{"type":"sequenceAck","sequenceId":%d}' % top) == SequenceAck(top)
    with pytest.raises(InvalidMessage):
        decode_client(b'{"type":"joinGroup","group":"g","ackId":%d}' % (top + 1))


# --------------------------------------------------------------------------- recorded decisions


@pytest.mark.parametrize(
    ("frame", "ack_id", "fragment"),
    [
        (b'{"type":"joinGroup"}', None, "'group' is required"),
        (b'{"type":"joinGroup","group":null,"ackId":1}', 1, "'group' is required"),
        (b'{"type":"joinGroup","group":"","ackId":1}', 1, "empty"),
        (b'{"type":"leaveGroup","group":" \\t ","ackId":"2"}', 2, "whitespace"),
        (b'{"type":"joinGroup","group":"a\\nb","ackId":3}', 3, "line feed"),
        (b'{"type":"joinGroup","group":"' + b"x" * 1025 + b'","ackId":4}', 4, "1024"),
        (b'{"type":"joinGroup","group":5,"ackId":5}', 5, "must be a string"),
        (b'{"type":"joinGroup","group":"g","ackId":-1}', None, "'ackId'"),
        (b'{"type":"joinGroup","group":"g","ackId":1.0}', None, "'ackId'"),
        (b'{"type":"joinGroup","group":"g","ackId":"+1"}', None, "'ackId'"),
        (b'{"type":"joinGroup","group":"g","ackId":" 1"}', None, "'ackId'"),
        (b'{"type":"joinGroup","group":"g","ackId":true}', None, "'ackId'"),
        (b'{"type":"sendToGroup","group":"g","ackId":6}', 6, "'data' is required"),
        (b'{"type":"sendToGroup","group":"g","ackId":7,"data":null}', 7, "null"),
        (b'{"type":"sendToGroup","group":"g","ackId":8,"dataType":"text","data":1}', 8, "string"),
        (b'{"type":"sendToGroup","group":"g","ackId":8,"dataType":"text","data":null}', 8, "string"),
        (b'{"type":"sendToGroup","group":"g","ackId":9,"dataType":"binary","data":"a b"}', 9, "base64"),
        (b'{"type":"sendToGroup","group":"g","ackId":9,"dataType":"binary","data":"aGk"}', 9, "base64"),
        (b'{"type":"sendToGroup","group":"g","ackId":9,"dataType":"protobuf","data":[1]}', 9, "base64"),
        (b'{"type":"sendToGroup","group":"g","ackId":10,"dataType":"xml","data":"x"}', 10, "dataType"),
        (b'{"type":"sendToGroup","group":"g","ackId":10,"dataType":1,"data":"x"}', 10, "dataType"),
        (b'{"type":"sendToGroup","group":"g","ackId":11,"noEcho":"yes","data":1}', 11, "noEcho"),
        (b'{"type":"event","ackId":12,"data":1}', 12, "'event' is required"),
        (b'{"type":"event","event":"","ackId":13,"data":1}', 13, "empty"),
        (b'{"type":"event","event":"a\\r\\nb","ackId":14,"data":1}', 14, "control"),
        (b'{"type":"sequenceAck"}', None, "'sequenceId' is required"),
        (b'{"type":"sequenceAck","sequenceId":-5,"ackId":3}', None, "'sequenceId'"),
    ],
)
def test_invalid_messages(frame, ack_id, fragment):
    with pytest.raises(InvalidMessage) as info:
        decode_client(frame)
    assert info.value.ack_id == ack_id
    assert fragment in info.value.message
    assert isinstance(info.value, ProtocolError)


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"   ",
        b"{",
        b"[]",
        b'"joinGroup"',
        b"null",
        b"{}",
        b'{"type":null}',
        b'{"type":1}',
        b'{"type":{"a":1}}',
        b"\xff\xfe",
        b'\xef\xbb\xbf{"type":"ping"}',  # a UTF-8 BOM is not JSON
        b'{"type":"ping"} {"type":"ping"}',
        b'{"type":"sendToGroup","group":"g","data":' + b"[" * 5000 + b"]" * 5000 + b"}",
        '{"type":"ping","x":"\ud800"}',  # a str frame with a lone surrogate
        b'{"type":"joinGroup","group":"\\ud800"}',  # an escaped lone surrogate
    ],
)
def test_malformed_frames(frame):
    with pytest.raises(MalformedFrame):
        decode_client(frame)


def test_unknown_and_unimplemented_types_are_unsupported_not_errors():
    assert decode_client(b'{"type":"whatever","ackId":"5"}') == Unsupported("whatever", 5)
    assert decode_client(b'{"type":"JoinGroup","group":"g"}') == Unsupported("JoinGroup")
    assert decode_client(b'{"type":"","ackId":-1}') == Unsupported("")
    assert decode_client(b'{"type":"setGroupState","group":"g","ackId":3}') == Unsupported("setGroupState", 3)
    # a client-sent invokeResponse (service-initiated invocations: decision invoke.service-initiated)
    assert decode_client(b'{"type":"invokeResponse","invocationId":"i"}') == (
        Unsupported("invokeResponse", invocation_id="i")
    )


def test_invoke_and_cancel():
    invoke = decode_client(
        b'{"type":"invoke","invocationId":"inv-1","target":"event","event":"e","dataType":"text",'
        b'"data":"x","metadata":{"Trace":"t1"}}'
    )
    assert invoke == Invoke("inv-1", "e", Payload.text("x"), {"trace": "t1"})
    # no payload: an empty text (decision invoke.no-payload); target absent means "event"
    assert decode_client(b'{"type":"invoke","invocationId":"2","event":"e"}') == Invoke("2", "e", Payload.text(""))
    assert decode_client(b'{"type":"cancelInvocation","invocationId":"2"}') == CancelInvocation("2")


@pytest.mark.parametrize(
    ("frame", "invocation_id"),
    [
        (b'{"type":"invoke","invocationId":"i","target":"method","event":"e"}', "i"),
        (b'{"type":"invoke","invocationId":"i"}', "i"),
        (b'{"type":"invoke","invocationId":"i","event":""}', "i"),
        (b'{"type":"invoke","invocationId":"","event":"e"}', ""),
        (b'{"type":"invoke","invocationId":"i","event":"e","dataType":"text","data":1}', "i"),
        (b'{"type":"invoke","invocationId":"i","event":"e","dataType":"text"}', "i"),
        (b'{"type":"invoke","invocationId":"i","event":"e","metadata":{"a b":"c"}}', "i"),
        (b'{"type":"invoke","invocationId":7,"event":"e"}', None),
        (b'{"type":"invoke","event":"e"}', None),
        (b'{"type":"cancelInvocation"}', None),
        (b'{"type":"cancelInvocation","invocationId":1}', None),
    ],
)
def test_invalid_invocations_carry_the_id_to_answer(frame, invocation_id):
    with pytest.raises(InvalidMessage) as info:
        decode_client(frame)
    assert info.value.invocation_id == invocation_id and info.value.ack_id is None


def test_an_invoke_with_a_stream_is_unsupported():
    assert decode_client(b'{"type":"invoke","invocationId":"i","event":"e","stream":{"streamId":"s"}}') == (
        Unsupported("invoke", None, "stream", "i", "s")
    )


def test_stream_start_data_end():
    assert decode_client(
        b'{"type":"sendToGroup","group":"g","ackId":1,"stream":{"streamId":"s","idleTimeoutMs":5}}'
    ) == StreamStart("g", "s", 1, False, 5)
    assert decode_client(b'{"type":"sendToGroup","group":"g","noEcho":true,"stream":{"streamId":"s"}}') == (
        StreamStart("g", "s", None, True, 300_000)
    )
    assert decode_client(b'{"type":"streamData","streamId":"s","streamSequenceId":1,"dataType":"text",'
                         b'"data":"a"}') == StreamData("s", 1, Payload.text("a"))
    assert decode_client(b'{"type":"streamData","streamId":"s","streamSequenceId":"2","dataType":"binary",'
                         b'"data":"AAE="}') == StreamData("s", 2, Payload.binary(b"\x00\x01"))
    assert decode_client(b'{"type":"streamData","streamId":"s"}') == StreamData("s")  # a keepalive
    assert decode_client(b'{"type":"streamData","streamId":"s","streamSequenceId":null,"data":null}') == (
        StreamData("s")
    )
    assert decode_client(b'{"type":"streamEnd","streamId":"s"}') == StreamEnd("s")
    assert decode_client(b'{"type":"streamEnd","streamId":"s","error":{"name":"X","message":"m",'
                         b'"userErrorCode":"c"}}') == StreamEnd("s", True, "m", "c")
    assert decode_client(b'{"type":"streamEnd","streamId":"s","error":{}}') == StreamEnd("s", True)
    # streams on event are not a thing (client streams target groups)
    assert decode_client(b'{"type":"event","event":"e","stream":{"streamId":"s"}}') == (
        Unsupported("event", None, "stream", None, "s")
    )


@pytest.mark.parametrize(
    ("frame", "stream_id", "start"),
    [
        (b'{"type":"sendToGroup","group":"g","stream":{"streamId":"s","idleTimeoutMs":0}}', "s", True),
        (b'{"type":"sendToGroup","group":"g","stream":{"streamId":"s","idleTimeoutMs":1.5}}', "s", True),
        (b'{"type":"sendToGroup","group":"g","stream":{"streamId":"s"},"data":"x"}', "s", True),
        (b'{"type":"sendToGroup","group":"","stream":{"streamId":"s"}}', "s", True),
        (b'{"type":"sendToGroup","group":"g","stream":{"streamId":"s"},"metadata":{"":"v"}}', "s", True),
        (b'{"type":"sendToGroup","group":"g","stream":{}}', None, False),
        (b'{"type":"sendToGroup","group":"g","stream":{"streamId":""}}', None, False),
        (b'{"type":"sendToGroup","group":"g","stream":[]}', None, False),
        (b'{"type":"streamData","streamId":"s","streamSequenceId":1}', "s", False),
        (b'{"type":"streamData","streamId":"s","dataType":"text","data":"x"}', "s", False),
        (b'{"type":"streamData","streamId":"s","streamSequenceId":-1,"dataType":"text","data":"x"}', "s", False),
        (b'{"type":"streamData","streamId":"s","streamSequenceId":1,"dataType":"text","data":5}', "s", False),
        (b'{"type":"streamData","streamId":"s","streamSequenceId":1,"data":"x"}', "s", False),
        (b'{"type":"streamData"}', None, False),
        (b'{"type":"streamData","streamId":"a\\u0000b"}', None, False),
        (b'{"type":"streamEnd","streamId":"s","error":"boom"}', "s", False),
        (b'{"type":"streamEnd","streamId":"s","error":{"message":1}}', "s", False),
    ],
)
def test_invalid_stream_messages_carry_the_stream_to_answer(frame, stream_id, start):
    with pytest.raises(InvalidMessage) as info:
        decode_client(frame)
    assert info.value.stream_id == stream_id
    assert info.value.stream_start is start


def test_metadata_on_send_and_event():
    assert decode_client(b'{"type":"sendToGroup","group":"g","data":1,"metadata":{"K":"v","b":""}}') == (
        SendToGroup("g", Payload.json(b"1"), metadata={"k": "v", "b": ""})
    )
    assert decode_client(b'{"type":"event","event":"e","data":1,"metadata":{"k":"v"},"ackId":2}') == (
        Event("e", Payload.json(b"1"), 2, {"k": "v"})
    )
    # metadata-only: an empty text (decision metadata.only); empty or null metadata is none
    assert decode_client(b'{"type":"sendToGroup","group":"g","metadata":{"k":"v"}}') == (
        SendToGroup("g", Payload.text(""), metadata={"k": "v"})
    )
    assert decode_client(b'{"type":"sendToGroup","group":"g","stream":null,"metadata":{},"data":1}') == (
        SendToGroup("g", Payload.json(b"1"))
    )
    assert decode_client(b'{"type":"sendToGroup","group":"g","metadata":null,"data":1}') == (
        SendToGroup("g", Payload.json(b"1"))
    )
    with pytest.raises(InvalidMessage):  # metadata without data still needs data when dataType is given
        decode_client(b'{"type":"sendToGroup","group":"g","metadata":{"k":"v"},"dataType":"text"}')


@pytest.mark.parametrize(
    "metadata",
    [
        b'[]', b'"k"', b'{"k":1}', b'{"k":null}', b'{"k":{"a":"b"}}', b'{"":"v"}', b'{"a b":"v"}',
        b'{"caf\\u00e9":"v"}', b'{"k":"v","K":"w"}', b'{"k":"v","k":"w"}', b'{"k":"a\\nb"}',
        b'{"k":"' + b"v" * 1025 + b'"}', b'{"' + b"k" * 257 + b'":"v"}',
        b"{" + b",".join(b'"k%d":"%s"' % (i, b"v" * 1000) for i in range(9)) + b"}",
    ],
)
def test_invalid_metadata_is_an_invalid_message(metadata):
    with pytest.raises(InvalidMessage) as info:
        decode_client(b'{"type":"sendToGroup","group":"g","ackId":4,"data":1,"metadata":' + metadata + b"}")
    assert info.value.ack_id == 4
    with pytest.raises(InvalidMessage):
        decode_client(b'{"type":"event","event":"e","data":1,"metadata":' + metadata + b"}")


def test_metadata_at_the_limits_is_valid():
    eight_kib = b"{" + b",".join(b'"k%d":"%s"' % (i, b"v" * (1024 - len(b"k%d" % i))) for i in range(8)) + b"}"
    msg = decode_client(b'{"type":"sendToGroup","group":"g","data":1,"metadata":' + eight_kib + b"}")
    assert sum(len(k) + len(v) for k, v in msg.metadata.items()) == 8 * 1024
    token = "!#$%&'*+-.^_`|~09azAZ"
    msg = decode_client(('{"type":"event","event":"e","data":1,"metadata":{"%s":"\\t caf\\u00e9"}}' % token).encode())
    assert msg.metadata == {token.lower(): "\t café"}


def test_ttl_seconds_on_send_to_group():
    assert decode_client(b'{"type":"sendToGroup","group":"g","data":1,"ttlSeconds":30}').ttl_seconds == 30
    assert decode_client(b'{"type":"sendToGroup","group":"g","data":1,"ttlSeconds":0}').ttl_seconds is None
    assert decode_client(b'{"type":"sendToGroup","group":"g","data":1,"ttlSeconds":null}').ttl_seconds is None
    for bad in (b"301", b"-1", b"1.5", b'"30"'):
        with pytest.raises(InvalidMessage, match="ttlSeconds"):
            decode_client(b'{"type":"sendToGroup","group":"g","ackId":1,"data":1,"ttlSeconds":' + bad + b"}")


def test_ping_and_sequence_ack_ignore_ack_ids_and_extras():
    assert decode_client(b'{"type":"ping","ackId":"x","foo":[1]}') == Ping()
    assert decode_client(b'{"ackId":3,"sequenceId":"17","type":"sequenceAck"}') == SequenceAck(17)


def test_duplicate_keys_last_wins():
    assert decode_client(b'{"type":"joinGroup","group":"a","group":"b"}') == JoinGroup("b")
    assert decode_client(b'{"type":"leaveGroup","ackId":"x","group":"a","ackId":2}') == (
        LeaveGroup("a", 2)
    )


def test_messages_are_frozen_and_hashable():
    msg = decode_client(b'{"type":"sendToGroup","group":"g","data":"x","dataType":"text"}')
    with pytest.raises(AttributeError):
        msg.group = "h"
    assert hash(msg) == hash(SendToGroup("g", Payload.text("x")))


# --------------------------------------------------------------------------- garbage in


def _only_protocol_errors(frame) -> None:
    try:
        result = decode_client(frame)
    except ProtocolError as exc:
        assert isinstance(exc, (InvalidMessage, MalformedFrame))
        assert isinstance(exc.message, str) and exc.message
    else:
        assert isinstance(
            result, (JoinGroup, LeaveGroup, SendToGroup, Event, SequenceAck, Ping, Unsupported)
        )


@FAST
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_protocol_errors(frame):
    _only_protocol_errors(frame)


@FAST
@given(st.text(max_size=200))
def test_random_text_raises_only_protocol_errors(frame):
    _only_protocol_errors(frame)
    _only_protocol_errors(frame.encode("utf-8", "surrogatepass"))


@FAST
@given(json_values)
def test_random_json_values_raise_only_protocol_errors(value):
    _only_protocol_errors(json.dumps(value))


@FAST
@given(near_miss_objects())
def test_near_misses_raise_only_protocol_errors_with_the_right_ack_id(obj):
    frame = json.dumps(obj)
    try:
        decode_client(frame)
    except InvalidMessage as exc:
        ack = obj.get("ackId")
        acked_types = {"joinGroup", "leaveGroup", "sendToGroup", "event"}
        if exc.ack_id is not None:
            assert obj["type"] in acked_types
            assert exc.ack_id == int(ack)
    except MalformedFrame:
        pytest.fail(f"{frame!r} has a string type, so it is not malformed")


@FAST
@given(st.binary(min_size=1, max_size=60), st.integers(0, 59))
def test_truncated_and_corrupted_valid_frames(junk, cut):
    frame = b'{"type":"sendToGroup","group":"g","ackId":1,"dataType":"text","data":"hello"}'
    _only_protocol_errors(frame[:cut])
    _only_protocol_errors(frame[:cut] + junk + frame[cut:])
