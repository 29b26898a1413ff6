"""The protobuf subprotocols over real sockets, with a client generated from the published schema.

Microsoft's protobuf clients are not installable here (issue 6), so the client is
`protobuf_client.py`: protoc's classes from `tests/webpubsub/proto/webpubsub.v1.proto` (compiled once per
session by `tests/webpubsub/proto/oracle.py`) plus the JS SDK's connection logic (acks, sequence acks,
dedupe, recovery, new connection on 1008). It never imports the server's codec.

What is checked, and where the expectation comes from:
- the frames themselves: reference webpubsub-protocol.md §4 (messages and field numbers),
  specs/webpubsub_protobuf.py (decisions: JSON payloads travel as `json_data` = 4;
  explicit-presence fields such as `group`, `sequence_id`, `reconnection_token` are written
  only when they have a value; an anonymous user id is "");
- acks and their errors: specs/errors.py (Forbidden, Duplicate with the documented text,
  NotFound for an event nobody handles, BadRequest for an invalid message with an ackId);
- a group whose members speak every subprotocol: reference §4 "Cross-protocol conversion"
  and §2.6 (simple clients get text frames for text/json, binary frames for binary/protobuf;
  JSON clients get base64 for binary/protobuf);
- the reliable variant: reference §5 and specs/reliable.py (sequence ids from 1 per
  connection, recovery keeps the connection id, replay is at-least-once, the client dedupes);
  the subscriber goes through `chaos_proxy.ChaosProxy` exactly as in test_reliable_sdks.py,
  except that the pacing reads the acks off the client itself (the proxy only sniffs JSON);
- bad input: specs/errors.py CLOSE_RULES (malformed frame / invalid message without ackId:
  `disconnected`, then 1007; a text frame on protobuf: `disconnected`, then 1003; the session
  is discarded, so a reliable client's recovery is refused with 1008), and clients that did
  nothing wrong carry on.
Every wait is bounded; failures carry the client's socket history and the server's output.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import random
from pathlib import Path
from typing import Any, Callable

import pytest
import trio
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from chaos_proxy import ChaosProxy
from interop_support import (
    WAIT_TIMEOUT,
    FabricServer,
    JsonClient,
    RawClient,
    open_json_client,
    open_raw_client,
    unique,
)
from protobuf_client import (
    AckError,
    ProtobufClient,
    ReceivedMessage,
    any_message,
    open_protobuf_client,
    with_query,
)

BOTH_ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")
DUPLICATE_TEXT = "Message with ack-id: {} has been processed"  # concept-ack.md, specs/errors.py

# Load the session fixture `pb` (protoc's generated module) from tests/webpubsub/proto/oracle.py.
_PROTO_ORACLE = Path(__file__).resolve().parents[1] / "webpubsub" / "proto" / "oracle.py"
_spec = importlib.util.spec_from_file_location("_fabric_tests_proto_oracle_interop", _PROTO_ORACLE)
assert _spec is not None and _spec.loader is not None
_oracle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_oracle)
pb = _oracle.pb


# ------------------------------------------------------------------------------ helpers


def url_for(server: FabricServer, hub: str, *, user_id: str | None = None,
            roles: tuple[str, ...] = BOTH_ROLES, groups: tuple[str, ...] = ()) -> str:
    return server.client_url(hub, user_id=user_id, roles=roles, groups=groups)


def pb_client(pb_module: Any, server: FabricServer, url: str, *, reliable: bool, label: str, **kwargs: Any) -> Any:
    """`open_protobuf_client` whose failures also show the server's output."""
    return open_protobuf_client(pb_module, url, reliable=reliable, label=label, describe_extra=server.describe,
                                **kwargs)


def packed(pb_module: Any, text: str) -> any_pb2.Any:
    """A real google.protobuf.Any: a MessageData packed (type_url type.googleapis.com/azure.webpubsub.MessageData)."""
    out = any_pb2.Any()
    out.Pack(pb_module.MessageData(text_data=text))
    return out


def assert_data(msg: ReceivedMessage, data_type: str, value: Any) -> None:
    """`msg` carries `value` as `data_type` (JSON compared as values, Any by type_url and value)."""
    assert msg.data_type == data_type, f"expected {data_type}, got {msg}"
    if data_type == "json":
        assert json.loads(msg.data) == value, msg
    elif data_type == "protobuf":
        assert (msg.data.type_url, msg.data.value) == (value.type_url, value.value), msg
    else:
        assert msg.data == value, msg


async def poll_until(condition: Callable[[], bool], what: str, client: ProtobufClient,
                     timeout: float = WAIT_TIMEOUT) -> None:
    """Poll every 10 ms (for conditions the client is not notified of, such as proxy records)."""
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(0.01)
        return
    client.fail(f"timed out after {timeout} s waiting for {what}")


async def fence(client: ProtobufClient) -> None:
    """Ping and wait for the pong: everything the server queued for `client` before it
    handled the ping has arrived (one connection's frames are delivered in order)."""
    await client.ping()


# ------------------------------------------------------------------------------ 1. both subprotocols


@pytest.mark.parametrize("reliable", [False, True], ids=["protobuf", "protobuf.reliable"])
async def test_connected_join_publish_every_data_type_and_ping(fabric_server, pb, reliable):
    hub, group = unique("pb_basic"), unique("g")
    user = unique("pb_user")
    async with (
        pb_client(pb, fabric_server, url_for(fabric_server, hub, user_id=user), reliable=reliable, label="a") as a,
        pb_client(pb, fabric_server, url_for(fabric_server, hub), reliable=reliable, label="anon") as b,
    ):
        # connected: the first frame, with the connection id, the token's user, and a
        # reconnection token exactly on the reliable subprotocol
        for client, expected_user in ((a, user), (b, "")):
            ((conn_id, user_id, token),) = client.sockets[0].connected
            assert conn_id and user_id == expected_user, client.describe()
            if reliable:
                assert token, client.describe()
            else:
                assert token is None, f"reconnection_token on the non-reliable subprotocol: {client.describe()}"
        assert a.connection_id != b.connection_id

        # join with ack: ack_id echoed, success, no error field
        ack = await a.join_group(group)
        assert (ack.ack_id, ack.success, ack.HasField("error")) == (1, True, False), ack
        await b.join_group(group)

        payloads = [
            ("text", "hello ✓ protobuf"),
            ("json", {"a": 1, "b": [True, None, "x", 2.5], "c": {"d": "é"}}),
            ("binary", bytes(range(256)) + b"\x00"),
            ("protobuf", packed(pb, "inside an Any")),
        ]
        for i, (data_type, value) in enumerate(payloads):
            ack = await a.send_to_group(group, value, data_type)
            assert (ack.success, ack.HasField("error")) == (True, False), ack
        json_text = json.dumps(payloads[1][1])
        for client in (a, b):  # the sender gets its own messages too (no_echo false)
            for i, (data_type, value) in enumerate(payloads):
                msg = await client.next_message(i)
                assert (msg.source, msg.group) == ("group", group), msg
                assert_data(msg, data_type, value)
                assert msg.sequence_id == (i + 1 if reliable else None), msg
                assert not msg.raw.data_message.HasField("stream") and not msg.raw.data_message.metadata, msg
            # decision protobuf.json-data: json_data holds the JSON text exactly as published
            assert client.messages[1].data == json_text, client.messages[1]

        # no_echo: only the other member gets it
        await a.send_to_group(group, "not to myself", no_echo=True)
        msg = await b.next_message(4)
        assert_data(msg, "text", "not to myself")
        await fence(a)
        assert len(a.messages) == 4, a.describe()

        # leave: a no longer gets group messages
        await a.leave_group(group)
        await b.send_to_group(group, "after a left")
        assert_data(await b.next_message(5), "text", "after a left")
        await fence(a)
        assert len(a.messages) == 4, a.describe()

        # ping -> pong on both
        for client in (a, b):
            await client.ping()
            assert client.pongs >= 1

        if reliable:  # the client's cumulative sequence ack went out (timer: once a second)
            await b.wait_for(lambda: b.last_ack_sent == 6, "b's sequence ack of 6", timeout=3)
        assert a.protocol_errors == [] and b.protocol_errors == [], (a.describe(), b.describe())
        assert len(a.sockets) == 1 and len(b.sockets) == 1, "no reconnects expected"


@pytest.mark.parametrize("reliable", [False, True], ids=["protobuf", "protobuf.reliable"])
async def test_ack_errors_forbidden_not_found_and_duplicate(fabric_server, pb, reliable):
    hub, group = unique("pb_acks"), unique("g")
    async with (
        pb_client(pb, fabric_server, url_for(fabric_server, hub, roles=()), reliable=reliable, label="norole") as weak,
        pb_client(pb, fabric_server, url_for(fabric_server, hub), reliable=reliable, label="pub") as pub,
        pb_client(pb, fabric_server, url_for(fabric_server, hub), reliable=reliable, label="sub") as sub,
    ):
        # no roles: join and send are Forbidden; the connection stays open
        with pytest.raises(AckError) as err:
            await weak.join_group(group)
        assert err.value.name == "Forbidden" and err.value.message, err.value
        with pytest.raises(AckError) as err:
            await weak.send_to_group(group, "nope")
        assert err.value.name == "Forbidden", err.value
        with pytest.raises(AckError) as err:  # `fabric serve` has no event handler
            await weak.send_event("nobody_listens", {"x": 1}, "json")
        assert err.value.name == "NotFound", err.value
        await weak.ping()

        # Duplicate: the same ackId again is answered, not processed again
        await sub.join_group(group)
        await pub.join_group(group, ack_id=7)
        with pytest.raises(AckError) as err:
            await pub.join_group(group, ack_id=7)
        assert (err.value.ack_id, err.value.name, err.value.message) == (7, "Duplicate", DUPLICATE_TEXT.format(7))
        await pub.send_to_group(group, "first", ack_id=20)
        with pytest.raises(AckError) as err:
            await pub.send_to_group(group, "second with the same ackId", ack_id=20)
        assert (err.value.name, err.value.message) == ("Duplicate", DUPLICATE_TEXT.format(20))
        await pub.send_to_group(group, "third", ack_id=21)
        assert_data(await sub.next_message(0), "text", "first")
        assert_data(await sub.next_message(1), "text", "third")
        await fence(sub)
        assert [m.data for m in sub.messages] == ["first", "third"]
        assert sub.messages[1].sequence_id == (2 if reliable else None)

        for client in (weak, pub, sub):
            assert client.protocol_errors == [] and len(client.sockets) == 1, client.describe()


@pytest.mark.parametrize("reliable", [False, True], ids=["protobuf", "protobuf.reliable"])
async def test_events_with_ack_and_server_messages(echo_server, pb, reliable):
    """`event` with an ackId on the echo server: the reply is a server DataMessage in the
    event's data type (from "server", no group); a failing handler is an ack error."""
    hub = echo_server.ECHO_HUB
    async with pb_client(pb, echo_server, url_for(echo_server, hub), reliable=reliable, label="ev") as c:
        payloads = [("text", "echo ✓"), ("json", [1, {"two": 2}]), ("binary", b"\x00\x01\xfe\xff"),
                    ("protobuf", packed(pb, "echoed Any"))]
        for i, (data_type, value) in enumerate(payloads):
            ack = await c.send_event("echo", value, data_type)
            assert ack.success, ack
            msg = await c.next_message(i)
            assert (msg.source, msg.group) == ("server", None), msg
            assert_data(msg, data_type, value)
            assert msg.sequence_id == (i + 1 if reliable else None), msg
        with pytest.raises(AckError) as err:
            await c.send_event("fail", "please fail")
        assert err.value.name == "InternalServerError", err.value
        await c.send_event("echo", "without an ack", ack=False)
        assert_data(await c.next_message(4), "text", "without an ack")
        assert c.protocol_errors == [], c.describe()


# ------------------------------------------------------------------------------ 2. a mixed group

KINDS = ("json", "json.reliable", "protobuf", "protobuf.reliable")
DATA_TYPES = ("text", "json", "binary", "protobuf")


def payload_for(pb_module: Any, publisher: str, data_type: str) -> Any:
    """A value unique to (publisher, data type)."""
    if data_type == "text":
        return f"{publisher} says ✓ hi"
    if data_type == "json":
        return {"from": publisher, "n": [1, 2.5, True, None], "s": "é\"\\"}
    if data_type == "binary":
        return publisher.encode() + bytes([0, 1, 127, 128, 254, 255])
    return any_message(f"type.googleapis.com/test.{publisher.replace('.', '_')}", publisher.encode() + b"\x00\xff")


def wire_bytes(value: Any) -> bytes:
    """The bytes a binary/protobuf payload is made of (for protobuf: the serialized Any)."""
    return value.SerializeToString() if isinstance(value, any_pb2.Any) else value


async def json_ping_fence(client: JsonClient) -> list[dict[str, Any]]:
    """Ping; return every frame that arrived before the pong (none expected)."""
    await client.send_json({"type": "ping"})
    before = list(client.pending)
    client.pending.clear()
    with trio.fail_after(WAIT_TIMEOUT):
        while (msg := await client.recv_json()).get("type") != "pong":
            before.append(msg)
    return [m for m in before if m.get("type") != "ack"]


async def await_simple_in_groups(publisher: JsonClient, simple: RawClient, sync_group: str) -> None:
    """A simple client gets no `connected`: probe `sync_group` (its last token group) until a
    probe arrives, then read up to a marker, so its stream starts clean."""
    with trio.fail_after(WAIT_TIMEOUT):
        probe = 0
        while True:
            probe += 1
            await publisher.publish(sync_group, f"probe-{probe}", "text")
            frame = await simple.try_recv(0.2)
            if frame is not None:
                break
        await publisher.publish(sync_group, "synced", "text")
        while (frame := await simple.recv()) != "synced":
            assert isinstance(frame, str) and frame.startswith("probe-"), frame


async def test_mixed_group_every_member_gets_every_message_in_its_own_format(fabric_server, pb):
    """Members on both JSON subprotocols, both protobuf subprotocols and a simple client; each
    PubSub member publishes every data type, a simple sendToGroup client publishes text and
    binary. Every member gets all 18 messages, in publish order, converted per reference §4
    "Cross-protocol conversion" and §2.6."""
    hub, group, sync_group = unique("pb_mixed"), unique("g"), unique("sync")
    users = {name: unique(name.replace(".", "_")) for name in (*KINDS, "simple", "simple_pub")}
    server = fabric_server

    def url(name: str, **kwargs: Any) -> str:
        return url_for(server, hub, user_id=users[name], **kwargs)

    simple_pub_url = with_query(url("simple_pub", roles=(f"webpubsub.sendToGroup.{group}",)),
                                webpubsub_mode="sendToGroup", group=group)
    async with (
        open_json_client(url("json"), label="json", server=server) as jm,
        open_json_client(url("json.reliable"), reliable=True, label="json.reliable", server=server) as jr,
        pb_client(pb, server, url("protobuf"), reliable=False, label="protobuf") as pm,
        pb_client(pb, server, url("protobuf.reliable"), reliable=True, label="protobuf.reliable") as pr,
        open_raw_client(url("simple", roles=(), groups=(group, sync_group)), label="simple", server=server) as sm,
        open_raw_client(simple_pub_url, label="simple_pub", server=server) as sp,
    ):
        members: dict[str, Any] = {"json": jm, "json.reliable": jr, "protobuf": pm, "protobuf.reliable": pr}
        for name, client in members.items():
            if isinstance(client, JsonClient):
                await client.join(group)
            else:
                await client.join_group(group)
        await await_simple_in_groups(jm, sm, sync_group)

        schedule = [(p, dt) for p in KINDS for dt in DATA_TYPES] + [("simple_pub", "text"), ("simple_pub", "binary")]
        for k, (publisher, data_type) in enumerate(schedule):
            value = payload_for(pb, publisher, data_type)
            # publish
            if publisher == "simple_pub":
                await sp.send(value if data_type == "text" else wire_bytes(value))
            elif publisher.startswith("json"):
                data = base64.b64encode(wire_bytes(value)).decode() if data_type in ("binary", "protobuf") else value
                await members[publisher].publish(group, data, data_type)
            else:
                await members[publisher].send_to_group(group, value, data_type)
            where = f"message {k} ({publisher} {data_type})"

            # JSON members: dataType and base64 where due, fromUserId, sequenceId on reliable
            for name in ("json", "json.reliable"):
                msg = await members[name].next_message()
                assert (msg["from"], msg["group"], msg["dataType"]) == ("group", group, data_type), \
                    f"{name} {where}: {msg}"
                assert msg.get("fromUserId") == users[publisher], f"{name} {where}: {msg}"
                got = msg["data"]
                if data_type in ("binary", "protobuf"):
                    assert base64.b64decode(got, validate=True) == wire_bytes(value), f"{name} {where}: {msg}"
                else:
                    assert got == value, f"{name} {where}: {msg}"
                if name == "json.reliable":
                    assert msg.get("sequenceId") == k + 1, f"{name} {where}: {msg}"
                else:
                    assert "sequenceId" not in msg, f"{name} {where}: {msg}"

            # protobuf members: the MessageData member of the data type
            for name in ("protobuf", "protobuf.reliable"):
                msg = await members[name].next_message(k)
                assert (msg.source, msg.group) == ("group", group), f"{name} {where}: {msg}"
                assert_data(msg, data_type, value)
                assert msg.sequence_id == (k + 1 if name == "protobuf.reliable" else None), f"{name} {where}: {msg}"

            # the simple member: text frames for text/json, binary frames for binary/protobuf
            frame = await sm.recv()
            if data_type == "text":
                assert frame == value, f"simple {where}: {frame!r}"
            elif data_type == "json":
                assert isinstance(frame, str) and json.loads(frame) == value, f"simple {where}: {frame!r}"
            else:
                assert isinstance(frame, bytes) and frame == wire_bytes(value), f"simple {where}: {frame!r}"

        # nothing else arrived anywhere
        for name in ("json", "json.reliable"):
            extra = await json_ping_fence(members[name])
            assert extra == [], f"{name} got more: {extra}"
        for name in ("protobuf", "protobuf.reliable"):
            await fence(members[name])
            assert len(members[name].messages) == len(schedule), members[name].describe()
            assert members[name].protocol_errors == [] and members[name].duplicates == 0, members[name].describe()
        assert await sm.try_recv(0.3) is None


# ------------------------------------------------------------------------------ 3. reliability

MESSAGES = 5000
ABORTS = 5
HALF_OPEN = frozenset({1, 3})  # aborts 2 and 4 leave the server's socket open (decision reliable.half-open)
ACK_WINDOW = 600  # never more than this many messages beyond the subscriber's last sequence ack
MAX_RATE = 1000.0  # messages per second
BATCH = 20  # send_to_group frames per publisher round trip (the last one carries an ackId)
PUBLISH_TIMEOUT = 40.0
DRAIN_TIMEOUT = 15.0


def _ready_for_abort(sub: ProtobufClient, aborts_done: int) -> bool:
    """The subscriber is on the socket we expect (one per abort so far), and it carries data."""
    return (len(sub.sockets) == aborts_done + 1 and sub.is_open and sub.sockets[-1].status == "open"
            and sub.sockets[-1].data_frames > 0)


async def publish_through_chaos(pub: ProtobufClient, sub: ProtobufClient, group: str, proxy: ChaosProxy) -> None:
    """Publish "m0".."m4999" paced on the subscriber's sequence acks (the server discards a
    session with more than 1000 unacked messages), aborting the subscriber's socket ABORTS
    times spread over the run."""
    thresholds = [MESSAGES * (k + 1) // (ABORTS + 1) for k in range(ABORTS)]
    sent = aborts_done = 0
    started = trio.current_time()
    with trio.move_on_after(PUBLISH_TIMEOUT) as scope:
        while sent < MESSAGES:
            if aborts_done < ABORTS and sent >= thresholds[aborts_done] and _ready_for_abort(sub, aborts_done):
                victims = await trio.to_thread.run_sync(lambda: proxy.abort_all(half_open=aborts_done in HALF_OPEN))
                assert victims == 1, f"abort {aborts_done + 1}: expected one live connection, aborted {victims}"
                aborts_done += 1
                continue
            elapsed = trio.current_time() - started
            if sent + BATCH - sub.last_ack_sent > ACK_WINDOW or sent > MAX_RATE * elapsed:
                await trio.sleep(0.005)
                continue
            count = min(BATCH, MESSAGES - sent)
            for i in range(sent, sent + count - 1):
                await pub.send_to_group(group, f"m{i}", ack=False)
            await pub.send_to_group(group, f"m{sent + count - 1}")
            sent += count
    if scope.cancelled_caught:
        sub.fail(f"publishing did not finish in {PUBLISH_TIMEOUT} s: sent {sent}, aborts {aborts_done}")
    if aborts_done != ABORTS:
        sub.fail(f"only {aborts_done} of {ABORTS} aborts happened (recoveries too slow to carry data)")


async def test_protobuf_reliable_client_gets_5000_messages_once_in_order_across_five_aborts(fabric_server, pb):
    hub, group = unique("pb_rel"), unique("g")
    with ChaosProxy(fabric_server.port, name="chaos-pb") as proxy:
        sub_url = proxy.proxied(url_for(fabric_server, hub, user_id=unique("pb_sub")))
        async with (
            open_protobuf_client(pb, sub_url, reliable=True, label="pb_sub", auto_reconnect=False,
                                 describe_extra=lambda: f"{proxy.describe()}\n{fabric_server.describe()}") as sub,
            pb_client(pb, fabric_server, url_for(fabric_server, hub), reliable=False, label="pb_pub") as pub,
        ):
            await sub.join_group(group)
            first = sub.sockets[0].connected[0]
            await publish_through_chaos(pub, sub, group, proxy)
            await sub.wait_for(lambda: len(sub.messages) >= MESSAGES and sub.last_ack_sent >= MESSAGES,
                               f"all {MESSAGES} messages and their sequence ack", DRAIN_TIMEOUT)
            await trio.sleep(0.5)  # anything delivered twice would show up now
            await fence(sub)
            records = proxy.records()  # before the client's own close frame
            report = sub.describe()

        # exactly once, in order, with the original sequence ids, on one connection
        data = [m.data for m in sub.messages]
        assert len(data) == MESSAGES, f"{len(data)} messages, {len(set(data))} distinct\n{report}"
        assert data == [f"m{i}" for i in range(MESSAGES)], next(
            (f"message {i} is {d!r}" for i, d in enumerate(data) if d != f"m{i}"), "")
        assert [m.sequence_id for m in sub.messages] == list(range(1, MESSAGES + 1))
        assert {(m.source, m.group, m.data_type) for m in sub.messages} == {("group", group, "text")}
        assert sub.events[:1] == [("connected", first[0])] and ("disconnected", "") not in sub.events, report
        assert [e for e in sub.events if e[0] != "stopped"] == [("connected", first[0])], report
        assert sub.protocol_errors == [], report

        # the client's view: one new socket, then one successful recovery per abort, each
        # answered with connected for the same id and token (decision reliable.connected-again)
        sockets = list(sub.sockets)
        assert [s.kind for s in sockets] == ["new"] + ["recovery"] * ABORTS, report
        assert [s.close_code for s in sockets[:-1]] == [1006] * ABORTS, report
        assert all(s.connected == [first] for s in sockets), report
        # at-least-once on the wire: replays resent what was seen but not yet acked; dropped here
        wire = sum(s.data_frames for s in sockets)
        assert sub.duplicates == wire - MESSAGES > 0, f"nothing was replayed?\n{report}"

        # the proxy's view: the recovery requests carried the SDK query parameters
        summary = "\n".join(r.summary() for r in records)
        assert len(records) == ABORTS + 1 and not records[0].is_recovery, summary
        for rec in records[1:]:
            assert rec.query.get("awps_connection_id") == first[0], summary
            assert rec.query.get("awps_reconnection_token") == first[2], summary
        assert all(r.status == 101 and r.server_close_code is None for r in records), summary
        ended = [(r.ended or "").split(",")[0] for r in records[:ABORTS]]
        assert ended == ["aborted", "half-open", "aborted", "half-open", "aborted"], summary


# ------------------------------------------------------------------------------ 4. bad input

WRONG_FRAME_TEXT = "The protobuf subprotocol requires binary messages."  # specs/errors.py WRONG_FRAME_TYPE


class Bystanders:
    """A protobuf publisher, a reliable protobuf subscriber and a JSON subscriber in one group,
    connected before the damage; the bad client joins the same group."""

    def __init__(self, server: FabricServer, hub: str, group: str, pub: ProtobufClient, sub: ProtobufClient,
                 json_sub: JsonClient) -> None:
        self.server, self.hub, self.group = server, hub, group
        self.pub, self.sub, self.json_sub = pub, sub, json_sub
        self.rounds = 0

    async def check(self) -> None:
        self.server.check_alive()
        text = f"still here {self.rounds}"
        await self.pub.send_to_group(self.group, text)
        assert_data(await self.sub.next_message(self.rounds), "text", text)
        assert self.sub.messages[-1].sequence_id == self.rounds + 1
        msg = await self.json_sub.next_message()
        assert (msg["dataType"], msg["data"]) == ("text", text), msg
        self.rounds += 1
        assert self.sub.protocol_errors == [] and len(self.sub.sockets) == 1, self.sub.describe()


@pytest.fixture
async def bystanders(fabric_server, pb):
    hub, group = unique("pb_bad"), unique("g")
    async with (
        pb_client(pb, fabric_server, url_for(fabric_server, hub), reliable=False, label="by_pub") as pub,
        pb_client(pb, fabric_server, url_for(fabric_server, hub), reliable=True, label="by_sub") as sub,
        open_json_client(url_for(fabric_server, hub), label="by_json", server=fabric_server) as json_sub,
    ):
        await sub.join_group(group)
        await json_sub.join(group)
        yield Bystanders(fabric_server, hub, group, pub, sub, json_sub)


def rejected_by_protobuf(pb_module: Any, frame: bytes) -> bool:
    try:
        pb_module.UpstreamMessage().ParseFromString(frame)
    except DecodeError:
        return True
    return False


def random_garbage(pb_module: Any, seed: int) -> bytes:
    """Seeded random bytes that protobuf's own parser rejects as an UpstreamMessage."""
    rnd = random.Random(seed)
    for _ in range(1000):
        frame = rnd.randbytes(rnd.randint(1, 64))
        if rejected_by_protobuf(pb_module, frame):
            return frame
    raise AssertionError("no rejected random frame found")


def send_to_group_frame(pb_module: Any, group: str, text: str, ack_id: int | None = None) -> bytes:
    U = pb_module.UpstreamMessage
    inner = U.SendToGroupMessage(group=group, data=pb_module.MessageData(text_data=text))
    if ack_id is not None:
        inner.ack_id = ack_id
    return U(send_to_group_message=inner).SerializeToString()


def bad_frames(pb_module: Any, group: str) -> dict[str, tuple[str | bytes, int]]:
    """name -> (frame, expected close code)."""
    whole = send_to_group_frame(pb_module, group, "a perfectly good message, cut short")
    no_data = pb_module.UpstreamMessage(
        send_to_group_message=pb_module.UpstreamMessage.SendToGroupMessage(group=group)).SerializeToString()
    bad_utf8_group = bytes([6 << 3 | 2, 3, 1 << 3 | 2, 1, 0xFF])  # join_group_message{group: b"\xff"}
    frames: dict[str, tuple[str | bytes, int]] = {
        "random bytes (seed 1)": (random_garbage(pb_module, 1), 1007),
        "random bytes (seed 2)": (random_garbage(pb_module, 2), 1007),
        "truncated after the tag": (whole[:1], 1007),
        "truncated in the middle": (whole[: len(whole) // 2], 1007),
        "truncated by one byte": (whole[:-1], 1007),
        "wire type 7": (b"\x0f\x00", 1007),
        "varint of 11 bytes": (b"\x08" + b"\xff" * 10 + b"\x01", 1007),
        "string that is not UTF-8": (bad_utf8_group, 1007),
        "empty frame": (b"", 1007),  # decision protobuf.no-message
        "sendToGroup without data or ackId": (no_data, 1007),  # InvalidMessage without ackId
        "text frame": ("hello, protobuf?", 1003),
    }
    for name, (frame, _) in frames.items():  # the malformed ones really are malformed
        if name.startswith(("random", "truncated", "wire", "varint", "string")):
            assert rejected_by_protobuf(pb_module, frame), f"{name}: protobuf parses {frame!r}"
    return frames


BAD_FRAME_NAMES = [
    "random bytes (seed 1)", "random bytes (seed 2)", "truncated after the tag", "truncated in the middle",
    "truncated by one byte", "wire type 7", "varint of 11 bytes", "string that is not UTF-8", "empty frame",
    "sendToGroup without data or ackId", "text frame",
]


@pytest.mark.parametrize("reliable", [False, True], ids=["protobuf", "protobuf.reliable"])
@pytest.mark.parametrize("case", BAD_FRAME_NAMES)
async def test_bad_frame_closes_after_disconnected_and_others_carry_on(fabric_server, pb, bystanders, case, reliable):
    """Malformed / invalid: `disconnected`, then 1007; a text frame: `disconnected`, then 1003.
    The session is discarded, so a reliable client's recovery is accepted and closed 1008."""
    frame, code = bad_frames(pb, bystanders.group)[case]
    url = url_for(fabric_server, bystanders.hub)
    async with pb_client(pb, fabric_server, url, reliable=reliable, label="bad", auto_reconnect=False) as bad:
        await bad.join_group(bystanders.group)
        await bystanders.check()
        try:
            await bad.send_raw(frame)
        except Exception as exc:  # NotConnected: the server closed while we were still sending
            print(f"sending failed: {exc!r}")
        await bad.wait_for(lambda: bad.stopped, "the client to stop (no auto-reconnect)", WAIT_TIMEOUT * 2)
        report = bad.describe()
        first = bad.sockets[0]
        assert first.close_code == code, f"expected close {code}\n{report}"
        assert first.last_frame == "system_message.disconnected_message", \
            f"no disconnected just before the close\n{report}"
        assert len(first.disconnected) == 1 and first.disconnected[0], report
        print(f"{case}: close {first.close_code} {first.close_reason!r}, disconnected {first.disconnected[0]!r}")
        if case == "text frame":
            assert first.disconnected[0] == WRONG_FRAME_TEXT, report
        elif code == 1007 and "data" not in case:  # the codec's explanation is passed on
            assert "UpstreamMessage" in first.disconnected[0], report
        if reliable:  # recovery attempted (code != 1008), refused: accepted, then 1008, nothing sent
            assert [s.kind for s in bad.sockets] == ["new", "recovery"], report
            assert (bad.sockets[1].close_code, bad.sockets[1].frames) == (1008, 0), report
        else:
            assert len(bad.sockets) == 1, report
        assert bad.events == [("connected", first.connected[0][0]), ("disconnected", first.disconnected[0]),
                              ("stopped", None)], report
        assert bad.protocol_errors == [], report
    await bystanders.check()
    # the message published before the damage reached the bad client, nothing after it
    assert [m.data for m in bad.messages] == ["still here 0"], bad.describe()


@pytest.mark.parametrize("reliable", [False, True], ids=["protobuf", "protobuf.reliable"])
async def test_invalid_or_unsupported_with_ack_id_keeps_the_connection(fabric_server, pb, bystanders, reliable):
    """An invalid message with an ackId is answered with ack BadRequest (an invalid stream start
    also with streamClosed BadRequest); an invoke nobody handles with an invokeResponse error
    NotFound; an unknown oneof member is ignored (decision protobuf.no-message); the connection
    stays open and keeps working."""
    U = pb.UpstreamMessage
    url = url_for(fabric_server, bystanders.hub)
    async with pb_client(pb, fabric_server, url, reliable=reliable, label="odd", auto_reconnect=False) as odd:
        await odd.join_group(bystanders.group)
        with pytest.raises(AckError) as err:
            await odd.request(lambda a: U(send_to_group_message=U.SendToGroupMessage(group=bystanders.group,
                                                                                    ack_id=a)))
        assert err.value.name == "BadRequest" and err.value.message, err.value
        with pytest.raises(AckError) as err:  # a stream start must not carry data (specs.streams)
            await odd.request(lambda a: U(send_to_group_message=U.SendToGroupMessage(
                group=bystanders.group, ack_id=a, data=pb.MessageData(text_data="x"),
                stream=U.StreamStartInfo(stream_id="s1"))))
        assert err.value.name == "BadRequest", err.value
        await odd.send(U(invoke_event_message=U.InvokeEventMessage(event="e", invocation_id="inv-1",
                                                                  data=pb.MessageData(text_data="?"))))
        await odd.wait_for(lambda: any(m.WhichOneof("message") == "invoke_response_message" for m in odd.other_frames),
                           "an invoke response")
        (resp,) = [m.invoke_response_message for m in odd.other_frames
                   if m.WhichOneof("message") == "invoke_response_message"]
        assert (resp.invocation_id, resp.success, resp.error.name) == ("inv-1", False, "NotFound"), resp
        closed = [m.stream_closed_message for m in odd.other_frames if m.WhichOneof("message") == "stream_closed_message"]
        assert [(c.stream_id, c.error.name) for c in closed] == [("s1", "BadRequest")]
        await odd.send_raw(b"\x9a\x06\x00")  # field 99 (unknown), length-delimited, empty: ignored
        await odd.ping()
        await bystanders.check()
        assert_data(await odd.next_message(0), "text", "still here 0")
        await odd.send_to_group(bystanders.group, "still fine")
        assert_data(await bystanders.sub.next_message(1), "text", "still fine")
        assert len(odd.sockets) == 1 and odd.is_open and odd.protocol_errors == [], odd.describe()


# ------------------------------------------------------------------------------ 5. session gone: a new connection


async def test_protobuf_reliable_client_opens_a_new_connection_when_the_session_is_gone(fabric_server, pb):
    """What the SDKs do on 1008 (reference §5.2-5.4): no recovery, `disconnected`, a brand-new
    connection (sequence ids from 1 again) and the groups rejoined. Twice: the app server
    closes the live connection (REST, decision close.rest: disconnected then 1008), and the
    app server closes a dropped session while the client's recovery is held in the proxy
    (the recovery is then accepted and closed 1008)."""
    hub, group = unique("pb_gone"), unique("g")
    service = fabric_server.service_client(hub)
    with ChaosProxy(fabric_server.port, name="chaos-pb-gone") as proxy:
        sub_url = proxy.proxied(url_for(fabric_server, hub, user_id=unique("pb_gone_sub")))
        async with (
            open_protobuf_client(pb, sub_url, reliable=True, label="pb_gone_sub", recovery_interval=0.2,
                                 describe_extra=lambda: f"{proxy.describe()}\n{fabric_server.describe()}") as sub,
            pb_client(pb, fabric_server, url_for(fabric_server, hub), reliable=False, label="pub") as pub,
        ):
            await sub.join_group(group)
            first_id = sub.connection_id
            await pub.send_to_group(group, "one")
            assert (await sub.next_message(0)).sequence_id == 1

            # 1. REST close of the live connection
            await trio.to_thread.run_sync(lambda: service.close_connection(first_id, reason="go away"))
            await sub.wait_for(lambda: len([e for e in sub.events if e[0] == "connected"]) == 2, "a new connection")
            second_id = sub.connection_id
            assert second_id != first_id
            assert sub.events == [("connected", first_id), ("disconnected", "go away"), ("connected", second_id)]
            assert sub.sockets[0].close_code == 1008 and sub.sockets[0].last_frame.endswith("disconnected_message")
            assert [s.kind for s in sub.sockets] == ["new", "new"], sub.describe()  # 1008: no recovery attempt
            await _published_until_received(pub, sub, group, "two", index=1)
            assert sub.messages[1].sequence_id == 1, sub.describe()  # a new connection counts from 1

            # 2. the session is closed while the client is away; its recovery is refused
            await trio.to_thread.run_sync(proxy.hold, True)
            assert await trio.to_thread.run_sync(proxy.abort_all) == 1
            await pub.send_to_group(group, "lost with the session")
            await poll_until(lambda: len(proxy.records()) >= 3, "the recovery request (held)", sub)
            await trio.to_thread.run_sync(lambda: service.close_connection(second_id, reason="closed while away"))
            await trio.to_thread.run_sync(proxy.hold, False)
            await sub.wait_for(lambda: len([e for e in sub.events if e[0] == "connected"]) == 3, "a third connection")
            third_id = sub.connection_id
            assert third_id not in (first_id, second_id)
            kinds = [s.kind for s in sub.sockets]
            assert kinds == ["new", "new", "recovery", "new"], sub.describe()
            assert (sub.sockets[2].close_code, sub.sockets[2].frames) == (1008, 0), sub.describe()
            await _published_until_received(pub, sub, group, "three", index=2)
            assert sub.messages[2].sequence_id == 1, sub.describe()
            assert [m.data for m in sub.messages] == ["one", "two", "three"], sub.describe()
            assert sub.protocol_errors == [], sub.describe()


async def _published_until_received(pub: ProtobufClient, sub: ProtobufClient, group: str, text: str, index: int) -> None:
    """The client rejoins its groups by itself after a new connection; publish until the
    rejoin has happened (earlier copies are simply not delivered to it)."""
    with trio.fail_after(WAIT_TIMEOUT):
        while True:
            await pub.send_to_group(group, text)
            with trio.move_on_after(0.2):
                await sub.wait_for(lambda: len(sub.messages) > index, "the rejoined group's message", 1)
                break
    assert_data(sub.messages[index], "text", text)
