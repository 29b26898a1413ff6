"""The event-handler interface a hub calls: in-process (embedded API) or webhooks (later).

A hub has at most one ``EventHandler``. The embedded API passes any object with these
async methods (subclass ``EventHandler`` and override what you need); the upstream
webhook client implements the same interface, so the server core has one code path.

Rules:
- ``on_connect`` is blocking: the handshake waits for it. Raising ``ConnectRejected``
  refuses the upgrade with that HTTP status; returning a ``ConnectResponse`` may set the
  user, groups, roles, the subprotocol (one the client offered) and connection state.
- ``on_connected`` / ``on_disconnected`` are notifications: the connection never waits
  for them and their failures are logged and counted, never propagated.
- ``on_user_event`` may reply with a ``Payload`` that goes back to the sender only. It
  is awaited by the sender's reader, so a slow handler slows only that connection.
"""

from __future__ import annotations

from typing import Mapping

import attrs

from .messages import Payload


class ConnectRejected(Exception):
    def __init__(self, status: int = 401, message: str = "connection rejected") -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class UserEventError(Exception):
    """Raised by ``on_user_event`` to answer the client with an ack error."""

    def __init__(self, name: str = "InternalServerError", message: str = "event handler failed") -> None:
        super().__init__(message)
        self.name = name
        self.message = message


@attrs.frozen
class ConnectRequest:
    hub: str
    connection_id: str
    user_id: str | None
    claims: Mapping[str, list[str]]
    query: Mapping[str, list[str]]
    headers: Mapping[str, list[str]]
    subprotocols: tuple[str, ...]
    roles: tuple[str, ...]
    groups: tuple[str, ...]


@attrs.frozen
class ConnectResponse:
    user_id: str | None = None
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    subprotocol: str | None = None
    connection_state: str | None = None


@attrs.frozen
class ConnectionContext:
    """What a handler learns about the connection an event came from."""

    hub: str
    connection_id: str
    user_id: str | None
    subprotocol: str | None
    connection_state: str | None = None


class EventHandler:
    """Override the events you care about. Unoverridden user events are 'not handled'."""

    async def on_connect(self, request: ConnectRequest) -> ConnectResponse | None:
        return None

    async def on_connected(self, context: ConnectionContext) -> None:
        return None

    async def on_disconnected(self, context: ConnectionContext, reason: str) -> None:
        return None

    async def on_user_event(self, context: ConnectionContext, event: str, payload: Payload) -> Payload | None:
        raise NotImplementedError

    def handles_user_event(self, event: str) -> bool:
        """Whether a user event named ``event`` is routed here (default: if overridden)."""
        return type(self).on_user_event is not EventHandler.on_user_event
