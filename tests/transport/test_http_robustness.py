"""The front under a robustness run's findings, over real sockets with raw bytes:
``Expect: 100-continue``, one request-head bound however the head's bytes arrive (and the
fabric's ``[server] max_header_bytes`` as that bound), strict percent-decoding, bodies in
many tiny chunks, absolute-form targets, HTTP versions, odd targets, control characters in
field values, and error messages that quote request input."""

from __future__ import annotations

import json
import socket

import pytest
import trio

import fabric
from test_http_framing import parse_responses
from test_http_setup_fast_path import UPGRADE, _connect
from tests.fabric_support import quick_config
from transport.http import HttpLimits, Response, WebSocketAccept, serve_connection, serve_tcp
from transport.memory import memory_stream_pair


class App:
    """Records what it is given; answers with the path, target, query, Host and body. With
    ``limit``, a ``body_limit`` below the front's for paths under ``/limited``."""

    def __init__(self, limit: int | None = None):
        self.requests = []
        self.limit = limit

    def body_limit(self, request):
        return self.limit if request.path.startswith("/limited") else None

    async def handle_http(self, request):
        self.requests.append(request)
        if request.body_over_limit:
            return Response(413, b"mine")
        if request.path.startswith("/echo-error"):
            return Response.error(404, "NotFound", f"no such resource: {request.method} {request.raw_path}")
        return Response.json(200, {"path": request.path, "target": request.target, "query": request.query,
                                   "host": request.host, "body": request.body.decode("latin-1")})

    async def handle_websocket(self, request):
        self.requests.append(request)

        async def run(ws):
            await ws.run(lambda message: None)

        return WebSocketAccept(subprotocol=None, run=run)


async def _serve(nursery, app, **limits) -> int:
    return await nursery.start(lambda task_status: serve_tcp(
        app, "127.0.0.1", 0, limits=HttpLimits(**limits), task_status=task_status))


async def _read_to_close(client) -> tuple[bytes, bool]:
    """Everything until the server closes, and whether it closed with a FIN (not a reset)."""
    out = bytearray()
    with trio.fail_after(5):
        while True:
            try:
                chunk = await client.recv(65536)
            except ConnectionResetError:
                return bytes(out), False
            if not chunk:
                return bytes(out), True
            out += chunk


async def _read_response(client, buffered: bytearray) -> tuple[int, dict[bytes, bytes], bytes]:
    """One response from a connection kept open (``buffered``: bytes already read)."""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in buffered:
            chunk = await client.recv(65536)
            assert chunk, bytes(buffered)
            buffered += chunk
        head = bytes(buffered).partition(b"\r\n\r\n")[0]
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(buffered) < len(head) + 4 + length:
            chunk = await client.recv(65536)
            assert chunk
            buffered += chunk
    (response,) = parse_responses(bytes(buffered[:len(head) + 4 + length]))
    del buffered[:len(head) + 4 + length]
    return response


async def _send_all(client, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[await client.send(view):]


async def _exchange(port: int, wire: bytes) -> tuple[list, bool]:
    """Send ``wire`` on a new connection, half-close, and read until the server closes."""
    client = await _connect(port)
    await _send_all(client, wire)
    client.shutdown(socket.SHUT_WR)
    out, fin = await _read_to_close(client)
    client.close()
    return parse_responses(out), fin


def _error(response) -> dict:
    status, headers, body = response
    assert headers[b"content-type"].startswith(b"application/json"), response
    return json.loads(body)


# ---- 1. Expect: 100-continue --------------------------------------------------------------------


async def test_expect_100_continue_is_answered_before_the_body(nursery):
    app = App()
    port = await _serve(nursery, app)
    client = await _connect(port)
    await client.send(b"POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    with trio.fail_after(2):  # was: nothing until the 408, ten seconds later
        interim = await client.recv(65536)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    await client.send(b"hello")
    buffered = bytearray()
    status, _, body = await _read_response(client, buffered)
    assert status == 200 and json.loads(body)["body"] == "hello"
    # a chunked body too, and the connection stays usable
    await client.send(b"POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n")
    with trio.fail_after(2):
        assert await client.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
    await client.send(b"2\r\nhi\r\n0\r\n\r\n")
    status, _, body = await _read_response(client, buffered)
    assert status == 200 and json.loads(body)["body"] == "hi"
    client.close()


async def test_no_100_continue_when_the_body_is_already_there(nursery):
    app = App()
    port = await _serve(nursery, app)
    responses, _ = await _exchange(port, b"POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
                                         b"Content-Length: 0\r\nConnection: close\r\n\r\n")
    assert [r[0] for r in responses] == [200]


async def test_expect_with_a_content_length_over_the_limit_is_413_at_once(nursery):
    app = App()
    port = await _serve(nursery, app, max_body_bytes=10)
    client = await _connect(port)
    await client.send(b"POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n")
    out, fin = await _read_to_close(client)  # answered and closed without the body
    client.close()
    assert b"100 Continue" not in out
    (response,) = parse_responses(out)
    assert response[0] == 413 and _error(response)["code"] == "PayloadTooLarge"
    assert response[1][b"connection"] == b"close" and fin
    assert app.requests == []


async def test_expect_over_the_applications_limit_lets_it_answer_at_once(nursery):
    app = App(limit=10)
    port = await _serve(nursery, app, max_body_bytes=1000)
    client = await _connect(port)
    await client.send(b"POST /limited HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n")
    out, fin = await _read_to_close(client)
    client.close()
    assert b"100 Continue" not in out
    (response,) = parse_responses(out)
    assert response[0] == 413 and response[2] == b"mine" and fin
    assert app.requests[0].body_over_limit and app.requests[0].body == b""


async def test_a_content_length_over_the_limit_is_413_before_the_body_is_sent(nursery):
    app = App()
    port = await _serve(nursery, app, max_body_bytes=1000)
    client = await _connect(port)
    await client.send(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\n")
    with trio.fail_after(2):
        first = await client.recv(65536)
    assert first.startswith(b"HTTP/1.1 413 ")  # was: after the first 1000 bytes of the body
    client.close()
    assert app.requests == []


# ---- 2. one head bound, however the bytes arrive --------------------------------------------------


def _head_of(size: int, path: bytes = b"/h") -> bytes:
    """A GET head of exactly ``size`` bytes."""
    start, end = b"GET " + path + b" HTTP/1.1\r\nHost: h\r\nX-Pad: ", b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


@pytest.mark.parametrize("pieces", [1, 2, 3])
async def test_the_head_bound_does_not_depend_on_how_the_bytes_arrive(nursery, pieces):
    limit = 16 * 1024
    app = App()
    port = await _serve(nursery, app, max_head_bytes=limit)
    for size, status in ((limit, 200), (limit + 1, 431), (40_000, 431)):
        head = _head_of(size)
        client = await _connect(port)
        step = len(head) // pieces + 1
        for at in range(0, len(head), step):
            try:
                await client.send(head[at:at + step])
            except OSError:
                break  # refused from an earlier piece
            await trio.sleep(0.05)
        if status == 200:
            response = await _read_response(client, bytearray())
        else:
            out, fin = await _read_to_close(client)
            (response,) = parse_responses(out)
            assert _error(response)["code"] == "RequestHeaderFieldsTooLarge"  # was "BadRequest"
            assert response[1][b"connection"] == b"close"
            assert fin, "closed with a reset"
        client.close()
        assert response[0] == status, (size, pieces, response)


async def test_a_head_refused_before_all_of_it_was_read_ends_with_a_fin(nursery):
    # The front refuses a head at its first read, with the rest of it unread in the kernel.
    # Closing then would reset the connection (and a reset can destroy the 431 before the
    # client reads it); the front reads and drops the rest, and closes with a FIN.
    port = await _serve(nursery, App(), max_head_bytes=16 * 1024)
    client = await _connect(port)
    await _send_all(client, _head_of(200_000))
    await trio.sleep(0.2)
    out, fin = await _read_to_close(client)
    client.close()
    (response,) = parse_responses(out)
    assert response[0] == 431 and fin, "closed with a reset"


async def test_a_quick_upgrade_head_over_the_bound_is_431(nursery):
    app = App()
    port = await _serve(nursery, app, max_head_bytes=16 * 1024)
    big = UPGRADE.replace(b"\r\n\r\n", b"\r\nX-Pad: " + b"a" * 20_000 + b"\r\n\r\n")
    responses, fin = await _exchange(port, big)  # in one read: h11 alone would take it
    assert [r[0] for r in responses] == [431] and fin
    assert app.requests == []
    # at the bound, the quick path takes it
    at_bound = UPGRADE.replace(b"\r\n\r\n", b"\r\nX-Pad: " + b"a" * (16 * 1024 - len(UPGRADE) - 9) + b"\r\n\r\n")
    assert len(at_bound) == 16 * 1024
    client = await _connect(port)
    await _send_all(client, at_bound)
    with trio.fail_after(5):
        assert (await client.recv(65536)).startswith(b"HTTP/1.1 101 ")
    client.close()


async def test_the_fabric_takes_the_bound_from_max_header_bytes(nursery):
    async with fabric.open_fabric(quick_config(max_header_bytes=4096), access_key="k") as fab:
        port = await nursery.start(fab.serve, "127.0.0.1", 0)
        for size, status in ((4096, 200), (4097, 431)):
            head = _head_of(size, b"/api/health")
            assert len(head) == size
            client = await _connect(port)
            await client.send(head)
            buffered = bytearray()
            response = await _read_response(client, buffered)
            client.close()
            assert response[0] == status, (size, response)
        assert fab._limits.max_head_bytes == 4096
        # and the fabric's own 404 quotes at most 200 characters of the path
        client = await _connect(port)
        await _send_all(client, b"GET /nothing/" + b"p" * 3000 + b" HTTP/1.1\r\nHost: h\r\n\r\n")
        response = await _read_response(client, bytearray())
        client.close()
        assert response[0] == 404
        assert _error(response)["message"] == "no such resource: GET /nothing/" + "p" * 191 + "\u2026"
    assert quick_config().server.max_header_bytes == 64 * 1024 == HttpLimits().max_head_bytes


# ---- 3. strict percent-decoding -------------------------------------------------------------------


@pytest.mark.parametrize("target", [
    b"/api/hubs/h/groups/%FF%28", b"/api/hubs/h/groups/%C3%28", b"/api/hubs/h/groups/%FE%28",
    b"/api/hubs/h/groups/%80%28", b"/a%", b"/a%zz", b"/a%2", b"/a%2/b", b"/a%C3",
    b"/q?a=%FF", b"/q?a=%C3%28", b"/q?%FF=1", b"/q?a=%zz", b"/q?a=%", b"/q?a=1&b=%E2%82",
])
async def test_a_path_or_query_that_does_not_decode_is_400(nursery, target):
    app = App()
    port = await _serve(nursery, app)
    responses, fin = await _exchange(port, b"GET " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n")
    assert [r[0] for r in responses] == [400], target
    error = _error(responses[0])
    assert error["code"] == "InvalidRequest" and error["message"]
    assert app.requests == []


async def test_valid_escapes_and_plus(nursery):
    app = App()
    port = await _serve(nursery, app)
    responses, _ = await _exchange(port, b"GET /g/%C3%A9+x%2B%25?a=b+c%2B&%C3%A9=%E2%82%AC HTTP/1.1\r\n"
                                         b"Host: h\r\nConnection: close\r\n\r\n")
    assert [r[0] for r in responses] == [200]
    got = json.loads(responses[0][2])
    assert got["path"] == "/g/\u00e9+x+%"  # '+' in a path is a plus
    assert got["query"] == {"a": ["b c+"], "\u00e9": ["\u20ac"]}  # and a space in a query
    assert app.requests[0].raw_path == "/g/%C3%A9+x%2B%25"


async def test_an_upgrade_with_a_path_that_does_not_decode_is_400(nursery):
    app = App()
    port = await _serve(nursery, app)
    head = UPGRADE.replace(b"/client/hubs/chat", b"/client/hubs/%FF%28")
    responses, _ = await _exchange(port, head)
    assert [r[0] for r in responses] == [400] and _error(responses[0])["code"] == "InvalidRequest"
    assert app.requests == []


# ---- 4. bodies in many tiny chunks ----------------------------------------------------------------


def _chunks(body: bytes, size: int) -> bytes:
    out = bytearray()
    for at in range(0, len(body), size):
        piece = body[at:at + size]
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
    return bytes(out + b"0\r\n\r\n")


async def test_a_body_in_too_many_chunks_is_400(nursery):
    app = App()
    port = await _serve(nursery, app)
    wire = b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunks(b"x" * 20_000, 1)
    responses, fin = await _exchange(port, wire)
    assert [r[0] for r in responses] == [400] and fin
    error = _error(responses[0])
    assert error["code"] == "InvalidRequest" and "too many chunks" in error["message"]
    assert responses[0][1][b"connection"] == b"close"
    assert app.requests == []


async def test_a_full_size_body_in_256_byte_chunks_is_fine(nursery):
    app = App()
    port = await _serve(nursery, app)
    body = bytes(range(256)) * 4096  # 1 MiB, the default max_body_bytes
    wire = (b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            + _chunks(body, 256))
    client = await _connect(port)
    async with trio.open_nursery() as inner:
        inner.start_soon(_send_all, client, wire)
        out, _ = await _read_to_close(client)
    client.close()
    assert [r[0] for r in parse_responses(out)] == [200]
    assert app.requests[0].body == body


async def test_reading_a_body_of_many_chunks_yields_to_other_tasks(nursery):
    # Thousands of chunks in one read: without a yield every few events, reading them would
    # hold the loop for the whole body.
    app = App()
    client, server = memory_stream_pair(1 << 20)
    nursery.start_soon(serve_connection, server, app, HttpLimits(max_body_chunks=100_000))
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as inner:
        inner.start_soon(ticker)
        await client.send_all(b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                              + _chunks(b"y" * 6000, 1))
        with trio.fail_after(5):
            while not app.requests:
                await trio.sleep(0)
        inner.cancel_scope.cancel()
    assert app.requests[0].body == b"y" * 6000
    assert ticks >= 6000 // 64 // 2, ticks


# ---- 5. targets, versions, field values, echoed input ------------------------------------------


async def test_an_absolute_form_target_is_served_by_its_path(nursery):
    app = App()
    port = await _serve(nursery, app)
    wire = (b"POST http://127.0.0.1:%d/api/health?x=1 HTTP/1.1\r\nHost: other:1\r\nContent-Length: 2\r\n\r\nhi"
            b"GET HTTPS://example.com HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n") % port
    responses, _ = await _exchange(port, wire)
    assert [r[0] for r in responses] == [200, 200]
    first, second = (json.loads(r[2]) for r in responses)
    assert first == {"path": "/api/health", "target": "/api/health?x=1", "query": {"x": ["1"]},
                     "host": "other:1", "body": "hi"}
    assert second["path"] == "/" and second["target"] == "/"


@pytest.mark.parametrize("version", [b"2.0", b"1.9", b"3.0", b"0.9"])
async def test_an_http_version_other_than_1_0_and_1_1_is_505(nursery, version):
    app = App()
    port = await _serve(nursery, app)
    responses, fin = await _exchange(port, b"GET / HTTP/" + version + b"\r\nHost: h\r\n\r\n")
    assert [r[0] for r in responses] == [505] and fin
    assert _error(responses[0])["code"] == "HTTPVersionNotSupported"
    assert app.requests == []


@pytest.mark.parametrize("line", [
    b"GET api/health HTTP/1.1", b"GET * HTTP/1.1", b"CONNECT h:80 HTTP/1.1", b"GET ftp://h/x HTTP/1.1",
    b"GET http:///x HTTP/1.1", b"GET http://user@h/x HTTP/1.1", b"GET ?a=1 HTTP/1.1",
])
async def test_a_target_that_is_not_a_path_is_400(nursery, line):
    app = App()
    port = await _serve(nursery, app)
    responses, _ = await _exchange(port, line + b"\r\nHost: h\r\n\r\n")
    assert [r[0] for r in responses] == [400], line
    assert _error(responses[0])["code"] == "BadRequest"
    assert app.requests == []


async def test_options_asterisk_reaches_the_application(nursery):
    app = App()
    port = await _serve(nursery, app)
    responses, _ = await _exchange(port, b"OPTIONS * HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert [r[0] for r in responses] == [200]
    assert app.requests[0].path == "*" and app.requests[0].query == {}


@pytest.mark.parametrize("value", [b"a\x01b", b"a\x1fb", b"a\x7fb", b"a\x08", b"\x1bx"])
async def test_a_control_character_in_a_field_value_is_400(nursery, value):
    app = App()
    port = await _serve(nursery, app)
    responses, _ = await _exchange(port, b"GET / HTTP/1.1\r\nHost: h\r\nX-A: " + value + b"\r\n\r\n")
    assert [r[0] for r in responses] == [400], value
    assert _error(responses[0])["code"] == "BadRequest"
    # nor does an upgrade take it past the front
    head = UPGRADE.replace(b"Upgrade: websocket", b"Upgrade: websocket\r\nX-A: " + value)
    responses, _ = await _exchange(port, head)
    assert [r[0] for r in responses] == [400], value
    assert app.requests == []


async def test_tab_and_obs_text_in_a_field_value_are_fine(nursery):
    app = App()
    port = await _serve(nursery, app)
    responses, _ = await _exchange(port, b"GET / HTTP/1.1\r\nHost: h\r\nX-A: a\tb \xe9\r\nConnection: close\r\n\r\n")
    assert [r[0] for r in responses] == [200]
    assert app.requests[0].header("x-a") == "a\tb \xe9"


async def test_a_long_method_is_501_and_not_echoed(nursery):
    app = App()
    port = await _serve(nursery, app)
    responses, _ = await _exchange(port, b"X" * 10_000 + b" /api/health HTTP/1.1\r\nHost: h\r\n\r\n")
    assert [r[0] for r in responses] == [501]
    assert _error(responses[0])["code"] == "NotImplemented" and len(responses[0][2]) < 300
    assert app.requests == []
    responses, _ = await _exchange(port, b"X" * 32 + b" / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert [r[0] for r in responses] == [200]


async def test_an_error_message_quotes_at_most_200_characters_of_a_path(nursery):
    app = App()
    port = await _serve(nursery, app)
    path = b"/echo-error/" + b"p" * 10_000
    responses, _ = await _exchange(port, b"GET " + path + b" HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert [r[0] for r in responses] == [404]
    message = _error(responses[0])["message"]
    assert message == "no such resource: GET " + path[:200].decode() + "\u2026"
    assert Response.error(400, "X", "short message").body == b'{"code":"X","message":"short message"}'
