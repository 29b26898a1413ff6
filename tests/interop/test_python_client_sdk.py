"""Microsoft's Python client SDK (azure-messaging-webpubsubclient) against `fabric serve`.

Every test runs with both JSON subprotocols (`WebPubSubProtocolType.JSON`, i.e.
`WebPubSubJsonProtocol`, and `JSON_RELIABLE`, i.e. `WebPubSubJsonReliableProtocol`, the SDK's
default). The clients come from the `sdk_clients` fixture (short start/ack timeouts, no
retries: see `interop_support.SdkClient`). Negative checks ("X is not delivered") use a fence:
a later message from the same publisher to the same group, which the ordering contract says
arrives after X would have.
"""

from __future__ import annotations

import pytest
from azure.messaging.webpubsubclient.models import SendMessageError, WebPubSubDataType, WebPubSubProtocolType

from interop_support import unique

JSON = WebPubSubProtocolType.JSON
RELIABLE = WebPubSubProtocolType.JSON_RELIABLE

PAYLOADS = [
    (WebPubSubDataType.TEXT, "héllo wörld ✓"),
    (WebPubSubDataType.TEXT, ""),
    (WebPubSubDataType.JSON, {"n": 1, "s": "x", "nested": [1, 2.5, {"k": None, "t": True}]}),
    (WebPubSubDataType.JSON, "a json string"),
    (WebPubSubDataType.JSON, [1, "two", 3]),
    (WebPubSubDataType.JSON, 42),
    (WebPubSubDataType.BINARY, b"\x00\x01\xfe\xff binary \x80"),
]


@pytest.fixture(params=[pytest.param(JSON, id="json"), pytest.param(RELIABLE, id="json_reliable")])
def protocol(request: pytest.FixtureRequest) -> WebPubSubProtocolType:
    return request.param


def _content(data_type: WebPubSubDataType, value: object) -> object:
    return memoryview(value) if data_type == WebPubSubDataType.BINARY else value  # the SDK wants memoryview


def test_open_reports_connection_id(sdk_clients, protocol):
    hub = unique("hub")
    user = unique("alice")
    first = sdk_clients(hub, user_id=user, protocol=protocol)
    second = sdk_clients(hub, protocol=protocol)

    assert first.client.is_connected()
    assert isinstance(first.connection_id, str) and first.connection_id
    assert first.connected_args.user_id == user
    assert second.connection_id != first.connection_id


def test_join_group_is_acked(sdk_clients, protocol):
    client = sdk_clients(unique("hub"), protocol=protocol)
    client.join(unique("g"))  # raises SendMessageError unless acked with success
    client.join(unique("g"))
    assert client.client.is_connected()


@pytest.mark.parametrize(
    "sender_protocol,receiver_protocol",
    [(JSON, JSON), (RELIABLE, RELIABLE), (JSON, RELIABLE), (RELIABLE, JSON)],
    ids=["json-to-json", "reliable-to-reliable", "json-to-reliable", "reliable-to-json"],
)
def test_group_messages_keep_data_type_and_order(sdk_clients, sender_protocol, receiver_protocol):
    hub, group = unique("hub"), unique("g")
    sender_id = unique("sender")
    sender = sdk_clients(hub, user_id=sender_id, protocol=sender_protocol)
    receiver = sdk_clients(hub, protocol=receiver_protocol)
    receiver.join(group)

    for data_type, value in PAYLOADS:
        sender.send_to_group(group, _content(data_type, value), data_type)  # acked
    fence = "end-of-payloads"
    sender.send_to_group(group, fence, WebPubSubDataType.TEXT)

    got = receiver.collect_until(lambda m: m.data == fence)
    expected = [(dt.value, v) for dt, v in PAYLOADS] + [("text", fence)]
    assert [(m.data_type, m.data) for m in got] == expected
    assert all(m.kind == "group" and m.group == group and m.from_user_id == sender_id for m in got), got
    if receiver_protocol == RELIABLE:
        # Reliable subprotocol: per-connection sequenceId, from 1, +1 per data message.
        assert [m.sequence_id for m in got] == list(range(1, len(got) + 1))
    else:
        assert all(not m.sequence_id for m in got), got


def test_sender_in_group_gets_its_own_message_unless_no_echo(sdk_clients, protocol):
    hub, group = unique("hub"), unique("g")
    sender = sdk_clients(hub, protocol=protocol)
    other = sdk_clients(hub, protocol=protocol)
    sender.join(group)
    other.join(group)

    sender.send_to_group(group, "not-for-me", WebPubSubDataType.TEXT, no_echo=True)
    sender.send_to_group(group, "echoed", WebPubSubDataType.TEXT)

    assert [m.data for m in sender.collect_until(lambda m: m.data == "echoed")] == ["echoed"]
    assert [m.data for m in other.collect_until(lambda m: m.data == "echoed")] == ["not-for-me", "echoed"]


def test_leave_group_stops_delivery(sdk_clients, protocol):
    hub, group = unique("hub"), unique("g")
    sender = sdk_clients(hub, protocol=protocol)
    member = sdk_clients(hub, protocol=protocol)
    member.join(group)
    sender.send_to_group(group, "while-member", WebPubSubDataType.TEXT)
    assert [m.data for m in member.collect_until(lambda m: m.data == "while-member")] == ["while-member"]

    member.leave(group)  # acked
    sender.send_to_group(group, "after-leave", WebPubSubDataType.TEXT)  # acked: fanned out or not
    member.join(group)
    sender.send_to_group(group, "after-rejoin", WebPubSubDataType.TEXT)

    assert [m.data for m in member.collect_until(lambda m: m.data == "after-rejoin")] == ["after-rejoin"]


def test_join_from_token_groups_claim(sdk_clients, protocol):
    """`get_client_access_token(groups=[...])` joins on connect, before `connected` is sent."""
    hub, group = unique("hub"), unique("g")
    member = sdk_clients(hub, roles=(), groups=[group], protocol=protocol)
    sender = sdk_clients(hub, protocol=protocol)
    sender.send_to_group(group, {"via": "token"}, WebPubSubDataType.JSON)
    got = member.collect_until(lambda m: m.data == {"via": "token"})
    assert [(m.group, m.data_type) for m in got] == [(group, "json")]


def test_send_event_without_event_handler_fails_with_ack_error(sdk_clients, protocol):
    hub, group = unique("hub"), unique("g")
    client = sdk_clients(hub, protocol=protocol)

    with pytest.raises(SendMessageError) as excinfo:
        client.send_event("no_handler_here", "payload", WebPubSubDataType.TEXT)
    detail = excinfo.value.error_detail
    assert detail is not None and isinstance(detail.name, str) and detail.name, vars(excinfo.value)
    assert detail.name != "Duplicate"  # the SDK would have treated Duplicate as success
    print(f"send_event without a handler: ack error {detail.name!r}: {detail.message!r}")

    # The connection is still usable.
    client.join(group)
    client.send_to_group(group, "still here", WebPubSubDataType.TEXT)
    assert [m.data for m in client.collect_until(lambda m: m.data == "still here")] == ["still here"]


def test_client_without_roles_is_forbidden(sdk_clients, protocol):
    hub, group = unique("hub"), unique("g")
    member = sdk_clients(hub, protocol=protocol)
    member.join(group)
    nobody = sdk_clients(hub, roles=(), protocol=protocol)

    with pytest.raises(SendMessageError) as joined:
        nobody.join(group)
    assert joined.value.error_detail.name == "Forbidden", vars(joined.value.error_detail)
    assert joined.value.error_detail.message

    with pytest.raises(SendMessageError) as sent:
        nobody.send_to_group(group, "forbidden", WebPubSubDataType.TEXT)
    assert sent.value.error_detail.name == "Forbidden", vars(sent.value.error_detail)

    # Nothing leaked into the group, and the forbidden client is still connected.
    member.send_to_group(group, "fence", WebPubSubDataType.TEXT)
    assert [m.data for m in member.collect_until(lambda m: m.data == "fence")] == ["fence"]
    assert nobody.client.is_connected()


def test_group_scoped_roles(sdk_clients, protocol):
    """`webpubsub.joinLeaveGroup.<g>` / `webpubsub.sendToGroup.<g>` allow that group only."""
    hub, allowed, other = unique("hub"), unique("g"), unique("g")
    client = sdk_clients(
        hub, roles=(f"webpubsub.joinLeaveGroup.{allowed}", f"webpubsub.sendToGroup.{allowed}"), protocol=protocol
    )
    client.join(allowed)
    client.send_to_group(allowed, "ok", WebPubSubDataType.TEXT)
    assert [m.data for m in client.collect_until(lambda m: m.data == "ok")] == ["ok"]
    for action in (
        lambda: client.join(other),
        lambda: client.send_to_group(other, "no", WebPubSubDataType.TEXT),
    ):
        with pytest.raises(SendMessageError) as excinfo:
            action()
        assert excinfo.value.error_detail.name == "Forbidden"


def test_send_event_with_a_handler_gets_server_messages(sdk_clients, echo_server, protocol):
    """The embedded echo server's handler: `echo` replies to the sender (a `from: server`
    message), `broadcast` sends to the hub, `fail` makes the ack an InternalServerError."""
    hub = echo_server.ECHO_HUB
    client = sdk_clients(hub, protocol=protocol, server=echo_server)
    other = sdk_clients(hub, protocol=protocol, server=echo_server)

    for data_type, value in PAYLOADS:
        client.send_event("echo", _content(data_type, value), data_type)  # acked with success
    fence = {"fence": unique("f")}
    client.send_event("echo", fence, WebPubSubDataType.JSON)
    got = client.collect_until(lambda m: m.data == fence)
    assert [(m.kind, m.data_type, m.data) for m in got] == [
        *[("server", dt.value, v) for dt, v in PAYLOADS], ("server", "json", fence)]
    if protocol == RELIABLE:
        assert [m.sequence_id for m in got] == list(range(1, len(got) + 1))

    client.send_event("broadcast", "to everyone", WebPubSubDataType.TEXT)
    for member in (client, other):
        assert [(m.kind, m.data) for m in member.collect_until(lambda m: m.data == "to everyone")] == [
            ("server", "to everyone")]

    with pytest.raises(SendMessageError) as excinfo:
        client.send_event("fail", "x", WebPubSubDataType.TEXT)
    assert excinfo.value.error_detail.name == "InternalServerError"
    client.send_event("echo", "after the failure", WebPubSubDataType.TEXT)
    assert [m.data for m in client.collect_until(lambda m: m.data == "after the failure")] == ["after the failure"]
