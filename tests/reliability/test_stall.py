"""The slow-consumer rule (specs/limits.py): a client is slow when it stops taking our data,
not when its backlog is long. A client that keeps reading survives any burst that fits the
byte bound; one whose socket accepts nothing for ``stall_timeout`` is closed, and nobody
else notices. In-process, on trio's virtual clock."""

from __future__ import annotations

import trio

import fabric
from fabric.testing import connect_in_process
from tests.fabric_support import quick_config

ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")


async def _member(fab, group: str):
    client = await connect_in_process(fab, "chat", roles=ROLES)
    client.id = (await client.receive_json())["connectionId"]
    await client.send_json({"type": "joinGroup", "group": group, "ackId": 1})
    assert (await client.receive_json())["success"] is True
    return client


async def test_stalled_reader_closed_after_stall_timeout_reader_unaffected(autojump_clock):
    config = quick_config(keepalive_interval=5.0, idle_timeout=600.0, stall_timeout=12.0, close_timeout=600.0)
    async with fabric.open_fabric(config, access_key="k") as fab:
        stalled, reader = await _member(fab, "g"), await _member(fab, "g")
        publisher = await connect_in_process(fab, "chat", roles=ROLES)
        await publisher.receive_json()
        pad = "x" * 4000
        for n in range(300):  # ~1.2 MB: far below the byte bound, more than a memory stream holds
            await publisher.send_json({"type": "sendToGroup", "group": "g", "dataType": "json",
                                       "data": {"n": n, "pad": pad}})
        got = [(await reader.receive_json())["data"]["n"] for _ in range(300)]
        assert got == list(range(300))
        hub = fab.running_hubs()["chat"]
        assert hub.counters["slow_consumer_closed"] == 0
        await trio.sleep(10)  # stalled for 10 s < 12 s: still a member
        assert hub.counters["slow_consumer_closed"] == 0 and len(hub.connections) == 3
        await trio.sleep(10)
        assert hub.counters["slow_consumer_closed"] == 1
        # The reader and the publisher carry on.
        await publisher.send_json({"type": "sendToGroup", "group": "g", "dataType": "text", "data": "after"})
        assert (await reader.receive_json())["data"] == "after"
        member = hub.local_member(stalled.id)
        assert member is None or member.ws.closing  # closing (its close frame waits behind the stall)
        assert hub.local_member(reader.id) is not None and not hub.local_member(reader.id).ws.closing


async def test_slow_but_steady_reader_is_never_closed(autojump_clock):
    """3000 messages (three times the old 1024-frame bound) wait for a reader that pauses
    0.5 s every 100 messages: its socket takes data every ~8 s of virtual time (64 KiB per
    read), its backlog lasts ~15 s, and it is never closed with a 12 s stall timeout."""
    config = quick_config(keepalive_interval=1.0, idle_timeout=600.0, stall_timeout=12.0)
    async with fabric.open_fabric(config, access_key="k") as fab:
        slow = await _member(fab, "g")
        publisher = await connect_in_process(fab, "chat", roles=ROLES)
        await publisher.receive_json()
        for n in range(3000):
            await publisher.send_json({"type": "sendToGroup", "group": "g", "dataType": "text", "data": str(n)})
        started = trio.current_time()
        got = []
        for _ in range(3000):
            got.append((await slow.receive_json(timeout=60))["data"])
            if len(got) % 100 == 0:
                await trio.sleep(0.5)
        assert got == [str(n) for n in range(3000)]
        assert trio.current_time() - started > 12  # the backlog outlived one stall timeout
        assert fab.running_hubs()["chat"].counters["slow_consumer_closed"] == 0
