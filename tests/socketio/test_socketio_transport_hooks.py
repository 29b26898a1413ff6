"""The Engine.IO edge over the real HTTP front (memory streams): a parked polling GET whose client
goes away closes its session at once (``request.disconnected``), and a POST above
``max_http_buffer_size`` but within the front's limit is the Engine.IO layer's 413 (the
session carries on), through the front's ``body_limit`` hook."""

from __future__ import annotations

import json

import pytest
import trio

import fabric
from tests.socketio.inprocess import http, open_polling, sio_config
from transport.http import HttpLimits, serve_connection
from transport.memory import memory_stream_pair


@pytest.fixture
async def fab():
    config = sio_config(ping_interval=60.0, ping_timeout=30.0, max_http_buffer_size=1000,
                        cors_allowed_origins=("*",))
    async with fabric.open_fabric(config, access_key="k") as f:
        yield f


async def _read_head(stream) -> bytes:
    data = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
    return data


async def test_a_parked_get_whose_client_leaves_closes_the_session(fab):
    sid = await open_polling(fab)
    target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    assert (await http(fab, "POST", target, "40")).status == 200
    answer = await http(fab, "GET", target)  # the CONNECT reply
    assert answer.body.startswith(b"40{")
    client, server = memory_stream_pair()
    fab.serve_stream(server)
    await client.send_all(f"GET {target} HTTP/1.1\r\nHost: fabric.local\r\n\r\n".encode())
    engine = fab.socketio_edge._plain.engine
    with trio.fail_after(5):
        while engine.sessions[sid]._get_event is None:
            await trio.sleep(0.01)
    await client.aclose()  # the client gives up on its long poll
    with trio.fail_after(5):
        while sid in engine.sessions:
            await trio.sleep(0.01)
    gone = await http(fab, "GET", target)
    assert gone.status == 400 and json.loads(gone.body)["code"] == 1
    assert fab.socketio().statistics()["sockets"] == 0


class _Front:
    """The fabric as an HTTP application with the edge's ``body_limit`` (what the fabric's own
    application forwards once it has the hook)."""

    def __init__(self, fab) -> None:
        self.fab = fab

    def body_limit(self, request):
        edge = self.fab.socketio_edge
        return edge.body_limit(request) if edge.owns(request) else None

    async def handle_http(self, request):
        return await self.fab.handle_http(request)

    async def handle_websocket(self, request):
        return await self.fab.handle_websocket(request)


async def test_post_over_max_http_buffer_size_is_engineio_413_through_the_front(fab, nursery):
    sid = await open_polling(fab)
    target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    client, server = memory_stream_pair()
    nursery.start_soon(serve_connection, server, _Front(fab), HttpLimits(max_body_bytes=1 << 20))
    body = b"4" + b"x" * 5000
    await client.send_all(f"POST {target} HTTP/1.1\r\nHost: fabric.local\r\nOrigin: http://app.example\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    head = await _read_head(client)
    assert head.startswith(b"HTTP/1.1 413")
    assert b"access-control-allow-origin: http://app.example" in head.lower()  # Engine.IO's answer, not the front's
    # the session carries on
    assert (await http(fab, "POST", target, "40")).status == 200
    assert (await http(fab, "GET", target)).body.startswith(b"40{")


async def test_body_limit_is_for_engineio_posts_only(fab):
    from tests.socketio.inprocess import request

    edge = fab.socketio_edge
    assert edge.body_limit(request("POST", "/socket.io/?EIO=4&transport=polling&sid=x")) == 1000
    assert edge.body_limit(request("GET", "/socket.io/?EIO=4&transport=polling&sid=x")) is None
    assert edge.body_limit(request("POST", "/api/hubs/h/:send")) is None
