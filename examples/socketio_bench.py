"""The Socket.IO benchmark contract on the fabric's embedded API (what ``loadgen.js --proto sio``
measures; ``benchmarks/node/sio_node.js`` is the reference implementation).

    python examples/socketio_bench.py --host 127.0.0.1 --port 3005
    node benchmarks/node/loadgen.js --proto sio --port 3005 -n 1000 -m 200 --pace e2e --window 16

Namespace ``/fanout``, served at ``/socket.io/`` (WebSocket and polling):

| client emits, with an ack | the server |
|---|---|
| ``join`` (room) | puts the socket in the room; acks ``true`` |
| ``publish`` (room, payload) | emits ``message`` (payload) to the room, sender excluded; acks ``true`` |
| ``echo`` (payload) | acks with the payload |

``join`` and ``echo`` are plain functions: they run inline in the connection's reader and
their return value is the acknowledgement. ``publish`` awaits the broadcast (a hub group
publication, encoded once for every recipient), so it is a coroutine; with
``async_handlers = False`` it is awaited in the connection's reader, so a publisher's
messages go out in the order it sent them (as Node's do).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import fabric  # noqa: E402
from fabric.config import loads_config  # noqa: E402

NS = "/fanout"

CONFIG = """
[socketio]
path = "/socket.io/"
hub = "bench"
"""


def build(fab: fabric.Fabric) -> None:
    sio = fab.socketio()
    # One client's events are handled in order (Node's behaviour for these handlers): the
    # publisher's messages reach the room in the order it sent them.
    sio.async_handlers = False

    @sio.on("join", namespace=NS)
    async def join(sid, room):
        await sio.enter_room(sid, str(room), namespace=NS)
        return True

    @sio.on("publish", namespace=NS)
    async def publish(sid, room, payload):
        await sio.emit("message", payload, to=str(room), skip_sid=sid, namespace=NS)
        return True

    @sio.on("echo", namespace=NS)
    def echo(sid, payload):
        return payload


async def main(host: str, port: int) -> None:
    config = loads_config(CONFIG, source="socketio_bench.py", env={})
    async with fabric.open_fabric(config) as fab, trio.open_nursery() as nursery:
        build(fab)
        bound = await nursery.start(fab.serve, host, port)
        print(f"listening on http://{host}:{bound} (Socket.IO /socket.io/, namespace {NS})", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--host", default="127.0.0.1")
    cli.add_argument("--port", type=int, default=3005)
    cli.add_argument("--log-level", default="warning")
    options = cli.parse_args()
    logging.basicConfig(level=options.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    trio.run(main, options.host, options.port)
