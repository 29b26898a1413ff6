"""The front's connection-setup fast paths (transport.http): a plain WebSocket upgrade head
is taken without h11 and must mean exactly what h11 would make of it; anything else goes to
h11. Over a real socket: the raw accept loop, the first head read without a yield, the 101
in one send, refusals of a head h11 never saw, and heads that arrive in pieces."""

from __future__ import annotations

import base64
import json
import re
import socket
import urllib.parse

import h11
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from transport.http import (
    MAX_HEAD_BYTES,
    HttpLimits,
    Response,
    WebSocketAccept,
    _parse_query,
    _TargetError,
    _quick_upgrade_head,
    serve_tcp,
)

KEY = base64.b64encode(b"0123456789abcdef")
UPGRADE = (b"GET /client/hubs/chat?access_token=a.b.c&x=1 HTTP/1.1\r\n"
           b"Host: 127.0.0.1:8080\r\n"
           b"Upgrade: websocket\r\n"
           b"Connection: Upgrade\r\n"
           b"Sec-WebSocket-Key: " + KEY + b"\r\n"
           b"Sec-WebSocket-Version: 13\r\n"
           b"Sec-WebSocket-Protocol: json.webpubsub.azure.v1\r\n"
           b"\r\n")


def via_h11(data: bytes):
    """What the front makes of ``data`` with h11: (target, headers, trailing), or None when h11
    has no complete request (or refuses it)."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    conn.receive_data(data)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(event, h11.Request):
        return None
    headers = tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in event.headers)
    return event.method, event.http_version, event.target.decode("latin-1"), headers, conn.trailing_data[0]


def assert_same_as_h11(data: bytes) -> None:
    quick = _quick_upgrade_head(data)
    if quick is None:
        return
    target, headers, end = quick
    slow = via_h11(data)
    assert slow is not None, f"taken quickly but h11 refuses: {data!r}"
    assert slow == (b"GET", b"1.1", target, headers, data[end:]), data


def test_a_plain_upgrade_head_is_taken_as_h11_takes_it():
    quick = _quick_upgrade_head(UPGRADE + b"\x81\x02hi")
    assert quick is not None
    target, headers, end = quick
    assert target == "/client/hubs/chat?access_token=a.b.c&x=1"
    assert ("sec-websocket-protocol", "json.webpubsub.azure.v1") in headers and ("host", "127.0.0.1:8080") in headers
    assert end == len(UPGRADE)
    assert_same_as_h11(UPGRADE + b"\x81\x02hi")
    # whitespace around values and odd name case are h11's business too, the same way
    odd = UPGRADE.replace(b"Upgrade: websocket", b"UPGRADE:\t websocket \t").replace(b"Host: ", b"host:")
    assert _quick_upgrade_head(odd) is not None
    assert_same_as_h11(odd)


@pytest.mark.parametrize("why, head", [
    ("incomplete", UPGRADE[:-2]),
    ("not GET", UPGRADE.replace(b"GET ", b"POST ", 1)),
    ("lower-case method", UPGRADE.replace(b"GET ", b"get ", 1)),
    ("HTTP/1.0", UPGRADE.replace(b"HTTP/1.1", b"HTTP/1.0", 1)),
    ("space in the target", UPGRADE.replace(b"?access", b" ?access", 1)),
    ("bare LF line end", UPGRADE.replace(b"Upgrade: websocket\r\n", b"Upgrade: websocket\n")),
    ("bare CR", UPGRADE.replace(b"Upgrade: websocket", b"Upgrade: web\rsocket")),
    ("obsolete line folding", UPGRADE.replace(b"Connection: Upgrade\r\n", b"Connection:\r\n Upgrade\r\n")),
    ("no Host", UPGRADE.replace(b"Host: 127.0.0.1:8080\r\n", b"")),
    ("two Hosts", UPGRADE.replace(b"Host: 127.0.0.1:8080\r\n", b"Host: a\r\nHost: b\r\n")),
    ("Content-Length", UPGRADE.replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n")),
    ("Transfer-Encoding", UPGRADE.replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n")),
    ("no Upgrade", UPGRADE.replace(b"Upgrade: websocket\r\n", b"")),
    ("Connection without upgrade", UPGRADE.replace(b"Connection: Upgrade", b"Connection: keep-alive")),
    ("space before the colon", UPGRADE.replace(b"Upgrade: websocket", b"Upgrade : websocket")),
    ("NUL in a value", UPGRADE.replace(b"Upgrade: websocket", b"Upgrade: web\x00socket")),
    ("leading empty line", b"\r\n" + UPGRADE),
    ("huge head", UPGRADE.replace(b"\r\n\r\n", b"\r\nX-Pad: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n")),
])
def test_anything_else_goes_to_h11(why, head):
    assert _quick_upgrade_head(head) is None, why


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(UPGRADE) - 1), st.sampled_from(
    [b"\r", b"\n", b" ", b"\t", b"\x00", b":", b"\x7f", b"\xff", b"\r\n", b"\r\n ", b"A", b",", b"\r\n\r\n"])),
    max_size=4), st.binary(max_size=8))
def test_a_mutated_head_is_taken_only_as_h11_takes_it(edits, tail):
    data = bytearray(UPGRADE)
    for at, insert in sorted(edits, reverse=True):
        data[at:at] = insert
    assert_same_as_h11(bytes(data) + tail)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ab=&;%+é1 ", max_size=16) | st.lists(st.sampled_from(
    ["%C3%A9", "%c3", "%A9", "%E2%82%AC", "%25", "%2B", "+", "=", "&", "a", "%F0%9F%98%80", "%FF", "%"]),
    max_size=8).map("".join))
def test_the_query_is_parsed_as_parse_qs_parses_it(qs):
    # As parse_qs parses it, where that is lossless; where parse_qs would keep a malformed
    # escape as text or decode bytes that are not UTF-8 to U+FFFD, the front refuses (400).
    try:
        if re.search("%(?![0-9A-Fa-f]{2})", qs):
            raise UnicodeDecodeError("utf-8", b"", 0, 1, "malformed escape")
        want = urllib.parse.parse_qs(qs, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        with pytest.raises(_TargetError) as refused:
            _parse_query(qs)
        assert refused.value.status == 400 and refused.value.code == "InvalidRequest"
        return
    got = _parse_query(qs)
    assert got == want and list(got) == list(want)


# ---- over a real socket ------------------------------------------------------------------------


class App:
    def __init__(self):
        self.requests = []

    async def handle_http(self, request):
        self.requests.append(request)
        return Response.json(200, {"path": request.path})

    async def handle_websocket(self, request):
        self.requests.append(request)
        if request.path == "/reject":
            return Response.error(401, "Unauthorized", "no")

        async def run(ws):
            async def on_message(message):
                ws.send_message_nowait(message)

            await ws.run(on_message)

        return WebSocketAccept(subprotocol="json.webpubsub.azure.v1", run=run)


async def _connect(port: int):
    client = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await client.connect(("127.0.0.1", port))
    return client


async def _read_until_close(client) -> bytes:
    out = bytearray()
    with trio.fail_after(5):
        while chunk := await client.recv(65536):
            out += chunk
    return bytes(out)


async def _read_head(client) -> tuple[bytes, bytes]:
    out = bytearray()
    with trio.fail_after(5):
        while b"\r\n\r\n" not in out:
            chunk = await client.recv(65536)
            assert chunk, bytes(out)
            out += chunk
    head, _, rest = bytes(out).partition(b"\r\n\r\n")
    return head, rest


def _masked_text(text: bytes) -> bytes:
    mask = b"\x01\x02\x03\x04"
    return bytes([0x81, 0x80 | len(text)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(text))


async def _read_frame(client, rest: bytes) -> bytes:
    data = bytearray(rest)
    with trio.fail_after(5):
        while len(data) < 2 or len(data) < 2 + data[1]:
            data += await client.recv(65536)
    assert data[0] == 0x81
    return bytes(data[2:2 + data[1]])


@pytest.mark.parametrize("pieces", [1, 3])
async def test_upgrade_over_tcp(nursery, pieces):
    app = App()
    port = await nursery.start(serve_tcp, app, "127.0.0.1", 0)
    client = await _connect(port)
    if pieces == 1:
        await client.send(UPGRADE)
    else:  # the head in pieces: waited for, and parsed by h11
        size = len(UPGRADE) // pieces + 1
        for at in range(0, len(UPGRADE), size):
            await client.send(UPGRADE[at:at + size])
            await trio.sleep(0.02)
    head, rest = await _read_head(client)
    await client.send(_masked_text(b"hello"))
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nSec-WebSocket-Protocol: json.webpubsub.azure.v1\r\n" in head + b"\r\n"
    assert head.endswith(b"\r\nServer: fabric")
    assert await _read_frame(client, rest) == b"hello"
    request = app.requests[0]
    assert request.method == "GET" and request.path == "/client/hubs/chat"
    assert request.query == {"access_token": ["a.b.c"], "x": ["1"]}
    assert request.header("sec-websocket-version") == "13"
    client.close()


@pytest.mark.parametrize("head, status", [
    (UPGRADE.replace(b"/client/hubs/chat", b"/reject"), 401),
    (UPGRADE.replace(b"Version: 13", b"Version: 8"), 426),
    (UPGRADE.replace(b"Sec-WebSocket-Key: " + KEY, b"Sec-WebSocket-Key: short"), 400),
])
async def test_a_refused_quick_head_gets_the_same_plain_http_answer(nursery, head, status):
    app = App()
    port = await nursery.start(serve_tcp, app, "127.0.0.1", 0)
    client = await _connect(port)
    await client.send(head)
    out = await _read_until_close(client)
    client.close()
    status_line, _, rest = out.partition(b"\r\n")
    assert status_line.split()[1] == str(status).encode()
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"connection: close" in headers.lower()
    assert json.loads(body)["code"]


@pytest.mark.parametrize("head", [
    UPGRADE.replace(b"/client/hubs/chat", b"/reject"),
    UPGRADE.replace(b"/client/hubs/chat", b"/reject").replace(b"Connection: Upgrade", b"Connection: close, Upgrade"),
    UPGRADE.replace(b"Version: 13", b"Version: 8").replace(b"Upgrade: websocket", b"upgrade:  websocket "),
])
async def test_a_refusal_is_byte_for_byte_what_h11_alone_answers(nursery, monkeypatch, head):
    async def answer() -> bytes:
        port = await nursery.start(serve_tcp, App(), "127.0.0.1", 0)
        client = await _connect(port)
        await client.send(head)
        out = await _read_until_close(client)
        client.close()
        return out

    assert _quick_upgrade_head(head) is not None
    quick = await answer()
    monkeypatch.setattr("transport.http._quick_upgrade_head", lambda data, max_head=0: None)
    assert quick == await answer()


async def test_plain_requests_over_tcp_keep_alive(nursery):
    app = App()
    port = await nursery.start(serve_tcp, app, "127.0.0.1", 0)
    client = await _connect(port)
    for path in (b"/one", b"/two"):
        await client.send(b"GET " + path + b" HTTP/1.1\r\nHost: h\r\n\r\n")
        head, body = await _read_head(client)
        assert head.startswith(b"HTTP/1.1 200")
        while len(body) < int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]):
            body += await client.recv(65536)
        assert json.loads(body) == {"path": path.decode()}
    client.close()


async def test_a_silent_client_is_dropped_at_the_handshake_timeout(nursery):
    app = App()
    port = await nursery.start(lambda task_status: serve_tcp(app, "127.0.0.1", 0, limits=HttpLimits(
        handshake_timeout=0.2), task_status=task_status))
    client = await _connect(port)
    start = trio.current_time()
    assert await _read_until_close(client) == b""
    assert 0.15 < trio.current_time() - start < 2
    client.close()


async def test_many_connections_at_once_are_all_accepted(nursery):
    app = App()
    port = await nursery.start(serve_tcp, app, "127.0.0.1", 0)
    clients = [await _connect(port) for _ in range(50)]  # more than one accept burst
    for client in clients:
        await client.send(UPGRADE)
    for client in clients:
        head, _ = await _read_head(client)
        assert head.startswith(b"HTTP/1.1 101")
        client.close()
