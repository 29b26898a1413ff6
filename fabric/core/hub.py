"""A hub: its registry of members, users and groups, its group actors, its routing, and
every operation of the service API.

Supervision (see docs/design.md): each hub runs a ``Supervisor`` with
- ``keepalive``: one task that asks every member for a heartbeat (one task per hub instead
  of one per connection: it saves ~2 kB and a wake-up per connection);
- ``notifier``: an actor that runs ``on_connected``/``on_disconnected`` and the group
  presence handlers (``on_group_joined``/``on_group_left``) so that a slow handler never
  delays a connection, all of a hub's in the order they happened (bounded mailbox;
  overflow is counted);
- one TRANSIENT ``GroupActor`` per group with local members (started on first join,
  stopped when the last member leaves; a crashed group restarts and its members keep
  their membership, which the hub holds), except *inline* groups, meant for one member
  (a Socket.IO socket's own room), whose publications are delivered as they arrive. A
  publication that finds its group's actor idle with an empty mailbox (and the group small:
  ``INLINE_MAX_MEMBERS``) is delivered in place too, saving the actor's wake-up; it cannot
  overtake one queued before it, so each publisher's order is the actor's;
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
- Every operation behaves the same whether the target lives here or on another node. With
  one node (the memory broker alone: ``fabric serve`` without Redis) operations act on
  local members directly, with no command object and no encoding. With several, an
  operation is a ``Command`` published on its target's topic; every node it reaches
  (this one included) applies it in its ``commands`` task, in arrival order, and answers
  on the requester's reply topic; the requester waits for as many answers as the broker
  says it reached, at most ``request_timeout``. ``exists`` asks no node: a target exists
  while some node subscribes its topic (the broker's count). An edge's own operation
  (``on_edge``) travels the same way as the op ``edge`` with its name; answers that go on
  after the one reply use a stream (``open_stream``, at most ``MAX_STREAMS`` open).
- ``on_publication`` never waits for a command (it may run in the broker's reader, which
  also confirms the subscriptions a command's join waits for): commands are queued
  (bounded; overflow is counted and the requester times out).
- Publishing never fails because of the broker: a broker that cannot reach other nodes
  raises after local delivery; that is counted (``broker_publish_failed``) and logged at
  most every ``_WARN_EVERY`` seconds.
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
from fabric.core import ids
from fabric.core.broker import BrokerUnavailable
from fabric.core.commands import PROBE, Command, Reply
from fabric.core.counters import HUB_COUNTERS, Counters
from fabric.core.events import (
    ConnectionContext,
    EventHandler,
    call_notification,
    handles_system_event,
)
from fabric.core.permissions import Permissions, TooManyPermissions
from fabric.core.publication import Publication
from fabric.core.telemetry import HubTelemetry
from specs.errors import CloseSituation

if TYPE_CHECKING:
    from fabric.core.broker import Broker

log = logging.getLogger(__name__)

_BY_APP = CloseSituation.CLOSED_BY_APP_SERVER
_SHUTDOWN = CloseSituation.SERVER_SHUTDOWN

#: Requests of one hub waiting for answers at once (more wait for room).
MAX_PENDING_REQUESTS = 1024
#: Commands queued for one hub's command task (more are dropped and counted).
COMMAND_QUEUE = 16384
#: A group publication finding the group's actor idle with an empty mailbox is delivered in
#: place when the group has at most this many members here (a larger fan-out stays on the
#: actor's task, off the publisher's and the broker reader's).
INLINE_MAX_MEMBERS = 64
#: Streams of one hub open at once (``open_stream``): edge operations whose answers go on
#: arriving after the command's one reply.
MAX_STREAMS = 1024
#: Joins or leaves of a by-filter group operation between two checkpoints.
FILTER_SLICE = 64
_WARN_EVERY = 10.0
_PRESENCE = frozenset({"joined", "left"})
_TOO_MANY = "!TooManyPermissions"


class _Pending:
    """The replies gathered for one request; ``done`` once ``expected`` arrived."""

    __slots__ = ("done", "expected", "replies")

    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.expected: int | None = None
        self.done = trio.Event()

    def expect(self, count: int | None) -> None:
        self.expected = count or 0
        if len(self.replies) >= self.expected:
            self.done.set()

    def add(self, reply: Reply) -> None:
        self.replies.append(reply)
        if self.expected is not None and len(self.replies) >= self.expected:
            self.done.set()


def _any(replies: list[Reply]) -> bool:
    return any(reply.value for reply in replies)


def _sum(replies: list[Reply]) -> int:
    return sum(reply.value for reply in replies if isinstance(reply.value, int))


def _raising(replies: list[Reply]) -> list[Reply]:
    if any(reply.value == _TOO_MANY for reply in replies):
        raise TooManyPermissions("too many permission entries")
    return replies


def new_connection_id() -> str:
    """128 random bits, base64url: unguessable, URL- and header-safe."""
    return ids.random_id(16)


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


class _Barrier:
    """Queued behind a group's publications: ``done`` once they were all delivered."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = trio.Event()


class GroupActor(Actor):
    """Delivers a group's publications to its local members, one publication at a time."""

    mailbox_size = 256
    overflow = Overflow.BLOCK

    def __init__(self, group: "LocalGroup") -> None:
        self.group = group
        # Made anew for every (re)start, with an empty mailbox: what a crashed incarnation
        # still had queued died with it, so nothing is queued now (else in-place delivery,
        # which waits for zero, would stay off for the group's life).
        group.queued = 0

    async def handle(self, publication: Publication) -> None:
        self.group.queued -= 1  # (no checkpoint below: nothing of this group runs meanwhile)
        if publication.__class__ is _Barrier:
            publication.done.set()  # everything queued before it was delivered
            return
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
    """This node's members of one group, and the actor delivering to them (none for an
    ``inline`` group: its publications are delivered as they arrive, see ``join_group``)."""

    __slots__ = ("name", "members", "handle", "delivered", "expired", "generation", "telemetry", "inline",
                 "queued")

    def __init__(self, name: str, generation: int, telemetry: HubTelemetry | None = None,
                 inline: bool = False) -> None:
        self.name = name
        self.inline = inline
        self.telemetry = telemetry if telemetry is not None else HubTelemetry(name, counting=False)
        self.members: dict[str, Member] = {}
        self.handle = None
        self.delivered = 0
        self.expired = 0
        self.generation = generation
        #: Messages told to the actor and not yet handled (0: its mailbox is empty and it is
        #: idle, so a publication may be delivered in place without overtaking one).
        self.queued = 0


class Notifier(Actor):
    """Runs connected/disconnected and joined/left notifications off the connections' paths,
    one at a time: a handler sees a hub's notifications in the order they happened (a
    connection's groups joined at connect, then ``connected``; every group left, then
    ``disconnected``). A full mailbox refuses (``Hub.notify`` counts the drop)."""

    mailbox_size = 4096
    overflow = Overflow.FAIL

    def __init__(self, hub: "Hub") -> None:
        self.hub = hub

    async def handle(self, message: tuple[str, Any, str]) -> None:
        kind, context, detail = message
        hub = self.hub
        handler = hub.handler
        if handler is None:
            return
        try:
            if kind == "connected":
                await handler.on_connected(context)
            elif kind == "disconnected":
                await handler.on_disconnected(context, detail)
            elif handles_system_event(handler, kind):  # joined / left, ``detail`` the group
                await call_notification(handler, kind, context, detail, timeout=hub.server_config.upstream_timeout)
                hub.counters["presence_events"] += 1
        except Exception:
            hub.counters["handler_failures"] += 1
            log.exception("%s handler failed in hub %r", kind, hub.name)


class Hub:
    """One hub: members, users, groups and routing (see the module's rules)."""

    def __init__(
        self,
        name: str,
        config: HubConfig,
        server_config: ServerConfig,
        broker_factory: Callable[[Callable[[str, Any], Awaitable[None]]], "Broker"],
        handler: EventHandler | None = None,
        *,
        request_timeout: float = 5.0,
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
        #: Seconds an operation waits for the other nodes' answers.
        self.request_timeout = request_timeout
        self._hub_topic = topics.hub_topic(name)
        #: This hub's reply topic: answers to its requests (one per hub incarnation).
        self.reply_topic = topics.node_topic(name, secrets.token_urlsafe(9))
        self._alone = getattr(self.broker, "alone", None)
        self._broker_send = getattr(self.broker, "send", None) or self.broker.publish
        self._requests: dict[int, _Pending] = {}
        self._request_ids = itertools.count(1)
        self._request_slots = trio.Semaphore(MAX_PENDING_REQUESTS)
        self._commands_in, self._commands_out = trio.open_memory_channel(COMMAND_QUEUE)
        self._warned: dict[str, float] = {}
        self._generation = itertools.count()
        self._notifier_ref = None
        self._started = trio.Event()
        self._emptied: trio.Event | None = None  # set when the last connection leaves (shutdown waits on it)
        #: Names under which a detached session answers claims (``alias``).
        self._aliases: dict[str, Any] = {}
        #: What this node holds for the hub that other nodes may ask about (``mark``).
        self._marks: set[str] = set()
        #: Edge operations by name (``on_edge``) and open streams by id (``open_stream``).
        self._edge_ops: dict[str, Callable[[tuple, Any], Awaitable[Any]]] = {}
        self._streams: dict[int, Callable[[Reply], None]] = {}

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
            self._aliases.clear()
            self.telemetry.forget_all()
            self._started = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.supervisor.run)
            notifier = await self.supervisor.start_child(
                ChildSpec("notifier", lambda: Notifier(self), restart=Restart.PERMANENT))
            self._notifier_ref = notifier.ref
            await self.supervisor.start_child(ChildSpec("keepalive", self._keepalive, restart=Restart.PERMANENT))
            # Beside the supervisor (it catches every command's failure): commands from the
            # other nodes, and this node's own when it is not alone.
            nursery.start_soon(self._command_worker)
            await self.broker.subscribe(self.reply_topic)
            await self.broker.subscribe(self._hub_topic)
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

    def start_connection_soon(self, connection_id: str, run: Callable[..., Awaitable[None]]) -> None:
        """``start_connection`` without waiting for the task to start. No checkpoint.

        ``run`` must call ``task_status.started()`` at once; it runs on the scheduler's next
        pass (``Supervisor.start_child_soon``: no ``nursery.start`` per connection).
        """
        self.supervisor.start_child_soon(ChildSpec(
            f"conn:{connection_id}", run, restart=Restart.TEMPORARY,
            shutdown_timeout=self.server_config.shutdown_timeout))

    async def register(self, member: Member) -> None:
        """Make a member reachable (by id, user, and later its groups). Checkpoint: only while
        the hub is starting, or when the broker's subscribe is one (Redis); with the memory
        broker a running hub registers in place, so a connection task registers in the same
        step that started it."""
        started = self._started
        if not started.is_set():
            await started.wait()
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
        done = 0
        while member.groups:  # (a join that raced a slice's checkpoint is left in the next round)
            for group in list(member.groups):
                await self.leave_group(member, group)
                done += 1
                if done % FILTER_SLICE == 0:  # thousands of groups: others run meanwhile
                    await trio.lowlevel.checkpoint()
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
        """Queue a ``connected``/``disconnected`` notification for the handler, or a group
        presence one (``joined``/``left``, ``reason`` the group; the edge decides what is a
        real change and whether its handler wants it). No checkpoint."""
        if self.handler is None or self._notifier_ref is None:
            if kind in _PRESENCE and self.handler is not None:
                self.counters["presence_dropped"] += 1
            return
        try:
            self._notifier_ref.tell_nowait((kind, member.context, reason))
        except Exception:
            self.counters["presence_dropped" if kind in _PRESENCE else "notifications_dropped"] += 1

    def local_member(self, connection_id: str) -> Member | None:
        """The member with that id if it lives in this process (edges use it for recovery)."""
        return self.connections.get(connection_id)

    # ---- groups ------------------------------------------------------------------------

    async def join_group(self, member: Member, group: str, *, inline: bool = False) -> None:
        """Add a local member to a group. Checkpoint: when the group is new here.

        ``inline``: if the group is new here, it gets no actor; its publications are
        delivered to its members as they arrive from the broker (a group of one member, such
        as a Socket.IO socket's own room, costs a registry entry and a subscription, not a
        task). Members that join it later share that."""
        local = self.groups.get(group)
        if local is None:
            # (an inline group has no actor to name: generation 0, a shared small int)
            local = LocalGroup(group, 0 if inline else next(self._generation), self.telemetry, inline)
            self.groups[group] = local
            if not inline:
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

    # ---- the service API -----------------------------------------------------------
    #
    # Each operation acts on local members through a ``_local_*`` method. When this is the
    # hub's only node (the memory broker with one node: ``fabric serve`` without Redis) it
    # calls that method directly; otherwise it publishes a ``Command`` on the target's
    # topic and every node the topic reaches (this one included) applies the same method
    # and answers (see ``_request``).

    def _solo(self) -> bool:
        """True when every member of this hub lives in this process (no other node). No checkpoint."""
        alone = self._alone
        return alone is not None and alone(self._hub_topic)

    async def add_to_group(self, connection_id: str, group: str) -> bool:
        """False if there is no such connection."""
        if self._solo():
            return await self._local_join(connection_id, group)
        return _any(await self._request(self._conn_topic(connection_id), "join", (connection_id, group)))

    async def remove_from_group(self, connection_id: str, group: str) -> None:
        if self._solo():
            return await self._local_leave(connection_id, group)
        await self._request(self._conn_topic(connection_id), "leave", (connection_id, group))

    async def remove_from_all_groups(self, connection_id: str) -> None:
        if self._solo():
            return await self._local_leave_all(connection_id)
        await self._request(self._conn_topic(connection_id), "leave_all", (connection_id,))

    async def add_user_to_group(self, user_id: str, group: str) -> bool:
        """Add every connection of the user. False if the user has no connection."""
        if self._solo():
            return await self._local_user_join(user_id, group)
        return _any(await self._request(topics.user_topic(self.name, user_id), "ujoin", (user_id, group)))

    async def remove_user_from_group(self, user_id: str, group: str) -> None:
        if self._solo():
            return await self._local_user_leave(user_id, group)
        await self._request(topics.user_topic(self.name, user_id), "uleave", (user_id, group))

    async def remove_user_from_all_groups(self, user_id: str) -> None:
        if self._solo():
            return await self._local_user_leave_all(user_id)
        await self._request(topics.user_topic(self.name, user_id), "uleave_all", (user_id,))

    async def add_connections_to_groups(self, groups: Iterable[str], selects: Callable[[Any], bool] | None) -> int:
        """Add every connection ``selects`` picks (all, when None) to every group; how many."""
        names = list(groups)
        if self._solo():
            return await self._local_filter_join(names, selects)
        return _sum(await self._request(self._hub_topic, "fjoin", (names,), filter=selects))

    async def remove_connections_from_groups(self, groups: Iterable[str],
                                             selects: Callable[[Any], bool] | None) -> int:
        names = list(groups)
        if self._solo():
            return await self._local_filter_leave(names, selects)
        return _sum(await self._request(self._hub_topic, "fleave", (names,), filter=selects))

    async def group_members(self, group: str) -> list[tuple[str, str | None]]:
        """``(connection_id, user_id)`` of every member, ordered by connection id."""
        if self._solo():
            return self._local_members(group)
        found: dict[str, str | None] = {}
        for reply in await self._request(topics.group_topic(self.name, group), "members", (group,)):
            for cid, user in reply.value or ():
                found[cid] = user  # a session moving between nodes is listed by both: once here
        return [(cid, found[cid]) for cid in sorted(found)]

    async def close_connection(self, connection_id: str, reason: str) -> None:
        if self._solo():
            return self._local_close(connection_id, reason)
        await self._request(self._conn_topic(connection_id), "close", (connection_id, reason))

    async def close_all(self, excluded: frozenset[str], reason: str) -> None:
        if self._solo():
            return self._local_close_all(excluded, reason)
        await self._request(self._hub_topic, "close_all", (sorted(excluded), reason))

    async def close_group(self, group: str, excluded: frozenset[str], reason: str) -> None:
        if self._solo():
            return self._local_close_group(group, excluded, reason)
        await self._request(topics.group_topic(self.name, group), "close_group", (group, sorted(excluded), reason))

    async def close_user(self, user_id: str, excluded: frozenset[str], reason: str) -> None:
        if self._solo():
            return self._local_close_user(user_id, excluded, reason)
        await self._request(topics.user_topic(self.name, user_id), "close_user", (user_id, sorted(excluded), reason))

    async def connection_exists(self, connection_id: str) -> bool:
        if self._solo():
            return connection_id in self.connections
        return await self._reaches(self._conn_topic(connection_id))

    async def group_exists(self, group: str) -> bool:
        if self._solo():
            local = self.groups.get(group)
            return bool(local and local.members)
        return await self._reaches(topics.group_topic(self.name, group))

    async def user_exists(self, user_id: str) -> bool:
        if self._solo():
            return bool(self.users.get(user_id))
        return await self._reaches(topics.user_topic(self.name, user_id))

    async def grant_permission(self, connection_id: str, permission: str, target: str | None) -> bool:
        """False if there is no such connection. Raises ``TooManyPermissions``."""
        if self._solo():
            return self._local_grant(connection_id, permission, target)
        return _any(_raising(await self._request(self._conn_topic(connection_id), "grant",
                                                 (connection_id, permission, target))))

    async def revoke_permission(self, connection_id: str, permission: str, target: str | None) -> None:
        """Raises ``TooManyPermissions``."""
        if self._solo():
            return self._local_revoke(connection_id, permission, target)
        _raising(await self._request(self._conn_topic(connection_id), "revoke", (connection_id, permission, target)))

    async def has_permission(self, connection_id: str, permission: str, target: str | None) -> bool:
        if self._solo():
            return self._local_has_permission(connection_id, permission, target)
        return _any(await self._request(self._conn_topic(connection_id), "has_perm",
                                        (connection_id, permission, target)))

    # ---- moving a reliable session between nodes (hooks for the edges) --------------

    async def claim_session(self, connection_id: str, token: str, protocol: str | None, *,
                            anywhere: bool = False) -> tuple[Any, str] | None:
        """Ask the node holding ``connection_id`` (not this one) to hand its session over:
        ``(snapshot, owner)``, where the snapshot is whatever that member's
        ``export_session(token, protocol, timeout)`` returned, or None when no node has such
        a session or it refused. The owner keeps the session (buffering) until
        ``release_session``, or until ``timeout`` (the request timeout) passes. ``anywhere``:
        ask every node (the session is an ``alias``, not a subscribed connection). Checkpoint."""
        if self._solo():
            return None
        topic = self._hub_topic if anywhere else self._conn_topic(connection_id)
        for reply in await self._request(topic, "claim", (connection_id, token, protocol)):
            if reply.value is not None and reply.node is not None and reply.node != self.reply_topic:
                return reply.value, reply.node
        return None

    async def release_session(self, owner: str, connection_id: str, claim: str) -> Any:
        """The second step of a claim: the owner's ``release_session(claim)`` (the session's
        unacked messages, say), after which the owner forgets the session without a
        ``disconnected`` event. None if the owner is gone or gave up. Checkpoint."""
        for reply in await self._request(owner, "release", (connection_id, claim)):
            if reply.value is not None:
                return reply.value
        return None

    # ---- local effects (one node's share of each operation) --------------------------

    async def _local_join(self, connection_id: str, group: str) -> bool:
        member = self.connections.get(connection_id)
        if member is None:
            return False
        await self._join_live(member, group)
        return True

    async def _local_leave(self, connection_id: str, group: str) -> None:
        member = self.connections.get(connection_id)
        if member is not None:
            await self.leave_group(member, group)

    async def _local_leave_all(self, connection_id: str) -> None:
        member = self.connections.get(connection_id)
        if member is not None:
            for group in list(member.groups):
                await self.leave_group(member, group)

    async def _local_user_join(self, user_id: str, group: str) -> bool:
        members = list(self.users.get(user_id, {}).values())
        for member in members:
            await self._join_live(member, group)
        return bool(members)

    async def _local_user_leave(self, user_id: str, group: str) -> None:
        for member in list(self.users.get(user_id, {}).values()):
            await self.leave_group(member, group)

    async def _local_user_leave_all(self, user_id: str) -> None:
        for member in list(self.users.get(user_id, {}).values()):
            for group in list(member.groups):
                await self.leave_group(member, group)

    async def _local_filter_join(self, names: list[str], selects: Callable[[Any], bool] | None) -> int:
        """Checkpoint: every ``FILTER_SLICE`` joins at least (groups times connections can be
        large; the rest of the hub and the process keep being served meanwhile)."""
        chosen = [m for m in list(self.connections.values()) if selects is None or selects(m)]
        done = 0
        for member in chosen:
            for group in names:
                if self.connections.get(member.connection_id) is member:
                    await self._join_live(member, group)
                done += 1
                if done % FILTER_SLICE == 0:
                    await trio.lowlevel.checkpoint()
        return len(chosen)

    async def _local_filter_leave(self, names: list[str], selects: Callable[[Any], bool] | None) -> int:
        """Checkpoint: as ``_local_filter_join``."""
        chosen = [m for m in list(self.connections.values()) if selects is None or selects(m)]
        done = 0
        for member in chosen:
            for group in names:
                await self.leave_group(member, group)
                done += 1
                if done % FILTER_SLICE == 0:
                    await trio.lowlevel.checkpoint()
        return len(chosen)

    def _local_members(self, group: str) -> list[tuple[str, str | None]]:
        local = self.groups.get(group)
        if local is None:
            return []
        return [(cid, local.members[cid].user_id) for cid in sorted(local.members)]

    def _local_close(self, connection_id: str, reason: str) -> None:
        member = self.connections.get(connection_id)
        if member is not None:
            member.close_for(_BY_APP, reason)

    def _close_each(self, members: Iterable[Member], excluded: frozenset[str], reason: str) -> None:
        for member in list(members):
            if member.connection_id not in excluded:
                member.close_for(_BY_APP, reason)

    def _local_close_all(self, excluded: frozenset[str], reason: str) -> None:
        self._close_each(self.connections.values(), excluded, reason)

    def _local_close_group(self, group: str, excluded: frozenset[str], reason: str) -> None:
        local = self.groups.get(group)
        self._close_each(local.members.values() if local else (), excluded, reason)

    def _local_close_user(self, user_id: str, excluded: frozenset[str], reason: str) -> None:
        self._close_each(self.users.get(user_id, {}).values(), excluded, reason)

    def _local_grant(self, connection_id: str, permission: str, target: str | None) -> bool:
        member = self.connections.get(connection_id)
        if member is None:
            return False
        member.permissions.grant(permission, target)
        return True

    def _local_revoke(self, connection_id: str, permission: str, target: str | None) -> None:
        member = self.connections.get(connection_id)
        if member is not None:
            member.permissions.revoke(permission, target)

    def _local_has_permission(self, connection_id: str, permission: str, target: str | None) -> bool:
        member = self.connections.get(connection_id)
        return member is not None and member.permissions.has(permission, target)

    def alias(self, name: str, member: Any | None) -> None:
        """Let claims and releases for ``name`` (``claim_session(..., anywhere=True)``) reach
        ``member`` (its ``export_session``/``release_session``/``groups``), or forget the
        name (None). For a session that is no registered connection. No checkpoint."""
        if member is None:
            self._aliases.pop(name, None)
        else:
            self._aliases[name] = member

    def _session_holder(self, connection_id: str) -> Any:
        member = self.connections.get(connection_id)
        return member if member is not None else self._aliases.get(connection_id)

    def _local_claim(self, connection_id: str, token: str, protocol: str | None) -> Any:
        member = self._session_holder(connection_id)
        export = getattr(member, "export_session", None)
        return export(token, protocol, self.request_timeout) if export is not None else None

    async def flush_groups(self, member: Member) -> None:
        """Return once every publication already queued for ``member``'s groups on this node
        was delivered (a session moving between nodes must not leave one behind in a group
        actor's mailbox). Bounded by ``request_timeout``. Checkpoint."""
        with trio.move_on_after(self.request_timeout):
            for group in list(member.groups):
                local = self.groups.get(group)
                ref = local.handle.ref if local is not None and local.handle is not None else None
                if ref is None:
                    continue
                barrier = _Barrier()
                local.queued += 1
                try:
                    await ref.tell(barrier)
                except Exception:  # noqa: BLE001, S112 - the group stopped: nothing of it is queued any more
                    local.queued -= 1
                    continue
                await barrier.done.wait()

    async def _local_release(self, connection_id: str, claim: str) -> Any:
        member = self._session_holder(connection_id)
        release = getattr(member, "release_session", None)
        if release is None:
            return None
        await self.flush_groups(member)
        value = release(claim)
        if value is not None:
            self.counters["sessions_handed_over"] += 1
        return value

    async def _apply(self, command: Command) -> Any:
        """This node's share of a command. Checkpoint: joins may subscribe."""
        op, a = command.op, command.args
        if op == "join":
            return await self._local_join(a[0], a[1])
        if op == "leave":
            return await self._local_leave(a[0], a[1])
        if op == "leave_all":
            return await self._local_leave_all(a[0])
        if op == "ujoin":
            return await self._local_user_join(a[0], a[1])
        if op == "uleave":
            return await self._local_user_leave(a[0], a[1])
        if op == "uleave_all":
            return await self._local_user_leave_all(a[0])
        if op == "fjoin":
            return await self._local_filter_join(list(a[0]), command.filter)
        if op == "fleave":
            return await self._local_filter_leave(list(a[0]), command.filter)
        if op == "members":
            return self._local_members(a[0])
        if op == "close":
            return self._local_close(a[0], a[1])
        if op == "close_all":
            return self._local_close_all(frozenset(a[0]), a[1])
        if op == "close_group":
            return self._local_close_group(a[0], frozenset(a[1]), a[2])
        if op == "close_user":
            return self._local_close_user(a[0], frozenset(a[1]), a[2])
        if op == "grant":
            return self._local_grant(a[0], a[1], a[2])
        if op == "revoke":
            return self._local_revoke(a[0], a[1], a[2])
        if op == "has_perm":
            return self._local_has_permission(a[0], a[1], a[2])
        if op == "claim":
            return self._local_claim(a[0], a[1], a[2])
        if op == "release":
            return await self._local_release(a[0], a[1])
        if op == "edge":
            handler = self._edge_ops.get(a[0]) if a else None
            return await handler(tuple(a[1:]), command.filter) if handler is not None else None
        return None  # "probe" (a stray request answered "nothing here")

    # ---- marks: a flag of this node that other nodes can see ------------------------------

    def _mark_topic(self, name: str) -> str:
        return f"m\x00{self.name}\x00{name}"

    async def mark(self, name: str) -> None:
        """Say that this node holds ``name`` for this hub (an edge's flag: nothing is sent on
        it); ``marked(name)`` on any node sees it while this hub runs. Checkpoint."""
        if name not in self._marks:
            self._marks.add(name)
            await self.broker.subscribe(self._mark_topic(name))

    async def marked(self, name: str) -> bool:
        """Whether any node of the fabric (this one included) holds ``name``. Checkpoint."""
        if name in self._marks:
            return True
        if self._solo():
            return False
        return await self._reaches(self._mark_topic(name))

    # ---- edge operations: an edge's own command, applied by that edge on every node --------
    #
    # The core does not know the edges: an edge registers a handler under a name, and
    # ``edge_request`` runs it on every node of the hub (this one included), each node's
    # handler answering once. A handler whose work goes on (answers that stream) sends them
    # on the requester's stream (``open_stream``/``stream_send``): replies on the reply topic
    # whose id is the stream's, in order per node.

    def on_edge(self, name: str, handler: Callable[[tuple, Any], Awaitable[Any]]) -> None:
        """Apply ``handler(args, filter)`` to ``edge_request(name, args)`` from any node; its
        value is this node's reply. No checkpoint."""
        self._edge_ops[name] = handler

    async def edge_request(self, name: str, args: tuple = (), *, filter: Any = None) -> list[Reply]:
        """Run the edge operation ``name`` on every node of the hub; one reply per node
        (those that answered within ``request_timeout``). Checkpoint."""
        return await self._request(self._hub_topic, "edge", (name, *args), filter=filter)

    async def edge_tell(self, name: str, args: tuple = ()) -> None:
        """Run the edge operation ``name`` on every node of the hub, no reply wanted.
        Checkpoint."""
        try:
            await self.broker.publish(self._hub_topic, Command("edge", (name, *args)))
        except BrokerUnavailable as exc:
            self._broker_failed(exc)
        except trio.ClosedResourceError:
            self.counters["broker_closed"] += 1

    def single_node(self) -> bool:
        """True when no other node runs this hub's topics (every member is here). No
        checkpoint."""
        return self._solo()

    def open_stream(self, receive: Callable[[Reply], None]) -> int | None:
        """A stream id for answers sent with ``stream_send`` to ``reply_topic``: each is
        passed to ``receive`` (which must not block), until ``close_stream``. None when
        ``MAX_STREAMS`` are open. No checkpoint."""
        if len(self._streams) >= MAX_STREAMS:
            return None
        stream_id = next(self._request_ids)
        self._streams[stream_id] = receive
        return stream_id

    def close_stream(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)

    async def stream_send(self, reply_to: str, stream_id: int, value: Any) -> None:
        """One answer on another node's (or this node's) stream. Checkpoint."""
        reply = Reply(stream_id, value, self.reply_topic)
        if reply_to == self.reply_topic:
            self._on_control(reply_to, reply)
            await trio.lowlevel.checkpoint()
            return
        try:
            await self.broker.publish(reply_to, reply)
        except BrokerUnavailable as exc:
            self._broker_failed(exc)
        except trio.ClosedResourceError:
            self.counters["broker_closed"] += 1

    # ---- requests between nodes ------------------------------------------------------

    def _conn_topic(self, connection_id: str) -> str:
        return topics.connection_topic(self.name, connection_id)

    async def _reaches(self, topic: str) -> bool:
        """Whether any node subscribes ``topic`` (the broker's count of a no-op command:
        subscriptions are the presence). Checkpoint."""
        try:
            count = await self.broker.publish(topic, PROBE)
        except BrokerUnavailable as exc:
            self._broker_failed(exc)
            return self.broker.subscribed(topic)
        except trio.ClosedResourceError:
            return self.broker.subscribed(topic)
        return bool(count)

    async def _request(self, topic: str, op: str, args: tuple = (), *, filter: Any = None) -> list[Reply]:
        """Publish a command on ``topic`` and gather one reply from every node it reached
        (``publish`` says how many), or what arrived within ``request_timeout``. Bounded:
        at most ``MAX_PENDING_REQUESTS`` wait at once (more wait for room). Checkpoint."""
        async with self._request_slots:
            request_id = next(self._request_ids)
            pending = _Pending()
            self._requests[request_id] = pending
            try:
                self.counters["requests_sent"] += 1
                command = Command(op, args, filter=filter, request_id=request_id, reply_to=self.reply_topic)
                try:
                    count = await self.broker.publish(topic, command)
                except BrokerUnavailable as exc:
                    self._broker_failed(exc)
                    count = 1 if self.broker.subscribed(topic) else 0  # only our own copy went out
                except trio.ClosedResourceError:
                    count = 1 if self.broker.subscribed(topic) else 0
                pending.expect(count)
                with trio.move_on_after(self.request_timeout):
                    await pending.done.wait()
                if not pending.done.is_set():
                    self.counters["requests_timed_out"] += 1
                    self._warn("request", "hub %r: %s on %r: %d of %s node(s) answered within %g s",
                               self.name, op, topic, len(pending.replies), count, self.request_timeout)
                return pending.replies
            finally:
                del self._requests[request_id]

    def _on_control(self, topic: str, message: Any) -> None:
        """A command or a reply from the broker. Never blocks (it may run in the broker's
        reader): commands are queued for ``_command_worker``. No checkpoint."""
        if type(message) is Reply:
            if topic == self.reply_topic:
                pending = self._requests.get(message.request_id)
                if pending is not None:
                    pending.add(message)
                else:
                    receive = self._streams.get(message.request_id)
                    if receive is not None:
                        receive(message)
            return
        if message.op == "probe" and not message.request_id:
            return
        try:
            self._commands_in.send_nowait(message)
        except trio.WouldBlock:
            self.counters["commands_dropped"] += 1
            self._warn("commands", "hub %r: command queue full, %s dropped", self.name, message.op)
        except trio.ClosedResourceError:
            pass

    def on_stray(self, message: Any) -> None:
        """The broker got a request for a topic this node just left: answer "nothing
        here", so the requester need not wait for us. No checkpoint."""
        if type(message) is Command and message.request_id and message.reply_to:
            self._on_control(message.reply_to, Command(
                "probe", request_id=message.request_id, reply_to=message.reply_to))

    async def _command_worker(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Apply queued commands one at a time, in arrival order, and answer each."""
        task_status.started()
        async for command in self._commands_out:
            try:
                value = await self._apply(command)
                self.counters["commands_applied"] += 1
            except TooManyPermissions:
                value = _TOO_MANY
            except Exception:
                self.counters["commands_failed"] += 1
                log.exception("hub %r: command %r failed", self.name, command)
                value = None
            if not command.request_id or command.reply_to is None:
                continue
            reply = Reply(command.request_id, value, self.reply_topic)
            if command.reply_to == self.reply_topic:
                self._on_control(self.reply_topic, reply)  # our own request: no broker round trip
                continue
            try:
                await self.broker.publish(command.reply_to, reply)
            except BrokerUnavailable as exc:
                self._broker_failed(exc)
            except trio.ClosedResourceError:
                self.counters["broker_closed"] += 1

    def _broker_failed(self, exc: BaseException) -> None:
        self.counters["broker_publish_failed"] += 1
        self._warn("broker", "hub %r: the broker could not reach the other nodes: %s", self.name, exc)

    def _warn(self, kind: str, msg: str, *args: Any) -> None:
        """Log at most one warning of each kind per ``_WARN_EVERY`` seconds."""
        now = trio.current_time()
        last = self._warned.get(kind)
        if last is None or now - last >= _WARN_EVERY:
            self._warned[kind] = now
            log.warning(msg, *args)

    # ---- routing -----------------------------------------------------------------------

    async def publish(self, publication: Publication) -> None:
        """Route a group publication (or a hub-wide one) through the broker. Checkpoint:
        when it backs up."""
        if publication.origin == "group":
            topic = topics.group_topic(self.name, publication.group)
        else:
            topic = self._hub_topic
        self.telemetry.published("group" if publication.origin == "group" else "hub", publication)
        await self._send(topic, publication)

    def publish_may_wait(self, group: str) -> bool:
        """True if a publication to ``group`` would now wait for room in its actor's mailbox
        on this node (the publisher is pushed back). No checkpoint."""
        local = self.groups.get(group)
        return local is not None and local.queued >= GroupActor.mailbox_size

    async def send_to_all(self, publication: Publication) -> None:
        self.telemetry.published("hub", publication)
        await self._send(self._hub_topic, publication)

    async def send_to_user(self, user_id: str, publication: Publication) -> None:
        self.telemetry.published("user", publication)
        await self._send(topics.user_topic(self.name, user_id), publication)

    async def send_to_connection(self, connection_id: str, publication: Publication) -> None:
        self.telemetry.published("connection", publication)
        await self._send(topics.connection_topic(self.name, connection_id), publication)

    async def _send(self, topic: str, publication: Publication) -> None:
        """Publish; a broker that cannot reach the other nodes is counted and logged (this
        node's members got the message: local delivery never depends on the broker)."""
        try:
            await self._broker_send(topic, publication)
        except BrokerUnavailable as exc:
            self._broker_failed(exc)
        except trio.ClosedResourceError:
            self.counters["broker_closed"] += 1

    async def on_publication(self, topic: str, publication: Publication) -> None:
        """The broker hands back a publication (or a command) for a topic this node
        subscribed to."""
        cls = publication.__class__
        if cls is Command or cls is Reply:
            self._on_control(topic, publication)
            return
        kind, _, rest = topic.partition("\x00")
        if kind == "g":
            local = self.groups.get(publication.group)
            if local is None:
                return
            if local.inline:
                self._deliver_inline(local, publication)
                return
            if local.handle is None or local.handle.ref is None:
                return
            if local.queued == 0 and len(local.members) <= INLINE_MAX_MEMBERS:
                # The actor is idle with nothing queued: deliver in place, as it would next,
                # and save waking it (nothing it holds can be overtaken).
                self._deliver_inline(local, publication)
                return
            ref = local.handle.ref
            local.queued += 1
            try:
                ref.tell_nowait(publication)
            except Exception:
                # Mailbox full (BLOCK policy): wait for room, pushing back on the publisher.
                try:
                    await ref.tell(publication)
                except BaseException as exc:  # not queued: the count must say so (cancelled too)
                    local.queued -= 1
                    if not isinstance(exc, Exception):
                        raise
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

    def _deliver_inline(self, local: LocalGroup, publication: Publication) -> None:
        """An inline group's publication, delivered now (what its actor would do). No checkpoint."""
        if publication.expires_at is not None and publication.expired():
            local.expired += 1
            return
        matches = publication.filter
        sent = 0
        for connection_id, member in list(local.members.items()):
            if (publication.no_echo or publication.excluded) and publication.skips(connection_id):
                continue
            if matches is not None and not matches(member):
                continue
            member.deliver_nowait(publication)
            sent += 1
        local.delivered += 1
        self.telemetry.delivered("group", publication, sent)

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
