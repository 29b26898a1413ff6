"""Socket.IO connection-state recovery on any node: a socket that dropped from node A and
reconnects (with its pid and offset) to node B is restored there - same sid, rooms and
session data, ``recovered`` - and gets what it missed once and in order, broadcasts from any
node included; if A is gone, the CONNECT is answered as a fresh socket. In process (a
``MemoryBus`` or real Redis per node) with raw Engine.IO frames, and with socket.io-client
against two app processes on one redis-server."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio

import fabric
from fabric.config import SocketIOConfig
from fabric.core.broker_memory import MemoryBus
from tests.scaleout.conftest import node_config
from tests.socketio.inprocess import RawSocket

pytestmark = pytest.mark.slow

KEEP = 30.0  # seconds a dropped socket is kept (never reached here)


def _config(kind, server, i, prefix):
    config = node_config() if kind == "memory" else node_config(server.url, prefix, f"node{i}")
    return attrs.evolve(config, socketio=SocketIOConfig(connection_state_recovery=KEEP))


_prefixes = iter(range(1, 1 << 30))


@asynccontextmanager
async def _node(kind, server, bus, i, prefix):
    config = _config(kind, server, i, prefix)
    async with fabric.open_fabric(config, access_key="test-key", bus=bus) as fab:
        sio = fab.socketio()

        @sio.event
        async def join(sid, room):
            await sio.enter_room(sid, room)
            return "ok"

        yield fab


@pytest.fixture
def sio_nodes(kind, request):
    """``async with sio_nodes() as (open_node, ...)``: ``await open_node()`` starts one more
    node with recovery on; each is an exit stack of its own, so a test can stop one."""
    server = request.getfixturevalue("redis_server") if kind == "redis" else None

    @asynccontextmanager
    async def make():
        bus = MemoryBus() if kind == "memory" else None
        prefix = f"sior{next(_prefixes)}:"
        count = iter(range(100))
        async with AsyncExitStack() as outer:
            async def open_node():
                stack = AsyncExitStack()
                outer.push_async_callback(stack.aclose)
                fab = await stack.enter_async_context(_node(kind, server, bus, next(count), prefix))
                return fab, stack
            yield open_node

    return make


def _event(message):
    """``(name, args)`` of a ``42`` frame on ``/``."""
    assert message.startswith("42"), message
    body = json.loads(message[2:])
    return body[0], body[1:]


async def _events(s, n):
    out = []
    with trio.fail_after(10):
        while len(out) < n:
            message = await s.receive()
            if message.startswith("42"):
                out.append(_event(message))
    return out


async def _kept(sio, n=1):
    """Wait until ``sio``'s node noticed the drop and keeps ``n`` sockets."""
    with trio.fail_after(10):
        while sio.statistics()["recovery"]["sessions"] != n:
            await trio.sleep(0.01)


def _log_after(sio, offset):
    """The broadcasts ``sio``'s node recorded after ``offset``, in its delivery order."""
    entries = list(sio._recovery.packets)
    position = [e[0] for e in entries].index(offset)
    return [e[2] for e in entries[position + 1:]]


async def _drop(s):
    await trio.aclose_forcefully(s.client.stream)


async def test_socket_recovers_on_another_node_with_what_it_missed(sio_nodes):
    async with sio_nodes() as open_node:
        a, _ = await open_node()
        b, _ = await open_node()
        sio_a, sio_b = a.socketio(), b.socketio()
        s = await RawSocket.open(a)
        hello = await s.connect()
        sid, pid = hello["sid"], hello["pid"]
        await s.send('421["join","r"]')
        assert await s.receive() == '431["ok"]'
        await sio_a.save_session(sid, {"user": "ann"})
        other = await RawSocket.open(b)  # a socket of the room on B all along
        other_sid = (await other.connect())["sid"]
        await other.send('421["join","r"]')
        assert await other.receive() == '431["ok"]'
        await sio_a.emit("news", "m1", room="r")
        [(name, (text, offset))] = await _events(s, 1)
        assert (name, text) == ("news", "m1")
        await sio_a.emit("news", "m2", room="r")  # written towards the client, never read: replayed
        await _drop(s)
        await _kept(sio_a)
        await sio_b.emit("news", "m3", room="r")  # from B while away
        await sio_a.emit("news", "m4", room="r")  # from A while away
        await sio_b.emit("news", "m5", to=sid)  # to its own room, from the node it will come back to
        await sio_b.emit("news", "m6", room="r", skip_sid=sid)  # not for it
        seen = [e[1][0] for e in await _events(other, 5)]
        assert sorted(seen) == ["m1", "m2", "m3", "m4", "m6"]  # each publisher's in order:
        assert [t for t in seen if t in ("m1", "m2", "m4")] == ["m1", "m2", "m4"]
        assert [t for t in seen if t in ("m3", "m6")] == ["m3", "m6"]
        # every broadcast above reached A before the socket comes back (B's arrive through the broker)
        with trio.fail_after(10):
            while sio_a.statistics()["recovery"]["packets"] < 5:  # m6 was not for it
                await trio.sleep(0.01)

        back = await RawSocket.open(b)
        await back.send("40" + json.dumps({"pid": pid, "offset": offset}))
        reply = await back.receive()
        assert reply.startswith("40"), reply
        assert json.loads(reply[2:]) == {"sid": sid, "pid": pid}
        missed = await _events(back, 4)
        texts = [e[1][0] for e in missed]
        # once each, in A's delivery order, which keeps each publisher's order to a group (two
        # publishers, or a room and the socket's own room, have no order between them, live or
        # replayed); the order A delivered them in is the order of its log
        assert sorted(texts) == ["m2", "m3", "m4", "m5"] and [t for t in texts if t in ("m2", "m4")] == ["m2", "m4"]
        assert texts == [json.loads(p.payload.body[2:])[1] for p in _log_after(sio_a, offset)]
        assert all(e[0] == "news" and len(e[1]) == 2 for e in missed)  # each with its offset
        assert sio_b.recovered(sid) and sio_b.rooms(sid) == [sid, "r"]
        assert await sio_b.get_session(sid) == {"user": "ann"}
        with trio.fail_after(10):  # A let go of it
            while sio_a.statistics()["recovery"]["sessions"] or await a.hub("socketio").connection_exists(s.sid):
                await trio.sleep(0.01)
        # live traffic after the replay, from both nodes, nothing twice
        await sio_a.emit("news", "m7", room="r")
        await sio_b.emit("news", "m8", to=sid)
        assert sorted(e[1][0] for e in await _events(back, 2)) == ["m7", "m8"]  # two publishers
        members = await b.hub("socketio").list_connections_in_group("0~Lw~cg")
        assert sorted(m["connectionId"] for m in members) == sorted([back.sid, other.sid])
        assert other_sid != sid

        # and it may move again: back to A
        await sio_b.emit("news", "m9", room="r")
        [(_, (text, offset))] = await _events(back, 1)
        assert text == "m9"
        await _drop(back)
        await _kept(sio_b)
        await sio_a.emit("news", "m10", room="r")
        again = await RawSocket.open(a)
        await again.send("40" + json.dumps({"pid": pid, "offset": offset}))
        assert json.loads((await again.receive())[2:]) == {"sid": sid, "pid": pid}
        assert [e[1][0] for e in await _events(again, 1)] == ["m10"]
        assert sio_a.recovered(sid) and sio_a.rooms(sid) == [sid, "r"]
        for client in (again, other):
            await client.aclose()


async def test_socket_recovers_on_its_own_node_and_a_stale_offset_is_a_fresh_socket(sio_nodes):
    async with sio_nodes() as open_node:
        a, _ = await open_node()
        b, _ = await open_node()
        sio_a = a.socketio()
        s = await RawSocket.open(a)
        hello = await s.connect()
        sid, pid = hello["sid"], hello["pid"]
        await s.send('421["join","r"]')
        assert await s.receive() == '431["ok"]'
        await sio_a.emit("news", "m1", room="r")
        [(_, (_, offset))] = await _events(s, 1)
        await sio_a.emit("news", "m2", room="r")
        await _drop(s)
        await _kept(sio_a)
        await b.socketio().emit("news", "m3", room="r")
        await sio_a.emit("news", "m4", to=sid)
        with trio.fail_after(10):
            while sio_a.statistics()["recovery"]["packets"] < 4:
                await trio.sleep(0.01)
        back = await RawSocket.open(a)
        await back.send("40" + json.dumps({"pid": pid, "offset": offset}))
        assert json.loads((await back.receive())[2:]) == {"sid": sid, "pid": pid}
        texts = [e[1][0] for e in await _events(back, 3)]
        assert texts == [json.loads(p.payload.body[2:])[1] for p in _log_after(sio_a, offset)]
        assert sorted(texts) == ["m2", "m3", "m4"]
        assert sio_a.recovered(sid) and sio_a.rooms(sid) == [sid, "r"]
        # a pid whose socket is no longer kept, or an offset the log never had: fresh sockets
        again = await RawSocket.open(b)
        await again.send("40" + json.dumps({"pid": pid, "offset": offset}))
        fresh = json.loads((await again.receive())[2:])
        assert fresh["sid"] != sid and fresh["pid"] != pid
        await _drop(back)
        await _kept(sio_a)
        other = await RawSocket.open(b)
        await other.send("40" + json.dumps({"pid": pid, "offset": "nope-1"}))
        fresh = json.loads((await other.receive())[2:])
        assert fresh["sid"] != sid and fresh["pid"] != pid
        assert sio_a.statistics()["recovery"]["sessions"] == 1  # still kept for a right offset
        for client in (again, other):
            await client.aclose()


async def test_a_stream_from_either_node_arrives_once_in_order_while_the_socket_moves(sio_nodes):
    """A publisher on each node streams to the room while the socket drops from A, is kept,
    and is claimed by B: every number after the client's offset arrives once, in order."""
    async with sio_nodes() as open_node:
        a, _ = await open_node()
        b, _ = await open_node()
        sio_a, sio_b = a.socketio(), b.socketio()
        s = await RawSocket.open(a)
        hello = await s.connect()
        await s.send('421["join","r"]')
        assert await s.receive() == '431["ok"]'
        count = 200
        async with trio.open_nursery() as nursery:
            for sio, name in ((sio_a, "a"), (sio_b, "b")):
                async def stream(sio=sio, name=name):
                    for i in range(count):
                        await sio.emit(name, i, room="r")
                        await trio.sleep(0.001)
                nursery.start_soon(stream)
            got = {"a": [], "b": []}
            offset = None
            for name, (i, offset) in await _events(s, 40):
                got[name].append(i)
            await _drop(s)
            await _kept(sio_a)
            back = await RawSocket.open(b)
            await back.send("40" + json.dumps({"pid": hello["pid"], "offset": offset}))
            assert json.loads((await back.receive())[2:]) == {"sid": hello["sid"], "pid": hello["pid"]}
            with trio.fail_after(20):
                while got["a"][-1:] != [count - 1] or got["b"][-1:] != [count - 1]:
                    [(name, (i, offset))] = await _events(back, 1)
                    got[name].append(i)
        assert got == {"a": list(range(count)), "b": list(range(count))}
        assert sio_b.recovered(hello["sid"])
        # it drops again with nothing new since: recovering on B replays nothing twice
        await _drop(back)
        await _kept(sio_b)
        again = await RawSocket.open(b)
        await again.send("40" + json.dumps({"pid": hello["pid"], "offset": offset}))
        assert json.loads((await again.receive())[2:]) == {"sid": hello["sid"], "pid": hello["pid"]}
        await sio_a.emit("done", room="r")
        [(name, _)] = await _events(again, 1)
        assert name == "done"
        await again.aclose()


async def test_bad_recovery_input_is_a_fresh_socket_and_disturbs_nothing(sio_nodes):
    async with sio_nodes() as open_node:
        a, _ = await open_node()
        b, _ = await open_node()
        s = await RawSocket.open(a)
        hello = await s.connect()
        await a.socketio().emit("news", "m1")
        [(_, (_, offset))] = await _events(s, 1)
        await _drop(s)
        await _kept(a.socketio())
        bad = [{"pid": 5, "offset": offset}, {"pid": None}, {"pid": hello["pid"]}, {"pid": hello["pid"], "offset": 7},
               {"pid": "x" * 5000, "offset": offset}, {"pid": hello["pid"], "offset": ["a"]},
               {"pid": hello["pid"] + "\u00e9", "offset": offset}, {"pid": "", "offset": ""}]
        for auth in bad:
            c = await RawSocket.open(b)
            await c.send("40" + json.dumps(auth))
            reply = json.loads((await c.receive())[2:])
            assert reply["sid"] != hello["sid"] and reply["pid"] != hello["pid"], auth
            await c.aclose()
        back = await RawSocket.open(b)  # the kept socket is still there for the right pair
        await back.send("40" + json.dumps({"pid": hello["pid"], "offset": offset}))
        assert json.loads((await back.receive())[2:]) == {"sid": hello["sid"], "pid": hello["pid"]}
        await back.aclose()


async def test_a_client_gone_as_it_recovers_on_another_node_recovers_there_again_and_leaves_nothing(sio_nodes):
    async with sio_nodes() as open_node:
        a, _ = await open_node()
        b, _ = await open_node()
        s = await RawSocket.open(a)
        hello = await s.connect()
        await s.send('421["join","r"]')
        assert await s.receive() == '431["ok"]'
        await a.socketio().emit("news", "m1", room="r")
        [(_, (_, offset))] = await _events(s, 1)
        await _drop(s)
        await _kept(a.socketio())
        back = await RawSocket.open(b)
        await back.send("40" + json.dumps({"pid": hello["pid"], "offset": offset}))
        await _drop(back)  # gone as node B restores it (usually just after: B then keeps it in turn)
        hub_b, sio_b = await b.hubs.get("socketio"), b.socketio()
        with trio.fail_after(10):  # it left before the recovery completed, or after (then B keeps it)
            while hub_b.connections and not sio_b.statistics()["recovery"]["sessions"]:
                await trio.sleep(0.01)
        if sio_b.statistics()["recovery"]["sessions"]:  # B keeps it: from the same offset, once more
            again = await RawSocket.open(b)
            await again.send("40" + json.dumps({"pid": hello["pid"], "offset": offset}))
            assert json.loads((await again.receive())[2:]) == {"sid": hello["sid"], "pid": hello["pid"]}
            await again.send("41")  # a client disconnect: nothing kept
            await again.aclose()
        with trio.fail_after(10):  # then node B holds nothing of it
            while hub_b.connections or hub_b.groups:
                await trio.sleep(0.01)
        assert not a.socketio().statistics()["recovery"]["sessions"] or not sio_b.statistics()["recovery"]["sessions"]


async def test_owner_gone_means_a_fresh_socket(sio_nodes):
    async with sio_nodes() as open_node:
        b, _ = await open_node()
        a, stack_a = await open_node()  # opened last: it may stop first
        s = await RawSocket.open(a)
        hello = await s.connect()
        await s.send('421["join","r"]')
        assert await s.receive() == '431["ok"]'
        await a.socketio().emit("news", "m1", room="r")
        [(_, (_, offset))] = await _events(s, 1)
        await _drop(s)
        await _kept(a.socketio())
        await stack_a.aclose()  # node A stops: the kept socket goes with it
        back = await RawSocket.open(b)
        await back.send("40" + json.dumps({"pid": hello["pid"], "offset": offset}))
        reply = json.loads((await back.receive())[2:])
        assert reply["sid"] != hello["sid"] and reply["pid"] != hello["pid"]  # recovered: false
        assert not b.socketio().recovered(reply["sid"]) and b.socketio().rooms(reply["sid"]) == [reply["sid"]]
        await b.socketio().emit("news", "live", to=reply["sid"])
        [(name, args)] = await _events(back, 1)
        assert (name, args[0]) == ("news", "live")
        await back.aclose()


# --------------------------------------------------------------------------- socket.io-client


@pytest.fixture
def two_apps(redis_server):
    """Two app processes (tests/socketio/sio_app.py) as nodes of one fabric on redis-server."""
    from tests.socketio.sio_support import start_app

    app_path = Path(__file__).resolve().parents[1] / "socketio" / "sio_app.py"
    args = ("--redis", redis_server.url, "--recovery", str(KEEP), "--halt")
    apps = [start_app(app_path, *args), start_app(app_path, *args)]
    try:
        yield apps
    finally:
        for app in apps:
            app.stop()


@pytest.mark.interop
@pytest.mark.parametrize("transports", [["websocket"], ["polling", "websocket"]], ids=["websocket", "upgrade"])
def test_socketio_client_recovers_on_the_other_node(two_apps, transports):
    from tests.socketio.sio_support import run_node

    a, b = two_apps
    result = run_node({"url": a.url, "url_b": b.url, "scenario": "recovery_across", "transports": transports},
                      app=a)
    assert result["ok"], result
    assert result["recovered"] is True and result["sid"] == result["first_sid"] == result["who"]["sid"]
    assert {k: result["who"][k] for k in ("sid", "recovered", "session")} == {
        "sid": result["sid"], "recovered": True, "session": "moved"}
    got = result["got"]
    assert got[0] == "m1" and got[-1] == "live" and sorted(got[1:-1]) == ["a1", "a2", "b1", "b2"]  # once each
    assert [t for t in got if t[0] == "a"] == ["a1", "a2"] and [t for t in got if t[0] == "b"] == ["b1", "b2"]


@pytest.mark.interop
def test_socketio_client_owner_gone_is_a_fresh_socket(two_apps):
    from tests.socketio.sio_support import run_node

    a, b = two_apps
    result = run_node({"url": a.url, "url_b": b.url, "scenario": "recovery_across", "owner_gone": True}, app=b)
    assert result["ok"], result
    assert result["recovered"] is False and result["sid"] != result["first_sid"]
    assert result["who"] == {"sid": result["sid"], "transport": "websocket", "recovered": False, "session": None}
    assert result["got"] == ["m1", "live"]  # nothing of what it missed
    assert a.proc.wait(10) is not None  # node A did stop
