"""Azure's Socket.IO serverless mode (socketio-protocol.md §d.8): a hub whose sockets are served by
its upstream event handlers, and whose rooms and emits the app drives through REST.

The flows run against a small Python upstream handler, in process (it sees each socket's
namespace and id) and behind the webhook client (``tests/appserver/webhook``'s CloudEventsApp).
"""

from __future__ import annotations

import base64
import json

import attrs
import pytest
import trio

import fabric
from fabric.config import HubConfig, SocketIOHubConfig
from fabric.core.events import ConnectRejected, EventHandler, UserEventRequest
from fabric.core.payload import DataType, Payload
from fabric.socketio.formats import namespace_group, room_group
from fabric.socketio.serverless import SocketConnectRequest, SocketContext, azure_reason, event_payload
from tests.appserver.rest.rest_support import KEY, RestClient
from tests.appserver.webhook.support import KEYS, AppTransport, CloudEventsApp, make_config
from tests.fabric_support import quick_config
from tests.socketio.inprocess import RawSocket

HUB = "sls"
PATH = f"/clients/socketio/hubs/{HUB}/?EIO=4&transport=websocket"


def _config(keys=(KEY,), **hub):
    config = quick_config(access_keys=keys)
    hub_config = HubConfig(anonymous_connect=True, socketio=SocketIOHubConfig(service_mode="serverless"), **hub)
    return attrs.evolve(config, hubs={HUB: hub_config})


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


class Upstream(EventHandler):
    """The app: refuses ``{"token":"bad"}``, answers ``hello`` with an ACK, counts the rest."""

    def __init__(self) -> None:
        self.connects: list[SocketConnectRequest] = []
        self.connected: list[SocketContext] = []
        self.disconnected: list[tuple[SocketContext, str]] = []
        self.events: list[UserEventRequest] = []
        self.changed = trio.Event()

    def _note(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait(self, predicate) -> None:
        with trio.fail_after(5):
            while not predicate():
                await self.changed.wait()

    async def on_connect(self, request):
        self.connects.append(request)
        self._note()
        if getattr(request, "auth", {}).get("token") == "bad":
            raise ConnectRejected(401, "go away")
        return None

    async def on_connected(self, context):
        self.connected.append(context)
        self._note()

    async def on_disconnected(self, context, reason):
        self.disconnected.append((context, reason))
        self._note()

    async def handle_user_event(self, request):
        self.events.append(request)
        self._note()
        body = request.payload.body.decode()
        if request.event == "hello":  # 42/chat,7["hello","world"] -> 43/chat,7["got","world"]
            head, _, args = body.partition("[")
            args = json.loads("[" + args)
            return Payload(DataType.TEXT, ("43" + head[2:] + json.dumps(["got", *args[1:]], separators=(",", ":"))).encode())
        return None


@pytest.fixture
async def upstream():
    return Upstream()


@pytest.fixture
async def fab(upstream):
    async with fabric.open_fabric(_config(), handlers={HUB: upstream}) as f:
        yield f


async def _socket(fab, nsp="/chat", auth=None) -> tuple[RawSocket, str]:
    s = await RawSocket.open(fab, PATH)
    return s, (await s.connect(nsp, auth))["sid"]


async def test_socket_connect_events_with_acks_and_disconnect(fab, upstream):
    s, sid = await _socket(fab, auth={"token": "ok"})
    request = upstream.connects[0]
    assert isinstance(request, SocketConnectRequest)
    assert (request.namespace, request.socket_id, dict(request.auth)) == ("/chat", sid, {"token": "ok"})
    assert request.connection_id == s.sid and request.query == {"EIO": ["4"], "transport": ["websocket"]}
    assert dict(request.extensions) == {"namespace": "/chat", "socketId": sid}
    await upstream.wait(lambda: upstream.connected)
    assert (upstream.connected[0].namespace, upstream.connected[0].socket_id) == ("/chat", sid)

    await s.send('42/chat,7["hello","world"]')
    assert await s.receive() == '43/chat,7["got","world"]'  # the handler's answer, unchanged
    event = upstream.events[0]
    assert (event.event, event.payload.data_type, event.payload.body) == ("hello", DataType.TEXT,
                                                                          b'42/chat,7["hello","world"]')
    assert isinstance(event.context, SocketContext) and event.context.socket_id == sid
    # binary attachments travel as b<base64> segments; no answer (204) sends nothing
    await s.send('451-/chat,8["bin",{"_placeholder":true,"num":0}]')
    await s.send(b"\x01\x02\x03")
    await upstream.wait(lambda: len(upstream.events) == 2)
    assert upstream.events[1].payload.body == b'451-/chat,8["bin",{"_placeholder":true,"num":0}]\x1ebAQID'
    # events reach the handler in order
    for i in range(5):
        await s.send(f'42/chat,["n",{i}]')
    await upstream.wait(lambda: len(upstream.events) == 7)
    assert [json.loads(e.payload.body[8:])[1] for e in upstream.events[2:]] == list(range(5))

    await s.send("41/chat,")
    await upstream.wait(lambda: upstream.disconnected)
    context, reason = upstream.disconnected[0]
    assert (context.socket_id, reason) == (sid, "")  # a normal close has no reason
    assert not await fab.hub(HUB).group_exists(room_group("/chat", sid))
    await s.aclose()


async def test_refused_socket_and_reasons(fab, upstream):
    s = await RawSocket.open(fab, PATH)
    await s.send('40/chat,{"token":"bad"}')
    assert await s.receive() == '44/chat,{"message":"go away"}'
    assert not upstream.connected
    sid = (await s.connect("/"))["sid"]  # the connection carries on; another namespace connects
    await s.aclose()  # the transport goes away: the socket is disconnected
    await upstream.wait(lambda: upstream.disconnected)
    assert upstream.disconnected[0][0].socket_id == sid
    assert azure_reason("transport close") == "" and azure_reason("ping timeout") == "ping timeout"


async def test_rest_drives_rooms_emits_and_disconnects(fab, upstream):
    rest = RestClient(fab, KEY)
    s, sid = await _socket(fab)
    other, _ = await _socket(fab)
    room, own = room_group("/chat", "rm"), room_group("/chat", sid)
    assert own == f"0~{_b64('/chat')}~{_b64(sid)}"
    answer = await rest.call("POST", f"/api/hubs/{HUB}/:addToGroups", content_type="application/json",
                             body=json.dumps({"groups": [room], "filter": f"'{own}' in groups"}))
    assert answer.status == 200, answer
    assert [c["connectionId"] for c in (await fab.hub(HUB).list_connections_in_group(room))] == [s.sid]
    answer = await rest.call("POST", f"/api/hubs/{HUB}/groups/{room}/:send", content_type="text/plain",
                             body='42/chat,["news",1]')
    assert answer.status == 202, answer
    assert await s.receive() == '42/chat,["news",1]'
    # to the socket itself, and to the whole namespace
    await rest.call("POST", f"/api/hubs/{HUB}/groups/{own}/:send", content_type="text/plain",
                    body='42/chat,["just you"]')
    assert await s.receive() == '42/chat,["just you"]'
    await rest.call("POST", f"/api/hubs/{HUB}/groups/{namespace_group('/chat')}/:send",
                    content_type="text/plain", body='42/chat,["everyone"]')
    assert await s.receive() == '42/chat,["everyone"]'
    assert await other.receive() == '42/chat,["everyone"]'
    answer = await rest.call("POST", f"/api/hubs/{HUB}/:removeFromGroups", content_type="application/json",
                             body=json.dumps({"groups": [room], "filter": f"'{own}' in groups"}))
    assert answer.status == 200, answer
    assert not await fab.hub(HUB).group_exists(room)
    # disconnect the socket: 41 to its group; the server ends it too
    await rest.call("POST", f"/api/hubs/{HUB}/groups/{own}/:send", content_type="text/plain", body="41/chat,")
    assert await s.receive() == "41/chat,"
    await upstream.wait(lambda: upstream.disconnected)
    assert (upstream.disconnected[0][0].socket_id, upstream.disconnected[0][1]) == (sid, "")
    assert not await fab.hub(HUB).group_exists(own)
    await s.send('42/chat,["after"]')  # an event for a namespace it left: the connection closes
    await s.client.wait_closed()
    await other.aclose()


async def test_the_default_mode_calls_no_upstream_handler(upstream):
    config = _config()
    config = attrs.evolve(config, hubs={HUB: attrs.evolve(config.hub(HUB), socketio=SocketIOHubConfig())})
    async with fabric.open_fabric(config, handlers={HUB: upstream}) as fab:
        s, sid = await _socket(fab, nsp="/")
        await s.send('421["hello","world"]')
        await trio.sleep(0.05)
        assert not upstream.connects and not upstream.events
        assert await fab.hub(HUB).group_exists(room_group("/", sid))  # every socket is in its own room's group
        await s.aclose()


def test_event_payload_is_the_packet_as_polling_would_carry_it():
    assert event_payload("/", ["a", 1], None) == b'42["a",1]'
    assert event_payload("/ns", ["b", b"\x00"], 3) == b'451-/ns,3["b",{"_placeholder":true,"num":0}]\x1ebAA=='


# ---------------------------------------------------------------- behind the webhook client


@pytest.fixture
async def webhook():
    app = CloudEventsApp(Upstream())
    handlers = make_config(hub=HUB).hub(HUB).event_handlers
    async with fabric.open_fabric(_config(KEYS, event_handlers=handlers)) as fab:
        fab.upstream_transport = AppTransport(app)
        yield fab, app


async def test_serverless_flows_through_the_webhook_client(webhook):
    fab, app = webhook
    s, sid = await _socket(fab)
    await app.wait_for("connect")
    await s.send('42/chat,7["hello","world"]')
    assert await s.receive() == '43/chat,7["got","world"]'
    seen = app.events("hello")[0]
    assert seen.header("ce-type") == "azure.webpubsub.user.hello"  # Azure: azure.webpubsub.user.message
    assert (seen.header("ce-namespace"), seen.header("ce-socketId")) == ("/chat", sid)
    assert seen.header("content-type").startswith("text/plain") and seen.body == b'42/chat,7["hello","world"]'
    await app.wait_for("connected")
    await s.send("41/chat,")
    gone = (await app.wait_for("disconnected"))[0]
    assert gone.header("ce-socketId") == sid and json.loads(gone.body) == {"reason": ""}
    assert (await app.wait_for("connected"))[0].header("ce-namespace") == "/chat"
    await s.aclose()


async def test_webhook_events_name_the_socket(webhook):
    fab, app = webhook
    s, sid = await _socket(fab)
    seen = (await app.wait_for("connect"))[0]
    await s.aclose()
    assert (seen.header("ce-namespace"), seen.header("ce-socketId")) == ("/chat", sid)


def test_service_mode_is_a_hub_setting():
    from fabric.config import ConfigError, loads_config

    config = loads_config('[hubs.chat.socketio]\nservice_mode = "serverless"\n', env={})
    assert config.hub("chat").socketio.service_mode == "serverless"
    assert config.hub("other").socketio.service_mode == "default"
    with pytest.raises(ConfigError, match="service_mode"):
        loads_config('[hubs.chat.socketio]\nservice_mode = "server"\n', env={})
