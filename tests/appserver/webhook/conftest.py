"""Fixtures: a fabric whose hub ``up`` has a webhook handler served by an in-memory app.

``rig`` is parametrized: ``inprocess`` installs the test's EventHandler with
``fab.set_handler``; ``webhook`` puts the same handler behind ``CloudEventsApp`` and lets the
fabric reach it through its configured webhook. Scenario tests take ``rig`` and run twice.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio

import fabric
from fabric.core.events import EventHandler
from fabric.testing import connect_in_process

from .support import HUB, AppTransport, CloudEventsApp, make_config


@attrs.define
class Rig:
    mode: str
    fab: Any
    app: CloudEventsApp
    transport: AppTransport
    hub: str = HUB
    clients: list = attrs.Factory(list)

    def use(self, handler: EventHandler) -> None:
        if self.mode == "inprocess":
            self.fab.set_handler(self.hub, handler)
        else:
            self.app.handler = handler

    @property
    def webhook(self):
        return self.fab.webhook(self.hub)

    async def connect(self, **kw: Any):
        client = await connect(self.fab, self.hub, **kw)
        self.clients.append(client)
        return client

    async def aclose_clients(self) -> None:
        """Close what the test left open (a client that never answers the server's close
        frame would hold the fabric's graceful shutdown for its full close timeout)."""
        for client in self.clients:
            with trio.move_on_after(1):
                await client.aclose()


async def connect(fab, hub: str = HUB, **kw: Any):
    """Connect in process; for PubSub clients read system/connected and note the ids."""
    client = await connect_in_process(fab, hub, **kw)
    if client.subprotocol:
        connected = await client.receive_json()
        assert connected["type"] == "system" and connected["event"] == "connected", connected
        client.connection_id = connected["connectionId"]
        client.user_id = connected.get("userId")
    return client


@asynccontextmanager
async def open_rig(mode: str, **config: Any):
    """A fabric with hub ``up`` wired to a CloudEventsApp in memory (see the module doc)."""
    app = CloudEventsApp()
    transport = AppTransport(app)
    async with fabric.open_fabric(make_config(**config)) as fab:
        fab.upstream_transport = transport
        rig = Rig(mode, fab, app, transport)
        try:
            yield rig
        finally:
            await rig.aclose_clients()


@pytest.fixture(params=["inprocess", "webhook"])
async def rig(request):
    async with open_rig(request.param) as r:
        yield r


@pytest.fixture
async def webhook_rig():
    async with open_rig("webhook") as r:
        yield r
