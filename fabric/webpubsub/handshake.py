"""The Web PubSub client handshake: ``/client/hubs/{hub}`` upgrades and reliable recovery.

Rules this module keeps:
- Checks run in one order and the first failure answers (no state changed by then): hub
  name (400), token or anonymous access (401), subprotocol (400), simple-client query
  (400), then the connect handler (its status, or 500 for a malformed answer).
- Recovery (``awps_connection_id`` + ``awps_reconnection_token``) is authorised by the
  reconnection token alone: the original access token may have expired meanwhile. Anything
  the server cannot honour is accepted and closed with 1008, the one code the SDKs read as
  "start a new connection".
- A reliable connection's outbox holds a full replay on top of live traffic.
"""

from __future__ import annotations

import functools
import logging

import trio

from fabric.core import auth
from fabric.core.events import ConnectRejected, ConnectRequest, call_connect, handles_system_event
from fabric.core.hub import new_connection_id
from fabric.core.hubs import HubRegistry
from fabric.webpubsub import handover
from fabric.webpubsub.connection import ClientConnection, WireProtocol, new_lifecycle
from specs import names
from specs.errors import CLOSE_RULES, CloseSituation
from specs.lifecycle import LifecycleEvent
from transport.http import Request, Response, WebSocketAccept
from transport.websocket import WebSocket

log = logging.getLogger(__name__)

PUBSUB_PROTOCOLS = {p.value: p for p in WireProtocol if p.is_pubsub}


def client_hub(request: Request) -> str | None:
    """The hub of a client endpoint path, or None if the path is not a client endpoint."""
    path = request.path
    if path.startswith("/client/hubs/"):
        name = path[len("/client/hubs/"):].rstrip("/")
        return name if "/" not in name else None
    if path.rstrip("/") == "/client":
        return request.query_one("hub") or ""
    return None


async def handle_websocket(registry: HubRegistry, hub_name: str, request: Request) -> Response | WebSocketAccept:
    """Answer one client upgrade for ``hub_name``. Checkpoint (the connect handler)."""
    if not names.is_valid_hub_name(hub_name):
        return Response.error(400, "InvalidHubName", f"invalid hub name {hub_name!r}")
    config = registry.config
    hub_config = config.hub(hub_name)

    recovering = request.query_one("awps_connection_id")
    if recovering is not None:
        return await _recover(registry, hub_name, recovering, request)

    token = request.query_one("access_token")
    authorization = request.header("authorization")
    if token is None and authorization and authorization[:7].lower() == "bearer ":
        token = authorization[7:].strip()
    if token is None and hub_config.anonymous_connect:
        identity = auth.ClientIdentity(user_id=None, roles=(), groups=(), claims={}, expires_at=None)
    else:
        try:
            identity = auth.verify_client_token(token, keys=registry.access_keys, hub=hub_name,
                                                public_endpoint=config.server.public_endpoint)
        except auth.TokenError as exc:
            return Response.error(exc.status, exc.code, str(exc))

    offered = _offered_subprotocols(request)
    protocol, echoed = _choose_protocol(offered)
    if protocol is None:
        return Response.error(400, "UnsupportedSubprotocol",
                              f"subprotocols {', '.join(offered)} are not supported by this server yet")

    simple_mode = request.query_one("webpubsub_mode") or "sendEvent"
    simple_group = request.query_one("group")
    if protocol is WireProtocol.SIMPLE:
        if simple_mode not in ("sendEvent", "sendToGroup"):
            return Response.error(400, "BadRequest", f"unknown webpubsub_mode {simple_mode!r}")
        if simple_mode == "sendToGroup" and not simple_group:
            return Response.error(400, "BadRequest", "webpubsub_mode=sendToGroup needs a group parameter")

    hub = await registry.get(hub_name)
    connection_id = new_connection_id()
    user_id, roles, groups = identity.user_id, identity.roles, identity.groups
    state = None
    handler = hub.handler
    if handles_system_event(handler, "connect"):
        req = ConnectRequest(
            hub=hub_name, connection_id=connection_id, user_id=user_id, claims=identity.claims,
            query={k: v for k, v in request.query.items() if k != "access_token"},
            headers=_header_map(request), subprotocols=tuple(offered), roles=roles, groups=groups,
            client_certificates=(),  # plain HTTP here: TLS ends in front of the listener
        )
        try:
            answer = await call_connect(handler, req, timeout=config.server.upstream_timeout)
        except ConnectRejected as exc:
            hub.counters["connect_rejected"] += 1
            status = exc.status if 400 <= exc.status < 600 else 500
            return Response.error(status, exc.code, exc.message)
        if answer is not None:
            problem = None
            if answer.user_id:  # "" means absent (Microsoft's sample answer has "userId": "")
                user_id = answer.user_id
            roles = tuple(dict.fromkeys((*roles, *answer.roles)))
            bad = next((g for g in answer.groups if not names.is_valid_group_name(g)), None)
            if bad is not None:
                problem = f"connect handler answered an invalid group name {bad!r}"
            groups = tuple(dict.fromkeys((*groups, *answer.groups)))
            state = answer.connection_state or None
            if answer.subprotocol and problem is None:
                if answer.subprotocol not in offered:
                    problem = f"connect handler chose subprotocol {answer.subprotocol!r} the client did not offer"
                else:
                    protocol = PUBSUB_PROTOCOLS.get(answer.subprotocol, WireProtocol.SIMPLE)
                    echoed = answer.subprotocol
            if problem is not None:
                hub.counters["connect_rejected"] += 1
                log.warning("hub %r: connection %s refused with 500: %s", hub_name, connection_id, problem)
                return Response.error(500, "ConnectHandlerFailed", problem)

    server = config.server
    lifecycle = new_lifecycle(protocol)
    lifecycle.handle(LifecycleEvent.AUTHENTICATED)

    async def run(ws: WebSocket) -> None:
        connection = ClientConnection(
            hub, connection_id, ws, protocol, user_id=user_id, roles=roles,
            connection_state=state, simple_mode=simple_mode, simple_group=simple_group,
            lifecycle=lifecycle,
        )
        try:
            hub.start_connection_soon(connection_id, functools.partial(connection.run, groups))
        except Exception:
            log.exception("could not start connection %s", connection_id)
            ws.abort_soon()
            with trio.CancelScope(shield=True):
                await ws.run(_ignore_messages)  # returns at once, closing the stream

    return WebSocketAccept(
        subprotocol=echoed, run=run, max_message_bytes=server.max_message_bytes,
        **_outbox_bounds(server, protocol),
    )


async def _recover(registry: HubRegistry, hub_name: str, connection_id: str, request: Request) -> WebSocketAccept:
    """Resume a reliable session on a new socket, or accept-then-close 1008 (as the SDKs expect)."""
    offered = _offered_subprotocols(request)
    protocol, echoed = _choose_protocol(offered)
    hub = registry.running(hub_name)
    token = request.query_one("awps_reconnection_token") or ""
    connection = hub.local_member(connection_id) if hub is not None else None
    server = registry.config.server
    if connection is None and names.is_valid_hub_name(hub_name):
        # Not here: another node may hold it (fabric.webpubsub.handover); 1008 if none does.
        hub = hub or await registry.get(hub_name)
        take_over = await handover.claim(hub, connection_id, token, echoed)
        if take_over is None:
            hub.counters["recoveries_refused"] += 1
            return _refuse_recovery(echoed)
        return WebSocketAccept(subprotocol=echoed, run=take_over, max_message_bytes=server.max_message_bytes,
                               **_outbox_bounds(server, protocol))
    if (not isinstance(connection, ClientConnection) or not connection.can_recover(token, echoed)
            or handover.claimed(connection)):
        if hub is not None:
            hub.counters["recoveries_refused"] += 1
        return _refuse_recovery(echoed)

    async def run(ws: WebSocket) -> None:
        # Hand the socket to the session's own task, which runs it from now on.
        if not connection.offer_transport(ws):
            rule = CLOSE_RULES[CloseSituation.RECOVERY_FAILED]
            ws.close(rule.code, rule.message)
            await ws.run(_ignore_messages)

    return WebSocketAccept(
        subprotocol=echoed, run=run, max_message_bytes=server.max_message_bytes,
        **_outbox_bounds(server, protocol),
    )


def _refuse_recovery(subprotocol: str | None) -> WebSocketAccept:
    rule = CLOSE_RULES[CloseSituation.RECOVERY_FAILED]

    async def run(ws: WebSocket) -> None:
        ws.close(rule.code, rule.message)
        await ws.run(_ignore_messages)

    return WebSocketAccept(subprotocol=subprotocol, run=run)


async def _ignore_messages(message) -> None:
    return None


def _outbox_bounds(server, protocol: WireProtocol) -> dict:
    """The socket's bounds. A reliable connection's outbox must hold a full replay on top of
    live traffic."""
    items, size = server.outbox_max_messages, server.outbox_max_bytes
    if protocol is not None and protocol.is_reliable:
        items += server.reliable_buffer_count
        size += server.reliable_buffer_bytes
    return {"outbox_max_items": items, "outbox_max_bytes": size, "close_timeout": server.close_timeout,
            "max_message_fragments": server.max_message_fragments}


def _offered_subprotocols(request: Request) -> list[str]:
    raw = request.header("sec-websocket-protocol")
    if not raw:
        return []
    return [p.strip() for p in raw.split(",") if p.strip()]


def _choose_protocol(offered: list[str]) -> tuple[WireProtocol | None, str | None]:
    for name in offered:
        if name in PUBSUB_PROTOCOLS:
            return PUBSUB_PROTOCOLS[name], name
    # A simple client: echo its first subprotocol so strict clients accept the upgrade.
    return WireProtocol.SIMPLE, (offered[0] if offered else None)


def _header_map(request: Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in request.headers:
        if k in ("authorization", "sec-websocket-key"):
            continue
        out.setdefault(k, []).append(v)
    return out
