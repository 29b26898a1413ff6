"""What a hub tells its operators: a log line per connection opened and closed, and the
counts ``/metrics`` reads (``fabric.core.metrics``).

Rules this module keeps:
- Per connection, work happens at open and close only: a log line, counts by protocol and
  close reason, and the open time for the duration (one dict entry per open connection).
- Per publication, never per recipient: publications, deliveries and payload bytes by
  target kind. The delivery loop only decrements a local for the recipients it skips, so
  counting costs nothing per delivery; with ``[metrics] enabled = false`` (``counting``
  false) not even that.
- Labels come from bounded sets: protocol names, target kinds, close-code classes.
- Gauges (connections, outbox and mailbox depths, messages received on open connections)
  are read from the hub and its members at scrape time, with a checkpoint every
  ``metrics.CHUNK`` members: a member's optional ``received`` count and ``ws`` transport
  (``outbox``, ``bytes_received``), the values its ``statistics()`` reports, read directly
  because building ``statistics()`` per member is 20x dearer.
- A log line never carries a token, a key or a message body: ids, hub, user, protocol,
  duration, close code and the server's own reason text (truncated).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from fabric.core import logs
from fabric.core.counters import HUB_COUNTERS
from fabric.core.metrics import FAMILIES, Exposition, Yielder, counter, counter_families

if TYPE_CHECKING:
    from fabric.core.hub import Hub

log = logging.getLogger("fabric.connections")

HUB_COUNTER_FAMILIES = counter_families("fabric_hub_", HUB_COUNTERS)
KINDS = ("group", "hub", "user", "connection")
_REASON_CHARS = 200

_PROTOCOLS = {
    "json.webpubsub.azure.v1": "json",
    "json.reliable.webpubsub.azure.v1": "json.reliable",
    "protobuf.webpubsub.azure.v1": "protobuf",
    "protobuf.reliable.webpubsub.azure.v1": "protobuf.reliable",
    "socket.io": "socket.io",
    None: "simple",
    "": "simple",
}
#: RFC 6455 section 7.4.1 codes a connection may end with; anything else is "other", an
#: application code (3000-4999) is "app".
_CODES = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011}


def protocol_label(member: Any) -> str:
    """The short protocol name of a member (``json``, ``protobuf.reliable``, ``simple``,
    ``socket.io``...), from its context's subprotocol."""
    try:
        subprotocol = member.context.subprotocol
    except Exception:
        return "other"
    return _PROTOCOLS.get(subprotocol, "other")


def close_label(stats: dict) -> str:
    """A bounded close-reason label from a member's ``statistics()`` at close."""
    reason = stats.get("close_reason")
    if isinstance(reason, str) and reason:  # Socket.IO: one of socket.io's disconnect reasons
        return reason.replace(" ", "_")[:40]
    transport = stats.get("transport")
    if not isinstance(transport, dict):
        return "other"
    if transport.get("detached"):
        return "session_expired"
    code = transport.get("close_code")
    if code is None or code == 1006:
        return "lost"
    if code in _CODES:
        return str(code)
    if isinstance(code, int) and 3000 <= code <= 4999:
        return "app"
    return "other"


class Fanout:
    """Publications and deliveries of one hub by target kind (see the module's rules)."""

    __slots__ = ("publications", "published_bytes", "deliveries", "delivered_bytes", "_keys")

    def __init__(self, hub: str) -> None:
        self.publications = counter("fabric_publications_total")
        self.published_bytes = counter("fabric_published_bytes_total")
        self.deliveries = counter("fabric_deliveries_total")
        self.delivered_bytes = counter("fabric_delivered_bytes_total")
        self._keys = {kind: (hub, kind) for kind in KINDS}

    def published(self, kind: str, publication: Any) -> None:
        key = self._keys[kind]
        self.publications.inc(key)
        self.published_bytes.inc(key, _size(publication))

    def delivered(self, kind: str, publication: Any, recipients: int) -> None:
        if recipients:
            key = self._keys[kind]
            self.deliveries.inc(key, recipients)
            self.delivered_bytes.inc(key, recipients * _size(publication))


def _size(publication: Any) -> int:
    payload = publication.payload
    return len(payload.body) if payload is not None else 0


class HubTelemetry:
    """A hub's connection log and counts. ``fanout`` is None while counting is off."""

    def __init__(self, hub: str, *, counting: bool = True) -> None:
        self.hub = hub
        self.opened = counter("fabric_connections_opened_total")
        self.closed = counter("fabric_connections_closed_total")
        #: Messages and bytes received by connections that closed (open ones are read live).
        self.received = counter("fabric_client_messages_received_total")
        self.bytes_received = counter("fabric_client_bytes_received_total")
        self.open_by_protocol: dict[str, int] = {}
        self._since: dict[str, tuple[float, str]] = {}
        self.fanout: Fanout | None = None
        self.counting = counting

    @property
    def counting(self) -> bool:
        return self.fanout is not None

    @counting.setter
    def counting(self, value: bool) -> None:
        if value and self.fanout is None:
            self.fanout = Fanout(self.hub)
        elif not value:
            self.fanout = None

    # ---- per publication (the hub's routing calls these) -----------------------------

    def published(self, kind: str, publication: Any) -> None:
        fanout = self.fanout
        if fanout is not None:
            fanout.published(kind, publication)

    def delivered(self, kind: str, publication: Any, recipients: int) -> None:
        fanout = self.fanout
        if fanout is not None:
            fanout.delivered(kind, publication, recipients)

    # ---- per connection ---------------------------------------------------------------

    def connection_opened(self, member: Any) -> None:
        protocol = protocol_label(member)
        cid = member.connection_id
        self._since[cid] = (time.monotonic(), protocol)
        self.open_by_protocol[protocol] = self.open_by_protocol.get(protocol, 0) + 1
        self.opened.inc((self.hub, protocol))
        logs.emit(log, logging.INFO, "connection opened", event="connection.open", connection_id=cid, hub=self.hub,
                  user=member.user_id, protocol=protocol)

    def connection_closed(self, member: Any, reason: str | None = None) -> None:
        cid = member.connection_id
        since = self._since.pop(cid, None)
        if since is None:  # not registered through connection_opened (or closed twice)
            return
        opened_at, protocol = since
        left = self.open_by_protocol.get(protocol, 0) - 1
        if left > 0:
            self.open_by_protocol[protocol] = left
        else:
            self.open_by_protocol.pop(protocol, None)
        try:
            stats = member.statistics()
        except Exception:
            stats = {}
        code = close_label(stats)
        labels = (self.hub, protocol)
        self.closed.inc((self.hub, protocol, code))
        received = stats.get("received")
        if isinstance(received, int):
            self.received.inc(labels, received)
        transport = stats.get("transport")
        if isinstance(transport, dict) and isinstance(transport.get("bytes_received"), int):
            self.bytes_received.inc(labels, transport["bytes_received"])
        text = reason if reason is not None else stats.get("close_reason")
        logs.emit(log, logging.INFO, "connection closed", event="connection.close", connection_id=cid, hub=self.hub,
                  user=member.user_id, protocol=protocol, duration_s=round(time.monotonic() - opened_at, 3), code=code,
                  reason=text[:_REASON_CHARS] if isinstance(text, str) else None)

    def forget_all(self) -> None:
        """The hub restarted from an empty registry."""
        self._since.clear()
        self.open_by_protocol.clear()


async def collect_hub(exposition: Exposition, hub: "Hub", yielder: Yielder) -> None:
    """Everything one hub shows on ``/metrics``. Checkpoint (every ``CHUNK`` members)."""
    name = hub.name
    telemetry = hub.telemetry
    h = (name,)
    exposition.declare(FAMILIES["fabric_connections"])
    for protocol, n in telemetry.open_by_protocol.items():
        exposition.sample(FAMILIES["fabric_connections"], (name, protocol), n)
    exposition.sample(FAMILIES["fabric_users"], h, len(hub.users))
    exposition.sample(FAMILIES["fabric_groups"], h, len(hub.groups))
    for series in (telemetry.opened, telemetry.closed, telemetry.received, telemetry.bytes_received):
        exposition.add_counter(series)
    fanout = telemetry.fanout
    if fanout is not None:
        for series in (fanout.publications, fanout.published_bytes, fanout.deliveries, fanout.delivered_bytes):
            exposition.add_counter(series)
    exposition.add_counters(HUB_COUNTER_FAMILIES, hub.counters.as_dict(), h)
    broker = hub.broker.statistics()
    kind = broker.get("kind") if broker.get("kind") in ("memory", "redis") else "other"
    for fam, key in (("fabric_broker_published_total", "published"), ("fabric_broker_received_total", "delivered")):
        if isinstance(broker.get(key), int):
            exposition.sample(FAMILIES[fam], (name, kind), broker[key])
    mailbox = 0
    for local in list(hub.groups.values()):
        handle = local.handle
        ref = getattr(handle, "ref", None)
        if ref is not None:
            try:
                mailbox += ref.statistics().mailbox_used
            except Exception:
                pass
        await yielder.tick()
    exposition.sample(FAMILIES["fabric_mailbox_queued"], h, mailbox)
    queued = queued_bytes = largest = 0
    received = FAMILIES["fabric_client_messages_received_total"]
    bytes_received = FAMILIES["fabric_client_bytes_received_total"]
    since = telemetry._since
    live_received: dict[tuple[str, str], int] = {}
    live_bytes: dict[tuple[str, str], int] = {}
    for member in list(hub.connections.values()):
        # The values statistics() reports, read directly: building statistics() for every
        # member cost 24 us each on this machine (40 ms a scrape at N=1000).
        await yielder.tick()
        count = getattr(member, "received", None)
        ws = getattr(member, "ws", None)
        if count is None and ws is None:
            continue
        entry = since.get(member.connection_id)
        labels = (name, entry[1] if entry is not None else protocol_label(member))
        if type(count) is int:
            live_received[labels] = live_received.get(labels, 0) + count
        got = getattr(ws, "bytes_received", None)
        if type(got) is int:
            live_bytes[labels] = live_bytes.get(labels, 0) + got
        outbox = getattr(ws, "outbox", None)
        if outbox is not None:
            queued += len(outbox)
            size = outbox.queued_bytes
            queued_bytes += size
            if size > largest:
                largest = size
    for labels, value in live_received.items():
        exposition.sample(received, labels, value)
    for labels, value in live_bytes.items():
        exposition.sample(bytes_received, labels, value)
    exposition.sample(FAMILIES["fabric_outbox_queued_messages"], h, queued)
    exposition.sample(FAMILIES["fabric_outbox_queued_bytes"], h, queued_bytes)
    exposition.sample(FAMILIES["fabric_outbox_queued_bytes_max"], h, largest)


def summary(hubs: dict[str, "Hub"]) -> dict[str, dict[str, int]]:
    """``{hub: {"connections", "publications", "deliveries"}}`` from the same counters
    ``/metrics`` shows (the demos' status page computes rates from two of these)."""
    out = {}
    for name, hub in hubs.items():
        fanout = hub.telemetry.fanout
        out[name] = {
            "connections": len(hub.connections),
            "publications": sum(fanout.publications.values.values()) if fanout is not None else 0,
            "deliveries": sum(fanout.deliveries.values.values()) if fanout is not None else 0,
        }
    return out


_BUS_FAMILIES = (("fabric_broker_pending", "pending"), ("fabric_broker_pending_bytes", "pending_bytes"),
                 ("fabric_broker_reconnects_total", "reconnects"), ("fabric_broker_gaps_total", "gaps"),
                 ("fabric_broker_gap_seconds_total", "gap_seconds"), ("fabric_broker_failed_total", "failed"),
                 ("fabric_broker_dropped_total", "dropped"))


def collect_bus(exposition: Exposition, hubs: dict[str, "Hub"]) -> None:
    """The process-wide Redis bus (every hub's broker shares it): read once, from any hub."""
    for hub in hubs.values():
        stats = hub.broker.statistics()
        if stats.get("kind") != "redis":
            return
        for fam, key in _BUS_FAMILIES:
            value = stats.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                exposition.sample(FAMILIES[fam], (), value)
        return
