"""The codec against Microsoft's Python client SDK (azure-messaging-webpubsubclient) in-process:
frames its protocol writer produces decode to what it meant, and frames we encode parse with
its reader. No sockets; the SDK's own static protocol methods are the oracle."""

from __future__ import annotations

import json

from azure.messaging.webpubsubclient.models import WebPubSubDataType
from azure.messaging.webpubsubclient.models import _models as sdk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric.core.payload import DataType, Payload
from fabric.webpubsub import codec_json as cj
from specs import webpubsub_json as spec

from .codec_strategies import groups, json_values

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
write = sdk.WebPubSubClientProtocol.write_message
parse = sdk.WebPubSubClientProtocol.parse_messages
ack_ids = st.none() | st.integers(min_value=1, max_value=2**63)
events = st.text(min_size=1, max_size=20).filter(spec.is_valid_event_name)

sdk_payloads = st.one_of(
    st.text(max_size=30).map(lambda s: (WebPubSubDataType.TEXT, s, Payload.text(s))),
    json_values.filter(lambda v: v is not None).map(
        lambda v: (WebPubSubDataType.JSON, v, Payload.json(json.dumps(v).encode()))
    ),
    st.binary(max_size=30).map(
        lambda b: (WebPubSubDataType.BINARY, memoryview(b), Payload.binary(b))
    ),
    st.binary(max_size=30).map(
        lambda b: (WebPubSubDataType.PROTOBUF, memoryview(b), Payload(DataType.PROTOBUF, b))
    ),
)


@FAST
@given(groups, ack_ids)
def test_sdk_join_and_leave(group, ack_id):
    assert cj.decode_client(write(sdk.JoinGroupMessage(group, ack_id))) == cj.JoinGroup(group, ack_id)
    assert cj.decode_client(write(sdk.LeaveGroupMessage(group, ack_id))) == (
        cj.LeaveGroup(group, ack_id)
    )


@FAST
@given(groups, ack_ids, st.booleans(), sdk_payloads)
def test_sdk_send_to_group(group, ack_id, no_echo, p):
    data_type, data, payload = p
    frame = write(sdk.SendToGroupMessage(data_type, data, group, no_echo, ack_id))
    msg = cj.decode_client(frame)
    assert (msg.group, msg.ack_id, msg.no_echo) == (group, ack_id, no_echo)
    if payload.data_type is DataType.JSON:  # same value; the SDK's spacing is its own
        assert json.loads(msg.payload.body) == json.loads(payload.body)
    else:
        assert msg.payload == payload


@FAST
@given(events, ack_ids, sdk_payloads)
def test_sdk_send_event(event, ack_id, p):
    data_type, data, payload = p
    msg = cj.decode_client(write(sdk.SendEventMessage(data_type, data, event, ack_id)))
    assert (msg.event, msg.ack_id, msg.payload.data_type) == (event, ack_id, payload.data_type)


@FAST
@given(st.integers(min_value=0, max_value=2**63))
def test_sdk_sequence_ack(sequence_id):
    assert cj.decode_client(write(sdk.SequenceAckMessage(sequence_id))) == (
        cj.SequenceAck(sequence_id)
    )


def _sdk_data(message) -> object:
    data = message.data
    return bytes(data) if isinstance(data, memoryview) else data


@FAST
@given(st.text(max_size=20), sdk_payloads, st.none() | st.text(max_size=10), st.integers(1, 2**63))
def test_our_messages_parse_in_the_sdk(group, p, user, sequence_id):
    _, _, payload = p
    expected = (
        payload.body.decode() if payload.data_type is DataType.TEXT
        else json.loads(payload.body) if payload.data_type is DataType.JSON
        else payload.body
    )  # fmt: skip
    frame = cj.encode_group_message(group, payload, user)
    got = parse(cj.with_sequence_id(frame, sequence_id).decode())
    assert (got.kind, got.group, got.from_user_id, got.sequence_id) == (
        "groupData", group, user, sequence_id,
    )  # fmt: skip
    assert _sdk_data(got) == expected and got.data_type == payload.data_type.value
    got = parse(cj.encode_server_message(payload).decode())
    assert got.kind == "serverData" and _sdk_data(got) == expected and got.sequence_id is None


def test_system_and_ack_messages_parse_in_the_sdk():
    got = parse(cj.encode_connected("c1", None, "tok").decode())
    assert (got.kind, got.connection_id, got.user_id, got.reconnection_token) == (
        "connected", "c1", None, "tok",
    )  # fmt: skip
    got = parse(cj.encode_disconnected("bye").decode())
    assert (got.kind, got.message) == ("disconnected", "bye")
    got = parse(cj.encode_ack(7, True).decode())
    assert (got.ack_id, got.success, got.error) == (7, True, None)
    got = parse(cj.encode_ack(8, False, "Duplicate").decode())
    assert (got.ack_id, got.success, got.error.name) == (8, False, "Duplicate")
    assert got.error.message
