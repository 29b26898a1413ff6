"""An in-process REST client for the unit tests: real HTTP (h11) over a bounded memory stream
into the fabric's own HTTP front (`transport.http.serve_connection`), signed like the SDKs
sign (`aud` = the full request URL, HS256 with the access key)."""

from __future__ import annotations

import contextlib
import json
import urllib.parse
from typing import Any, Sequence

import h11
import trio
import trio.testing

import fabric
from fabric.config import load_config
from fabric.core.auth import mint_rest_token
from fabric.testing import connect_in_process
from transport.memory import memory_stream_pair

KEY = "test-key-0123456789-0123456789-0123456789"
HOST = "fabric.local"
VERSION = "2024-12-01"
ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")
DEFAULT = object()


class RestResponse:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error(self) -> dict:
        """The ErrorDetail, checked to be well-formed and to agree with x-ms-error-code."""
        detail = self.json()
        assert isinstance(detail, dict) and isinstance(detail.get("code"), str) and isinstance(detail.get("message"), str), detail
        assert self.headers.get("x-ms-error-code") == detail["code"], (self.headers, detail)
        return detail

    def __repr__(self) -> str:
        return f"RestResponse({self.status}, {self.body[:300]!r})"


class RestClient:
    """`await rest.call("POST", "/api/hubs/chat/:send", body=..., content_type=...)`."""

    def __init__(self, fab, key: str = KEY) -> None:
        self.fab = fab
        self.key = key

    def target(self, path: str, query: Sequence[tuple[str, str]] = (), api_version: str | None = VERSION) -> str:
        params = list(query)
        if api_version is not None:
            params.append(("api-version", api_version))
        return path + ("?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote) if params else "")

    def sign(self, target: str, key: str | None = None, **kwargs: Any) -> str:
        return "Bearer " + mint_rest_token(key=key or self.key, url=f"http://{HOST}{target}", **kwargs)

    async def call(self, method: str, path: str, *, query: Sequence[tuple[str, str]] = (), body: bytes | str = b"",
                   content_type: str | None = None, api_version: str | None = VERSION,
                   authorization: Any = DEFAULT, headers: Sequence[tuple[str, str]] = ()) -> RestResponse:
        target = self.target(path, query, api_version)
        if isinstance(body, str):
            body = body.encode("utf-8")
        all_headers = [("Host", HOST)]
        if authorization is DEFAULT:
            authorization = self.sign(target)
        if authorization is not None:
            all_headers.append(("Authorization", authorization))
        if content_type is not None:
            all_headers.append(("Content-Type", content_type))
        if body or method in ("POST", "PUT"):
            all_headers.append(("Content-Length", str(len(body))))
        all_headers.extend(headers)
        return await self.raw_request(method, target, all_headers, body)

    async def raw_request(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes = b"") -> RestResponse:
        client_stream, server_stream = memory_stream_pair()
        self.fab.serve_stream(server_stream)
        conn = h11.Connection(h11.CLIENT)
        data = conn.send(h11.Request(method=method, target=target.encode("latin-1"), headers=headers))
        if body:
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
        with trio.fail_after(10):
            await client_stream.send_all(data)
            status, resp_headers, out = 0, {}, bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    chunk = await client_stream.receive_some(65536)
                    conn.receive_data(chunk)
                    continue
                if isinstance(event, h11.Response):
                    status = event.status_code
                    resp_headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
                    if method == "HEAD":
                        # h11 expects no body for HEAD; the server sends none.
                        pass
                elif isinstance(event, h11.Data):
                    out += event.data
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    break
        await client_stream.aclose()
        return RestResponse(status, resp_headers, bytes(out))

    # shorthands
    async def send(self, path: str, body: bytes | str, content_type: str | None = "text/plain", **kw: Any) -> RestResponse:
        return await self.call("POST", path, body=body, content_type=content_type, **kw)


@contextlib.asynccontextmanager
async def open_rest_fabric(**overrides: Any):
    """A fabric and a RestClient for it (for Hypothesis tests: one per example)."""
    async with fabric.open_fabric(load_config(None, env={}, overrides=overrides or None), access_key=KEY) as fab:
        yield fab, RestClient(fab)


async def connect(fab, hub: str = "chat", **kw: Any):
    """An in-process client; PubSub clients have `connection_id` from `system/connected`."""
    client = await connect_in_process(fab, hub, **kw)
    if client.subprotocol in ("json.webpubsub.azure.v1", "json.reliable.webpubsub.azure.v1"):
        connected = await client.receive_json()
        assert connected["type"] == "system" and connected["event"] == "connected", connected
        client.connection_id = connected["connectionId"]
    return client


async def connect_simple(fab, hub: str = "chat", **kw: Any):
    """A simple (no subprotocol) client, with its `connection_id` read from the hub's registry."""
    await fab.get_hub(hub)
    before = set(fab.running_hubs()[hub].connections)
    client = await connect_in_process(fab, hub, subprotocol=None, **kw)
    with trio.fail_after(5):
        while True:
            new = set(fab.running_hubs()[hub].connections) - before
            if new:
                (client.connection_id,) = new
                return client
            await trio.sleep(0)


async def settle() -> None:
    """Let queued deliveries reach the in-process clients (no clock time passes)."""
    for _ in range(50):
        await trio.testing.wait_all_tasks_blocked()
