"""An embedded fabric for the interop tests of invocations, metadata and group presence
(tests/interop/test_node22_sdks.py). Run as a subprocess, like `fabric serve`:

    python tests/interop/embedded_features_server.py --access-key KEY [--port 0] [--webhook HUB=URL]...

It prints the connection string (`Endpoint=...`) once it listens and serves until SIGINT/SIGTERM
(then exits 0).

- Hub `feat` has an in-process handler (``FeatureHandler``): user events/invocations `echo`
  (the payload back, with the request's metadata and `handler: in-process` as reply metadata),
  `slow` (waits until cancelled; `cancelled` answers how many were), `fail`
  (``UserEventError("Nope", ...)``), `boom` (raises), `presence` (the joined/left events seen, as
  JSON); it opts into group presence.
- Each `--webhook HUB=URL_TEMPLATE` hub is served by that upstream (e.g. the express 1.1 app)
  with every user and system event and the group presence events. The presence opt-in is a
  configuration field `fabric.config.EventHandlerConfig` does not have yet, so the hub's handler
  configuration is built here (the only part of this server that `fabric serve` cannot do today).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

import attrs
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project root, when run as a file

import fabric  # noqa: E402
from fabric.config import SYSTEM_EVENTS, EventHandlerConfig, HubConfig, load_config  # noqa: E402
from fabric.core.events import EventHandler, UserEventError, UserEventResponse  # noqa: E402

FEATURE_HUB = "feat"


@attrs.frozen
class PresenceHandlerConfig(EventHandlerConfig):
    """An event handler configuration with Azure's groupPresenceEvents opt-in."""

    group_presence_events: tuple[str, ...] = ("joined", "left")
    group_filters: tuple[str, ...] = ()


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


async def main(access_key: str, host: str, port: int, webhooks: list[str]) -> None:
    config = load_config(None, env={})
    hubs = dict(config.hubs)
    for spec in webhooks:
        hub, _, url = spec.partition("=")
        hubs[hub] = HubConfig(event_handlers=(PresenceHandlerConfig(url, "*", SYSTEM_EVENTS),))
    config = attrs.evolve(config, hubs=hubs)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with fabric.open_fabric(config, access_key=access_key,
                                      handlers={FEATURE_HUB: FeatureHandler()}) as fab:
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
    parser.add_argument("--webhook", action="append", default=[])
    args = parser.parse_args()
    trio.run(main, args.access_key, args.host, args.port, args.webhook)
