"""Every service-API operation behaves the same when its target lives on another node:
in-process nodes on one ``MemoryBus`` and on a real redis-server (each node its own
``RedisBus``). A client connects to node A; node B (and C) ask."""

import pytest
import trio

from fabric.testing import ConnectionClosed
from tests.webpubsub.client_support import ROLES, connect
from tests.waiting import eventually_async

pytestmark = pytest.mark.slow


async def expect_data(client, data, timeout=5.0):
    msg = await client.receive_json(timeout=timeout)
    assert msg.get("data") == data, msg
    return msg


async def expect_nothing_before(client, hub, marker):
    """Nothing reaches ``client`` before a marker sent to its connection (per-publisher
    order then says nothing earlier is still on its way)."""
    await hub.send_to_connection(client.connection_id, marker)
    await expect_data(client, marker)


async def eventually(predicate, timeout=5.0):
    await eventually_async(predicate, timeout, interval=0.01)


async def test_membership_and_sends_across_nodes(nodes):
    async with nodes(2) as (a, b):
        c = await connect(a, user_id="u1", roles=ROLES)
        hb = b.hub("chat")
        assert await hb.connection_exists(c.connection_id)
        assert await hb.user_exists("u1")
        assert not await hb.user_exists("nobody")
        assert not await hb.connection_exists("nope")
        assert not await hb.group_exists("g")

        assert await hb.add_connection_to_group("g", c.connection_id)
        assert await hb.group_exists("g")
        assert await hb.list_connections_in_group("g") == [{"connectionId": c.connection_id, "userId": "u1"}]
        await hb.send_to_group("g", "to g")
        msg = await expect_data(c, "to g")
        assert msg["group"] == "g"
        await hb.remove_connection_from_group("g", c.connection_id)
        assert not await hb.group_exists("g")
        await hb.send_to_group("g", "not for c")
        await expect_nothing_before(c, hb, "marker1")

        assert await hb.add_user_to_group("g2", "u1")
        assert not await hb.add_user_to_group("g2", "nobody")
        await hb.send_to_group("g2", "to g2")
        await expect_data(c, "to g2")
        await hb.remove_user_from_group("g2", "u1")
        assert not await hb.group_exists("g2")
        assert await hb.add_user_to_group("g3", "u1")
        assert await hb.add_connection_to_group("g4", c.connection_id)
        await hb.remove_user_from_all_groups("u1")
        assert not await hb.group_exists("g3") and not await hb.group_exists("g4")
        assert await hb.add_connection_to_group("g5", c.connection_id)
        await hb.remove_connection_from_all_groups(c.connection_id)
        assert not await hb.group_exists("g5")

        assert await hb.add_connections_to_groups(["f1", "f2"], "userId eq 'u1'") == 1
        assert await hb.add_connections_to_groups(["f3"], "userId eq 'other'") == 0
        assert await hb.group_exists("f1") and await hb.group_exists("f2")
        await hb.send_to_group("f2", "filtered join")
        await expect_data(c, "filtered join")
        assert await hb.remove_connections_from_groups(["f1", "f2"], "'f1' in groups") == 1
        assert not await hb.group_exists("f1")

        await hb.send_to_user("u1", "to user")
        await expect_data(c, "to user")
        await hb.send_to_connection(c.connection_id, "to conn")
        await expect_data(c, "to conn")
        await hb.send_to_all("to all")
        await expect_data(c, "to all")
        await hb.send_to_all("skipped", excluded=[c.connection_id])
        await hb.send_to_all("filtered out", filter="userId eq 'other'")
        await expect_nothing_before(c, hb, "marker2")
        assert not await hb.add_connection_to_group("g", "no-such-connection")


async def test_permissions_across_nodes(nodes):
    async with nodes(2) as (a, b):
        c = await connect(a, user_id="u1")
        hb = b.hub("chat")
        assert not await hb.has_permission("sendToGroup", c.connection_id, target="room")
        assert await hb.grant_permission("sendToGroup", c.connection_id, target="room")
        assert await hb.has_permission("sendToGroup", c.connection_id, target="room")
        assert not await hb.grant_permission("sendToGroup", "no-such-connection")
        await c.send_json({"type": "sendToGroup", "group": "room", "data": "x", "ackId": 1})
        assert (await c.receive_json())["success"] is True
        await hb.revoke_permission("sendToGroup", c.connection_id, target="room")
        assert not await hb.has_permission("sendToGroup", c.connection_id, target="room")
        await c.send_json({"type": "sendToGroup", "group": "room", "data": "x", "ackId": 2})
        assert (await c.receive_json())["error"]["name"] == "Forbidden"


async def test_closing_across_nodes(nodes):
    async with nodes(3) as (a, b, c_node):
        hb = b.hub("chat")
        clients = {name: await connect(node, user_id=name, roles=ROLES)
                   for name, node in (("x", a), ("y", c_node), ("z", a), ("w", c_node))}
        await hb.close_connection(clients["x"].connection_id, reason="bye")
        with pytest.raises(ConnectionClosed):
            while True:
                await clients["x"].receive_json()
        await eventually(lambda: _not(hb.connection_exists(clients["x"].connection_id)))
        await hb.close_user_connections("y")
        with pytest.raises(ConnectionClosed):
            while True:
                await clients["y"].receive_json()
        assert await hb.add_connection_to_group("g", clients["z"].connection_id)
        assert await hb.add_connection_to_group("g", clients["w"].connection_id)
        assert len(await hb.list_connections_in_group("g")) == 2
        await hb.close_group_connections("g", excluded=[clients["w"].connection_id])
        with pytest.raises(ConnectionClosed):
            while True:
                await clients["z"].receive_json()
        await hb.close_all_connections()
        with pytest.raises(ConnectionClosed):
            while True:
                await clients["w"].receive_json()
        await eventually(lambda: _not(hb.user_exists("w")))


async def _not(awaitable):
    return not await awaitable


async def test_group_spread_over_three_nodes_keeps_order(nodes):
    async with nodes(3) as fabs:
        members = []
        for i in range(6):
            members.append(await connect(fabs[i % 3], user_id=f"m{i}", roles=ROLES))
        publisher = await connect(fabs[0], user_id="pub", roles=ROLES)
        hub = fabs[1].hub("chat")
        for m in members:
            assert await hub.add_connection_to_group("room", m.connection_id)
        n = 200
        for i in range(n):
            await publisher.send_json({"type": "sendToGroup", "group": "room", "data": i, "noEcho": True})
        for m in members:
            got = [(await m.receive_json())["data"] for _ in range(n)]
            assert got == list(range(n))
        rest = fabs[2].hub("chat")
        for i in range(50):
            await rest.send_to_group("room", f"r{i}")
        for m in members:
            assert [(await m.receive_json())["data"] for _ in range(50)] == [f"r{i}" for i in range(50)]


async def test_a_join_while_the_last_member_leaves_keeps_the_group_subscribed(nodes):
    """The last member's leave drops the group and then waits for the broker's unsubscribe;
    a join in that window makes the group anew and subscribes again. Whichever finishes
    first, the new member gets what another node sends afterwards (and, each round, only
    once)."""
    async with nodes(2) as (a, b):
        first = await connect(a, user_id="u1", roles=ROLES)
        second = await connect(a, user_id="u2", roles=ROLES)
        hub = a.running_hubs()["chat"]
        hb = b.hub("chat")
        for round_ in range(5):
            leaving, joining = (first, second) if round_ % 2 == 0 else (second, first)
            await hub.join_group(hub.connections[leaving.connection_id], "g")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(hub.leave_group, hub.connections[leaving.connection_id], "g")
                await trio.testing.wait_all_tasks_blocked()  # the leave waits on its unsubscribe
                nursery.start_soon(hub.join_group, hub.connections[joining.connection_id], "g")
            assert set(hub.groups["g"].members) == {joining.connection_id}
            await hb.send_to_group("g", {"round": round_})
            await expect_data(joining, {"round": round_})
            await expect_nothing_before(leaving, hb, {"marker": round_})
            await hub.leave_group(hub.connections[joining.connection_id], "g")
            await expect_nothing_before(joining, hb, {"marker": round_})
