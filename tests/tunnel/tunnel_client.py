"""A small app-server end of the server tunnel, for tests (what the Node package does, in
Python): connect with a minted JWT, read ``ConnectionConnected``, call REST through the
tunnel, answer the service's requests.

Pull-based like ``fabric.testing.Client`` (nothing reads the socket unless asked), so a
test can also stop reading on purpose. Not for production: no reconnect, no bounds.
"""

from __future__ import annotations

import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable

import jwt
import msgspec
import trio

from fabric.appserver import tunnel_protocol as tp
from fabric.testing import Client, ConnectionClosed
from transport.memory import memory_stream_pair

#: ``handler(request) -> (status, headers, body)`` for requests from the service.
Handler = Callable[[tp.HttpRequest], Awaitable[tuple[int, dict[str, list[str]], bytes]]]


def tunnel_token(key: str, aud: str, *, sub: str | None = "app-1", ttl: int = 3600, now: float | None = None,
                 **claims) -> str:
    """A tunnel JWT as the package signs it (HS256, ``aud`` = the tunnel URL with ``hub``)."""
    issued = int(time.time() if now is None else now)
    payload = {"aud": aud, "iat": issued, "exp": issued + ttl, **claims}
    if sub is not None:
        payload["sub"] = sub
    return jwt.encode(payload, key, algorithm="HS256")


def tunnel_target(hub: str, token: str | None, **query: str) -> str:
    params = {"hub": hub, **query}
    if token is not None:
        params["access_token"] = token
    return "/server/tunnel?" + urllib.parse.urlencode(params)


class TunnelClient:
    """One tunnel, app side."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.connected: tp.ConnectionConnected | None = None
        self.inbox: deque[tp.Message] = deque()
        self._responses: dict[int, list[tp.HttpResponse]] = {}
        self._next_ack = 0

    @classmethod
    async def open(cls, fab, hub: str, *, key: str | None = None, sub: str | None = "app-1", token: str | None = None,
                   aud: str | None = None, query: dict[str, str] | None = None, wait_connected: bool = True,
                   ) -> TunnelClient:
        """Connect in process (memory streams). Raises ``fabric.testing.ConnectionRejected``."""
        if token is None:
            key = key or fab.access_keys[0]
            token = tunnel_token(key, aud or f"ws://fabric.local/server/tunnel?hub={hub}", sub=sub)
        client_stream, server_stream = memory_stream_pair()
        fab.serve_stream(server_stream)
        client = await Client.open(client_stream, "fabric.local", tunnel_target(hub, token, **(query or {})))
        tunnel = cls(client)
        if wait_connected:
            await tunnel.wait_connected()
        return tunnel

    async def wait_connected(self, timeout: float = 5.0) -> tp.ConnectionConnected:
        message = await self.receive(timeout)
        assert isinstance(message, tp.ConnectionConnected), f"the first message is {message!r}"
        self.connected = message
        return message

    async def receive(self, timeout: float = 5.0) -> tp.Message:
        """The next message from the service (raises ConnectionClosed once closed)."""
        if self.inbox:
            return self.inbox.popleft()
        data = await self.client.receive(timeout)
        assert isinstance(data, bytes), f"the service sent a text frame: {data!r}"
        return tp.decode(data)

    async def send(self, message: tp.Message) -> None:
        await self.client.send(tp.encode(message))

    async def send_raw(self, data: bytes | str) -> None:
        await self.client.send(data)

    def next_ack(self) -> int:
        self._next_ack += 1
        return self._next_ack

    async def call(self, method: str, path: str, body: bytes | str | None = None, *, content_type: str | None = None,
                   json: object = None, ack_id: int | None = None, timeout: float = 5.0,
                   ) -> tuple[int, dict, bytes, list[tp.HttpResponse]]:
        """Send one request (``path`` under ``https://host``) and collect its whole answer:
        ``(status, headers, body, parts)``. Other messages wait in ``inbox``."""
        if json is not None:
            body, content_type = msgspec.json.encode(json), "application/json"
        if isinstance(body, str):
            body = body.encode()
            content_type = content_type or "text/plain"
        headers = {"Content-Type": [content_type]} if content_type else {}
        ack = self.next_ack() if ack_id is None else ack_id
        await self.send(tp.HttpRequest(ack, method, f"https://host{path}", headers, body, True, ""))
        return await self.answer(ack, timeout)

    async def answer(self, ack: int, timeout: float = 5.0) -> tuple[int, dict, bytes, list[tp.HttpResponse]]:
        parts: list[tp.HttpResponse] = []
        with trio.fail_after(timeout):
            while True:
                data = await self.client.receive(timeout)
                message = tp.decode(data)
                if isinstance(message, tp.HttpResponse) and message.ack_id == ack:
                    parts.append(message)
                    if not message.not_completed:
                        break
                else:
                    self.inbox.append(message)
        body = b"".join(p.content or b"" for p in parts)
        return parts[0].status_code, dict(parts[0].headers), body, parts

    async def serve(self, handler: Handler, *, status: bool = False) -> None:
        """Answer the service's requests with ``handler`` until the tunnel closes."""
        try:
            while True:
                message = await self.receive(timeout=3600)
                if isinstance(message, tp.HttpRequest):
                    code, headers, body = await handler(message)
                    await self.send(tp.HttpResponse(message.ack_id, code, headers, body or None, False,
                                                    message.local_routing, message.channel_name))
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
            return

    async def aclose(self) -> None:
        await self.client.aclose()
