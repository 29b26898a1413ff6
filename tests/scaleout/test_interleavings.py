"""Hypothesis: random interleavings of joins, leaves and sends, with members and publishers
placed on random nodes, keep the delivery contract of one node (specs/broker.py):
per-publisher order, nothing twice, nothing lost for a member present from publish to the
end, nothing for a connection that was never in the group after the publish. Nodes share a
``MemoryBus`` or a real redis-server."""

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.webpubsub.client_support import ROLES, connect

NODES, MEMBERS, CLIENT_PUBLISHERS = 3, 4, 2
GROUP = "room"

step = st.one_of(
    st.tuples(st.just("rest_join"), st.integers(0, MEMBERS - 1), st.integers(0, NODES - 1)),
    st.tuples(st.just("rest_leave"), st.integers(0, MEMBERS - 1), st.integers(0, NODES - 1)),
    st.tuples(st.just("client_join"), st.integers(0, MEMBERS - 1), st.just(0)),
    st.tuples(st.just("client_leave"), st.integers(0, MEMBERS - 1), st.just(0)),
    st.tuples(st.just("send"), st.integers(0, CLIENT_PUBLISHERS), st.integers(1, 4)),
)
placement = st.lists(st.integers(0, NODES - 1), min_size=MEMBERS + CLIENT_PUBLISHERS + 1,
                     max_size=MEMBERS + CLIENT_PUBLISHERS + 1)


async def run_example(fabs, places, steps):
    members = [await connect(fabs[places[i]], user_id=f"m{i}", roles=ROLES) for i in range(MEMBERS)]
    publishers = [await connect(fabs[places[MEMBERS + j]], user_id=f"p{j}", roles=ROLES)
                  for j in range(CLIENT_PUBLISHERS)]
    rest_publisher = fabs[places[-1]].hub("chat")
    acks = {id(c): 100 for c in (*members, *publishers)}
    inside = [False] * MEMBERS
    history = []  # ("send", publisher, i, members inside) / ("membership", member, inside)
    counters = [0] * (CLIENT_PUBLISHERS + 1)
    received = [[] for _ in range(MEMBERS)]

    async def request(client, frame):
        acks[id(client)] += 1
        await client.send_json({**frame, "ackId": acks[id(client)]})
        while True:
            msg = await client.receive_json()
            if msg.get("type") == "ack" and msg.get("ackId") == acks[id(client)]:
                assert msg["success"] or msg["error"]["name"] == "Duplicate", msg
                return
            if client in members:  # a group message that arrived before the ack
                received[members.index(client)].append(msg["data"])

    async def publish(p, count):
        for _ in range(count):
            data = {"p": p, "i": counters[p]}
            if p < CLIENT_PUBLISHERS:
                await request(publishers[p], {"type": "sendToGroup", "group": GROUP, "data": data, "noEcho": True})
            else:
                await rest_publisher.send_to_group(GROUP, data)
            history.append(("send", p, counters[p], tuple(inside)))
            counters[p] += 1

    for kind, who, arg in steps:
        if kind == "send":
            await publish(who, arg)
            continue
        joining = kind.endswith("join")
        if kind.startswith("rest"):
            hub = fabs[arg].hub("chat")
            if joining:
                assert await hub.add_connection_to_group(GROUP, members[who].connection_id)
            else:
                await hub.remove_connection_from_group(GROUP, members[who].connection_id)
        else:
            await request(members[who], {"type": "joinGroup" if joining else "leaveGroup", "group": GROUP})
        inside[who] = joining
        history.append(("membership", who, joining))
    # the end: every publisher's marker, then each member still inside has everything before it
    await publish(CLIENT_PUBLISHERS, 0)
    for p in range(CLIENT_PUBLISHERS + 1):
        data = {"p": p, "i": "end"}
        if p < CLIENT_PUBLISHERS:
            await request(publishers[p], {"type": "sendToGroup", "group": GROUP, "data": data, "noEcho": True})
        else:
            await rest_publisher.send_to_group(GROUP, data)
    for m in range(MEMBERS):
        ends = sum(1 for d in received[m] if d["i"] == "end")
        with trio.move_on_after(10 if inside[m] else 0.3) as scope:
            while not inside[m] or ends < CLIENT_PUBLISHERS + 1:
                msg = await members[m].receive_json(timeout=10)
                if msg.get("type") == "message":
                    received[m].append(msg["data"])
                    ends += msg["data"]["i"] == "end"
                if inside[m] and ends == CLIENT_PUBLISHERS + 1:
                    break
        assert not (inside[m] and scope.cancelled_caught), f"member {m} missed an end marker: {received[m]}"
    # the contract, per member
    for m in range(MEMBERS):
        got = [(d["p"], d["i"]) for d in received[m] if d["i"] != "end"]
        assert len(got) == len(set(got)), f"member {m} got something twice: {got}"
        for p in range(CLIENT_PUBLISHERS + 1):
            mine = [i for q, i in got if q == p]
            assert mine == sorted(mine), f"member {m}: publisher {p} out of order: {mine}"
        member_in = False
        stayed: dict[tuple[int, int], bool] = {}
        ever_after: dict[tuple[int, int], bool] = {}
        for event in history:
            if event[0] == "membership":
                if event[1] == m:
                    member_in = event[2]
                    for key, still in stayed.items():
                        stayed[key] = still and member_in
                        ever_after[key] = ever_after[key] or member_in
            else:
                key = (event[1], event[2])
                stayed[key] = member_in
                ever_after[key] = member_in
        for key, must in stayed.items():
            if must:
                assert key in got, f"member {m} missed {key} (inside from publish to the end): {got}"
            if not ever_after[key]:
                assert key not in got, f"member {m} got {key} though never inside after it: {got}"


SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]}


@settings(max_examples=30, **SETTINGS)
@given(places=placement, steps=st.lists(step, min_size=1, max_size=25))
async def test_interleavings_on_a_memory_bus(places, steps):
    from tests.scaleout.conftest import open_nodes

    async with open_nodes(NODES, "memory") as fabs:
        await run_example(fabs, places, steps)


@pytest.mark.slow
@settings(max_examples=8, **SETTINGS)
@given(places=placement, steps=st.lists(step, min_size=1, max_size=25))
async def test_interleavings_on_redis(places, steps, redis_server):
    from tests.scaleout.conftest import open_nodes

    async with open_nodes(NODES, "redis", redis_server) as fabs:
        await run_example(fabs, places, steps)
