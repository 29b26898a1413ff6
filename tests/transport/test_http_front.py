"""The h11 front over bounded memory streams: plain HTTP, keep-alive, bad input, upgrades."""

import json

import pytest
import trio
import trio.testing

from fabric.testing import Client, ConnectionClosed, ConnectionRejected
from transport.http import HttpLimits, Response, WebSocketAccept, serve_connection
from transport.memory import memory_stream_pair


class EchoApp:
    def __init__(self):
        self.requests = []

    async def handle_http(self, request):
        self.requests.append(request)
        if request.path == "/boom":
            raise RuntimeError("handler bug")
        return Response.json(200, {"path": request.path, "query": request.query, "body": request.body.decode()})

    async def handle_websocket(self, request):
        if request.path == "/reject":
            return Response.error(401, "Unauthorized", "no")

        async def run(ws):
            async def on_message(message):
                ws.send_message_nowait(message)
                if message == "close-me":
                    ws.close(4000, "asked")

            await ws.run(on_message)

        offered = request.header("sec-websocket-protocol")
        return WebSocketAccept(subprotocol=offered.split(",")[0].strip() if offered else None, run=run,
                               max_message_bytes=1000)


async def _raw_exchange(nursery, app, data: bytes, limits=None, read_until_close=True) -> bytes:
    client, server = memory_stream_pair()
    nursery.start_soon(serve_connection, server, app, limits or HttpLimits())
    await client.send_all(data)
    out = bytearray()
    with trio.fail_after(5):
        while True:
            chunk = await client.receive_some(65536)
            if not chunk:
                break
            out += chunk
            if not read_until_close:
                break
    return bytes(out)


async def test_plain_request_and_keepalive(nursery):
    app = EchoApp()
    client, server = memory_stream_pair()
    nursery.start_soon(serve_connection, server, app, HttpLimits())
    for i in range(3):
        body = f"hello {i}".encode()
        await client.send_all(b"POST /x/%d?a=1&a=2 HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % (i, len(body)) + body)
        data = await client.receive_some(65536)
        head, _, payload = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert json.loads(payload) == {"path": f"/x/{i}", "query": {"a": ["1", "2"]}, "body": f"hello {i}"}
    assert len(app.requests) == 3
    await client.aclose()


async def test_malformed_request_gets_400_json(nursery):
    data = await _raw_exchange(nursery, EchoApp(), b"NOT HTTP AT ALL\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400")
    assert b'"code":"BadRequest"' in data


async def test_oversize_body_gets_413(nursery):
    limits = HttpLimits(max_body_bytes=10)
    data = await _raw_exchange(nursery, EchoApp(), b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n" + b"x" * 100, limits)
    assert data.startswith(b"HTTP/1.1 413")
    assert b"PayloadTooLarge" in data


async def test_handler_exception_is_500_and_listener_survives(nursery):
    app = EchoApp()
    data = await _raw_exchange(nursery, app, b"GET /boom HTTP/1.1\r\nHost: h\r\n\r\n", read_until_close=False)
    assert data.startswith(b"HTTP/1.1 500")
    data = await _raw_exchange(nursery, app, b"GET /ok HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200")


async def test_slow_request_head_times_out(nursery, autojump_clock):
    client, server = memory_stream_pair()
    nursery.start_soon(serve_connection, server, EchoApp(), HttpLimits(handshake_timeout=3))
    await client.send_all(b"GET / HTTP/1.1\r\n")  # never finished
    with trio.fail_after(10):
        assert await client.receive_some(100) == b""  # the server gave up and closed


async def test_websocket_upgrade_echo_and_subprotocol(nursery):
    client_stream, server = memory_stream_pair()
    nursery.start_soon(serve_connection, server, EchoApp(), HttpLimits())
    client = await Client.open(client_stream, "h", "/ws", ["json.webpubsub.azure.v1"])
    assert client.subprotocol == "json.webpubsub.azure.v1"
    await client.send("hi")
    assert await client.receive() == "hi"
    await client.send(b"\x00\x01")
    assert await client.receive() == b"\x00\x01"
    await client.send("close-me")
    assert await client.receive() == "close-me"
    assert await client.wait_closed() == 4000


async def test_websocket_rejection_is_plain_http(nursery):
    client_stream, server = memory_stream_pair()
    nursery.start_soon(serve_connection, server, EchoApp(), HttpLimits())
    with pytest.raises(ConnectionRejected) as info:
        await Client.open(client_stream, "h", "/reject")
    assert info.value.status == 401


async def test_websocket_message_too_big_closes_1009(nursery):
    client_stream, server = memory_stream_pair()
    nursery.start_soon(serve_connection, server, EchoApp(), HttpLimits())
    client = await Client.open(client_stream, "h", "/ws")
    await client.send("x" * 2000)
    assert await client.wait_closed() == 1009


async def test_websocket_bad_version_gets_426(nursery):
    data = await _raw_exchange(nursery, EchoApp(), (
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"))
    assert data.startswith(b"HTTP/1.1 426")
    assert b"sec-websocket-version: 13" in data.lower()


async def test_websocket_garbage_frame_closes_with_protocol_error(nursery):
    client_stream, server = memory_stream_pair()
    nursery.start_soon(serve_connection, server, EchoApp(), HttpLimits())
    client = await Client.open(client_stream, "h", "/ws")
    await client.stream.send_all(b"\x8f\x80\x00\x00\x00\x00")  # reserved opcode 0xF, masked, empty
    assert await client.wait_closed() == 1002
