"""The server the official Socket.IO conformance suites expect, built on the fabric's embedded API.

    python examples/socketio_conformance.py --host 127.0.0.1 --port 3000
    ../shared/conformance/socketio/run.sh 127.0.0.1 3000        # 25 + 32 tests

It doubles as an example of the Socket.IO handler API (python-socketio's vocabulary):

- ``/socket.io/``: Socket.IO v5. Namespaces ``/`` and ``/custom`` (any other is refused
  with ``{"message":"Invalid namespace"}``). On connect each emits ``auth`` with the CONNECT
  payload; on ``/``, ``message`` is echoed back as ``message-back`` and ``message-with-ack``
  is acknowledged with its own arguments (binary stays binary).
- ``/engine.io/``: a bare Engine.IO v4 endpoint echoing every message.
- Both: ping interval 300 ms, ping timeout 200 ms, maxPayload 1 000 000, CORS ``*``;
  connect timeout 1 s.
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

CONFIG = """
[socketio]
path = "/socket.io/"
hub = "conformance"
ping_interval = 0.3
ping_timeout = 0.2
connect_timeout = 1.0
max_http_buffer_size = 1000000
cors_allowed_origins = ["*"]
"""


class EchoEngine:
    """A bare Engine.IO app: every message goes back to its sender unchanged."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery

    async def on_open(self, conn, request) -> None:
        self.nursery.start_soon(conn.serve)

    async def on_message(self, conn, data: str | bytes) -> None:
        conn.send_message(data)

    def on_close(self, conn, reason, description: str) -> None:
        pass


def build_socketio(fab: fabric.Fabric) -> None:
    """The Socket.IO suite's handlers, the way an app would write them."""
    sio = fab.socketio()
    sio.namespaces = {"/", "/custom"}

    @sio.event
    async def connect(sid, environ, auth):
        await sio.emit("auth", auth if auth is not None else {}, to=sid)

    @sio.on("message")
    async def message(sid, *args):
        await sio.emit("message-back", args, to=sid)

    @sio.on("message-with-ack")
    def message_with_ack(sid, *args):
        return args  # the acknowledgement: every argument, as received

    @sio.on("connect", namespace="/custom")
    async def connect_custom(sid, environ, auth):
        await sio.emit("auth", auth if auth is not None else {}, to=sid, namespace="/custom")


async def main(host: str, port: int) -> None:
    config = loads_config(CONFIG, source="socketio_conformance.py", env={})
    async with fabric.open_fabric(config) as fab, trio.open_nursery() as nursery:
        build_socketio(fab)
        fab.socketio_edge.mount_engine("/engine.io/", EchoEngine(nursery))
        bound = await nursery.start(fab.serve, host, port)
        print(f"listening on http://{host}:{bound} (Socket.IO /socket.io/, Engine.IO /engine.io/)", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("--host", default="127.0.0.1")
    cli.add_argument("--port", type=int, default=3000)
    cli.add_argument("--log-level", default="warning")
    options = cli.parse_args()
    logging.basicConfig(level=options.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    trio.run(main, options.host, options.port)
