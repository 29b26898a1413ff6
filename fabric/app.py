"""The fabric: composition only. It builds the hub registry, the event-handler clients and
the edges, and routes each HTTP request and upgrade to the edge that owns its path.

``open_fabric`` gives the embedded API; ``fabric serve`` is ``open_fabric`` plus ``serve``
plus signal handling. Protocol rules live in the edges (``fabric.webpubsub``,
``fabric.appserver``), shared machinery in ``fabric.core``; nothing here decides what a
protocol says.
"""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator, Mapping

import attrs
import trio

from actors import ChildSpec, Restart, Supervisor
from specs import names
from transport.http import HttpLimits, Request, Response, WebSocketAccept, serve_connection, serve_tcp

from fabric.appserver import rest
from fabric.appserver.service import HubHandle
from fabric.appserver.tunnel import TunnelEdge, uses_tunnel
from fabric.appserver.webhook import WebhookEventHandler, origin_from_endpoint
from fabric.config import FabricConfig, ReloadPlan, load_config, plan_reload
from fabric.core import auth
from fabric.core.broker_memory import MemoryBus
from fabric.core.broker_redis import RedisBrokerError, RedisBus
from fabric.core.commands import wire_codec
from fabric.core.events import EventHandler
from fabric.core.hub import Hub
from fabric.core.hubs import HubRegistry
from fabric.core.telemetry import summary
from fabric.default_mode import TunnelAppLink, wire
from fabric.demo import DemoEdge
from fabric.operations import Operations
from fabric.socketio.endpoint import SocketIOEdge
from fabric.socketio.server import Server as SocketIOServer
from fabric.socketio.tunnelled import DefaultMode
from fabric.webpubsub import handshake

log = logging.getLogger("fabric")


class Fabric:
    """A running fabric. Create with ``open_fabric``; use ``hub(name)`` for the API."""

    def __init__(self, config: FabricConfig, handlers: Mapping[str, EventHandler] | None = None,
                 bus: MemoryBus | RedisBus | None = None) -> None:
        self.config = config
        self._handlers = dict(handlers or {})
        #: Listen with SO_REUSEPORT (a worker of ``fabric serve --workers N``).
        self.reuse_port = False
        #: The broker link shared by this node's hubs: a ``MemoryBus`` (one process, or
        #: several in-process nodes sharing one bus) or a ``RedisBus`` (``[broker] url``).
        self.bus = bus or MemoryBus()
        self.supervisor = Supervisor("fabric", max_restarts=10, within=10.0)
        redis = isinstance(self.bus, RedisBus)
        self.hubs = HubRegistry(config, self.supervisor, self.bus.attach, self._handler_for,
                                bus_statistics=self.bus.statistics if redis else None)
        if redis:
            self.bus.on_stray = self.hubs.on_stray
        self._limits = HttpLimits(
            max_body_bytes=config.server.max_request_body_bytes,
            handshake_timeout=config.server.handshake_timeout,
            keepalive_timeout=config.server.idle_timeout,
            max_head_bytes=config.server.max_header_bytes,
        )
        #: Webhook handlers built from the hubs' ``event_handlers`` settings, by hub name.
        self._webhooks: dict[str, WebhookEventHandler] = {}
        #: An ``httpx.AsyncBaseTransport`` for upstream webhooks instead of TCP (tests,
        #: embedding); read when a hub starts.
        self.upstream_transport = None
        self._nursery: trio.Nursery | None = None
        #: The Socket.IO edge: ``/clients/socketio/hubs/{hub}/`` and ``[socketio] path``.
        self.socketio_edge = SocketIOEdge(self.hubs, config, self._start_service)
        #: ``/metrics`` and the REST access log (fabric.operations).
        self.ops = Operations(self)
        #: ``/demo/...`` with ``[demo] enabled`` (``fabric serve --demo``).
        self.demo = DemoEdge(config.demo, hub_api=self.hub, socketio=self.socketio, set_handler=self.set_handler,
                             stats=lambda: summary(self.running_hubs())) if config.demo.enabled else None
        #: App servers' tunnels: ``/server/tunnel`` and ``tunnel:///`` event handlers.
        self.tunnels = TunnelEdge(self.hubs)
        #: Web PubSub for Socket.IO's default mode: hubs whose app servers tunnel in.
        self.default_mode = DefaultMode(self.hubs, TunnelAppLink(self.tunnels), self._start_service)
        wire(self.tunnels, self.default_mode)

    @property
    def access_keys(self) -> tuple[str, ...]:
        return self.hubs.access_keys

    @property
    def endpoint(self) -> str | None:
        """``http://host:port`` once ``serve`` listens."""
        return self.hubs.endpoint

    @endpoint.setter
    def endpoint(self, value: str | None) -> None:
        self.hubs.endpoint = value

    # ---- hubs ------------------------------------------------------------------------

    def hub(self, name: str) -> HubHandle:
        """The embedded API for one hub (any valid hub name; no configuration needed)."""
        if not names.is_valid_hub_name(name):
            raise ValueError(f"invalid hub name {name!r}")
        return HubHandle(self.hubs, name)

    def set_handler(self, hub: str, handler: EventHandler | None) -> None:
        """Use an in-process handler for ``hub``; ``None`` goes back to the hub's configured
        webhooks (if any). A ``WebhookEventHandler`` given here is started by the fabric."""
        self._handlers[hub] = handler
        running = self.hubs.running(hub)
        if running is not None:
            if isinstance(handler, WebhookEventHandler) and not handler.running:
                self._nursery.start_soon(self._start_upstream, hub, handler)
            running.handler = handler if handler is not None else self._webhooks.get(hub)

    def socketio(self, hub: str | None = None) -> SocketIOServer:
        """The Socket.IO server of ``hub`` (default: ``[socketio] hub``, served at
        ``[socketio] path``); every hub's is also at ``/clients/socketio/hubs/{hub}/``."""
        return self.socketio_edge.server(hub)

    async def _start_service(self, name: str, run) -> None:
        """Run an edge's long-lived task under the fabric's supervisor. Checkpoint."""
        if name not in self.supervisor.children():
            await self.supervisor.start_child(ChildSpec(name, run, restart=Restart.PERMANENT))

    def webhook(self, hub: str) -> WebhookEventHandler | None:
        """The webhook client built from ``hub``'s configured event handlers, once it started."""
        return self._webhooks.get(hub)

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

    async def _handler_for(self, name: str) -> EventHandler | None:
        """The hub's event handler, starting its webhook client first (registry callback)."""
        hub_config = self.config.hub(name)
        if hub_config.event_handlers and name not in self._webhooks:
            server = self.config.server
            transport = self.upstream_transport
            if uses_tunnel(hub_config):
                transport = self.tunnels.transport(name, fallback=transport)
            webhook = WebhookEventHandler(
                name, hub_config, access_keys=self.access_keys, origin=self._upstream_origin,
                timeout=server.upstream_timeout, max_response_bytes=server.max_message_bytes,
                transport=transport)
            await self._start_upstream(name, webhook)
            self._webhooks[name] = webhook
        handler = self._handlers.get(name)
        if isinstance(handler, WebhookEventHandler):
            await self._start_upstream(name, handler)
        return handler if handler is not None else self._webhooks.get(name)

    async def get_hub(self, name: str) -> Hub:
        """The running hub, started on first use. Checkpoint."""
        return await self.hubs.get(name)

    def running_hubs(self) -> dict[str, Hub]:
        return self.hubs.running_hubs()

    # ---- serving ---------------------------------------------------------------------

    async def serve(self, host: str | None = None, port: int | None = None, *,
                    task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Listen for clients and REST on one port until cancelled. ``started(port)``."""
        host = host if host is not None else self.config.server.host
        port = port if port is not None else self.config.server.port

        async def _serve(task_status=trio.TASK_STATUS_IGNORED):
            await serve_tcp(self, host, port, limits=self._limits, reuse_port=self.reuse_port,
                            task_status=task_status)

        bound = await self._nursery.start(_serve)
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        if ":" in shown:
            shown = f"[{shown}]"
        self.hubs.endpoint = f"http://{shown}:{bound}"
        task_status.started(bound)

    def serve_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one already-connected stream (an in-process client's end of a memory
        stream pair) in the fabric's nursery. No checkpoint."""
        self._nursery.start_soon(serve_connection, stream, self, self._limits)

    def connection_string(self, endpoint: str | None = None) -> str:
        """The service connection string: for ``endpoint``, else ``[server] public_endpoint``
        when set (REST tokens must name it: an SDK signing for the address we listen on would
        be refused), else the address we listen on."""
        endpoint = (endpoint or self.config.server.public_endpoint or self.endpoint
                    or f"http://{self.config.server.host}:{self.config.server.port}")
        return auth.connection_string(endpoint, self.access_keys[0])

    # ---- HTTP routing (transport.http.Application) -----------------------------------

    async def handle_http(self, request: Request) -> Response:
        if request.raw_path.lstrip("/")[:4] == "api/":
            return await self.ops.rest(request)
        if request.path == "/metrics":
            return await self.ops.metrics(request)
        if self.demo is not None and self.demo.owns(request):
            return await self.demo.handle_http(request)
        if self.default_mode.owns(request):
            return await self.default_mode.handle_http(request)
        if self.socketio_edge.owns(request):
            return await self.socketio_edge.handle_http(request)
        if handshake.client_hub(request) is not None:
            return Response.error(400, "BadRequest", "this endpoint expects a WebSocket upgrade")
        return Response.error(404, "NotFound", f"no such resource: {request.method} {request.raw_path}")

    async def handle_websocket(self, request: Request) -> Response | WebSocketAccept:
        if self.tunnels.owns(request):
            return await self.tunnels.handle_websocket(request)
        if self.default_mode.owns(request):
            return await self.default_mode.handle_websocket(request)
        if self.socketio_edge.owns(request):
            return await self.socketio_edge.handle_websocket(request)
        hub_name = handshake.client_hub(request)
        if hub_name is None:
            return Response.error(404, "NotFound", f"no WebSocket endpoint at {request.raw_path}")
        return await handshake.handle_websocket(self.hubs, hub_name, request)

    # ---- lifecycle -------------------------------------------------------------------

    async def _run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.supervisor.run)
            task_status.started()

    async def aclose(self) -> None:
        """Graceful shutdown: every hub closes its connections (1001), then stops."""
        await self.hubs.aclose()
        await self.supervisor.aclose()
        await self.tunnels.aclose()

    # ---- configuration reload (SIGHUP, --watch-config) ---------------------------------

    async def reload(self, config: FabricConfig) -> ReloadPlan:
        """Run with a freshly loaded configuration; what cannot change while running keeps its
        value (``plan.needs_restart``; docs/design.md "Config reload"). Open connections stay
        open. Checkpoint (a changed hub's webhook client starts)."""
        if not config.server.access_keys:  # a generated key stays (the file names none)
            config = attrs.evolve(config, server=attrs.evolve(config.server, access_keys=self.access_keys))
        old, plan = self.config, plan_reload(self.config, config)
        new = self.config = self.hubs.config = plan.config
        self.hubs.access_keys = new.server.access_keys
        for name, hub in self.hubs.running_hubs().items():
            hub.config, hub.server_config = new.hub(name), new.server
            webhook = self._webhooks.get(name)
            if webhook is not None and old.hub(name).event_handlers == new.hub(name).event_handlers:
                webhook.config, webhook.access_keys = new.hub(name), new.server.access_keys
                webhook.timeout, webhook.max_response_bytes = new.server.upstream_timeout, new.server.max_message_bytes
                continue
            if webhook is None and not new.hub(name).event_handlers:
                continue
            self._webhooks.pop(name, None)
            hub.handler = await self._handler_for(name)  # builds and starts the new client
            if webhook is not None:  # in-flight calls finish on the old client first
                self._nursery.start_soon(self._retire_upstream, name, webhook, new.server.upstream_timeout)
        return plan

    async def _retire_upstream(self, hub: str, handler: WebhookEventHandler, grace: float) -> None:
        await trio.sleep(grace)
        await self.supervisor.stop_child(f"upstream:{hub}:{id(handler):x}")

    def statistics(self) -> dict:
        return {"hubs": self.hubs.statistics(), "supervisor": self.supervisor.statistics(),
                "socketio": self.socketio_edge.statistics(), "tunnels": self.tunnels.statistics(),
                "default_mode": self.default_mode.statistics()}


@asynccontextmanager
async def open_fabric(
    config: FabricConfig | None = None,
    *,
    handlers: Mapping[str, EventHandler] | None = None,
    access_key: str | None = None,
    bus: MemoryBus | None = None,
) -> AsyncIterator[Fabric]:
    """Run a fabric for the duration of the block.

    ``config`` defaults to ``load_config()`` with no file and no environment. If it names
    no access key, ``access_key`` or a random one is used (``fab.access_keys``).

    With ``[broker] url`` the fabric is one node of many: it connects to Redis before
    anything else starts, and a Redis it cannot use (unreachable, refused credentials, too
    old) raises that ``RedisBrokerError`` itself, before any port is bound. ``bus`` gives a
    ``MemoryBus`` shared with other in-process fabrics (tests of several nodes).
    """
    if config is None:
        config = load_config(None, env={})
    if not config.server.access_keys:
        key = access_key or auth.generate_access_key()
        config = attrs.evolve(config, server=attrs.evolve(config.server, access_keys=(key,)))
    redis = None
    if bus is None and config.broker.url:
        bus = redis = redis_bus(config)
    fabric = Fabric(config, handlers, bus=bus)
    start_error: RedisBrokerError | None = None
    gc_before = _tune_gc(config.server.gc_young_threshold)
    try:
        async with trio.open_nursery() as nursery:
            if redis is not None:
                try:
                    await nursery.start(redis.run)
                except RedisBrokerError as exc:
                    start_error = exc
                    raise
            await nursery.start(fabric._run)
            try:
                yield fabric
            finally:
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(config.server.shutdown_timeout + 1):
                        await fabric.aclose()
                    if redis is not None:
                        await redis.aclose()  # after the hubs: their last words still go out
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup:
        if start_error is not None:
            raise start_error from None
        raise
    finally:
        if gc_before is not None:
            gc.set_threshold(*gc_before)


def _tune_gc(young: int) -> tuple[int, ...] | None:
    """Raise the collector's youngest-generation threshold to ``young`` (0: leave it);
    returns the thresholds to restore. No checkpoint. Why: docs/design.md "Garbage
    collection"."""
    if not young:
        return None
    before = gc.get_threshold()
    gc.set_threshold(young, *before[1:])
    return before


def redis_bus(config: FabricConfig) -> RedisBus:
    """The ``RedisBus`` of ``[broker]`` (not yet running). Raises ``RedisURLError``."""
    from fabric.appserver import odata  # filters travel as OData text, compiled on arrival

    broker = config.broker
    return RedisBus(broker.url, node_id=broker.node_id, channel_prefix=broker.channel_prefix,
                    publisher=broker.publisher, node_ttl=broker.node_ttl, **wire_codec(odata.compile_filter))
