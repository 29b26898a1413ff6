"""Web PubSub for Socket.IO's default mode against the real ``@azure/web-pubsub-socket.io``
1.2.1 (issue 12 part 2): a socket.io chat app (``tests/tunnel_js/chat.mjs``), unmodified but
for ``useAzureSocketIO``, serves ``socket.io-client`` clients that connect to ``fabric serve``
(polling, WebSocket, upgrade), and the same clients run the same scenario
(``scenario.mjs``) against the same app on plain Node socket.io: the transcripts match, but
for the one place where Azure's filter precedence differs on purpose.
"""

from __future__ import annotations

import json

import httpx
import pytest
import trio

import fabric
from fabric.core import auth

from .conftest import tunnel_config
from .node_support import open_node, open_serve, require_node

pytestmark = pytest.mark.interop

HUB = "chat"
SCENARIO_WAIT = 90.0
QUIRK = "two rooms except one (filter precedence)"


@pytest.fixture(autouse=True)
def _node():
    require_node()


def _ready(child) -> dict:
    return next(o for o in child.objects if o.get("event") == "ready")


async def _scenario(endpoint: str, path: str, token: str, mode: str) -> list[dict]:
    async with open_node("scenario.mjs", endpoint, path, token, mode, ready=False,
                         name=f"scenario ({mode})") as clients:
        done = await clients.wait_for(lambda o: o.get("event") in ("transcript", "failed"), SCENARIO_WAIT,
                                      "transcript")
    assert done["event"] == "transcript", f"{mode}: {done['error']}\n{json.dumps(done['steps'], indent=1)}"
    return done["steps"]


def _token(serve, hub: str = HUB) -> str:
    return auth.mint_client_token(key=serve.key, endpoint=serve.endpoint, hub=hub, client_type="socketio")


async def test_the_chat_scenario_behaves_as_on_plain_socketio():
    async with open_node("chat.mjs", "plain", name="chat (plain)") as plain:
        expected = await _scenario(f"http://127.0.0.1:{_ready(plain)['port']}", "/socket.io", "-", "plain")
        plain_server = [o for o in plain.objects if o.get("event") == "server"]
    async with open_serve() as serve, open_node("chat.mjs", "azure", serve.connection_string, HUB,
                                                name="chat (azure)") as app:
        got = await _scenario(serve.endpoint, f"/clients/socketio/hubs/{HUB}", _token(serve), "azure")
        with trio.fail_after(10):
            while len([o for o in app.objects if o.get("event") == "server"]) < len(plain_server):
                await trio.sleep(0.05)
        azure_server = [o for o in app.objects if o.get("event") == "server"]
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(serve.endpoint + "/metrics")).text
    samples = dict(line.rsplit(" ", 1) for line in metrics.splitlines() if line and not line.startswith("#"))
    assert float(samples["fabric_tunnel_tunnels_opened_total"]) >= 1
    assert float(samples["fabric_tunnel_requests_served_total"]) > 0
    assert float(samples["fabric_socketio_default_handshakes_total"]) == 4  # A (and A2), B, C, D
    assert float(samples["fabric_socketio_default_invokes_total"]) == 3
    assert float(samples["fabric_socketio_default_invoke_answers_total"]) == 3
    assert float(samples["fabric_socketio_default_disconnects_translated_total"]) == 2

    assert [s["step"] for s in got] == [s["step"] for s in expected]
    for mine, theirs in zip(got, expected):
        if mine["step"] == QUIRK:
            continue
        assert mine == theirs, f"step {mine['step']!r}:\nfabric: {mine}\nplain:  {theirs}"
    # the quirk, reproduced: rooms r1, r2 except r1 is "r1 or (r2 and not r1)" on Azure
    quirk = next(s for s in got if s["step"] == QUIRK)
    plain_quirk = next(s for s in expected if s["step"] == QUIRK)
    message = '["msg","C","t3"]'
    assert plain_quirk["A"] == [] and plain_quirk["B"] == [] and plain_quirk["C"] == [message]
    assert quirk["A"] == [message] and quirk["B"] == [message] and quirk["C"] == [message]
    # what is checked above, spelled out for a few steps
    steps = {s["step"]: s for s in got}
    assert steps["emitWithAck to a room"]["acks"] == [["A", "ask", ["answer:A:q2", "answer:B:q2"]]]
    assert steps["emitWithAck to one client"]["acks"] == [["B", "askme", "answer:B:q1"]]
    assert steps["emitWithAck to one socket's room"]["acks"] == [["C", "askself", ["answer:C:q3"]]]
    assert steps["emitWithAck nobody answers"]["acks"] == [["A", "asksilent", "error: operation has timed out"]]
    assert steps["binary"]["B"] == ['["bin","A",{"$bytes":"AQID+g=="}]']
    assert steps["binary over WebSocket"]["A"] == ['["bin","B",{"$bytes":"AP8="}]']
    assert steps["disconnectSockets"]["C"] == ['["disconnect","io server disconnect"]']
    assert steps["disconnectSockets(true)"]["D"] == ['["disconnect","io server disconnect"]']
    # the app's sockets ended too; how the app hears it differs (the package only learns of a
    # client's DISCONNECT or of the connection's end, never of a server-side disconnect)
    reasons = {(o["nsp"], o["name"]): o["disconnect"] for o in azure_server}
    assert reasons[("/", "B")] == "client namespace disconnect"
    assert reasons[("/", "C")] == "client namespace disconnect"
    assert reasons[("/ns", "D")] == "transport close"


async def test_the_app_restarts_and_clients_come_back():
    """The app server process ends and a new one starts: the client's connection ends once
    the old app is gone for good, and socket.io-client reconnects to the new app through its
    new tunnel; the client process lives on."""
    async with open_serve() as serve:
        path = f"/clients/socketio/hubs/{HUB}"
        # the hub is the app's once its tunnel is up: the client comes after it
        async with (
            open_node("chat.mjs", "azure", serve.connection_string, HUB, name="chat (1)") as first,
            open_node("reconnect.mjs", serve.endpoint, path, _token(serve), ready=False, name="client") as client,
        ):
            await client.wait_for(lambda o: o.get("event") == "welcome", 30, "welcome from app 1")
            assert await client.call("echo", text="one") == "one:1"
            assert await first.stop() == 0
            gone = await client.wait_for(lambda o: o.get("event") == "disconnect", 30, "disconnect")
            assert gone["reason"] == "transport close"
            async with open_node("chat.mjs", "azure", serve.connection_string, HUB, name="chat (2)"):
                await client.wait_for(lambda o: o.get("event") == "welcome", 30, "welcome from app 2")
                assert await client.call("echo", text="two") == "two:1"  # a new socket, on app 2


async def test_a_tunnel_blip_keeps_the_clients():
    """The app's tunnel closes and reconnects (same app process): clients keep their
    connections and sockets."""
    async with fabric.open_fabric(tunnel_config()) as fab:
        await fab.serve("127.0.0.1", 0)
        token = auth.mint_client_token(key=fab.access_keys[0], endpoint=fab.endpoint, hub=HUB,
                                       client_type="socketio")
        async with (
            open_node("chat.mjs", "azure", fab.connection_string(), HUB, name="chat"),
            open_node("reconnect.mjs", fab.endpoint, f"/clients/socketio/hubs/{HUB}", token, ready=False,
                      name="client") as client,
        ):
            await client.wait_for(lambda o: o.get("event") == "welcome", 20, "welcome")
            assert await client.call("echo", text="a") == "a:1"
            (tunnel,) = fab.tunnels.tunnels(HUB)
            tunnel.close(1001, "going away")
            with trio.fail_after(15):
                while not fab.tunnels.tunnels(HUB) or fab.tunnels.tunnels(HUB)[0] is tunnel:
                    await trio.sleep(0.05)
            assert await client.call("echo", text="b") == "b:2"  # same socket: its counter goes on
            counters = fab.default_mode.counters
            with trio.fail_after(15):  # the app server's absence is judged once its grace is over
                while counters["orphan_checks"] == 0:
                    await trio.sleep(0.05)
            assert counters["orphans_closed"] == 0
            assert await client.call("echo", text="c") == "c:3"
            assert not [o for o in client.objects if o.get("event") == "disconnect"]
