"""The protobuf codec's encoders against the protoc-generated oracle: every downstream message
parses to the right fields, the bytes equal protobuf's own serialization, and with_sequence_id
equals a full encode."""

from __future__ import annotations

import base64

import msgspec
import pytest
from google.protobuf import any_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric.core.payload import DataType, Payload
from fabric.webpubsub import codec_protobuf as cp
from specs import errors as spec_errors
from specs import webpubsub_protobuf as ps
from specs.webpubsub_json import group_name_problem

from .codec_protobuf_oracle import payloads

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
UINT64_MAX = 2**64 - 1

texts = st.text(max_size=30)
sequence_ids = st.integers(1, UINT64_MAX)


def parse(pb, frame: bytes):
    return pb.DownstreamMessage.FromString(frame)


def canonical(message) -> bytes:
    return message.SerializeToString(deterministic=True)


def expected_message_data(pb, payload: Payload):
    md = pb.MessageData()
    if payload.data_type is DataType.TEXT:
        md.text_data = payload.body.decode("utf-8", "replace")
    elif payload.data_type is DataType.JSON:
        md.json_data = payload.body.decode("utf-8", "replace")
    elif payload.data_type is DataType.BINARY:
        md.binary_data = payload.body
    else:
        md.protobuf_data.ParseFromString(payload.body)
    return md


# --------------------------------------------------------------------------- data messages


@FAST
@given(
    group=texts,
    payload_fill=payloads(),
    from_user=st.none() | texts,
    seq=st.none() | sequence_ids,
)
def test_group_message(pb, group, payload_fill, from_user, seq):
    payload = payload_fill[0]
    frame = cp.encode_group_message(group, payload, from_user, sequence_id=seq)
    down = parse(pb, frame)
    assert down.WhichOneof("message") == "data_message"
    dm = down.data_message
    assert (dm.__getattribute__("from"), dm.group, dm.HasField("group")) == ("group", group, True)
    assert dm.data.WhichOneof("data") == ps.DATA_FIELDS[payload.data_type]
    assert dm.data == expected_message_data(pb, payload)
    assert dm.HasField("sequence_id") == (seq is not None)
    assert dm.sequence_id == (seq or 0)
    expected = pb.DownstreamMessage()
    expected.data_message.group = group
    setattr(expected.data_message, "from", "group")
    expected.data_message.data.CopyFrom(expected_message_data(pb, payload))
    if seq is not None:
        expected.data_message.sequence_id = seq
    assert frame == canonical(expected)


@FAST
@given(payload_fill=payloads(), seq=st.none() | sequence_ids)
def test_server_message(pb, payload_fill, seq):
    payload = payload_fill[0]
    frame = cp.encode_server_message(payload, sequence_id=seq)
    dm = parse(pb, frame).data_message
    assert getattr(dm, "from") == "server"
    assert not dm.HasField("group")
    assert dm.data == expected_message_data(pb, payload)
    assert dm.HasField("sequence_id") == (seq is not None)
    expected = pb.DownstreamMessage()
    setattr(expected.data_message, "from", "server")
    expected.data_message.data.CopyFrom(expected_message_data(pb, payload))
    if seq is not None:
        expected.data_message.sequence_id = seq
    assert frame == canonical(expected)


def test_json_payload_travels_as_json_data(pb):
    """Decision protobuf.json-data: what the JS/C# clients parse as their json type."""
    frame = cp.encode_group_message("g", Payload.json(b'{"a":[1,2]}'), "u")
    md = parse(pb, frame).data_message.data
    assert md.WhichOneof("data") == "json_data"
    assert msgspec.json.decode(md.json_data) == {"a": [1, 2]}
    assert ps.DATA_FIELDS[DataType.JSON] == "json_data"


def test_protobuf_payload_is_the_any(pb):
    any_msg = any_pb2.Any(type_url="type.googleapis.com/a.B", value=b"\x08\x2a")
    frame = cp.encode_server_message(Payload(DataType.PROTOBUF, any_msg.SerializeToString()))
    assert parse(pb, frame).data_message.data.protobuf_data == any_msg


@pytest.mark.parametrize("size", [0, 1, 100, 127, 128, 129, 4000, 4096, 16_383, 16_384, 70_000])
@pytest.mark.parametrize(
    "seq", [1, 127, 128, 12345, 16_383, 16_384, 2**21 - 1, 2**21, 2**32, UINT64_MAX]
)
def test_with_sequence_id_equals_full_encode_at_length_boundaries(pb, size, seq):
    payload = Payload.binary(bytes(range(256)) * (size // 256) + bytes(size % 256))
    for plain, full in (
        (
            cp.encode_group_message("grp", payload, None),
            cp.encode_group_message("grp", payload, None, sequence_id=seq),
        ),
        (cp.encode_server_message(payload), cp.encode_server_message(payload, sequence_id=seq)),
    ):
        stamped = cp.with_sequence_id(plain, seq)
        assert stamped == full
        dm = parse(pb, stamped).data_message
        assert dm.sequence_id == seq and dm.data.binary_data == payload.body


@FAST
@given(group=texts, payload_fill=payloads(), seq=sequence_ids)
def test_with_sequence_id_equals_full_encode(group, payload_fill, seq):
    payload = payload_fill[0]
    plain = cp.encode_group_message(group, payload, "user")
    assert cp.with_sequence_id(plain, seq) == cp.encode_group_message(
        group, payload, "user", sequence_id=seq
    )
    plain = cp.encode_server_message(payload)
    assert cp.with_sequence_id(plain, seq) == cp.encode_server_message(payload, sequence_id=seq)


@pytest.mark.parametrize("seq", [0, -1, 2**64])
def test_sequence_id_range(seq):
    plain = cp.encode_server_message(Payload.text("x"))
    with pytest.raises(ValueError):
        cp.with_sequence_id(plain, seq)
    with pytest.raises(ValueError):
        cp.encode_server_message(Payload.text("x"), sequence_id=seq)


@pytest.mark.parametrize(
    "not_data",
    [
        b"",
        b"\x12",
        cp.encode_pong(),
        cp.encode_ack(1, True),
        b"\x12\x05abc",
        b"\x12\x01ab",
        b"\x12\xff",
    ],
)
def test_with_sequence_id_rejects_other_bytes(not_data):
    with pytest.raises(ValueError):
        cp.with_sequence_id(not_data, 1)


def test_bad_text_is_replaced_never_raised(pb):
    frame = cp.encode_group_message("g\ud800", Payload(DataType.TEXT, b"ok \xff\xfe"), None)
    dm = parse(pb, frame).data_message
    assert dm.group == "g\ufffd"
    assert dm.data.text_data == "ok \ufffd\ufffd"
    json_frame = cp.encode_server_message(Payload(DataType.JSON, b'"\xff"'))
    assert parse(pb, json_frame).data_message.data.json_data == '"\ufffd"'


# --------------------------------------------------------------------------- Microsoft's vectors

# Downstream frames from the C# protobuf client's unit tests (Azure/azure-webpubsub
# sdk/clients/protobuf-client/csharp/tests/WebPubSubProtobufProtocolHelperTests.cs).


def test_csharp_client_vectors():
    b = base64.b64decode
    assert cp.encode_group_message("groupName", Payload.text("xyz"), None, sequence_id=12345) == b(
        "EhwKBWdyb3VwEglncm91cE5hbWUaBQoDeHl6ILlg"
    )
    assert cp.encode_server_message(Payload.text("xyz"), sequence_id=12345) == b(
        "EhIKBnNlcnZlchoFCgN4eXoguWA="
    )
    assert cp.encode_connected("connection", "user") == b("GhQKEgoKY29ubmVjdGlvbhIEdXNlcg==")
    assert cp.encode_connected("connection", "user", "rec") == b(
        "GhkKFwoKY29ubmVjdGlvbhIEdXNlchoDcmVj"
    )
    assert cp.encode_disconnected("msg") == b("GgcSBRIDbXNn")
    assert cp.encode_ack(123, True) == b("CgQIexAB")


# --------------------------------------------------------------------------- acks


@FAST
@given(ack_id=st.integers(0, UINT64_MAX), name=st.none() | texts, message=st.none() | texts)
def test_failed_ack(pb, ack_id, name, message):
    frame = cp.encode_ack(ack_id, False, name, message)
    down = parse(pb, frame)
    assert down.WhichOneof("message") == "ack_message"
    ack = down.ack_message
    assert (ack.ack_id, ack.success, ack.HasField("error")) == (ack_id, False, True)
    expected_name = name if name is not None else "InternalServerError"
    assert ack.error.name == expected_name
    assert ack.error.message == (
        message if message is not None else spec_errors.default_ack_message(expected_name)
    )
    expected = pb.DownstreamMessage()
    expected.ack_message.ack_id = ack_id
    expected.ack_message.error.name = ack.error.name
    expected.ack_message.error.message = ack.error.message
    assert frame == canonical(expected)


@FAST
@given(ack_id=st.integers(0, UINT64_MAX))
def test_successful_ack(pb, ack_id):
    frame = cp.encode_ack(ack_id, True)
    ack = parse(pb, frame).ack_message
    assert (ack.ack_id, ack.success, ack.HasField("error")) == (ack_id, True, False)


def test_ack_argument_errors():
    with pytest.raises(ValueError):
        cp.encode_ack(1, True, "Forbidden")
    with pytest.raises(ValueError):
        cp.encode_ack(-1, True)
    with pytest.raises(ValueError):
        cp.encode_ack(2**64, False)


def test_duplicate_ack(pb):
    frame = cp.encode_ack(7, False, "Duplicate", spec_errors.duplicate_ack_message(7))
    error = parse(pb, frame).ack_message.error
    assert (error.name, error.message) == ("Duplicate", "Message with ack-id: 7 has been processed")


# --------------------------------------------------------------------------- system messages


@FAST
@given(connection_id=texts, user_id=st.none() | texts, token=st.none() | texts)
def test_connected(pb, connection_id, user_id, token):
    frame = cp.encode_connected(connection_id, user_id, token)
    system = parse(pb, frame).system_message
    assert system.WhichOneof("message") == "connected_message"
    c = system.connected_message
    assert (c.connection_id, c.user_id) == (connection_id, user_id or "")
    assert c.HasField("reconnection_token") == (token is not None)
    assert c.reconnection_token == (token or "")
    expected = pb.DownstreamMessage()
    expected.system_message.connected_message.connection_id = connection_id
    expected.system_message.connected_message.user_id = user_id or ""
    if token is not None:
        expected.system_message.connected_message.reconnection_token = token
    assert frame == canonical(expected)


@FAST
@given(reason=texts)
def test_disconnected_reason_is_field_2(pb, reason):
    frame = cp.encode_disconnected(reason)
    system = parse(pb, frame).system_message
    assert system.WhichOneof("message") == "disconnected_message"
    assert system.disconnected_message.reason == reason
    if reason:
        assert b"\x12" + bytes((len(reason.encode()),)) + reason.encode() in frame
    expected = pb.DownstreamMessage()
    expected.system_message.disconnected_message.reason = reason
    assert frame == canonical(expected)


def test_pong(pb):
    down = parse(pb, cp.encode_pong())
    assert down.WhichOneof("message") == "pong_message"
    pong = pb.DownstreamMessage(pong_message=pb.DownstreamMessage.PongMessage())
    assert cp.encode_pong() == canonical(pong)


# --------------------------------------------------------------------------- unsupported answers


@FAST
@given(invocation_id=texts, name=texts, message=texts)
def test_invoke_response_error(pb, invocation_id, name, message):
    frame = cp.encode_invoke_response_error(invocation_id, name, message)
    down = parse(pb, frame)
    assert down.WhichOneof("message") == "invoke_response_message"
    r = down.invoke_response_message
    assert (r.invocation_id, r.success, r.HasField("error")) == (invocation_id, False, True)
    assert (r.error.name, r.error.message) == (name, message)


@FAST
@given(stream_id=texts, name=st.none() | texts, message=st.none() | texts)
def test_stream_closed(pb, stream_id, name, message):
    frame = cp.encode_stream_closed(stream_id, name, message)
    down = parse(pb, frame)
    assert down.WhichOneof("message") == "stream_closed_message"
    sc = down.stream_closed_message
    assert sc.stream_id == stream_id
    assert sc.HasField("error") == (name is not None)
    if name is not None:
        assert sc.error.name == name
        assert sc.error.message == (
            message if message is not None else spec_errors.default_ack_message(name)
        )


# --------------------------------------------------------------------------- both directions


@FAST
@given(group=texts.filter(lambda g: group_name_problem(g) is None), payload_fill=payloads())
def test_published_payload_reaches_a_protobuf_subscriber_unchanged(pb, group, payload_fill):
    """A protobuf publisher's payload, decoded and encoded again for a subscriber, is what a
    protobuf client reads back (the Any included)."""
    payload, fill = payload_fill
    U = pb.UpstreamMessage
    up = U(send_to_group_message=U.SendToGroupMessage(group=group))
    fill(up.send_to_group_message.data)
    message = cp.decode_client(up.SerializeToString())
    down = parse(pb, cp.encode_group_message(message.group, message.payload, None))
    if payload.data_type is DataType.JSON:
        sent = up.send_to_group_message.data.json_data
        assert msgspec.json.decode(down.data_message.data.json_data) == msgspec.json.decode(sent)
    else:
        assert down.data_message.data == up.send_to_group_message.data


# --------------------------------------------------------------------------- metadata, streams, invocations

metadata_maps = st.dictionaries(st.text("abc-_.", min_size=1, max_size=6), texts, max_size=3)
stream_infos = st.builds(
    cp.StreamInfo, texts, sequence_ids, st.booleans(), st.none() | texts, st.none() | texts, st.none() | texts,
)


@FAST
@given(group=texts, payload_fill=payloads(), metadata=metadata_maps, stream=st.none() | stream_infos,
       seq=sequence_ids)
def test_group_message_with_metadata_and_stream(pb, group, payload_fill, metadata, stream, seq):
    payload = payload_fill[0]
    plain = cp.encode_group_message(group, payload, None, metadata=metadata, stream=stream)
    stamped = cp.with_sequence_id(plain, seq)
    full = cp.encode_group_message(group, payload, None, metadata=metadata, stream=stream, sequence_id=seq)
    assert stamped == full  # the id goes between data and metadata/stream: one canonical layout
    for frame, has_seq in ((plain, False), (stamped, True)):
        dm = parse(pb, frame).data_message
        assert dict(dm.metadata) == metadata
        assert dm.data == expected_message_data(pb, payload)
        assert dm.HasField("sequence_id") is has_seq and (not has_seq or dm.sequence_id == seq)
        assert dm.HasField("stream") is (stream is not None)
        if stream is not None:
            s = dm.stream
            assert (s.stream_id, s.stream_sequence_id) == (stream.stream_id, stream.sequence_id)
            assert s.end_of_stream is stream.end_of_stream and s.HasField("end_of_stream") is stream.end_of_stream
            assert s.HasField("error") is (stream.error_name is not None)
            if stream.error_name is not None:
                assert (s.error.name, s.error.message, s.error.user_error_code) == (
                    stream.error_name, stream.error_message or "", stream.user_error_code or "")
    # without metadata (whose entry order protobuf does not fix) the bytes are protobuf's own
    if not metadata:
        assert canonical(parse(pb, stamped)) == stamped


@FAST
@given(payload_fill=payloads(), metadata=metadata_maps, seq=sequence_ids)
def test_server_message_with_metadata(pb, payload_fill, metadata, seq):
    frame = cp.encode_server_message(payload_fill[0], metadata=metadata, sequence_id=seq)
    dm = parse(pb, frame).data_message
    assert dict(dm.metadata) == metadata and dm.sequence_id == seq
    assert cp.with_sequence_id(cp.encode_server_message(payload_fill[0], metadata=metadata), seq) == frame


@FAST
@given(invocation_id=texts, payload_fill=st.none() | payloads(), metadata=metadata_maps)
def test_invoke_response(pb, invocation_id, payload_fill, metadata):
    payload = payload_fill[0] if payload_fill else None
    r = parse(pb, cp.encode_invoke_response(invocation_id, payload, metadata)).invoke_response_message
    assert r.invocation_id == invocation_id and r.success is True and not r.HasField("error")
    assert r.HasField("data") is (payload is not None)
    if payload is not None:
        assert r.data == expected_message_data(pb, payload)
    assert dict(r.metadata) == metadata


@FAST
@given(stream_id=texts, expected=sequence_ids, name=texts, message=texts)
def test_stream_ack_and_nack(pb, stream_id, expected, name, message):
    frame = cp.encode_stream_ack(stream_id, expected)
    ack = parse(pb, frame).stream_ack_message
    assert (ack.stream_id, ack.expected_sequence_id) == (stream_id, expected)
    assert canonical(parse(pb, frame)) == frame
    frame = cp.encode_stream_nack(stream_id, expected, name, message)
    nack = parse(pb, frame).stream_nack_message
    assert (nack.stream_id, nack.expected_sequence_id, nack.name, nack.message) == (stream_id, expected, name, message)
    assert canonical(parse(pb, frame)) == frame
