"""The Socket.IO app the interop tests drive (run as a subprocess, like a user's app).

    python tests/socketio/sio_app.py --port 0      # prints "listening on http://HOST:PORT"
    python tests/socketio/sio_app.py --port 0 --redis redis://127.0.0.1:6379/0 --recovery 30 --halt
                                                   # one node of several (tests/scaleout)

Hub ``siotest`` at ``/socket.io/`` (no token) with connection-state recovery (5 s), and hub
``azhub`` at ``/clients/socketio/hubs/azhub/`` (anonymous allowed). Access key ``test-key``.

Events (namespace ``/`` unless said):
- ``echo(*args)`` -> ack with the same arguments (binary stays binary).
- ``join(room)`` / ``leave(room)`` -> ack ``rooms(sid)``.
- ``broadcast(room, *args)`` -> ``news`` with ``args`` to the room, sender included; ack ``"ok"``.
- ``broadcast_others(room, *args)`` -> ``news`` to the room but the sender.
- ``burst(room, count)`` -> ``seq`` events numbered 0..count-1 to the room; ack ``count``.
- ``ask(question)`` -> the server ``call``s the client's ``question`` handler and acks with
  what the client answered (an ack server -> client inside an ack client -> server).
- ``whoami()`` -> ack ``{"sid", "transport", "recovered", "session"}``; ``remember(v)``
  stores ``v`` in the socket's session.
- ``kick()`` -> the server disconnects the socket.
- ``kept()`` -> ack: how many sockets this node keeps for recovery.
- ``halt_node()`` (with ``--halt`` only) -> the process stops, as a node that goes away.
- namespace ``/admin``: connect refused unless ``auth == {"token": "secret"}``, with data.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import fabric  # noqa: E402
from fabric.config import loads_config  # noqa: E402
from fabric.socketio import ConnectionRefusedError  # noqa: E402

CONFIG = """
[server]
access_keys = ["test-key"]
shutdown_timeout = 1.0

[socketio]
path = "/socket.io/"
hub = "siotest"
ping_interval = 1.0
ping_timeout = 1.0
connection_state_recovery = 5.0
cors_allowed_origins = ["*"]

[hubs.azhub]
anonymous_connect = true
"""


def build(fab: fabric.Fabric, halt: trio.CancelScope | None = None) -> None:
    for hub in ("siotest", "azhub"):
        install(fab.socketio(hub), halt)


def install(sio, halt: trio.CancelScope | None = None) -> None:
    sio.namespaces = {"/", "/admin"}

    @sio.event
    def echo(sid, *args):
        return args

    @sio.event
    async def join(sid, room):
        await sio.enter_room(sid, room)
        return sio.rooms(sid)

    @sio.event
    async def leave(sid, room):
        await sio.leave_room(sid, room)
        return sio.rooms(sid)

    @sio.event
    async def broadcast(sid, room, *args):
        await sio.to(room).emit("news", *args)
        return "ok"

    @sio.event
    async def broadcast_others(sid, room, *args):
        await sio.emit("news", args, room=room, skip_sid=sid)
        return "ok"

    @sio.event
    async def burst(sid, room, count):
        for i in range(count):
            await sio.emit("seq", i, room=room)
        return count

    @sio.event
    async def ask(sid, question):
        return await sio.call("question", question, to=sid, timeout=5)

    @sio.event
    async def whoami(sid):
        session = await sio.get_session(sid)
        return {"sid": sid, "transport": sio.transport(sid), "recovered": sio.recovered(sid),
                "session": session.get("value")}

    @sio.event
    async def remember(sid, value):
        async with sio.session(sid) as session:
            session["value"] = value
        return "ok"

    @sio.event
    async def kick(sid):
        await sio.disconnect(sid)

    @sio.event
    def kept(sid):
        recovery = sio.statistics()["recovery"]
        return recovery["sessions"] if recovery else 0

    if halt is not None:
        @sio.event
        def halt_node(sid):
            halt.cancel()

    @sio.on("connect", namespace="/admin")
    def admin_connect(sid, environ, auth):
        if auth != {"token": "secret"}:
            raise ConnectionRefusedError("not authorized", {"need": "token"})

    @sio.on("echo", namespace="/admin")
    def admin_echo(sid, *args):
        return ["admin", *args]


async def main(host: str, port: int, redis: str | None = None, recovery: float | None = None,
               halt: bool = False) -> None:
    text = CONFIG
    if recovery is not None:
        text = text.replace("connection_state_recovery = 5.0", f"connection_state_recovery = {recovery}")
    if redis is not None:
        text += f'\n[broker]\nurl = "{redis}"\nchannel_prefix = "sio_app:"\n'
    config = loads_config(text, source="sio_app.py", env={})
    async with fabric.open_fabric(config) as fab, trio.open_nursery() as nursery:
        build(fab, nursery.cancel_scope if halt else None)
        bound = await nursery.start(fab.serve, host, port)
        print(f"listening on http://{host}:{bound}", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    cli = argparse.ArgumentParser()
    cli.add_argument("--host", default="127.0.0.1")
    cli.add_argument("--port", type=int, default=0)
    cli.add_argument("--redis", help="a node of several: the broker's Redis URL")
    cli.add_argument("--recovery", type=float, help="seconds a dropped socket is kept (default 5)")
    cli.add_argument("--halt", action="store_true", help="serve the halt_node event (the process stops)")
    options = cli.parse_args()
    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
    trio.run(main, options.host, options.port, options.redis, options.recovery, options.halt)
