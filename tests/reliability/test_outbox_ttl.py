"""TTL to the last queue (issue 15 item 6): a message still waiting in a connection's outbox
past its messageTtlSeconds is dropped there, unsent and counted; messages without a TTL, and
those still within it, are sent. In-process, on trio's virtual clock."""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fabric
from fabric.testing import connect_in_process
from tests.fabric_support import quick_config
from transport.outbox import Outbox

ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")


async def test_expired_frames_are_dropped_from_a_blocked_outbox(autojump_clock):
    config = quick_config(keepalive_interval=100.0, idle_timeout=600.0, stall_timeout=600.0)
    async with fabric.open_fabric(config, access_key="k") as fab:
        client = await connect_in_process(fab, "chat", roles=ROLES)
        cid = (await client.receive_json())["connectionId"]
        await client.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
        await client.receive_json()
        hub = fab.hub("chat")
        big = "x" * 200_000  # fills the in-process stream: what follows waits in the outbox
        await hub.send_to_group("g", big)
        await trio.sleep(0.1)  # the writer took it and waits for the stream to drain
        await hub.send_to_group("g", "short-lived", message_ttl_seconds=1)
        await hub.send_to_group("g", "long-lived", message_ttl_seconds=60)
        await hub.send_to_group("g", "no ttl")
        await trio.sleep(5)  # the client reads nothing meanwhile
        got = [(await client.receive_json(timeout=30))["data"] for _ in range(3)]
        assert got == [big, "long-lived", "no ttl"]
        member = fab.running_hubs()["chat"].local_member(cid)
        assert member.ws.outbox.statistics().expired == 1


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.none() | st.integers(0, 20), st.integers(0, 20)), min_size=1, max_size=30))
def test_outbox_sends_exactly_the_frames_still_alive_when_taken(schedule):
    """Frames with random deadlines queued at random times; each batch holds exactly those
    frames whose deadline had not passed when the writer took it, in order."""

    async def main():
        outbox = Outbox(1000, 1 << 20)
        expected, taken = [], []
        for n, (ttl, wait) in enumerate(schedule):
            now = trio.current_time()
            outbox.put_nowait(b"%d" % n, expires_at=None if ttl is None else now + ttl)
            expected.append((n, None if ttl is None else now + ttl))
            if wait:
                await trio.sleep(wait)
                now = trio.current_time()
                batch = await outbox.get_batch()
                assert batch == [b"%d" % i for i, d in expected if d is None or d >= now]
                taken += batch
                expected = []
        dropped = len(schedule) - len(taken) - len(outbox)
        assert outbox.statistics().expired == dropped

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
