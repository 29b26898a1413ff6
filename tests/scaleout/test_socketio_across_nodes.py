"""Socket.IO rooms are hub groups, so they span nodes: a room broadcast from a server on one
node reaches sockets on another, and the service API sees members everywhere."""

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
