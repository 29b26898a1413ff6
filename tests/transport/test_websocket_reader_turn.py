"""The reader's turn (transport.websocket ``_deliver`` / ``_end_turn``, Outbox ``hold``):
an answer the handler queues without yielding is sent by the reader itself when the writer
is idle, with the writer never woken; a handler that yields releases what it queued so far
to the writer; order is kept whoever sends; and a handler's failure still closes with 1011."""

from __future__ import annotations

import trio
import trio.abc
import trio.lowlevel
import trio.testing
from ws_support import RawClient
from wsproto.events import CloseConnection, TextMessage

from transport.outbox import Outbox
from transport.websocket import WebSocket


async def _tcp_pair():
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client_stream = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    await listeners[0].aclose()
    return server, client_stream


class _Schedules(trio.abc.Instrument):
    """Counts how often one task is scheduled."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.count = 0

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.count += 1


async def _texts(client: RawClient, n: int) -> list[str]:
    got: list[str] = []
    while len(got) < n:
        events = await client.receive_events()
        assert events, "stream ended early"
        got += [e.data for e in events if isinstance(e, TextMessage)]
    return got


async def test_answers_without_waking_the_writer(nursery):
    server, client_stream = await _tcp_pair()
    ws = WebSocket(server, subprotocol=None)

    async def echo(message):
        ws.send_message_nowait("ack:" + message)
        ws.send_message_nowait("msg:" + message)

    nursery.start_soon(ws.run, echo)
    client = RawClient(client_stream)
    with trio.fail_after(10):
        await client.send(TextMessage(data="warm"))
        assert await _texts(client, 2) == ["ack:warm", "msg:warm"]
        await trio.testing.wait_all_tasks_blocked()
        writer = ws.outbox._waiter
        assert writer is not None  # parked in get_batch
        counter = _Schedules(writer)
        trio.lowlevel.add_instrument(counter)
        try:
            for i in range(50):
                await client.send(TextMessage(data=str(i)))
                assert await _texts(client, 2) == [f"ack:{i}", f"msg:{i}"]
        finally:
            trio.lowlevel.remove_instrument(counter)
    assert counter.count == 0
    assert ws.outbox.statistics().frames_sent == 102
    ws.close()


async def test_pipelined_requests_are_answered_in_order_in_one_turn(nursery):
    server, client_stream = await _tcp_pair()
    ws = WebSocket(server, subprotocol=None)

    async def echo(message):
        ws.send_message_nowait(message)

    nursery.start_soon(ws.run, echo)
    client = RawClient(client_stream)
    with trio.fail_after(10):
        # 300 requests in one write: several reader slices (the fairness yield every 64).
        await client.send(*[TextMessage(data=str(i)) for i in range(300)])
        assert await _texts(client, 300) == [str(i) for i in range(300)]


async def test_a_yielding_handler_releases_what_it_queued_first(nursery):
    server, client_stream = await _tcp_pair()
    ws = WebSocket(server, subprotocol=None)
    go_on = trio.Event()

    async def slow(message):
        ws.send_message_nowait("before")
        await go_on.wait()  # the first frame must not wait for this
        ws.send_message_nowait("after")

    nursery.start_soon(ws.run, slow)
    client = RawClient(client_stream)
    with trio.fail_after(10):
        await client.send(TextMessage(data="x"))
        assert await _texts(client, 1) == ["before"]
        # Another task's frame while the handler waits goes out too.
        ws.send_message_nowait("other")
        assert await _texts(client, 1) == ["other"]
        go_on.set()
        assert await _texts(client, 1) == ["after"]


async def test_frames_from_other_tasks_during_a_suspended_handler_keep_their_order(nursery):
    server, client_stream = await _tcp_pair()
    ws = WebSocket(server, subprotocol=None)

    async def handler(message):
        for i in range(3):
            ws.send_message_nowait(f"{message}{i}")
            await trio.lowlevel.checkpoint()

    nursery.start_soon(ws.run, handler)
    client = RawClient(client_stream)
    with trio.fail_after(10):
        await client.send(TextMessage(data="a"), TextMessage(data="b"))
        assert await _texts(client, 6) == ["a0", "a1", "a2", "b0", "b1", "b2"]


async def test_a_handler_failing_at_once_still_closes_1011(nursery):
    server, client_stream = await _tcp_pair()
    ws = WebSocket(server, subprotocol=None)

    async def broken(message):
        ws.send_message_nowait("last words")
        raise ValueError("boom")

    done = trio.Event()

    async def run():
        await ws.run(broken)
        done.set()

    nursery.start_soon(run)
    client = RawClient(client_stream)
    with trio.fail_after(10):
        await client.send(TextMessage(data="x"))
        messages, close = await client.until_close()
        assert messages == ["last words"]
        assert isinstance(close, CloseConnection) and close.code == 1011
        await client.send(close.response())
        await done.wait()
    assert ws.close_code == 1011


async def test_a_handler_cancelled_while_suspended_leaves_no_hold():
    server, client_stream = await _tcp_pair()
    ws = WebSocket(server, subprotocol=None)
    suspended = trio.Event()

    async def forever(message):
        ws.send_message_nowait("queued")
        suspended.set()
        await trio.sleep_forever()

    client = RawClient(client_stream)
    with trio.fail_after(10):
        async with trio.open_nursery() as inner:
            inner.start_soon(ws.run, forever)
            await client.send(TextMessage(data="x"))
            await suspended.wait()
            assert not ws.outbox._held  # released before the handler's await
            assert await _texts(client, 1) == ["queued"]
            inner.cancel_scope.cancel()
    assert not ws.outbox._held
    assert ws.close_code == 1006


def test_outbox_hold_defers_the_wake_and_take_puts_back_in_front():
    async def main():
        box = Outbox(10, 1000)
        got: list = []

        async def writer():
            got.append(await box.get_batch())

        async with trio.open_nursery() as n:
            n.start_soon(writer)
            await trio.testing.wait_all_tasks_blocked()
            assert box.writer_parked
            box.hold()
            assert box.put_nowait(b"a") and box.put_nowait(b"b")
            assert box.writer_parked  # not woken while held
            batch = box.take_nowait()
            assert batch == [b"a", b"b"] and len(box) == 0
            box.put_nowait(b"c")  # the hold ended with the take: this wakes the writer
            box.put_back(b"b-tail")
        assert got == [[b"b-tail", b"c"]]
        assert box.statistics().frames_sent == 3  # a, b (tail counted once), c

    trio.run(main)


async def test_a_frame_that_came_with_the_handshake_is_handled_at_once(nursery):
    """A client that sends its first frame in the same write as the upgrade request (it did
    not wait for the 101) gets its answer without sending anything more."""
    import base64
    import os
    import socket

    from wsproto.connection import Connection, ConnectionType

    from transport.frames import encode_frame
    from transport.http import Response, WebSocketAccept, serve_tcp

    class Echo:
        async def handle_http(self, request):
            return Response(404, b"", ())

        async def handle_websocket(self, request):
            async def run(ws):
                async def on_message(data):
                    ws.send_nowait(encode_frame(("echo:" + data).encode(), text=True))

                await ws.run(on_message)

            return WebSocketAccept(None, run)

    port = await nursery.start(serve_tcp, Echo(), "127.0.0.1", 0)
    key = base64.b64encode(os.urandom(16)).decode()
    head = (f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    frame = Connection(ConnectionType.CLIENT).send(TextMessage(data="early"))
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    sock.sendall(head + frame)  # one write: the frame rides with the handshake
    got = b""
    with trio.fail_after(5):
        while b"echo:early" not in got:
            await trio.lowlevel.wait_readable(sock)
            chunk = sock.recv(65536)
            assert chunk, f"closed early: {got!r}"
            got += chunk
    assert got.startswith(b"HTTP/1.1 101")
    sock.close()
