"""Closing is bounded, and only a completed closing handshake ends with FIN.

A peer that stops reading must not keep its socket (and the kernel's buffers behind it)
after we decided to close: ``close_timeout`` bounds the whole close even when the writer
is stuck in ``send_all``, and then the connection is reset (RST), which frees the buffers
at once. A peer that answers our close gets an orderly close.
"""

from __future__ import annotations

import collections
import errno
import os
import socket
import sys

import pytest
import trio
import trio.testing
from wsproto.events import CloseConnection, TextMessage

from transport.http import HttpLimits, Response, WebSocketAccept, serve_connection
from transport.memory import memory_stream_pair
from transport.websocket import WebSocket

from ws_support import RawClient

CLOSE_TIMEOUT = 2.0
PROC_TCP = "/proc/net/tcp"


async def _noop(message):
    pass


async def _run_recording_end(ws: WebSocket, ended: list, done: trio.Event) -> None:
    try:
        await ws.run(_noop)
    finally:
        ended.append(trio.current_time())
        done.set()


# ---- over memory streams (virtual time) ----------------------------------------------------


@pytest.mark.parametrize("discard", [True, False])
async def test_close_is_bounded_when_the_writer_is_stuck(nursery, autojump_clock, discard):
    client_stream, server_stream = memory_stream_pair(max_buffer=1024)
    ws = WebSocket(server_stream, subprotocol=None, close_timeout=CLOSE_TIMEOUT,
                   outbox_max_bytes=1 << 20)
    ended: list = []
    done = trio.Event()
    nursery.start_soon(_run_recording_end, ws, ended, done)
    for _ in range(20):
        assert ws.send_message_nowait(b"x" * 4096)
    await trio.testing.wait_all_tasks_blocked()  # the writer is parked in send_all: nobody reads
    start = trio.current_time()
    ws.close(1008, "slow consumer", discard=discard)
    with trio.fail_after(60):
        await done.wait()
    assert ended[0] - start <= CLOSE_TIMEOUT + 0.01
    assert ws.close_code == 1008
    with pytest.raises(trio.BrokenResourceError):  # the server's side is closed
        await client_stream.send_all(b"x")


async def test_close_answered_by_a_stuck_peer_is_bounded_too(nursery, autojump_clock):
    # The peer sends its close frame but reads nothing: our answer cannot go out.
    client_stream, server_stream = memory_stream_pair(max_buffer=1024)
    ws = WebSocket(server_stream, subprotocol=None, close_timeout=CLOSE_TIMEOUT)
    ended: list = []
    done = trio.Event()
    nursery.start_soon(_run_recording_end, ws, ended, done)
    for _ in range(20):
        ws.send_message_nowait(b"x" * 4096)
    await trio.testing.wait_all_tasks_blocked()
    client = RawClient(client_stream)
    start = trio.current_time()
    await client.send(CloseConnection(code=1000))
    with trio.fail_after(60):
        await done.wait()
    assert ended[0] - start <= CLOSE_TIMEOUT + 0.01
    assert ws.close_code == 1000 and ws.peer_closed


async def test_close_timeout_starts_when_closed_before_run(nursery, autojump_clock):
    client_stream, server_stream = memory_stream_pair(max_buffer=1024)
    ws = WebSocket(server_stream, subprotocol=None, close_timeout=CLOSE_TIMEOUT)
    ws.close(1001, "going away")
    start = trio.current_time()
    with trio.fail_after(60):
        await ws.run(_noop)  # the peer never answers
    assert trio.current_time() - start <= CLOSE_TIMEOUT + 0.01


async def test_answered_close_ends_without_waiting(nursery, autojump_clock):
    client_stream, server_stream = memory_stream_pair()
    ws = WebSocket(server_stream, subprotocol=None, close_timeout=CLOSE_TIMEOUT)
    ended: list = []
    done = trio.Event()
    nursery.start_soon(_run_recording_end, ws, ended, done)
    client = RawClient(client_stream)
    ws.send_message_nowait("last words")
    start = trio.current_time()
    ws.close(1000, "bye")
    messages, close = await client.until_close()
    assert messages == ["last words"] and close.code == 1000
    await client.send(close.response())
    with trio.fail_after(60):
        await done.wait()
    assert ended[0] - start < 0.01  # no timeout involved
    assert ws.peer_closed


@pytest.mark.parametrize("setting, value", [
    ("close_timeout", 0.25), ("max_message_fragments", 7), ("max_message_bytes", 4096),
])
async def test_websocket_accept_settings_reach_the_socket(nursery, setting, value):
    seen = []

    class App:
        async def handle_http(self, request):  # pragma: no cover - not used here
            return Response.error(404, "NotFound", "no")

        async def handle_websocket(self, request):
            async def run(ws):
                seen.append(getattr(ws, setting))
                ws.close()

                async def ignore(message):  # pragma: no cover - nothing arrives
                    pass

                await ws.run(ignore)

            return WebSocketAccept(subprotocol=None, run=run, **{setting: value})

    client, server = memory_stream_pair()
    nursery.start_soon(serve_connection, server, App(), HttpLimits())
    await client.send_all(
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    with trio.fail_after(5):
        assert (await client.receive_some(65536)).startswith(b"HTTP/1.1 101")
        while not seen:
            await trio.sleep(0)
    assert seen == [value]


# ---- over real TCP sockets -----------------------------------------------------------------


def _tcp_entries(local_port: int, remote_port: int) -> list[str]:
    """/proc/net/tcp rows for 127.0.0.1:local_port -> 127.0.0.1:remote_port (state, queues)."""
    rows = []
    with open(PROC_TCP) as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            if fields[1] == "0100007F:%04X" % local_port and fields[2] == "0100007F:%04X" % remote_port:
                rows.append(f"state={fields[3]} queues={fields[4]}")
    return rows


async def _tcp_pair(nursery):
    """A connected pair: (server trio.SocketStream, client stdlib socket that never reads).
    Small buffers on both sides so a few hundred kB fill the path."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]
    port = listener.socket.getsockname()[1]
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.setblocking(False)
    try:
        client.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    server = await listener.accept()
    await listener.aclose()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    return server, client


def _require_linux_proc():
    if not os.path.exists(PROC_TCP):
        pytest.skip("needs /proc/net/tcp (Linux) to see the kernel's sockets")


async def test_stuck_peer_over_tcp_is_reset_within_close_timeout(nursery, autojump_clock):
    """The reported case: a slow consumer that stopped reading, closed by policy. The
    server's socket must be gone (fd closed, no kernel socket holding data) within
    close_timeout, and the peer must see a reset."""
    _require_linux_proc()
    server, client = await _tcp_pair(nursery)
    server_port = server.socket.getsockname()[1]
    client_port = client.getsockname()[1]
    ws = WebSocket(server, subprotocol=None, close_timeout=CLOSE_TIMEOUT, outbox_max_bytes=8 << 20)
    ended: list = []
    done = trio.Event()
    nursery.start_soon(_run_recording_end, ws, ended, done)
    for _ in range(64):
        assert ws.send_message_nowait(b"x" * 16384)  # 1 MiB: far more than the path holds
    await trio.testing.wait_all_tasks_blocked()
    assert not done.is_set()
    assert _tcp_entries(server_port, client_port), "the server socket should exist before the close"

    start = trio.current_time()
    ws.close(1008, "slow consumer", discard=True)
    with trio.fail_after(60):
        await done.wait()
    try:
        assert ended[0] - start <= CLOSE_TIMEOUT + 0.01
        assert server.socket.fileno() == -1
        # Reset, not FIN: no orphaned kernel socket keeps the unsent data (a FIN close
        # would leave it in FIN_WAIT1 with its send queue full).
        assert _tcp_entries(server_port, client_port) == []
        assert client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNRESET
    finally:
        client.close()


async def test_peer_that_never_answers_close_over_tcp_is_reset(nursery, autojump_clock):
    _require_linux_proc()
    server, client = await _tcp_pair(nursery)
    server_port, client_port = server.socket.getsockname()[1], client.getsockname()[1]
    ws = WebSocket(server, subprotocol=None, close_timeout=CLOSE_TIMEOUT)
    ended: list = []
    done = trio.Event()
    nursery.start_soon(_run_recording_end, ws, ended, done)
    start = trio.current_time()
    ws.close(1000, "bye")
    with trio.fail_after(60):
        await done.wait()
    try:
        assert ended[0] - start == pytest.approx(CLOSE_TIMEOUT, abs=0.01)
        assert _tcp_entries(server_port, client_port) == []
        assert client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNRESET
    finally:
        client.close()


async def test_completed_handshake_over_tcp_closes_with_fin(nursery):
    server, client_sock = await _tcp_pair(nursery)
    client_sock.close()
    # A well-behaved client (a trio socket that reads) for this one.
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client_stream = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    await listeners[0].aclose()
    ws = WebSocket(server, subprotocol=None, close_timeout=30)
    ended: list = []
    done = trio.Event()
    nursery.start_soon(_run_recording_end, ws, ended, done)
    client = RawClient(client_stream)
    ws.send_message_nowait("hello")
    ws.close(1000, "bye")
    with trio.fail_after(10):
        messages, close = await client.until_close()
        assert messages == ["hello"] and close.code == 1000
        await client.send(close.response())
        await done.wait()
        # Orderly end of stream (FIN), not a reset.
        assert await client_stream.receive_some(100) == b""
    assert client_stream.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    await client_stream.aclose()


async def test_peer_eof_ends_the_writer_without_a_cancellation(nursery, monkeypatch):
    """A peer that just goes away (EOF, no close frame): the reader ends the parked writer
    with ``Outbox.finish``, nothing is cancelled, the socket is closed (reset: no close
    handshake happened) and the close code says abnormal."""
    _require_linux_proc()
    server, client = await _tcp_pair(nursery)
    server_port, client_port = server.socket.getsockname()[1], client.getsockname()[1]
    ws = WebSocket(server, subprotocol=None, close_timeout=CLOSE_TIMEOUT)
    cancels: list = []
    real_abort = WebSocket._abort
    monkeypatch.setattr(WebSocket, "_abort", lambda self: (cancels.append(1), real_abort(self)))
    ended: list = []
    done = trio.Event()
    nursery.start_soon(_run_recording_end, ws, ended, done)
    await trio.testing.wait_all_tasks_blocked()
    assert ws.outbox.writer_parked
    client.close()
    with trio.fail_after(10):
        await done.wait()
    assert cancels == []
    assert ws.close_code == 1006
    assert server.socket.fileno() == -1
    assert _tcp_entries(server_port, client_port) == []


async def test_wsproto_event_queue_is_small_and_still_works():
    """The socket gives wsproto a list as its event queue (an empty deque is 760 bytes per
    connection); wsproto's own use of it, a transport-ended event queued and then popped,
    works as with its deque."""
    ours, _theirs = memory_stream_pair()
    conn = WebSocket(ours, subprotocol=None)._wsproto()
    assert sys.getsizeof(conn._events) < sys.getsizeof(collections.deque()) // 4
    conn.receive_data(None)
    events = list(conn.events())
    assert len(events) == 1 and isinstance(events[0], CloseConnection) and events[0].code == 1006
    assert not conn._events
