"""The Socket.IO edge: which path serves which hub, client tokens, and the running servers.

Paths (Engine.IO attaches by prefix, as Node does; the trailing slash is optional):
- ``/clients/socketio/hubs/{hub}/``: every hub whose ``[hubs.NAME.socketio] enabled`` holds,
  with Azure's client tokens (``access_token`` query or ``Authorization: Bearer``; ``aud`` =
  ``<endpoint>/clients/socketio/hubs/{hub}``; roles, ``webpubsub.group``), or anonymous when
  the hub allows it. A refused handshake is a 401 with Azure's error body.
- ``[socketio] path`` (default ``/socket.io/``): the hub ``[socketio] hub``, no token: the
  app embedding the fabric authenticates in its connect handlers.
- Engine.IO endpoints an app mounts itself (``mount_engine``), e.g. the plain echo endpoint
  of the official Engine.IO suite.

Rules this module keeps:
- One ``Server`` per hub, made on first use; one ``EngineServer`` per path. Their tasks
  (heartbeat ticker, handler nursery) run under the fabric's supervisor and are started
  before the first request they serve is answered.
- Only handshakes are authenticated; later requests of a session are bound by its sid.
- Nothing here decides what Socket.IO or Engine.IO say; it routes to who does.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

import trio

from specs import names
from transport.http import Request, Response, WebSocketAccept

from fabric.config import FabricConfig
from fabric.core import auth
from fabric.core.hubs import HubRegistry
from fabric.socketio.eio_session import EngineConfig
from fabric.socketio.eio_requests import RequestRejected, parse_query, route_request
from fabric.socketio.engine import CorsOptions, EngineApp, EngineServer, rejection
from fabric.socketio.server import Server

log = logging.getLogger(__name__)

__all__ = ["AZURE_PREFIX", "SocketIOEdge", "engine_config"]

AZURE_PREFIX = "/clients/socketio/hubs/"

#: ``start(name, async_fn)``: run ``async_fn(task_status=...)`` as a supervised child; awaited.
Starter = Callable[[str, Callable[..., Awaitable[None]]], Awaitable[Any]]


def engine_config(config: FabricConfig, server_outbox: tuple[int, int] | None = None) -> EngineConfig:
    """The Engine.IO options of ``[socketio]``."""
    s = config.socketio
    return EngineConfig(
        ping_interval_ms=max(1, round(s.ping_interval * 1000)),
        ping_timeout_ms=max(1, round(s.ping_timeout * 1000)),
        upgrade_timeout_ms=max(1, round(s.upgrade_timeout * 1000)),
        max_payload=s.max_http_buffer_size,
        allow_upgrades=s.allow_upgrades,
        transports=tuple(s.transports),
        max_queue_packets=config.server.outbox_max_messages,
        max_queue_bytes=config.server.outbox_max_bytes,
    )


class _Mount:
    __slots__ = ("engine", "hub", "path", "server", "started", "starting")

    def __init__(self, path: str, engine: EngineServer, hub: str | None, server: Server | None) -> None:
        self.path = path
        self.engine = engine
        self.hub = hub
        self.server = server
        self.started = False
        self.starting: trio.Event | None = None


class SocketIOEdge:
    """The fabric's Socket.IO surface (see the module docstring)."""

    def __init__(self, registry: HubRegistry, config: FabricConfig, start: Starter) -> None:
        self.registry = registry
        self.config = config
        self._start = start
        self._servers: dict[str, Server] = {}
        self._server_started: dict[str, trio.Event] = {}
        self._azure: dict[str, _Mount] = {}  # by hub name
        self._plain: _Mount | None = None
        self._mounts: dict[str, _Mount] = {}  # app-mounted Engine.IO endpoints, by path
        path = config.socketio.path
        self._plain_path = path.rstrip("/") if path else None

    # ---- servers -----------------------------------------------------------------------

    def server(self, hub: str | None = None) -> Server:
        """The Socket.IO server of ``hub`` (default: the plain path's hub), made on first
        use. Register handlers on it before clients connect. No checkpoint."""
        name = hub if hub is not None else self.config.socketio.hub
        if not names.is_valid_hub_name(name):
            raise ValueError(f"invalid hub name {name!r}")
        existing = self._servers.get(name) or self._servers.get(self._known(name))
        if existing is not None:
            return existing
        hub_socketio = self.config.hub(name).socketio
        namespaces = hub_socketio.namespaces
        server = Server(
            namespaces="*" if "*" in namespaces else namespaces,
            connection_state_recovery=self.config.socketio.connection_state_recovery or None,
            connect_timeout=self.config.socketio.connect_timeout,
            serverless=hub_socketio.service_mode == "serverless",
        )
        registry = self.registry
        server._bind(lambda: registry.get(name))
        self._servers[name] = server
        return server

    def _known(self, name: str) -> str:
        lower = name.lower()
        return next((n for n in self._servers if n.lower() == lower), name)

    async def _ensure_server(self, hub: str) -> Server:
        server = self.server(hub)
        name = self._known(hub)
        started = self._server_started.get(name)
        if started is None:
            started = self._server_started[name] = trio.Event()
            try:
                await self._start(f"socketio:{name}", server.run)
            finally:
                started.set()
        else:
            await started.wait()
        return server

    def mount_engine(self, path: str, app: EngineApp, config: EngineConfig | None = None, *,
                     cors: CorsOptions | None = None) -> EngineServer:
        """Serve a plain Engine.IO endpoint at ``path`` (prefix match) with ``app``."""
        key = path.rstrip("/") or "/"
        engine = EngineServer(app, config or engine_config(self.config), cors=cors or self._cors(),
                              cookie=self.config.socketio.cookie or None,
                              outbox_max_items=self.config.server.outbox_max_messages,
                              outbox_max_bytes=self.config.server.outbox_max_bytes)
        self._mounts[key] = _Mount(key, engine, None, None)
        return engine

    def _cors(self) -> CorsOptions:
        s = self.config.socketio
        return CorsOptions(s.cors_allowed_origins, s.cors_credentials)

    # ---- routing -----------------------------------------------------------------------

    def _match(self, request: Request) -> tuple[str, str | None] | None:
        """``("azure", hub)``, ``("plain", None)``, ``("mount", path)`` or None."""
        path = request.path
        if path.startswith(AZURE_PREFIX):
            rest = path[len(AZURE_PREFIX):]
            hub = rest.split("/", 1)[0]
            return ("azure", hub)
        plain = self._plain_path
        if plain is not None and (path == plain or path.startswith(plain + "/")):
            return ("plain", None)
        for key in self._mounts:
            if path == key or path.startswith(key.rstrip("/") + "/"):
                return ("mount", key)
        return None

    def owns(self, request: Request) -> bool:
        """Whether this edge serves the request's path."""
        return self._match(request) is not None

    async def _mount_for(self, request: Request) -> tuple[_Mount | None, Response | None]:
        match = self._match(request)
        if match is None:
            return None, Response.error(404, "NotFound", f"no Socket.IO endpoint at {request.raw_path}")
        kind, key = match
        if kind == "mount":
            mount = self._mounts[key]
        elif kind == "plain":
            hub = self.config.socketio.hub
            mount = self._plain
            if mount is None:
                server = self.server(hub)
                engine = self._engine_for(server, identify=None)
                mount = self._plain = _Mount(self._plain_path or "", engine, hub, server)
        else:
            hub = key or ""
            if not names.is_valid_hub_name(hub):
                return None, Response.error(400, "InvalidHubName", f"invalid hub name {hub!r}")
            if not self.config.hub(hub).socketio.enabled:
                return None, Response.error(404, "NotFound", f"Socket.IO is not enabled for hub {hub!r}")
            mount = self._azure.get(hub)
            if mount is None:
                # Nothing is made for a hub until a request could use it: a preflight is
                # answered from the shared CORS settings, a request naming a session finds
                # none (no endpoint of this hub ever ran here), and a handshake must carry a
                # valid token first. Otherwise every unauthenticated request naming a new hub
                # built a Server and an EngineServer that were never freed (fuzz run: 12.5 kB
                # per name, and each new name slower than the last).
                early = self._before_first_mount(hub, request)
                if early is not None:
                    return None, early
                server = self.server(hub)
                engine = self._engine_for(server, identify=self._identify(hub))
                mount = self._azure[hub] = _Mount(AZURE_PREFIX + hub, engine, hub, server)
        await self._ensure_started(mount)
        return mount, None

    def _before_first_mount(self, hub: str, request: Request) -> Response | None:
        """The answer to a request on a per-hub endpoint that does not exist yet, when it
        must not create it; None when it may (a handshake with a valid token). The same
        answers the endpoint would give: a preflight from the shared CORS settings, a request
        naming a session (or any other non-handshake) the engine's rejection, as no session
        can exist, and a handshake the token check that precedes the engine. No checkpoint."""
        cors = self._cors()
        if request.method == "OPTIONS" and cors.origins:
            return cors.preflight(request)
        if request.method == "OPTIONS" or request.query_one("sid"):
            upgrade = (request.header("upgrade") or "").lower() == "websocket"
            try:
                route_request(method=request.method, query=parse_query(request.target.partition("?")[2]),
                              upgrade=upgrade, lookup=lambda sid: None, origin=request.header("origin"),
                              transports=engine_config(self.config).transports)
            except RequestRejected as exc:
                return rejection(cors, request, exc)
            return None  # (not reached: without a session, these are all rejected)
        try:
            self._verify(hub, request)
        except auth.TokenError as exc:
            return Response.error(exc.status, exc.code, str(exc))
        return None

    def _engine_for(self, server: Server, identify: Any) -> EngineServer:
        return EngineServer(server.engine_app(identify), engine_config(self.config), cors=self._cors(),
                            cookie=self.config.socketio.cookie or None,
                            outbox_max_items=self.config.server.outbox_max_messages,
                            outbox_max_bytes=self.config.server.outbox_max_bytes)

    async def _ensure_started(self, mount: _Mount) -> None:
        if mount.started:
            return
        if mount.starting is not None:
            await mount.starting.wait()
            return
        mount.starting = trio.Event()
        try:
            if mount.hub is not None:
                await self._ensure_server(mount.hub)
            await self._start(f"engineio:{mount.path}", mount.engine.run)
            mount.started = True
        finally:
            mount.starting.set()
            mount.starting = None

    # ---- authentication (the per-hub endpoint) -----------------------------------------

    def _identify(self, hub: str) -> Callable[[Request], Any]:
        def identify(request: Request) -> tuple:
            identity = self._verify(hub, request)
            return identity.user_id, identity.roles, identity.groups, identity

        return identify

    def _verify(self, hub: str, request: Request) -> auth.ClientIdentity:
        """The handshake's identity; raises ``auth.TokenError``."""
        token = request.query_one("access_token")
        authorization = request.header("authorization")
        if token is None and authorization and authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
        if token is None and self.config.hub(hub).anonymous_connect:
            return auth.ClientIdentity(user_id=None, roles=(), groups=(), claims={}, expires_at=None)
        return auth.verify_client_token(
            token, keys=self.registry.access_keys, hub=hub, client_path_prefixes=(AZURE_PREFIX,),
            public_endpoint=self.config.server.public_endpoint)

    def _refusal(self, mount: _Mount, request: Request) -> Response | None:
        """401 for a handshake on a per-hub endpoint without a valid token."""
        if mount.hub is None or mount is self._plain or request.query_one("sid"):
            return None
        try:
            self._verify(mount.hub, request)
        except auth.TokenError as exc:
            return Response.error(exc.status, exc.code, str(exc))
        return None

    # ---- the HTTP front's entry points -------------------------------------------------

    def body_limit(self, request: Request) -> int | None:
        """``transport.http``'s per-request body bound for our paths: Engine.IO's
        ``max_http_buffer_size`` where it is below the front's limit (its 413 keeps the
        session). No checkpoint."""
        if request.method != "POST":
            return None
        match = self._match(request)
        if match is None:
            return None
        if match[0] == "mount":
            return self._mounts[match[1]].engine.body_limit(request)
        return self.config.socketio.max_http_buffer_size

    async def handle_http(self, request: Request) -> Response:
        """A polling request (or CORS preflight) for one of our paths. Checkpoint."""
        mount, error = await self._mount_for(request)
        if mount is None:
            return error  # type: ignore[return-value]
        if request.method != "OPTIONS":
            refused = self._refusal(mount, request)
            if refused is not None:
                return refused
        return await mount.engine.handle_http(request)

    async def handle_websocket(self, request: Request) -> Response | WebSocketAccept:
        """A WebSocket upgrade for one of our paths. Checkpoint."""
        mount, error = await self._mount_for(request)
        if mount is None:
            return error  # type: ignore[return-value]
        refused = self._refusal(mount, request)
        if refused is not None:
            return refused
        return await mount.engine.handle_websocket(request)

    def statistics(self) -> dict:
        mounts = [*self._azure.values(), *self._mounts.values(), *([self._plain] if self._plain else [])]
        return {
            "servers": {name: s.statistics() for name, s in self._servers.items()},
            "endpoints": {m.path: m.engine.statistics() for m in mounts},
        }
