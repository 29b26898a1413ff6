"""The suites besides the state machine: fixed handshake and REST checks, and a Hypothesis
property over single client frames (valid messages and near misses).

Rules this module keeps:
- Each check opens its own short-lived connections in the run's hub, with per-run names, and
  closes them; nothing here closes or changes connections it did not open.
- A probe's expected outcome comes from ``Probe.expect`` (``specs.conform.strategies``), i.e.
  from ``specs.errors``; the crash rule (``inbound.no-crash``: never 1011, never a dropped
  socket) is checked before the probe's own rule, since it holds whatever was decided.
- Departures are raised like the state machine's, with the probe's transcript.
"""

from __future__ import annotations

import secrets

import trio

from specs.conform.driver import HandshakeFailed, WireClient
from specs.conform.endpoint import client_path, mint_client_token, seg
from specs.conform.machine import Context, count_clean_frames
from specs.conform.report import departure
from specs.conform.strategies import Probe
from specs.conform.transcript import Transcript
from specs.conform.wire import Payload, encode_client
from specs.rest import OPERATIONS_BY_NAME
from specs.webpubsub_json import JSON_RELIABLE_V1, JSON_V1, PROTOBUF_V1

ALL_ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")


class Checks:
    """Helpers shared by the fixed checks and the probes of one run."""

    def __init__(self, ctx: Context, transcript: Transcript | None = None) -> None:
        self.ctx = ctx
        self.t = transcript or Transcript()

    def ok(self, rule_id: str, n: int = 1) -> None:
        if rule_id in self.ctx.enabled and n:
            self.ctx.ledger.ok(rule_id, n)

    def depart(self, rule_id: str, detail: str) -> None:
        if rule_id not in self.ctx.enabled:
            self.ctx.ledger.skipped.setdefault(rule_id, "disabled for this run")
            return
        raise departure(rule_id, self.t.clean(detail), self.t.render())

    def check(self, cond: bool, rule_id: str, detail: str) -> None:
        if cond:
            self.ok(rule_id)
        else:
            self.depart(rule_id, detail)

    async def open(self, label: str, protocol, *, token: str | None = None, extra: dict | None = None,
                   user: str | None = "conform-user") -> WireClient:
        ctx = self.ctx
        if token is None:
            token = mint_client_token(ctx.endpoint, ctx.hub, user_id=user, roles=ALL_ROLES)
        client = WireClient(label, self.t, protocol)
        await client.open(ctx.portal.nursery, ctx.endpoint, client_path(ctx.hub, token, extra),
                          [protocol.name] if protocol else [], ctx.timeout)
        return client

    async def rest(self, op: str, path: str, **kw):
        method = OPERATIONS_BY_NAME[op].method
        return await self.ctx.rest.call(method, f"/api/hubs/{seg(self.ctx.hub)}{path}", transcript=self.t, **kw)


# =========================================================================== fixed checks


def run_fixed_checks(ctx: Context) -> None:
    """Handshake, authentication, recovery refusal and REST status checks (one pass each).
    Raises the first departure."""
    chk = Checks(ctx)
    run_id = ctx.run_id

    async def go():
        # ---- a wrong key is refused before the upgrade
        bad = mint_client_token(ctx.endpoint, ctx.hub, user_id="x", key=ctx.endpoint.access_key + "-not")
        try:
            c = await chk.open("wrongkey", JSON_V1, token=bad)
        except HandshakeFailed as exc:
            chk.check(exc.status == 401, "auth.reject",
                      f"a client token signed with another key was refused with {exc.status}, expected 401")
        else:
            await c.close()
            chk.depart("auth.reject", "a client token signed with another key was accepted")
        r = await chk.ctx.rest.call("HEAD", f"/api/hubs/{seg(ctx.hub)}/groups/{seg(run_id + 'g')}",
                                    key=ctx.endpoint.access_key + "-not", transcript=chk.t)
        chk.check(r.status == 401, "auth.reject", f"a REST call signed with another key answered {r.status}, expected 401")

        # ---- recovering an unknown session: accepted, then closed with 1008
        extra = {"awps_connection_id": "conform-" + secrets.token_hex(8), "awps_reconnection_token": "bogus"}
        try:
            c = await chk.open("recover", JSON_RELIABLE_V1, extra=extra)
        except HandshakeFailed as exc:
            chk.depart("reliable.recovery-refused",
                       f"recovering an unknown session was refused with HTTP {exc.status}; clients retry that for 30 s")
        else:
            await c.wait_closed(ctx.timeout)
            code = c.closed.code if c.closed else None
            await c.close()
            chk.check(code == 1008, "reliable.recovery-refused",
                      f"recovering an unknown session was closed with {code}, expected 1008")

        # ---- REST operations on our own connection: the table's success status
        c = await chk.open("c", JSON_V1)
        await c.wait_until(lambda: bool(c.frames), ctx.timeout)
        cid = c.frames[0].connection_id if c.frames and c.frames[0].kind == "connected" else None
        if cid is None:
            chk.depart("connect.first-frame", "no system/connected on a fresh JSON connection")
        grp, uid = f"{run_id}-fixed", "conform-user"
        steps = [
            ("connectionExists", f"/connections/{seg(cid)}", {}, 200),
            ("addConnectionToGroup", f"/groups/{seg(grp)}/connections/{seg(cid)}", {}, None),
            ("groupExists", f"/groups/{seg(grp)}", {}, 200),
            ("listConnectionsInGroup", f"/groups/{seg(grp)}/connections", {}, None),
            ("removeConnectionFromGroup", f"/groups/{seg(grp)}/connections/{seg(cid)}", {}, None),
            ("addUserToGroup", f"/users/{seg(uid)}/groups/{seg(grp)}", {}, None),
            ("removeUserFromGroup", f"/users/{seg(uid)}/groups/{seg(grp)}", {}, None),
            ("removeUserFromAllGroups", f"/users/{seg(uid)}/groups", {}, None),
            ("removeConnectionFromAllGroups", f"/connections/{seg(cid)}/groups", {}, None),
            ("userExists", f"/users/{seg(uid)}", {}, 200),
            ("grantPermission", f"/permissions/sendToGroup/connections/{seg(cid)}", {"query": [("targetName", grp)]}, None),
            ("checkPermission", f"/permissions/sendToGroup/connections/{seg(cid)}", {"query": [("targetName", grp)]}, 200),
            ("revokePermission", f"/permissions/sendToGroup/connections/{seg(cid)}", {"query": [("targetName", grp)]}, None),
            ("sendToConnection", f"/connections/{seg(cid)}/:send", {"body": b"hello", "content_type": "text/plain"}, None),
            ("sendToUser", f"/users/{seg(uid + '-nobody')}/:send", {"body": b"{}", "content_type": "application/json"}, None),
            ("sendToGroup", f"/groups/{seg(grp + '-empty')}/:send", {"body": b"x", "content_type": "application/octet-stream"}, None),
            ("generateClientToken", "/:generateToken", {"query": [("userId", uid)]}, None),
            ("closeGroupConnections", f"/groups/{seg(grp + '-empty')}/:closeConnections", {}, None),
            ("closeUserConnections", f"/users/{seg(uid + '-nobody')}/:closeConnections", {}, None),
        ]
        for op, path, kw, want in steps:
            r = await chk.rest(op, path, **kw)
            expected = want if want is not None else OPERATIONS_BY_NAME[op].success
            chk.check(r.status == expected, "rest.status",
                      f"{op} answered {r.status or r.error} {r.body[:160]!r}, expected {expected}")
        # an unknown connection: 404 on PUT (decision rest.unknown-target)
        ghost = "conform-" + secrets.token_hex(8)
        r = await chk.rest("addConnectionToGroup", f"/groups/{seg(grp)}/connections/{seg(ghost)}")
        chk.check(r.status == 404, "rest.unknown-target", f"addConnectionToGroup(unknown connection) answered {r.status}")
        r = await chk.rest("connectionExists", f"/connections/{seg(ghost)}")
        chk.check(r.status == 404, "rest.exists", f"connectionExists(unknown connection) answered {r.status}")
        await c.close()

    ctx.portal.run(go)
    run_membership_check(ctx, Checks(ctx))
    run_fan_out_check(ctx, Checks(ctx))
    run_reliable_check(ctx, Checks(ctx))


def run_reliable_check(ctx: Context, chk: Checks) -> None:
    """A reliable session survives a dropped transport: messages 1-3 arrive, the client acks 2,
    the transport drops, messages 4-5 are sent meanwhile; the recovery (awps_connection_id +
    awps_reconnection_token) gets system/connected with the same id, then 3, 4, 5 with their
    original sequence ids, then live traffic (6)."""
    from specs.conform.machine import PROTOCOLS
    from specs.conform.strategies import marker_of

    reliable = [p for p in ctx.protocols if PROTOCOLS[p] is not None and PROTOCOLS[p].reliable]  # type: ignore[union-attr]
    grp = f"{ctx.run_id}-reliable"
    chk.t.alias(ctx.run_id + "-", "")

    def data(cl: WireClient):
        return [(marker_of(f.payload), f.sequence_id) for f in cl.frames if f.kind == "message"]

    async def go(i: int, name: str):
        protocol = PROTOCOLS[name]
        token = mint_client_token(ctx.endpoint, ctx.hub, user_id="conform-reliable", roles=ALL_ROLES, groups=(grp,))
        cl = await chk.open(f"r{i}", protocol, token=token)
        await cl.wait_until(lambda: bool(cl.frames), ctx.timeout)
        first = cl.frames[0]
        cid, rtok = first.connection_id, first.reconnection_token
        if cid:
            chk.t.alias(cid, cl.label)
        if rtok:
            chk.t.alias(rtok, f"<token of {cl.label}>")

        async def send(n: int) -> None:
            body = f"~m{i}{n}~".encode()
            await chk.rest("sendToGroup", f"/groups/{seg(grp)}/:send", body=body, content_type="text/plain",
                           note=f"text:{body.decode()}")

        for n in (1, 2, 3):
            await send(n)
        await cl.wait_until(lambda: len(data(cl)) >= 3, ctx.timeout)
        before = data(cl)
        await cl.send(encode_client(protocol, {"type": "sequenceAck", "sequenceId": 2})[1])
        await trio.sleep(0.05)  # let the ack land before the drop (the SDKs ack once a second)
        await cl.drop()
        for n in (4, 5):
            await send(n)
        back = WireClient(cl.label, chk.t, protocol)
        try:
            await back.open(ctx.portal.nursery, ctx.endpoint, client_path(ctx.hub, token, {
                "awps_connection_id": cid or "", "awps_reconnection_token": rtok or ""}), [protocol.name], ctx.timeout)
        except HandshakeFailed as exc:
            return {"label": cl.label, "name": name, "before": before, "refused": str(exc)}
        await back.wait_until(lambda: len(data(back)) >= 3 or back.closed is not None, ctx.timeout)
        await send(6)
        await back.wait_until(lambda: len(data(back)) >= 4 or back.closed is not None, ctx.timeout)
        out = {"label": cl.label, "name": name, "before": before, "cid": cid, "after": data(back),
               "first": back.frames[0] if back.frames else None, "closed": back.closed}
        await back.close()
        return out

    for i, name in enumerate(reliable):
        out = ctx.portal.run(go, i, name)
        who = f"{out['label']} ({out['name']})"
        want_before = [(f"m{i}{n}", n) for n in (1, 2, 3)]
        chk.check(out["before"] == want_before, "reliable.sequence",
                  f"{who} received {out['before']} before the drop, expected {want_before}")
        if "refused" in out:
            chk.depart("reliable.recover", f"{who}: the recovery was refused: {out['refused']}")
        if out["closed"] is not None and out["closed"].by != "client":
            chk.depart("reliable.recover", f"{who}: the recovered connection was closed: {out['closed'].code} "
                                           f"{out['closed'].reason!r}")
        first = out["first"]
        if first is None or first.kind != "connected":
            chk.depart("reliable.connected-again", f"{who}: the recovery did not start with system/connected")
        else:
            chk.check(first.connection_id == out["cid"], "reliable.recover",
                      f"{who} recovered as {first.connection_id}, expected {out['cid']}")
            chk.ok("reliable.connected-again")
        want_after = [(f"m{i}{n}", n) for n in (3, 4, 5, 6)]
        chk.check(out["after"] == want_after, "reliable.recover",
                  f"{who} received {out['after']} after recovering, expected {want_after} (unacked replayed in "
                  f"order with their sequence ids, then live)")


def run_membership_check(ctx: Context, chk: Checks) -> None:
    """The ack of joinGroup/leaveGroup means it took effect: a group message sent right after
    the join's ack reaches the connection, one sent right after the leave's ack does not; and a
    join without the role is Forbidden and joins nothing."""
    from specs.conform.strategies import marker_of

    grp = f"{ctx.run_id}-members"
    chk.t.alias(ctx.run_id + "-", "")
    protocols = [p for p in ctx.protocols if p != "simple"] or ["json"]
    from specs.conform.machine import PROTOCOLS

    async def ack_of(cl: WireClient, ack_id: int):
        await cl.wait_until(lambda: any(f.kind == "ack" and f.ack_id == ack_id for f in cl.frames), ctx.timeout)
        return next((f for f in cl.frames if f.kind == "ack" and f.ack_id == ack_id), None)

    async def fenced(cl: WireClient) -> None:
        _, ping = encode_client(cl.protocol, {"type": "ping"})
        n = sum(1 for f in cl.frames if f.kind == "pong")
        await cl.send(ping, quiet=True)
        await cl.wait_until(lambda: sum(1 for f in cl.frames if f.kind == "pong") > n, ctx.timeout)

    async def go(i: int, name: str):
        protocol = PROTOCOLS[name]
        cl = await chk.open(f"j{i}", protocol)
        await cl.wait_until(lambda: bool(cl.frames), ctx.timeout)
        if cl.frames and cl.frames[0].connection_id:
            chk.t.alias(cl.frames[0].connection_id, cl.label)
        out = {"label": cl.label, "name": name}
        for step, (kind, ack_id) in enumerate((("joinGroup", 1), ("leaveGroup", 2))):
            _, data = encode_client(protocol, {"type": kind, "group": grp, "ackId": ack_id})
            await cl.send(data)
            out[kind] = await ack_of(cl, ack_id)
            if kind == "joinGroup":  # the same ackId again: Duplicate, not processed again
                await cl.send(data)
                await cl.wait_until(lambda: sum(1 for f in cl.frames if f.kind == "ack" and f.ack_id == 1) >= 2,
                                    ctx.timeout)
                out["duplicate"] = [f for f in cl.frames if f.kind == "ack" and f.ack_id == 1][1:2]
            body = f"~m{i}{step}~after {kind}".encode()
            r = await chk.rest("sendToGroup", f"/groups/{seg(grp)}/:send", body=body, content_type="text/plain",
                               note=f"text:{body.decode()}")
            out[f"{kind}-status"] = r.status
            if kind == "joinGroup":
                await cl.wait_until(lambda: any(marker_of(f.payload) == f"m{i}0" for f in cl.frames), ctx.timeout)
                # noEcho: the first message must not come back, the second must (same publisher, so
                # the first would arrive before the second if it were echoed)
                for marker, no_echo, aid in ((f"m{i}5", True, 3), (f"m{i}6", False, 4)):
                    msg = {"type": "sendToGroup", "group": grp, "ackId": aid, "noEcho": no_echo,
                           "payload": Payload.text(f"~{marker}~noEcho={no_echo}")}
                    await cl.send(encode_client(protocol, msg)[1])
                await cl.wait_until(lambda: any(marker_of(f.payload) == f"m{i}6" for f in cl.frames), ctx.timeout)
                out["echo-got"] = any(marker_of(f.payload) == f"m{i}5" for f in cl.frames)
                out["plain-got"] = any(marker_of(f.payload) == f"m{i}6" for f in cl.frames)
            else:
                await fenced(cl)
            out[f"{kind}-got"] = any(marker_of(f.payload) == f"m{i}{step}" for f in cl.frames)
        await cl.close()
        weak = await chk.open(f"w{i}", protocol, token=mint_client_token(ctx.endpoint, ctx.hub, user_id="conform-weak"))
        await weak.wait_until(lambda: bool(weak.frames), ctx.timeout)
        _, data = encode_client(protocol, {"type": "joinGroup", "group": grp, "ackId": 7})
        await weak.send(data)
        out["forbidden"] = await ack_of(weak, 7)
        body = f"~m{i}9~after a forbidden join".encode()
        await chk.rest("sendToGroup", f"/groups/{seg(grp)}/:send", body=body, content_type="text/plain",
                       note=f"text:{body.decode()}")
        await fenced(weak)
        out["forbidden-got"] = any(marker_of(f.payload) == f"m{i}9" for f in weak.frames)
        await weak.close()
        return out

    for i, name in enumerate(protocols):
        out = ctx.portal.run(go, i, name)
        who = f"{out['label']} ({out['name']})"
        for kind in ("joinGroup", "leaveGroup"):
            ack = out[kind]
            if ack is None:
                chk.depart("ack.once", f"{who} got no ack for its {kind}")
            chk.check(bool(ack.success), "ack.success", f"{who}'s {kind} was refused: {ack.error}")
        dup = out.get("duplicate") or [None]
        chk.check(dup[0] is not None and not dup[0].success and dup[0].error is not None
                  and dup[0].error[0] == "Duplicate", "ack.duplicate",
                  f"{who}: a repeated joinGroup ackId was answered {dup[0].render if dup[0] else 'with no ack'}")
        chk.check(out["joinGroup-got"], "deliver.group",
                  f"{who} did not receive a group message sent right after its joinGroup was acked")
        chk.check(not out["echo-got"], "deliver.no-echo", f"{who} received its own noEcho message")
        chk.check(out["plain-got"], "deliver.group", f"{who} did not receive its own message sent without noEcho")
        chk.check(not out["leaveGroup-got"], "deliver.non-member",
                  f"{who} received a group message sent after its leaveGroup was acked")
        ack = out["forbidden"]
        if ack is None:
            chk.depart("ack.once", f"{who}: no ack for a joinGroup without the role")
        chk.check(not ack.success and ack.error is not None and ack.error[0] == "Forbidden", "ack.forbidden",
                  f"{who}: a joinGroup without the role was acked {'success' if ack.success else ack.error}")
        chk.check(not out["forbidden-got"], "ack.forbidden",
                  f"{who}: a joinGroup without the role joined the group anyway")


#: Messages in the fan-out volume check.
FAN_OUT_MESSAGES = 120


def run_fan_out_check(ctx: Context, chk: Checks) -> None:
    """One publisher sends ``FAN_OUT_MESSAGES`` group messages back to back to a group of
    members on every subprotocol under test; each member must receive all of them, once, in
    order (with consecutive sequence ids on reliable subprotocols)."""
    from specs.conform.machine import PROTOCOLS
    from specs.conform.strategies import PayloadSpec, marker_of

    grp = f"{ctx.run_id}-fanout"
    members = [p for p in ctx.protocols if p != "simple"] or ["json"]
    token = mint_client_token(ctx.endpoint, ctx.hub, user_id="conform-fanout", roles=ALL_ROLES, groups=(grp,))
    chk.t.alias(ctx.run_id + "-", "")

    async def go():
        clients = []
        for i, name in enumerate(members):
            clients.append(await chk.open(f"m{i}", PROTOCOLS[name], token=token))
        for cl in clients:
            await cl.wait_until(lambda cl=cl: bool(cl.frames), ctx.timeout)
            if cl.frames[0].kind == "connected" and cl.frames[0].connection_id:
                chk.t.alias(cl.frames[0].connection_id, cl.label)
        pub = clients[0]
        for cl in clients:
            cl.quiet_data = True
        chk.t.add(pub.label, ">", f"{FAN_OUT_MESSAGES} x sendToGroup {grp} text '~mN~f<N-1>' for N = 1.."
                                  f"{FAN_OUT_MESSAGES}, the last with ackId 1")
        for i in range(FAN_OUT_MESSAGES):
            msg = {"type": "sendToGroup", "group": grp, "payload": PayloadSpec("text", f"f{i}").bind(f"m{i + 1}")}
            if i == FAN_OUT_MESSAGES - 1:
                msg["ackId"] = 1
            _, data = encode_client(pub.protocol, msg)
            await pub.send(data, quiet=True)
            pub.quiet_pongs -= 1  # (quiet sends count a pong; these are not pings)
        deadline = trio.current_time() + ctx.timeout * 2  # one deadline for all members
        for cl in clients:
            await cl.wait_until(lambda cl=cl: sum(1 for f in cl.frames if f.kind == "message") >= FAN_OUT_MESSAGES,
                                max(0.0, deadline - trio.current_time()))
        for cl in clients:
            got = [marker_of(f.payload) for f in cl.frames if f.kind == "message"]
            chk.t.add(cl.label, "<", f"{len(got)} group messages" + (f", first {got[0]}, last {got[-1]}" if got else ""))
            await cl.close()
        return clients

    clients = ctx.portal.run(go)
    want = [f"m{i + 1}" for i in range(FAN_OUT_MESSAGES)]
    for cl in clients:
        frames = [f for f in cl.frames if f.kind == "message"]
        got = [marker_of(f.payload) for f in frames]
        missing = [m for m in want if m not in got]
        if missing:
            chk.depart("deliver.group", f"{cl.label} ({cl.protocol.name}) did not receive {len(missing)} of "
                                        f"{FAN_OUT_MESSAGES} group messages: {', '.join(missing[:10])}")
        chk.ok("deliver.group", len(want))
        if len(got) != len(want):
            chk.depart("deliver.group", f"{cl.label} received {len(got)} messages for {len(want)} sent")
        first_wrong = next((i for i, (g, w) in enumerate(zip(got, want)) if g != w), len(want))
        chk.check(got == want, "deliver.order", f"{cl.label} received the burst out of order: message "
                                                f"#{first_wrong + 1} was {got[first_wrong] if first_wrong < len(got) else None}, "
                                                f"sent as {want[first_wrong] if first_wrong < len(want) else None}")
        if cl.protocol.reliable:
            seqs = [f.sequence_id for f in frames]
            chk.check(seqs == list(range(seqs[0] or 1, (seqs[0] or 1) + len(seqs))), "reliable.sequence",
                      f"{cl.label}: sequence ids are not consecutive: {seqs[:12]}")


# =========================================================================== probes

FAMILIES = {"json": JSON_V1, "protobuf": PROTOBUF_V1}


def run_probe(ctx: Context, probe: Probe) -> None:
    """Send one frame on a fresh connection and check the endpoint's answer."""
    chk = Checks(ctx)
    protocol = FAMILIES[probe.protocol]

    async def go():
        try:
            c = await chk.open("p", protocol)
        except HandshakeFailed as exc:
            chk.depart("connect.accept", f"the probe connection was refused: {exc}")
            return
        await c.wait_until(lambda: bool(c.frames) or c.closed is not None, ctx.timeout)
        start = 1 if c.frames and c.frames[0].kind == "connected" else 0
        if probe.frame == "raw-text":
            await c.send_raw_frame(0x1, probe.data if isinstance(probe.data, bytes) else probe.data.encode(),
                                   f"text frame with bytes {probe.data!r}"[:200])
        else:
            await c.send(probe.data)
        expect = probe.expect
        if expect.startswith("close:"):
            await c.wait_closed(ctx.timeout)
        else:
            def answered() -> bool:
                frames = c.frames[start:]
                if c.closed is not None:
                    return True
                if probe.ack_id is not None:
                    return any(f.kind == "ack" and f.ack_id == probe.ack_id for f in frames)
                if expect == "pong":
                    return any(f.kind == "pong" for f in frames)
                return True
            await c.wait_until(answered, ctx.timeout)
            if c.closed is None:  # the connection must still work: ping -> pong
                _, ping = encode_client(protocol, {"type": "ping"})
                n = sum(1 for f in c.frames if f.kind == "pong")
                await c.send(ping, quiet=True)
                await c.wait_until(lambda: c.closed is not None or sum(1 for f in c.frames if f.kind == "pong") > n,
                                   ctx.timeout)
        frames = c.frames[start:]
        closed = c.closed
        await c.close()
        return frames, closed

    result = ctx.portal.run(go)
    if result is None:
        return
    frames, closed = result
    what = f"probe {probe.name}"
    # ---- never an internal error or a dropped socket for bad input
    if closed is not None and closed.by in ("server", "drop") and (closed.code in (None, 1006, 1011)):
        chk.depart("inbound.no-crash", f"{what}: the endpoint ended the connection with "
                                       f"{closed.code or 'no close frame'} {closed.reason!r}")
    chk.ok("inbound.no-crash")
    for f in frames:
        for rule_id, text in f.problems:
            chk.depart(rule_id, f"{what}: the answer {f.render}: {text}")
    count_clean_frames(chk.ok, protocol, frames)
    expect = probe.expect
    rule_id = probe.rule
    server_closed = closed is not None and closed.by in ("server", "drop")
    if expect.startswith("close:"):
        code = int(expect.split(":", 1)[1])
        if not server_closed:
            chk.depart(rule_id, f"{what}: the connection stayed open, expected close {code}")
        chk.check(closed.code == code, rule_id, f"{what}: closed with {closed.code} {closed.reason!r}, expected {code}")
        return
    if server_closed:
        chk.depart(rule_id, f"{what}: the endpoint closed the connection ({closed.code} {closed.reason!r}), "
                            f"expected {expect} and the connection kept")
    if expect == "pong":
        chk.check(any(f.kind == "pong" for f in frames), rule_id, f"{what}: no pong within {ctx.timeout:g} s")
        return
    acks = [f for f in frames if f.kind == "ack" and f.ack_id == probe.ack_id]
    if expect == "silent":
        others = [f for f in frames if f.kind not in ("pong",)]
        chk.check(not others, rule_id, f"{what}: expected no answer, got {others[0].render if others else ''}")
        return
    if not acks:
        chk.depart(rule_id if probe.ack_id is not None else "ack.once",
                   f"{what}: no ack for ackId {probe.ack_id} within {ctx.timeout:g} s")
    ack = acks[0]
    if expect == "ack":
        chk.check(bool(ack.success), rule_id, f"{what}: acked {ack.error}, expected success")
    else:
        name = expect.split(":", 1)[1]
        chk.check(not ack.success and ack.error is not None and ack.error[0] == name, rule_id,
                  f"{what}: acked {'success' if ack.success else ack.error}, expected error {name}")

