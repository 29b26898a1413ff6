"""Bad input to the newer features loses nothing for others: while one client sends broken
invocations, stream messages and metadata, another client's group messages reach a subscriber,
all of them, in order, and every broken request is answered on its own channel."""

from __future__ import annotations

import trio

from tests.waiting import counting_passes

from .client_support import ROLES, connect

GARBAGE = [
    {"type": "invoke", "invocationId": "i1", "target": "nope", "event": "e"},
    {"type": "invoke", "invocationId": "i2", "event": "e", "metadata": {"bad key": "v"}},
    {"type": "cancelInvocation", "invocationId": "never-started"},
    {"type": "streamData", "streamId": "ghost", "streamSequenceId": 1, "dataType": "text", "data": "x"},
    {"type": "streamEnd", "streamId": "ghost"},
    {"type": "sendToGroup", "group": "g", "stream": {"streamId": "s", "idleTimeoutMs": 0}},
    {"type": "sendToGroup", "group": "g", "ackId": 7, "data": 1, "metadata": {"k": "v" * 2000}},
    {"type": "sendToGroup", "group": "g", "stream": {"streamId": "ok"}, "noEcho": True},
    {"type": "streamData", "streamId": "ok", "streamSequenceId": 5, "dataType": "text", "data": "gap"},
    {"type": "streamData", "streamId": "ok", "streamSequenceId": 0, "dataType": "text", "data": "zero"},
    {"type": "setGroupState", "group": "g", "ackId": 8},
]


async def test_garbage_from_one_client_loses_nothing_for_others(fab):
    sub = await connect(fab, roles=ROLES)
    await sub.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
    await sub.receive_json()
    good = await connect(fab, user_id="good", roles=ROLES)
    bad = await connect(fab, user_id="bad", roles=ROLES)
    answers = []

    async def read_bad():
        while True:
            answers.append(await bad.receive_json())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_bad)
        for i, junk in enumerate(GARBAGE):
            await bad.send_json(junk)
            await good.send_json({"type": "sendToGroup", "group": "g", "dataType": "text", "data": f"m{i}",
                                  "noEcho": True})
        got = [await sub.receive_json() for _ in GARBAGE]
        await bad.send_json({"type": "ping"})
        with trio.fail_after(5):
            while not answers or answers[-1] != {"type": "pong"}:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert [(m["fromUserId"], m["data"]) for m in got] == [("good", f"m{i}") for i in range(len(GARBAGE))]
    kinds = [(a["type"], a.get("error", {}).get("name") or a.get("name")) for a in answers[:-1]]
    assert kinds == [
        ("invokeResponse", "BadRequest"), ("invokeResponse", "BadRequest"),
        ("streamClosed", "StreamNotFound"), ("streamClosed", "StreamNotFound"),
        ("streamClosed", "BadRequest"), ("ack", "BadRequest"),
        ("streamAck", None), ("streamNack", "InvalidSequenceId"), ("streamNack", "InvalidSequenceId"),
        ("ack", "BadRequest"),
    ], answers


async def test_a_connection_joins_at_most_max_groups_per_connection():
    # Found by a fuzz run: one client joined 50,000 groups (78 -> 412 MB), and leaving them
    # when it closed held the event loop for ~3 s. Decision limits.groups-per-connection.
    import attrs
    import fabric
    from tests.fabric_support import quick_config

    config = quick_config()
    config = attrs.evolve(config, server=attrs.evolve(config.server, max_groups_per_connection=300))
    async with fabric.open_fabric(config, access_key="k") as fab:
        c = await connect(fab, roles=ROLES)
        for i in range(300):
            await c.send_json({"type": "joinGroup", "group": f"g{i}", "ackId": i + 1})
        for i in range(300):
            assert (await c.receive_json())["success"] is True
        await c.send_json({"type": "joinGroup", "group": "one-more", "ackId": 1000})
        refused = await c.receive_json()
        assert refused["ackId"] == 1000 and refused["success"] is False
        assert refused["error"]["name"] == "BadRequest" and "at most 300 groups" in refused["error"]["message"]
        await c.send_json({"type": "joinGroup", "group": "g7", "ackId": 1001})  # already a member: fine
        assert (await c.receive_json())["success"] is True
        # the connection carries on
        await c.send_json({"type": "sendToGroup", "group": "g7", "dataType": "text", "data": "hi", "ackId": 1002})
        got = [await c.receive_json() for _ in range(2)]
        assert {m.get("type") for m in got} == {"ack", "message"}
        # its end leaves its 300 groups while other tasks keep running
        hub = fab.running_hubs()[next(iter(fab.running_hubs()))]
        async with counting_passes() as passes:
            await c.aclose()
            with trio.fail_after(10):
                while hub.connections or hub.groups:
                    await trio.sleep(0)
        assert passes.count >= 4, passes.count
