"""A hub: its registry of members, users and groups, its group actors, its routing, and
every operation of the service API.

Supervision (see docs/design.md): each hub runs a ``Supervisor`` with
- ``keepalive``: one task that asks every member for a heartbeat (one task per hub instead
  of one per connection: it saves ~2 kB and a wake-up per connection);
- ``notifier``: an actor that runs ``on_connected``/``on_disconnected`` handlers so that a
  slow handler never delays a connection (bounded mailbox; overflow is counted);
- one TRANSIENT ``GroupActor`` per group with local members (started on first join,
  stopped when the last member leaves; a crashed group restarts and its members keep
  their membership, which the hub holds);
- one TEMPORARY task per connection, started by the edge that owns the protocol
  (``start_connection``); a connection is never restarted.

Rules this module keeps:
- The hub knows connections only as ``Member``s; it never imports an edge. What a protocol
  says at connect, recovery or close is the edge's business.
- Membership is the hub's plain data, changed synchronously by join/leave; a group actor
  reads it at delivery time. So a message is never delivered after its recipient's leave
  returned, and every member present from publish to delivery receives it.
- Every registry entry added for a member is removed by ``unregister``, which the edge
  calls in its connection task's ``finally``.
- All sends go through the broker; only ``on_publication`` touches local recipients.
  Every service-API operation is a method here, so routing them across nodes changes this
  class and nothing above it.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Protocol

import trio

from actors import Actor, ChildSpec, Overflow, Restart, Strategy, Supervisor
from fabric.config import HubConfig, ServerConfig
from fabric.core import broker as topics
from fabric.core.counters import HUB_COUNTERS, Counters
from fabric.core.events import ConnectionContext, EventHandler
from fabric.core.permissions import Permissions
from fabric.core.publication import Publication
from fabric.core.telemetry import HubTelemetry
from specs.errors import CloseSituation

if TYPE_CHECKING:
    from fabric.core.broker import Broker

log = logging.getLogger(__name__)

_BY_APP = CloseSituation.CLOSED_BY_APP_SERVER
_SHUTDOWN = CloseSituation.SERVER_SHUTDOWN


def new_connection_id() -> str:
    """128 random bits, base64url: unguessable, URL- and header-safe."""
    return secrets.token_urlsafe(16)


class Member(Protocol):
    """What a hub needs of a connection, whatever protocol it speaks."""

    connection_id: str
    user_id: str | None
    #: Groups this member is in (the hub keeps it in step with its own membership).
    groups: set[str]
    permissions: Permissions

    @property
    def context(self) -> ConnectionContext: ...

    def deliver_nowait(self, publication: Publication) -> None:
        """Queue one publication; never blocks (the fan-out path)."""

    def close_for(self, situation: CloseSituation, message: str | None = None, *, discard: bool = False) -> None:
        """Close as ``specs.errors.CLOSE_RULES`` says for that situation. No checkpoint."""

    def heartbeat(self, now: float, idle_timeout: float) -> bool:
        """Ping if alive; act on silence past ``idle_timeout``. True if it timed out now."""

    def statistics(self) -> dict: ...


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
        recipients = list(members.items())
        sent = len(recipients)  # metrics: counted per publication, not per recipient
        for connection_id, member in recipients:
            if publication.no_echo or publication.excluded:
                if publication.skips(connection_id):
                    sent -= 1
                    continue
            if matches is not None and not matches(member):
                sent -= 1
                continue
            member.deliver_nowait(publication)
        self.group.delivered += 1
        self.group.telemetry.delivered("group", publication, sent)


class LocalGroup:
    """This node's members of one group, and the actor delivering to them."""

    __slots__ = ("name", "members", "handle", "delivered", "expired", "generation", "telemetry")

    def __init__(self, name: str, generation: int, telemetry: HubTelemetry | None = None) -> None:
        self.name = name
        self.telemetry = telemetry if telemetry is not None else HubTelemetry(name, counting=False)
        self.members: dict[str, Member] = {}
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
    """One hub: members, users, groups and routing (see the module's rules)."""

    def __init__(
        self,
        name: str,
        config: HubConfig,
        server_config: ServerConfig,
        broker_factory: Callable[[Callable[[str, Any], Awaitable[None]]], "Broker"],
        handler: EventHandler | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.server_config = server_config
        self.handler = handler
        #: Local members by connection id.
        self.connections: dict[str, Member] = {}
        self.users: dict[str, dict[str, Member]] = {}
        self.groups: dict[str, LocalGroup] = {}
        self.counters = Counters(HUB_COUNTERS)
        #: Connection log lines and the counts /metrics reads (fabric.core.telemetry).
        self.telemetry = HubTelemetry(name)
        self.supervisor = self._new_supervisor()
        self.broker: Broker = broker_factory(self.on_publication)
        self._generation = itertools.count()
        self._notifier_ref = None
        self._started = trio.Event()
        self._emptied: trio.Event | None = None  # set when the last connection leaves (shutdown waits on it)

    def _new_supervisor(self) -> Supervisor:
        return Supervisor(f"hub:{self.name}", strategy=Strategy.ONE_FOR_ONE, max_restarts=10, within=10.0)

    # ---- lifecycle ---------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run the hub's supervisor. Started (and restarted) by the registry's supervisor.

        A restart begins from an empty registry: the previous incarnation's connections
        and group actors were its supervisor's children and ended with it.
        """
        if self._started.is_set() or self.supervisor.statistics().state != "new":
            self.supervisor = self._new_supervisor()
            self.connections.clear()
            self.users.clear()
            self.groups.clear()
            self.telemetry.forget_all()
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

    async def wait_started(self) -> None:
        """Return once the hub's children run. Checkpoint."""
        await self._started.wait()

    async def aclose(self) -> None:
        """Close every connection with 1001 (bounded wait), then stop the supervisor."""
        for member in list(self.connections.values()):
            member.close_for(_SHUTDOWN)
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
            for member in list(self.connections.values()):
                if member.heartbeat(now, idle_timeout):
                    self.counters["ping_timeouts"] += 1

    # ---- members (called by the edges) -------------------------------------------------

    async def start_connection(self, connection_id: str, run: Callable[..., Awaitable[None]]) -> None:
        """Run an edge's connection task as a TEMPORARY child of this hub. Checkpoint.

        ``run`` is called with ``task_status`` and must call ``started()`` at once.
        """
        await self.supervisor.start_child(ChildSpec(
            f"conn:{connection_id}", run, restart=Restart.TEMPORARY,
            shutdown_timeout=self.server_config.shutdown_timeout))

    async def register(self, member: Member) -> None:
        """Make a member reachable (by id, user, and later its groups). Checkpoint."""
        await self._started.wait()
        cid = member.connection_id
        self.connections[cid] = member
        if member.user_id is not None:
            self.users.setdefault(member.user_id, {})[cid] = member
            await self.broker.subscribe(topics.user_topic(self.name, member.user_id))
        await self.broker.subscribe(topics.connection_topic(self.name, cid))
        self.counters["connections_opened"] += 1
        self.telemetry.connection_opened(member)

    async def unregister(self, member: Member, *, disconnected_reason: str | None = None) -> None:
        """Remove every trace of a member; notify ``disconnected`` when a reason is given.
        Checkpoint (call it shielded from a ``finally``)."""
        cid = member.connection_id
        for group in list(member.groups):
            await self.leave_group(member, group)
        self.connections.pop(cid, None)
        await self.broker.unsubscribe(topics.connection_topic(self.name, cid))
        if member.user_id is not None:
            mine = self.users.get(member.user_id)
            if mine is not None:
                mine.pop(cid, None)
                if not mine:
                    del self.users[member.user_id]
                    await self.broker.unsubscribe(topics.user_topic(self.name, member.user_id))
        self.counters["connections_closed"] += 1
        self.telemetry.connection_closed(member, disconnected_reason)
        if not self.connections and self._emptied is not None:
            self._emptied.set()
        if disconnected_reason is not None:
            self.notify("disconnected", member, disconnected_reason)

    def notify(self, kind: str, member: Member, reason: str = "") -> None:
        """Queue a ``connected``/``disconnected`` notification for the handler. No checkpoint."""
        if self.handler is None or self._notifier_ref is None:
            return
        try:
            self._notifier_ref.tell_nowait((kind, member.context, reason))
        except Exception:
            self.counters["notifications_dropped"] += 1

    def local_member(self, connection_id: str) -> Member | None:
        """The member with that id if it lives in this process (edges use it for recovery)."""
        return self.connections.get(connection_id)

    # ---- groups ------------------------------------------------------------------------

    async def join_group(self, member: Member, group: str) -> None:
        """Add a local member to a group. Checkpoint: when the group is new here."""
        local = self.groups.get(group)
        if local is None:
            local = LocalGroup(group, next(self._generation), self.telemetry)
            self.groups[group] = local
            local.handle = await self.supervisor.start_child(ChildSpec(
                f"group:{group}#{local.generation}", lambda: GroupActor(local), restart=Restart.TRANSIENT))
            await self.broker.subscribe(topics.group_topic(self.name, group))
        local.members[member.connection_id] = member
        member.groups.add(group)

    async def leave_group(self, member: Member, group: str) -> None:
        member.groups.discard(group)
        local = self.groups.get(group)
        if local is None or local.members.pop(member.connection_id, None) is None:
            return
        if not local.members:
            del self.groups[group]
            await self.broker.unsubscribe(topics.group_topic(self.name, group))
            if local.handle is not None:
                local.handle.stop()

    async def _join_live(self, member: Member, group: str) -> None:
        """Join, then undo it if the member left while the join waited."""
        await self.join_group(member, group)
        if self.connections.get(member.connection_id) is not member:
            await self.leave_group(member, group)

    # ---- the service API: membership by id ---------------------------------------------

    async def add_to_group(self, connection_id: str, group: str) -> bool:
        """False if there is no such connection."""
        member = self.connections.get(connection_id)
        if member is None:
            return False
        await self._join_live(member, group)
        return True

    async def remove_from_group(self, connection_id: str, group: str) -> None:
        member = self.connections.get(connection_id)
        if member is not None:
            await self.leave_group(member, group)

    async def remove_from_all_groups(self, connection_id: str) -> None:
        member = self.connections.get(connection_id)
        if member is not None:
            for group in list(member.groups):
                await self.leave_group(member, group)

    async def add_user_to_group(self, user_id: str, group: str) -> bool:
        """Add every connection of the user. False if the user has no connection."""
        members = list(self.users.get(user_id, {}).values())
        for member in members:
            await self._join_live(member, group)
        return bool(members)

    async def remove_user_from_group(self, user_id: str, group: str) -> None:
        for member in list(self.users.get(user_id, {}).values()):
            await self.leave_group(member, group)

    async def remove_user_from_all_groups(self, user_id: str) -> None:
        for member in list(self.users.get(user_id, {}).values()):
            for group in list(member.groups):
                await self.leave_group(member, group)

    async def add_connections_to_groups(self, groups: Iterable[str], selects: Callable[[Any], bool] | None) -> int:
        """Add every connection ``selects`` picks (all, when None) to every group; how many."""
        names = list(groups)
        chosen = [m for m in list(self.connections.values()) if selects is None or selects(m)]
        for member in chosen:
            for group in names:
                if self.connections.get(member.connection_id) is member:
                    await self._join_live(member, group)
        return len(chosen)

    async def remove_connections_from_groups(self, groups: Iterable[str],
                                             selects: Callable[[Any], bool] | None) -> int:
        names = list(groups)
        chosen = [m for m in list(self.connections.values()) if selects is None or selects(m)]
        for member in chosen:
            for group in names:
                await self.leave_group(member, group)
        return len(chosen)

    async def group_members(self, group: str) -> list[tuple[str, str | None]]:
        """``(connection_id, user_id)`` of every member, ordered by connection id."""
        local = self.groups.get(group)
        if local is None:
            return []
        return [(cid, local.members[cid].user_id) for cid in sorted(local.members)]

    # ---- the service API: closing ------------------------------------------------------

    async def close_connection(self, connection_id: str, reason: str) -> None:
        member = self.connections.get(connection_id)
        if member is not None:
            member.close_for(_BY_APP, reason)

    def _close_each(self, members: Iterable[Member], excluded: frozenset[str], reason: str) -> None:
        for member in list(members):
            if member.connection_id not in excluded:
                member.close_for(_BY_APP, reason)

    async def close_all(self, excluded: frozenset[str], reason: str) -> None:
        self._close_each(self.connections.values(), excluded, reason)

    async def close_group(self, group: str, excluded: frozenset[str], reason: str) -> None:
        local = self.groups.get(group)
        self._close_each(local.members.values() if local else (), excluded, reason)

    async def close_user(self, user_id: str, excluded: frozenset[str], reason: str) -> None:
        self._close_each(self.users.get(user_id, {}).values(), excluded, reason)

    # ---- the service API: queries and permissions --------------------------------------

    async def connection_exists(self, connection_id: str) -> bool:
        return connection_id in self.connections

    async def group_exists(self, group: str) -> bool:
        local = self.groups.get(group)
        return bool(local and local.members)

    async def user_exists(self, user_id: str) -> bool:
        return bool(self.users.get(user_id))

    async def grant_permission(self, connection_id: str, permission: str, target: str | None) -> bool:
        """False if there is no such connection. Raises ``TooManyPermissions``."""
        member = self.connections.get(connection_id)
        if member is None:
            return False
        member.permissions.grant(permission, target)
        return True

    async def revoke_permission(self, connection_id: str, permission: str, target: str | None) -> None:
        member = self.connections.get(connection_id)
        if member is not None:
            member.permissions.revoke(permission, target)

    async def has_permission(self, connection_id: str, permission: str, target: str | None) -> bool:
        member = self.connections.get(connection_id)
        return member is not None and member.permissions.has(permission, target)

    # ---- routing -----------------------------------------------------------------------

    async def publish(self, publication: Publication) -> None:
        """Route a group publication (or a hub-wide one) through the broker. Checkpoint:
        when it backs up."""
        if publication.origin == "group":
            topic = topics.group_topic(self.name, publication.group)
        else:
            topic = topics.hub_topic(self.name)
        self.telemetry.published("group" if publication.origin == "group" else "hub", publication)
        await self.broker.publish(topic, publication)

    async def send_to_all(self, publication: Publication) -> None:
        self.telemetry.published("hub", publication)
        await self.broker.publish(topics.hub_topic(self.name), publication)

    async def send_to_user(self, user_id: str, publication: Publication) -> None:
        self.telemetry.published("user", publication)
        await self.broker.publish(topics.user_topic(self.name, user_id), publication)

    async def send_to_connection(self, connection_id: str, publication: Publication) -> None:
        self.telemetry.published("connection", publication)
        await self.broker.publish(topics.connection_topic(self.name, connection_id), publication)

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
            kind = "hub"
            targets = self.connections.values()
        elif kind == "u":
            kind = "user"
            user = rest.partition("\x00")[2]
            targets = self.users.get(user, {}).values()
        elif kind == "c":
            kind = "connection"
            cid = rest.partition("\x00")[2]
            member = self.connections.get(cid)
            targets = (member,) if member is not None else ()
        else:
            return
        matches = publication.filter
        recipients = list(targets)
        sent = len(recipients)  # metrics: counted per publication, not per recipient
        for member in recipients:
            if publication.excluded and member.connection_id in publication.excluded:
                sent -= 1
                continue
            if matches is not None and not matches(member):
                sent -= 1
                continue
            member.deliver_nowait(publication)
        self.telemetry.delivered(kind, publication, sent)

    # ---- introspection -----------------------------------------------------------------

    def statistics(self) -> dict:
        return {
            "name": self.name,
            "connections": len(self.connections),
            "users": len(self.users),
            "groups": len(self.groups),
            "counters": self.counters.as_dict(),
            "supervisor": self.supervisor.statistics(),
            "broker": self.broker.statistics(),
        }
