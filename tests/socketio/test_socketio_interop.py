"""Real Socket.IO clients against the fabric: socket.io-client (npm) and python-socketio.

One app subprocess (``sio_app.py``) per module; the clients connect over TCP exactly as
users' clients do. Covered: polling only, WebSocket only and polling-then-upgrade; acks both
ways (client -> server echo, server -> client ``call`` inside a handler); binary events and
acks; rooms; server disconnect; connect refused with data; connection-state recovery after
a dropped transport (missed broadcasts replayed, sid and session restored); 1,000 clients
in one room each receiving every broadcast once, in order; a REST send to a room's hub
group reaching Socket.IO clients; the per-hub endpoint with and without a client token.
"""

from __future__ import annotations

import asyncio
import base64
import time
import urllib.parse
from pathlib import Path

import httpx
import pytest

from fabric.core import auth
from tests.socketio.sio_support import App, run_node, start_app

pytestmark = pytest.mark.interop

APP = Path(__file__).with_name("sio_app.py")


@pytest.fixture(scope="module")
def app():
    running = start_app(APP)
    try:
        yield running
    finally:
        running.stop()


# --------------------------------------------------------------------------- socket.io-client


@pytest.mark.parametrize("transports", [["polling"], ["websocket"], ["polling", "websocket"]],
                         ids=["polling", "websocket", "upgrade"])
def test_node_client_events_acks_binary_rooms(app: App, transports):
    result = run_node({"url": app.url, "scenario": "basic", "transports": transports, "upgrade_wait": True}, app=app)
    assert result["ok"], result
    assert result["transport"] == ("polling" if transports == ["polling"] else "websocket")
    assert result["echo"] == ["hello", 42, {"nested": [1, True]}]
    assert result["bin"] == ["bin", [1, 2, 3], [255]]  # binary stays binary, nested too
    assert result["asked"] == "answer to life"  # server -> client ack inside a client -> server ack
    assert result["rooms"][1:] == ["r1"] and len(result["rooms"]) == 2
    assert result["news"] == ["to-room", [9, 8]]
    assert result["who"]["session"] == "kept" and result["who"]["recovered"] is False
    assert result["who"]["transport"] == result["transport"]
    assert result["kick_reason"] == "io server disconnect"


def test_node_client_connect_refused_with_data(app: App):
    result = run_node({"url": app.url, "scenario": "admin"}, app=app)
    assert result["refused"] == {"message": "not authorized", "data": {"need": "token"}}
    assert result["echo"] == [["admin", 1]]


@pytest.mark.parametrize("transports", [["websocket"], ["polling", "websocket"]], ids=["websocket", "upgrade"])
def test_node_client_recovers_missed_events(app: App, transports):
    result = run_node({"url": app.url, "scenario": "recovery", "transports": transports}, app=app)
    assert result["ok"], result
    assert result["recovered"] is True
    assert result["sid"] == result["first_sid"] == result["who"]["sid"]
    assert result["got"] == ["m1", "m2", "m3", "m4"]  # m2, m3 were sent while it was away
    assert result["who"]["session"] == "state" and result["who"]["recovered"] is True


@pytest.mark.slow
def test_thousand_clients_in_one_room_get_every_broadcast_once_in_order(app: App):
    result = run_node({"url": app.url, "scenario": "fanout", "clients": 1000, "count": 20, "room": "thousand",
                       "deadline_ms": 150_000}, timeout=180, app=app)
    assert result["ok"], result
    assert result["acked"] == 20
    assert result["bad_count"] == 0, result["bad"]


# --------------------------------------------------------------------------- python-socketio


async def _python_scenario(url: str, transports: list[str], path: str = "socket.io", headers=None) -> dict:
    import socketio

    client = socketio.AsyncClient(reconnection=False)
    news: asyncio.Queue = asyncio.Queue()

    @client.on("question")
    def question(q):
        return f"py {q}"

    @client.on("news")
    async def on_news(*args):
        await news.put(args)

    await client.connect(url, transports=transports, socketio_path=path, headers=headers or {}, wait_timeout=10)
    try:
        if transports == ["polling", "websocket"]:
            deadline = time.monotonic() + 10
            while client.transport() != "websocket" and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        echo = await client.call("echo", ("hi", 1, {"a": [True]}), timeout=5)
        binary = await client.call("echo", ("b", b"\x01\x02", {"x": b"\xff"}), timeout=5)
        asked = await client.call("ask", "q", timeout=5)
        rooms = await client.call("join", "pyroom", timeout=5)
        await client.call("broadcast", ("pyroom", "x", b"\x07"), timeout=5)
        got = await asyncio.wait_for(news.get(), 5)
        return {"transport": client.transport(), "echo": echo, "binary": binary, "asked": asked, "rooms": rooms,
                "news": got, "sid": client.get_sid()}
    finally:
        await client.disconnect()


@pytest.mark.parametrize("transports", [["polling"], ["websocket"], ["polling", "websocket"]],
                         ids=["polling", "websocket", "upgrade"])
def test_python_socketio_client(app: App, transports):
    result = asyncio.run(asyncio.wait_for(_python_scenario(app.url, transports), 60))
    assert result["transport"] == ("polling" if transports == ["polling"] else "websocket")
    assert list(result["echo"]) == ["hi", 1, {"a": [True]}]
    assert list(result["binary"]) == ["b", b"\x01\x02", {"x": b"\xff"}]
    assert result["asked"] == "py q"
    assert result["rooms"][1:] == ["pyroom"]
    assert result["news"][:2] == ("x", b"\x07")  # then the recovery offset (recovery is on)


def test_per_hub_endpoint_anonymous_and_with_token(app: App):
    anonymous = asyncio.run(asyncio.wait_for(
        _python_scenario(app.url, ["websocket"], path="/clients/socketio/hubs/azhub"), 60))
    assert anonymous["asked"] == "py q"

    async def refused() -> str:
        import socketio

        client = socketio.AsyncClient(reconnection=False)
        try:
            await client.connect(app.url, transports=["polling"], socketio_path="/clients/socketio/hubs/siotest",
                                 wait_timeout=5)
        except socketio.exceptions.ConnectionError as exc:
            return str(exc)
        finally:
            await client.disconnect()
        return "connected"

    assert asyncio.run(refused()) != "connected"  # siotest needs a token on the per-hub path
    token = auth.mint_client_token(key="test-key", endpoint=app.url, hub="siotest", user_id="ann",
                                   client_type="socketio")
    with_token = asyncio.run(asyncio.wait_for(_python_scenario(
        app.url, ["polling", "websocket"], path="/clients/socketio/hubs/siotest",
        headers={"Authorization": f"Bearer {token}"}), 60))
    assert with_token["transport"] == "websocket" and with_token["asked"] == "py q"


def test_rest_send_to_a_room_group_reaches_socketio_clients(app: App):
    room = "rest-room"
    group = "0~" + base64.urlsafe_b64encode(b"/").rstrip(b"=").decode() + "~" + \
        base64.urlsafe_b64encode(room.encode()).rstrip(b"=").decode()
    assert group == "0~Lw~cmVzdC1yb29t"

    async def scenario() -> tuple:
        import socketio

        client = socketio.AsyncClient(reconnection=False)
        news: asyncio.Queue = asyncio.Queue()

        @client.on("news")
        async def on_news(*args):
            await news.put(args)

        await client.connect(app.url, transports=["websocket"], wait_timeout=10)
        try:
            await client.call("join", room, timeout=5)
            url = (f"{app.url}/api/hubs/siotest/groups/{urllib.parse.quote(group, safe='')}/:send"
                   f"?api-version=2024-01-01")
            token = auth.mint_rest_token(key="test-key", url=url)
            async with httpx.AsyncClient() as http:
                answer = await http.post(url, content='42["news","from-rest",{"n":1}]',
                                         headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"})
                assert answer.status_code == 202, answer.text
                exists_url = f"{app.url}/api/hubs/siotest/groups/{urllib.parse.quote(group, safe='')}?api-version=2024-01-01"
                exists = await http.head(exists_url, headers={
                    "Authorization": f"Bearer {auth.mint_rest_token(key='test-key', url=exists_url)}"})
            return await asyncio.wait_for(news.get(), 5), exists.status_code
        finally:
            await client.disconnect()

    got, exists = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert got == ("from-rest", {"n": 1})
    assert exists == 200  # the room is a hub group: the service API sees it
