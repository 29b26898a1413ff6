"""The Socket.IO edge in process: Engine.IO's answers to bad input, heartbeats as deadlines,
polling sessions outliving their requests, Socket.IO over polling, rooms as hub groups,
the per-hub endpoint's tokens. Timeouts run on ``autojump_clock``."""

from __future__ import annotations

import json

import pytest
import trio

import fabric
from fabric.socketio.formats import namespace_group, parse_group, room_group
from fabric.testing import ConnectionClosed
from tests.socketio.inprocess import RawSocket, http, open_polling, sio_config

SUITE = {"ping_interval": 0.3, "ping_timeout": 0.2, "connect_timeout": 1.0}


@pytest.fixture
async def fab():
    async with fabric.open_fabric(sio_config(**SUITE), access_key="test-key") as f:
        sio = f.socketio()
        sio.namespaces = {"/", "/custom"}

        @sio.event
        def echo(sid, *args):
            return args

        @sio.event
        async def join(sid, room):
            await sio.enter_room(sid, room)
            return sio.rooms(sid)

        yield f


def error_code(answer) -> int:
    return json.loads(answer.body)["code"]


# ---------------------------------------------------------------- Engine.IO: bad requests


async def test_bad_handshakes_get_node_answers(fab):
    cases = [
        ("GET", "/socket.io/?transport=polling", 400, 5),  # missing EIO
        ("GET", "/socket.io/?EIO=3&transport=polling", 400, 5),
        ("GET", "/socket.io/?EIO=abc&transport=polling", 400, 5),
        ("GET", "/socket.io/?EIO=4", 400, 0),  # missing transport
        ("GET", "/socket.io/?EIO=4&transport=carrier-pigeon", 400, 0),
        ("POST", "/socket.io/?EIO=4&transport=polling", 400, 2),  # handshake must be a GET
        ("PUT", "/socket.io/?EIO=4&transport=polling", 400, 2),
        ("GET", "/socket.io/?EIO=4&transport=polling&sid=nope", 400, 1),
        ("GET", "/socket.io/?EIO=4&transport=websocket", 400, 3),  # websocket without Upgrade
    ]
    for method, target, status, code in cases:
        answer = await http(fab, method, target)
        assert (answer.status, error_code(answer)) == (status, code), (method, target, answer)
        assert dict(answer.headers)["content-type"] == "application/json"


async def test_other_method_on_a_session_is_500_and_the_session_lives(fab):
    sid = await open_polling(fab)
    assert (await http(fab, "PUT", f"/socket.io/?EIO=4&transport=polling&sid={sid}")).status == 500
    answer = await http(fab, "POST", f"/socket.io/?EIO=4&transport=polling&sid={sid}", "40")
    assert (answer.status, answer.body) == (200, b"ok")


async def test_oversize_post_is_413_and_the_session_carries_on(fab):
    sid = await open_polling(fab)
    target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    answer = await http(fab, "POST", target, "4" + "x" * 1_000_000)
    assert answer.status == 413
    assert (await http(fab, "POST", target, "40")).status == 200
    reply = await http(fab, "GET", target)
    assert reply.status == 200 and reply.body.startswith(b"40{")


async def test_invalid_packet_closes_that_session_only(fab):
    other = await open_polling(fab)
    sid = await open_polling(fab)
    target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    assert (await http(fab, "POST", target, "abc")).status == 400
    assert error_code(await http(fab, "GET", target)) == 1
    # Socket.IO-level garbage closes too (a valid Engine.IO message that is not Socket.IO)
    third = await open_polling(fab)
    third_target = f"/socket.io/?EIO=4&transport=polling&sid={third}"
    assert (await http(fab, "POST", third_target, "42{}")).status == 200
    assert (await http(fab, "GET", third_target)).body == b"1"  # the server's close reaches the poller
    assert error_code(await http(fab, "GET", third_target)) == 1
    # the first session never noticed
    other_target = f"/socket.io/?EIO=4&transport=polling&sid={other}"
    assert (await http(fab, "POST", other_target, '40\x1e42["echo",1]')).status == 200


async def test_overlapping_polls_close_the_session(fab):
    sid = await open_polling(fab)
    target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    first = {}
    async with trio.open_nursery() as nursery:
        async def park():
            first["answer"] = await http(fab, "GET", target)

        nursery.start_soon(park)
        await trio.testing.wait_all_tasks_blocked()
        second = await http(fab, "GET", target)
    assert second.status == 400
    assert (first["answer"].status, first["answer"].body) == (200, b"1")
    assert error_code(await http(fab, "GET", target)) == 1


async def test_close_post_then_the_poll_it_raced_gets_the_noop_once(fab, autojump_clock):
    """A client sends its long-poll GET and the POST closing the session at once: when the
    POST is handled first, the GET still gets the noop it would have had if parked first
    (as Node, which handles them in arrival order), and only that one GET."""
    from fabric.socketio import engine

    target = "/socket.io/?EIO=4&transport=polling&sid={}"
    sid = await open_polling(fab)
    assert (await http(fab, "POST", target.format(sid), "1")).status == 200
    late = await http(fab, "GET", target.format(sid))
    assert (late.status, late.body) == (200, b"6")
    assert error_code(await http(fab, "GET", target.format(sid))) == 1  # the session is gone
    # Past the grace, or with a GET parked when the close came: the usual 400.
    sid = await open_polling(fab)
    assert (await http(fab, "POST", target.format(sid), "1")).status == 200
    await trio.sleep(engine.LATE_GET_GRACE + 0.1)
    assert error_code(await http(fab, "GET", target.format(sid))) == 1
    sid = await open_polling(fab)
    first = {}
    async with trio.open_nursery() as nursery:
        async def park():
            first["answer"] = await http(fab, "GET", target.format(sid))

        nursery.start_soon(park)
        await trio.testing.wait_all_tasks_blocked()
        assert (await http(fab, "POST", target.format(sid), "1")).status == 200
    assert (first["answer"].status, first["answer"].body) == (200, b"6")
    assert error_code(await http(fab, "GET", target.format(sid))) == 1
    # Other sids never get a noop for it.
    assert error_code(await http(fab, "GET", target.format("not-a-session"))) == 1


async def test_octet_stream_post_is_refused_and_closes(fab):
    sid = await open_polling(fab)
    target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    answer = await http(fab, "POST", target, "40", headers=(("content-type", "application/octet-stream"),))
    assert answer.status == 400
    assert error_code(await http(fab, "GET", target)) == 1


async def test_second_websocket_on_an_upgraded_sid_is_accepted_then_closed(fab):
    sid = await open_polling(fab)
    probe = await RawSocket.open(fab, f"/socket.io/?EIO=4&transport=websocket&sid={sid}", expect_open=False)
    await probe.send("2probe")
    assert await probe.receive() == "3probe"
    await probe.send("5")
    second = await RawSocket.open(fab, f"/socket.io/?EIO=4&transport=websocket&sid={sid}", expect_open=False)
    assert await second.client.wait_closed() == 1000
    # polling after the upgrade: 400 (transport mismatch), and the upgraded socket works
    assert error_code(await http(fab, "GET", f"/socket.io/?EIO=4&transport=polling&sid={sid}")) == 3
    await probe.send("40")
    assert (await probe.receive()).startswith("40{")
    await probe.send('42["echo","up"]')


# ---------------------------------------------------------------- heartbeats as deadlines


async def test_polling_session_without_pong_is_gone_after_interval_plus_timeout(fab, autojump_clock):
    sid = await open_polling(fab)
    target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    answer = await http(fab, "GET", target)  # parks until the ping is due
    assert answer.body == b"2"
    await trio.sleep(0.25)  # no pong
    assert error_code(await http(fab, "GET", target)) == 1


async def test_websocket_pings_on_schedule_and_one_ticker_serves_all(fab, autojump_clock):
    sockets = [await RawSocket.open(fab) for _ in range(20)]
    for _ in range(3):
        for s in sockets:
            start = trio.current_time()
            assert await s.receive(pong=False) == "2"
            assert trio.current_time() - start <= 0.31
            await s.send("3")
    stats = fab.socketio_edge.statistics()["endpoints"]["/socket.io"]
    assert stats["sessions"] == 20
    assert stats["heap"] <= 3 * 20  # stale entries are bounded: a few per session
    silent = await RawSocket.open(fab)
    assert await silent.receive(pong=False) == "2"
    assert await silent.client.wait_closed() == 1000  # ping timeout
    for s in sockets:
        await s.aclose()


async def test_no_namespace_within_connect_timeout_closes(fab, autojump_clock):
    s = await RawSocket.open(fab)
    start = trio.current_time()
    with pytest.raises(ConnectionClosed):
        while True:
            await s.receive(timeout=5)  # answers the pings: only the connect timeout can close it
    assert 0.99 <= trio.current_time() - start <= 1.5


# ---------------------------------------------------------------- Socket.IO over polling


async def test_socketio_over_polling_connect_event_ack_and_unknown_namespace(fab):
    sid = await open_polling(fab)
    target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    await http(fab, "POST", target, '40\x1e40/nope,\x1e42["echo","a",{"b":1}]\x1e4217["echo","b"]')
    body = (await http(fab, "GET", target)).body.decode()
    packets = body.split("\x1e")
    assert packets[0].startswith('40{"sid":')
    assert packets[1] == '44/nope,{"message":"Invalid namespace"}'
    assert packets[2] == '4317["b"]'
    # a placeholder-shaped object in a plain EVENT is just an object (as socket.io-parser)
    await http(fab, "POST", target, '4218["echo","bin",{"_placeholder":true,"num":0}]')
    assert (await http(fab, "GET", target)).body == b'4318["bin",{"_placeholder":true,"num":0}]'
    # a BINARY_EVENT whose placeholders do not match its attachment count closes the connection
    await http(fab, "POST", target, '451-["echo",{"_placeholder":true,"num":3}]')
    assert (await http(fab, "GET", target)).body == b"1"
    assert error_code(await http(fab, "GET", target)) == 1


async def test_socketio_binary_over_polling_is_base64(fab):
    sid = await open_polling(fab)
    target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    await http(fab, "POST", target, '40\x1e451-9["echo",{"_placeholder":true,"num":0}]\x1ebAQID')
    packets = (await http(fab, "GET", target)).body.decode().split("\x1e")
    assert packets[0].startswith("40{")
    assert packets[1:] == ['461-9[{"_placeholder":true,"num":0}]', "bAQID"]


# ---------------------------------------------------------------- rooms are hub groups


def test_group_names_are_azures():
    assert namespace_group("/") == "0~Lw~"
    assert room_group("/", "rm") == "0~Lw~cm0"
    assert namespace_group("/ns") == "0~L25z~"
    assert parse_group("0~L25z~cm0") == ("/ns", "rm")
    assert parse_group("0~Lw~") == ("/", None)
    assert parse_group("chat") is None and parse_group("0~!!~") is None


async def test_embedded_send_to_a_room_group_and_service_api_sees_it(fab):
    s = await RawSocket.open(fab)
    await s.connect()
    await s.send('421["join","lobby"]')
    ack = await s.receive()
    assert ack.startswith("431[") and json.loads(ack[3:])[0][1:] == ["lobby"]
    handle = fab.hub("socketio")
    assert await handle.group_exists("0~Lw~bG9iYnk")
    assert await handle.group_exists("0~Lw~")  # the namespace group
    await handle.send_to_group("0~Lw~bG9iYnk", '42["news","from the app"]')
    assert await s.receive() == '42["news","from the app"]'
    await handle.send_to_group("0~Lw~bG9iYnk", "not an engine.io payload")  # reaches no Socket.IO client
    await handle.send_to_group("0~Lw~bG9iYnk", '42["news",2]')
    assert await s.receive() == '42["news",2]'
    members = await handle.list_connections_in_group("0~Lw~bG9iYnk")
    assert len(members) == 1
    await handle.close_connection(members[0]["connectionId"])
    assert await s.receive() == "41"  # a server close says goodbye to each namespace
    await s.client.wait_closed()


async def test_per_hub_endpoint_requires_a_token_unless_anonymous(fab):
    answer = await http(fab, "GET", "/clients/socketio/hubs/chat/?EIO=4&transport=polling")
    assert answer.status == 401
    token = fab.hub("chat").get_client_access_token(client_type="socketio", user_id="u1", groups=["g1"])["token"]
    answer = await http(fab, "GET", f"/clients/socketio/hubs/chat/?EIO=4&transport=polling&access_token={token}")
    assert answer.status == 200 and answer.body.startswith(b"0{")
    wrong = fab.hub("chat").get_client_access_token(user_id="u1")["token"]  # a Web PubSub token
    answer = await http(fab, "GET", f"/clients/socketio/hubs/chat/?EIO=4&transport=polling&access_token={wrong}")
    assert answer.status == 401
    answer = await http(fab, "GET", "/clients/socketio/hubs/9bad/?EIO=4&transport=polling")
    assert answer.status == 400
    sid = json.loads((await http(fab, "GET", "/clients/socketio/hubs/chat/?EIO=4&transport=polling&"
                                 f"access_token={token}")).body[1:])["sid"]
    await trio.sleep(0)
    assert await fab.hub("chat").group_exists("g1")  # webpubsub.group joined on connect
    assert await fab.hub("chat").connection_exists(sid)


async def test_a_sockets_own_room_is_a_group_rest_reaches(fab):
    s = await RawSocket.open(fab)
    sid = (await s.connect())["sid"]
    handle = fab.hub("socketio")
    own = room_group("/", sid)
    assert await handle.group_exists(own)
    assert [m["connectionId"] for m in await handle.list_connections_in_group(own)] == [s.sid]
    await handle.send_to_group(own, '42["news","to my room"]')
    assert await s.receive() == '42["news","to my room"]'
    await handle.send_to_group(own, "41")  # a DISCONNECT through the service API ends the socket here too
    assert await s.receive() == "41"
    sio = fab.socketio()
    with trio.fail_after(5):
        while sid in sio.sids() or await handle.group_exists(own):
            await trio.sleep(0.01)
    await s.aclose()


async def test_broadcast_operators_on_one_node(fab):
    sio = fab.socketio()
    s1, s2 = await RawSocket.open(fab), await RawSocket.open(fab)
    sid1, sid2 = (await s1.connect())["sid"], (await s2.connect())["sid"]
    await s1.send('421["join","lobby"]')
    assert (await s1.receive()).startswith("431[")
    await sio.in_("lobby").sockets_join(["x", "y"])
    assert sorted(sio.rooms(sid1)[1:]) == ["lobby", "x", "y"] and sio.rooms(sid2) == [sid2]
    await sio.of("/").except_("lobby").sockets_join("others")
    assert sio.rooms(sid2) == [sid2, "others"]
    await sio.in_("x").sockets_leave("y")
    assert sorted(sio.rooms(sid1)) == sorted([sid1, "lobby", "x"])
    await sio.in_(sid2).disconnect_sockets(close=True)
    assert await s2.receive() == "41"
    await s2.client.wait_closed()
    await sio.emit("still", "here", to=sid1)
    assert await s1.receive() == '42["still","here"]'
    await s1.aclose()


# ---------------------------------------------------------------- hostile input (fuzz run 2026-12-04)


async def test_requests_naming_new_hubs_build_nothing_until_a_valid_handshake(fab):
    # Unauthenticated requests naming 10,000 hubs kept 125 MB: each built a Server and an
    # EngineServer before the token was checked (decision socketio.hostile-input).
    edge = fab.socketio_edge
    before = set(edge.statistics()["servers"])
    for i in range(50):
        assert (await http(fab, "GET", f"/clients/socketio/hubs/h{i}/?EIO=4&transport=polling")).status == 401
        answer = await http(fab, "GET", f"/clients/socketio/hubs/s{i}/?EIO=4&transport=polling&sid=nope")
        assert (answer.status, error_code(answer)) == (400, 1)
        answer = await http(fab, "POST", f"/clients/socketio/hubs/p{i}/?EIO=4&transport=polling")
        assert answer.status == 401  # the token check precedes the engine's, as for a running hub
        assert (await http(fab, "OPTIONS", f"/clients/socketio/hubs/o{i}/?EIO=4&transport=polling")).status < 500
    assert set(edge.statistics()["servers"]) == before
    token = fab.hub("made").get_client_access_token(client_type="socketio", user_id="u")["token"]
    answer = await http(fab, "GET", f"/clients/socketio/hubs/made/?EIO=4&transport=polling&access_token={token}")
    assert answer.status == 200 and "made" in edge.statistics()["servers"]


async def test_packets_after_an_invalid_one_in_a_post_are_dropped(fab):
    # Node stops delivering once the socket is no longer open; here the rest of the body
    # used to reach the application (and 200,000 invalid packets were each handled and logged).
    sid = await open_polling(fab)
    target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    await http(fab, "POST", target, "40")
    assert (await http(fab, "GET", target)).body.startswith(b"40{")
    seen = []
    sio = fab.socketio()

    @sio.event
    def record(sid_, *args):
        seen.append(args)

    await http(fab, "POST", target, '42["record",1]\x1e4\x1e42["record",2]\x1e' + "4\x1e" * 1000 + '42["record",3]')
    assert seen == [(1,)]
    assert (await http(fab, "GET", target)).body == b"1"


async def test_at_most_so_many_namespaces_per_connection(fab):
    from fabric.socketio.server import MAX_NAMESPACES_PER_CONNECTION

    fab.socketio().namespaces = "*"
    sid = await open_polling(fab)
    target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    body = "\x1e".join(f"40/n{i}," for i in range(MAX_NAMESPACES_PER_CONNECTION + 1))
    await http(fab, "POST", target, body)
    packets = []
    while len(packets) < MAX_NAMESPACES_PER_CONNECTION + 1:
        packets += (await http(fab, "GET", target)).body.decode().split("\x1e")
    assert all(p.startswith(f"40/n{i},{{") for i, p in enumerate(packets[:-1]))
    assert packets[-1].startswith(f"44/n{MAX_NAMESPACES_PER_CONNECTION},") and "Too many namespaces" in packets[-1]
    # the connection carries on
    await http(fab, "POST", target, '42/n0,["echo","still"]')


def test_an_ack_too_deep_to_encode_is_an_invalid_packet_not_a_recursion_error():
    from fabric.socketio import parser

    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(parser.InvalidPacket, match="too deeply"):
        parser.encode_ack([deep], 1, "/")
