"""The Engine.IO edge over real TCP: a single packet (an ack) is written at once when the socket's
writer is idle, and through the outbox otherwise; a client that stops reading while acks pile up
(partial writes, then queued frames) still gets every ack, whole and in order."""

from __future__ import annotations

import json

import attrs
import trio

import fabric
from fabric.config import SocketIOConfig
from fabric.testing import connect_tcp
from tests.fabric_support import quick_config

BIG = "x" * 16_000


async def test_acks_keep_their_order_across_partial_writes(nursery):
    config = quick_config(outbox_max_bytes=64 << 20)
    config = attrs.evolve(config, socketio=SocketIOConfig(ping_interval=60.0, ping_timeout=30.0))
    async with fabric.open_fabric(config, access_key="k") as fab:
        sio = fab.socketio()

        @sio.on("big")
        def big(sid, n):
            return n, BIG  # a tuple: two arguments

        port = await nursery.start(fab.serve, "127.0.0.1", 0)
        client = await connect_tcp("127.0.0.1", port, "/socket.io/?EIO=4&transport=websocket")
        assert (await client.receive()).startswith("0{")
        await client.send("40")
        assert (await client.receive()).startswith("40{")
        engine = fab.socketio_edge._plain.engine
        conn = next(iter(engine.sessions.values()))
        assert conn.ws._raw is not None  # a TCP socket: single packets may be written at once (send_now)
        count = 400  # 6.4 MB of acks, more than the kernel buffers hold while we do not read
        for i in range(1, count + 1):
            await client.send(f'42{i}["big",{i}]')
        with trio.fail_after(10):  # the server has answered everything it could
            while conn.ws.outbox.queued_bytes == 0:
                await trio.sleep(0.01)
        seen = []
        with trio.fail_after(30):
            while len(seen) < count:
                message = await client.receive()
                if message == "2":
                    await client.send("3")
                    continue
                assert message.startswith("43"), message[:40]
                ack_id = int(message[2:message.index("[")])
                body = json.loads(message[message.index("["):])
                assert body == [ack_id, BIG]
                seen.append(ack_id)
        assert seen == list(range(1, count + 1))
        await client.aclose()
