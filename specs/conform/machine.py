"""The stateful suite: a Hypothesis ``RuleBasedStateMachine`` whose rules act on a live
endpoint through the driver and compare every observation with ``specs.conform.model``.

Rules this module keeps:
- Synchronous machine, asynchronous wire: every rule computes the model's prediction first,
  then runs one coroutine in the portal's trio thread that acts, waits (bounded by the
  run's timeout) until every predicted frame arrived, and fences every open subprotocol
  connection with a ``ping`` (its ``pong`` comes after everything queued before it). Then
  the rule compares, in the test thread, *all* frames each client received since the last
  step with the prediction: who received what, in which order, which ack, which error,
  which close.
- Each example uses its own group and user names (a per-example prefix), so examples do not
  see each other's traffic even on a shared hub; transcripts show the names without it.
- The first departure ends the example by raising a per-rule ``Departure`` with the wire
  transcript; Hypothesis then shrinks the steps. Rules disabled by the run (for example
  decision rules with ``--only-documented``) are counted as skipped, never raised.
- Bounded: at most ``Context.max_conns`` live connections and ``Context.steps`` steps per
  example; every wait ends after ``Context.timeout`` seconds.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Callable

import msgspec
import trio
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, precondition, rule

from specs.conform.driver import HandshakeFailed, Portal, RestClient, WireClient
from specs.conform.endpoint import Endpoint, client_path, mint_client_token, seg
from specs.conform.model import PERM_JOIN, PERM_SEND, Atom, Conn, Delivery, Filter, Hub
from specs.conform.report import Ledger, departure
from specs.conform.rules import RULES
from specs.conform.strategies import REST_DATA_TYPES, PayloadSpec, marker_of, payload_specs
from specs.conform.transcript import Transcript
from specs.conform.wire import Frame, Payload, encode_client
from specs.rest import MESSAGE_CONTENT_TYPES, OPERATIONS_BY_NAME
from specs.webpubsub_json import JSON_RELIABLE_V1, JSON_V1, PROTOBUF_RELIABLE_V1, PROTOBUF_V1, Subprotocol

PROTOCOLS: dict[str, Subprotocol | None] = {
    "json": JSON_V1,
    "json.reliable": JSON_RELIABLE_V1,
    "protobuf": PROTOBUF_V1,
    "protobuf.reliable": PROTOBUF_RELIABLE_V1,
    "simple": None,
}

GROUPS = ("g0", "g1", "g2")
USERS = ("u0", "u1", "u2")
ROLE_CHOICES = (
    "webpubsub.joinLeaveGroup", "webpubsub.sendToGroup",
    "webpubsub.joinLeaveGroup.g0", "webpubsub.joinLeaveGroup.g1",
    "webpubsub.sendToGroup.g0", "webpubsub.sendToGroup.g1",
)
CONTENT_TYPE_OF = {dt: ct for ct, dt in MESSAGE_CONTENT_TYPES.items()}
SUCCESS = {name: op.success for name, op in OPERATIONS_BY_NAME.items()}
#: A reliable connection acks automatically past this many unacked messages (as the SDKs do
#: once a second), so a long example never fills the endpoint's replay buffer.
AUTO_ACK_AFTER = 300


@dataclass
class Context:
    """Everything a run shares between examples."""

    portal: Portal
    endpoint: Endpoint
    hub: str
    rest: RestClient
    ledger: Ledger
    protocols: tuple[str, ...] = ("json", "json.reliable", "protobuf", "protobuf.reliable", "simple")
    timeout: float = 3.0
    max_conns: int = 5
    run_id: str = "cf"
    enabled: frozenset[str] = frozenset(RULES)
    counter: itertools.count = field(default_factory=itertools.count)


@dataclass
class Want:
    """What one client must receive in one step."""

    data: list[Delivery] = field(default_factory=list)
    acks: dict[int, str | None] = field(default_factory=dict)  # ackId -> None (success) | error name
    pongs: int = 0
    fence: bool = False
    close: str | None = None  # "rest" | "client"
    close_rule: str | None = None  # the rule an unexpected close departs from, if not close.unexpected
    reason: str | None = None
    recovering: bool = False


def _count(frames: list[Frame], kinds: tuple[str, ...]) -> int:
    return sum(1 for f in frames if f.kind in kinds)


def _satisfied(client: WireClient, start: int, w: Want, with_fence: bool) -> bool:
    if w.close is not None:
        return client.closed is not None
    if client.closed is not None:
        return True
    frames = client.frames[start:]
    if _count(frames, ("message", "raw")) < len(w.data):
        return False
    if w.acks and not set(w.acks) <= {f.ack_id for f in frames if f.kind == "ack"}:
        return False
    return _count(frames, ("pong",)) >= w.pongs + (1 if with_fence and w.fence else 0)


def count_clean_frames(ok: Callable[[str, int], None], protocol: Subprotocol | None, frames: list[Frame]) -> None:
    """Count a pass of every frame rule each problem-free frame kept."""
    n = len(frames)
    if not n:
        return
    ok("frame.valid", n)
    if protocol is None:
        return
    ok("frame.kind", n)
    ok("frame.type", n)
    ok("frame.shape", n)
    ok("frame.unknown-key", n)
    if not protocol.binary:
        ok("frame.null", n)
        ok("frame.key-order", n)
    ok("frame.data", sum(1 for f in frames if f.kind == "message"))
    ok("ack.error-shape", sum(1 for f in frames if f.kind == "ack"))


def _listed_ids(result) -> set[str] | None:
    """Connection ids of a listConnectionsInGroup page, or None if it is not one."""
    if result.status != 200:
        return None
    try:
        value = msgspec.json.decode(result.body).get("value")
        return {item["connectionId"] for item in value if isinstance(item.get("connectionId"), str)}
    except (msgspec.DecodeError, AttributeError, TypeError, KeyError):
        return None


def build_machine(ctx: Context) -> type[RuleBasedStateMachine]:
    """The state machine class for one run (its strategies depend on the run's options)."""
    protocols = st.sampled_from(ctx.protocols)
    groups = st.sampled_from(GROUPS)
    users = st.sampled_from(USERS)
    # half the connections may do everything: interesting states (members that publish) come sooner
    roles = st.just(ROLE_CHOICES[:2]) | st.lists(st.sampled_from(ROLE_CHOICES), max_size=3, unique=True).map(tuple)
    payloads = payload_specs()
    rest_payloads = payload_specs(REST_DATA_TYPES)
    atoms = st.one_of(
        st.builds(Atom, st.just("user"), users),
        st.builds(Atom, st.just("group"), groups),
        st.builds(Atom, st.just("not-group"), groups),
    )
    filters = st.lists(st.lists(atoms, min_size=1, max_size=2).map(tuple), min_size=1, max_size=2).map(
        lambda cl: Filter(tuple(cl)))
    has_reliable = any(PROTOCOLS[p] is not None and PROTOCOLS[p].reliable for p in ctx.protocols)  # type: ignore[union-attr]

    class HubMachine(RuleBasedStateMachine):
        c = Bundle("c")

        def __init__(self) -> None:
            super().__init__()
            self.example = next(ctx.counter)
            self.prefix = f"{ctx.run_id}e{self.example}-"
            self.t = Transcript()
            self.t.alias(self.prefix, "")
            self.hub = Hub()
            self.clients: dict[str, WireClient] = {}
            self.cursor: dict[str, int] = {}
            self.n = 0
            self.failed = False

        # ============================================================== helpers

        def g(self, name: str) -> str:
            return self.prefix + name

        def u(self, name: str | None) -> str | None:
            return None if name is None else self.prefix + name

        def role(self, r: str) -> str:
            for base in ("webpubsub.joinLeaveGroup.", "webpubsub.sendToGroup."):
                if r.startswith(base):
                    return base + self.prefix + r[len(base):]
            return r

        def ok(self, rule_id: str, n: int = 1) -> None:
            if rule_id in ctx.enabled and n:
                ctx.ledger.ok(rule_id, n)

        def depart(self, rule_id: str, detail: str) -> None:
            if rule_id not in ctx.enabled:
                ctx.ledger.skipped.setdefault(rule_id, "disabled for this run")
                return
            self.failed = True
            raise departure(rule_id, self.t.clean(detail), self.t.render())

        def check(self, cond: bool, rule_id: str, detail: str) -> None:
            if cond:
                self.ok(rule_id)
            else:
                self.depart(rule_id, detail)

        def usable(self, label: str) -> Conn | None:
            """The model of ``label`` if it is open and can send subprotocol messages."""
            m = self.hub.conns.get(label)
            if m is None or m.state != "open" or not m.pubsub or self.clients[label].closed is not None:
                return None
            return m

        def addressable(self, label: str) -> Conn | None:
            """The model of ``label`` if it is open and its connection id is known."""
            m = self.hub.conns.get(label)
            if m is None or m.state != "open" or m.connection_id is None:
                return None
            return m

        def run(self, fn: Callable, *args):
            return ctx.portal.run(fn, *args)

        # ============================================================== one step

        def exchange(self, action: Callable | None, wants: dict[str, Want], *,
                     after: Callable | None = None, extra_rule: str | None = None):
            """Act, wait for ``wants``, fence, then check every open client (module rules)."""
            fence = [lbl for lbl, m in self.hub.conns.items()
                     if m.state == "open" and m.pubsub and self.clients[lbl].closed is None
                     and wants.get(lbl, Want()).close is None]
            for lbl in fence:
                wants.setdefault(lbl, Want()).fence = True
            starts = dict(self.cursor)

            async def go():
                result = await action() if action is not None else None
                for with_fence in (False, True):
                    if with_fence:
                        for lbl in fence:
                            cl = self.clients[lbl]
                            kind, data = encode_client(cl.protocol, {"type": "ping"})  # type: ignore[arg-type]
                            await cl.send(data, quiet=True)
                    deadline = trio.current_time() + ctx.timeout
                    for lbl, w in wants.items():
                        cl = self.clients[lbl]
                        left = max(0.0, deadline - trio.current_time())
                        await cl.wait_until(lambda cl=cl, lbl=lbl, w=w: _satisfied(cl, starts[lbl], w, with_fence), left)
                return result

            result = self.run(go)
            if after is not None:
                after(result)
            verified = []
            for lbl in list(self.clients):
                m = self.hub.conns[lbl]
                if m.state == "open" or lbl in wants:
                    self.verify(lbl, wants.get(lbl, Want()), extra_rule)
                    verified.append(lbl)
            for marker in self.hub.fresh:  # every open connection that must not have it did not
                info = self.hub.messages[marker]
                for lbl in verified:
                    if lbl in info.why_not and info.why_not[lbl] in RULES:
                        self.ok(info.why_not[lbl])
            self.hub.fresh.clear()
            self.auto_ack()
            return result

        def send_messages(self, label: str, msgs: list[dict], wants: dict[str, Want], **kw) -> None:
            client = self.clients[label]

            async def action():
                for msg in msgs:
                    kind, data = encode_client(client.protocol, msg)  # type: ignore[arg-type]
                    if not await client.send(data):
                        break

            self.exchange(action, wants, **kw)

        def rest(self, op: str, path: str, *, query=None, payload: Payload | None = None, note: str = ""):
            method = OPERATIONS_BY_NAME[op].method

            async def call():
                body = payload.body if payload is not None else None
                ct = CONTENT_TYPE_OF[payload.data_type] if payload is not None else None
                return await ctx.rest.call(method, f"/api/hubs/{seg(ctx.hub)}{path}", query=query, body=body,
                                           content_type=ct, transcript=self.t,
                                           note=note or (payload.short() if payload is not None else ""))
            return call

        def check_status(self, op: str, result, expected: int | None = None) -> None:
            want = expected if expected is not None else SUCCESS[op]
            if result.status != want:
                self.depart("rest.status", f"{op} answered {result.status or result.error} "
                                           f"{result.body[:160]!r}, expected {want}")
            self.ok("rest.status")

        # ============================================================== verification

        def verify(self, label: str, w: Want, extra_rule: str | None) -> None:
            client = self.clients[label]
            m = self.hub.conns[label]
            frames = client.frames[self.cursor[label]:]
            self.cursor[label] = len(client.frames)
            if client.overflow:
                self.depart("close.unexpected", f"{label} received more than the checker's bound of frames")
            for f in frames:
                for rule_id, text in f.problems:
                    self.depart(rule_id, f"{label} received {f.render}: {text}")
            count_clean_frames(self.ok, m.protocol, frames)
            # ---- acks
            by_id: dict[int | None, list[Frame]] = defaultdict(list)
            for f in frames:
                if f.kind == "ack":
                    by_id[f.ack_id].append(f)
            for ack_id, want in w.acks.items():
                got = by_id.pop(ack_id, [])
                if not got:
                    self.depart("ack.once", f"{label} got no ack for ackId {ack_id} within {ctx.timeout:g} s")
                if len(got) > 1:
                    self.depart("ack.once", f"{label} got {len(got)} acks for ackId {ack_id}")
                self.ok("ack.once")
                f = got[0]
                if m.perms_changed and want in (None, "Forbidden"):
                    self.check(bool(f.success) == (want is None), "permission.effect",
                               f"{label}'s request with ackId {ack_id} got {'success' if f.success else f.error} after a "
                               f"REST grant/revoke; the model says {'permitted' if want is None else 'Forbidden'}")
                if want is None:
                    self.check(bool(f.success), "ack.success",
                               f"{label}'s request with ackId {ack_id} was refused with {f.error}, the model says it is permitted")
                else:
                    rule_id = {"Forbidden": "ack.forbidden", "Duplicate": "ack.duplicate"}.get(want, "ack.success")
                    if f.success:
                        self.depart(rule_id, f"{label}'s request with ackId {ack_id} was acked success, expected {want}")
                    self.check(f.error is not None and f.error[0] == want, rule_id,
                               f"{label}'s request with ackId {ack_id} failed with {f.error}, expected {want}")
            for ack_id, extra in by_id.items():
                self.depart("ack.once", f"{label} got an ack for ackId {ack_id} it did not ask for (or twice): {extra[0].render}")
            # ---- pongs
            pongs = _count(frames, ("pong",))
            expected_pongs = w.pongs + (1 if w.fence else 0)
            if expected_pongs or pongs:
                self.check(pongs == expected_pongs, "ping.pong",
                           f"{label} sent {expected_pongs} ping(s) and got {pongs} pong(s) within {ctx.timeout:g} s")
            # ---- system messages and closes
            connected = [f for f in frames if f.kind == "connected"]
            if w.recovering:
                if connected:
                    first = frames[0]
                    self.check(first.kind == "connected" and len(connected) == 1, "connect.first-frame",
                               f"{label}: after recovery, system/connected must come first and once")
                    self.check(connected[0].connection_id == m.connection_id, "reliable.recover",
                               f"{label} recovered as connection {connected[0].connection_id}, expected {m.connection_id}")
                    self.ok("reliable.connected-again")
                else:
                    self.depart("reliable.connected-again", f"{label}: no system/connected after the recovery")
            elif connected:
                self.depart("frame.type", f"{label} received an unexpected system/connected: {connected[0].render}")
            disconnected = [f for f in frames if f.kind == "disconnected"]
            if w.close == "rest":
                self.check(client.closed is not None, "close.app-server",
                           f"{label} was not closed within {ctx.timeout:g} s of REST closeConnection")
                if m.pubsub:
                    if not disconnected:
                        self.depart("close.rest", f"{label} got no system/disconnected before the close")
                    if w.reason:
                        self.check(disconnected[0].reason == w.reason, "close.rest",
                                   f"{label}'s disconnected message is {disconnected[0].reason!r}, expected the REST reason {w.reason!r}")
                code = client.closed.code if client.closed else None
                self.check(code == 1008, "close.rest", f"{label} was closed with {code}, the fabric's decision is 1008")
            else:
                if disconnected:
                    self.depart(w.close_rule or "close.unexpected", f"{label} received {disconnected[0].render}")
                if client.closed is not None and m.state == "open" and w.close is None:
                    self.depart(w.close_rule or "close.unexpected", f"{label} was closed: code {client.closed.code} "
                                                    f"{client.closed.reason!r} ({client.closed.by})")
                if m.state == "open":
                    self.ok(w.close_rule or "close.unexpected")
            others = [f for f in frames if f.kind not in ("ack", "pong", "connected", "disconnected", "message", "raw")]
            if others:
                self.depart("frame.type", f"{label} received {others[0].render}")
            # ---- data
            self.compare_data(label, m, [f for f in frames if f.kind in ("message", "raw")], w.data, extra_rule)

        def compare_data(self, label: str, m: Conn, got: list[Frame], want: list[Delivery],
                         extra_rule: str | None) -> None:
            expected = {d.marker: d for d in want}
            seen: Counter = Counter()
            matched: list[tuple[Delivery, Frame]] = []
            for f in got:
                mk = marker_of(f.payload)
                if mk is None:
                    self.depart("deliver.non-member", f"{label} received a message the checker did not send "
                                                      f"(is the hub shared?): {f.render}")
                if mk not in expected:
                    info = self.hub.messages.get(mk)  # type: ignore[arg-type]
                    why = extra_rule or (info.why_not.get(label) if info else None)
                    if why is None:  # it was for this connection, but not in this step: a duplicate
                        why = "deliver.group"
                    self.depart(why, f"{label} received {mk} ({info.describe if info else 'unknown'}), which "
                                     f"it must not" + ("" if why != "deliver.group" else " again"))
                seen[mk] += 1
                if seen[mk] > 1:
                    self.depart(expected[mk].rule, f"{label} received {mk} {seen[mk]} times")  # type: ignore[index]
                matched.append((expected[mk], f))  # type: ignore[index]
            for d in want:
                if d.marker not in seen:
                    info = self.hub.messages.get(d.marker)
                    self.depart(d.rule, f"{label} did not receive {d.marker} ({info.describe if info else ''}) "
                                        f"within {ctx.timeout:g} s")
            order = [d.marker for d, _ in matched]
            want_order = [d.marker for d in want]
            if order != want_order:
                self.depart("deliver.order", f"{label} received {order}, sent in the order {want_order}")
            if len(want) > 1:
                self.ok("deliver.order")
            for d, f in matched:
                self.ok(d.rule)
                self.check_payload(label, m, d, f)
                if m.pubsub:
                    self.check(f.source == d.source, "deliver.from",
                               f"{label} received {d.marker} with from={f.source!r}, expected {d.source!r}")
                    if d.source == "group":
                        self.check(f.group == d.group, "deliver.from",
                                   f"{label} received {d.marker} with group={f.group!r}, expected {d.group!r}")
                    if m.protocol is not None and not m.protocol.binary and d.source == "group":
                        self.check(f.from_user == d.from_user, "deliver.from",
                                   f"{label} received {d.marker} with fromUserId={f.from_user!r}, expected {d.from_user!r}")
                    if m.reliable:
                        self.check(f.sequence_id == d.seq, "reliable.sequence",
                                   f"{label} received {d.marker} with sequenceId {f.sequence_id}, expected {d.seq}")
                    else:
                        self.check(f.sequence_id is None, "reliable.no-sequence",
                                   f"{label} ({m.protocol.name}) received sequenceId {f.sequence_id}")  # type: ignore[union-attr]

        def check_payload(self, label: str, m: Conn, d: Delivery, f: Frame) -> None:
            exp, got = d.payload, f.payload
            if got is None:
                self.depart("deliver.payload", f"{label} received {d.marker} without data")
            assert got is not None
            if m.protocol is None:  # simple client: text frames for text/json, binary otherwise
                want_frame = "text" if exp.data_type in ("text", "json") else "binary"
                if f.frame_type != want_frame:
                    self.depart("deliver.payload", f"{label} (simple) received {d.marker} ({exp.data_type}) as a "
                                                   f"{f.frame_type} frame, expected {want_frame}")
                same = Payload(exp.data_type, got.body).same_as(exp) if exp.data_type == "json" else got.body == exp.body
                self.check(same, "deliver.payload", f"{label} received {d.marker} as {got.short()}, sent {exp.short()}")
                return
            if exp.data_type == "json" and m.protocol.binary:
                if got.data_type == "text" and Payload("json", got.body).same_as(exp):
                    self.depart("protobuf.json-data", f"{label} received JSON {d.marker} as text_data, not json_data")
                self.ok("protobuf.json-data")
            self.check(got.same_as(exp), "deliver.payload",
                       f"{label} received {d.marker} as {got.short()}, sent {exp.short()}")

        def auto_ack(self) -> None:
            for lbl, m in self.hub.conns.items():
                if m.reliable and m.state == "open" and m.seq - m.acked > AUTO_ACK_AFTER:
                    self.send_sequence_ack(lbl, m, m.seq)

        def send_sequence_ack(self, label: str, m: Conn, seq: int) -> None:
            client = self.clients[label]
            _, data = encode_client(client.protocol, {"type": "sequenceAck", "sequenceId": seq})  # type: ignore[arg-type]
            self.hub.sequence_ack(m, seq)
            self.run(client.send, data)

        # ============================================================== connections

        @precondition(lambda self: len(self.hub.alive_conns()) < ctx.max_conns)
        @rule(target=c, user=st.none() | users, roles=roles, protocol=protocols,
              initial=st.lists(groups, max_size=2, unique=True).map(tuple))
        def connect(self, user, roles, protocol, initial):
            label = f"c_{self.n}"
            self.n += 1
            sp = PROTOCOLS[protocol]
            real_roles = tuple(self.role(r) for r in roles)
            real_groups = tuple(self.g(x) for x in initial)
            m = self.hub.connect(label, self.u(user), sp, real_roles, real_groups)
            m.token = mint_client_token(ctx.endpoint, ctx.hub, user_id=m.user, roles=real_roles, groups=real_groups)
            client = WireClient(label, self.t, sp)
            self.clients[label] = client
            self.cursor[label] = 0

            async def go():
                try:
                    await client.open(ctx.portal.nursery, ctx.endpoint, client_path(ctx.hub, m.token),
                                      [sp.name] if sp else [], ctx.timeout)
                except HandshakeFailed as exc:
                    return exc
                if sp is not None:
                    await client.wait_until(lambda: bool(client.frames) or client.closed is not None, ctx.timeout)
                return None

            failure = self.run(go)
            if failure is not None:
                m.state = "closed"
                self.depart("connect.accept", f"{label} ({protocol}) was refused: {failure}")
            self.ok("connect.accept")
            self.check(client.subprotocol == (sp.name if sp else None), "connect.subprotocol",
                       f"{label} offered {sp.name if sp else 'no subprotocol'}, the endpoint chose {client.subprotocol!r}")
            if sp is not None:
                first = client.frames[0] if client.frames else None
                if first is None or first.kind != "connected":
                    self.depart("connect.first-frame", f"{label}'s first frame is "
                                                       f"{first.render if first else 'missing'}, expected system/connected")
                self.ok("connect.first-frame")
                self.cursor[label] = 1
                m.connection_id = first.connection_id
                m.reconnection_token = first.reconnection_token
                if m.connection_id:
                    self.t.alias(m.connection_id, label)
                if m.reconnection_token:
                    self.t.alias(m.reconnection_token, f"<token of {label}>")
                self.check(first.user_id == m.user, "connect.identity",
                           f"{label}'s connected message names user {first.user_id!r}, the token says {m.user!r}")
                self.check((first.reconnection_token is not None) == sp.reliable, "connect.identity",
                           f"{label} ({sp.name}) got reconnectionToken={first.reconnection_token!r}")
            if sp is None and real_groups:
                self._await_simple_membership(label, m, real_groups)
            for grp in real_groups:  # the token's groups: prove membership with one message each
                self._rest_group_send(grp, PayloadSpec("text", "welcome"), (), special={label: "connect.initial-groups"})
            if not real_groups:
                self.exchange(None, {})
            return label

        def _await_simple_membership(self, label: str, m: Conn, groups: tuple[str, ...]) -> None:
            """A simple client gets no system/connected, so nothing tells it when its token's
            groups are joined: poll listConnectionsInGroup until each group lists the members the
            model expects (and learn the client's connection id on the way)."""
            known = {c.connection_id for c in self.hub.conns.values() if c.connection_id}

            async def poll():
                listed: dict[str, set[str]] = {}
                with trio.move_on_after(ctx.timeout):
                    for grp in groups:
                        want = len(self.hub.members(grp))
                        while True:
                            r = await ctx.rest.call("GET", f"/api/hubs/{seg(ctx.hub)}/groups/{seg(grp)}/connections")
                            ids = _listed_ids(r)
                            if ids is not None and len(ids) >= want:
                                listed[grp] = ids
                                break
                            await trio.sleep(0.02)
                return listed

            listed = self.run(poll)
            for grp in groups:
                self.check(grp in listed, "connect.initial-groups",
                           f"{label} (simple) is not listed in its token's group {grp} {ctx.timeout:g} s after connecting")
            new = set.intersection(*(ids - known for ids in listed.values())) if listed else set()
            if len(new) == 1:
                m.connection_id = new.pop()
                self.t.alias(m.connection_id, label)

        @rule(conn=consumes(c))
        def client_close(self, conn):
            m = self.hub.conns[conn]
            client = self.clients[conn]
            if m.state != "open" or client.closed is not None:
                return
            info = self.run(client.close, 1000)
            m.state = "closed"
            m.groups.clear()
            self.check(info is not None and info.code == 1000, "close.client",
                       f"{conn}: the endpoint answered a 1000 close with {info.code if info else None} ({info.reason if info else ''})")
            self.cursor[conn] = len(client.frames)
            self._await_gone(conn, m)
            self.exchange(None, {})

        def _await_gone(self, label: str, m: Conn) -> None:
            """Poll connectionExists until 404: the endpoint forgot the connection."""
            if m.connection_id is None:
                return

            async def poll():
                with trio.move_on_after(ctx.timeout):
                    while True:
                        r = await ctx.rest.call("HEAD", f"/api/hubs/{seg(ctx.hub)}/connections/{seg(m.connection_id)}")
                        if r.status == 404:
                            return 404
                        await trio.sleep(0.02)
                return r.status

            status = self.run(poll)
            self.check(status == 404, "close.client",
                       f"connectionExists({label}) still answers {status} {ctx.timeout:g} s after it closed")

        @rule(conn=consumes(c), reason=st.sampled_from(["", "bye", "maintenance ünïcode"]))
        def rest_close(self, conn, reason):
            m = self.addressable(conn)
            if m is None:
                return
            query = [("reason", reason)] if reason else []
            self.exchange(self.rest("closeConnection", f"/connections/{seg(m.connection_id)}", query=query),  # type: ignore[arg-type]
                          {conn: Want(close="rest", reason=reason or None)},
                          after=lambda r: self.check_status("closeConnection", r))
            m.state = "closed"
            m.groups.clear()
            self._await_gone(conn, m)

        # ============================================================== groups

        @rule(conn=c, group=groups, ack=st.booleans(), leave=st.booleans())
        def join_or_leave(self, conn, group, ack, leave):
            m = self.usable(conn)
            if m is None:
                return
            grp = self.g(group)
            if not ack and not m.perms[PERM_JOIN].allows(grp) and "forbidden.without-ack" not in ctx.enabled:
                return  # what answers it is only our decision
            outcome = self.hub.leave(m, grp) if leave else self.hub.join(m, grp)
            msg: dict[str, object] = {"type": "leaveGroup" if leave else "joinGroup", "group": grp}
            want = Want()
            if outcome is not None and not ack:
                want.close_rule = "forbidden.without-ack"
            if ack:
                aid = m.take_ack_id()
                msg["ackId"] = aid
                want.acks[aid] = outcome
            self.send_messages(conn, [msg], {conn: want})
            if ack and outcome is None:
                m.ok_acks.append((msg["ackId"], msg))

        @rule(conn=c, group=groups, payload=payloads, no_echo=st.booleans(), ack=st.booleans())
        def send_to_group(self, conn, group, payload, no_echo, ack):
            m = self.usable(conn)
            if m is None:
                return
            grp = self.g(group)
            if not ack and not self.hub.may_send(m, grp) and "forbidden.without-ack" not in ctx.enabled:
                return  # what answers it is only our decision
            marker = self.hub.new_marker()
            p = payload.bind(marker)
            if self.hub.may_send(m, grp):
                deliveries = self.hub.client_group_send(m, grp, p, marker, no_echo)
                outcome = None
            else:
                deliveries = {}
                self.hub._record(marker, f"{marker} to group {group} from {conn} (forbidden)", [], {}, "ack.forbidden")
                outcome = "Forbidden"
            msg: dict[str, object] = {"type": "sendToGroup", "group": grp, "payload": p}
            if no_echo:
                msg["noEcho"] = True
            wants = {lbl: Want(data=[d]) for lbl, d in deliveries.items()}
            if ack:
                aid = m.take_ack_id()
                msg["ackId"] = aid
                wants.setdefault(conn, Want()).acks[aid] = outcome
            elif outcome is not None:
                wants.setdefault(conn, Want()).close_rule = "forbidden.without-ack"
            self.send_messages(conn, [msg], wants)
            if ack and outcome is None:
                m.ok_acks.append((msg["ackId"], msg))

        @rule(conn=c, group=groups, n=st.integers(2, 10) | st.integers(50, 120), no_echo=st.booleans())
        def burst(self, conn, group, n, no_echo):
            """n messages from one publisher to one group, back to back; the last one acked.
            Half the bursts are long: losses and reorderings under load show up there."""
            m = self.usable(conn)
            if m is None or not self.hub.may_send(m, self.g(group)):
                return
            grp = self.g(group)
            wants: dict[str, Want] = {}
            msgs = []
            for i in range(n):
                marker = self.hub.new_marker()
                p = PayloadSpec("text", f"b{i}").bind(marker)
                for lbl, d in self.hub.client_group_send(m, grp, p, marker, no_echo).items():
                    wants.setdefault(lbl, Want()).data.append(d)
                msg: dict[str, object] = {"type": "sendToGroup", "group": grp, "payload": p}
                if no_echo:
                    msg["noEcho"] = True
                msgs.append(msg)
            aid = m.take_ack_id()
            msgs[-1]["ackId"] = aid
            wants.setdefault(conn, Want()).acks[aid] = None
            self.send_messages(conn, msgs, wants)

        @rule(conn=c, group=groups, add=st.booleans())
        def rest_membership(self, conn, group, add):
            m = self.addressable(conn)
            if m is None:
                return
            grp = self.g(group)
            op = "addConnectionToGroup" if add else "removeConnectionFromGroup"
            path = f"/groups/{seg(grp)}/connections/{seg(m.connection_id)}"  # type: ignore[arg-type]
            self.exchange(self.rest(op, path), {}, after=lambda r: self.check_status(op, r))
            if add:
                m.groups.add(grp)
            else:
                m.groups.discard(grp)

        # ============================================================== REST sends

        def _rest_group_send(self, grp: str, spec: PayloadSpec, excluded, special: dict[str, str] | None = None) -> None:
            marker = self.hub.new_marker()
            p = spec.bind(marker)
            ex = {lbl for lbl in excluded if self.addressable(lbl) is not None}
            deliveries = self.hub.rest_group_send(grp, p, marker, ex)
            for lbl, rule_id in (special or {}).items():
                if lbl in deliveries:
                    deliveries[lbl] = replace(deliveries[lbl], rule=rule_id)
            query = [("excluded", self.hub.conns[lbl].connection_id) for lbl in sorted(ex)]
            self.exchange(self.rest("sendToGroup", f"/groups/{seg(grp)}/:send", query=query, payload=p),
                          {lbl: Want(data=[d]) for lbl, d in deliveries.items()},
                          after=lambda r: self.check_status("sendToGroup", r))

        @rule(group=groups, payload=rest_payloads, excluded=st.lists(c, max_size=2, unique=True))
        def rest_send_to_group(self, group, payload, excluded):
            self._rest_group_send(self.g(group), payload, excluded)

        @rule(user=users, payload=rest_payloads)
        def rest_send_to_user(self, user, payload):
            marker = self.hub.new_marker()
            p = payload.bind(marker)
            uid = self.u(user)
            deliveries = self.hub.rest_user_send(uid, p, marker)  # type: ignore[arg-type]
            self.exchange(self.rest("sendToUser", f"/users/{seg(uid)}/:send", payload=p),  # type: ignore[arg-type]
                          {lbl: Want(data=[d]) for lbl, d in deliveries.items()},
                          after=lambda r: self.check_status("sendToUser", r))

        @rule(conn=c, payload=rest_payloads)
        def rest_send_to_connection(self, conn, payload):
            m = self.addressable(conn)
            if m is None:
                return
            marker = self.hub.new_marker()
            p = payload.bind(marker)
            deliveries = self.hub.rest_connection_send(m, p, marker)
            self.exchange(self.rest("sendToConnection", f"/connections/{seg(m.connection_id)}/:send", payload=p),  # type: ignore[arg-type]
                          {lbl: Want(data=[d]) for lbl, d in deliveries.items()},
                          after=lambda r: self.check_status("sendToConnection", r))

        @rule(payload=rest_payloads, excluded=st.lists(c, max_size=2, unique=True), filt=st.none() | filters)
        def rest_send_to_all(self, payload, excluded, filt):
            if filt is not None:
                filt = Filter(tuple(tuple(Atom(a.kind, self.g(a.value) if a.kind != "user" else self.u(a.value))  # type: ignore[arg-type]
                                          for a in clause) for clause in filt.clauses))
            marker = self.hub.new_marker()
            p = payload.bind(marker)
            ex = {lbl for lbl in excluded if self.addressable(lbl) is not None}
            deliveries = self.hub.rest_all_send(p, marker, ex, filt)
            query = [("excluded", self.hub.conns[lbl].connection_id) for lbl in sorted(ex)]
            if filt is not None:
                query.append(("filter", filt.text()))
            self.exchange(self.rest("sendToAll", "/:send", query=query, payload=p),
                          {lbl: Want(data=[d]) for lbl, d in deliveries.items()},
                          after=lambda r: self.check_status("sendToAll", r))

        # ============================================================== permissions and probes

        @rule(conn=c, permission=st.sampled_from([PERM_JOIN, PERM_SEND]), scope=st.none() | groups,
              grant=st.booleans(), then_try=st.booleans())
        def grant_or_revoke(self, conn, permission, scope, grant, then_try):
            """A REST grant or revoke; with ``then_try`` the connection at once makes the request
            the permission governs (join, or send to the group), acked."""
            m = self.addressable(conn)
            if m is None:
                return
            op = "grantPermission" if grant else "revokePermission"
            query = [("targetName", self.g(scope))] if scope else []
            path = f"/permissions/{permission}/connections/{seg(m.connection_id)}"  # type: ignore[arg-type]
            self.exchange(self.rest(op, path, query=query), {}, after=lambda r: self.check_status(op, r))
            perm = m.perms[permission]
            (perm.grant if grant else perm.revoke)(self.g(scope) if scope else None)
            m.perms_changed = True
            if then_try and self.usable(conn) is not None:
                if permission == PERM_JOIN:
                    self.join_or_leave(conn, scope or "g0", True, False)
                else:
                    self.send_to_group(conn, scope or "g0", PayloadSpec("text", "try"), False, True)

        @rule(conn=c, permission=st.sampled_from([PERM_JOIN, PERM_SEND]), scope=st.none() | groups)
        def check_permission(self, conn, permission, scope):
            m = self.addressable(conn)
            if m is None:
                return
            query = [("targetName", self.g(scope))] if scope else []
            path = f"/permissions/{permission}/connections/{seg(m.connection_id)}"  # type: ignore[arg-type]
            allowed = m.perms[permission].allows(self.g(scope) if scope else None)
            result = self.exchange(self.rest("checkPermission", path, query=query), {})
            self.check(result.status == (200 if allowed else 404), "rest.exists" if result.status in (200, 404) else "rest.status",
                       f"checkPermission({conn}, {permission}, {scope}) answered {result.status}, the model says "
                       f"{'permitted (200)' if allowed else 'not permitted (404)'}")

        @rule(group=groups, user=users)
        def probe_existence(self, group, user):
            grp, uid = self.g(group), self.u(user)
            if any(c.state == "detached" for c in self.hub.conns.values()):
                return  # whether a detached session 'exists' is not documented
            g_want = 200 if self.hub.members(grp) else 404
            u_want = 200 if self.hub.user_conns(uid) else 404  # type: ignore[arg-type]

            async def both():
                a = await self.rest("groupExists", f"/groups/{seg(grp)}")()
                b = await self.rest("userExists", f"/users/{seg(uid)}")()  # type: ignore[arg-type]
                return a, b

            a, b = self.exchange(both, {})
            self.check(a.status == g_want, "rest.exists", f"groupExists({group}) answered {a.status}, expected {g_want}")
            self.check(b.status == u_want, "rest.exists", f"userExists({user}) answered {b.status}, expected {u_want}")

        @rule(conn=c)
        def duplicate_ack(self, conn):
            m = self.usable(conn)
            if m is None or not m.ok_acks:
                return
            aid, msg = m.ok_acks[-1]
            self.send_messages(conn, [msg], {conn: Want(acks={aid: "Duplicate"})}, extra_rule="ack.duplicate")

        # ============================================================== reliable sessions

        @precondition(lambda self: has_reliable)
        @rule(conn=c)
        def drop(self, conn):
            m = self.usable(conn)
            if m is None or not m.reliable:
                return
            self.run(self.clients[conn].drop)
            m.state = "detached"
            self.exchange(None, {})

        @precondition(lambda self: any(c.state == "detached" for c in self.hub.conns.values()))
        @rule()
        def recover(self):
            label = next(lbl for lbl, c in self.hub.conns.items() if c.state == "detached")
            m = self.hub.conns[label]
            client = WireClient(label, self.t, m.protocol)
            path = client_path(ctx.hub, m.token, {"awps_connection_id": m.connection_id or "",
                                                  "awps_reconnection_token": m.reconnection_token or ""})

            async def go():
                try:
                    await client.open(ctx.portal.nursery, ctx.endpoint, path, [m.protocol.name], ctx.timeout)  # type: ignore[union-attr]
                except HandshakeFailed as exc:
                    return exc
                return None

            failure = self.run(go)
            if failure is not None:
                m.state = "closed"
                self.depart("reliable.recover", f"{label}'s recovery was refused: {failure}")
            self.clients[label] = client
            self.cursor[label] = 0
            m.state = "open"
            m.ok_acks.clear()  # whether the Duplicate memory survives a recovery is our decision only
            self.exchange(None, {label: Want(data=self.hub.replay(m), recovering=True)})
            self.ok("reliable.recover")

        @precondition(lambda self: has_reliable)
        @rule(conn=c, behind=st.integers(0, 3))
        def sequence_ack(self, conn, behind):
            m = self.usable(conn)
            if m is None or not m.reliable or m.seq == 0:
                return
            self.send_sequence_ack(conn, m, max(1, m.seq - behind))
            self.exchange(None, {})

        # ============================================================== teardown

        def teardown(self) -> None:
            try:
                if not self.failed and self.clients:
                    self.exchange(None, {})  # the last step's stragglers
            finally:
                self._close_all()

        def _close_all(self) -> None:
            clients = [(lbl, cl) for lbl, cl in self.clients.items()]
            detached = [m.connection_id for m in self.hub.conns.values() if m.state == "detached" and m.connection_id]

            async def close_all():
                async with trio.open_nursery() as n:
                    for _, cl in clients:
                        if cl.closed is None:
                            n.start_soon(cl.close, 1000)
                    for cid in detached:
                        n.start_soon(lambda cid=cid: ctx.rest.call(
                            "DELETE", f"/api/hubs/{seg(ctx.hub)}/connections/{seg(cid)}"))

            try:
                self.run(close_all)
            except Exception:  # teardown must not hide the example's own result
                pass

    HubMachine.__name__ = "HubMachine"
    HubMachine.__qualname__ = "HubMachine"
    return HubMachine
