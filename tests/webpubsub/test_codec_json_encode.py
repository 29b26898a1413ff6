"""Encoders: exact bytes, catalogue key orders, data encodings, with_sequence_id."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric.core.payload import DataType, Payload
from fabric.webpubsub import codec_json as cj
from specs import errors as spec_errors
from specs import webpubsub_json as spec

from .codec_strategies import json_values

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

any_text = st.text(max_size=30)
# Strings as they may reach an encoder from outside (a JWT sub decoded by PyJWT can hold a
# lone surrogate), so the encoders must survive them.
hostile_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=20) | st.sampled_from(
    ["\ud800", "a\udfffb", "\x00", "\u2028", '"\\']
)
ids = st.integers(min_value=0, max_value=spec.UINT64_MAX)
sequence_ids = st.integers(min_value=1, max_value=spec.UINT64_MAX)
json_bodies = json_values.filter(lambda v: v is not None).map(
    lambda v: json.dumps(v, separators=(",", ":")).encode()
)
payloads = st.one_of(
    st.text(max_size=30).map(Payload.text),
    json_bodies.map(Payload.json),
    st.binary(max_size=30).map(Payload.binary),
    st.binary(max_size=30).map(lambda b: Payload(DataType.PROTOBUF, b)),
)


def parse_pairs(frame: bytes) -> list[tuple[str, object]]:
    """The top-level (key, value) pairs in wire order (nested objects as pair lists too)."""
    assert isinstance(frame, bytes)
    return json.loads(frame.decode("utf-8"), object_pairs_hook=lambda p: p)


def check_against_catalogue(frame: bytes, name: str) -> dict:
    """Check a frame against ``SERVER_MESSAGES[name]``; return its parsed values."""
    m = spec.SERVER_MESSAGES[name]
    pairs = parse_pairs(frame)
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), keys
    # the catalogue's keys, in its order, with only optional ones missing
    assert keys == [k for k in m.keys if k in keys], (keys, m.keys)
    assert set(m.required_keys) <= set(keys), (keys, m.required_keys)
    values = json.loads(frame)
    assert list(values) == keys
    for k, v in m.constants.items():
        assert values[k] == v
    for k, v in values.items():
        if v is None:
            assert k in m.nullable, f"{k} must never be null"
    for k, nested_keys in m.nested.items():
        if k in values:
            assert isinstance(values[k], dict), f"{k} must be an object"
            got = [nk for nk, _ in dict(pairs)[k]]
            assert got == [nk for nk in nested_keys if nk in got], (got, nested_keys)
            if k == "stream":
                assert {"streamId", "streamSequenceId"} <= set(got)
            else:
                assert got == list(nested_keys)
                assert all(isinstance(v, str) for v in values[k].values())
    if "metadata" in values:
        assert values["metadata"] and all(isinstance(v, str) for v in values["metadata"].values())
    return values


def decode_data(values: dict) -> object:
    """What a client recovers from ``data``: str, a JSON value, or bytes."""
    dt = DataType(values["dataType"])
    data = values["data"]
    if dt is DataType.TEXT:
        assert isinstance(data, str)
        return data
    if dt is DataType.JSON:
        return data
    return base64.b64decode(data, validate=True)


def sent_data(payload: Payload) -> object:
    if payload.data_type is DataType.TEXT:
        return payload.body.decode()
    if payload.data_type is DataType.JSON:
        return json.loads(payload.body)
    return payload.body


# --------------------------------------------------------------------------- exact bytes


def test_microsoft_integration_test_server_message_byte_for_byte():
    assert cj.encode_server_message(Payload.text("Hello")) == (
        b'{"type":"message","from":"server","dataType":"text","data":"Hello"}'
    )


def test_exact_shapes_from_the_reference():
    assert cj.encode_ack(1, True) == b'{"type":"ack","ackId":1,"success":true}'
    assert cj.encode_ack(1, False, "Forbidden", "...") == (
        b'{"type":"ack","ackId":1,"success":false,"error":{"name":"Forbidden","message":"..."}}'
    )
    assert cj.encode_connected("abc", "u1") == (
        b'{"type":"system","event":"connected","userId":"u1","connectionId":"abc"}'
    )
    assert cj.encode_connected("abc", None, "tok") == (
        b'{"type":"system","event":"connected","userId":null,"connectionId":"abc",'
        b'"reconnectionToken":"tok"}'
    )
    assert cj.encode_disconnected("reason") == (
        b'{"type":"system","event":"disconnected","message":"reason"}'
    )
    assert cj.encode_pong() == b'{"type":"pong"}'
    assert cj.encode_group_message("g", Payload.json(b'{"a": 1}'), "u") == (
        b'{"type":"message","from":"group","group":"g","dataType":"json","data":{"a": 1},'
        b'"fromUserId":"u"}'
    )
    assert cj.encode_group_message("g", Payload.binary(b"\x00\x01"), None) == (
        b'{"type":"message","from":"group","group":"g","dataType":"binary","data":"AAE="}'
    )
    assert cj.encode_invoke_response_error("i", "BadRequest", "no") == (
        b'{"type":"invokeResponse","invocationId":"i","success":false,'
        b'"error":{"name":"BadRequest","message":"no"}}'
    )
    assert cj.encode_stream_closed("s") == b'{"type":"streamClosed","streamId":"s"}'


def test_failed_ack_always_carries_name_and_message():
    values = check_against_catalogue(cj.encode_ack(3, False), "ack")
    assert values["error"]["name"] == "InternalServerError" and values["error"]["message"]
    values = check_against_catalogue(cj.encode_ack(3, False, "Duplicate"), "ack")
    assert values["error"]["message"]
    # the server passes enum members
    frame = cj.encode_ack(4, False, spec_errors.AckErrorName.FORBIDDEN, "no")
    assert b'"name":"Forbidden"' in frame


def test_encode_ack_rejects_programming_errors():
    with pytest.raises(ValueError):
        cj.encode_ack(1, True, "Forbidden")
    with pytest.raises(ValueError):
        cj.encode_ack(-1, True)


# --------------------------------------------------------------------------- catalogue orders


@FAST
@given(ids, st.booleans(), st.none() | any_text, st.none() | any_text)
def test_ack_matches_catalogue(ack_id, success, name, message):
    if success:
        frame = cj.encode_ack(ack_id, True)
    else:
        frame = cj.encode_ack(ack_id, False, name, message)
    values = check_against_catalogue(frame, "ack")
    assert values["ackId"] == ack_id and values["success"] is success
    assert ("error" in values) is (not success)


@FAST
@given(any_text, payloads, st.none() | any_text)
def test_group_message_matches_catalogue_and_round_trips_data(group, payload, from_user_id):
    values = check_against_catalogue(cj.encode_group_message(group, payload, from_user_id), "message.group")
    assert values["group"] == group
    assert values.get("fromUserId") == from_user_id
    assert values["dataType"] == payload.data_type.value
    assert decode_data(values) == sent_data(payload)


@FAST
@given(payloads)
def test_server_message_matches_catalogue(payload):
    values = check_against_catalogue(cj.encode_server_message(payload), "message.server")
    assert decode_data(values) == sent_data(payload)


@FAST
@given(payloads)
def test_json_data_is_written_verbatim(payload):
    frame = cj.encode_server_message(payload)
    if payload.data_type is DataType.JSON:
        assert b'"data":' + payload.body + b"}" in frame


@FAST
@given(any_text, st.none() | any_text, st.none() | any_text)
def test_connected_matches_catalogue(connection_id, user_id, token):
    values = check_against_catalogue(cj.encode_connected(connection_id, user_id, token), "system.connected")
    assert values["connectionId"] == connection_id and values["userId"] == user_id
    assert values.get("reconnectionToken") == token


@FAST
@given(any_text)
def test_disconnected_pong_invoke_stream_match_catalogue(text):
    check_against_catalogue(cj.encode_disconnected(text), "system.disconnected")
    check_against_catalogue(cj.encode_pong(), "pong")
    check_against_catalogue(cj.encode_invoke_response_error(text, "BadRequest", text), "invokeResponse.error")
    check_against_catalogue(cj.encode_stream_closed(text, "BadRequest"), "streamClosed")
    check_against_catalogue(cj.encode_stream_closed(text), "streamClosed")


metadata_maps = st.dictionaries(st.text("abc-_.", min_size=1, max_size=6), any_text, max_size=3)
stream_infos = st.builds(
    cj.StreamInfo, any_text, sequence_ids, st.booleans(), st.none() | any_text, st.none() | any_text,
    st.none() | any_text,
)


@FAST
@given(any_text, payloads, st.none() | any_text, metadata_maps, st.none() | stream_infos, st.none() | sequence_ids)
def test_group_message_with_metadata_and_stream(group, payload, from_user_id, metadata, stream, sequence_id):
    frame = cj.encode_group_message(group, payload, from_user_id, metadata=metadata, stream=stream,
                                    sequence_id=sequence_id)
    values = check_against_catalogue(frame, "message.group")
    assert values.get("metadata", {}) == metadata
    if stream is None:
        assert "stream" not in values
    else:
        s = values["stream"]
        assert s["streamId"] == stream.stream_id and s["streamSequenceId"] == stream.sequence_id
        assert s.get("endOfStream", False) is stream.end_of_stream
        if stream.error_name is None:
            assert "error" not in s
        else:
            assert s["error"]["name"] == stream.error_name
            assert s["error"].get("message") == stream.error_message
            assert s["error"].get("userErrorCode") == stream.user_error_code
    assert values.get("sequenceId") == sequence_id
    assert decode_data(values) == sent_data(payload)


@FAST
@given(payloads, metadata_maps)
def test_server_message_with_metadata(payload, metadata):
    values = check_against_catalogue(cj.encode_server_message(payload, metadata=metadata), "message.server")
    assert values.get("metadata", {}) == metadata


@FAST
@given(any_text, st.none() | payloads, metadata_maps)
def test_invoke_response_success_matches_catalogue(invocation_id, payload, metadata):
    values = check_against_catalogue(cj.encode_invoke_response(invocation_id, payload, metadata),
                                     "invokeResponse.success")
    assert values["invocationId"] == invocation_id and values["success"] is True
    assert ("data" in values) is ("dataType" in values) is (payload is not None)
    if payload is not None:
        assert decode_data(values) == sent_data(payload)
    assert values.get("metadata", {}) == metadata


@FAST
@given(any_text, sequence_ids, any_text, any_text)
def test_stream_ack_and_nack_match_catalogue(stream_id, expected, name, message):
    values = check_against_catalogue(cj.encode_stream_ack(stream_id, expected), "streamAck")
    assert values == {"type": "streamAck", "streamId": stream_id, "expectedSequenceId": expected}
    values = check_against_catalogue(cj.encode_stream_nack(stream_id, expected, name, message), "streamNack")
    assert values == {"type": "streamNack", "streamId": stream_id, "expectedSequenceId": expected,
                      "name": name, "message": message}


def test_stream_messages_exact_bytes():
    assert cj.encode_stream_ack("s", 1) == b'{"type":"streamAck","streamId":"s","expectedSequenceId":1}'
    assert cj.encode_stream_closed("s", "IdleTimeout", "m") == (
        b'{"type":"streamClosed","streamId":"s","error":{"name":"IdleTimeout","message":"m"}}'
    )
    terminal = cj.StreamInfo("s", 4, True, "UserError", None, "E1")
    assert cj.encode_group_message("g", Payload.text(""), "u", stream=terminal) == (
        b'{"type":"message","from":"group","group":"g","dataType":"text","data":"","fromUserId":"u",'
        b'"stream":{"streamId":"s","streamSequenceId":4,"endOfStream":true,"error":{"name":"UserError",'
        b'"userErrorCode":"E1"}}}'
    )
    assert cj.encode_invoke_response("i") == b'{"type":"invokeResponse","invocationId":"i","success":true}'
    assert cj.encode_server_message(Payload.text("Hello"), metadata={"k": "v"}) == (
        b'{"type":"message","from":"server","dataType":"text","data":"Hello","metadata":{"k":"v"}}'
    )


def test_every_catalogued_server_message_has_an_encoder_checked_above():
    checked = {
        "ack", "message.group", "message.server", "system.connected", "system.disconnected",
        "pong", "invokeResponse.error", "invokeResponse.success", "streamAck", "streamNack", "streamClosed",
    }  # fmt: skip
    assert checked == set(spec.SERVER_MESSAGES)


# --------------------------------------------------------------------------- hostile data


@FAST
@given(hostile_text, hostile_text, hostile_text)
def test_encoders_never_raise_on_strings(a, b, c):
    for frame in (
        cj.encode_connected(a, b, c),
        cj.encode_disconnected(a),
        cj.encode_group_message(a, Payload.text(b.encode("utf-8", "replace").decode()), c),
        cj.encode_ack(1, False, a, b),
        cj.encode_invoke_response_error(a, b, c),
    ):
        json.loads(frame.decode("utf-8"))  # valid UTF-8 JSON whatever came in


@FAST
@given(st.binary(max_size=40))
def test_text_payload_with_invalid_utf8_is_replaced_not_raised(body):
    frame = cj.encode_server_message(Payload(DataType.TEXT, body))
    assert json.loads(frame)["data"] == body.decode("utf-8", "replace")


# --------------------------------------------------------------------------- sequence ids


@FAST
@given(any_text, payloads, st.none() | any_text, sequence_ids)
def test_with_sequence_id_equals_a_full_encode(group, payload, user, sequence_id):
    plain = cj.encode_group_message(group, payload, user)
    stamped = cj.with_sequence_id(plain, sequence_id)
    assert stamped == cj.encode_group_message(group, payload, user, sequence_id=sequence_id)
    values = check_against_catalogue(stamped, "message.group")
    assert values["sequenceId"] == sequence_id
    assert list(values)[-1] == "sequenceId"

    plain = cj.encode_server_message(payload)
    stamped = cj.with_sequence_id(plain, sequence_id)
    assert stamped == cj.encode_server_message(payload, sequence_id=sequence_id)
    assert check_against_catalogue(stamped, "message.server")["sequenceId"] == sequence_id


def test_with_sequence_id_rejects_bad_input():
    frame = cj.encode_server_message(Payload.text("x"))
    for bad in (0, -1, spec.UINT64_MAX + 1):
        with pytest.raises(ValueError):
            cj.with_sequence_id(frame, bad)
    with pytest.raises(ValueError):
        cj.with_sequence_id(b"", 1)
