"""An embedded fabric with an in-process event handler, for interop tests that need messages
*from the server* (`{"type":"message","from":"server",...}`) before the REST API and upstream
webhooks exist. Run as a subprocess, like `fabric serve`:

    python tests/interop/embedded_echo_server.py --access-key KEY [--port 0]

It prints the connection string (`Endpoint=...`) on a line of its own once it listens and
serves until SIGINT/SIGTERM (then exits 0). Hub `echo` has a handler for these user events:

- `echo`: replies with the event's payload (a server message to the sender only);
- `broadcast`: sends the payload to every connection in the hub (`send_to_all`), replies nothing;
- `fail`: raises `UserEventError("InternalServerError", ...)`, so the sender gets an ack error.

Only the public embedded API is used (`fabric.open_fabric`, `Fabric.serve`, `Fabric.hub`,
`fabric.EventHandler`), so this doubles as a check that embedding works end to end.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root, when run as a file

import fabric  # noqa: E402

ECHO_HUB = "echo"


class EchoHandler(fabric.EventHandler):
    def __init__(self) -> None:
        self.fabric = None  # set once open_fabric has yielded

    def handles_user_event(self, event: str) -> bool:
        return event in ("echo", "broadcast", "fail")

    async def on_user_event(self, context, event, payload):
        if event == "echo":
            return payload
        if event == "broadcast":
            await self.fabric.hub(context.hub).send_to_all(payload)
            return None
        raise fabric.UserEventError("InternalServerError", "the echo server was asked to fail")


async def main(access_key: str, host: str, port: int) -> None:
    handler = EchoHandler()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with fabric.open_fabric(access_key=access_key, handlers={ECHO_HUB: handler}) as fab:
            handler.fabric = fab
            async with trio.open_nursery() as nursery:
                await nursery.start(fab.serve, host, port)
                print(fab.connection_string(), flush=True)
                async for _ in signals:
                    break
                nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--access-key", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    trio.run(main, args.access_key, args.host, args.port)
