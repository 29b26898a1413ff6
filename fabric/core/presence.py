"""Node presence in Redis: heartbeats, and the removal of nodes that stopped beating.

Which node holds which connection, user and group is the node's subscriptions: a node
subscribes a connection's, user's and group's topic while it holds one (``fabric.core.hub``),
so Redis' own table of channels is the presence, kept exactly in step with delivery and
rebuilt by the broker's resubscription after every reconnect. ``exists`` is "some node
subscribes that topic" (the count ``PUBLISH`` answers). A node whose process dies loses its
connections at once (the kernel closes them), and with them its subscriptions.

A node that hangs, or whose machine vanished without closing its sockets, would keep its
subscriptions until Redis' TCP keepalive noticed (300 s by default). Heartbeats bound that:

Rules this module keeps:
- Each node ``SET``s ``{prefix}node:{instance}`` with a TTL of ``node_ttl`` seconds every
  ``node_ttl / 3`` seconds, on a connection of its own (never behind a publish backlog).
- Every node sweeps every ``node_ttl / 2`` seconds: ``CLIENT LIST`` shows each node's
  connections by name (``fabric-{kind}:{fabric}:{instance}:{node_id}``, where ``fabric``
  is a hash of the channel prefix and db, so fabrics sharing a Redis never judge each
  other); a node whose key is gone and whose connections are older than ``node_ttl`` is
  dead for us, and ``CLIENT KILL`` drops its connections, and with them its subscriptions.
  So a hung or partitioned node disappears from ``exists`` within about 1.5 x ``node_ttl``
  (10 s by default: at most 15 s), and its stale entries are cleaned by the others. When it
  comes back it reconnects and resubscribes, like after any broker gap.
- Failures never end the node: a refused command (an ACL without ``CLIENT``) disables the
  sweep with one warning; a lost connection is reopened at the next beat.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import trio

from fabric.core.redis_conn import RespConnection, client_name, open_connection
from fabric.core.redis_resp import RedisBrokerError, RedisURL, RespError

log = logging.getLogger(__name__)


def fabric_tag(prefix: bytes) -> str:
    """8 hex digits naming one fabric (channel prefix and db) in client names."""
    return hashlib.sha1(prefix).hexdigest()[:8]


def parse_client_list(text: bytes | str) -> list[dict[str, str]]:
    """``CLIENT LIST`` output as one dict per connection."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    clients = []
    for line in text.splitlines():
        fields = {}
        for part in line.split(" "):
            key, sep, value = part.partition("=")
            if sep:
                fields[key] = value
        if fields:
            clients.append(fields)
    return clients


class NodePresence:
    """One node's heartbeat and sweep (run it in the broker's nursery: ``await nursery.start(p.run)``)."""

    def __init__(self, url: RedisURL, *, prefix: bytes, instance: str, node_id: str, node_ttl: float,
                 connect_timeout: float, command_timeout: float) -> None:
        self.url = url
        self.node_ttl = node_ttl
        self.tag = fabric_tag(prefix)
        self.instance = instance
        self.node_id = node_id
        self._key_prefix = prefix + b"node:"
        self.key = self._key_prefix + instance.encode()
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._conn: RespConnection | None = None
        self._sweeping = True
        self.beats = 0
        self.failures = 0
        self.nodes_removed = 0
        self.last_ok: float | None = None

    def client_name(self, kind: str) -> str:
        return client_name(kind, f"{self.tag}:{self.instance}:{self.node_id}")

    def statistics(self) -> dict:
        return {"node_ttl": self.node_ttl, "beats": self.beats, "failures": self.failures,
                "nodes_removed": self.nodes_removed, "sweeping": self._sweeping}

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        beat = self.node_ttl / 3
        sweep_every = self.node_ttl / 2
        next_sweep = trio.current_time() + sweep_every
        started = False
        try:
            while True:
                try:
                    await self._beat()
                    if self._sweeping and trio.current_time() >= next_sweep:
                        next_sweep = trio.current_time() + sweep_every
                        await self._sweep()
                except (RedisBrokerError, OSError, trio.BrokenResourceError, trio.TooSlowError) as exc:
                    self.failures += 1
                    log.warning("Redis presence: %s", exc)
                    await self._drop()
                if not started:
                    started = True
                    task_status.started()
                await trio.sleep(beat)
        finally:
            with trio.CancelScope(shield=True):
                conn = self._conn
                if conn is not None:
                    try:
                        with trio.move_on_after(1.0):
                            await conn.execute("DEL", self.key, timeout=1.0)  # leaving: gone at once
                    except Exception:  # noqa: BLE001, S110 - best effort on the way out
                        pass
                await self._drop()

    async def _connection(self) -> RespConnection:
        if self._conn is None:
            self._conn = await open_connection(self.url, name=self.client_name("ctl"),
                                               timeout=self._connect_timeout, max_message_bytes=16 * 1024 * 1024)
        return self._conn

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.aclose()

    async def _execute(self, *args: Any) -> Any:
        conn = await self._connection()
        return await conn.execute(*args, timeout=self._command_timeout)

    async def _beat(self) -> None:
        reply = await self._execute("SET", self.key, self.node_id, "PX", int(self.node_ttl * 1000))
        if isinstance(reply, RespError):
            raise RedisBrokerError(f"Redis at {self.url.redacted} refused the heartbeat: {reply}")
        self.beats += 1
        self.last_ok = trio.current_time()

    async def _sweep(self) -> None:
        listing = await self._execute("CLIENT", "LIST")
        if isinstance(listing, RespError):
            self._sweeping = False
            log.warning("Redis presence: CLIENT LIST refused (%s): dead nodes are not removed by this "
                        "node; they go when Redis notices their sockets closed", listing)
            return
        ours = f":{self.tag}:"
        by_instance: dict[str, list[dict[str, str]]] = {}
        for client in parse_client_list(listing):
            name = client.get("name", "")
            if not name.startswith("fabric-") or ours not in name:
                continue
            parts = name.split(":")
            if len(parts) < 3 or parts[1] != self.tag or parts[2] == self.instance:
                continue
            by_instance.setdefault(parts[2], []).append(client)
        for instance, clients in by_instance.items():
            if not all(_int(c.get("age")) > self.node_ttl for c in clients):
                continue  # a node that just connected may not have beaten yet
            alive = await self._execute("EXISTS", self._key_prefix + instance.encode())
            if alive:
                continue
            for client in clients:
                await self._execute("CLIENT", "KILL", "ID", client.get("id", "0"))
            self.nodes_removed += 1
            log.warning("Redis presence: node %s (%s) stopped its heartbeat for %g s: its %d connection(s) "
                        "to Redis were closed, and its connections, users and groups with them",
                        instance, clients[0].get("name", "?"), self.node_ttl, len(clients))


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0
