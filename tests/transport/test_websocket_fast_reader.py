"""The reader's fast path for simple frames (transport.websocket ``_simple_frame``): it must
be invisible. Whatever mix of simple frames, fragmented messages, pings and bad frames a
client sends, and however TCP cuts it into reads, the handler sees exactly what wsproto
alone would deliver, and bad input gets wsproto's close code."""

from __future__ import annotations

import struct

import trio
import trio.lowlevel
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ws_support import RawClient
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, Ping, Pong, TextMessage

from transport import websocket as wsmod
from transport.memory import memory_stream_pair
from transport.websocket import WebSocket


def _client_frames(events) -> bytes:
    client = Connection(ConnectionType.CLIENT)
    return b"".join(client.send(e) for e in events)


def test_simple_frames_decode_like_wsproto():
    for payload in ["", "a", "é" * 40, "x" * 125, "y" * 126, "z" * 65535]:
        wire = _client_frames([TextMessage(data=payload)])
        assert wsmod._simple_frame(wire, 0, 1 << 20) == (1, payload, len(wire))
    for payload in [b"", b"\x00\xff" * 70, bytes(range(256)) * 10]:
        wire = _client_frames([BytesMessage(data=payload)])
        assert wsmod._simple_frame(wire, 0, 1 << 20) == (2, payload, len(wire))
    wire = _client_frames([Ping(b"hi")])
    assert wsmod._simple_frame(wire, 0, 1 << 20) == (9, b"hi", len(wire))


def test_frames_wsproto_must_judge_are_not_simple():
    fragmented = _client_frames([TextMessage(data="a", message_finished=False)])
    sixty_four_bit = _client_frames([BytesMessage(data=b"x" * 65536)])
    unmasked = b"\x81\x02hi"
    rsv = bytes([0xC1]) + _client_frames([TextMessage(data="hi")])[1:]
    bad_utf8 = _client_frames([BytesMessage(data=b"\xff\xfe")])
    bad_utf8 = bytes([0x81]) + bad_utf8[1:]  # the same bytes as a text frame
    close = _client_frames([]) + b"\x88\x80abcd"
    non_minimal = b"\x81\xfe\x00\x05abcd" + b"12345"
    for wire in (fragmented, sixty_four_bit, unmasked, rsv, bad_utf8, close, non_minimal):
        assert wsmod._simple_frame(wire, 0, 1 << 20) is None, wire[:4]
    too_big = _client_frames([TextMessage(data="x" * 200)])
    assert wsmod._simple_frame(too_big, 0, 100) is None


def test_incomplete_frames_say_how_much_they_need():
    wire = _client_frames([TextMessage(data="x" * 300)])
    assert wsmod._simple_frame(wire[:1], 0, 1 << 20) == 0
    assert wsmod._simple_frame(wire[:3], 0, 1 << 20) == 0
    assert wsmod._simple_frame(wire[:10], 0, 1 << 20) == len(wire)


def test_fresh_wsproto_is_idle_and_a_partial_frame_is_not():
    # The fast path depends on reading wsproto's state; if wsproto changes, this fails
    # (and the reader silently falls back to wsproto for every frame).
    conn = Connection(ConnectionType.SERVER)
    assert wsmod._wsproto_idle(conn)
    wire = _client_frames([TextMessage(data="abc", message_finished=False), TextMessage(data="def")])
    first = len(wire) // 2 - 1
    data = []
    conn.receive_data(wire[:3])
    data += [e.data for e in conn.events()]
    assert not wsmod._wsproto_idle(conn)
    conn.receive_data(wire[3:first])
    data += [e.data for e in conn.events()]
    assert not wsmod._wsproto_idle(conn)  # a fragmented message is under way
    conn.receive_data(wire[first:])
    data += [e.data for e in conn.events()]
    assert "".join(data) == "abcdef"
    assert wsmod._wsproto_idle(conn)


_messages = st.one_of(
    st.text(max_size=300).map(lambda t: ("text", t)),
    st.binary(max_size=300).map(lambda b: ("bytes", b)),
    st.tuples(st.text(min_size=1, max_size=20), st.integers(2, 4)).map(lambda p: ("fragmented", p)),
    st.binary(max_size=20).map(lambda b: ("ping", b)),
    st.binary(max_size=20).map(lambda b: ("pong", b)),
    st.sampled_from([70000]).map(lambda n: ("large", n)),
)


def _events_and_expected(messages):
    events, expected = [], []
    for kind, value in messages:
        if kind == "text":
            events.append(TextMessage(data=value))
            expected.append(value)
        elif kind == "bytes":
            events.append(BytesMessage(data=value))
            expected.append(value)
        elif kind == "fragmented":
            text, n = value
            events += [TextMessage(data=text, message_finished=(i == n - 1)) for i in range(n)]
            expected.append(text * n)
        elif kind == "ping":
            events.append(Ping(value))
        elif kind == "pong":
            events.append(Pong(value))
        else:
            events.append(BytesMessage(data=b"L" * value))
            expected.append(b"L" * value)
    return events, expected


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(_messages, max_size=12), cuts=st.lists(st.integers(1, 400), max_size=30))
def test_any_mix_cut_anywhere_arrives_as_wsproto_delivers_it(messages, cuts):
    events, expected = _events_and_expected(messages)
    wire = _client_frames(events)

    async def main():
        client_stream, server_stream = memory_stream_pair(1 << 22)
        ws = WebSocket(server_stream, subprotocol=None)
        received: list = []

        async def record(message):
            received.append(message)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.run, record)
            pos = 0
            for cut in cuts:  # reads of random sizes, then the rest at once
                if pos >= len(wire):
                    break
                await client_stream.send_all(wire[pos:pos + cut])
                await trio.testing.wait_all_tasks_blocked()
                pos += cut
            if pos < len(wire):
                await client_stream.send_all(wire[pos:])
            with trio.fail_after(10):
                while len(received) < len(expected):
                    await trio.lowlevel.checkpoint()
            await trio.testing.wait_all_tasks_blocked()
            assert ws.close_code is None
            nursery.cancel_scope.cancel()
        assert received == expected

    trio.run(main)


async def test_pings_on_the_fast_path_are_answered(nursery):
    client_stream, server_stream = memory_stream_pair(1 << 20)
    ws = WebSocket(server_stream, subprotocol=None)
    nursery.start_soon(ws.run, _ignore)
    client = RawClient(client_stream)
    await client.send(Ping(b"one"))
    with trio.fail_after(5):
        events = await client.receive_events()
    assert [type(e) for e in events] == [Pong] and events[0].payload == b"one"


async def test_bad_utf8_after_simple_frames_closes_1007(nursery):
    client_stream, server_stream = memory_stream_pair(1 << 20)
    ws = WebSocket(server_stream, subprotocol=None)
    received: list = []

    async def record(message):
        received.append(message)

    nursery.start_soon(ws.run, record)
    client = RawClient(client_stream)
    bad = bytearray(client.frames(BytesMessage(data=b"\xff\xfe")))
    bad[0] = 0x81  # the same masked bytes, as a text frame
    await client_stream.send_all(client.frames(TextMessage(data="ok")) + bytes(bad))
    with trio.fail_after(5):
        _, close = await client.until_close()
    assert received == ["ok"]
    assert close is not None and close.code == 1007


async def test_unmasked_frame_closes_1002(nursery):
    client_stream, server_stream = memory_stream_pair(1 << 20)
    ws = WebSocket(server_stream, subprotocol=None)
    nursery.start_soon(ws.run, _ignore)
    client = RawClient(client_stream)
    await client_stream.send_all(b"\x81\x02hi")
    with trio.fail_after(5):
        _, close = await client.until_close()
    assert close is not None and close.code == 1002


async def test_oversize_simple_frame_closes_1009(nursery):
    client_stream, server_stream = memory_stream_pair(1 << 20)
    ws = WebSocket(server_stream, subprotocol=None, max_message_bytes=100)
    nursery.start_soon(ws.run, _ignore)
    client = RawClient(client_stream)
    await client.send(TextMessage(data="x" * 101))
    with trio.fail_after(5):
        _, close = await client.until_close()
    assert close is not None and close.code == 1009


def test_length_field_arithmetic():
    # A 16-bit length at its edges: 126 and 65535 bytes.
    for n in (126, 65535):
        wire = _client_frames([BytesMessage(data=b"q" * n)])
        assert wire[1] & 0x7F == 126 and struct.unpack("!H", wire[2:4])[0] == n
        assert wsmod._simple_frame(wire, 0, 1 << 20) == (2, b"q" * n, len(wire))


async def _ignore(message):
    return None


async def test_simple_frames_skip_wsproto_and_others_reach_it(nursery):
    client_stream, server_stream = memory_stream_pair(1 << 20)
    ws = WebSocket(server_stream, subprotocol=None)
    fed: list[bytes] = []
    conn = ws._wsproto()  # made now (it is made on first need) to watch what reaches it
    feed = conn.receive_data
    conn.receive_data = lambda data: (fed.append(bytes(data)), feed(data))[1]
    received: list = []

    async def record(message):
        received.append(message)

    nursery.start_soon(ws.run, record)
    client = RawClient(client_stream)
    await client.send(TextMessage(data="a"), BytesMessage(data=b"b"), Ping(b"p"))
    with trio.fail_after(5):
        while len(received) < 2:
            await trio.lowlevel.checkpoint()
    assert fed == []  # the fast path took them all
    await client.send(TextMessage(data="c", message_finished=False), TextMessage(data="d"))
    await client.send(TextMessage(data="e"))
    with trio.fail_after(5):
        while len(received) < 4:
            await trio.lowlevel.checkpoint()
    assert received == ["a", b"b", "cd", "e"]
    assert len(fed) >= 1  # the fragmented message went through wsproto
