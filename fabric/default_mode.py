"""Composition of Web PubSub for Socket.IO's default mode: the Socket.IO edge's default-mode
hubs (``fabric.socketio.tunnelled``) reach app servers through the server tunnel
(``fabric.appserver.tunnel``). Neither edge imports the other; this module joins them:

- ``TunnelAppLink``: the ``AppLink`` the default mode sends its events through (tunnel
  errors become ``AppUnreachable``);
- the tunnel's listener (a hub becomes default-mode when an app server tunnels for it; an
  app server's loss ends its connections after a grace period);
- two tunnel operations: ``:invoke`` (broadcast with acks, a streamed answer) and
  ``connections/{id}/:send`` for a default-mode connection of this node (written before the
  app hears back; any other connection goes to the REST router as before).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence

from fabric.appserver.odata import FilterError, compile_filter
from fabric.appserver.tunnel import TunnelEdge, TunnelError, TunnelReply, TunnelResponse
from fabric.socketio.tunnelled import AppUnreachable, DefaultMode
from transport.http import Request

__all__ = ["TunnelAppLink", "wire"]


class TunnelAppLink:
    """``AppLink`` over the server tunnel."""

    def __init__(self, tunnels: TunnelEdge) -> None:
        self.tunnels = tunnels

    async def request(self, hub: str, method: str, url: str, headers: Mapping[str, Sequence[str]],
                      content: bytes | None, *, key: str, server: str | None, wait: float) -> TunnelResponse:
        try:
            response = await self.tunnels.request(hub, method, url, headers, content, key=key, server=server,
                                                  wait=wait)
        except TunnelError as exc:
            raise AppUnreachable(str(exc)) from None
        return _Answer(response)  # type: ignore[return-value]

    def has_server(self, hub: str, server: str) -> bool:
        return self.tunnels.pick(hub, "", server) is not None


class _Answer:
    """A tunnel answer whose read failures are ``AppUnreachable``."""

    def __init__(self, response: TunnelResponse) -> None:
        self._response = response
        self.status = response.status
        self.headers = response.headers
        self.server = response.server

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except TunnelError as exc:
            raise AppUnreachable(str(exc)) from None


def wire(tunnels: TunnelEdge, mode: DefaultMode) -> None:
    """Connect the default mode to the tunnel edge (no checkpoint)."""
    tunnels.add_listener(mode)

    async def invoke(hub: str, request: Request) -> TunnelReply:
        source = request.query_one("filter")
        selects = None
        if source:
            try:
                selects = compile_filter(source)
            except FilterError as exc:
                return TunnelReply.error(400, "InvalidFilter", str(exc))
        try:
            stream = await mode.invoke(hub, selects, request.body)
        except ValueError as exc:
            return TunnelReply.error(400, "InvalidPayload", str(exc))
        return TunnelReply(200, b"", (("content-type", "application/x-ndjson"),), stream)

    async def send_to_connection(hub: str, request: Request) -> TunnelReply | None:
        segments = request.raw_path.strip("/").split("/")
        member = mode.local(hub, urllib.parse.unquote(segments[4]))
        if member is None:
            return None  # the REST router (another node, a Web PubSub client, nobody)
        await mode.send_to_connection(member, request.body)
        return TunnelReply(202)

    tunnels.add_operation("POST", ":invoke", invoke)
    tunnels.add_operation("POST", "connections/{connectionId}/:send", send_to_connection)
