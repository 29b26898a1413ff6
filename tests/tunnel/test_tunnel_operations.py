"""The tunnel edge's extension points that default mode uses (in process, Python tunnel
client): path-pattern operations that may hand a request back to the REST router, listeners
of tunnels coming and app servers going, and the fabric's own ``:invoke`` answers."""

from __future__ import annotations

import json
import urllib.parse

import trio

from fabric.appserver.tunnel import TunnelReply

from .tunnel_client import TunnelClient

HUB = "sio"
API = "?api-version=2023-07-01"


async def test_a_path_pattern_operation_may_hand_back_to_rest(fab):
    seen = []

    async def send(hub, request):
        seen.append((hub, request.raw_path))
        return TunnelReply(202) if "mine" in request.raw_path else None

    fab.tunnels.add_operation("POST", "connections/{connectionId}/:send", send)
    tunnel = await TunnelClient.open(fab, HUB)
    status, _, _, _ = await tunnel.call("POST", f"/api/hubs/{HUB}/connections/mine/:send{API}", "2")
    assert status == 202
    # not mine: the REST router answers (202 for an unknown connection, as over HTTP)
    status, _, _, _ = await tunnel.call("POST", f"/api/hubs/{HUB}/Connections/other/:SEND{API}", "2")
    assert status == 202
    # other shapes never reach the operation
    status, _, _, _ = await tunnel.call("POST", f"/api/hubs/{HUB}/connections/x/y/:send{API}", "2")
    assert status == 404
    assert seen == [(HUB, f"/api/hubs/{HUB}/connections/mine/:send"),
                    (HUB, f"/api/hubs/{HUB}/Connections/other/:SEND")]
    await tunnel.aclose()


async def test_listeners_hear_of_tunnels_and_lost_app_servers(fab):
    heard = []

    class Listener:
        def tunnel_opened(self, hub, server):
            heard.append(("opened", hub, server))

        def server_lost(self, hub, server):
            heard.append(("lost", hub, server))

    class Broken:
        def tunnel_opened(self, hub, server):
            raise RuntimeError("a broken listener must not break the tunnel")

    fab.tunnels.add_listener(Broken())
    fab.tunnels.add_listener(Listener())
    one = await TunnelClient.open(fab, HUB, sub="app-1")
    two = await TunnelClient.open(fab, HUB, sub="app-1")
    await one.aclose()
    with trio.fail_after(5):
        while len(fab.tunnels.tunnels(HUB)) != 1:
            await trio.sleep(0.01)
    assert ("lost", HUB, "app-1") not in heard  # app-1 still has a tunnel
    await two.aclose()
    with trio.fail_after(5):
        while ("lost", HUB, "app-1") not in heard:
            await trio.sleep(0.01)
    assert heard == [("opened", HUB, "app-1"), ("opened", HUB, "app-1"), ("lost", HUB, "app-1")]


async def test_invoke_is_a_tunnel_operation(fab):
    tunnel = await TunnelClient.open(fab, HUB)
    flt = urllib.parse.quote("'0~Lw~' in groups")
    # an EVENT (the package sends it without an ack id), no Socket.IO client to ask: an empty answer
    status, headers, body, parts = await tunnel.call("POST", f"/api/hubs/{HUB}/:invoke{API}&filter={flt}",
                                                     '42["ev"]')
    assert status == 200 and body == b"" and parts[-1].not_completed is False
    assert headers["content-type"] == ("application/x-ndjson",)
    # not an EVENT, or a bad filter: 400 with REST's error shape
    for payload, query, code in (("41", "", "InvalidPayload"), ("x", "", "InvalidPayload"),
                                 ('421["ev"]', "&filter=" + urllib.parse.quote("nonsense eq"), "InvalidFilter")):
        status, headers, body, _ = await tunnel.call("POST", f"/api/hubs/{HUB}/:invoke{API}{query}", payload)
        assert status == 400 and json.loads(body)["code"] == code
        assert headers["x-ms-error-code"] == (code,)
    assert fab.default_mode.counters["invokes"] == 1
    await tunnel.aclose()
