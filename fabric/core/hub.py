"""A hub: its registry of connections, users and groups, its group actors, its routing.

Supervision (see docs/design.md): each hub runs a ``Supervisor`` with
- ``keepalive``: one task that pings idle sockets and closes dead ones (one task per hub
  instead of one per connection: it saves ~2 kB and a wake-up per connection);
- ``notifier``: an actor that runs ``on_connected``/``on_disconnected`` handlers so that a
  slow handler never delays a connection (bounded mailbox; overflow is counted);
- one TRANSIENT ``GroupActor`` per group with local members (started on first join,
  stopped when the last member leaves; a crashed group restarts and its members keep
  their membership, which the hub holds);
- one TEMPORARY task per connection (a connection is never restarted).

Rules this module keeps:
- Membership is the hub's plain data, changed synchronously by join/leave; a group actor
  reads it at delivery time. So a message is never delivered after its recipient's leave
  returned, and every member present from publish to delivery receives it.
- Every registry entry added for a connection is removed in that connection's ``finally``.
- All sends go through the broker (``publish``); only ``on_publication`` touches local
  recipients. Nothing assumes every member of a group is in this process.
"""

from __future__ import annotations

import collections
import itertools
import logging
import secrets
from typing import TYPE_CHECKING, Any

import trio

from actors import Actor, ChildSpec, Overflow, Restart, Supervisor
from specs import errors as spec_errors
from specs.lifecycle import Effect, LifecycleEvent, State

from fabric.core import broker as topics
from fabric.webpubsub import codec_json
from fabric.config import HubConfig, ServerConfig
from fabric.webpubsub.connection import ClientConnection, DetachedTransport, WireProtocol
from fabric.core.events import EventHandler
from fabric.core.publication import Publication
from fabric.webpubsub.reliable import reconnection_token, valid_reconnection_token

if TYPE_CHECKING:
    from fabric.core.broker import Broker

log = logging.getLogger(__name__)


def new_connection_id() -> str:
    return secrets.token_urlsafe(16)


class GroupActor(Actor):
    """Delivers a group's publications to its local members, one publication at a time."""

    mailbox_size = 256
    overflow = Overflow.BLOCK

    def __init__(self, group: "LocalGroup") -> None:
        self.group = group

    async def handle(self, publication: Publication) -> None:
        members = self.group.members
        if not members:
            return
        if publication.expires_at is not None and publication.expired():
            self.group.expired += 1  # waited in the mailbox past its TTL: dropped
            return
        matches = publication.filter
        for connection_id, connection in list(members.items()):
            if publication.no_echo or publication.excluded:
                if publication.skips(connection_id):
                    continue
            if matches is not None and not matches(connection):
                continue
            connection.deliver_nowait(publication)
        self.group.delivered += 1


class LocalGroup:
    """This node's members of one group, and the actor delivering to them."""

    __slots__ = ("name", "members", "handle", "delivered", "expired", "generation")

    def __init__(self, name: str, generation: int) -> None:
        self.name = name
        self.members: dict[str, ClientConnection] = {}
        self.handle = None
        self.delivered = 0
        self.expired = 0
        self.generation = generation


class Notifier(Actor):
    """Runs connected/disconnected notifications off the connections' paths."""

    mailbox_size = 4096
    overflow = Overflow.DROP_NEWEST

    def __init__(self, hub: "Hub") -> None:
        self.hub = hub

    async def handle(self, message: tuple[str, Any, str]) -> None:
        kind, context, reason = message
        handler = self.hub.handler
        if handler is None:
            return
        try:
            if kind == "connected":
                await handler.on_connected(context)
            else:
                await handler.on_disconnected(context, reason)
        except Exception:
            self.hub.counters["handler_failures"] += 1
            log.exception("%s handler failed in hub %r", kind, self.hub.name)


class Hub:
    def __init__(
        self,
        name: str,
        config: HubConfig,
        server_config: ServerConfig,
        broker_factory,
        handler: EventHandler | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.server_config = server_config
        self.handler = handler
        self.connections: dict[str, ClientConnection] = {}
        self.users: dict[str, dict[str, ClientConnection]] = {}
        self.groups: dict[str, LocalGroup] = {}
        self.counters: collections.Counter[str] = collections.Counter()
        self.supervisor = self._new_supervisor()
        self.broker: Broker = broker_factory(self.on_publication)
        self._generation = itertools.count()
        self._notifier_ref = None
        self._started = trio.Event()
        self._emptied: trio.Event | None = None  # set when the last connection leaves (shutdown waits on it)

    def _new_supervisor(self) -> Supervisor:
        return Supervisor(f"hub:{self.name}", strategy=_one_for_one(), max_restarts=10, within=10.0)

    # ---- lifecycle ---------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run the hub's supervisor. Started (and restarted) by the fabric's supervisor.

        A restart begins from an empty registry: the previous incarnation's connections
        and group actors were its supervisor's children and ended with it.
        """
        if self._started.is_set() or self.supervisor.statistics().state != "new":
            self.supervisor = self._new_supervisor()
            self.connections.clear()
            self.users.clear()
            self.groups.clear()
            self._started = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.supervisor.run)
            notifier = await self.supervisor.start_child(
                ChildSpec("notifier", lambda: Notifier(self), restart=Restart.PERMANENT))
            self._notifier_ref = notifier.ref
            await self.supervisor.start_child(ChildSpec("keepalive", self._keepalive, restart=Restart.PERMANENT))
            await self.broker.subscribe(topics.hub_topic(self.name))
            self._started.set()
            task_status.started(self)

    async def aclose(self) -> None:
        """Close every connection with 1001 (bounded wait), then stop the supervisor."""
        for connection in list(self.connections.values()):
            connection.close_for(spec_errors.CloseSituation.SERVER_SHUTDOWN)
        with trio.move_on_after(self.server_config.shutdown_timeout):
            while self.connections:
                self._emptied = trio.Event()
                await self._emptied.wait()
        await self.supervisor.aclose()

    async def _keepalive(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        interval = self.server_config.keepalive_interval
        idle_timeout = self.server_config.idle_timeout
        task_status.started()
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            for connection in list(self.connections.values()):
                ws = connection.ws
                if now - ws.last_received > idle_timeout:
                    if not isinstance(ws, DetachedTransport):
                        self.counters["ping_timeouts"] += 1
                        connection.ping_timeout()
                else:
                    ws.ping_nowait()

    # ---- connections -------------------------------------------------------------------

    async def connection_task(self, connection: ClientConnection, initial_groups=(), *,
                              task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Own one connection for its whole life (a TEMPORARY child of the hub's supervisor).

        Checkpoint. Never raises for client faults.
        """
        task_status.started()
        await self._started.wait()
        self.connections[connection.connection_id] = connection
        if connection.user_id is not None:
            self.users.setdefault(connection.user_id, {})[connection.connection_id] = connection
            await self.broker.subscribe(topics.user_topic(self.name, connection.user_id))
        await self.broker.subscribe(topics.connection_topic(self.name, connection.connection_id))
        self.counters["connections_opened"] += 1
        life = connection.lifecycle
        ws = connection.ws
        try:
            life.handle(LifecycleEvent.CONNECT_ACCEPTED)
            for effect in life.effects:  # in the table's order: connected precedes every frame
                if effect is Effect.SEND_CONNECTED:
                    token = self.reconnection_token(connection.connection_id) if life.reliable else None
                    connection.send_protocol_nowait(connection.codec.encode_connected(
                        connection.connection_id, connection.user_id, token))
                elif effect is Effect.JOIN_INITIAL_GROUPS:
                    for group in initial_groups:
                        await self.join_group(connection, group)
                elif effect is Effect.FIRE_CONNECTED:
                    self._notify("connected", connection, "")
            while True:
                await ws.run(connection.on_message)
                nxt = connection.pending_ws
                if nxt is None and not life.closed:
                    if life.state is not State.DETACHED:
                        life.handle(LifecycleEvent.CLIENT_CLOSE if ws.peer_closed else LifecycleEvent.TRANSPORT_LOST)
                    if life.state is State.DETACHED:
                        nxt = await self._await_recovery(connection)
                if nxt is None:
                    break
                ws = nxt
                connection.attach(ws)
                self.counters["sessions_recovered"] += 1
        finally:
            fire = Effect.FIRE_DISCONNECTED in life.effects
            if connection.pending_ws is not None:  # recovered at the very end: refuse it
                connection.pending_ws.abort_soon()
            with trio.CancelScope(shield=True):
                await self._unregister(connection, fire_disconnected=fire)

    async def _await_recovery(self, connection: ClientConnection):
        """Keep a dropped reliable session for ``reconnect_window``. The new socket, or None."""
        self.counters["sessions_detached"] += 1
        wakeup = connection.detach()
        with trio.move_on_after(self.server_config.reconnect_window):
            await wakeup.wait()
        life = connection.lifecycle
        if life.state is State.DETACHED:  # nobody came back in time
            life.handle(LifecycleEvent.TIMEOUT)
            self.counters["sessions_expired"] += 1
        return connection.pending_ws

    def reconnection_token(self, connection_id: str) -> str:
        return reconnection_token(self.server_config.access_keys[0], self.name, connection_id)

    def recover(self, connection_id: str, token: str, protocol_name: str | None):
        """The session a recovery request may resume, or None (unknown, bad token, not reliable)."""
        connection = self.connections.get(connection_id)
        if connection is None or not connection.lifecycle.reliable:
            return None
        if connection.protocol.value != protocol_name:
            return None
        if not valid_reconnection_token(token, self.server_config.access_keys, self.name, connection_id):
            return None
        if not connection.lifecycle.can_handle(LifecycleEvent.RECOVERED):
            return None
        return connection

    async def _unregister(self, connection: ClientConnection, *, fire_disconnected: bool = True) -> None:
        cid = connection.connection_id
        for group in list(connection.groups):
            await self.leave_group(connection, group)
        self.connections.pop(cid, None)
        await self.broker.unsubscribe(topics.connection_topic(self.name, cid))
        if connection.user_id is not None:
            mine = self.users.get(connection.user_id)
            if mine is not None:
                mine.pop(cid, None)
                if not mine:
                    del self.users[connection.user_id]
                    await self.broker.unsubscribe(topics.user_topic(self.name, connection.user_id))
        self.counters["connections_closed"] += 1
        if not self.connections and self._emptied is not None:
            self._emptied.set()
        ws = connection.ws
        if fire_disconnected:
            self._notify("disconnected", connection, ws.close_reason or _close_reason(ws.close_code))

    def _notify(self, kind: str, connection: ClientConnection, reason: str) -> None:
        if self.handler is None or self._notifier_ref is None:
            return
        try:
            self._notifier_ref.tell_nowait((kind, connection.context, reason))
        except Exception:
            self.counters["notifications_dropped"] += 1

    # ---- groups ------------------------------------------------------------------------

    async def join_group(self, connection: ClientConnection, group: str) -> None:
        """Add a local connection to a group. Checkpoint: when the group is new here."""
        local = self.groups.get(group)
        if local is None:
            local = LocalGroup(group, next(self._generation))
            self.groups[group] = local
            local.handle = await self.supervisor.start_child(ChildSpec(
                f"group:{group}#{local.generation}", lambda: GroupActor(local), restart=Restart.TRANSIENT))
            await self.broker.subscribe(topics.group_topic(self.name, group))
        local.members[connection.connection_id] = connection
        connection.groups.add(group)

    async def leave_group(self, connection: ClientConnection, group: str) -> None:
        connection.groups.discard(group)
        local = self.groups.get(group)
        if local is None or local.members.pop(connection.connection_id, None) is None:
            return
        if not local.members:
            del self.groups[group]
            await self.broker.unsubscribe(topics.group_topic(self.name, group))
            if local.handle is not None:
                local.handle.stop()

    # ---- routing -----------------------------------------------------------------------

    async def publish(self, publication: Publication) -> None:
        """Route a publication through the broker. Checkpoint: when it backs up."""
        if publication.origin == "group":
            topic = topics.group_topic(self.name, publication.group)
        else:
            topic = topics.hub_topic(self.name)
        await self.broker.publish(topic, publication)

    async def publish_to(self, topic: str, publication: Publication) -> None:
        await self.broker.publish(topic, publication)

    async def on_publication(self, topic: str, publication: Publication) -> None:
        """The broker hands back a publication for a topic this node subscribed to."""
        kind, _, rest = topic.partition("\x00")
        if kind == "g":
            local = self.groups.get(publication.group)
            if local is None or local.handle is None or local.handle.ref is None:
                return
            ref = local.handle.ref
            try:
                ref.tell_nowait(publication)
            except Exception:
                # Mailbox full (BLOCK policy): wait for room, pushing back on the publisher.
                try:
                    await ref.tell(publication)
                except Exception:
                    self.counters["group_publications_lost"] += 1
                    log.warning("group %r stopped while a publication was queued", publication.group)
            return
        if publication.expires_at is not None and publication.expired():
            self.counters["expired"] += 1
            return
        if kind == "h":
            targets = self.connections.values()
        elif kind == "u":
            user = rest.partition("\x00")[2]
            targets = self.users.get(user, {}).values()
        elif kind == "c":
            cid = rest.partition("\x00")[2]
            connection = self.connections.get(cid)
            targets = (connection,) if connection is not None else ()
        else:
            return
        matches = publication.filter
        for connection in list(targets):
            if publication.excluded and connection.connection_id in publication.excluded:
                continue
            if matches is not None and not matches(connection):
                continue
            connection.deliver_nowait(publication)

    # ---- introspection -----------------------------------------------------------------

    def statistics(self) -> dict:
        return {
            "name": self.name,
            "connections": len(self.connections),
            "users": len(self.users),
            "groups": len(self.groups),
            "counters": dict(self.counters),
            "supervisor": self.supervisor.statistics(),
            "broker": self.broker.statistics(),
        }


def _one_for_one():
    from actors import Strategy

    return Strategy.ONE_FOR_ONE


def _close_reason(code: int | None) -> str:
    if code in (None, 1006):
        return "connection lost"
    if code == 1000:
        return "Normal"
    return f"closed with code {code}"
