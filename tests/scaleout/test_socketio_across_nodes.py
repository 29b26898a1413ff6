"""Socket.IO rooms are hub groups, so they span nodes: a room broadcast from a server on one
node reaches sockets on another, and the service API sees members everywhere. A socket's own
room (its sid) is a group too: a server on any node emits to it, skips it, puts it in rooms
or disconnects it, and REST sends to ``0~b64(nsp)~b64(sid)`` reach it."""

import pytest
import trio

from fabric.socketio import DisconnectedError
from fabric.socketio.formats import room_group
from tests.socketio.inprocess import RawSocket


def _setup(fab):
    sio = fab.socketio()

    @sio.event
    async def join(sid, room):
        await sio.enter_room(sid, room)
        return sio.rooms(sid)

    @sio.event
    async def shout(sid, room, text):
        await sio.emit("news", text, room=room)
        return "ok"


async def test_room_broadcast_reaches_sockets_on_other_nodes(nodes):
    async with nodes(2) as (a, b):
        for fab in (a, b):
            _setup(fab)
        on_a = await RawSocket.open(a)
        await on_a.connect()
        await on_a.send('421["join","lobby"]')
        assert (await on_a.receive()).startswith("431[")
        on_b = await RawSocket.open(b)
        await on_b.connect()
        await on_b.send('421["join","lobby"]')
        assert (await on_b.receive()).startswith("431[")
        handle = b.hub("socketio")
        assert len(await handle.list_connections_in_group("0~Lw~bG9iYnk")) == 2
        for i in range(20):
            await on_b.send(f'42{i + 2}["shout","lobby","n{i}"]')
        got_a = [await on_a.receive() for _ in range(20)]
        assert got_a == [f'42["news","n{i}"]' for i in range(20)]
        got_b = [m for m in [await on_b.receive() for _ in range(40)] if m.startswith("42[")]
        assert got_b == [f'42["news","n{i}"]' for i in range(20)]
        await a.hub("socketio").send_to_group("0~Lw~bG9iYnk", '42["news","from REST on A"]')
        assert await on_b.receive() == '42["news","from REST on A"]'
        assert await on_a.receive() == '42["news","from REST on A"]'


async def _ws(fab):
    s = await RawSocket.open(fab)
    return s, (await s.connect())["sid"]


async def _next_event(s):
    while True:
        message = await s.receive()
        if message.startswith("42"):
            return message


async def test_a_sid_on_another_node_is_a_room_like_any_other(nodes):
    async with nodes(2) as (a, b):
        for fab in (a, b):
            _setup(fab)
        sio_a, sio_b = a.socketio(), b.socketio()
        on_a, sid_a = await _ws(a)
        on_b, sid_b = await _ws(b)
        assert sid_b not in sio_a.sids()
        await sio_a.emit("direct", "to", to=sid_b)
        assert await on_b.receive() == '42["direct","to"]'
        await sio_a.emit("direct", "room", room=sid_b)
        assert await on_b.receive() == '42["direct","room"]'
        await sio_a.to(sid_b).emit("direct", "operator")
        assert await on_b.receive() == '42["direct","operator"]'
        # a room of a socket on B, entered and left from A
        await sio_a.enter_room(sid_b, "vip")
        assert sio_b.rooms(sid_b) == [sid_b, "vip"]
        await sio_a.enter_room(sid_a, "vip")
        await sio_a.emit("vip", 1, room="vip")
        assert await on_a.receive() == '42["vip",1]' and await on_b.receive() == '42["vip",1]'
        # skip_sid naming a socket on another node
        await sio_a.emit("vip", 2, room="vip", skip_sid=sid_b)
        await sio_a.emit("vip", 3, room="vip", skip_sid=sid_a)
        assert await on_a.receive() == '42["vip",2]'
        assert await on_b.receive() == '42["vip",3]'  # 2 skipped it
        await sio_b.emit("vip", 4, skip_sid=[sid_a])  # the whole namespace but a socket on A
        assert await on_b.receive() == '42["vip",4]'
        await sio_a.leave_room(sid_b, "vip")
        assert sio_b.rooms(sid_b) == [sid_b]
        await sio_a.emit("vip", 5, room="vip")
        await sio_a.emit("direct", "after", to=sid_b)
        assert await on_a.receive() == '42["vip",5]'
        assert await on_b.receive() == '42["direct","after"]'  # not in vip any more
        # the service API sees a socket's own room as a group, from any node
        handle = a.hub("socketio")
        own = room_group("/", sid_b)
        assert await handle.group_exists(own)
        assert [m["connectionId"] for m in await handle.list_connections_in_group(own)] == [on_b.sid]
        await handle.send_to_group(own, '42["rest","own room"]')
        assert await on_b.receive() == '42["rest","own room"]'
        # a server disconnect of a socket on another node
        await sio_a.disconnect(sid_b)
        assert await on_b.receive() == "41"
        with trio.fail_after(10):  # its rooms are left as a task after the socket closed
            while sid_b in sio_b.sids() or await handle.group_exists(own):
                await trio.sleep(0.01)
        with pytest.raises(DisconnectedError):
            await sio_a.enter_room(sid_b, "vip")  # no node has it
        await on_a.aclose()
        await on_b.aclose()


async def test_broadcast_operators_join_leave_and_disconnect_sockets_on_every_node(nodes):
    async with nodes(2) as (a, b):
        for fab in (a, b):
            _setup(fab)
        sio_a, sio_b = a.socketio(), b.socketio()
        on_a, sid_a = await _ws(a)
        on_b, sid_b = await _ws(b)
        for s in (on_a, on_b):
            await s.send('421["join","lobby"]')
            assert (await s.receive()).startswith("431[")
        lone, sid_lone = await _ws(b)  # in no room
        await sio_a.in_("lobby").sockets_join("extra")
        assert sorted(sio_a.rooms(sid_a)[1:]) == sorted(sio_b.rooms(sid_b)[1:]) == ["extra", "lobby"]
        assert sio_b.rooms(sid_lone) == [sid_lone]
        await sio_b.in_("extra").except_(sid_a).sockets_leave("extra")
        assert sorted(sio_a.rooms(sid_a)[1:]) == ["extra", "lobby"] and sio_b.rooms(sid_b) == [sid_b, "lobby"]
        await sio_a.in_("lobby").disconnect_sockets()
        assert await on_a.receive() == "41" and await on_b.receive() == "41"
        await sio_b.emit("still", "here", to=sid_lone)
        assert await lone.receive() == '42["still","here"]'  # not targeted, not disconnected
        with trio.fail_after(10):
            while sio_a.sids() or sio_b.sids() != [sid_lone]:
                await trio.sleep(0.01)
        for s in (on_a, on_b, lone):
            await s.aclose()
