"""What the fabric shows its operators over HTTP: ``GET /metrics`` and the REST access log.

Composition, like ``fabric.app``: it reads each part's own counting objects and
``statistics()`` (hubs through ``fabric.core.telemetry``, webhook clients, the Socket.IO
edge) into one ``fabric.core.metrics.Exposition``; the rules of counting and rendering live
in ``fabric.core.metrics``.

Rules this module keeps:
- ``/metrics`` answers 404 when ``[metrics] enabled = false``, 401 without the configured
  bearer token (compared in constant time), 405 for anything but GET and HEAD.
- Scrapes share renderings (``metrics.Scraper``): a flood costs one rendering per interval.
- A REST access line has the method, the path (never the query: SDKs put no secret there
  but clients' URLs do), the operation, the status and the duration; never a header or body.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import TYPE_CHECKING

from transport.http import Request, Response

from fabric.appserver import rest
from fabric.appserver.tunnel import TUNNEL_COUNTERS
from fabric.core.counters import WEBHOOK_COUNTERS
from fabric.core.logs import fields
from fabric.core.metrics import (
    CONTENT_TYPE, FAMILIES, Exposition, Scraper, Yielder, counter, counter_families, histogram,
)
from fabric.core.telemetry import collect_bus, collect_hub
from fabric.socketio.server import SOCKETIO_COUNTERS
from fabric.socketio.tunnelled import TUNNELLED_COUNTERS

if TYPE_CHECKING:
    from fabric.app import Fabric

access_log = logging.getLogger("fabric.access")

WEBHOOK_FAMILIES = counter_families("fabric_upstream_", WEBHOOK_COUNTERS)
SOCKETIO_FAMILIES = counter_families("fabric_socketio_", SOCKETIO_COUNTERS)
#: The server tunnel's counters (fabric-wide: a tunnel's hub is the app's business).
TUNNEL_FAMILIES = counter_families("fabric_tunnel_", TUNNEL_COUNTERS, ())
#: Web PubSub for Socket.IO's default mode (clients served by app servers through tunnels).
DEFAULT_MODE_FAMILIES = counter_families("fabric_socketio_default_", TUNNELLED_COUNTERS, ())


class Operations:
    """The fabric's ``/metrics`` endpoint and REST accounting. Create with the Fabric."""

    def __init__(self, fabric: "Fabric") -> None:
        self.fabric = fabric
        self.rest_requests = counter("fabric_rest_requests_total")
        self.rest_seconds = histogram("fabric_rest_request_seconds")
        self.scraper = Scraper(self.collect, fabric.config.metrics.min_interval)

    # ---- REST ------------------------------------------------------------------------

    async def rest(self, request: Request) -> Response:
        """``rest.handle`` counted, timed and logged. Checkpoint."""
        started = time.perf_counter()
        try:
            operation = rest.route(request.method, request.raw_path)[0].name
        except rest.HttpError:
            operation = "unknown"
        response = await rest.handle(self.fabric.hubs, request)
        elapsed = time.perf_counter() - started
        self.rest_requests.inc((operation, str(response.status)))
        self.rest_seconds.observe((operation,), elapsed)
        access_log.info("%s %s %d", request.method, request.path[:200], response.status, extra=fields(
            event="rest", method=request.method, path=request.path[:200], operation=operation,
            status=response.status, duration_ms=round(elapsed * 1000, 2)))
        return response

    # ---- /metrics --------------------------------------------------------------------

    async def metrics(self, request: Request) -> Response:
        """Answer ``/metrics``. Checkpoint."""
        config = self.fabric.config.metrics
        if not config.enabled:
            return Response.error(404, "NotFound", "metrics are disabled ([metrics] enabled = false)")
        if request.method not in ("GET", "HEAD"):
            return Response.error(405, "MethodNotAllowed", f"{request.method} is not allowed here; use GET",
                                  (("allow", "GET, HEAD"),))
        if config.token is not None:
            header = request.header("authorization") or ""
            given = header[7:].strip() if header[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(given.encode(), config.token.encode()):
                return Response.error(401, "Unauthorized", "a valid bearer token is required for /metrics",
                                      (("www-authenticate", 'Bearer realm="metrics"'),))
        self.scraper.min_interval = config.min_interval
        body = await self.scraper.scrape()
        return Response(200, body, (("content-type", CONTENT_TYPE), ("cache-control", "no-store")))

    async def collect(self, exposition: Exposition, yielder: Yielder) -> None:
        """Every part's metrics into one exposition. Checkpoint (every ``CHUNK`` members)."""
        fabric = self.fabric
        for fam in ("fabric_connections", "fabric_publications_total", "fabric_deliveries_total"):
            exposition.declare(FAMILIES[fam])
        for hub in list(fabric.running_hubs().values()):
            await collect_hub(exposition, hub, yielder)
            webhook = fabric.webhook(hub.name)
            if webhook is not None:
                h = (hub.name,)
                exposition.add_counters(WEBHOOK_FAMILIES, webhook.counters.as_dict(), h)
                exposition.add_counter(webhook.calls)
                exposition.add_histogram(webhook.call_seconds)
                stats = webhook.statistics()
                exposition.sample(FAMILIES["fabric_upstream_queued_notifications"], h, stats["queued_notifications"])
                exposition.sample(FAMILIES["fabric_upstream_in_flight"], h, stats["in_flight"])
        collect_bus(exposition, fabric.running_hubs())
        exposition.add_counter(self.rest_requests)
        exposition.add_histogram(self.rest_seconds)
        exposition.add_counters(TUNNEL_FAMILIES, fabric.tunnels.counters.as_dict(), ())
        exposition.add_counters(DEFAULT_MODE_FAMILIES, fabric.default_mode.counters.as_dict(), ())
        socketio = fabric.socketio_edge.statistics()
        for hub, stats in socketio.get("servers", {}).items():
            exposition.sample(FAMILIES["fabric_socketio_sockets"], (hub,), stats.get("sockets", 0))
            exposition.add_counters(SOCKETIO_FAMILIES, stats.get("counters", {}), (hub,))
        for path, stats in socketio.get("endpoints", {}).items():
            exposition.sample(FAMILIES["fabric_socketio_sessions"], (path,), stats.get("sessions", 0))
            exposition.sample(FAMILIES["fabric_socketio_slow_consumers_closed_total"], (path,),
                              stats.get("slow_consumers_closed", 0))
