"""A reliable session moving to another node: the client recovers on node B, node A held it.

The SDKs recover with ``awps_connection_id`` and ``awps_reconnection_token`` against
whatever node the load balancer picks. If that node does not hold the session it claims it
from the owner through the broker (``Hub.claim_session`` / ``Hub.release_session``), and
the client resumes with the same connection id, user, roles, groups and unacked messages,
as if it had come back to the owner.

The steps, and why in this order:
1. B asks on the connection's topic: "claim" with the token and subprotocol. The owner A
   checks them as for a local recovery (``can_recover``), marks the session claimed (a
   local recovery is refused while the claim lasts) and answers a snapshot: identity,
   permissions, groups, connection state, the last acked ackIds. A keeps the session
   registered and keeps buffering everything for it. An unknown session, a bad token, a
   wrong subprotocol or no answer: B accepts and closes 1008, the documented path.
2. B registers a new member with the same id and joins the snapshot's groups (so it
   subscribes every topic the session receives on) before anything else; from then on B
   gets every message A gets, and buffers it (the member is detached).
3. B asks A alone (its reply topic): "release". A first lets its group actors deliver
   what they had queued for the session (``Hub.flush_groups``), then answers the unacked
   messages (with their sequence ids), its final groups and permissions, and forgets the
   session quietly: no ``disconnected`` event, no group ``left`` events. The session goes
   on, elsewhere.
4. B flushes its own group actors the same way (every copy of a message A had was queued
   here before A's answer: Redis delivers in publish order and A answered after it read
   them), then merges: A's unacked messages keep their sequence ids; what B buffered itself follows,
   minus what A also had (the same publish on both nodes has the same ``wire_id``; with
   the memory broker it is the same object). Every message published to the session's
   topics reached A before the release or B after its subscription, and B subscribed
   before it asked for the release, so nothing is lost and nothing doubled, and each
   publisher's order holds. Then B attaches the new socket: ``connected``, the replay,
   live traffic.
A claim lasts ``3 x request_timeout``: if B vanishes between the steps, A's session carries
on (and may still be recovered, on A or elsewhere).

Not carried (documented in specs/broker.py): open group streams and running invocations
(invocations already stop when a transport drops; a stream's state stays on A and the
client's next fragment is answered StreamNotFound on B).
"""

from __future__ import annotations

import collections
import secrets
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from fabric.core.publication import Publication
from fabric.webpubsub.connection import (
    ClientConnection,
    DetachedTransport,
    WireProtocol,
    _Groups,
    new_lifecycle,
)
from fabric.webpubsub.reliable import ReplayBuffer
from specs.errors import CLOSE_RULES, CloseSituation
from specs.lifecycle import LifecycleEvent

if TYPE_CHECKING:
    from fabric.core.hub import Hub
    from transport.websocket import WebSocket

#: Claims in progress on this node (the owner's side): session -> (claim id, deadline).
_claims: weakref.WeakKeyDictionary[ClientConnection, tuple[str, float]] = weakref.WeakKeyDictionary()
_PROTOCOLS = {p.value: p for p in WireProtocol if p.is_reliable}


def claimed(connection: ClientConnection) -> bool:
    """Whether another node is taking this session over right now (refuse a local recovery)."""
    claim = _claims.get(connection)
    return claim is not None and trio.current_time() < claim[1]


# ---- the owner's side (called by the hub's command task: no checkpoint) -----------------


def export_session(connection: ClientConnection, token: str, protocol: str | None, timeout: float) -> dict | None:
    """Step 1 on the owner: check the recovery and describe the session, or None."""
    if connection.replay is None or connection.handed_over:
        return None
    if not connection.can_recover(token, protocol) or claimed(connection):
        return None
    claim_id = secrets.token_urlsafe(12)
    _claims[connection] = (claim_id, trio.current_time() + 3 * timeout)
    if not isinstance(connection.ws, DetachedTransport):
        connection.ws.abort_soon(grace=0)  # half-open here: the client is on another node now
    return {"claim": claim_id, **_identity(connection)}


def release_session(connection: ClientConnection, claim_id: str) -> dict | None:
    """Step 3 on the owner: the unacked messages and final state; the session ends here
    quietly. None if the claim is not (or no longer) this one."""
    claim = _claims.get(connection)
    if claim is None or claim[0] != claim_id or trio.current_time() >= claim[1]:
        return None
    if connection.lifecycle.closed or connection.replay is None:
        return None
    del _claims[connection]
    replay = connection.replay
    tail = {"last_acked": replay.last_acked, "entries": [p for _, p in replay.unacked()], **_identity(connection)}
    connection.handed_over = True
    connection.groups = set(connection.groups)  # leaving them now is no presence event
    connection._wake()  # its task ends without "disconnected" (handed_over)
    return tail


def _identity(connection: ClientConnection) -> dict:
    permissions = connection.permissions
    return {
        "protocol": connection.protocol.value,
        "user": connection.user_id,
        "roles": sorted(permissions.roles),
        "denied": sorted(permissions.denied or ()),
        "groups": sorted(connection.groups),
        "state": connection.connection_state,
        "acked": list(connection._acked or ()),
    }


# ---- the claimer's side ------------------------------------------------------------------


async def claim(hub: Hub, connection_id: str, token: str, protocol: str | None
                ) -> Callable[[WebSocket], Awaitable[None]] | None:
    """Step 1 from the recovering node: the ``run(ws)`` that takes the session over, or
    None (the caller refuses with 1008). Checkpoint."""
    found = await hub.claim_session(connection_id, token, protocol)
    if found is None:
        return None
    snapshot, owner = found
    if not isinstance(snapshot, dict) or snapshot.get("protocol") != protocol or protocol not in _PROTOCOLS:
        return None

    async def run(ws: WebSocket) -> None:
        if not await _take_over(hub, connection_id, snapshot, owner, ws):
            hub.counters["recoveries_refused"] += 1
            rule = CLOSE_RULES[CloseSituation.RECOVERY_FAILED]
            ws.close(rule.code, rule.message)
            await ws.run(_ignore)

    return run


async def _take_over(hub: Hub, connection_id: str, snapshot: dict, owner: str, ws: WebSocket) -> bool:
    protocol = _PROTOCOLS[snapshot["protocol"]]
    lifecycle = new_lifecycle(protocol)
    for event in (LifecycleEvent.AUTHENTICATED, LifecycleEvent.CONNECT_ACCEPTED, LifecycleEvent.TRANSPORT_LOST):
        lifecycle.handle(event)
    conn = ClientConnection(hub, connection_id, _Placeholder(trio.current_time()), protocol,
                            user_id=snapshot["user"], roles=tuple(snapshot["roles"]),
                            connection_state=snapshot["state"], lifecycle=lifecycle)
    _restore(conn, snapshot)
    conn.groups = set()  # joins while taking over are no presence events
    ready = trio.Event()
    try:
        await hub.start_connection(connection_id, _runner(conn, snapshot["groups"], ready))
    except Exception:  # noqa: BLE001 - the hub is stopping: no session here
        return False
    await ready.wait()
    tail = await hub.release_session(owner, connection_id, snapshot["claim"])
    if not isinstance(tail, dict) or conn.lifecycle.closed:
        _abandon(conn)
        return False
    for group in set(tail["groups"]) - conn.groups:
        await hub.join_group(conn, group)
    for group in conn.groups - set(tail["groups"]):
        await hub.leave_group(conn, group)
    _restore(conn, tail)
    # Whatever this node queued for the session before the owner's answer arrived is a copy
    # of something the owner had (or new): deliver it into the buffer before merging.
    await hub.flush_groups(conn)
    if not _merge(conn, tail):
        _abandon(conn)
        return False
    groups = _Groups(conn)
    set.update(groups, conn.groups)
    conn.groups = groups
    hub.counters["sessions_taken_over"] += 1
    return conn.offer_transport(ws)


class _Placeholder(DetachedTransport):
    """The detached transport a taken-over session starts with (the constructor sets ``farewell``)."""

    __slots__ = ("farewell",)


def _runner(conn: ClientConnection, groups: list[str], ready: trio.Event):
    async def run(*, task_status=trio.TASK_STATUS_IGNORED) -> None:
        await conn.run(groups, resumed=ready, task_status=task_status)
    return run


def _restore(conn: ClientConnection, state: dict) -> None:
    conn.permissions.roles = set(state["roles"])
    conn.permissions.denied = {tuple(d) for d in state["denied"]} or None
    conn.connection_state = state["state"]
    acked = state["acked"]
    if acked:
        conn._acked, conn._acked_set = collections.deque(acked), set(acked)


def _key(publication: Publication) -> Any:
    return publication.wire_id or id(publication)


def _merge(conn: ClientConnection, tail: dict) -> bool:
    """The owner's unacked messages with their ids, then what only this node buffered. No
    checkpoint (nothing is delivered meanwhile). False if that passes the buffer's bounds."""
    entries: list[Publication] = list(tail["entries"])
    seen = {_key(p) for p in entries}
    entries += [p for _, p in conn.replay.unacked() if _key(p) not in seen]
    config = conn.hub.server_config
    merged = ReplayBuffer(config.reliable_buffer_count, config.reliable_buffer_bytes)
    merged.last_acked = merged.last_sent = int(tail["last_acked"])
    for publication in entries:
        if not merged.add(publication):
            conn.hub.counters["reliable_buffer_full"] += 1
            return False
    conn.replay = merged
    return True


def _abandon(conn: ClientConnection) -> None:
    """End a half-taken session here without events (the owner still has it, or lost it)."""
    conn.handed_over = True
    conn.close_for(CloseSituation.RECOVERY_FAILED)


async def _ignore(message) -> None:
    return None
