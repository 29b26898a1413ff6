"""The server tunnel against the real ``@azure/web-pubsub-socket.io`` 1.2.1 (Node, in
``tests/tunnel_js/``): an unmodified ``useAzureSocketIO`` app connects its tunnel to a
``fabric serve`` started here with the connection string it prints, and its operations reach
the service API; observed by Web PubSub clients in the groups that Socket.IO rooms are
(``0~b64url(ns)~b64url(room)``). The same tunnel serves ``tunnel:///`` event handlers to the
awps-tunnel proxy code shipped in the package.

Here the observers are Web PubSub clients, so rooms are joined with the adapter's own REST
calls, and what a socket.io client would receive is seen as the Engine.IO payload text a Web
PubSub client in that group receives; ``test_default_mode.py`` has socket.io clients.
"""

from __future__ import annotations

import base64
import json
import signal
import urllib.parse

import httpx
import pytest
import trio
from trio_websocket import ConnectionRejected

import fabric
from fabric.appserver.tunnel import TunnelError, TunnelReply

from .conftest import tunnel_config
from .node_support import Serve, free_port, open_node, open_serve, require_node, wps_client

pytestmark = pytest.mark.interop

HUB = "sio"


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def group(room: str = "", nsp: str = "/") -> str:
    return f"0~{b64(nsp)}~{b64(room) if room else ''}"


def only(connection_id: str) -> str:
    return f"connectionId eq '{connection_id}'"


async def nothing_before(client, marker: str, app, timeout: float = 10.0) -> None:
    """Send ``marker`` to ``client`` through the app; it must be the next thing it sees."""
    await app.call("sendToConnection", connectionId=client.connection_id, payload=marker)
    assert await client.next_data(timeout) == marker


async def rest(serve: Serve, method: str, path: str) -> int:
    target = f"{path}?api-version=2024-01-01"
    async with httpx.AsyncClient() as http:
        response = await http.request(method, serve.endpoint + target,
                                      headers={"Authorization": f"Bearer {serve.rest_token(target)}"})
    return response.status_code


async def rejected(url: str) -> int | None:
    """The HTTP status a Web PubSub client's upgrade is refused with (None: accepted)."""
    try:
        async with wps_client(url):
            return None
    except ConnectionRejected as exc:
        return exc.status_code


@pytest.fixture(autouse=True)
def _node():
    require_node()


# ---- fabric serve + the unmodified package --------------------------------------------------------


async def test_socketio_operations_through_the_tunnel_reach_the_service_api():
    async with open_serve() as serve, open_node("app.mjs", serve.connection_string, HUB) as app:
        # useAzureSocketIO resolved: the tunnel is up (ConnectionConnected arrived first)
        own = await app.call("ownPath")
        assert own["status"] == 403 and "removed by Web PubSub for Socket.IO" in own["body"]
        async with wps_client(serve.client_url(HUB)) as a, wps_client(serve.client_url(HUB)) as b:
            # socket.join, as the adapter's addAll sends it
            await app.call("addToGroups", groups=[group(), group("room1"), group("room3")], filter=only(a.connection_id))
            await app.call("addToGroups", groups=[group(), group("room2"), group("room3")], filter=only(b.connection_id))

            await app.call("emit", to="room1", event="hello", args=["room1"])  # groups/{g}/:send
            assert await a.next_data() == '42["hello","room1"]'
            await app.call("emit", event="all", args=[1])  # :send?filter='0~Lw~' in groups
            assert await a.next_data() == '42["all",1]'
            assert await b.next_data() == '42["all",1]'
            await app.call("emit", **{"except": "room1"}, event="others")
            assert await b.next_data() == '42["others"]'
            await nothing_before(a, "m1", app)
            # to([room1, room2]).except(room3): "A or B and not (C)" = A or (B and not C), as on Azure
            await app.call("emit", to=["room1", "room2"], **{"except": "room3"}, event="quirk")
            assert await a.next_data() == '42["quirk"]'
            await nothing_before(b, "m2", app)
            # socketsJoin / socketsLeave: :addToGroups / :removeFromGroups with a filter
            await app.call("socketsJoin", to="room2", rooms=["room4"])
            await app.call("emit", to="room4", event="r4")
            assert await b.next_data() == '42["r4"]'
            await app.call("socketsLeave", to="room2", rooms=["room4"])
            await app.call("emit", to="room4", event="gone")
            await nothing_before(b, "m3", app)
            # socket.leave: DELETE groups/{g}/connections/{id} (200 or 204 expected)
            await app.call("removeFromGroup", group=group("room1"), connectionId=a.connection_id)
            await app.call("emit", to="room1", event="left")
            await nothing_before(a, "m4", app)
            # a namespace, and binary attachments (one call: never split from their packet)
            await app.call("addToGroups", groups=[group("r", "/ns")], filter=only(a.connection_id))
            await app.call("emit", nsp="/ns", to="r", event="ns")
            assert await a.next_data() == '42/ns,["ns"]'
            await app.call("emit", to="room3", event="bin", args=[{"$bytes": base64.b64encode(b"\x01\x02\x03").decode()}])
            expected = '451-["bin",{"_placeholder":true,"num":0}]\x1ebAQID'
            assert await a.next_data() == expected and await b.next_data() == expected
            # disconnectSockets broadcasts DISCONNECT with data; only Socket.IO clients get it translated
            await app.call("disconnectSockets", to="room3")
            assert await a.next_data() == '41{"close":false}'
            assert await b.next_data() == '41{"close":false}'
            # one connection: connections/{id}/:send
            await app.call("sendToConnection", connectionId=b.connection_id, payload="2")
            assert await b.next_data() == "2"


async def test_bad_requests_from_the_app_get_clear_errors_and_touch_nothing_else():
    async with (
        open_serve() as serve,
        open_node("app.mjs", serve.connection_string, HUB) as app,
        wps_client(serve.client_url(HUB)) as client,
    ):
        # unknown connections: the same answers as REST over HTTP (202 / 204), so no error
        await app.call("sendToConnection", connectionId="nobody", payload="2")
        await app.call("removeFromGroup", group=group("r"), connectionId="nobody")
        # invalid input: the package sees the status and rejects
        answer = await app.request("addToGroups", groups=["\u0001bad"], filter=only(client.connection_id))
        assert not answer["ok"] and "unexpected status code 400" in answer["error"]
        answer = await app.request("sendToAll", payload="x", filter="connectionId eq")
        assert not answer["ok"] and "unexpected status code 400" in answer["error"]
        answer = await app.request("invoke", payload='41', filter="'0~Lw~' in groups")  # not an EVENT
        assert not answer["ok"] and "unexpected status code 400" in answer["error"]
        # no Socket.IO client to ask (the Web PubSub client is not one): an empty answer
        assert await app.call("invoke", payload='420["ev"]', filter="'0~Lw~' in groups") == ""
        # nothing else was touched
        await nothing_before(client, "still fine", app)


async def test_tunnel_loss_and_the_apps_reconnect():
    port = free_port()
    key = "tunnel-reconnect-test-key-0123456789abcdef"
    async with open_serve(port=port, key=key) as serve:
        connection_string = serve.connection_string
        async with open_node("app.mjs", connection_string, HUB) as app:
            async with wps_client(serve.client_url(HUB)) as client:
                await nothing_before(client, "before", app)
            await serve.child.stop(sig=signal.SIGINT)
            # the tunnel is gone: the app's calls fail (after the client SDK's own 3 retries, 1 s
            # apart), they do not hang
            with trio.fail_after(15):
                answer = await app.request("sendToConnection", connectionId="x", payload="2", timeout=15)
            assert not answer["ok"]
            async with open_serve(port=port, key=key) as again:
                assert again.connection_string == connection_string
                async with wps_client(again.client_url(HUB)) as client:
                    with trio.fail_after(15):  # the package retries every second
                        while not (await app.request("sendToConnection", connectionId=client.connection_id,
                                                     payload="after"))["ok"]:
                            await trio.sleep(0.2)
                    assert await client.next_data() == "after"


async def test_two_app_servers_on_one_hub():
    async with (
        open_serve() as serve,
        open_node("app.mjs", serve.connection_string, HUB, name="app-1") as one,
        open_node("app.mjs", serve.connection_string, HUB, name="app-2") as two,
        wps_client(serve.client_url(HUB)) as client,
    ):
        await one.call("addToGroups", groups=[group("shared")], filter=only(client.connection_id))
        await one.call("emit", to="shared", event="from-1")
        assert await client.next_data() == '42["from-1"]'
        await two.call("emit", to="shared", event="from-2")
        assert await client.next_data() == '42["from-2"]'


async def test_a_wrong_key_is_refused_and_the_app_never_starts():
    async with open_serve() as serve:
        forged = serve.connection_string.replace(serve.key, "not-the-key-0123456789abcdef0123456789")
        async with open_node("app.mjs", forged, HUB, ready=False) as app:
            await serve.child.wait_line(lambda s: "tunnel refused: InvalidSignature" in s, 10, stderr=True,
                                        what="refusal log line")
            with trio.move_on_after(2.5):  # the package retries every 2 s; it must never get in
                await app.wait_for(lambda o: o.get("event") == "ready", 3)
                pytest.fail("the app started with a forged key")


async def test_negotiate_tokens_are_accepted_by_the_socketio_endpoint():
    async with open_serve() as serve, open_node("app.mjs", serve.connection_string, HUB) as app:
        answer = await app.call("negotiate", options={"userId": "alice", "roles": ["webpubsub.joinLeaveGroup"]})
        assert answer["status"] == 200
        body = answer["body"]
        assert body["endpoint"] == serve.endpoint and body["path"] == f"/clients/socketio/hubs/{HUB}"
        for transports in (["polling"], ["websocket"]):
            result = await app.call("connectClient", endpoint=body["endpoint"], path=body["path"],
                                    token=body["token"], transports=transports)
            assert result["connected"], result
        tampered = body["token"][:-4] + ("AAAA" if not body["token"].endswith("AAAA") else "BBBB")
        result = await app.call("connectClient", endpoint=body["endpoint"], path=body["path"], token=tampered,
                                transports=["polling"])
        assert not result["connected"]
        # the service's own :generateToken?clientType=SocketIO mints the same kind of token
        target = f"/api/hubs/{HUB}/:generateToken?api-version=2024-01-01&clientType=SocketIO&userId=bob"
        async with httpx.AsyncClient() as http:
            response = await http.post(serve.endpoint + target,
                                       headers={"Authorization": f"Bearer {serve.rest_token(target)}"})
        assert response.status_code == 200
        result = await app.call("connectClient", endpoint=serve.endpoint, path=f"/clients/socketio/hubs/{HUB}",
                                token=response.json()["token"], transports=["websocket"])
        assert result["connected"], result


async def test_tunnel_event_handlers_reach_a_local_handler_without_a_port():
    hub = "up"
    async with open_serve("--event-handler", f"{hub}=tunnel:///eventhandler/{{event}}") as serve:
        # no tunnel yet: connecting fails at once with the handler's failure, not a hang
        with trio.fail_after(5):
            assert await rejected(serve.client_url(hub)) == 500
        async with open_node("upstream.mjs", serve.connection_string, hub) as upstream:
            url = serve.client_url(hub, query="name=zed")
            with trio.fail_after(10):  # a failed validation is retried after a second
                while await rejected(url) is not None:
                    await trio.sleep(0.3)
            async with wps_client(url) as client:
                assert client.connected["userId"] == "u-zed"
                await client.send_json({"type": "event", "event": "hello", "dataType": "text", "data": "hi",
                                        "ackId": 1})
                assert await client.next_data() == "echo:hi"
                seen = await upstream.wait_for(lambda o: o.get("event") == "message")
                assert (seen["eventName"], seen["data"], seen["userId"]) == ("hello", "hi", "u-zed")
            await upstream.wait_for(lambda o: o.get("event") == "disconnected")
            connected = await upstream.wait_for(lambda o: o.get("event") == "connected")
            assert connected["userId"] == "u-zed"
            # the handler refuses: the client sees the handler's status
            assert await rejected(serve.client_url(hub, query="name=bad")) == 401
            paths = [o["path"] for o in upstream.objects if o.get("event") == "proxied"]
            assert paths[0] == "/eventhandler/validate"  # abuse protection first, through the tunnel
            assert {"/eventhandler/connect", "/eventhandler/connected", "/eventhandler/hello",
                    "/eventhandler/disconnected"} <= set(paths)


# ---- an in-process fabric (to look inside) + the unmodified package ------------------------------------


async def _serve_in_process(fab) -> str:
    await fab.serve("127.0.0.1", 0)
    return fab.connection_string()


async def _wait(condition, timeout: float = 10.0, what: str = "condition") -> None:
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(0.02)
        return
    pytest.fail(f"timed out waiting for {what}")


async def test_several_tunnels_per_app_server_rebalance_reconnect_and_close():
    async with fabric.open_fabric(tunnel_config()) as fab:
        connection_string = await _serve_in_process(fab)
        async with open_node("app.mjs", connection_string, HUB) as app:
            servers = fab.tunnels.servers(HUB)
            assert len(servers) == 1
            (server, tunnels), = servers.items()
            assert len(server) == 36  # the package's per-process GUID, from the token's sub
            first = tunnels[0]
            # Rebalance: the app opens one more tunnel with target=, same app server
            assert first.rebalance(endpoint=fab.endpoint, target="t2", message="one more")
            await _wait(lambda: len(fab.tunnels.tunnels(HUB)) == 2, what="a second tunnel")
            assert {t.server for t in fab.tunnels.tunnels(HUB)} == {server}
            second = next(t for t in fab.tunnels.tunnels(HUB) if t is not first)
            assert second.target == "t2"
            # Reconnect: the app replaces that tunnel with one to target t3
            assert second.reconnect(endpoint=fab.endpoint, target="t3")
            await _wait(lambda: {t.target for t in fab.tunnels.tunnels(HUB)} == {None, "t3"}, what="t3 only")
            # the service closes a tunnel: the app reconnects it
            third = next(t for t in fab.tunnels.tunnels(HUB) if t.target == "t3")
            third.close(1001, "going away")
            await _wait(lambda: len(fab.tunnels.tunnels(HUB)) == 2 and third not in fab.tunnels.tunnels(HUB),
                        what="the reconnected tunnel")
            # ConnectionClose: the app stops that tunnel for good, and keeps the others
            assert first.stop("enough")
            await _wait(lambda: first not in fab.tunnels.tunnels(HUB), what="the stopped tunnel to go")
            await trio.sleep(2.5)
            assert len(fab.tunnels.tunnels(HUB)) == 1
            # the app still works through what is left
            await app.call("sendToConnection", connectionId="nobody", payload="2")


async def test_service_requests_reach_the_packages_handler_and_stream_back():
    """What part 2 will build on: a CloudEvent through the tunnel is answered by the app's
    Engine.IO server (handshake with sid = connection id), the socket.io packets it then
    writes come back as REST sends; and a streamed ``:invoke`` answer reaches the package."""
    async with fabric.open_fabric(tunnel_config()) as fab:
        connection_string = await _serve_in_process(fab)
        lines = [b'{"Payload":"430[\\"a\\"]"}\n', b'{"Payload":"431[\\"b\\"]"}\n']

        async def invoke(hub, request):
            async def parts():
                for line in lines:
                    await trio.sleep(0.05)
                    yield line
            return TunnelReply(200, b"", (), parts())

        fab.tunnels.add_operation("POST", ":invoke", invoke)
        async with open_node("app.mjs", connection_string, HUB) as app:
            streamed = await app.call("invoke", payload='420["ev"]', filter="'0~Lw~' in groups")
            assert streamed == b"".join(lines).decode()

            from fabric.testing import connect_in_process
            client = await connect_in_process(fab, HUB)
            cid = json.loads(await client.receive())["connectionId"]
            origin = urllib.parse.urlsplit(fab.endpoint).hostname

            def cloud_event(kind: str, event: str) -> dict:
                return {"ce-awpsversion": ["1.0"], "WebHook-Request-Origin": [origin], "ce-specversion": ["1.0"],
                        "ce-type": [f"azure.webpubsub.{kind}.{event}"], "ce-source": [f"/hubs/{HUB}/client/{cid}"],
                        "ce-id": ["1"], "ce-hub": [HUB], "ce-connectionId": [cid], "ce-eventName": [event]}

            validate = await fab.tunnels.request(HUB, "OPTIONS", "http://x/eventhandler/",
                                                 {"WebHook-Request-Origin": [origin], "ce-awpsversion": ["1.0"]})
            assert validate.status == 200 and validate.headers["webhook-allowed-origin"] == ("*",)
            body = json.dumps({"claims": {}, "query": {"EIO": ["4"], "transport": ["polling"]}, "headers": {},
                               "subprotocols": [], "clientCertificates": []}).encode()
            connect = await fab.tunnels.request(HUB, "POST", "http://x/eventhandler/",
                                                {**cloud_event("sys", "connect"),
                                                 "Content-Type": ["application/json"]}, body, key=cid)
            handshake = json.loads(await connect.read())["socketio"]
            assert connect.status == 200 and handshake["sid"] == cid and handshake["upgrades"] == []
            assert {"pingInterval", "pingTimeout", "maxPayload"} <= set(handshake)
            # the client's Socket.IO CONNECT, as a polling-format payload in a user event
            message = await fab.tunnels.request(HUB, "POST", "http://x/eventhandler/",
                                                {**cloud_event("user", "message"), "Content-Type": ["text/plain"]},
                                                b"40", key=cid, server=connect.server)
            assert message.status == 200
            reply = json.loads(await client.receive())
            assert reply["data"].startswith('40{"sid":')  # socket.io answered through :send to cid
            unknown = await fab.tunnels.request(HUB, "POST", "http://x/eventhandler/",
                                                {**cloud_event("user", "message"), "ce-connectionId": ["nobody"],
                                                 "Content-Type": ["text/plain"]}, b"40")
            assert unknown.status == 400 and b"cannot find ConnectionId nobody" in await unknown.read()
            gone = await fab.tunnels.request(HUB, "POST", "http://x/eventhandler/",
                                             {**cloud_event("sys", "disconnected"),
                                              "Content-Type": ["application/json"]}, b'{"reason":""}', key=cid)
            assert gone.status in (200, 204)
            await client.aclose()


async def test_an_app_that_stops_reading_is_cut_off_and_comes_back():
    config = tunnel_config(stall_timeout=1.0, keepalive_interval=0.3, outbox_max_bytes=512 * 1024)
    async with fabric.open_fabric(config) as fab:
        connection_string = await _serve_in_process(fab)
        async with open_node("app.mjs", connection_string, HUB) as app:
            (tunnel,) = fab.tunnels.tunnels(HUB)
            app.proc.send_signal(signal.SIGSTOP)  # the app stops reading (and everything else)
            try:
                failures = []

                async def ask():
                    try:
                        await fab.tunnels.request(HUB, "POST", "http://x/eventhandler/", {}, b"z" * 200_000)
                    except TunnelError as exc:
                        failures.append(exc)

                with trio.fail_after(8):
                    async with trio.open_nursery() as nursery:
                        for _ in range(50):
                            nursery.start_soon(ask)
                assert len(failures) == 50
                assert tunnel not in fab.tunnels.tunnels(HUB)
                assert fab.tunnels.counters["slow_consumers"] == 1
            finally:
                app.proc.send_signal(signal.SIGCONT)
            # it comes back by itself, through a new tunnel of the same app server
            await _wait(lambda: len(fab.tunnels.tunnels(HUB)) == 1, 15, "the app's new tunnel")
            assert fab.tunnels.tunnels(HUB)[0].server == tunnel.server
            await app.call("sendToConnection", connectionId="nobody", payload="2")
