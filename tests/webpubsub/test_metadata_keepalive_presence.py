"""Client metadata to every kind of subscriber (and across a reliable recovery), client TTL,
app-level ping/pong on every subprotocol that has it, and group presence from every way a
connection joins or leaves a group."""

from __future__ import annotations

import trio
import trio.testing

import fabric
from fabric import EventHandler
from fabric.testing import connect_in_process
from tests.fabric_support import quick_config

from .client_support import ROLES, connect

RELIABLE = "json.reliable.webpubsub.azure.v1"
PROTOBUF = "protobuf.webpubsub.azure.v1"
PROTOBUF_RELIABLE = "protobuf.reliable.webpubsub.azure.v1"


async def test_client_metadata_reaches_json_protobuf_and_simple_subscribers(fab, pb):
    pub = await connect(fab, user_id="pub", roles=ROLES)
    js = await connect(fab, roles=ROLES)
    await js.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
    await js.receive_json()
    proto = await connect_in_process(fab, "chat", subprotocol=PROTOBUF_RELIABLE, roles=ROLES)
    pb.DownstreamMessage.FromString(await proto.receive())
    U = pb.UpstreamMessage
    await proto.send(U(join_group_message=U.JoinGroupMessage(group="g", ack_id=1)).SerializeToString())
    pb.DownstreamMessage.FromString(await proto.receive())
    simple = await connect_in_process(fab, "chat", subprotocol=None, user_id="simple")
    with trio.fail_after(5):
        while not await fab.hub("chat").add_user_to_group("g", "simple"):
            await trio.sleep(0.01)
    await pub.send_json({"type": "sendToGroup", "group": "g", "ackId": 2, "noEcho": True, "dataType": "text",
                         "data": "hi", "metadata": {"Trace-Id": "abc", "x": ""}})
    assert await pub.receive_json() == {"type": "ack", "ackId": 2, "success": True}
    assert await js.receive_json() == {"type": "message", "from": "group", "group": "g", "dataType": "text",
                                       "data": "hi", "fromUserId": "pub", "metadata": {"trace-id": "abc", "x": ""}}
    dm = pb.DownstreamMessage.FromString(await proto.receive()).data_message
    assert dict(dm.metadata) == {"trace-id": "abc", "x": ""} and dm.sequence_id == 1 and dm.data.text_data == "hi"
    assert await simple.receive() == "hi"  # simple clients get the payload alone
    # metadata only: an empty text with the metadata (decision metadata.only)
    await pub.send_json({"type": "sendToGroup", "group": "g", "noEcho": True, "metadata": {"only": "me"}})
    assert await js.receive_json() == {"type": "message", "from": "group", "group": "g", "dataType": "text",
                                       "data": "", "fromUserId": "pub", "metadata": {"only": "me"}}


async def test_invalid_metadata_from_a_client(fab):
    pub = await connect(fab, roles=ROLES)
    await pub.send_json({"type": "sendToGroup", "group": "g", "ackId": 1, "data": 1, "metadata": {"a b": "c"}})
    ack = await pub.receive_json()
    assert ack["success"] is False and ack["error"]["name"] == "BadRequest" and "metadata" in ack["error"]["message"]
    await pub.send_json({"type": "sendToGroup", "group": "g", "data": 1, "metadata": {"k": "v" * 1025}})
    disconnected = await pub.receive_json()
    assert disconnected["event"] == "disconnected" and "1024" in disconnected["message"]
    assert await pub.wait_closed() == 1007


async def _detached_subscriber(fab):
    """A reliable member of group g whose socket died (the session waits for recovery)."""
    sub = await connect(fab, subprotocol=RELIABLE, roles=ROLES)
    await sub.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
    await sub.receive_json()
    member = fab.running_hubs()["chat"].connections[sub.connection_id]
    token = member.reconnection_token()
    await trio.aclose_forcefully(sub.stream)
    with trio.fail_after(5):
        while member.lifecycle.state.value != "detached":
            await trio.sleep(0.01)
    return sub.connection_id, token


async def _recover(fab, connection_id, token):
    again = await connect_in_process(fab, "chat", subprotocol=RELIABLE, anonymous=True,
                                     query={"awps_connection_id": connection_id, "awps_reconnection_token": token})
    assert (await again.receive_json())["event"] == "connected"
    return again


async def test_metadata_is_replayed_after_a_recovery(fab):
    pub = await connect(fab, roles=ROLES)
    connection_id, token = await _detached_subscriber(fab)
    await pub.send_json({"type": "sendToGroup", "group": "g", "ackId": 2, "dataType": "json", "data": [1],
                         "metadata": {"k": "v"}, "noEcho": True})
    await pub.receive_json()
    again = await _recover(fab, connection_id, token)
    assert await again.receive_json() == {"type": "message", "from": "group", "group": "g", "dataType": "json",
                                          "data": [1], "metadata": {"k": "v"}, "sequenceId": 1}


async def test_a_client_ttl_is_the_message_ttl(fab, autojump_clock):
    pub = await connect(fab, roles=ROLES)
    connection_id, token = await _detached_subscriber(fab)
    await pub.send_json({"type": "sendToGroup", "group": "g", "ackId": 2, "data": "short", "ttlSeconds": 1,
                         "noEcho": True})
    await pub.send_json({"type": "sendToGroup", "group": "g", "ackId": 3, "data": "long", "ttlSeconds": 300,
                         "noEcho": True})
    assert [(await pub.receive_json())["success"] for _ in range(2)] == [True, True]
    await trio.sleep(2)
    again = await _recover(fab, connection_id, token)
    msg = await again.receive_json()
    assert msg["data"] == "long" and msg["sequenceId"] == 2  # the first outlived its TTL: not replayed
    assert fab.hub("chat").statistics()["counters"]["expired_not_replayed"] == 1


async def test_ping_is_answered_on_every_subprotocol(fab, pb):
    for protocol in ("json.webpubsub.azure.v1", RELIABLE):
        c = await connect(fab, subprotocol=protocol)
        await c.send_json({"type": "ping"})
        assert await c.receive_json() == {"type": "pong"}  # never sequenced, never acked
    for protocol in (PROTOBUF, PROTOBUF_RELIABLE):
        c = await connect_in_process(fab, "chat", subprotocol=protocol)
        pb.DownstreamMessage.FromString(await c.receive())
        await c.send(pb.UpstreamMessage(ping_message=pb.UpstreamMessage.PingMessage()).SerializeToString())
        pong = pb.DownstreamMessage.FromString(await c.receive())
        assert pong.WhichOneof("message") == "pong_message"


class Presence(EventHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, str | None, str]] = []

    async def on_group_joined(self, context, group):
        self.events.append(("joined", context.user_id, group))

    async def on_group_left(self, context, group):
        self.events.append(("left", context.user_id, group))


async def test_presence_from_every_membership_change(autojump_clock):
    handler = Presence()
    async with fabric.open_fabric(quick_config(), access_key="test-key", handlers={"chat": handler}) as fab:
        hub = fab.hub("chat")
        a = await connect(fab, user_id="a", roles=ROLES, groups=("token",))
        b = await connect(fab, user_id="b", roles=ROLES)
        await a.send_json({"type": "joinGroup", "group": "client", "ackId": 1})
        await a.receive_json()
        await hub.add_user_to_group("users", "b")
        await hub.add_connections_to_groups(["filtered"], "userId eq 'a'")
        await hub.remove_connection_from_group("client", a.connection_id)
        await hub.remove_user_from_all_groups("b")
        await hub.add_connection_to_group("token", a.connection_id)  # already a member: nothing
        await a.aclose()
        await trio.sleep(1)
        assert handler.events[:6] == [
            ("joined", "a", "token"), ("joined", "a", "client"), ("joined", "b", "users"),
            ("joined", "a", "filtered"), ("left", "a", "client"), ("left", "b", "users"),
        ]
        # leaving every group at the end of the connection, in no particular order
        assert sorted(handler.events[6:]) == [("left", "a", "filtered"), ("left", "a", "token")]
        assert hub.statistics()["counters"]["presence_events"] == 8


async def test_no_presence_for_a_handler_that_does_not_ask(fab, autojump_clock):
    class Quiet(EventHandler):
        async def on_connected(self, context):
            pass

    fab.set_handler("chat", Quiet())
    c = await connect(fab, roles=ROLES)
    await c.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
    await c.receive_json()
    await trio.sleep(1)
    counters = fab.hub("chat").statistics()["counters"]
    assert counters["presence_events"] == 0 and counters["presence_dropped"] == 0


class Ordered(Presence):
    """Presence and connection events in one list; ``gate``, when set, holds every joined."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: trio.Event | None = None

    async def on_connected(self, context):
        self.events.append(("connected", context.user_id, ""))

    async def on_disconnected(self, context, reason):
        self.events.append(("disconnected", context.user_id, ""))

    async def on_group_joined(self, context, group):
        if self.gate is not None:
            await self.gate.wait()
        await super().on_group_joined(context, group)


async def test_presence_and_connection_events_arrive_in_the_order_they_happened(autojump_clock):
    """One queue (the hub's notifier) for all four: the groups of the token are joined before
    the connection counts as connected (the lifecycle's order), every group is left before
    ``disconnected``."""
    handler = Ordered()
    async with fabric.open_fabric(quick_config(), access_key="test-key", handlers={"chat": handler}) as fab:
        a = await connect(fab, user_id="a", roles=ROLES, groups=("t1", "t2"))
        await a.send_json({"type": "joinGroup", "group": "c", "ackId": 1})
        await a.receive_json()
        await a.aclose()
        await trio.sleep(1)
    assert handler.events[:4] == [("joined", "a", "t1"), ("joined", "a", "t2"), ("connected", "a", ""),
                                  ("joined", "a", "c")]
    assert sorted(handler.events[4:7]) == [("left", "a", "c"), ("left", "a", "t1"), ("left", "a", "t2")]
    assert handler.events[7:] == [("disconnected", "a", "")]


async def test_presence_beyond_the_notifier_mailbox_is_dropped_and_counted():
    from fabric.core.hub import Notifier

    handler = Ordered()
    async with fabric.open_fabric(quick_config(), access_key="test-key", handlers={"chat": handler}) as fab:
        hub = fab.hub("chat")
        a = await connect(fab, user_id="a", roles=ROLES)
        await trio.testing.wait_all_tasks_blocked()  # `connected` handled: the mailbox is empty
        handler.gate = trio.Event()
        await hub.add_connection_to_group("g0", a.connection_id)
        await trio.testing.wait_all_tasks_blocked()  # the notifier is held in g0's joined
        extra = 5
        for i in range(1, Notifier.mailbox_size + 1 + extra):
            await hub.add_connection_to_group(f"g{i}", a.connection_id)
        assert hub.statistics()["counters"]["presence_dropped"] == extra
        handler.gate.set()
        with trio.fail_after(30):
            while hub.statistics()["counters"]["presence_events"] < 1 + Notifier.mailbox_size:
                await trio.sleep(0.01)
        joined = [group for kind, _, group in handler.events if kind == "joined"]
        assert joined == [f"g{i}" for i in range(Notifier.mailbox_size + 1)]  # in order, the rest dropped
        # the connection itself never noticed: it still joins, sends and receives
        await a.send_json({"type": "sendToGroup", "group": "g1", "dataType": "text", "data": "still fine",
                           "ackId": 2})
        frames = [await a.receive_json() for _ in range(2)]
        assert {f["type"]: f.get("data", f.get("success")) for f in frames} == {"message": "still fine", "ack": True}
