"""One member that never reads must not stall a group, and must be closed as documented."""

import trio

import fabric
from fabric.testing import connect_in_process
from specs.errors import CloseCode
from tests.fabric_support import quick_config

from .client_support import ROLES

N_READERS = 100
N_MESSAGES = 300


async def _fabric(**server):
    return fabric.open_fabric(quick_config(**server), access_key="k")


async def _join(fab, group):
    c = await connect_in_process(fab, "chat", roles=ROLES)
    await c.receive_json()  # connected
    await c.send_json({"type": "joinGroup", "group": group, "ackId": 1})
    assert (await c.receive_json())["success"]
    return c


async def test_slow_member_closed_others_get_everything():
    # close_timeout is long here because this slow client reads its close frame only after
    # the readers are done; the bounded close ending in a reset is tests/transport's.
    async with await _fabric(outbox_max_messages=64, outbox_max_bytes=64 * 1024, close_timeout=60) as fab:
        slow = await _join(fab, "g")
        readers = [await _join(fab, "g") for _ in range(N_READERS)]
        publisher = await connect_in_process(fab, "chat", roles=ROLES)
        await publisher.receive_json()
        received = {i: [] for i in range(N_READERS)}

        async def read(i, c):
            while len(received[i]) < N_MESSAGES:
                msg = await c.receive_json(timeout=30)
                received[i].append(msg["data"]["n"])

        async with trio.open_nursery() as nursery:
            for i, c in enumerate(readers):
                nursery.start_soon(read, i, c)
            pad = "x" * 1000
            for n in range(N_MESSAGES):
                await publisher.send_json({"type": "sendToGroup", "group": "g", "dataType": "json",
                                           "data": {"n": n, "pad": pad}})
        assert all(received[i] == list(range(N_MESSAGES)) for i in range(N_READERS))
        hub = fab.running_hubs()["chat"]
        assert hub.counters["slow_consumer_closed"] == 1
        # The slow client eventually sees its close frame (what it had queued was discarded).
        assert await slow.wait_closed(timeout=30) == CloseCode.SLOW_CONSUMER


async def test_drop_policy_counts_lag_and_keeps_connection():
    async with await _fabric(outbox_max_messages=8, outbox_max_bytes=1 << 20, slow_consumer="drop") as fab:
        slow = await _join(fab, "g")
        publisher = await connect_in_process(fab, "chat", roles=ROLES)
        await publisher.receive_json()
        for n in range(200):
            await publisher.send_json({"type": "sendToGroup", "group": "g", "data": {"n": n, "pad": "y" * 2000}})
        await publisher.send_json({"type": "ping"})
        assert await publisher.receive_json() == {"type": "pong"}
        hub = fab.running_hubs()["chat"]
        assert hub.counters["lagged"] > 0
        # still open: it reads what was kept, in order, and gets a pong
        seen = []
        await slow.send_json({"type": "ping"})
        while True:
            msg = await slow.receive_json()
            if msg["type"] == "pong":
                break
            seen.append(msg["data"]["n"])
        assert seen == sorted(seen) and len(seen) + hub.counters["lagged"] == 200
