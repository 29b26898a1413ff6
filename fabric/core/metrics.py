"""Metrics: declared families, the counting objects components own, and the Prometheus text
exposition rendered from them at scrape time.

Rules this module keeps:
- Every family is declared with a name, a type, a help text and its label names: the
  families of this module's ``FAMILIES`` catalogue, and those made from the counter
  catalogues (``counter_families``). Counting into an undeclared family, or with the wrong
  number of labels, is an error; rendering never invents a family.
- A component owns its counting objects (``LabeledCounter``, ``LabeledHistogram``) like it
  owns its ``Counters``; nothing is global, so two fabrics in one process never mix. The
  exposition reads them, and gauges (connection counts, queue depths) straight from the
  components' state, only when someone scrapes.
- Counting is a dict update, done per publication or per request, never per recipient.
- Bounded: at most ``MAX_SERIES`` label sets per family; later label sets are folded into
  one series whose every label is ``OVERFLOW`` (and counted), so an attacker choosing hub or
  event names cannot grow memory or a scrape without limit.
- A scrape flood costs at most one rendering per ``Scraper.min_interval`` (or per ten times
  the last rendering's duration, whichever is longer); concurrent scrapes wait for the one
  rendering in progress; collection checkpoints every ``CHUNK`` connections so a large
  fabric's scrape never holds the event loop.

The text format is Prometheus' exposition format 0.0.4
(https://prometheus.io/docs/instrumenting/exposition_formats/).
"""

from __future__ import annotations

import bisect
import math
import time
from typing import Awaitable, Callable, Iterable, Sequence

import attrs
import trio

from fabric.core.counters import CounterSpec

MAX_SERIES = 2000
OVERFLOW = "_other"
CHUNK = 500
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Latency buckets in seconds (REST requests and upstream calls).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


@attrs.frozen
class Family:
    """One declared metric family."""

    name: str
    type: str  # "counter", "gauge" or "histogram"
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()

    def __attrs_post_init__(self) -> None:
        if self.type not in ("counter", "gauge", "histogram"):
            raise ValueError(f"unknown metric type {self.type!r}")
        if self.type == "counter" and not self.name.endswith("_total"):
            raise ValueError(f"counter {self.name!r} must end in _total")
        if self.type == "histogram" and list(self.buckets) != sorted(set(self.buckets)):
            raise ValueError(f"histogram {self.name!r} needs strictly increasing buckets")


def _catalogue(*families: Family) -> dict[str, Family]:
    out: dict[str, Family] = {}
    for family in families:
        if family.name in out:
            raise ValueError(f"family {family.name!r} declared twice")
        out[family.name] = family
    return out


_H = ("hub",)

#: The families this module declares (the counter catalogues add theirs: ``counter_families``).
FAMILIES = _catalogue(
    Family("fabric_connections", "gauge", "Open connections (a detached reliable session counts).",
           ("hub", "protocol")),
    Family("fabric_connections_opened_total", "counter", "Connections registered with a hub.", ("hub", "protocol")),
    Family("fabric_connections_closed_total", "counter",
           "Connections removed from a hub, by how they closed (the close code, 'lost' for no close "
           "frame, or the Socket.IO disconnect reason).", ("hub", "protocol", "reason")),
    Family("fabric_users", "gauge", "Users with at least one connection.", _H),
    Family("fabric_groups", "gauge", "Groups with at least one local member.", _H),
    Family("fabric_client_messages_received_total", "counter",
           "Messages received from clients (counted per connection; Socket.IO: fabric_socketio_events_total).",
           ("hub", "protocol")),
    Family("fabric_client_bytes_received_total", "counter", "Bytes received from clients' WebSockets.",
           ("hub", "protocol")),
    Family("fabric_publications_total", "counter",
           "Messages published into a hub, by target kind (group, hub, user, connection).", ("hub", "kind")),
    Family("fabric_published_bytes_total", "counter", "Payload bytes published into a hub, by target kind.",
           ("hub", "kind")),
    Family("fabric_deliveries_total", "counter",
           "Publications handed to a recipient's queue, by target kind (counted once per publication; a "
           "message dropped for a slow consumer is in fabric_hub_lagged_total).", ("hub", "kind")),
    Family("fabric_delivered_bytes_total", "counter",
           "Payload bytes handed to recipients' queues (payload size times recipients).", ("hub", "kind")),
    Family("fabric_outbox_queued_messages", "gauge", "Frames waiting in connections' outboxes (read at scrape).", _H),
    Family("fabric_outbox_queued_bytes", "gauge", "Bytes waiting in connections' outboxes (read at scrape).", _H),
    Family("fabric_outbox_queued_bytes_max", "gauge", "The largest outbox backlog in bytes (read at scrape).", _H),
    Family("fabric_mailbox_queued", "gauge",
           "Messages waiting in a hub's actor mailboxes (group actors, notifier), read at scrape.", _H),
    Family("fabric_rest_requests_total", "counter", "REST requests, by operation and status.",
           ("operation", "status")),
    Family("fabric_rest_request_seconds", "histogram", "REST request latency, by operation.", ("operation",),
           LATENCY_BUCKETS),
    Family("fabric_upstream_calls_total", "counter",
           "Upstream event-handler calls, by event (system event name, or 'user') and outcome (HTTP status "
           "class, or the failure).", ("hub", "event", "outcome")),
    Family("fabric_upstream_call_seconds", "histogram", "Upstream event-handler call latency, by event.",
           ("hub", "event"), LATENCY_BUCKETS),
    Family("fabric_upstream_queued_notifications", "gauge", "Notifications waiting for an upstream worker.", _H),
    Family("fabric_upstream_in_flight", "gauge", "Upstream requests in flight.", _H),
    Family("fabric_socketio_sockets", "gauge", "Socket.IO sockets (namespace connections).", _H),
    Family("fabric_socketio_sessions", "gauge", "Engine.IO sessions, by endpoint path.", ("path",)),
    Family("fabric_socketio_slow_consumers_closed_total", "counter",
           "Engine.IO sessions closed as slow consumers, by endpoint path.", ("path",)),
    Family("fabric_broker_published_total", "counter", "Publications this node sent to the broker, by broker kind.",
           ("hub", "broker")),
    Family("fabric_broker_received_total", "counter",
           "Publications the broker handed to this node, by broker kind.", ("hub", "broker")),
    Family("fabric_broker_pending", "gauge", "Publications waiting to be written to Redis (the publisher's lag)."),
    Family("fabric_broker_pending_bytes", "gauge", "Bytes waiting to be written to Redis."),
    Family("fabric_broker_reconnects_total", "counter", "Reconnections to Redis."),
    Family("fabric_broker_gaps_total", "counter", "Times the Redis subscription was down (messages may be lost meanwhile)."),
    Family("fabric_broker_gap_seconds_total", "counter", "Seconds the Redis subscription was down."),
    Family("fabric_broker_failed_total", "counter", "Publications the Redis broker could not send."),
    Family("fabric_broker_dropped_total", "counter", "Publications the Redis broker dropped (queue full, stopped)."),
    Family("fabric_metrics_series_overflow_total", "counter",
           "Samples folded into an '_other' series because a family reached its series bound.", ("family",)),
    Family("fabric_metrics_render_seconds", "gauge",
           "CPU-bound seconds this scrape's collection took (excluding other tasks run at its checkpoints)."),
)


def counter_families(prefix: str, catalogue: Iterable[CounterSpec], labels: tuple[str, ...] = _H,
                     ) -> dict[str, Family]:
    """A counter family ``{prefix}{name}_total`` per declared counter, with its help text."""
    return {spec.name: Family(f"{prefix}{spec.name}_total", "counter", spec.help, labels) for spec in catalogue}


# ---- counting -------------------------------------------------------------------------------


class _Series:
    """Bounded label sets of one family (see the module's rules)."""

    __slots__ = ("family", "values", "overflowed")

    def __init__(self, family: Family) -> None:
        self.family = family
        self.values: dict[tuple[str, ...], object] = {}
        self.overflowed = 0

    def _key(self, labels: tuple[str, ...]) -> tuple[str, ...]:
        if len(labels) != len(self.family.labels):
            raise ValueError(f"{self.family.name} takes labels {self.family.labels}, got {labels!r}")
        if labels in self.values or len(self.values) < MAX_SERIES:
            return labels
        self.overflowed += 1
        return (OVERFLOW,) * len(labels)


class LabeledCounter(_Series):
    """A counter family's values by label set. ``inc`` costs a dict update."""

    __slots__ = ()

    def __init__(self, family: Family) -> None:
        if family.type != "counter":
            raise ValueError(f"{family.name} is a {family.type}, not a counter")
        super().__init__(family)

    def inc(self, labels: tuple[str, ...], amount: int | float = 1) -> None:
        values = self.values
        try:
            values[labels] += amount
        except KeyError:
            key = self._key(labels)
            values[key] = values.get(key, 0) + amount

    def get(self, labels: tuple[str, ...]) -> int | float:
        return self.values.get(labels, 0)


class LabeledHistogram(_Series):
    """A histogram family by label set: per-bucket counts, sum and count."""

    __slots__ = ()

    def __init__(self, family: Family) -> None:
        if family.type != "histogram":
            raise ValueError(f"{family.name} is a {family.type}, not a histogram")
        super().__init__(family)

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        state = self.values.get(labels)
        if state is None:
            key = self._key(labels)
            state = self.values.get(key)
            if state is None:
                state = self.values[key] = [0] * (len(self.family.buckets) + 1) + [0.0]
        state[bisect.bisect_left(self.family.buckets, value)] += 1
        state[-1] += value

    def count(self, labels: tuple[str, ...]) -> int:
        state = self.values.get(labels)
        return 0 if state is None else sum(state[:-1])


def family(name: str) -> Family:
    """A family declared in ``FAMILIES`` (KeyError names the typo)."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"{name!r} is not a declared metric family") from None


def counter(name: str) -> LabeledCounter:
    return LabeledCounter(family(name))


def histogram(name: str) -> LabeledHistogram:
    return LabeledHistogram(family(name))


# ---- exposition ------------------------------------------------------------------------------


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: int | float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape_label(str(v))}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class Exposition:
    """One scrape's samples, grouped by family, rendered in declaration order."""

    def __init__(self) -> None:
        self._families: dict[str, Family] = {}
        self._samples: dict[str, dict[tuple[str, ...], object]] = {}

    def _bucket(self, fam: Family) -> dict[tuple[str, ...], object]:
        known = self._families.get(fam.name)
        if known is None:
            self._families[fam.name] = fam
            bucket = self._samples[fam.name] = {}
            return bucket
        if known != fam:
            raise ValueError(f"two different families named {fam.name!r}")
        return self._samples[fam.name]

    def declare(self, fam: Family) -> None:
        """Show a family (HELP and TYPE) even when it has no sample yet."""
        self._bucket(fam)

    def sample(self, fam: Family, labels: tuple[str, ...], value: int | float) -> None:
        """Add to a counter or gauge sample (samples with the same labels add up)."""
        if len(labels) != len(fam.labels):
            raise ValueError(f"{fam.name} takes labels {fam.labels}, got {labels!r}")
        bucket = self._bucket(fam)
        bucket[labels] = bucket.get(labels, 0) + value

    def add_counter(self, series: LabeledCounter, prefix: tuple[str, ...] = ()) -> None:
        """Every label set of a counter, its labels after ``prefix`` (e.g. the hub)."""
        fam = series.family
        bucket = self._bucket(fam)
        self._overflow(series)
        for labels, value in series.values.items():
            key = prefix + labels
            bucket[key] = bucket.get(key, 0) + value

    def add_histogram(self, series: LabeledHistogram, prefix: tuple[str, ...] = ()) -> None:
        fam = series.family
        bucket = self._bucket(fam)
        self._overflow(series)
        for labels, state in series.values.items():
            key = prefix + labels
            mine = bucket.get(key)
            if mine is None:
                bucket[key] = list(state)
            else:
                for i, v in enumerate(state):
                    mine[i] += v

    def _overflow(self, series: _Series) -> None:
        if series.overflowed:
            self.sample(FAMILIES["fabric_metrics_series_overflow_total"], (series.family.name,), series.overflowed)

    def add_counters(self, families: dict[str, Family], values: dict[str, int], labels: tuple[str, ...]) -> None:
        """A ``Counters.as_dict()`` through its catalogue's families (undeclared names are skipped)."""
        for name, value in values.items():
            fam = families.get(name)
            if fam is not None:
                self.sample(fam, labels, value)

    def render(self) -> bytes:
        lines: list[str] = []
        for name, fam in self._families.items():
            lines.append(f"# HELP {name} {_escape_help(fam.help)}")
            lines.append(f"# TYPE {name} {fam.type}")
            samples = self._samples[name]
            for labels in sorted(samples, key=lambda k: tuple(map(str, k))):
                value = samples[labels]
                if fam.type != "histogram":
                    lines.append(f"{name}{_labels(fam.labels, labels)} {_number(value)}")
                    continue
                cumulative = 0
                for bound, n in zip((*fam.buckets, math.inf), value[:-1]):
                    cumulative += n
                    le = 'le="' + ("+Inf" if math.isinf(bound) else _number(float(bound))) + '"'
                    lines.append(f"{name}_bucket{_labels(fam.labels, labels, le)} {cumulative}")
                lines.append(f"{name}_sum{_labels(fam.labels, labels)} {_number(float(value[-1]))}")
                lines.append(f"{name}_count{_labels(fam.labels, labels)} {cumulative}")
        lines.append("")
        return "\n".join(lines).encode("utf-8")


Collector = Callable[[Exposition, "Yielder"], Awaitable[None]]


class Scraper:
    """Shares renderings between scrapes (see the module's rules). ``collect`` fills an
    ``Exposition``; it may checkpoint (``maybe_yield``)."""

    def __init__(self, collect: Collector, min_interval: float = 1.0) -> None:
        self._collect = collect
        self.min_interval = min_interval
        self._last: bytes | None = None
        self._last_at = -math.inf
        self._last_duration = 0.0
        self._running: trio.Event | None = None
        self.renders = 0
        self.served = 0

    async def scrape(self) -> bytes:
        """The exposition text, fresh or shared. Checkpoint."""
        self.served += 1
        while True:
            now = trio.current_time()
            if self._last is not None and now - self._last_at < max(self.min_interval, 10 * self._last_duration):
                await trio.lowlevel.checkpoint()
                return self._last
            running = self._running
            if running is None:
                break
            await running.wait()
            if self._last is not None and self._last_at >= now:
                return self._last
        self._running = done = trio.Event()
        try:
            exposition = Exposition()
            yielder = Yielder()
            await self._collect(exposition, yielder)
            busy = yielder.stop()
            exposition.sample(FAMILIES["fabric_metrics_render_seconds"], (), round(busy, 6))
            started = time.perf_counter()
            self._last = exposition.render()
            self._last_duration = busy + (time.perf_counter() - started)
            self._last_at = trio.current_time()
            self.renders += 1
            return self._last
        finally:
            self._running = None
            done.set()


class Yielder:
    """Checkpoint once per ``CHUNK`` calls (collection over many connections); ``busy`` is
    the time spent between checkpoints (the collection's own work, not other tasks')."""

    __slots__ = ("_n", "_since", "busy")

    def __init__(self) -> None:
        self._n = 0
        self._since = time.perf_counter()
        self.busy = 0.0

    async def tick(self) -> None:
        self._n += 1
        if self._n >= CHUNK:
            self._n = 0
            self.busy += time.perf_counter() - self._since
            await trio.sleep(0)
            self._since = time.perf_counter()

    def stop(self) -> float:
        """The busy time so far, including the stretch since the last checkpoint."""
        self.busy += time.perf_counter() - self._since
        self._since = time.perf_counter()
        return self.busy
