"""Finding 1 of the hostile-input review: a burst must not drop a healthy client.

A healthy client is one that reads. `@azure/web-pubsub-client` acks sequence ids about once
a second, so a burst larger than Azure's documented 1000-message reliable buffer arrives
within one ack period; a plain subscriber of a busy group sees its outbox grow while the
server itself is the bottleneck. Neither may be closed (specs/limits.py). Against a real
`fabric serve` with default settings, the JS SDK as the reliable client.
"""

from __future__ import annotations

import trio

from interop_support import WAIT_TIMEOUT, open_json_client, unique
from node_subscriber import NodeSubscriber

BOTH_ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")
BURST = 3000  # three times Azure's reliable buffer, sent as fast as the socket takes it


async def _burst(pub, group: str, n: int) -> None:
    """Fire-and-forget sendToGroup frames (no ackIds: nothing paces the publisher)."""
    for i in range(n):
        await pub.send_json({"type": "sendToGroup", "group": group, "dataType": "text", "data": f"m{i}"})


async def test_reliable_js_sdk_gets_a_3000_message_burst_on_one_connection(fabric_server):
    hub, group = unique("burst_js"), unique("g")
    url = fabric_server.client_url(hub, user_id=unique("js"), roles=BOTH_ROLES)
    sub = NodeSubscriber(url, group, BURST, deadline_s=60)
    try:
        ready = await trio.to_thread.run_sync(sub.next_line, "ready", WAIT_TIMEOUT * 2)
        async with open_json_client(fabric_server.client_url(hub, roles=BOTH_ROLES), label="pub",
                                    server=fabric_server) as pub:
            with trio.fail_after(30):
                await _burst(pub, group, BURST)
            await pub.join(unique("fence"))  # an ack: every frame before it was routed
        await trio.to_thread.run_sync(sub.next_line, "progress", WAIT_TIMEOUT * 4)
        done, rc = await trio.to_thread.run_sync(sub.finish)
    finally:
        await trio.to_thread.run_sync(sub.kill)
    assert done["problems"] == [] and rc == 0, f"{done['problems']} (exit {rc})\n{sub.describe()}"
    assert done["data"] == [f"m{i}" for i in range(BURST)]
    assert done["connectedEvents"] == [ready["connectionId"]] and done["disconnectedEvents"] == []


async def test_reliable_client_that_pauses_3_s_during_a_burst_keeps_its_session(fabric_server):
    """It reads nothing and acks nothing for 3 s while 3000 messages arrive, then catches up."""
    hub, group = unique("burst_pause"), unique("g")
    async with (
        open_json_client(fabric_server.client_url(hub, roles=BOTH_ROLES), reliable=True, label="sub",
                         server=fabric_server) as sub,
        open_json_client(fabric_server.client_url(hub, roles=BOTH_ROLES), label="pub", server=fabric_server) as pub,
    ):
        await sub.join(group)
        await _burst(pub, group, BURST)
        await trio.sleep(3)  # the paused client (real time: the server's clocks are real)
        got = []
        while len(got) < BURST:
            msg = await sub.next_message()
            got.append((msg["sequenceId"], msg["data"]))
        assert got == [(i + 1, f"m{i}") for i in range(BURST)]
        await sub.send_json({"type": "sequenceAck", "sequenceId": BURST})
        await sub.join(unique("still-open"))  # the session is alive and answering
