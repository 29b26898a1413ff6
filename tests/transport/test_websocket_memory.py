"""An idle socket's memory: wsproto's connection (~1 kB) is made only when a frame needs it.

The reader decodes simple frames itself, so a client that only sends those (and pings) never
costs a wsproto connection; pings and pongs built without it are byte for byte wsproto's.
Fragmented messages and the closing handshake still go through wsproto, made late.
"""

from __future__ import annotations

import pytest
import trio
from ws_support import RawClient
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from transport import websocket as wsmod
from transport.frames import OP_PING, OP_PONG
from transport.memory import memory_stream_pair
from transport.websocket import WebSocket


def test_control_frames_are_wsprotos():
    for payload in (b"", b"x", b"p" * 125):
        server = Connection(ConnectionType.SERVER)
        assert wsmod._control_frame(OP_PING, payload) == server.send(Ping(payload))
        assert wsmod._control_frame(OP_PONG, payload) == server.send(Pong(payload))
    with pytest.raises(ValueError, match="125"):
        wsmod._control_frame(OP_PING, b"p" * 126)


async def _events_until(client: RawClient, count: int) -> list:
    events: list = []
    with trio.fail_after(5):
        while len(events) < count:
            more = await client.receive_events()
            assert more, "the server ended the stream"
            events += more
    return events


async def test_wsproto_is_made_only_when_a_frame_needs_it(nursery):
    client_stream, server_stream = memory_stream_pair(1 << 20)
    ws = WebSocket(server_stream, subprotocol=None)
    received: list = []

    async def record(message):
        received.append(message)

    nursery.start_soon(ws.run, record)
    client = RawClient(client_stream)
    ws.ping_nowait(b"heartbeat")
    await client.send(TextMessage(data="a"), Ping(b"p"), BytesMessage(data=b"b"))
    events = await _events_until(client, 2)
    assert sorted((type(e).__name__, e.payload) for e in events) == [("Ping", b"heartbeat"), ("Pong", b"p")]
    with trio.fail_after(5):
        while len(received) < 2:
            await trio.lowlevel.checkpoint()
    assert received == ["a", b"b"] and ws._ws is None

    # A fragmented message is wsproto's: made now, and the socket behaves as before.
    await client.send(TextMessage(data="c", message_finished=False), TextMessage(data="d"))
    with trio.fail_after(5):
        while len(received) < 3:
            await trio.lowlevel.checkpoint()
    assert received[2] == "cd" and ws._ws is not None
    ws.ping_nowait(b"again")
    assert [(type(e), e.payload) for e in await _events_until(client, 1)] == [(Ping, b"again")]
    ws.close(1000, "bye")
    events = await _events_until(client, 1)
    assert isinstance(events[0], CloseConnection) and (events[0].code, events[0].reason) == (1000, "bye")


async def test_a_close_before_any_other_frame_makes_wsproto_for_the_handshake(nursery):
    client_stream, server_stream = memory_stream_pair(1 << 20)
    ws = WebSocket(server_stream, subprotocol=None)
    done = trio.Event()

    async def run():
        await ws.run(lambda message: trio.lowlevel.checkpoint())
        done.set()

    nursery.start_soon(run)
    client = RawClient(client_stream)
    ws.close(1001, "going away")
    events = await _events_until(client, 1)
    assert isinstance(events[0], CloseConnection) and events[0].code == 1001
    await client.send(events[0].response())
    with trio.fail_after(5):
        await done.wait()
    assert ws.close_code == 1001 and ws.peer_closed
    ws.ping_nowait()  # closing: nothing is queued
    assert not len(ws.outbox)
