"""The Redis broker: fabric nodes (processes, machines) share topics through Redis pub/sub.

A node runs one ``RedisBus`` (``open_redis_bus(url, encode=..., decode=...)``, or
``await nursery.start(bus.run)``); each hub attaches a ``RedisBroker`` with
``bus.attach(on_publication)``, as with ``MemoryBus``. The bus owns two connections to
Redis: a publisher and one subscriber for every topic of every hub on the node (RESP3 read
straight from a trio stream, see below). The publisher is our own RESP3 connection
(``publisher="resp"``, the default: a batch is one write; measured 5-6x less CPU per
publish and about 0.6 ms less latency than coredis, ``benchmarks/broker_redis.py``) or
coredis (``publisher="coredis"``: one pipeline per batch). Both keep the same rules and
pass the same tests.

Rules this module keeps (the broker contract of ``fabric/core/broker.py``, and):
- Topic -> channel, one scheme (``channel_name``): ``{prefix}{db}:{kind}:{hub}[:{name}]``.
  Inside the topic's parts ``%`` is written ``%25`` and ``:`` is written ``%3A``, so the
  mapping is injective for any topic. Redis pub/sub ignores the database number
  (https://redis.io/docs/latest/develop/interact/pubsub/, "Database & Scoping"), so the
  URL's db is part of every channel name: fabrics on different dbs of one Redis stay apart.
- Envelope: ``b"fab2"`` + the bus's 8 random instance bytes + an 8-byte publish counter +
  ``encode(message)``. Instance and counter are the message's ``wire_id`` (set on the
  object before local delivery, and on the decoded object at every other node, when it
  has such an attribute): the same 16 bytes name one publish on every node, which is how a
  reliable session moving between nodes drops what both nodes saw. Anything
  else on our channels (another application sharing the Redis) is counted in
  ``drops["foreign"]``; a payload ``decode`` rejects is counted in ``drops["malformed"]``.
  Neither ever reaches a hub, and neither ever ends the reader. A message that Redis sent
  us for a topic no broker of this node wants any more (it unsubscribed while the message
  was on its way) is handed to ``on_stray`` (a synchronous hook; the composition root uses
  it to answer requests with "nothing here", so a requester counting replies never waits
  for a node that left).
- Local delivery short-circuits Redis: ``publish`` hands the message to Redis (queued for
  the writer) and then awaits this node's own subscribed callbacks directly, like the
  memory broker, so a slow local callback pushes back on the publisher. The copy Redis
  echoes back is recognised by the instance bytes and skipped. Each node receives a given
  publisher's messages through exactly one path (local or Redis), and each path keeps
  publish order, so per-publisher order holds at every node.
- ``send`` (what hubs use for data) returns once the message is delivered locally and
  queued for Redis; ``publish`` (what requests use) returns when Redis has executed the
  PUBLISH (the pipeline carrying it was answered), with the number of nodes the message
  reached: Redis' count of subscribers
  (one subscriber connection per node), this node counted once if it delivered locally. If that cannot happen (Redis unreachable, the connection lost with the
  batch in flight, a stall past ``command_timeout``) it raises ``RedisUnavailable``, after
  local delivery: this node's subscribers always get the message, the others may not.
  Pending publishes are bounded (``max_pending`` messages and ``max_pending_bytes``);
  waiting for room is the backpressure. One writer task sends them in order, up to
  ``max_batch`` per pipeline, one pipeline at a time.
- ``subscribe``/``unsubscribe`` return when Redis confirmed the change. SUBSCRIBE and
  UNSUBSCRIBE are answered asynchronously on the subscriber connection, so each batch of
  changes (concurrent calls share one) is followed by a PING, and the change is confirmed
  when the reader reaches its answer: Redis answers in order, so every acknowledgement
  came before it. A subscription delivers exactly the messages read after that point. An
  unsubscribe stops local publications at once, but the reader keeps delivering what it
  reads until that point: Redis published those messages while the broker was still
  subscribed (before the UNSUBSCRIBE), and dropping them would lose a message published
  before the unsubscribe was even called. Nothing arrives once ``unsubscribe`` returned.
  While reconnecting both return at once: the subscription set is this node's data and is
  replayed, confirmed the same way, on reconnect.
- Remote delivery awaits each callback in the reader task: a slow node stops reading its
  socket, which pushes back on Redis, whose ``client-output-buffer-limit pubsub`` is the
  bound (Redis then closes our subscriber; we reconnect and count the gap). Our own buffer
  is one socket read (64 KiB) plus at most one message of ``max_message_bytes``.
- Faults never crash the node: a lost or stalled connection (no PING answer within
  ``command_timeout``) is reconnected with capped exponential backoff and jitter, every
  topic is resubscribed, and ``statistics()`` counts reconnects, gaps and their duration,
  failed publishes and drops. Errors name the URL with the password redacted.

- Presence: subscriptions are the presence (a target exists while a node subscribes its
  topic); a third connection beats a heartbeat key and removes nodes whose heartbeat
  stopped (``fabric.core.presence``). Client names carry the fabric's tag and this bus's
  instance (``fabric-sub:{tag}:{instance}:{node_id}``) so the sweep can tell nodes apart.

Why our own subscriber rather than coredis' PubSub: coredis 6.9 reads push messages
eagerly into an unbounded in-memory stream (``create_memory_object_stream(math.inf)`` in
coredis/connection/_base.py, https://github.com/alisaifee/coredis), so a slow node would
buffer without limit; reading the socket ourselves only when the callbacks are done keeps
the bound in the kernel and in Redis (default ``client-output-buffer-limit pubsub 32mb 8mb
60``: https://raw.githubusercontent.com/redis/redis/7.0/redis.conf).
"""

from __future__ import annotations

import collections
import logging
import os
import random
import secrets
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import coredis
import trio
from coredis.retry import NoRetryPolicy

from fabric.core.broker import OnPublication
from fabric.core.presence import NodePresence
from fabric.core.redis_conn import (
    RespConnection,
    StaleConnection,
    client_name,
    open_connection,
)
from fabric.core.redis_resp import (
    NEED_MORE,
    Push,
    RedisAuthError,
    RedisBrokerError,
    RedisProtocolError,
    RedisUnavailable,
    RedisURL,
    RedisURLError,
    RespError,
    encode_command,
)

__all__ = [
    "MAGIC",
    "RedisAuthError",
    "RedisBroker",
    "RedisBrokerError",
    "RedisBus",
    "RedisProtocolError",
    "RedisURLError",
    "RedisUnavailable",
    "channel_name",
    "open_redis_bus",
]

log = logging.getLogger(__name__)

#: The first bytes of every message the fabric publishes (format version 1).
MAGIC = b"fab2"
_INSTANCE_BYTES = 8
_HEADER = len(MAGIC) + _INSTANCE_BYTES + 8
PUBLISHERS = ("coredis", "resp")
#: Channels per SUBSCRIBE/UNSUBSCRIBE command (a resubscription of 100k topics is 100 commands).
_CHANNELS_PER_COMMAND = 1000
_PING = encode_command("PING")
_WARN_EVERY = 10.0  # seconds between two warnings of the same kind (drops, reconnect failures)


def channel_name(prefix: bytes, topic: str) -> bytes:
    """The Redis channel of a topic: ``prefix`` + the topic with ``%`` -> ``%25``,
    ``:`` -> ``%3A`` and the ``\\x00`` separators -> ``:`` (UTF-8)."""
    if "%" in topic or ":" in topic:
        topic = topic.replace("%", "%25").replace(":", "%3A")
    return prefix + topic.replace("\x00", ":").encode("utf-8", "surrogatepass")


class _PlainNames:
    """Client names without presence (``node_ttl=None``)."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    def client_name(self, kind: str) -> str:
        return client_name(kind, self.node_id)


def _default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class _Batch:
    """Publishes sent together in one pipeline; their callers wait on ``done``. ``results``
    holds Redis' answer to each PUBLISH (its subscriber count), in order."""

    __slots__ = ("commands", "done", "error", "nbytes", "results", "sealed")

    def __init__(self) -> None:
        self.commands: list[tuple[bytes, bytes]] = []
        self.results: list[Any] = []
        self.nbytes = 0
        self.done = trio.Event()
        self.error: BaseException | None = None
        self.sealed = False  # taken by the writer: nothing more is appended


def _leaves(error: BaseException):
    if isinstance(error, BaseExceptionGroup):
        for sub in error.exceptions:
            yield from _leaves(sub)
    else:
        yield error


def _map_coredis_error(url: RedisURL, error: BaseException) -> RedisBrokerError:
    """coredis' exceptions (possibly in exception groups) as ours, with the URL redacted."""
    leaves = list(_leaves(error))
    for leaf in leaves:
        if isinstance(leaf, RedisBrokerError):
            return leaf
    leaf = leaves[0] if leaves else error
    if isinstance(leaf, (trio.TooSlowError, TimeoutError)):
        return RedisUnavailable(f"Redis at {url.redacted} did not answer in time")
    text = f"{type(leaf).__name__}: {leaf}"
    if isinstance(leaf, coredis.exceptions.AuthenticationError):
        return RedisAuthError(f"Redis at {url.redacted} refused the credentials: {text}")
    if isinstance(leaf, (coredis.exceptions.UnknownCommandError, coredis.exceptions.ProtocolError)):
        return RedisProtocolError(f"Redis at {url.redacted} does not speak RESP3: {text}")
    return RedisUnavailable(f"Redis at {url.redacted}: {text}")


class RedisBus:
    """One node's link to Redis. See the module docstring for the rules it keeps.

    ``encode(message) -> bytes`` and ``decode(bytes) -> message`` are the wire form of what
    hubs publish (``Publication.to_wire`` / ``Publication.from_wire``). Timeouts are in
    seconds. ``publisher`` is ``"coredis"`` or ``"resp"``. Construct (a bad URL is a
    ``RedisURLError`` here), then run with ``await nursery.start(bus.run)`` (or use
    ``open_redis_bus``); ``attach`` may be called before or after.
    """

    def __init__(
        self,
        url: str,
        *,
        encode: Callable[[Any], bytes],
        decode: Callable[[bytes], Any],
        node_id: str | None = None,
        channel_prefix: str = "fabric:",
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
        health_interval: float = 1.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        max_pending: int = 8192,
        max_pending_bytes: int = 16 * 1024 * 1024,
        max_batch: int = 512,
        max_message_bytes: int = 64 * 1024 * 1024,
        publisher: str = "resp",
        node_ttl: float | None = 10.0,
    ) -> None:
        self.url = RedisURL(url)
        if publisher not in PUBLISHERS:
            raise ValueError(f"publisher must be one of {', '.join(PUBLISHERS)}, not {publisher!r}")
        self._publisher_kind = publisher
        if max_pending < 1 or max_batch < 1 or max_pending_bytes < 1:
            raise ValueError("max_pending, max_pending_bytes and max_batch must be positive")
        self._encode = encode
        self._decode = decode
        self.node_id = node_id or _default_node_id()
        self._instance = secrets.token_bytes(_INSTANCE_BYTES)
        self._header = MAGIC + self._instance
        self._sequence = 0
        #: Called with (topic, message) for a message that reached this node for a topic no
        #: broker here wants any more (see the module's rules). Synchronous; must not raise.
        self.on_stray: Callable[[Any], None] | None = None
        self.strays = 0
        self.prefix = f"{channel_prefix}{self.url.db}:".encode()
        #: Heartbeats and the removal of dead nodes (``fabric.core.presence``); None: off.
        self.presence = NodePresence(
            self.url, prefix=self.prefix, instance=self._instance.hex(), node_id=self.node_id,
            node_ttl=node_ttl, connect_timeout=connect_timeout, command_timeout=command_timeout,
        ) if node_ttl else None
        self._names = self.presence or _PlainNames(self.node_id)
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._health_interval = health_interval
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._max_pending = max_pending
        self._max_pending_bytes = max_pending_bytes
        self._max_batch = max_batch
        self._max_message_bytes = max_message_bytes

        # What this node wants (its data; replayed after every reconnect).
        # A broker is a receiver of a topic while subscribed and while leaving it (its
        # unsubscribe waits for Redis' confirmation); only subscribed ones make it wanted.
        self._local: dict[str, list[RedisBroker]] = {}  # topic -> its receivers here
        self._channel_topics: dict[bytes, str] = {}  # channel -> topic, for every receiver's topic
        self._wanted: set[bytes] = set()  # channels some broker here is subscribed to
        # What Redis confirmed on the current subscriber connection, and what to reconcile.
        # Each change takes the next generation number; ``_synced_gen`` is the newest one the
        # reader saw confirmed, in stream order (a broker's topic is live once its
        # generation is <= ``_synced_gen``).
        self._redis_channels: set[bytes] = set()
        self._dirty: set[bytes] = set()
        self._change_gen = 0
        self._synced_gen = 0
        self._sync_needed = trio.Event()
        self._sync_progress = trio.Event()
        self._pass_done = trio.Event()
        # Subscriber health.
        self._reading = False
        self._read_started = 0.0
        self._last_rx = 0.0
        self._gap_since: float | None = None
        # Outbound.
        self._batches: collections.deque[_Batch] = collections.deque()
        self._pending = 0
        self._pending_bytes = 0
        self._room = trio.lowlevel.ParkingLot()
        self._has_work = trio.Event()
        # Lifecycle.
        self._pub_up = False
        self._sub_up = False
        self._started = False
        self._closed = False
        self._cancel_scope: trio.CancelScope | None = None
        self._stopped = trio.Event()
        self.server_version: str | None = None
        # Counters.
        self.published = 0
        self.delivered = 0
        self.failed = 0
        self.drops: collections.Counter[str] = collections.Counter()
        self.reconnects = 0
        self.gaps = 0
        self.gap_seconds = 0.0
        self.batches = 0
        self._warned: dict[str, float] = {}

    # ---- public --------------------------------------------------------------------------

    def attach(self, on_publication: OnPublication) -> RedisBroker:
        if self._closed:
            raise trio.ClosedResourceError("the Redis bus is closed")
        return RedisBroker(self, on_publication)

    @property
    def state(self) -> str:
        if self._closed:
            return "closed"
        if not self._started:
            return "starting"
        # Connected once both connections are up and, after a reconnect, every topic is
        # confirmed resubscribed (the gap closed).
        up = self._pub_up and self._sub_up and self._gap_since is None
        return "connected" if up else "reconnecting"

    def channel(self, topic: str) -> bytes:
        return channel_name(self.prefix, topic)

    def subscribed(self, topic: str) -> bool:
        """Whether some broker of this node wants ``topic``. No checkpoint."""
        return self.channel(topic) in self._wanted

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Connect (a clear ``RedisBrokerError`` if that fails), then keep both connections
        up until cancelled or ``aclose``d."""
        if self._started or self._closed:
            raise RuntimeError("a RedisBus runs once")
        conn: RespConnection | None = None
        try:
            with trio.CancelScope() as self._cancel_scope:
                conn = await open_connection(
                    self.url, name=self._names.client_name("sub"),
                    timeout=self._connect_timeout, max_message_bytes=self._max_message_bytes)
                self.server_version = conn.server_version
                try:
                    async with trio.open_nursery() as nursery:
                        if self.presence is not None:
                            await nursery.start(self.presence.run)
                        await nursery.start(self._publisher)
                        await nursery.start(self._subscriber, conn)
                        conn = None  # owned by the subscriber task now
                        self._started = True
                        task_status.started(self)
                except BaseExceptionGroup as group:
                    # A start-up failure is raised as itself (one clear error), not as a
                    # group; cancellation and anything after start propagate unchanged.
                    if self._started or not all(isinstance(leaf, Exception) for leaf in _leaves(group)):
                        raise
                    raise _map_coredis_error(self.url, group) from None
        finally:
            self._closed = True
            self._pub_up = self._sub_up = False
            if conn is not None:
                await conn.aclose()
            self._fail_pending(trio.ClosedResourceError("the Redis bus is closed"))
            self._wake_sync_waiters()
            self._stopped.set()

    async def aclose(self) -> None:
        """Stop the bus: pending publishes fail, connections close. Idempotent."""
        self._closed = True
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()
            if self._started:
                await self._stopped.wait()
        self._fail_pending(trio.ClosedResourceError("the Redis bus is closed"))
        self._wake_sync_waiters()

    def statistics(self) -> dict:
        return {
            "kind": "redis",
            "state": self.state,
            "node_id": self.node_id,
            "url": self.url.redacted,
            "server_version": self.server_version,
            "channels": len(self._wanted),
            "subscribed": len(self._redis_channels),
            "published": self.published,
            "delivered": self.delivered,
            "failed": self.failed,
            "dropped": sum(self.drops.values()),
            "drops": dict(self.drops),
            "reconnects": self.reconnects,
            "gaps": self.gaps,
            "gap_seconds": round(self.gap_seconds, 3),
            "pending": self._pending,
            "pending_bytes": self._pending_bytes,
            "batches": self.batches,
            "strays": self.strays,
            "presence": self.presence.statistics() if self.presence is not None else None,
            "publisher": self._publisher_kind,
        }

    # ---- publishing ----------------------------------------------------------------------

    async def _publish(self, topic: str, message: Any, wait: bool = True) -> int | None:
        if self._closed:
            raise trio.ClosedResourceError("the Redis bus is closed")
        self._sequence += 1
        wire_id = self._instance + self._sequence.to_bytes(8, "big")
        try:
            message.wire_id = wire_id
        except AttributeError:
            pass  # a message type without a wire id (tests publish plain values)
        data = MAGIC + wire_id + self._encode(message)
        size = len(data)
        if size > self._max_pending_bytes or size > self._max_message_bytes:
            raise ValueError(f"a message of {size} bytes is larger than the Redis broker accepts "
                             f"({min(self._max_pending_bytes, self._max_message_bytes)} bytes)")
        self.published += 1
        batch = None
        index = 0
        channel = self.channel(topic)
        if self._pub_up:
            while self._pending >= self._max_pending or self._pending_bytes + size > self._max_pending_bytes:
                await self._room.park()
                if not self._pub_up:
                    break
            if self._pub_up:
                batch, index = self._enqueue(channel, data, size)
        # This node's own subscribers, directly (the echo from Redis is skipped by the reader).
        brokers = self._local.get(topic)
        local = False
        if brokers:
            for broker in brokers if len(brokers) == 1 else list(brokers):
                if topic not in broker._topics:
                    continue  # leaving: it gets only what was published before
                local = True
                broker.delivered += 1
                await broker._on_publication(topic, message)
        if batch is None:
            self.failed += 1
            if self._closed:
                raise trio.ClosedResourceError("the Redis bus is closed")
            raise RedisUnavailable(f"Redis at {self.url.redacted} is unreachable (reconnecting): "
                                   "the message reached this node's subscribers only")
        if not wait:
            return None  # queued; a failure of its batch is counted in ``failed`` and logged
        if not batch.done.is_set():
            await batch.done.wait()
        if batch.error is not None:
            if isinstance(batch.error, trio.ClosedResourceError):
                raise trio.ClosedResourceError(str(batch.error))
            raise RedisUnavailable(f"{batch.error} (the message reached this node's subscribers; "
                                   "other nodes may have missed it)")
        results = batch.results
        count = results[index] if index < len(results) else None
        if not isinstance(count, int):
            return None
        # Redis counted our own subscriber connection if it has the channel; our reader skips
        # that echo, and the local delivery above stands for it.
        if channel in self._redis_channels:
            count -= 1
        return count + (1 if local else 0)

    def _enqueue(self, channel: bytes, data: bytes, size: int) -> tuple[_Batch, int]:
        batch = self._batches[-1] if self._batches else None
        if batch is None or batch.sealed or len(batch.commands) >= self._max_batch:
            batch = _Batch()
            self._batches.append(batch)
        index = len(batch.commands)
        batch.commands.append((channel, data))
        batch.nbytes += size
        self._pending += 1
        self._pending_bytes += size
        self._has_work.set()
        return batch, index

    def _fail_pending(self, error: BaseException) -> None:
        if not isinstance(error, trio.ClosedResourceError):
            self.failed += sum(len(batch.commands) for batch in self._batches)
        for batch in self._batches:
            batch.error = error
            batch.done.set()
        self._batches.clear()
        self._pending = self._pending_bytes = 0
        self._room.unpark_all()

    @asynccontextmanager
    async def _publisher_connection(self) -> AsyncIterator[Callable[[list[tuple[bytes, bytes]]], Awaitable[list]]]:
        """A connected publisher: yields ``send(commands)``, which returns Redis' answers
        once it answered every PUBLISH of the batch (or raises)."""
        if self._publisher_kind == "resp":
            conn = await open_connection(self.url, name=self._names.client_name("pub"),
                                         timeout=self._connect_timeout, max_message_bytes=self._max_message_bytes)
            try:
                yield conn.publish_batch
            finally:
                await conn.aclose()
            return
        async with self._new_client() as client:
            with trio.fail_after(self._connect_timeout + self._command_timeout):
                await client.ping()

            async def send(commands: list[tuple[bytes, bytes]]) -> list:
                # coredis applies the pipeline timeout to the answer; the caller's bound
                # also covers getting a connection.
                async with client.pipeline(transaction=False, timeout=self._command_timeout) as pipe:
                    requests = [pipe.publish(channel, data) for channel, data in commands]
                return [await request for request in requests]

            yield send

    def _new_client(self) -> coredis.Redis:
        url = self.url
        return coredis.Redis(
            host=url.host, port=url.port, unix_socket_path=url.path, db=url.db,
            username=url.username, password=url.password,
            ssl_context=ssl.create_default_context() if url.tls else None,
            connect_timeout=self._connect_timeout, stream_timeout=self._command_timeout,
            max_connections=1, client_name=self._names.client_name("pub"),
            retry_policy=NoRetryPolicy(),  # a retried PUBLISH could be delivered twice
        )

    async def _publisher(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Own the publisher connection: (re)connect, then send batches until a failure."""
        delay = self._backoff_initial
        first = True
        lost_at = trio.current_time()
        retried_stale = False
        while True:
            up_since = None
            batches_at_connect = self.batches
            try:
                async with self._publisher_connection() as send:
                    up_since = trio.current_time()
                    self._pub_up = True
                    if first:
                        first = False
                        task_status.started()
                    elif lost_at is not None:
                        self.reconnects += 1
                        log.warning("Redis broker: publisher reconnected to %s after %.2f s",
                                    self.url.redacted, trio.current_time() - lost_at)
                    lost_at = None
                    await self._write_batches(send)
            except Exception as e:  # noqa: BLE001 - any failure: the node must not crash
                error = _map_coredis_error(self.url, e)
                if first:
                    raise error from None
                now = trio.current_time()
                if (up_since is not None and any(isinstance(leaf, StaleConnection) for leaf in _leaves(e))
                        and (not retried_stale or self.batches > batches_at_connect)):
                    # Closed while idle (a Redis restart, say) and nothing was sent on it:
                    # reconnect at once and send the same batch; publishers keep waiting.
                    # Once per connection that did some work, so a server that keeps
                    # closing new connections still gets the backoff.
                    retried_stale = True
                    log.info("Redis broker: %s; reconnecting", error)
                    self.reconnects += 1
                    continue
                self._pub_up = False
                self._fail_pending(error)
                self._warn("publisher", "Redis broker: publisher connection to %s lost: %s", self.url.redacted, error)
                if up_since is not None:
                    lost_at = now
                    if now - up_since > self._backoff_max:
                        delay = self._backoff_initial  # it was up for a while: not a flapping link
                elif lost_at is None:
                    lost_at = now
            await trio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._backoff_max)

    async def _write_batches(self, send: Callable[[list[tuple[bytes, bytes]]], Awaitable[list]]) -> None:
        while True:
            if not self._batches:
                self._has_work = trio.Event()
                await self._has_work.wait()
                continue
            batch = self._batches[0]
            batch.sealed = True
            with trio.fail_after(self._connect_timeout + self._command_timeout):
                batch.results = await send(batch.commands)
            self._batches.popleft()
            self._pending -= len(batch.commands)
            self._pending_bytes -= batch.nbytes
            self.batches += 1
            batch.done.set()
            self._room.unpark_all()

    # ---- subscribing ---------------------------------------------------------------------

    async def _subscribe(self, broker: RedisBroker, topic: str) -> None:
        self._change_gen += 1
        gen = self._change_gen
        broker._topics[topic] = gen
        brokers = self._local.get(topic)
        if brokers is None:
            self._local[topic] = [broker]
        elif broker not in brokers:  # (it may still be there, leaving: see _unsubscribe)
            brokers.append(broker)
        channel = self.channel(topic)
        self._channel_topics[channel] = topic
        if channel not in self._wanted:
            self._wanted.add(channel)
            self._dirty.add(channel)
        await self._await_sync(gen)

    async def _unsubscribe(self, broker: RedisBroker, topics: list[str]) -> None:
        """Leave ``topics``: nothing published from here on reaches ``broker``, but what Redis
        published while it was subscribed (still on its way to our reader) is delivered
        until Redis confirmed the change, so a message published before the unsubscribe is
        not lost to a race with it. Returns once confirmed; nothing arrives after."""
        self._change_gen += 1
        gen = self._change_gen
        for topic in topics:
            del broker._topics[topic]  # local publications stop reaching it at once
            broker._leaving[topic] = gen
            if not any(topic in other._topics for other in self._local.get(topic, ())):
                channel = self.channel(topic)
                self._wanted.discard(channel)
                self._dirty.add(channel)
        try:
            await self._await_sync(gen)
        finally:
            for topic in topics:
                if broker._leaving.get(topic) != gen:
                    continue  # left again later: that call finishes it
                del broker._leaving[topic]
                if topic in broker._topics:
                    continue  # subscribed again meanwhile: it stays a receiver
                brokers = self._local.get(topic)
                if brokers is not None and broker in brokers:
                    brokers.remove(broker)
                    if not brokers:
                        del self._local[topic]
                        channel = self.channel(topic)
                        if channel not in self._wanted:
                            self._channel_topics.pop(channel, None)

    async def _await_sync(self, gen: int) -> None:
        """Wait until Redis confirmed every change up to ``gen`` (or the subscriber is down:
        then the reconnect replays and confirms the whole subscription set)."""
        self._sync_needed.set()
        while self._synced_gen < gen and self._sub_up and not self._closed:
            await self._sync_progress.wait()

    def _wake_sync_waiters(self) -> None:
        self._sync_progress.set()
        self._sync_progress = trio.Event()

    async def _subscriber(self, conn: RespConnection, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Own the subscriber connection: read, keep it healthy, reconnect when it fails."""
        delay = self._backoff_initial
        started = False
        while True:
            up_since = trio.current_time()
            try:
                self._redis_channels = set()
                self._dirty.update(self._wanted)  # resubscribe everything wanted
                self._last_rx = trio.current_time()
                self._sub_up = True
                self._sync_needed.set()
                if not started:
                    started = True
                    task_status.started()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._sync_subscriptions, conn)
                    nursery.start_soon(self._health, conn)
                    await self._read(conn)
            except Exception as e:
                error = _map_coredis_error(self.url, e)
                unexpected = not any(isinstance(leaf, (RedisBrokerError, OSError, trio.BrokenResourceError))
                                     for leaf in _leaves(e))
                if unexpected:
                    log.exception("Redis broker: subscriber failed unexpectedly; reconnecting")
                else:
                    self._warn("subscriber", "Redis broker: subscriber connection to %s lost: %s",
                               self.url.redacted, error)
            finally:
                self._sub_up = False
                self._reading = False
                self._redis_channels = set()
                self._wake_sync_waiters()
                with trio.CancelScope(shield=True):
                    await conn.aclose()
            self.gaps += 1
            self._gap_since = now = trio.current_time()
            if now - up_since > self._backoff_max:
                delay = self._backoff_initial  # it was up for a while: not a flapping link
            conn, delay = await self._reconnect_subscriber(delay)
            self.reconnects += 1

    async def _reconnect_subscriber(self, delay: float) -> tuple[RespConnection, float]:
        while True:
            await trio.sleep(delay * random.uniform(0.5, 1.0))
            if self._closed:
                raise trio.ClosedResourceError("the Redis bus is closed")
            next_delay = min(delay * 2, self._backoff_max)
            try:
                conn = await open_connection(
                    self.url, name=self._names.client_name("sub"),
                    timeout=self._connect_timeout, max_message_bytes=self._max_message_bytes)
                return conn, next_delay
            except RedisBrokerError as e:
                self._warn("subscriber-connect", "Redis broker: cannot reconnect to %s yet: %s", self.url.redacted, e)
            delay = next_delay

    async def _sync_subscriptions(self, conn: RespConnection) -> None:
        """Reconcile what Redis has with what this node wants, one batch of changes at a
        time, each confirmed by the answer to the PING sent after it."""
        while True:
            await self._sync_needed.wait()
            self._sync_needed = trio.Event()
            gen = self._change_gen
            dirty, self._dirty = self._dirty, set()
            wanted, have = self._wanted, self._redis_channels
            commands = []
            for command, channels in (
                (b"SUBSCRIBE", [c for c in dirty if c in wanted and c not in have]),
                (b"UNSUBSCRIBE", [c for c in dirty if c not in wanted and c in have]),
            ):
                for i in range(0, len(channels), _CHANNELS_PER_COMMAND):
                    commands.append(encode_command(command, *channels[i:i + _CHANNELS_PER_COMMAND]))
            commands.append(_PING)
            self._pass_done = trio.Event()
            await conn.send(b"".join(commands), gen, expects_reply=True)
            await self._pass_done.wait()  # set by the reader, in stream order
            if self._gap_since is not None:
                self.gap_seconds += trio.current_time() - self._gap_since
                self._gap_since = None
                log.warning("Redis broker: subscriber reconnected to %s, %d channels resubscribed",
                            self.url.redacted, len(self._redis_channels))

    def _on_reply(self, conn: RespConnection, item: Any) -> None:
        if not conn.replies:
            raise RedisProtocolError(f"unexpected reply on the subscriber connection: {item!r:.200}")
        gen, _ = conn.replies.popleft()
        if isinstance(item, RespError):
            # Our SUBSCRIBE refused (an ACL without access to our channels, say): start over
            # on a new connection, with backoff.
            raise RedisUnavailable(f"Redis at {self.url.redacted} refused a subscriber command: {item}")
        if gen is not None:
            self._synced_gen = gen
            self._pass_done.set()
            self._wake_sync_waiters()

    async def _health(self, conn: RespConnection) -> None:
        """PING when Redis has been silent; an answer missing for ``command_timeout`` is a
        stall. Time spent in our own callbacks does not count: then we are the slow side."""
        interval = self._health_interval
        while True:
            await trio.sleep(interval / 2)
            if not self._reading:
                continue
            now = trio.current_time()
            if conn.replies:
                if now - max(conn.replies[0][1], self._read_started) > self._command_timeout:
                    raise RedisUnavailable(f"Redis at {self.url.redacted} stopped answering "
                                           f"(no reply within {self._command_timeout:g} s)")
            elif now - self._last_rx >= interval:
                await conn.send(_PING, None, expects_reply=True)

    async def _read(self, conn: RespConnection) -> None:
        parser = conn.parser
        receive_some = conn.receive_some  # wait, then one recv (no recv that fails first)
        while True:
            item = parser.parse()
            if item is NEED_MORE:
                self._read_started = trio.current_time()
                self._reading = True
                data = await receive_some()
                self._reading = False
                if not data:
                    raise RedisUnavailable(f"Redis at {self.url.redacted} closed the subscriber connection")
                self._last_rx = trio.current_time()
                parser.feed(data)
                continue
            if type(item) is Push and item:
                kind = item[0]
                if kind == b"message" and len(item) == 3:
                    await self._dispatch(item[1], item[2])
                elif kind == b"subscribe" and len(item) >= 2:
                    self._redis_channels.add(item[1])
                elif kind == b"unsubscribe" and len(item) >= 2:
                    self._redis_channels.discard(item[1])
                # Other pushes (pmessage, invalidate, ...) are not ours: ignored.
            else:
                self._on_reply(conn, item)  # the answer to one of our PINGs, in order

    async def _dispatch(self, channel: bytes, data: bytes) -> None:
        topic = self._channel_topics.get(channel)
        if topic is None and self.on_stray is None:
            return  # unsubscribed while the message was on its way
        if data[:4] != MAGIC:
            self._drop("foreign", channel)
            return
        if data[4:_HEADER - 8] == self._instance:
            return  # our own publication: already delivered locally by publish()
        brokers = self._local.get(topic) if topic is not None else None
        if not brokers and self.on_stray is None:
            return
        try:
            if len(data) < _HEADER:
                raise ValueError("truncated envelope")
            message = self._decode(data[_HEADER:])
        except Exception:  # noqa: BLE001 - whatever decode raises, the message is dropped
            self._drop("malformed", channel)
            return
        try:
            message.wire_id = data[4:_HEADER]
        except AttributeError:
            pass
        if not brokers:
            self._stray(message)
            return
        synced = self._synced_gen
        delivered = False
        for broker in brokers if len(brokers) == 1 else list(brokers):
            gen = broker._topics.get(topic)
            if gen is None or gen > synced:
                left = broker._leaving.get(topic)
                if left is None or left <= synced:
                    continue  # not subscribed when Redis published this message
            # (subscribed, or leaving and Redis published this before it confirmed)
            delivered = True
            broker.delivered += 1
            self.delivered += 1
            try:
                await broker._on_publication(topic, message)
            except Exception:
                self.drops["callback_failed"] += 1
                log.exception("Redis broker: on_publication failed for topic %r", topic)
        if not delivered:
            self._stray(message)

    def _stray(self, message: Any) -> None:
        self.strays += 1
        hook = self.on_stray
        if hook is not None:
            try:
                hook(message)
            except Exception:
                log.exception("Redis broker: on_stray failed")

    def _drop(self, kind: str, channel: bytes) -> None:
        self.drops[kind] += 1
        self._warn(kind, "Redis broker: dropped a %s message on channel %r (%d so far)",
                   kind, channel[:200], self.drops[kind])

    def _warn(self, kind: str, msg: str, *args: Any) -> None:
        now = trio.current_time()
        last = self._warned.get(kind)
        if last is None or now - last >= _WARN_EVERY:
            self._warned[kind] = now
            log.warning(msg, *args)


class RedisBroker:
    """One hub's view of a ``RedisBus``: the ``Broker`` protocol."""

    __slots__ = ("_bus", "_closed", "_leaving", "_on_publication", "_topics", "delivered", "published")

    def __init__(self, bus: RedisBus, on_publication: OnPublication) -> None:
        self._bus = bus
        self._on_publication = on_publication
        self._topics: dict[str, int] = {}  # topic -> the bus generation of its subscribe
        self._leaving: dict[str, int] = {}  # topic -> the generation of its unsubscribe, until confirmed
        self.delivered = 0
        self.published = 0
        self._closed = False

    async def subscribe(self, topic: str) -> None:
        """Idempotent. Returns when Redis confirmed (at once while reconnecting)."""
        if topic in self._topics:
            return
        if self._closed or self._bus._closed:
            raise trio.ClosedResourceError("the Redis broker is closed")
        await self._bus._subscribe(self, topic)

    async def unsubscribe(self, topic: str) -> None:
        """Idempotent. Nothing of ``topic`` is delivered here once this returned."""
        if topic not in self._topics:
            left = self._leaving.get(topic)
            if left is not None:  # another call is leaving it: return when that one does
                await self._bus._await_sync(left)
            return
        await self._bus._unsubscribe(self, [topic])

    async def publish(self, topic: str, message: Any) -> int | None:
        """Deliver to this node's subscribers and hand to Redis; returns when Redis has
        executed the PUBLISH, with the number of nodes the message reached. Raises
        ``RedisUnavailable`` (after local delivery) if it could not, ``ValueError`` for a
        message over the size bounds."""
        if self._closed:
            raise trio.ClosedResourceError("the Redis broker is closed")
        self.published += 1
        return await self._bus._publish(topic, message)

    async def send(self, topic: str, message: Any) -> None:
        """``publish`` without waiting for Redis: deliver to this node's subscribers and queue
        for the others (waiting only for room in the bounded queue). Per-publisher order is
        the queue's order; a batch Redis did not take is counted in ``failed`` and logged.
        Raises ``RedisUnavailable`` (after local delivery) while Redis is unreachable."""
        if self._closed:
            raise trio.ClosedResourceError("the Redis broker is closed")
        self.published += 1
        await self._bus._publish(topic, message, wait=False)

    def subscribed(self, topic: str) -> bool:
        return topic in self._topics

    @property
    def node_id(self) -> str:
        return self._bus.node_id

    async def aclose(self) -> None:
        """Unsubscribe every topic of this broker. Idempotent."""
        self._closed = True
        if self._topics:
            await self._bus._unsubscribe(self, list(self._topics))  # one confirmation for all

    def statistics(self) -> dict:
        stats = self._bus.statistics()
        stats.update(topics=len(self._topics), delivered=self.delivered, published=self.published,
                     node_delivered=self._bus.delivered, node_published=self._bus.published)
        return stats


@asynccontextmanager
async def open_redis_bus(url: str, **kwargs: Any) -> AsyncIterator[RedisBus]:
    """A running ``RedisBus`` (arguments as ``RedisBus``); closed on exit. Raises the
    ``RedisBrokerError`` itself (not an exception group) when it cannot start."""
    bus = RedisBus(url, **kwargs)
    start_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(bus.run)
            except RedisBrokerError as e:
                start_error = e
                raise
            try:
                yield bus
            finally:
                await bus.aclose()
    except BaseExceptionGroup:
        if start_error is not None:
            raise start_error from None
        raise
