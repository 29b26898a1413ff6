"""``tunnel:///...`` event handlers in process: a hub's CloudEvents go through a connected
tunnel to a handler app that has no port of its own. The app side is the Python tunnel
client serving the upstream tests' ``CloudEventsApp`` (which checks every CloudEvents header
and ``ce-signature``), so the same handler contract is exercised as over HTTP."""

from __future__ import annotations

import json

import attrs
import pytest
import trio

import fabric
from fabric.appserver import tunnel_protocol as tp
from fabric.appserver.tunnel import to_request, uses_tunnel
from fabric.config import SYSTEM_EVENTS, ConfigError, EventHandlerConfig, HubConfig
from fabric.core.events import ConnectRejected, ConnectResponse, EventHandler, UserEventResponse
from fabric.core.payload import DataType, Payload
from fabric.testing import ConnectionRejected, connect_in_process
from tests.appserver.webhook.support import AppTransport, CloudEventsApp

from .conftest import KEY, tunnel_config
from .tunnel_client import TunnelClient

HUB = "up"
TUNNEL = EventHandlerConfig("tunnel:///eventhandler/{event}", "*", SYSTEM_EVENTS)


class Handler(EventHandler):
    def __init__(self) -> None:
        self.seen: list[tuple] = []
        self.changed = trio.Event()

    def _saw(self, *item) -> None:
        self.seen.append(item)
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, kind: str) -> tuple:
        while True:
            for item in self.seen:
                if item[0] == kind:
                    return item
            await self.changed.wait()

    async def on_connect(self, request):
        self._saw("connect", request.connection_id, dict(request.query))
        if request.query.get("name") == ["bad"]:
            raise ConnectRejected(401, "no bad names")
        return ConnectResponse(user_id="u-" + request.query.get("name", ["anon"])[0])

    async def on_connected(self, context):
        self._saw("connected", context.connection_id, context.user_id)

    async def on_disconnected(self, context, reason):
        self._saw("disconnected", context.connection_id, reason)

    async def handle_user_event(self, request):
        self._saw("message", request.event, request.payload.body)
        return UserEventResponse(payload=Payload(DataType.TEXT, b"echo:" + request.payload.body))


def hub_config(*handlers: EventHandlerConfig):
    config = tunnel_config(upstream_timeout=5.0)
    return attrs.evolve(config, hubs={HUB: HubConfig(event_handlers=handlers or (TUNNEL,))})


async def serve_app(tunnel: TunnelClient, app: CloudEventsApp) -> None:
    async def handle(request: tp.HttpRequest):
        http_request = to_request(request, max_body=1 << 20)
        assert request.url.startswith("http://") and "/eventhandler/" in request.url
        response = await app.handle_http(http_request)
        headers: dict[str, list[str]] = {}
        for name, value in response.headers:
            headers.setdefault(name, []).append(value)
        return response.status, headers, response.body

    await tunnel.serve(handle)


async def open_client(fab, **query: str):
    client = await connect_in_process(fab, HUB, query=query)
    connected = json.loads(await client.receive())
    assert connected["event"] == "connected", connected
    return client, connected


def test_tunnel_urls_are_valid_event_handler_urls():
    assert uses_tunnel(HubConfig(event_handlers=(TUNNEL,)))
    assert not uses_tunnel(HubConfig(event_handlers=(EventHandlerConfig("http://h/x"),)))
    for bad in ("tunnel://host/x", "tunnel:x", "tunnel:///x#f"):
        with pytest.raises(ConfigError, match="tunnel"):
            EventHandlerConfig(bad)


async def test_events_go_through_the_tunnel_to_a_handler_without_a_port():
    async with fabric.open_fabric(hub_config()) as fab:
        handler = Handler()
        app = CloudEventsApp(handler, keys=(KEY,))
        tunnel = await TunnelClient.open(fab, HUB, sub="local-dev")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_app, tunnel, app)
            client, connected = await open_client(fab, name="zed")
            assert connected["userId"] == "u-zed"
            await client.send_json({"type": "event", "event": "hello", "dataType": "text", "data": "hi",
                                    "ackId": 1})
            replies = [json.loads(await client.receive()) for _ in range(2)]
            assert {"type": "message", "from": "server", "dataType": "text", "data": "echo:hi"} in replies
            await client.aclose()
            with trio.fail_after(5):
                await handler.wait_for("disconnected")
            assert [s[0] for s in handler.seen] == ["connect", "connected", "message", "disconnected"]
            assert app.seen[0].method == "OPTIONS"  # abuse protection, through the tunnel
            assert app.signature_failures == 0
            # the handler refuses: its status reaches the client
            with pytest.raises(ConnectionRejected) as caught:
                await connect_in_process(fab, HUB, query={"name": "bad"})
            assert caught.value.status == 401
            nursery.cancel_scope.cancel()
        await tunnel.aclose()


async def test_without_a_tunnel_connect_fails_at_once():
    async with fabric.open_fabric(hub_config()) as fab:
        with trio.fail_after(2):  # not upstream_timeout (5 s)
            with pytest.raises(ConnectionRejected) as caught:
                await connect_in_process(fab, HUB)
        assert caught.value.status == 500
        assert b"no tunnel" in caught.value.body


async def test_a_tunnel_lost_mid_event_fails_that_event_at_once():
    async with fabric.open_fabric(hub_config()) as fab:
        tunnel = await TunnelClient.open(fab, HUB)
        outcome = []

        async def connect():
            with pytest.raises(ConnectionRejected) as caught:
                await connect_in_process(fab, HUB)
            outcome.append((trio.current_time(), caught.value.status, caught.value.body))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(connect)
            validate = await tunnel.receive()
            assert isinstance(validate, tp.HttpRequest) and validate.method == "OPTIONS"
            await tunnel.send(tp.HttpResponse(validate.ack_id, 200, {"WebHook-Allowed-Origin": ["*"]}))
            event = await tunnel.receive()
            assert event.header("ce-type") == "azure.webpubsub.sys.connect"
            lost_at = trio.current_time()
            await trio.aclose_forcefully(tunnel.client.stream)
        ((at, status, body),) = outcome
        assert status == 500 and b"closed" in body and at - lost_at < 1.0


async def test_a_streamed_answer_is_assembled():
    async with fabric.open_fabric(hub_config()) as fab:
        tunnel = await TunnelClient.open(fab, HUB)

        async def app_side():
            while True:
                request = await tunnel.receive(timeout=10)
                if request.method == "OPTIONS":
                    await tunnel.send(tp.HttpResponse(request.ack_id, 200, {"WebHook-Allowed-Origin": ["*"]}))
                elif request.header("ce-type") == "azure.webpubsub.sys.connect":
                    await tunnel.send(tp.HttpResponse(request.ack_id, 200, {"Content-Type": ["application/json"]},
                                                      b'{"userId":', True))
                    await tunnel.send(tp.HttpResponse(request.ack_id, 200, {}, b'"streamed"}', True))
                    await tunnel.send(tp.HttpResponse(request.ack_id, 200, {}, None, False))
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(app_side)
            client, connected = await open_client(fab)
        assert connected["userId"] == "streamed"
        await client.aclose()
        await tunnel.aclose()


async def test_http_and_tunnel_handlers_in_one_hub():
    http = EventHandlerConfig("http://upstream.test/{event}", "", ("connect",))
    tunnelled = EventHandlerConfig("tunnel:///eventhandler/{event}", "*", ("connected", "disconnected"))
    async with fabric.open_fabric(hub_config(http, tunnelled)) as fab:
        over_http, over_tunnel = Handler(), Handler()
        http_app = CloudEventsApp(over_http, keys=(KEY,))
        fab.upstream_transport = AppTransport(http_app)  # the fallback for http:// URLs
        tunnel_app = CloudEventsApp(over_tunnel, keys=(KEY,))
        tunnel = await TunnelClient.open(fab, HUB)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_app, tunnel, tunnel_app)
            client, connected = await open_client(fab, name="mixed")
            assert connected["userId"] == "u-mixed"
            with trio.fail_after(5):
                await over_tunnel.wait_for("connected")
            await client.aclose()
            with trio.fail_after(5):
                await over_tunnel.wait_for("disconnected")
            assert [s[0] for s in over_http.seen] == ["connect"]
            nursery.cancel_scope.cancel()
        await tunnel.aclose()


async def test_a_connections_events_follow_the_app_server_that_accepted_it():
    async with fabric.open_fabric(hub_config()) as fab:
        served: list[tuple[str, str, str]] = []  # (app server, event, connection id)

        def app_for(name: str) -> CloudEventsApp:
            app = CloudEventsApp(Handler(), keys=(KEY,))
            inner = app.handle_http

            async def handle_http(request):
                if request.method == "POST":
                    served.append((name, request.header("ce-eventname"), request.header("ce-connectionid")))
                return await inner(request)

            app.handle_http = handle_http
            return app

        tunnels = {name: await TunnelClient.open(fab, HUB, sub=name) for name in ("app-A", "app-B")}
        async with trio.open_nursery() as nursery:
            for name, tunnel in tunnels.items():
                nursery.start_soon(serve_app, tunnel, app_for(name))
            # Connection ids are random and tunnels are picked by rendezvous hashing, so 12
            # connections all land on one app server once in 2,048 runs: open more until both
            # have some (at most 64: once in 2**63).
            clients = []
            while len(clients) < 12 or (len({server for server, _, _ in served}) < 2 and len(clients) < 64):
                client = await open_client(fab, name=str(len(clients)))
                await client[0].send_json({"type": "event", "event": "ping", "dataType": "text", "data": "x"})
                await client[0].receive()
                clients.append(client)
            by_connection: dict[str, set[str]] = {}
            for server, _, cid in served:
                by_connection.setdefault(cid, set()).add(server)
            assert len(by_connection) == len(clients) and all(len(s) == 1 for s in by_connection.values())
            assert {next(iter(s)) for s in by_connection.values()} == {"app-A", "app-B"}
            # app-A goes away: "prefer" moves its connections' events to app-B
            await trio.aclose_forcefully(tunnels["app-A"].client.stream)
            with trio.fail_after(3):
                while len(fab.tunnels.tunnels(HUB)) != 1:
                    await trio.sleep(0.01)
            served.clear()
            for client, _ in clients:
                await client.send_json({"type": "event", "event": "ping", "dataType": "text", "data": "x"})
                assert json.loads(await client.receive())["data"] == "echo:x"
            assert {server for server, _, _ in served} == {"app-B"}
            nursery.cancel_scope.cancel()
        await tunnels["app-B"].aclose()


async def test_require_stickiness_fails_when_the_app_server_is_gone():
    import httpx

    async with fabric.open_fabric(hub_config()) as fab:
        transport = fab.tunnels.transport(HUB, sticky="require")
        transport.PIN_WAIT = 0.3
        first = await TunnelClient.open(fab, HUB, sub="only-here")

        async def answer(tunnel: TunnelClient, status: int = 200) -> None:
            request = await tunnel.receive()
            await tunnel.send(tp.HttpResponse(request.ack_id, status, {}, b"{}"))

        headers = {"ce-type": "azure.webpubsub.sys.connect", "ce-connectionId": "c1"}

        async def post(http, url: str, headers: dict, content: bytes) -> httpx.Response:
            # as the webhook client does: an httpx.Request, not client.post (which would drop
            # the scheme of a host-less tunnel:/// URL when merging it with a base URL)
            return await http.send(httpx.Request("POST", httpx.URL(url), headers=headers, content=content))

        async with httpx.AsyncClient(transport=transport) as http, trio.open_nursery() as nursery:
            nursery.start_soon(answer, first)
            response = await post(http, "tunnel:///eventhandler/connect", headers, b"{}")
            assert response.status_code == 200 and transport.pinned("c1") == "only-here"
            await trio.aclose_forcefully(first.client.stream)
            other = await TunnelClient.open(fab, HUB, sub="somebody-else")
            with pytest.raises(httpx.ConnectError, match="app server only-here"):
                await post(http, "tunnel:///eventhandler/message", {"ce-connectionId": "c1"}, b"4")
            # the same app server reconnecting in time is waited for
            transport.PIN_WAIT = 5.0

            back = []

            async def come_back():
                await trio.sleep(0.2)
                back.append(await TunnelClient.open(fab, HUB, sub="only-here"))
                await answer(back[0], 204)

            nursery.start_soon(come_back)
            response = await post(http, "tunnel:///eventhandler/message", {"ce-connectionId": "c1"}, b"4")
            assert response.status_code == 204
            # disconnected (still to the pinned app server) forgets the pin
            nursery.start_soon(answer, back[0])
            await post(http, "tunnel:///eventhandler/disconnected",
                       {"ce-type": "azure.webpubsub.sys.disconnected", "ce-connectionId": "c1"}, b"{}")
            assert transport.pinned("c1") is None
            await other.aclose()
            await back[0].aclose()


async def test_an_answer_header_http_cannot_carry_fails_that_event_and_frees_its_slot():
    # Found by a hostile-app run: a header value such as "é€" made building the answer raise
    # (a traceback, an InternalServerError ack), and a streamed answer's slot stayed taken
    # until the tunnel closed, buffering its later parts (1,024 such events filled the tunnel).
    async with fabric.open_fabric(hub_config()) as fab:
        tunnel = await TunnelClient.open(fab, HUB)

        async def app_side():
            while True:
                request = await tunnel.receive(timeout=10)
                if request.method == "OPTIONS":
                    await tunnel.send(tp.HttpResponse(request.ack_id, 200, {"WebHook-Allowed-Origin": ["*"]}))
                elif request.header("ce-type") == "azure.webpubsub.user.bad":
                    headers = {"Content-Type": ["text/plain"], "X-Odd": ["é€"]}
                    await tunnel.send(tp.HttpResponse(request.ack_id, 200, headers, b"first part", True))
                    await tunnel.send(tp.HttpResponse(request.ack_id, 200, {}, b"x" * 1000, True))
                elif (request.header("ce-type") or "").startswith("azure.webpubsub.user."):
                    await tunnel.send(tp.HttpResponse(request.ack_id, 200, {"Content-Type": ["text/plain"]},
                                                      b"fine"))
                else:  # connect, connected
                    await tunnel.send(tp.HttpResponse(request.ack_id, 204, {}))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(app_side)
            client, _ = await open_client(fab)
            for ack_id in (1, 2, 3):
                await client.send_json({"type": "event", "event": "bad", "ackId": ack_id, "dataType": "text",
                                        "data": "x"})
                ack = await client.receive_json()
                assert ack["ackId"] == ack_id and ack["success"] is False, ack
                assert "cannot carry" in ack["error"]["message"], ack
            await client.send_json({"type": "event", "event": "good", "ackId": 4, "dataType": "text", "data": "y"})
            assert (await client.receive_json())["data"] == "fine"
            assert (await client.receive_json())["success"] is True
            (stats,) = fab.tunnels.statistics()["tunnels"]
            assert stats["pending"] == 0
            nursery.cancel_scope.cancel()
        await client.aclose()
        await tunnel.aclose()
