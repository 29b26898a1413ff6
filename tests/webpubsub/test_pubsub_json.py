"""The JSON subprotocol end to end through the in-process client (real HTTP/WS code)."""

import json

import attrs
import pytest
import trio

from fabric import ConnectRejected, ConnectResponse, EventHandler, Payload, UserEventError, open_fabric
from fabric.config import HubConfig
from fabric.testing import ConnectionRejected, connect_in_process
from specs.errors import CloseCode
from tests.fabric_support import quick_config

from .client_support import ROLES, connect


async def test_connected_is_first_and_carries_ids(fab):
    c = await connect(fab, user_id="alice")
    assert c.user_id == "alice"
    assert len(c.connection_id) >= 16
    assert await fab.hub("chat").connection_exists(c.connection_id)
    assert await fab.hub("chat").user_exists("alice")


async def test_join_send_receive_with_acks_and_no_echo(fab):
    a = await connect(fab, user_id="a", roles=ROLES)
    b = await connect(fab, user_id="b", roles=ROLES)
    for i, c in enumerate((a, b), 1):
        await c.send_json({"type": "joinGroup", "group": "g", "ackId": i})
        assert await c.receive_json() == {"type": "ack", "ackId": i, "success": True}
    await a.send_json({"type": "sendToGroup", "group": "g", "ackId": 5, "noEcho": True,
                       "dataType": "json", "data": {"x": [1, 2]}})
    assert await a.receive_json() == {"type": "ack", "ackId": 5, "success": True}
    got = await b.receive()
    assert got == '{"type":"message","from":"group","group":"g","dataType":"json","data":{"x":[1,2]},"fromUserId":"a"}'
    # echo on: the sender receives its own message too
    await a.send_json({"type": "sendToGroup", "group": "g", "dataType": "text", "data": "hi"})
    for c in (a, b):
        msg = await c.receive_json()
        assert msg["data"] == "hi" and msg["dataType"] == "text"


async def test_binary_payload_is_base64(fab):
    a = await connect(fab, roles=ROLES)
    await a.send_json({"type": "joinGroup", "group": "g"})
    await a.send_json({"type": "sendToGroup", "group": "g", "dataType": "binary", "data": "AAEC"})
    msg = await a.receive_json()
    assert msg["dataType"] == "binary" and msg["data"] == "AAEC"


async def test_forbidden_without_roles(fab):
    c = await connect(fab)
    await c.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
    ack = await c.receive_json()
    assert ack["success"] is False and ack["error"]["name"] == "Forbidden"
    await c.send_json({"type": "sendToGroup", "group": "g", "ackId": 2, "data": 1})
    ack = await c.receive_json()
    assert ack["error"]["name"] == "Forbidden"


async def test_scoped_roles(fab):
    c = await connect(fab, roles=("webpubsub.joinLeaveGroup.only",))
    await c.send_json({"type": "joinGroup", "group": "only", "ackId": 1})
    assert (await c.receive_json())["success"] is True
    await c.send_json({"type": "joinGroup", "group": "other", "ackId": 2})
    assert (await c.receive_json())["error"]["name"] == "Forbidden"


async def test_duplicate_ack_id(fab):
    c = await connect(fab, roles=ROLES)
    await c.send_json({"type": "joinGroup", "group": "g", "ackId": 7})
    assert (await c.receive_json())["success"] is True
    await c.send_json({"type": "joinGroup", "group": "g", "ackId": 7})
    ack = await c.receive_json()
    assert ack["success"] is False and ack["error"]["name"] == "Duplicate"


async def test_ack_memory_keeps_the_last_ack_memory_ids(fab):
    from fabric.webpubsub.connection import ACK_MEMORY

    c = await connect(fab, roles=ROLES)
    for ack_id in range(1, ACK_MEMORY + 2):  # one more than remembered: ackId 1 is forgotten
        await c.send_json({"type": "joinGroup", "group": "g", "ackId": ack_id})
        assert (await c.receive_json())["success"] is True
    for ack_id, name in ((2, "Duplicate"), (ACK_MEMORY + 1, "Duplicate"), (1, None)):
        await c.send_json({"type": "joinGroup", "group": "g", "ackId": ack_id})
        ack = await c.receive_json()
        assert ack["ackId"] == ack_id and (ack.get("error") or {}).get("name") == name
    # ackId 1 counted as new again, and pushed out ackId 2 (the oldest)
    await c.send_json({"type": "joinGroup", "group": "g", "ackId": 2})
    assert (await c.receive_json())["success"] is True


async def test_ping_pong(fab):
    c = await connect(fab)
    await c.send_json({"type": "ping"})
    assert await c.receive_json() == {"type": "pong"}


async def test_event_without_handler_gets_named_ack_error(fab):
    c = await connect(fab)
    await c.send_json({"type": "event", "event": "ev", "ackId": 3, "dataType": "text", "data": "x"})
    ack = await c.receive_json()
    assert ack["success"] is False
    assert "no event handler" in ack["error"]["message"] and "'ev'" in ack["error"]["message"]


async def test_invalid_message_gets_ack_error_and_connection_survives(fab):
    c = await connect(fab, roles=ROLES)
    await c.send_json({"type": "joinGroup", "ackId": 4})  # no group
    ack = await c.receive_json()
    assert ack["ackId"] == 4 and ack["success"] is False and ack["error"]["name"]
    await c.send_json({"type": "ping"})
    assert await c.receive_json() == {"type": "pong"}


async def test_malformed_frame_closes_only_that_client(fab):
    bad = await connect(fab, roles=ROLES)
    good = await connect(fab, roles=ROLES)
    await good.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
    await good.receive_json()
    await bad.send("{not json")
    code = await bad.wait_closed()
    assert code == CloseCode.INVALID_MESSAGE
    await good.send_json({"type": "sendToGroup", "group": "g", "dataType": "text", "data": "still here"})
    assert (await good.receive_json())["data"] == "still here"


async def test_message_too_big_closes_1009(fab):
    c = await connect(fab)
    await c.send("x" * (fab.config.server.max_message_bytes + 1))
    assert await c.wait_closed() == 1009


async def test_bad_tokens_are_401(fab):
    with pytest.raises(ConnectionRejected) as info:
        await connect_in_process(fab, "chat", token="garbage")
    assert info.value.status == 401
    with pytest.raises(ConnectionRejected) as info:
        await connect_in_process(fab, "chat", anonymous=True)
    assert info.value.status == 401
    body = json.loads(info.value.body)
    assert body["code"] and body["message"]


async def test_in_process_handlers(fab):
    events = []

    class Handler(EventHandler):
        async def on_connect(self, request):
            if request.query.get("deny"):
                raise ConnectRejected(403, "go away")
            return ConnectResponse(user_id="from-handler", groups=("auto",), roles=ROLES)

        async def on_connected(self, ctx):
            events.append(("connected", ctx.connection_id))

        async def on_disconnected(self, ctx, reason):
            events.append(("disconnected", ctx.connection_id))

        async def on_user_event(self, ctx, event, payload):
            if event == "fail":
                raise UserEventError("Custom", "nope")
            return Payload.text(f"{ctx.user_id}:{event}:{payload.body.decode()}")

    fab.set_handler("h", Handler())
    with pytest.raises(ConnectionRejected) as info:
        await connect_in_process(fab, "h", query={"deny": "1"})
    assert info.value.status == 403
    c = await connect(fab, "h")
    assert c.user_id == "from-handler"
    assert await fab.hub("h").group_exists("auto")
    await c.send_json({"type": "event", "event": "echo", "ackId": 1, "dataType": "text", "data": "x"})
    assert await c.receive_json() == {"type": "message", "from": "server", "dataType": "text",
                                      "data": "from-handler:echo:x"}
    assert await c.receive_json() == {"type": "ack", "ackId": 1, "success": True}
    await c.send_json({"type": "event", "event": "fail", "ackId": 2, "data": 1})
    ack = await c.receive_json()
    assert ack["error"] == {"name": "Custom", "message": "nope"}
    await c.aclose()
    with trio.fail_after(5):
        while len(events) < 2:
            await trio.sleep(0.01)
    assert events == [("connected", c.connection_id), ("disconnected", c.connection_id)]


async def test_anonymous_connect_hub():
    config = quick_config()
    config = attrs.evolve(config, hubs={"open": HubConfig(anonymous_connect=True)})
    async with open_fabric(config) as f:
        c = await connect(f, "open", anonymous=True)
        assert c.user_id is None
        with pytest.raises(ConnectionRejected):
            await connect_in_process(f, "closed", anonymous=True)


async def test_unsupported_type_with_ack_gets_error(fab):
    c = await connect(fab)
    await c.send_json({"type": "somethingNew", "ackId": 9})
    ack = await c.receive_json()
    assert ack["ackId"] == 9 and ack["success"] is False
