"""A small WebSocket client for the fabric, over an in-process stream or TCP.

``connect_in_process(fab, hub, ...)`` runs the real HTTP front and WebSocket code over a
bounded memory stream pair (``transport.memory``): fast, deterministic tests without
sockets. ``connect_tcp`` does the same over a real socket. The client is pull-based (no
background task): ``receive`` reads the stream only when asked, and answers pings.
"""

from __future__ import annotations

import json
import urllib.parse
from collections import deque
from typing import TYPE_CHECKING, Any, Sequence

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from transport.memory import memory_stream_pair

if TYPE_CHECKING:
    from fabric.app import Fabric


class ConnectionRejected(Exception):
    """The server answered the upgrade with an HTTP error (``status``, ``body``)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"upgrade rejected with HTTP {status}: {body[:200]!r}")
        self.status = status
        self.body = body


class ConnectionClosed(Exception):
    """The WebSocket is closed (``code``, ``reason``; 1006 when it was lost without a close)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed with code {code}: {reason}")
        self.code = code
        self.reason = reason


class Client:
    """One client WebSocket. Not safe to ``receive`` from two tasks at once."""

    def __init__(self, stream: trio.abc.Stream, ws: WSConnection, subprotocol: str | None) -> None:
        self.stream = stream
        self._ws = ws
        self.subprotocol = subprotocol
        self._messages: deque[str | bytes] = deque()
        self._parts: list = []
        self.close_code: int | None = None
        self.close_reason = ""
        self._send_lock = trio.Lock()

    @classmethod
    async def open(cls, stream: trio.abc.Stream, host: str, target: str,
                   subprotocols: Sequence[str] = ()) -> "Client":
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host=host, target=target, subprotocols=list(subprotocols))))
        status, body = None, bytearray()
        while True:
            data = await stream.receive_some(65536)
            if not data:
                raise ConnectionRejected(0, b"connection closed during the handshake")
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    client = cls(stream, ws, event.subprotocol)
                    client._absorb_events()
                    return client
                if isinstance(event, RejectConnection):
                    status = event.status_code
                    if not event.has_body:
                        raise ConnectionRejected(status, b"")
                elif isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        raise ConnectionRejected(status or 0, bytes(body))

    def _absorb_events(self) -> list[bytes]:
        out = []
        for event in self._ws.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                self._parts.append(event.data)
                if event.message_finished:
                    parts, self._parts = self._parts, []
                    self._messages.append(parts[0] if len(parts) == 1 else type(parts[0])().join(parts))
            elif isinstance(event, Ping):
                out.append(self._ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if self.close_code is None:
                    self.close_code = event.code
                    self.close_reason = event.reason or ""
                try:
                    out.append(self._ws.send(event.response()))
                except Exception:
                    pass
        return out

    async def receive(self, timeout: float = 10.0) -> str | bytes:
        """The next message. Raises ConnectionClosed once the server closed, TooSlowError on timeout."""
        with trio.fail_after(timeout):
            while not self._messages:
                if self.close_code is not None:
                    raise ConnectionClosed(self.close_code, self.close_reason)
                try:
                    data = await self.stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    if self.close_code is None:
                        self.close_code, self.close_reason = 1006, "connection lost"
                    continue
                self._ws.receive_data(data)
                for reply in self._absorb_events():
                    try:
                        async with self._send_lock:
                            await self.stream.send_all(reply)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
            return self._messages.popleft()

    async def receive_json(self, timeout: float = 10.0) -> Any:
        message = await self.receive(timeout)
        return json.loads(message)

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        """Read (discarding messages) until the server closes; returns the close code."""
        try:
            while True:
                await self.receive(timeout)
        except ConnectionClosed as exc:
            return exc.code

    async def send(self, message: str | bytes) -> None:
        event = TextMessage(data=message) if isinstance(message, str) else BytesMessage(data=message)
        async with self._send_lock:
            await self.stream.send_all(self._ws.send(event))

    async def send_json(self, obj: Any) -> None:
        await self.send(json.dumps(obj, separators=(",", ":")))

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        if self.close_code is None:
            try:
                async with self._send_lock:
                    await self.stream.send_all(self._ws.send(CloseConnection(code=code, reason=reason)))
                with trio.move_on_after(2):
                    await self.wait_closed()
            except Exception:
                pass
        await trio.aclose_forcefully(self.stream)


def client_target(hub: str, token: str | None = None, **query: str) -> str:
    params = dict(query)
    if token is not None:
        params["access_token"] = token
    qs = urllib.parse.urlencode(params)
    return f"/client/hubs/{hub}" + (f"?{qs}" if qs else "")


async def connect_in_process(
    fab: "Fabric", hub: str, *, user_id: str | None = None, roles: Sequence[str] = (),
    groups: Sequence[str] = (), subprotocol: str | None = "json.webpubsub.azure.v1",
    token: str | None = None, query: dict[str, str] | None = None, anonymous: bool = False,
) -> Client:
    """Connect to ``fab`` without sockets (bounded memory streams). Checkpoint."""
    if token is None and not anonymous:
        token = fab.hub(hub).get_client_access_token(user_id=user_id, roles=roles, groups=groups)["token"]
    client_stream, server_stream = memory_stream_pair()
    fab.serve_stream(server_stream)
    return await Client.open(client_stream, "fabric.local", client_target(hub, token, **(query or {})),
                             [subprotocol] if subprotocol else [])


async def connect_tcp(host: str, port: int, target: str, subprotocols: Sequence[str] = ()) -> Client:
    stream = await trio.open_tcp_stream(host, port)
    return await Client.open(stream, f"{host}:{port}", target, subprotocols)


# ---- deliberately broken behaviour, for checking that the conformance suite notices ------
#
# ``fabric serve`` with ``FABRIC_TEST_MUTATION=<name>`` applies one of these at start-up
# (tests/conform/test_mutations.py). Test-only: nothing in the server refers to them, they
# patch it from outside; never set the variable in production.

MUTATIONS = ("drop-50th", "ack-before-route", "ignore-noecho")


def apply_mutation(name: str) -> None:
    """Patch this process's server to misbehave as ``name`` says. Raises ValueError for an
    unknown name."""
    import logging

    import msgspec

    from fabric.core import hub as core_hub
    from fabric.webpubsub import codec_json, connection

    if name not in MUTATIONS:
        raise ValueError(f"unknown mutation {name!r}; expected one of {', '.join(MUTATIONS)}")
    log = logging.getLogger(__name__)
    log.warning("TEST MUTATION %r is active: this server misbehaves on purpose", name)
    dispatch = connection._DISPATCH
    if name == "ignore-noecho":
        original = dispatch[codec_json.SendToGroup]

        async def send_ignoring_no_echo(self, msg):
            await original(self, msgspec.structs.replace(msg, no_echo=False))

        dispatch[codec_json.SendToGroup] = send_ignoring_no_echo
    elif name == "drop-50th":
        # Counted where every group publication enters this node's hub, whichever way it
        # is then delivered (the group's actor, or in place when the actor is idle).
        routed: dict[str, int] = {}
        on_publication = core_hub.Hub.on_publication

        async def drop_every_50th(self, topic, publication):
            group = getattr(publication, "group", None)
            if topic.startswith("g\x00") and group is not None:
                n = routed[group] = routed.get(group, 0) + 1
                if n % 50 == 0:
                    return
            await on_publication(self, topic, publication)

        core_hub.Hub.on_publication = drop_every_50th
    else:  # ack-before-route: success at once, the operation ~100 ms later, failures only logged
        for kind in (codec_json.JoinGroup, codec_json.LeaveGroup, codec_json.SendToGroup):
            original = dispatch[kind]

            def early_ack(original=original):
                async def handler(self, msg):
                    if msg.ack_id is None:
                        await original(self, msg)
                        return
                    self._ack_ok(msg.ack_id)

                    async def later():
                        await trio.sleep(0.1)
                        try:
                            await original(self, msgspec.structs.replace(msg, ack_id=None))
                        except Exception:
                            log.exception("mutated %s failed", type(msg).__name__)

                    trio.lowlevel.spawn_system_task(later)
                return handler

            dispatch[kind] = early_ack()
