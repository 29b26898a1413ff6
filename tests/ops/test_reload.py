"""Config reload: keys, hubs and event handlers change under load; the old key stops
working, the new one works, nothing disconnects. Restart-only settings keep their value."""

from __future__ import annotations

import attrs
import pytest
import trio

import fabric
from fabric.config import SYSTEM_EVENTS, EventHandlerConfig, HubConfig, loads_config, plan_reload
from fabric.core.events import EventHandler
from fabric.testing import ConnectionRejected, connect_in_process
from tests.appserver.rest.rest_support import RestClient, connect
from tests.appserver.webhook.support import AppTransport, CloudEventsApp
from tests.fabric_support import quick_config

OLD = "old-access-key-0123456789abcdef"
NEW = "new-access-key-fedcba9876543210"
ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")


def handlers(path: str):
    return (EventHandlerConfig(f"http://upstream.test/{path}/{{event}}", "*", SYSTEM_EVENTS),)


def config(key: str, path: str, **server):
    base = quick_config(access_keys=(key,), **server)
    return attrs.evolve(base, hubs={"r": HubConfig(event_handlers=handlers(path))})


class Accepting(EventHandler):
    """Answers every user event with no reply."""

    async def on_user_event(self, context, event, payload):
        return None


class RoutingApp:
    """Two handler apps behind one transport, told apart by the URL path."""

    def __init__(self) -> None:
        self.a = CloudEventsApp(Accepting(), keys=(OLD,))
        self.b = CloudEventsApp(Accepting(), keys=(NEW,))

    async def handle_http(self, request):
        app = self.a if request.path.startswith("/a/") else self.b
        return await app.handle_http(request)


async def test_keys_and_handlers_change_under_load_and_nothing_disconnects():
    routing = RoutingApp()
    async with fabric.open_fabric(config(OLD, "a")) as fab:
        fab.upstream_transport = AppTransport(routing)
        clients = [await connect(fab, "r", user_id=f"u{i}", roles=ROLES) for i in range(5)]
        for client in clients:
            await client.send_json({"type": "joinGroup", "group": "load", "ackId": 1})
            while (await client.receive_json()).get("type") != "ack":
                pass
        await routing.a.wait_for("connected", 5)
        hub = fab.running_hubs()["r"]
        sent = 0
        received = [0] * len(clients)
        stop = trio.Event()

        async def publish():
            nonlocal sent
            while not stop.is_set():
                await clients[0].send_json({"type": "sendToGroup", "group": "load", "dataType": "json",
                                            "data": {"n": sent}})
                sent += 1
                await trio.sleep(0.002)

        async def read(i):
            while True:
                message = await clients[i].receive_json()
                if message.get("type") == "message" and message.get("group") == "load":
                    received[i] += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish)
            for i in range(len(clients)):
                nursery.start_soon(read, i)
            await trio.sleep(0.1)
            plan = await fab.reload(config(NEW, "b"))
            assert plan.applied == ("hubs.r.event_handlers", "server.access_keys"), plan
            await trio.sleep(0.1)
            stop.set()
            await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
        assert sent > 10 and all(n == sent for n in received), (sent, received)
        assert hub.counters["connections_closed"] == 0 and len(hub.connections) == 5

        # the old key: refused for clients and REST; the new key works for both
        old_token = mint_client_token(OLD, "r")
        with pytest.raises(ConnectionRejected) as refused:
            await connect_in_process(fab, "r", token=old_token)
        assert refused.value.status == 401
        newcomer = await connect(fab, "r", token=mint_client_token(NEW, "r"), roles=ROLES)
        assert (await RestClient(fab, key=OLD).send("/api/hubs/r/:send", "x")).status == 401
        assert (await RestClient(fab, key=NEW).send("/api/hubs/r/:send", "x")).status == 202

        # events go to the new handler, signed with the new key
        before = len(routing.a.events("hello"))
        await clients[1].send_json({"type": "event", "event": "hello", "dataType": "text", "data": "hi", "ackId": 9})
        while (answer := await clients[1].receive_json()).get("type") != "ack":
            pass
        assert answer["success"] is True, answer
        assert len(routing.b.events("hello")) == 1 and len(routing.a.events("hello")) == before
        assert routing.b.signature_failures == 0
        for client in (*clients, newcomer):
            await client.aclose()


def mint_client_token(key: str, hub: str) -> str:
    from fabric.core.auth import mint_client_token as mint

    return mint(key=key, endpoint="http://fabric.local", hub=hub, roles=ROLES)


def test_restart_only_settings_keep_their_running_value():
    old = loads_config('[server]\nport = 8080\naccess_keys = ["a-key"]\n[socketio]\nping_interval = 25\n', env={})
    new = loads_config('[server]\nport = 9090\naccess_keys = ["b-key"]\nupstream_timeout = 3\n'
                       '[socketio]\nping_interval = 5\n[metrics]\nenabled = false\n', env={})
    plan = plan_reload(old, new)
    assert plan.applied == ("server.access_keys", "server.upstream_timeout")
    assert plan.needs_restart == ("metrics.enabled", "server.port", "socketio.ping_interval")
    assert plan.config.server.port == 8080 and plan.config.server.access_keys == ("b-key",)
    assert plan.config.socketio.ping_interval == 25 and plan.config.metrics.enabled is True
    assert plan.config.server.upstream_timeout == 3


async def test_a_reload_without_keys_keeps_the_generated_key():
    async with fabric.open_fabric(quick_config(), access_key="generated-key-0123456789") as fab:
        plan = await fab.reload(quick_config())
        assert fab.access_keys == ("generated-key-0123456789",) and plan.applied == ()


async def test_handlers_added_to_a_running_hub_start_receiving():
    app = CloudEventsApp(Accepting(), keys=(OLD,))
    async with fabric.open_fabric(quick_config(access_keys=(OLD,))) as fab:
        fab.upstream_transport = AppTransport(app)
        client = await connect(fab, "r", user_id="u", roles=ROLES)
        await client.send_json({"type": "event", "event": "e", "dataType": "text", "data": "x", "ackId": 1})
        assert (await client.receive_json())["error"]["name"] == "NotFound"
        await fab.reload(attrs.evolve(fab.config, hubs={"r": HubConfig(event_handlers=handlers("a"))}))
        await client.send_json({"type": "event", "event": "e", "dataType": "text", "data": "x", "ackId": 2})
        assert (await client.receive_json())["success"] is True
        assert len(app.events("e")) == 1
        await client.aclose()
