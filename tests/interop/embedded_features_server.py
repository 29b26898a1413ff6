"""An embedded fabric for the interop tests of invocations, metadata and group presence
(tests/interop/test_node22_sdks.py). Run as a subprocess, like `fabric serve`:

    python tests/interop/embedded_features_server.py --access-key KEY [--port 0]

It prints the connection string (`Endpoint=...`) once it listens and serves until SIGINT/SIGTERM
(then exits 0).

Hub `feat` has an in-process handler (``FeatureHandler``): user events/invocations `echo` (the
payload back, with the request's metadata and `handler: in-process` as reply metadata), `slow`
(waits until cancelled; `cancelled` answers how many were), `fail` (``UserEventError("Nope",
...)``), `boom` (raises), `presence` (the joined/left events it saw, as JSON: an in-process
handler opts into group presence by overriding ``on_group_joined``/``on_group_left``).
Webhook hubs need no embedding: the express 1.1 tests run `fabric serve` with a config file.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root, when run as a file

import fabric  # noqa: E402
from fabric.core.events import EventHandler, UserEventError, UserEventResponse  # noqa: E402

FEATURE_HUB = "feat"


class FeatureHandler(EventHandler):
    def __init__(self) -> None:
        self.cancelled = 0
        self.presence: list[list[str]] = []

    async def handle_user_event(self, request):
        event = request.event
        if event == "echo":
            return UserEventResponse(request.payload, metadata={**request.metadata, "handler": "in-process"})
        if event == "slow":
            try:
                await trio.sleep_forever()
            finally:
                self.cancelled += 1
        if event == "cancelled":
            return fabric.Payload.text(str(self.cancelled))
        if event == "fail":
            raise UserEventError("Nope", "the feature server says no")
        if event == "boom":
            raise RuntimeError("a bug in the handler")
        if event == "presence":
            return fabric.Payload.json(json.dumps(self.presence).encode())
        raise UserEventError("NotFound", f"no such event {event!r}")

    def handles_user_event(self, event: str) -> bool:
        return event in ("echo", "slow", "cancelled", "fail", "boom", "presence")

    async def on_group_joined(self, context, group):
        self.presence.append(["joined", context.connection_id, group])

    async def on_group_left(self, context, group):
        self.presence.append(["left", context.connection_id, group])


async def main(access_key: str, host: str, port: int) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with fabric.open_fabric(access_key=access_key, handlers={FEATURE_HUB: FeatureHandler()}) as fab:
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
