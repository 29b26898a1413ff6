"""The fabric: hubs under one supervisor, the HTTP/WebSocket router, and the listener.

This is the composition root. ``open_fabric`` gives the embedded API; ``fabric serve``
is ``open_fabric`` plus ``serve`` plus signal handling.
"""

from __future__ import annotations

import functools
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator, Mapping

import trio

from actors import ChildSpec, Restart, Supervisor
from transport.http import HttpLimits, Request, Response, WebSocketAccept, serve_tcp
from transport.websocket import WebSocket

from fabric.core import auth
from fabric.core.broker_memory import MemoryBus
from fabric.config import FabricConfig, load_config
from specs import names
from specs.lifecycle import LifecycleEvent

from fabric.webpubsub.connection import ClientConnection, WireProtocol, new_lifecycle
from fabric.core.events import ConnectRejected, ConnectRequest, EventHandler, call_connect, handles_system_event
from fabric.core.hub import Hub, new_connection_id
from fabric.appserver.service import HubHandle
from fabric.appserver.webhook import WebhookEventHandler, origin_from_endpoint

log = logging.getLogger("fabric")

PUBSUB_PROTOCOLS = {p.value: p for p in WireProtocol if p.is_pubsub}


class Fabric:
    """A running fabric. Create with ``open_fabric``; use ``hub(name)`` for the API."""

    def __init__(self, config: FabricConfig, handlers: Mapping[str, EventHandler] | None = None,
                 bus: MemoryBus | None = None) -> None:
        self.config = config
        self._handlers = dict(handlers or {})
        self._bus = bus or MemoryBus()
        self._hubs: dict[str, Hub] = {}
        self._hub_starting: dict[str, trio.Event] = {}
        self.supervisor = Supervisor("fabric", max_restarts=10, within=10.0)
        self.access_keys: tuple[str, ...] = config.server.access_keys
        self._limits = HttpLimits(
            max_body_bytes=config.server.max_request_body_bytes,
            handshake_timeout=config.server.handshake_timeout,
            keepalive_timeout=config.server.idle_timeout,
        )
        self.endpoint: str | None = None
        #: Webhook handlers built from the hubs' ``event_handlers`` settings, by hub name.
        self._webhooks: dict[str, WebhookEventHandler] = {}
        #: An ``httpx.AsyncBaseTransport`` for upstream webhooks instead of TCP (tests,
        #: embedding); read when a hub starts.
        self.upstream_transport = None

    # ---- hubs ------------------------------------------------------------------------

    def hub(self, name: str) -> HubHandle:
        """The embedded API for one hub (any valid hub name; no configuration needed)."""
        if not names.is_valid_hub_name(name):
            raise ValueError(f"invalid hub name {name!r}")
        return HubHandle(self, name)

    def set_handler(self, hub: str, handler: EventHandler | None) -> None:
        """Use an in-process handler for ``hub``; ``None`` goes back to the hub's configured
        webhooks (if any). A ``WebhookEventHandler`` given here is started by the fabric."""
        self._handlers[hub] = handler
        if hub in self._hubs:
            if isinstance(handler, WebhookEventHandler) and not handler.running:
                self._nursery.start_soon(self._start_upstream, hub, handler)
            self._hubs[hub].handler = handler if handler is not None else self._webhooks.get(hub)

    def _upstream_origin(self) -> tuple[str, str]:
        """``WebHook-Request-Origin``: the host of the endpoint the connection string names."""
        endpoint = self.config.server.public_endpoint or self.endpoint or f"http://{self.config.server.host}"
        return origin_from_endpoint(endpoint)

    async def _start_upstream(self, hub: str, handler: WebhookEventHandler) -> None:
        """Run a webhook handler's client under the fabric's supervisor. Checkpoint."""
        name = f"upstream:{hub}:{id(handler):x}"
        if handler.running or name in self.supervisor.children():
            return
        await self.supervisor.start_child(ChildSpec(name, handler.run, restart=Restart.PERMANENT))

    async def get_hub(self, name: str) -> Hub:
        """The running hub, started on first use. Checkpoint."""
        hub = self._hubs.get(name)
        if hub is not None:
            await hub._started.wait()
            return hub
        starting = self._hub_starting.get(name)
        if starting is not None:
            await starting.wait()
            return await self.get_hub(name)
        self._hub_starting[name] = event = trio.Event()
        try:
            hub_config = self.config.hub(name)
            if hub_config.event_handlers and name not in self._webhooks:
                server = self.config.server
                webhook = WebhookEventHandler(
                    name, hub_config, access_keys=self.access_keys, origin=self._upstream_origin,
                    timeout=server.upstream_timeout, max_response_bytes=server.max_message_bytes,
                    transport=self.upstream_transport)
                await self._start_upstream(name, webhook)
                self._webhooks[name] = webhook
            handler = self._handlers.get(name)
            if isinstance(handler, WebhookEventHandler):
                await self._start_upstream(name, handler)
            hub = Hub(name, hub_config, self.config.server, self._bus.attach,
                      handler=handler if handler is not None else self._webhooks.get(name))
            await self.supervisor.start_child(ChildSpec(f"hub:{name}", hub.run, restart=Restart.TRANSIENT))
            self._hubs[name] = hub
        finally:
            del self._hub_starting[name]
            event.set()
        return hub

    def running_hubs(self) -> dict[str, Hub]:
        return dict(self._hubs)

    # ---- serving ---------------------------------------------------------------------

    async def serve(self, host: str | None = None, port: int | None = None, *,
                    task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Listen for clients and REST on one port until cancelled. ``started(port)``."""
        host = host if host is not None else self.config.server.host
        port = port if port is not None else self.config.server.port

        async def _serve(task_status=trio.TASK_STATUS_IGNORED):
            await serve_tcp(self, host, port, limits=self._limits, task_status=task_status)

        bound = await self._nursery.start(_serve)
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        if ":" in shown:
            shown = f"[{shown}]"
        self.endpoint = f"http://{shown}:{bound}"
        task_status.started(bound)

    def connection_string(self, endpoint: str | None = None) -> str:
        endpoint = endpoint or self.endpoint or f"http://{self.config.server.host}:{self.config.server.port}"
        return auth.connection_string(endpoint, self.access_keys[0])

    # ---- HTTP routing (transport.http.Application) -----------------------------------

    async def handle_http(self, request: Request) -> Response:
        if request.raw_path.lstrip("/")[:4] == "api/":
            # The REST data plane and health (GET and HEAD /api/health): fabric/rest.py.
            from fabric.appserver import rest

            return await rest.handle(self, request)
        if _client_hub(request) is not None:
            return Response.error(400, "BadRequest", "this endpoint expects a WebSocket upgrade")
        return Response.error(404, "NotFound", f"no such resource: {request.method} {request.raw_path}")

    async def handle_websocket(self, request: Request) -> Response | WebSocketAccept:
        hub_name = _client_hub(request)
        if hub_name is None:
            return Response.error(404, "NotFound", f"no WebSocket endpoint at {request.raw_path}")
        if not names.is_valid_hub_name(hub_name):
            return Response.error(400, "InvalidHubName", f"invalid hub name {hub_name!r}")
        hub_config = self.config.hub(hub_name)

        recovering = request.query_one("awps_connection_id")
        if recovering is not None:
            # Recovery is authorised by the reconnection token alone: the original access
            # token may have expired meanwhile (reference §5.2).
            return await self._recover(hub_name, recovering, request)

        token = request.query_one("access_token")
        authorization = request.header("authorization")
        if token is None and authorization and authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
        if token is None and hub_config.anonymous_connect:
            identity = auth.ClientIdentity(user_id=None, roles=(), groups=(), claims={}, expires_at=None)
        else:
            try:
                identity = auth.verify_client_token(token, keys=self.access_keys, hub=hub_name)
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

        hub = await self.get_hub(hub_name)
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
                answer = await call_connect(handler, req, timeout=self.config.server.upstream_timeout)
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

        server = self.config.server
        lifecycle = new_lifecycle(protocol)
        lifecycle.handle(LifecycleEvent.AUTHENTICATED)

        async def run(ws: WebSocket) -> None:
            connection = ClientConnection(
                hub, connection_id, ws, protocol, user_id=user_id, roles=roles,
                connection_state=state, simple_mode=simple_mode, simple_group=simple_group,
                lifecycle=lifecycle,
            )
            try:
                await hub.supervisor.start_child(ChildSpec(
                    f"conn:{connection_id}", functools.partial(hub.connection_task, connection, groups),
                    restart=Restart.TEMPORARY, shutdown_timeout=server.shutdown_timeout))
            except Exception:
                log.exception("could not start connection %s", connection_id)
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(ws._stream)

        return WebSocketAccept(
            subprotocol=echoed, run=run, max_message_bytes=server.max_message_bytes,
            **_outbox_bounds(server, protocol),
        )

    async def _recover(self, hub_name: str, connection_id: str, request: Request) -> WebSocketAccept:
        """Resume a reliable session on a new socket, or accept-then-close 1008 (as the SDKs expect)."""
        offered = _offered_subprotocols(request)
        protocol, echoed = _choose_protocol(offered)
        hub = self._hubs.get(hub_name)
        token = request.query_one("awps_reconnection_token") or ""
        connection = hub.recover(connection_id, token, echoed) if hub is not None else None
        if connection is None:
            if hub is not None:
                hub.counters["recoveries_refused"] += 1
            return self._refuse_recovery(echoed)
        server = self.config.server

        async def run(ws: WebSocket) -> None:
            # Hand the socket to the session's own task, which runs it from now on.
            if not connection.offer_transport(ws):
                rule = _recovery_failed_rule()
                ws.close(rule.code, rule.message)
                await ws.run(_ignore_messages)

        return WebSocketAccept(
            subprotocol=echoed, run=run, max_message_bytes=server.max_message_bytes,
            **_outbox_bounds(server, protocol),
        )

    def _refuse_recovery(self, subprotocol: str | None) -> WebSocketAccept:
        rule = _recovery_failed_rule()

        async def run(ws: WebSocket) -> None:
            ws.close(rule.code, rule.message)
            await ws.run(_ignore_messages)

        return WebSocketAccept(subprotocol=subprotocol, run=run)

    # ---- lifecycle -------------------------------------------------------------------

    async def _run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.supervisor.run)
            task_status.started()

    async def aclose(self) -> None:
        """Graceful shutdown: every hub closes its connections (1001), then stops."""
        for hub in list(self._hubs.values()):
            try:
                await hub.aclose()
            except Exception:
                log.exception("hub %r failed to shut down cleanly", hub.name)
        await self.supervisor.aclose()

    def statistics(self) -> dict:
        return {
            "hubs": {name: hub.statistics() for name, hub in self._hubs.items()},
            "supervisor": self.supervisor.statistics(),
        }


@asynccontextmanager
async def open_fabric(
    config: FabricConfig | None = None,
    *,
    handlers: Mapping[str, EventHandler] | None = None,
    access_key: str | None = None,
) -> AsyncIterator[Fabric]:
    """Run a fabric for the duration of the block.

    ``config`` defaults to ``load_config()`` with no file and no environment. If it names
    no access key, ``access_key`` or a random one is used (``fab.access_keys``).
    """
    if config is None:
        config = load_config(None, env={})
    if not config.server.access_keys:
        import attrs

        key = access_key or auth.generate_access_key()
        config = attrs.evolve(config, server=attrs.evolve(config.server, access_keys=(key,)))
    fabric = Fabric(config, handlers)
    async with trio.open_nursery() as nursery:
        await nursery.start(fabric._run)
        try:
            yield fabric
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(config.server.shutdown_timeout + 1):
                    await fabric.aclose()
            nursery.cancel_scope.cancel()


async def _ignore_messages(message) -> None:
    return None


def _recovery_failed_rule():
    from specs.errors import CLOSE_RULES, CloseSituation

    return CLOSE_RULES[CloseSituation.RECOVERY_FAILED]


def _outbox_bounds(server, protocol: WireProtocol) -> dict:
    """A reliable connection's outbox must hold a full replay on top of live traffic."""
    items, size = server.outbox_max_messages, server.outbox_max_bytes
    if protocol is not None and protocol.is_reliable:
        items += server.reliable_buffer_messages
        size += server.reliable_buffer_bytes
    return {"outbox_max_items": items, "outbox_max_bytes": size}


def _client_hub(request: Request) -> str | None:
    """The hub of a client endpoint path, or None if the path is not a client endpoint."""
    path = request.path
    if path.startswith("/client/hubs/"):
        name = path[len("/client/hubs/"):].rstrip("/")
        return name if "/" not in name else None
    if path.rstrip("/") == "/client":
        return request.query_one("hub") or ""
    return None


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
