"""The event-handler interface a hub calls: in-process (embedded API) or webhooks (upstream).

A hub has at most one ``EventHandler``. The embedded API passes any object with these
async methods (subclass ``EventHandler`` and override what you need); the upstream
webhook client (``fabric.upstream.WebhookEventHandler``) implements the same interface, so
the server core has one code path and the tests run the same scenarios against both.

Rules:
- ``on_connect`` is blocking: the handshake waits for it, bounded by
  ``server.upstream_timeout`` (``call_connect``). Raising ``ConnectRejected`` refuses the
  upgrade with that HTTP status; any other failure or the timeout refuses it with 500.
  Returning a ``ConnectResponse`` may set the user, groups, roles, the subprotocol (one the
  client offered) and connection state.
- ``on_connected`` / ``on_disconnected`` are notifications: the connection never waits
  for them and their failures are logged and counted, never propagated.
- ``on_user_event`` may reply with a ``Payload`` (back to the sender only), or with a
  ``UserEventResponse`` that also sets or clears the connection state and carries reply
  metadata. It is awaited by the sender's reader, bounded by ``server.upstream_timeout``
  (``call_user_event``), so a slow handler slows only that connection. Raising
  ``UserEventError`` answers with that ack error name; what a client *without* an ackId gets
  is ``specs.upstream``'s rule.
- ``handle_user_event(request)`` is the whole request (``UserEventRequest``: context, event,
  payload, the message's metadata, the invocation id of an ``invoke``); its default calls
  ``on_user_event``, so handlers that need metadata or invocations override it instead. An
  invocation is the same user event (``specs.invocation``), run as a task of the hub so the
  client can cancel it.
- ``on_group_joined`` / ``on_group_left`` are notifications like ``on_connected`` (group
  presence, opt-in: a handler gets them when it overrides them, a webhook when its
  configuration asks for them).
- Which events reach a handler: ``handles_system_event`` / ``handles_user_event``.
- Nothing here creates tasks; ``call_*`` are checkpoints (they await the handler).

The failure taxonomy (status codes, ack error names, close codes) is ``specs/upstream.py``.
"""

from __future__ import annotations

import enum
import logging
import types
from typing import Any, Mapping

import attrs
import trio

from fabric.core.payload import Payload
from specs import metadata as spec_metadata
from specs.errors import AckErrorName

log = logging.getLogger(__name__)

#: The core bounds a handler call by ``server.upstream_timeout`` plus this, so that a
#: webhook handler's own timeout (same configured value, more specific message) fires first.
TIMEOUT_GRACE = 0.25


class ConnectRejected(Exception):
    """Refuse a connection's handshake with an HTTP ``status`` (4xx: the client's fault,
    5xx: the handler failed). ``code`` is the ``x-ms-error-code`` / body ``code``."""

    def __init__(self, status: int = 401, message: str = "connection rejected", code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or ("ConnectRejected" if 400 <= status < 500 else "ConnectHandlerFailed")


class UserEventError(Exception):
    """Raised by ``on_user_event`` to answer the client with an ack error (for an ``invoke``:
    an ``invokeResponse`` error with that name)."""

    def __init__(self, name: str = "InternalServerError", message: str = "event handler failed") -> None:
        super().__init__(message)
        self.name = name
        self.message = message


class _Unchanged(enum.Enum):
    UNCHANGED = "unchanged"

    def __repr__(self) -> str:
        return "UNCHANGED"


#: ``UserEventResponse.connection_state`` default: keep whatever state the connection has.
UNCHANGED = _Unchanged.UNCHANGED


@attrs.frozen
class ClientCertificate:
    """A TLS client certificate, as the ``connect`` event's ``clientCertificates`` carries it."""

    thumbprint: str  # SHA-1, hex
    content: str  # PEM


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
    client_certificates: tuple[ClientCertificate, ...] = ()


@attrs.frozen
class ConnectResponse:
    user_id: str | None = None
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    subprotocol: str | None = None
    connection_state: str | None = None


@attrs.frozen
class UserEventResponse:
    """A user event's answer: an optional reply to the sender, and a state change.

    ``connection_state``: ``UNCHANGED`` (default) keeps the state, ``None`` clears it, a
    string replaces it (sent back byte for byte as ``ce-connectionState`` on later events).
    """

    payload: Payload | None = None
    connection_state: str | None | _Unchanged = UNCHANGED
    #: Metadata of the reply (``specs.metadata``); validated by the core, lower-case keys.
    metadata: Mapping[str, str] | None = None


#: No metadata.
NO_METADATA: Mapping[str, str] = types.MappingProxyType({})


@attrs.frozen
class ConnectionContext:
    """What a handler learns about the connection an event came from."""

    hub: str
    connection_id: str
    user_id: str | None
    subprotocol: str | None
    connection_state: str | None = None


@attrs.frozen
class UserEventRequest:
    """One user event or invocation, whole: what ``handle_user_event`` receives.

    ``metadata``: the message's metadata (lower-case keys, ``specs.metadata``), empty when it
    had none. ``invocation_id``: set for an ``invoke`` (the caller waits for the answer as an
    ``invokeResponse``), None for an ``event``.
    """

    context: ConnectionContext
    event: str
    payload: Payload
    metadata: Mapping[str, str] = NO_METADATA
    invocation_id: str | None = None


class EventHandler:
    """Override the events you care about. Unoverridden user events are 'not handled'."""

    async def on_connect(self, request: ConnectRequest) -> ConnectResponse | None:
        return None

    async def on_connected(self, context: ConnectionContext) -> None:
        return None

    async def on_disconnected(self, context: ConnectionContext, reason: str) -> None:
        return None

    async def on_user_event(
        self, context: ConnectionContext, event: str, payload: Payload
    ) -> Payload | UserEventResponse | None:
        raise NotImplementedError

    async def handle_user_event(self, request: UserEventRequest) -> Payload | UserEventResponse | None:
        """The whole request (metadata, invocation id); default: ``on_user_event``."""
        return await self.on_user_event(request.context, request.event, request.payload)

    async def on_group_joined(self, context: ConnectionContext, group: str) -> None:
        return None

    async def on_group_left(self, context: ConnectionContext, group: str) -> None:
        return None

    def handles_user_event(self, event: str) -> bool:
        """Whether a user event named ``event`` is routed here (default: if overridden)."""
        cls = type(self)
        return (cls.on_user_event is not EventHandler.on_user_event
                or cls.handle_user_event is not EventHandler.handle_user_event)

    def handles_system_event(self, event: str) -> bool:
        """Whether ``connect``/``connected``/``disconnected``/``joined``/``left`` go here
        (default: if overridden)."""
        method = _SYSTEM_METHODS.get(event)
        return method is not None and getattr(type(self), method, None) is not getattr(EventHandler, method)


_SYSTEM_METHODS = {
    "connect": "on_connect", "connected": "on_connected", "disconnected": "on_disconnected",
    "joined": "on_group_joined", "left": "on_group_left",
}


def handles_system_event(handler: Any, event: str) -> bool:
    """``handler.handles_system_event(event)``, also for duck-typed handlers (any object with
    the async methods): those get every system event they define a method for."""
    if handler is None:
        return False
    check = getattr(handler, "handles_system_event", None)
    if check is not None:
        return bool(check(event))
    return hasattr(handler, _SYSTEM_METHODS.get(event, "-"))


# ---- the core's calls into a handler: bounded, and every failure mapped ---------------------


async def call_connect(handler: Any, request: ConnectRequest, *, timeout: float) -> ConnectResponse | None:
    """Run ``on_connect`` within ``timeout`` seconds. Checkpoint.

    Raises ``ConnectRejected``: the handler's own, or 500 for a timeout, an exception or a
    wrong return type (each logged).
    """
    with trio.move_on_after(timeout + TIMEOUT_GRACE) as scope:
        try:
            answer = await handler.on_connect(request)
        except ConnectRejected:
            raise
        except Exception as exc:
            log.exception("connect handler failed in hub %r for connection %s", request.hub, request.connection_id)
            raise ConnectRejected(500, f"the connect event handler failed: {type(exc).__name__}") from None
    if scope.cancelled_caught:
        log.warning("connect handler in hub %r did not answer within %g s (connection %s rejected with 500)",
                    request.hub, timeout, request.connection_id)
        raise ConnectRejected(500, f"the connect event handler did not answer within {timeout:g} s")
    if answer is not None and not isinstance(answer, ConnectResponse):
        log.error("connect handler in hub %r returned %r, not a ConnectResponse or None", request.hub, answer)
        raise ConnectRejected(500, "the connect event handler returned an invalid answer")
    return answer


@attrs.frozen
class UserEventOutcome:
    """What the core does after a user event: reply, state change, or an error."""

    reply: Payload | None = None
    connection_state: str | None | _Unchanged = UNCHANGED
    error: UserEventError | None = None
    #: The reply's metadata (None: none).
    metadata: Mapping[str, str] | None = None


async def call_user_event(
    handler: Any, context: ConnectionContext, event: str, payload: Payload, *, timeout: float,
    metadata: Mapping[str, str] | None = None, invocation_id: str | None = None,
) -> UserEventOutcome:
    """Run the handler's user event within ``timeout`` seconds; never raises (but Cancelled).
    Checkpoint.

    ``handle_user_event`` gets the whole ``UserEventRequest`` when the handler has it (duck-typed
    handlers with only ``on_user_event`` get the three arguments). A timeout is the error
    ``Timeout``; an exception other than ``UserEventError`` is ``InternalServerError`` for an
    event and ``InvocationFailed`` for an invocation (logged); a wrong return type is
    ``InternalServerError``.
    """
    with trio.move_on_after(timeout + TIMEOUT_GRACE) as scope:
        try:
            handle = getattr(handler, "handle_user_event", None)
            if handle is not None:
                result = await handle(UserEventRequest(
                    context, event, payload, metadata if metadata else NO_METADATA, invocation_id))
            else:
                result = await handler.on_user_event(context, event, payload)
        except UserEventError as exc:
            return UserEventOutcome(error=exc)
        except Exception as exc:
            log.exception("event handler failed for event %r of connection %s in hub %r",
                          event, context.connection_id, context.hub)
            name = AckErrorName.INVOCATION_FAILED if invocation_id is not None else AckErrorName.INTERNAL_SERVER_ERROR
            return UserEventOutcome(error=UserEventError(
                name.value, f"the event handler for '{event}' failed: {type(exc).__name__}"))
    if scope.cancelled_caught:
        log.warning("event handler for event %r of connection %s in hub %r did not answer within %g s",
                    event, context.connection_id, context.hub, timeout)
        return UserEventOutcome(error=UserEventError(
            AckErrorName.TIMEOUT.value, f"the event handler for '{event}' did not answer within {timeout:g} s"))
    if result is None:
        return UserEventOutcome()
    if isinstance(result, Payload):
        return UserEventOutcome(reply=result)
    if isinstance(result, UserEventResponse) and (
        result.connection_state is UNCHANGED or result.connection_state is None
        or isinstance(result.connection_state, str)
    ) and (result.payload is None or isinstance(result.payload, Payload)):
        reply_metadata = result.metadata or None
        if reply_metadata is not None:
            reply_metadata, problem = spec_metadata.normalize(
                reply_metadata.items() if isinstance(reply_metadata, Mapping) else ())
            if problem is not None or not isinstance(result.metadata, Mapping):
                log.error("event handler for %r in hub %r answered invalid metadata: %s",
                          event, context.hub, problem or "not a mapping")
                return UserEventOutcome(error=UserEventError(
                    AckErrorName.INTERNAL_SERVER_ERROR.value,
                    f"the event handler for '{event}' answered invalid metadata: {problem or 'not a mapping'}"))
        return UserEventOutcome(reply=result.payload, connection_state=result.connection_state,
                                metadata=reply_metadata)
    log.error("event handler for %r in hub %r returned %r, not a Payload, UserEventResponse or None",
              event, context.hub, result)
    return UserEventOutcome(error=UserEventError(
        AckErrorName.INTERNAL_SERVER_ERROR.value, f"the event handler for '{event}' returned an invalid answer"))


async def call_notification(handler: Any, kind: str, context: ConnectionContext, detail: str, *,
                            timeout: float) -> None:
    """Run one notification (``joined``/``left``: ``detail`` is the group) within ``timeout``;
    raises whatever the handler raised (the caller counts and logs). Checkpoint."""
    method = getattr(handler, _SYSTEM_METHODS[kind], None)
    if method is None:
        return
    with trio.move_on_after(timeout + TIMEOUT_GRACE):
        await method(context, detail)
