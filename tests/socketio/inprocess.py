"""In-process Engine.IO / Socket.IO clients for tests: the real HTTP front and edge, no sockets.

- ``http(fab, method, target, body)``: one request through ``Fabric.handle_http`` (the edge's
  polling path; the h11 front is tested in tests/transport).
- ``RawSocket``: a WebSocket client (``fabric.testing.Client`` over a memory stream pair)
  speaking raw Engine.IO frames; ``receive`` answers Engine.IO pings unless told not to.
"""

from __future__ import annotations

import json
import urllib.parse

import attrs

from fabric.config import SocketIOConfig
from fabric.testing import Client
from tests.fabric_support import quick_config
from transport.http import Request
from transport.memory import memory_stream_pair


def sio_config(**socketio):
    config = quick_config()
    return attrs.evolve(config, socketio=SocketIOConfig(**socketio))


def request(method: str, target: str, body: bytes = b"", headers: tuple = ()) -> Request:
    raw_path, _, qs = target.partition("?")
    query = urllib.parse.parse_qs(qs, keep_blank_values=True) if qs else {}
    return Request(method, target, urllib.parse.unquote(raw_path), raw_path, query,
                   (("host", "fabric.local"), *headers), body)


async def http(fab, method: str, target: str, body: bytes | str = b"", headers: tuple = ()):
    if isinstance(body, str):
        body = body.encode()
    return await fab.handle_http(request(method, target, body, headers))


async def open_polling(fab, path: str = "/socket.io/") -> str:
    answer = await http(fab, "GET", f"{path}?EIO=4&transport=polling")
    assert answer.status == 200, answer
    return json.loads(answer.body[1:])["sid"]


class RawSocket:
    """One Engine.IO WebSocket connection (raw frames)."""

    def __init__(self, client: Client, handshake: dict) -> None:
        self.client = client
        self.handshake = handshake
        self.sid = handshake.get("sid")

    @classmethod
    async def open(cls, fab, target: str = "/socket.io/?EIO=4&transport=websocket", *, expect_open: bool = True):
        client_stream, server_stream = memory_stream_pair()
        fab.serve_stream(server_stream)
        client = await Client.open(client_stream, "fabric.local", target)
        handshake = {}
        if expect_open:
            first = await client.receive()
            assert isinstance(first, str) and first.startswith("0"), first
            handshake = json.loads(first[1:])
        return cls(client, handshake)

    async def send(self, data: str | bytes) -> None:
        await self.client.send(data)

    async def receive(self, timeout: float = 10.0, *, pong: bool = True) -> str | bytes:
        while True:
            message = await self.client.receive(timeout)
            if pong and message == "2":
                await self.client.send("3")
                continue
            return message

    async def connect(self, nsp: str = "/", auth: dict | None = None) -> dict:
        prefix = "" if nsp == "/" else nsp + ","
        await self.send("40" + prefix + (json.dumps(auth) if auth is not None else ""))
        reply = await self.receive()
        assert isinstance(reply, str) and reply.startswith("40" + prefix), reply
        return json.loads(reply[2 + len(prefix):])

    async def aclose(self) -> None:
        await self.client.aclose()
