"""A model of one hub, as Microsoft documents it: connections, users, groups, permissions,
acks and reliable sequence ids. Pure data and functions; the state machine asks it what an
endpoint must do and compares the answer with what the endpoint did.

Rules this module keeps:
- The model predicts only what the documents (and, where they are silent, the recorded
  decisions named by ``specs.conform.rules``) promise; anything it cannot predict it does not
  check.
- Roles follow Microsoft's permission reference: ``webpubsub.joinLeaveGroup`` and
  ``webpubsub.sendToGroup`` for every group, ``.<group>`` suffixes for one group; REST
  grant/revoke per ``specs.rest`` decision ``rest.permissions``.
- Reliable connections: each data message takes the next sequence id of its connection,
  whether the connection is attached or detached; a recovery replays every message above the
  last cumulative ``sequenceAck``, in order, with its original id.
- Bounded: connections, groups and markers per example are bounded by the state machine; the
  successful-ackId memory per connection keeps at most ``ACK_MEMORY`` entries.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace

from specs.conform.wire import Payload
from specs.webpubsub_json import Subprotocol

ROLE_JOIN = "webpubsub.joinLeaveGroup"
ROLE_SEND = "webpubsub.sendToGroup"
PERM_JOIN = "joinLeaveGroup"
PERM_SEND = "sendToGroup"
ACK_MEMORY = 1000


@dataclass
class Permission:
    """One permission of one connection (decision rest.permissions)."""

    all: bool = False
    allowed: set[str] = field(default_factory=set)
    denied: set[str] = field(default_factory=set)

    def allows(self, group: str | None) -> bool:
        if group is None:
            return self.all and not self.denied
        return (self.all or group in self.allowed) and group not in self.denied

    def grant(self, group: str | None) -> None:
        if group is None:
            self.all = True
            self.denied.clear()
        else:
            self.allowed.add(group)
            self.denied.discard(group)

    def revoke(self, group: str | None) -> None:
        if group is None:
            self.all = False
            self.allowed.clear()
            self.denied.clear()
        else:
            self.allowed.discard(group)
            if self.all:
                self.denied.add(group)


def permissions_from_roles(roles: tuple[str, ...]) -> dict[str, Permission]:
    perms = {PERM_JOIN: Permission(), PERM_SEND: Permission()}
    for role in roles:
        for prefix, perm in ((ROLE_JOIN, PERM_JOIN), (ROLE_SEND, PERM_SEND)):
            if role == prefix:
                perms[perm].all = True
            elif role.startswith(prefix + "."):
                perms[perm].allowed.add(role[len(prefix) + 1:])
    return perms


@dataclass(frozen=True)
class Delivery:
    """One data message as one recipient must see it.

    Attributes:
        marker: the message's identity, carried inside its payload.
        source: ``group`` or ``server``.
        group: the group of a group message.
        payload: as sent.
        from_user: the publisher's user id on client group sends (JSON ``fromUserId``).
        rule: the rule a loss of this message departs from.
        seq: the sequence id on a reliable connection, else None.
    """

    marker: str
    source: str
    group: str | None
    payload: Payload
    from_user: str | None
    rule: str
    seq: int | None = None


@dataclass
class MessageInfo:
    """Why each connection should not have received a message (for extra deliveries)."""

    describe: str
    why_not: dict[str, str]


@dataclass
class Conn:
    label: str
    user: str | None
    protocol: Subprotocol | None
    roles: tuple[str, ...]
    perms: dict[str, Permission]
    groups: set[str] = field(default_factory=set)
    state: str = "open"  # open | detached | closed
    connection_id: str | None = None
    reconnection_token: str | None = None
    token: str = ""
    next_ack: int = 1
    ok_acks: deque = field(default_factory=lambda: deque(maxlen=ACK_MEMORY))
    seq: int = 0
    acked: int = 0
    buffer: list[Delivery] = field(default_factory=list)  # reliable: unacked deliveries
    perms_changed: bool = False  # a REST grant/revoke touched this connection

    @property
    def reliable(self) -> bool:
        return self.protocol is not None and self.protocol.reliable

    @property
    def pubsub(self) -> bool:
        return self.protocol is not None

    @property
    def alive(self) -> bool:
        return self.state in ("open", "detached")

    def take_ack_id(self) -> int:
        n = self.next_ack
        self.next_ack += 1
        return n


class Hub:
    """The model of the hub under test, for one example."""

    def __init__(self) -> None:
        self.conns: dict[str, Conn] = {}
        self.messages: dict[str, MessageInfo] = {}
        self.fresh: list[str] = []  # markers recorded since the last step was checked
        self._marker = 0

    # ------------------------------------------------------------------ queries

    def open_conns(self) -> list[Conn]:
        return [c for c in self.conns.values() if c.state == "open"]

    def alive_conns(self) -> list[Conn]:
        return [c for c in self.conns.values() if c.alive]

    def members(self, group: str) -> list[Conn]:
        return [c for c in self.alive_conns() if group in c.groups]

    def user_conns(self, user: str) -> list[Conn]:
        return [c for c in self.alive_conns() if c.user == user]

    def new_marker(self) -> str:
        self._marker += 1
        return f"m{self._marker}"

    # ------------------------------------------------------------------ connections

    def connect(self, label: str, user: str | None, protocol: Subprotocol | None, roles: tuple[str, ...],
                groups: tuple[str, ...]) -> Conn:
        c = Conn(label, user, protocol, roles, permissions_from_roles(roles), set(groups))
        self.conns[label] = c
        return c

    def join(self, c: Conn, group: str) -> str | None:
        """None (success) or the ack error name."""
        if not c.perms[PERM_JOIN].allows(group):
            return "Forbidden"
        c.groups.add(group)
        return None

    def leave(self, c: Conn, group: str) -> str | None:
        if not c.perms[PERM_JOIN].allows(group):
            return "Forbidden"
        c.groups.discard(group)
        return None

    def may_send(self, c: Conn, group: str) -> bool:
        return c.perms[PERM_SEND].allows(group)

    # ------------------------------------------------------------------ deliveries

    def _deliver(self, targets: list[Conn], d: Delivery) -> dict[str, Delivery]:
        """Assign sequence ids; return what each *open* target must see now."""
        now: dict[str, Delivery] = {}
        for c in targets:
            dd = d
            if c.reliable:
                c.seq += 1
                dd = replace(d, seq=c.seq)
                c.buffer.append(dd)
            if c.state == "open":
                now[c.label] = dd
        return now

    def _record(self, marker: str, describe: str, targets: list[Conn], reasons: dict[str, str],
                default: str) -> None:
        chosen = {c.label for c in targets}
        why = {}
        for c in self.conns.values():
            if c.label not in chosen:
                why[c.label] = reasons.get(c.label, default)
        self.messages[marker] = MessageInfo(describe, why)
        self.fresh.append(marker)

    def client_group_send(self, sender: Conn, group: str, payload: Payload, marker: str,
                          no_echo: bool) -> dict[str, Delivery]:
        members = self.members(group)
        targets = [c for c in members if not (no_echo and c.label == sender.label)]
        reasons = {sender.label: "deliver.no-echo"} if no_echo else {}
        self._record(marker, f"{marker} to group {group} from {sender.label}" + (" (noEcho)" if no_echo else ""),
                     targets, reasons, "deliver.non-member")
        d = Delivery(marker, "group", group, payload, sender.user, "deliver.group")
        return self._deliver(targets, d)

    def rest_group_send(self, group: str, payload: Payload, marker: str, excluded: set[str]) -> dict[str, Delivery]:
        members = self.members(group)
        targets = [c for c in members if c.label not in excluded]
        self._record(marker, f"{marker} to group {group} by REST" + (f" excluding {sorted(excluded)}" if excluded else ""),
                     targets, {lbl: "deliver.excluded" for lbl in excluded}, "deliver.non-member")
        return self._deliver(targets, Delivery(marker, "group", group, payload, None, "deliver.group"))

    def rest_user_send(self, user: str, payload: Payload, marker: str) -> dict[str, Delivery]:
        targets = self.user_conns(user)
        self._record(marker, f"{marker} to user {user} by REST", targets, {}, "deliver.user")
        return self._deliver(targets, Delivery(marker, "server", None, payload, None, "deliver.user"))

    def rest_connection_send(self, c: Conn, payload: Payload, marker: str) -> dict[str, Delivery]:
        targets = [c] if c.alive else []
        self._record(marker, f"{marker} to connection {c.label} by REST", targets, {}, "deliver.connection")
        return self._deliver(targets, Delivery(marker, "server", None, payload, None, "deliver.connection"))

    def rest_all_send(self, payload: Payload, marker: str, excluded: set[str],
                      filt: "Filter | None" = None) -> dict[str, Delivery]:
        targets = [c for c in self.alive_conns() if c.label not in excluded]
        reasons = {lbl: "deliver.excluded" for lbl in excluded}
        if filt is not None:
            kept = [c for c in targets if filt.matches(c)]
            for c in targets:
                if c not in kept:
                    reasons[c.label] = "deliver.filter"
            targets = kept
        rule = "deliver.filter" if filt is not None else "deliver.all"
        self._record(marker, f"{marker} to all by REST" + (f" excluding {sorted(excluded)}" if excluded else "")
                     + (f" filter {filt.text()}" if filt is not None else ""), targets, reasons, rule)
        return self._deliver(targets, Delivery(marker, "server", None, payload, None, rule))

    # ------------------------------------------------------------------ reliable

    def sequence_ack(self, c: Conn, seq: int) -> None:
        if seq > c.acked:
            c.acked = min(seq, c.seq)
        c.buffer = [d for d in c.buffer if d.seq is not None and d.seq > c.acked]

    def replay(self, c: Conn) -> list[Delivery]:
        return [d for d in c.buffer if d.seq is not None and d.seq > c.acked]


# =========================================================================== filters


@dataclass(frozen=True)
class Atom:
    kind: str  # "user" | "group" | "not-group" | "connection"
    value: str

    def matches(self, c: Conn) -> bool:
        if self.kind == "user":
            return c.user == self.value
        if self.kind == "group":
            return self.value in c.groups
        if self.kind == "not-group":
            return self.value not in c.groups
        return c.connection_id == self.value

    def text(self) -> str:
        v = self.value.replace("'", "''")
        if self.kind == "user":
            return f"userId eq '{v}'"
        if self.kind == "group":
            return f"'{v}' in groups"
        if self.kind == "not-group":
            return f"not ('{v}' in groups)"
        return f"connectionId eq '{v}'"


@dataclass(frozen=True)
class Filter:
    """A disjunction of conjunctions of atoms (never null-valued: see reference-odata-filter.md)."""

    clauses: tuple[tuple[Atom, ...], ...]

    def matches(self, c: Conn) -> bool:
        return any(all(a.matches(c) for a in clause) for clause in self.clauses)

    def text(self) -> str:
        parts = []
        for clause in self.clauses:
            inner = " and ".join(a.text() for a in clause)
            parts.append(f"({inner})" if len(clause) > 1 and len(self.clauses) > 1 else inner)
        return " or ".join(parts)
