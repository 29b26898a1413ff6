"""Default mode's service side with a scripted app server (in process: a Python tunnel client
answers the service's events, REST over HTTP plays the app's calls) and a raw Engine.IO
polling client over TCP, so each rule of ``fabric.socketio.tunnelled`` is seen on the wire:
the connect event and the app's handshake values, client packets as user events, the app's
pings answered, namespace groups kept from CONNECT replies and DISCONNECTs, the translation
of a DISCONNECT with data, refusals, and no app server."""

from __future__ import annotations

import json

import httpx
import msgspec
import pytest
import trio

import fabric
from fabric.appserver import tunnel_protocol as tp
from fabric.core import auth

from .conftest import KEY, tunnel_config
from .tunnel_client import TunnelClient

HUB = "pyapp"


class App:
    """The scripted app server: records the service's requests, answers them."""

    def __init__(self, tunnel: TunnelClient) -> None:
        self.tunnel = tunnel
        self.requests: list[tp.HttpRequest] = []
        self.changed = trio.Event()
        self.refuse = False
        self.forget = False
        self.ping_interval = 12345

    async def handle(self, request: tp.HttpRequest):
        self.requests.append(request)
        self.changed.set()
        self.changed = trio.Event()
        kind = request.header("ce-type")
        cid = request.header("ce-connectionId")
        if kind == "azure.webpubsub.sys.connect":
            if self.refuse:
                return 400, {"Content-Type": ["text/plain"]}, b"EIO server refused connection with error: no"
            handshake = {"socketio": {"sid": cid, "upgrades": [], "pingInterval": self.ping_interval,
                                      "pingTimeout": 2000, "maxPayload": 100000}}
            return 200, {"Content-Type": ["application/json"]}, json.dumps(handshake).encode()
        if self.forget and kind == "azure.webpubsub.user.message":
            return 400, {"Content-Type": ["text/plain"]}, f"EIO server cannot find ConnectionId {cid}".encode()
        return 200, {}, b""

    async def events(self, kind: str, count: int = 1) -> list[tp.HttpRequest]:
        """Wait for ``count`` requests of ``ce-type`` ending in ``kind``."""
        with trio.fail_after(10):
            while True:
                found = [r for r in self.requests if (r.header("ce-type") or "").endswith(kind)]
                if len(found) >= count:
                    return found
                await self.changed.wait()


class Rest:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    async def call(self, method: str, path: str, body: bytes | str = b"", **json_body) -> int:
        target = f"/api/hubs/{HUB}{path}"
        url = self.endpoint + target + ("&" if "?" in target else "?") + "api-version=2024-01-01"
        token = auth.mint_rest_token(key=KEY, url=self.endpoint + target.split("?")[0])
        async with httpx.AsyncClient() as http:
            if json_body:
                response = await http.request(method, url, json=json_body, headers={"Authorization": f"Bearer {token}"})
            else:
                response = await http.request(method, url, content=body,
                                              headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"})
        return response.status_code


class Polling:
    """An Engine.IO v4 polling client."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http = http
        self.url = url
        self.sid = ""

    async def open(self) -> dict:
        response = await self.http.get(self.url + "&EIO=4&transport=polling")
        assert response.status_code == 200, response.text
        handshake = json.loads(response.text[1:])
        self.sid = handshake["sid"]
        return handshake

    async def get(self) -> list[str]:
        with trio.fail_after(10):
            response = await self.http.get(f"{self.url}&EIO=4&transport=polling&sid={self.sid}")
        assert response.status_code == 200, response.text
        return response.text.split("\x1e")

    async def post(self, *packets: str) -> None:
        response = await self.http.post(f"{self.url}&EIO=4&transport=polling&sid={self.sid}",
                                        content="\x1e".join(packets).encode())
        assert response.status_code == 200, response.text


@pytest.fixture
async def setup():
    async with fabric.open_fabric(tunnel_config()) as fab:
        await fab.serve("127.0.0.1", 0)
        tunnel = await TunnelClient.open(fab, HUB)
        app = App(tunnel)
        token = auth.mint_client_token(key=KEY, endpoint=fab.endpoint, hub=HUB, user_id="u1", client_type="socketio")
        url = f"{fab.endpoint}/clients/socketio/hubs/{HUB}/?access_token={token}"
        async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=20) as http:
            nursery.start_soon(tunnel.serve, app.handle)
            yield fab, app, Rest(fab.endpoint), Polling(http, url)
            nursery.cancel_scope.cancel()


async def test_a_connection_through_a_scripted_app(setup):
    fab, app, rest, client = setup
    handshake = await client.open()
    # the app's handshake values, our sid (= the connection id the app was told), our upgrades
    assert handshake["pingInterval"] == 12345 and handshake["pingTimeout"] == 2000
    assert handshake["maxPayload"] == 100000 and handshake["upgrades"] == ["websocket"]
    (connect,) = await app.events("sys.connect")
    assert connect.header("ce-connectionId") == client.sid and connect.header("ce-userId") == "u1"
    assert connect.url.endswith("/eventhandler/") and connect.header("ce-hub") == HUB
    body = msgspec.json.decode(connect.content)
    assert body["query"]["EIO"] == ["4"] and body["query"]["transport"] == ["polling"]
    assert "access_token" not in body["query"]

    # client packets: a polling-format payload in a user event
    await client.post("40", '42["hi"]')
    (message,) = await app.events("user.message")
    assert message.content == b'40\x1e42["hi"]' and message.header("Content-Type") == "text/plain"

    # the app's CONNECT reply joins the namespace group; its ping is answered by the service
    assert await rest.call("POST", f"/connections/{client.sid}/:send", '40{"sid":"s1"}\x1e2') == 202
    assert await client.get() == ['40{"sid":"s1"}']
    pong = (await app.events("user.message", 2))[1]
    assert pong.content == b"3"
    assert fab.default_mode.counters["pongs"] == 1
    hub = await fab.get_hub(HUB)
    member = hub.local_member(client.sid)
    assert "0~Lw~" in member.groups and member.namespaces == {"/"}
    # io.emit (a filter on the namespace group), socket.join (:addToGroups) and a room send
    assert await rest.call("POST", "/:send?filter=%270~Lw~%27%20in%20groups", '42["all"]') == 202
    assert await client.get() == ['42["all"]']
    assert await rest.call("POST", "/:addToGroups", groups=["0~Lw~cjE"], filter=f"connectionId eq '{client.sid}'") == 200
    assert await rest.call("POST", "/groups/0~Lw~cjE/:send", '42["room"]\x1e451-["b",{"_placeholder":true,"num":0}]\x1ebAQI=') == 202
    assert await client.get() == ['42["room"]', '451-["b",{"_placeholder":true,"num":0}]', "bAQI="]

    # disconnectSockets(false): a plain DISCONNECT to the client, the app told, groups left
    assert await rest.call("POST", "/groups/0~Lw~cjE/:send", '41{"close":false}') == 202
    assert await client.get() == ["41"]
    told = (await app.events("user.message", 3))[2]
    assert told.content == b"41"
    with trio.fail_after(5):
        while member.groups:
            await trio.sleep(0.01)
    assert member.namespaces == set()
    # the app's own DISCONNECT for a socket that is gone says nothing to the client
    assert await rest.call("POST", f"/connections/{client.sid}/:send", "41\x1e42[\"x\"]") == 202
    assert await client.get() == ['42["x"]']
    # a payload that is not Engine.IO reaches no Socket.IO client, and breaks nothing
    assert await rest.call("POST", f"/connections/{client.sid}/:send", "{not eio}") == 202
    assert fab.default_mode.counters["payloads_ignored"] == 1

    # the app closes the Engine.IO socket: the client sees the close, the app a disconnected
    assert await rest.call("POST", f"/connections/{client.sid}/:send", "1") == 202
    assert await client.get() == ["1"]
    (gone,) = await app.events("sys.disconnected")
    assert gone.header("ce-connectionId") == client.sid
    with trio.fail_after(5):
        while hub.local_member(client.sid) is not None:
            await trio.sleep(0.01)


async def test_disconnect_sockets_with_close_ends_the_connection(setup):
    fab, app, rest, client = setup
    await client.open()
    await client.post("40", "40/ns,")
    assert await rest.call("POST", f"/connections/{client.sid}/:send", '40{"sid":"a"}\x1e40/ns,{"sid":"b"}') == 202
    assert await client.get() == ['40{"sid":"a"}', '40/ns,{"sid":"b"}']
    assert await rest.call("POST", "/:send?filter=%270~L25z~%27%20in%20groups", '41/ns,{"close":true}') == 202
    assert await client.get() == ["41", "41/ns,", "1"]
    await app.events("sys.disconnected")
    assert fab.default_mode.counters["disconnects_translated"] == 1


async def test_an_app_refusal_is_the_handshake_answer(setup):
    fab, app, _, client = setup
    app.refuse = True
    response = await client.http.get(client.url + "&EIO=4&transport=polling")
    assert response.status_code == 400
    assert "refused" in response.json()["message"]
    assert fab.default_mode.counters["handshakes_refused"] == 1
    assert not fab.default_mode.connections.get(HUB)


async def test_an_invalid_token_is_refused_before_the_app_hears_of_it(setup):
    _, app, _, client = setup
    response = await client.http.get(client.url.replace("access_token=", "access_token=x") + "&EIO=4&transport=polling")
    assert response.status_code == 401
    assert not app.requests


async def test_no_app_server_is_a_503_after_the_wait(setup):
    fab, app, _, client = setup
    await app.tunnel.aclose()
    with trio.fail_after(15):
        while fab.tunnels.tunnels(HUB):
            await trio.sleep(0.01)
        response = await client.http.get(client.url + "&EIO=4&transport=polling")
    assert response.status_code == 503
    assert fab.default_mode.counters["handshakes_unavailable"] == 1


async def test_invoke_numbers_the_event_and_streams_each_ack_binary_included(setup):
    fab, app, rest, client = setup
    await client.open()
    await client.post("40")
    assert await rest.call("POST", f"/connections/{client.sid}/:send", '40{"sid":"s"}') == 202
    assert await client.get() == ['40{"sid":"s"}']
    caller = await TunnelClient.open(fab, HUB, sub="app-2")  # the app's call, on a tunnel of its own
    answers = []

    async def invoke():
        flt = "%270~Lw~%27%20in%20groups"
        answers.append(await caller.call("POST", f"/api/hubs/{HUB}/:invoke?api-version=2023-07-01&filter={flt}",
                                         '42["q"]'))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(invoke)
        (event,) = await client.get()
        ack_id = event[2:event.index("[")]
        assert event == f'42{ack_id}["q"]' and int(ack_id) >= 10**12  # numbered by the service
        await client.post(f'461-{ack_id}[{{"_placeholder":true,"num":0}}]', "bAQI=")
    ((status, _, body, parts),) = answers
    assert status == 200 and len(parts) == 3  # the head, one line, the end
    assert json.loads(body) == {"Payload": f'461-{ack_id}[{{"_placeholder":true,"num":0}}]\x1ebAQI='}
    # the ack went to the invoke, not to the app as a client packet
    assert [r.content for r in app.requests if (r.header("ce-type") or "").endswith("user.message")] == [b"40"]
    await caller.aclose()


async def test_a_connection_the_app_does_not_know_is_closed(setup):
    fab, app, _, client = setup
    await client.open()
    app.forget = True  # as an app that lost its state answers
    await client.post("40")
    assert await client.get() == ["1"]  # closed: the client reconnects and gets a fresh start
    await app.events("sys.disconnected")
    assert fab.default_mode.counters["events_failed"] == 1


async def test_a_session_stays_with_the_server_that_opened_it():
    """Sessions of the embedded server opened before the app's tunnel keep being served by
    it; handshakes after it go to the app."""
    async with fabric.open_fabric(tunnel_config()) as fab:
        await fab.serve("127.0.0.1", 0)
        token = auth.mint_client_token(key=KEY, endpoint=fab.endpoint, hub=HUB, client_type="socketio")
        url = f"{fab.endpoint}/clients/socketio/hubs/{HUB}/?access_token={token}"
        async with httpx.AsyncClient(timeout=20) as http, trio.open_nursery() as nursery:
            before = Polling(http, url)
            await before.open()  # the embedded server: no app yet
            tunnel = await TunnelClient.open(fab, HUB)
            app = App(tunnel)
            nursery.start_soon(tunnel.serve, app.handle)
            after = Polling(http, url)
            await after.open()
            (connect,) = await app.events("sys.connect")
            assert connect.header("ce-connectionId") == after.sid != before.sid
            await before.post("40")
            (reply,) = await before.get()
            assert reply.startswith('40{"sid":')  # the embedded server answered its own session
            assert not [r for r in app.requests if r.header("ce-connectionId") == before.sid]
            await tunnel.aclose()
            nursery.cancel_scope.cancel()
