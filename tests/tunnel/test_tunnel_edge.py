"""The server tunnel in process (``fabric/appserver/tunnel.py``), driven by the Python tunnel
client: authentication, ``ConnectionConnected`` first, REST through the tunnel into the same
router and service API as ``/api/hubs/...``, streamed answers, service -> app requests and
their routing, tunnel loss, and every kind of bad input."""

from __future__ import annotations

import json
import time
import urllib.parse

import jwt
import pytest
import trio

import fabric
from fabric.appserver import tunnel_protocol as tp
from fabric.appserver.tunnel import (
    TunnelBusy,
    TunnelError,
    TunnelLost,
    TunnelReply,
    TunnelUnavailable,
)
from fabric.testing import ConnectionClosed, ConnectionRejected
from tests.appserver.rest.rest_support import RestClient, connect

from .conftest import KEY, tunnel_config
from .tunnel_client import TunnelClient, tunnel_token

HUB = "sio"
API = "?api-version=2023-07-01"
ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")


async def next_data(client, timeout: float = 3.0):
    """The next data message a Web PubSub JSON client receives (its ``data``)."""
    message = await client.receive_json(timeout)
    assert message["type"] == "message", message
    return message["data"]


async def nothing_for(client, seconds: float = 0.2) -> None:
    with trio.move_on_after(seconds):
        message = await client.receive_json(seconds + 1)
        raise AssertionError(f"unexpected message {message}")


async def join(tunnel: TunnelClient, client, *groups: str) -> None:
    status, _, body, _ = await tunnel.call("POST", f"/api/hubs/{HUB}/:addToGroups{API}", json={
        "groups": list(groups), "filter": f"connectionId eq '{client.connection_id}'"})
    assert status == 200, body


# ---- connecting -------------------------------------------------------------------------------


async def test_connection_connected_is_the_first_message(fab):
    tunnel = await TunnelClient.open(fab, HUB, sub="app-server-7")
    assert tunnel.connected.connection_id
    assert tunnel.connected.user_id == "app-server-7"
    servers = fab.tunnels.servers(HUB)
    assert list(servers) == ["app-server-7"]
    assert servers["app-server-7"][0].id == tunnel.connected.connection_id
    assert fab.tunnels.pick(HUB.upper()) is not None  # hub names compare case-insensitively
    await tunnel.aclose()


async def test_bearer_header_and_target_query(fab):
    from fabric.testing import Client
    from transport.memory import memory_stream_pair

    token = tunnel_token(KEY, f"ws://fabric.local/server/tunnel?hub={HUB}")
    client_stream, server_stream = memory_stream_pair()
    fab.serve_stream(server_stream)
    # the header form, through wsproto's extra_headers
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Request

    ws = WSConnection(ConnectionType.CLIENT)
    await client_stream.send_all(ws.send(Request(host="fabric.local", target=f"/server/tunnel?hub={HUB}&target=n2",
                                                 extra_headers=[(b"authorization", f"Bearer {token}".encode())])))
    ws.receive_data(await client_stream.receive_some(65536))
    assert any(isinstance(e, AcceptConnection) for e in ws.events())
    with trio.fail_after(3):
        while not fab.tunnels.tunnels(HUB):
            await trio.sleep(0.01)
    assert fab.tunnels.tunnels(HUB)[0].target == "n2"
    await client_stream.aclose()
    del Client


def _token(**over):
    now = time.time()
    claims = {"aud": f"ws://fabric.local/server/tunnel?hub={HUB}", "iat": int(now), "exp": int(now) + 3600,
              "sub": "app"}
    claims.update(over)
    key = claims.pop("key", KEY)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm="HS256")


@pytest.mark.parametrize("token, status, code", [
    (None, 401, "MissingToken"),
    ("not-a-jwt", 401, "InvalidToken"),
    (_token(key="another-key-that-is-long-enough-0123456789"), 401, "InvalidSignature"),
    (_token(exp=int(time.time()) - 3600), 401, "TokenExpired"),
    (_token(exp=None), 401, "InvalidToken"),
    (_token(aud="ws://fabric.local/client/hubs/sio"), 401, "InvalidAudience"),
    (_token(aud="ws://fabric.local/server/tunnel?hub=other"), 401, "InvalidAudience"),
    (_token(aud=None), 401, "InvalidAudience"),
    (jwt.encode({"aud": "ws://x/server/tunnel", "exp": int(time.time()) + 60}, None, algorithm="none"), 401,
     "InvalidAlgorithm"),
])
async def test_forged_expired_or_foreign_tokens_are_refused(fab, token, status, code):
    with pytest.raises(ConnectionRejected) as caught:
        await TunnelClient.open(fab, HUB, token=token if token is not None else "", wait_connected=False)
    assert caught.value.status == status
    assert json.loads(caught.value.body)["code"] == code
    assert fab.tunnels.tunnels() == []
    assert fab.tunnels.counters["tunnels_refused"] == 1


async def test_a_missing_or_invalid_hub_is_400(fab):
    from fabric.testing import Client
    from transport.memory import memory_stream_pair

    for target, code in [("/server/tunnel", "MissingHub"), ("/server/tunnel?hub=1bad", "InvalidHubName")]:
        client_stream, server_stream = memory_stream_pair()
        fab.serve_stream(server_stream)
        with pytest.raises(ConnectionRejected) as caught:
            await Client.open(client_stream, "fabric.local", target)
        assert caught.value.status == 400 and json.loads(caught.value.body)["code"] == code


async def test_a_token_without_hub_in_its_audience_is_accepted(fab):
    """The hub query of ``aud`` is checked only when present (the path is what REST checks)."""
    tunnel = await TunnelClient.open(fab, HUB, aud="ws://elsewhere:1/server/tunnel")
    await tunnel.aclose()


# ---- app -> service: REST through the tunnel ------------------------------------------------------


async def test_operations_through_the_tunnel_reach_the_service_api(fab):
    tunnel = await TunnelClient.open(fab, HUB)
    alice = await connect(fab, HUB, user_id="alice", roles=ROLES)
    bob = await connect(fab, HUB, user_id="bob", roles=ROLES)
    await join(tunnel, alice, "0~Lw~", "0~Lw~cm9vbQ")
    await join(tunnel, bob, "0~Lw~")

    # one room: groups/{g}/:send
    status, _, _, _ = await tunnel.call("POST", f"/api/hubs/{HUB}/groups/0~Lw~cm9vbQ/:send{API}", '42["room"]')
    assert status == 202
    assert await next_data(alice) == '42["room"]'
    # the namespace with an except: :send?filter=
    flt = urllib.parse.quote("'0~Lw~' in groups and not ('0~Lw~cm9vbQ' in groups)")
    status, _, _, _ = await tunnel.call("POST", f"/api/hubs/{HUB}/:send{API}&filter={flt}", '42["not room"]')
    assert status == 202
    assert await next_data(bob) == '42["not room"]'
    await nothing_for(alice)
    # one connection
    status, _, _, _ = await tunnel.call("POST", f"/api/hubs/{HUB}/connections/{bob.connection_id}/:send{API}", "2")
    assert status == 202
    assert await next_data(bob) == "2"
    # socketsLeave: :removeFromGroups by filter
    status, _, _, _ = await tunnel.call("POST", f"/api/hubs/{HUB}/:removeFromGroups{API}", json={
        "groups": ["0~Lw~cm9vbQ"], "filter": "'0~Lw~' in groups"})
    assert status == 200
    assert "0~Lw~cm9vbQ" not in (await fab.get_hub(HUB)).connections[alice.connection_id].groups
    # socket.leave: DELETE groups/{g}/connections/{id}
    await join(tunnel, alice, "0~Lw~cm9vbQ")
    status, _, _, _ = await tunnel.call("DELETE", f"/api/hubs/{HUB}/groups/0~Lw~cm9vbQ/connections/"
                                        f"{alice.connection_id}{API}")
    assert status in (200, 204)
    assert await fab.hub(HUB).list_connections_in_group("0~Lw~cm9vbQ") == []
    # HEAD works and has no body
    status, _, body, _ = await tunnel.call("HEAD", f"/api/hubs/{HUB}/connections/{alice.connection_id}{API}")
    assert (status, body) == (200, b"")
    await tunnel.aclose()


async def test_the_filter_precedence_quirk_is_reproduced(fab):
    """``io.to(["a","b"]).except("c")`` builds ``A or B and not (C)``: under OData precedence
    that is ``A or (B and not C)``, so a socket in a and c still receives it, as on Azure."""
    tunnel = await TunnelClient.open(fab, HUB)
    in_a_and_c = await connect(fab, HUB, roles=ROLES)
    in_b_and_c = await connect(fab, HUB, roles=ROLES)
    await join(tunnel, in_a_and_c, "0~Lw~YQ", "0~Lw~Yw")
    await join(tunnel, in_b_and_c, "0~Lw~Yg", "0~Lw~Yw")
    flt = urllib.parse.quote("'0~Lw~YQ' in groups or '0~Lw~Yg' in groups and not ('0~Lw~Yw' in groups)")
    status, _, _, _ = await tunnel.call("POST", f"/api/hubs/{HUB}/:send{API}&filter={flt}", '42["x"]')
    assert status == 202
    assert await next_data(in_a_and_c) == '42["x"]'
    await nothing_for(in_b_and_c)
    await tunnel.aclose()


@pytest.mark.parametrize("method, path, body, content_type", [
    ("POST", "/api/hubs/sio/connections/nobody/:send", "2", "text/plain"),
    ("PUT", "/api/hubs/sio/groups/g/connections/nobody", "", None),
    ("DELETE", "/api/hubs/sio/groups/g/connections/nobody", "", None),
    ("HEAD", "/api/hubs/sio/connections/nobody", "", None),
    ("POST", "/api/hubs/sio/:addToGroups", '{"groups": []}', "application/json"),
    ("POST", "/api/hubs/sio/:addToGroups", '{"groups": ["g"], "filter": "nonsense eq"}', "application/json"),
    ("POST", "/api/hubs/sio/:send", "x", "text/html"),
    ("POST", "/api/hubs/1bad/:send", "x", "text/plain"),
    ("PATCH", "/api/hubs/sio/:send", "x", "text/plain"),
    ("GET", "/api/health", "", None),
])
async def test_answers_are_those_of_rest_over_http(fab, method, path, body, content_type):
    """One implementation: the tunnel's answer is the HTTP REST answer, byte for byte."""
    tunnel = await TunnelClient.open(fab, HUB)
    over_http = await RestClient(fab, key=KEY).call(method, path, body=body, content_type=content_type,
                                                  api_version="2023-07-01")
    status, headers, answer, _ = await tunnel.call(method, path + API, body.encode() or None,
                                                   content_type=content_type)
    assert (status, answer) == (over_http.status, over_http.body)
    if status >= 400 and method != "HEAD":
        assert json.loads(answer)["message"]
        assert headers["x-ms-error-code"] == (json.loads(answer)["code"],)
    await tunnel.aclose()


async def test_paths_outside_the_api_and_oversized_bodies(fab):
    tunnel = await TunnelClient.open(fab, HUB)
    status, _, body, _ = await tunnel.call("GET", "/eventhandler/")
    assert status == 404 and b"no such resource" in body
    big = b"x" * (fab.config.server.max_request_body_bytes + 1)
    status, _, body, _ = await tunnel.call("POST", f"/api/hubs/{HUB}/:send{API}", big, content_type="text/plain")
    assert status == 413 and json.loads(body)["code"] == "PayloadTooLarge"
    status, _, body, _ = await tunnel.call("P@ST", f"/api/hubs/{HUB}/:send{API}", "x")
    assert status == 400 and b"HttpMethod" in body
    await tunnel.aclose()


async def test_requests_are_served_in_order(fab):
    tunnel = await TunnelClient.open(fab, HUB)
    client = await connect(fab, HUB, roles=ROLES)
    acks = []
    for i in range(60):
        ack = tunnel.next_ack()
        acks.append(ack)
        await tunnel.send(tp.HttpRequest(ack, "POST", f"https://host/api/hubs/{HUB}/connections/"
                                         f"{client.connection_id}/:send{API}", {"Content-Type": ["text/plain"]},
                                         str(i).encode()))
    answered = []
    while len(answered) < 60:
        message = await tunnel.receive()
        assert isinstance(message, tp.HttpResponse) and message.status_code == 202
        answered.append(message.ack_id)
    assert answered == acks
    assert [await next_data(client) for _ in range(60)] == [str(i) for i in range(60)]
    await tunnel.aclose()


async def test_an_added_operation_streams_its_answer(fab):
    seen = []

    async def invoke(hub, request):
        seen.append((hub, request.method, request.query.get("filter"), request.body))

        async def parts():
            for i in range(3):
                await trio.sleep(0.01)
                yield f'{{"Payload":"43{i}[\\"ok\\"]"}}\n'.encode()

        return TunnelReply(200, b"", (("content-type", "application/x-ndjson"),), parts())

    fab.tunnels.add_operation("POST", ":invoke", invoke)
    tunnel = await TunnelClient.open(fab, HUB)
    flt = urllib.parse.quote("'0~Lw~' in groups")
    status, headers, body, parts = await tunnel.call("POST", f"/api/hubs/{HUB}/:invoke{API}&filter={flt}",
                                                     '420["ev"]')
    assert status == 200 and headers["content-type"] == ("application/x-ndjson",)
    assert [p.not_completed for p in parts] == [True, True, True, True, False]
    assert [json.loads(line)["Payload"] for line in body.decode().splitlines()] == ['430["ok"]', '431["ok"]',
                                                                                    '432["ok"]']
    assert seen == [(HUB, "POST", ["'0~Lw~' in groups"], b'420["ev"]')]
    assert fab.tunnels.counters["requests_streamed"] == 1
    await tunnel.aclose()


async def test_a_failing_operation_is_a_500_and_the_tunnel_stays(fab):
    async def broken(hub, request):
        raise RuntimeError("boom")

    fab.tunnels.add_operation("POST", ":invoke", broken)
    tunnel = await TunnelClient.open(fab, HUB)
    status, _, body, _ = await tunnel.call("POST", f"/api/hubs/{HUB}/:invoke{API}", "x")
    assert status == 500 and json.loads(body)["code"] == "InternalServerError"
    status, _, _, _ = await tunnel.call("GET", "/api/health")
    assert status == 200
    await tunnel.aclose()


# ---- bad input from the app ------------------------------------------------------------------------


async def test_a_malformed_request_naming_its_ack_is_answered_400(fab):
    tunnel = await TunnelClient.open(fab, HUB)
    json_text = '{"AckId": 41, "HttpMethod": ["POST"], "Url": "https://host/api/health", "Type": 1}'
    import struct

    import msgpack
    body = msgpack.packb([1, json_text, None], use_bin_type=True)
    await tunnel.send_raw(struct.pack("<I", len(body)) + body)
    status, _, answer, _ = await tunnel.answer(41)
    assert status == 400 and "HttpMethod" in json.loads(answer)["message"]
    assert json.loads(answer)["code"] == "InvalidTunnelMessage"
    status, _, _, _ = await tunnel.call("GET", "/api/health")
    assert status == 200
    await tunnel.aclose()


@pytest.mark.parametrize("frame, code, says", [
    (b"\x01\x02", 1007, "shorter than the 4-byte length prefix"),
    (b"\x10\x00\x00\x00\x93\x01", 1007, "announces 16 bytes"),
    (b"\x03\x00\x00\x00\xc1\xc1\xc1", 1007, "MessagePack"),
    ("a text frame", 1003, "binary frames only"),
])
async def test_an_unreadable_frame_closes_only_that_tunnel(fab, frame, code, says):
    bystander = await TunnelClient.open(fab, HUB, sub="other-app")
    client = await connect(fab, HUB, roles=ROLES)
    tunnel = await TunnelClient.open(fab, HUB)
    await tunnel.send_raw(frame)
    with pytest.raises(ConnectionClosed) as caught:
        await tunnel.receive()
    assert caught.value.code == code and says in caught.value.reason
    # nothing else is touched: the other app's tunnel works, the client stays connected
    status, _, _, _ = await bystander.call("POST", f"/api/hubs/{HUB}/connections/{client.connection_id}/:send{API}",
                                           "still here")
    assert status == 202
    assert await next_data(client) == "still here"
    assert [t.server for t in fab.tunnels.tunnels(HUB)] == ["other-app"]
    await bystander.aclose()


async def test_responses_to_unknown_ack_ids_and_unknown_types_are_dropped(fab):
    tunnel = await TunnelClient.open(fab, HUB)
    await tunnel.send(tp.HttpResponse(999, 200, {}, b"who asked?"))
    import struct

    import msgpack
    body = msgpack.packb([77, "{}", None], use_bin_type=True)
    await tunnel.send_raw(struct.pack("<I", len(body)) + body)
    await tunnel.send(tp.ConnectionConnected("x"))  # only a service sends this
    await tunnel.send(tp.ServiceStatus("app says hi"))
    status, _, _, _ = await tunnel.call("GET", "/api/health")
    assert status == 200
    counters = fab.tunnels.counters
    assert (counters["responses_unknown"], counters["messages_unknown"], counters["messages_unexpected"]) == (1, 1, 1)
    await tunnel.aclose()


# ---- service -> app --------------------------------------------------------------------------------


async def test_a_service_request_and_its_streamed_answer(fab):
    tunnel = await TunnelClient.open(fab, HUB)
    result = {}

    async def ask():
        response = await fab.tunnels.request(HUB, "POST", "http://h/eventhandler/", {"ce-type": ["t"]}, b"{}",
                                             key="conn-1")
        result["status"] = response.status
        result["server"] = response.server
        result["body"] = await response.read()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        request = await tunnel.receive()
        assert isinstance(request, tp.HttpRequest)
        assert (request.method, request.url, request.header("CE-TYPE"), request.content) == (
            "POST", "http://h/eventhandler/", "t", b"{}")
        await tunnel.send(tp.HttpResponse(request.ack_id, 200, {"content-type": ["text/plain"]}, b"part1;", True))
        await tunnel.send(tp.HttpResponse(request.ack_id, 200, {}, b"part2", True))
        await tunnel.send(tp.HttpResponse(request.ack_id, 200, {}, None, False))
    assert result == {"status": 200, "server": "app-1", "body": b"part1;part2"}
    # a late duplicate of the last part is counted as late, not unknown
    await tunnel.send(tp.HttpResponse(request.ack_id, 200, {}, None, False))
    await tunnel.send(tp.HttpResponse(request.ack_id + 5, 200, {}, None, False))
    status, _, _, _ = await tunnel.call("GET", "/api/health")
    assert status == 200
    assert (fab.tunnels.counters["responses_late"], fab.tunnels.counters["responses_unknown"]) == (1, 1)
    await tunnel.aclose()


async def test_a_malformed_response_fails_its_request(fab):
    tunnel = await TunnelClient.open(fab, HUB)
    import struct

    import msgpack
    async with trio.open_nursery() as nursery:
        failures = []

        async def ask():
            with pytest.raises(Exception) as caught:
                await fab.tunnels.request(HUB, "GET", "http://h/x")
            failures.append(str(caught.value))

        nursery.start_soon(ask)
        request = await tunnel.receive()
        body = msgpack.packb([2, json.dumps({"AckId": request.ack_id, "StatusCode": "200"}), None], use_bin_type=True)
        await tunnel.send_raw(struct.pack("<I", len(body)) + body)
    assert "malformed response" in failures[0]
    await tunnel.aclose()


async def test_no_tunnel_fails_at_once_and_wait_waits(fab):
    with trio.fail_after(0.5):
        with pytest.raises(TunnelUnavailable, match="no tunnel from any app server"):
            await fab.tunnels.request(HUB, "GET", "http://h/")
    done = []

    async def ask():
        response = await fab.tunnels.request(HUB, "GET", "http://h/", wait=5)
        done.append(response.status)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        await trio.sleep(0.1)
        tunnel = await TunnelClient.open(fab, HUB)
        request = await tunnel.receive()
        await tunnel.send(tp.HttpResponse(request.ack_id, 204, {}))
    assert done == [204]
    await tunnel.aclose()


async def test_tunnel_loss_fails_pending_requests_fast_and_the_next_tunnel_serves(fab):
    tunnel = await TunnelClient.open(fab, HUB)
    errors = []

    async def ask():
        try:
            await fab.tunnels.request(HUB, "POST", "http://h/eventhandler/")
        except TunnelLost as exc:
            errors.append((trio.current_time(), str(exc)))

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(ask)
        for _ in range(3):
            assert isinstance(await tunnel.receive(), tp.HttpRequest)
        lost_at = trio.current_time()
        await trio.aclose_forcefully(tunnel.client.stream)  # the app vanishes without a close frame
    assert len(errors) == 3 and all(at - lost_at < 1.0 for at, _ in errors)
    assert "closed" in errors[0][1]
    # the app's reconnect resumes service
    again = await TunnelClient.open(fab, HUB)
    async with trio.open_nursery() as nursery:
        result = []

        async def ask_again():
            result.append((await fab.tunnels.request(HUB, "GET", "http://h/")).status)

        nursery.start_soon(ask_again)
        request = await again.receive()
        await again.send(tp.HttpResponse(request.ack_id, 200, {}))
    assert result == [200]
    await again.aclose()


async def test_routing_by_consistency_key_and_app_server(fab):
    a1 = await TunnelClient.open(fab, HUB, sub="app-A")
    a2 = await TunnelClient.open(fab, HUB, sub="app-A")
    b1 = await TunnelClient.open(fab, HUB, sub="app-B")
    keys = [f"conn-{i}" for i in range(200)]
    first = {k: fab.tunnels.pick(HUB, k).id for k in keys}
    assert {k: fab.tunnels.pick(HUB, k).id for k in keys} == first  # stable
    assert len(set(first.values())) == 3  # spread over every tunnel
    pinned = {fab.tunnels.pick(HUB, k, server="app-A").server for k in keys}
    assert pinned == {"app-A"}
    assert {fab.tunnels.pick(HUB, k, server="app-A").id for k in keys} == {a1.connected.connection_id,
                                                                            a2.connected.connection_id}
    # a tunnel goes: only its keys move
    await a2.aclose()
    with trio.fail_after(3):
        while len(fab.tunnels.tunnels(HUB)) != 2:
            await trio.sleep(0.01)
    after = {k: fab.tunnels.pick(HUB, k).id for k in keys}
    assert all(after[k] == first[k] for k in keys if first[k] != a2.connected.connection_id)
    with pytest.raises(TunnelUnavailable, match="app server app-C"):
        await fab.tunnels.request(HUB, "GET", "http://h/", server="app-C")
    await a1.aclose()
    await b1.aclose()


async def test_an_answer_over_the_buffer_bound_fails_that_request(fab):
    tunnel = await TunnelClient.open(fab, HUB)
    limit = fab.tunnels.max_buffered
    outcome = []

    async def ask():
        response = await fab.tunnels.request(HUB, "GET", "http://h/")
        with pytest.raises(TunnelBusy, match="buffered bytes"):
            await trio.sleep(0.2)  # not reading while the parts pile up
            await response.read()
        outcome.append("busy")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        request = await tunnel.receive()
        chunk = b"x" * (512 * 1024)
        await tunnel.send(tp.HttpResponse(request.ack_id, 200, {}, None, True))
        for _ in range(limit // len(chunk) + 2):
            await tunnel.send(tp.HttpResponse(request.ack_id, 200, {}, chunk, True))
    assert outcome == ["busy"]
    await tunnel.aclose()


async def test_control_messages_reach_the_app(fab):
    tunnel = await TunnelClient.open(fab, HUB)
    (server_side,) = fab.tunnels.tunnels(HUB)
    assert server_side.rebalance(endpoint="http://127.0.0.1:9/", target="node-2", message="one more")
    assert server_side.reconnect(endpoint="http://127.0.0.1:9/", target="node-3")
    assert server_side.stop("bye")
    assert await tunnel.receive() == tp.ConnectionRebalance("node-2", "http://127.0.0.1:9/", "one more")
    assert await tunnel.receive() == tp.ConnectionReconnect("node-3", "http://127.0.0.1:9/", "")
    assert await tunnel.receive() == tp.ConnectionClose("bye")
    await tunnel.aclose()


# ---- bounds: an app that stops reading, an app that goes silent ---------------------------------------


@pytest.mark.parametrize("requests, bound", [
    (40, "outbox"),  # 4 MB queued at once: past the outbox bound, closed at once
    (3, "stall"),  # 300 kB: fits the outbox, but nobody takes it: closed after stall_timeout
])
async def test_a_tunnel_that_stops_reading_is_closed_after_the_bound(requests, bound):
    config = tunnel_config(stall_timeout=0.5, keepalive_interval=0.2, idle_timeout=60.0,
                           outbox_max_bytes=1024 * 1024)
    async with fabric.open_fabric(config) as fab:
        bystander = await TunnelClient.open(fab, HUB, sub="healthy-app")
        client = await connect(fab, HUB, roles=ROLES)
        stuck = await TunnelClient.open(fab, HUB, sub="stuck-app")  # never reads again
        failures = []

        async def ask():
            try:
                await fab.tunnels.request(HUB, "POST", "http://h/", {}, b"y" * 100_000, server="stuck-app")
            except TunnelError as exc:
                failures.append(exc)

        started = trio.current_time()
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for _ in range(requests):
                    nursery.start_soon(ask)
        elapsed = trio.current_time() - started
        assert len(failures) == requests
        assert elapsed < (0.5 if bound == "outbox" else 0.5 + 0.2 + 1.0)
        assert [t.server for t in fab.tunnels.tunnels(HUB)] == ["healthy-app"]
        assert fab.tunnels.counters["slow_consumers"] == 1
        # the healthy app and the client never noticed
        status, _, _, _ = await bystander.call(
            "POST", f"/api/hubs/{HUB}/connections/{client.connection_id}/:send{API}", "fine")
        assert status == 202 and await next_data(client) == "fine"
        await bystander.aclose()
        await trio.aclose_forcefully(stuck.client.stream)
        await client.aclose()


async def test_an_idle_tunnel_gets_keepalives_and_a_silent_one_is_closed():
    config = tunnel_config(keepalive_interval=0.2, idle_timeout=0.7)
    async with fabric.open_fabric(config) as fab:
        tunnel = await TunnelClient.open(fab, HUB)
        message = await tunnel.receive(timeout=2)  # receive() answers the pings
        assert message == tp.ServiceStatus("keepalive")
        await trio.sleep(1.5)  # not reading: pings go unanswered
        with pytest.raises(ConnectionClosed) as caught:
            while True:
                await tunnel.receive(timeout=2)
        assert caught.value.code == 1001 and "idle timeout" in caught.value.reason
        assert fab.tunnels.counters["idle_timeouts"] == 1


async def test_shutdown_closes_tunnels_with_1001():
    async with fabric.open_fabric(tunnel_config()) as fab:
        tunnel = await TunnelClient.open(fab, HUB)
        await fab.aclose()
        with pytest.raises(ConnectionClosed) as caught:
            await tunnel.receive()
        assert caught.value.code == 1001
