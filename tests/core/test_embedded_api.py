"""The embedded API: the REST operations as methods, checked on real in-process clients."""

import trio

from fabric import Payload, open_fabric
from fabric.core.broker import hub_topic
from fabric.core.publication import Publication
from fabric.testing import connect_in_process
from specs.errors import CloseCode
from tests.fabric_support import quick_config
from tests.webpubsub.client_support import ROLES, connect


async def test_send_to_all_user_connection_group(fab):
    hub = fab.hub("chat")
    a = await connect(fab, user_id="u1", roles=ROLES)
    b = await connect(fab, user_id="u2", roles=ROLES)
    await hub.send_to_all("hello")
    for c in (a, b):
        assert await c.receive_json() == {"type": "message", "from": "server", "dataType": "text", "data": "hello"}
    await hub.send_to_all({"k": 1}, excluded=[a.connection_id])
    assert (await b.receive_json())["data"] == {"k": 1}
    await hub.send_to_user("u1", b"\x01\x02")
    assert await a.receive_json() == {"type": "message", "from": "server", "dataType": "binary", "data": "AQI="}
    await hub.send_to_connection(b.connection_id, Payload.text("direct"))
    assert (await b.receive_json())["data"] == "direct"
    assert await hub.add_connection_to_group("room", a.connection_id)
    await hub.send_to_group("room", "in room")
    msg = await a.receive_json()
    assert msg == {"type": "message", "from": "group", "group": "room", "dataType": "text", "data": "in room"}
    assert await hub.list_connections_in_group("room") == [{"connectionId": a.connection_id, "userId": "u1"}]


async def test_user_groups_and_exists(fab):
    hub = fab.hub("chat")
    a1 = await connect(fab, user_id="u", roles=ROLES)
    a2 = await connect(fab, user_id="u", roles=ROLES)
    await hub.add_user_to_group("g", "u")
    assert await hub.group_exists("g")
    await hub.send_to_group("g", "both")
    assert (await a1.receive_json())["data"] == "both"
    assert (await a2.receive_json())["data"] == "both"
    await hub.remove_user_from_group("g", "u")
    assert not await hub.group_exists("g")
    assert not await hub.connection_exists("nope")
    assert not await hub.user_exists("nobody")


async def test_close_connection_sends_disconnected_then_closes(fab):
    hub = fab.hub("chat")
    c = await connect(fab)
    await hub.close_connection(c.connection_id, reason="bye now")
    assert await c.receive_json() == {"type": "system", "event": "disconnected", "message": "bye now"}
    assert await c.wait_closed() == CloseCode.CLOSED_BY_APP_SERVER
    with trio.fail_after(5):
        while await hub.connection_exists(c.connection_id):
            await trio.sleep(0.01)


async def test_permissions_take_effect_on_live_connection(fab):
    hub = fab.hub("chat")
    c = await connect(fab)
    await c.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
    assert (await c.receive_json())["success"] is False
    assert await hub.grant_permission("joinLeaveGroup", c.connection_id, target="g")
    assert await hub.has_permission("joinLeaveGroup", c.connection_id, target="g")
    await c.send_json({"type": "joinGroup", "group": "g", "ackId": 2})
    assert (await c.receive_json())["success"] is True
    await hub.revoke_permission("joinLeaveGroup", c.connection_id, target="g")
    await c.send_json({"type": "leaveGroup", "group": "g", "ackId": 3})
    assert (await c.receive_json())["error"]["name"] == "Forbidden"


async def test_counts_return_to_zero(fab):
    hub = fab.hub("chat")
    clients = [await connect(fab, user_id=f"u{i % 3}", roles=ROLES) for i in range(20)]
    for i, c in enumerate(clients):
        await c.send_json({"type": "joinGroup", "group": f"g{i % 4}", "ackId": 1})
        await c.receive_json()
    stats = hub.statistics()
    assert stats["connections"] == 20 and stats["users"] == 3 and stats["groups"] == 4
    for c in clients:
        await c.aclose()
    with trio.fail_after(5):
        while hub.statistics()["connections"]:
            await trio.sleep(0.01)
    stats = hub.statistics()
    assert (stats["connections"], stats["users"], stats["groups"]) == (0, 0, 0)
    # only the hub's permanent children remain (notifier, keepalive)
    assert stats["supervisor"].children == 2


async def test_simple_clients_get_raw_frames(fab):
    hub = fab.hub("chat")
    simple = await connect_in_process(fab, "chat", subprotocol=None, user_id="s")
    json_client = await connect(fab, roles=ROLES)
    await hub.add_user_to_group("g", "s")
    for data_type, data, expected in (("text", "plain", "plain"), ("json", {"a": 1}, '{"a":1}'),
                                      ("binary", "AAEC", b"\x00\x01\x02")):
        await json_client.send_json({"type": "sendToGroup", "group": "g", "dataType": data_type, "data": data})
        assert await simple.receive() == expected


async def test_simple_client_without_handler_is_closed_1000(fab):
    simple = await connect_in_process(fab, "chat", subprotocol=None)
    await simple.send("hello?")
    assert await simple.wait_closed() == 1000


async def test_simple_client_send_to_group_mode(fab):
    listener = await connect(fab, roles=ROLES)
    await listener.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
    await listener.receive_json()
    simple = await connect_in_process(fab, "chat", subprotocol=None, roles=ROLES,
                                      query={"webpubsub_mode": "sendToGroup", "group": "g"})
    await simple.send("from simple")
    msg = await listener.receive_json()
    assert msg["data"] == "from simple" and msg["group"] == "g"


async def test_a_crashed_hub_restarts_with_an_empty_registry(fab):
    from actors import ChildSpec, Restart

    hub = fab.hub("crashy")
    c = await connect(fab, "crashy", user_id="u", roles=ROLES)
    running = fab.running_hubs()["crashy"]
    old_supervisor = running.supervisor

    async def bomb(*, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        raise RuntimeError("boom")

    # A child that always crashes exhausts the hub supervisor's restart intensity: the hub
    # fails, and the fabric's supervisor restarts it (TRANSIENT) from a clean registry.
    await running.supervisor.start_child(ChildSpec("bomb", bomb, restart=Restart.PERMANENT))
    with trio.fail_after(5):
        while running.supervisor is old_supervisor:
            await trio.sleep(0.01)
        await running.wait_started()
    assert await c.wait_closed() in (1006, 1001, 1011)
    assert not await hub.connection_exists(c.connection_id)
    c2 = await connect(fab, "crashy", user_id="u2", roles=ROLES)
    assert await hub.connection_exists(c2.connection_id)
    assert fab.statistics()["supervisor"].restarts >= 1


async def test_a_message_that_waited_past_its_ttl_is_dropped_not_delivered(autojump_clock):
    async with open_fabric(quick_config(keepalive_interval=100.0, idle_timeout=200.0), access_key="k") as f:
        c = await connect(f, "ttl")
        hub = f.running_hubs()["ttl"]
        stale = Publication("server", Payload.text("stale"), ttl_seconds=1)
        fresh = Publication("server", Payload.text("fresh"), ttl_seconds=300)
        await trio.sleep(2)  # as if both had waited in a mailbox for 2 s
        await hub.on_publication(hub_topic("ttl"), stale)
        await hub.on_publication(hub_topic("ttl"), fresh)
        assert (await c.receive_json())["data"] == "fresh"
        assert hub.counters["expired"] == 1
