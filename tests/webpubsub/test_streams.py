"""Group streams end to end through the in-process client (specs.streams, client spec §3.6):
starts, exact sequencing, acks and nacks, ends, idle timeouts and keepalives, what subscribers
see (JSON, reliable, protobuf, simple), permissions, and bad input."""

from __future__ import annotations

import pytest
import trio

from fabric.testing import connect_in_process
from specs.streams import MAX_STREAMS_PER_CONNECTION

from .client_support import ROLES, connect

RELIABLE = "json.reliable.webpubsub.azure.v1"
PROTOBUF = "protobuf.webpubsub.azure.v1"


def start(stream_id="s", group="g", **extra):
    return {"type": "sendToGroup", "group": group, "stream": {"streamId": stream_id, **extra.pop("stream", {})},
            **extra}


def data(stream_id, seq, text):
    return {"type": "streamData", "streamId": stream_id, "streamSequenceId": seq, "dataType": "text", "data": text}


def ack(stream_id, expected):
    return {"type": "streamAck", "streamId": stream_id, "expectedSequenceId": expected}


async def joined(fab, group="g", **kw):
    c = await connect(fab, roles=ROLES, **kw)
    await c.send_json({"type": "joinGroup", "group": group, "ackId": 1})
    assert (await c.receive_json())["success"] is True
    return c


async def test_a_stream_from_start_to_end(fab):
    pub = await connect(fab, user_id="pub", roles=ROLES)
    sub = await joined(fab)
    await pub.send_json(start(noEcho=True, metadata={"Kind": "llm"}))
    assert await pub.receive_json() == ack("s", 1)
    for seq in (1, 2, 3):
        await pub.send_json(data("s", seq, f"part{seq}"))
        assert await pub.receive_json() == ack("s", seq + 1)
    for seq in (1, 2, 3):
        assert await sub.receive_json() == {
            "type": "message", "from": "group", "group": "g", "dataType": "text", "data": f"part{seq}",
            "fromUserId": "pub", "metadata": {"kind": "llm"}, "stream": {"streamId": "s", "streamSequenceId": seq}}
    await pub.send_json({"type": "streamEnd", "streamId": "s"})
    assert await pub.receive_json() == {"type": "streamClosed", "streamId": "s"}
    assert await sub.receive_json() == {
        "type": "message", "from": "group", "group": "g", "dataType": "text", "data": "", "fromUserId": "pub",
        "metadata": {"kind": "llm"}, "stream": {"streamId": "s", "streamSequenceId": 4, "endOfStream": True}}
    # the id may be reused once closed (§3.6.1.3)
    await pub.send_json(start())
    assert await pub.receive_json() == ack("s", 1)


async def test_sequence_rules_duplicates_gaps_zero(fab):
    pub = await connect(fab, roles=ROLES)
    sub = await joined(fab)
    await pub.send_json(start(noEcho=True))
    assert await pub.receive_json() == ack("s", 1)
    await pub.send_json(data("s", 1, "a"))
    assert await pub.receive_json() == ack("s", 2)
    await pub.send_json(data("s", 1, "a-again"))  # a duplicate: re-acked, not republished
    assert await pub.receive_json() == ack("s", 2)
    for bad in (3, 0, 2**64 - 1):  # a gap, zero, far ahead: nacked with the expected id
        await pub.send_json(data("s", bad, "x"))
        nack = await pub.receive_json()
        assert (nack["type"], nack["name"], nack["expectedSequenceId"]) == ("streamNack", "InvalidSequenceId", 2)
    await pub.send_json(data("s", 2, "b"))
    assert await pub.receive_json() == ack("s", 3)
    assert [(await sub.receive_json())["data"] for _ in range(2)] == ["a", "b"]
    counters = fab.hub("chat").statistics()["counters"]
    assert (counters["stream_fragments"], counters["stream_duplicates"], counters["stream_nacks"]) == (2, 1, 3)


async def test_end_with_a_user_error(fab):
    pub = await connect(fab, roles=ROLES)
    sub = await joined(fab)
    await pub.send_json(start(noEcho=True))
    await pub.receive_json()
    await pub.send_json({"type": "streamEnd", "streamId": "s", "error": {"message": "m", "userErrorCode": "E42",
                                                                         "name": "ignored"}})
    assert await pub.receive_json() == {"type": "streamClosed", "streamId": "s"}  # decision streams.end-closed
    assert (await sub.receive_json())["stream"] == {
        "streamId": "s", "streamSequenceId": 1, "endOfStream": True,
        "error": {"name": "UserError", "message": "m", "userErrorCode": "E42"}}


async def test_idle_timeout_and_keepalives(fab, autojump_clock):
    pub = await connect(fab, roles=ROLES)
    sub = await joined(fab)
    await pub.send_json(start(noEcho=True, stream={"idleTimeoutMs": 10_000}))
    assert await pub.receive_json() == ack("s", 1)
    for _ in range(5):  # keepalives every 6 s keep it open for 30 s
        await trio.sleep(6)
        await pub.send_json({"type": "streamData", "streamId": "s"})
    await pub.send_json(data("s", 1, "late"))
    assert await pub.receive_json() == ack("s", 2)  # keepalives are never answered
    assert (await sub.receive_json())["data"] == "late"
    for _ in range(2):  # duplicates do not keep it alive (decision streams.timer)
        await trio.sleep(4)
        await pub.send_json(data("s", 1, "dup"))
        assert await pub.receive_json() == ack("s", 2)
    closed = await pub.receive_json()
    assert closed["type"] == "streamClosed" and closed["error"]["name"] == "IdleTimeout"
    assert trio.current_time() == pytest.approx(30 + 10, abs=0.5)
    terminal = await sub.receive_json()
    assert terminal["stream"]["endOfStream"] is True and terminal["stream"]["error"]["name"] == "IdleTimeout"
    assert terminal["stream"]["streamSequenceId"] == 2
    await pub.send_json({"type": "streamData", "streamId": "s"})
    closed = await pub.receive_json()
    assert closed["error"]["name"] == "StreamNotFound"


async def test_the_default_idle_timeout_is_five_minutes(fab, autojump_clock):
    pub = await connect(fab, roles=ROLES)
    await pub.send_json(start())
    await pub.receive_json()
    t0 = trio.current_time()
    closed = await pub.receive_json(timeout=400)
    assert closed["error"]["name"] == "IdleTimeout" and trio.current_time() - t0 == pytest.approx(300, abs=0.5)


async def test_permissions_at_start_and_mid_stream(fab):
    pub = await connect(fab, roles=("webpubsub.sendToGroup.g",))
    sub = await joined(fab)
    await pub.send_json(start(group="other", ackId=5))
    assert await pub.receive_json() == {"type": "streamClosed", "streamId": "s", "error": {
        "name": "Forbidden", "message": "The connection does not have permission to send to the group."}}
    ack5 = await pub.receive_json()
    assert ack5["ackId"] == 5 and ack5["error"]["name"] == "Forbidden"
    await pub.send_json(start(noEcho=True, ackId=6))
    assert await pub.receive_json() == ack("s", 1)
    assert await pub.receive_json() == {"type": "ack", "ackId": 6, "success": True}
    await pub.send_json(data("s", 1, "ok"))
    assert await pub.receive_json() == ack("s", 2)
    assert (await sub.receive_json())["data"] == "ok"
    hub = fab.hub("chat")
    await hub.revoke_permission("sendToGroup", pub.connection_id, target="g")
    await pub.send_json(data("s", 2, "no"))
    closed = await pub.receive_json()
    assert closed["error"]["name"] == "Forbidden"
    terminal = await sub.receive_json()
    assert terminal["data"] == "" and terminal["stream"]["error"]["name"] == "Forbidden"


async def test_unknown_streams_and_duplicate_starts(fab):
    pub = await connect(fab, roles=ROLES)
    sub = await joined(fab)
    for message in (data("nope", 1, "x"), {"type": "streamData", "streamId": "nope"},
                    {"type": "streamEnd", "streamId": "nope"}):
        await pub.send_json(message)
        closed = await pub.receive_json()
        assert closed["streamId"] == "nope" and closed["error"]["name"] == "StreamNotFound"
    await pub.send_json(start(noEcho=True))
    await pub.receive_json()
    await pub.send_json(start(noEcho=True))  # already open: both end (decision streams.duplicate-start)
    closed = await pub.receive_json()
    assert closed["error"]["name"] == "BadRequest" and "already open" in closed["error"]["message"]
    assert (await sub.receive_json())["stream"]["error"]["name"] == "BadRequest"
    await pub.send_json(data("s", 1, "x"))
    assert (await pub.receive_json())["error"]["name"] == "StreamNotFound"
    # with an ackId, the refused start's ack says so (a fuzz run found success: true here)
    await pub.send_json(start("t", noEcho=True, ackId=1))
    assert [await pub.receive_json() for _ in range(2)][-1] == {"type": "ack", "ackId": 1, "success": True}
    await pub.send_json(start("t", noEcho=True, ackId=2))
    answers = [await pub.receive_json() for _ in range(2)]
    assert answers[0]["type"] == "streamClosed" and answers[0]["error"]["name"] == "BadRequest", answers
    assert answers[1]["type"] == "ack" and answers[1]["ackId"] == 2 and answers[1]["success"] is False, answers
    assert answers[1]["error"]["name"] == "BadRequest" and "already open" in answers[1]["error"]["message"]


async def test_at_most_so_many_open_streams(fab):
    pub = await connect(fab, roles=ROLES)
    for i in range(MAX_STREAMS_PER_CONNECTION):
        await pub.send_json(start(f"s{i}", noEcho=True))
        assert await pub.receive_json() == ack(f"s{i}", 1)
    await pub.send_json(start("one-more"))
    closed = await pub.receive_json()
    assert closed["streamId"] == "one-more" and closed["error"]["name"] == "BadRequest"
    await pub.send_json({"type": "streamEnd", "streamId": "s0"})
    await pub.receive_json()
    await pub.send_json(start("one-more", noEcho=True))
    assert await pub.receive_json() == ack("one-more", 1)


@pytest.mark.parametrize(
    ("message", "stream_id", "name"),
    [
        (start(stream={"idleTimeoutMs": 0}), "s", "BadRequest"),
        ({**start(), "dataType": "text", "data": "x"}, "s", "BadRequest"),
        ({"type": "sendToGroup", "group": "   ", "stream": {"streamId": "s"}}, "s", "BadRequest"),
        ({"type": "streamData", "streamId": "s", "streamSequenceId": 1}, "s", "StreamNotFound"),
    ],
)
async def test_invalid_stream_messages_are_answered_on_the_stream(fab, message, stream_id, name):
    pub = await connect(fab, roles=ROLES)
    await pub.send_json(message)
    closed = await pub.receive_json()
    assert closed["type"] == "streamClosed" and closed["streamId"] == stream_id and closed["error"]["name"] == name
    await pub.send_json({"type": "ping"})
    assert await pub.receive_json() == {"type": "pong"}


async def test_an_invalid_fragment_ends_an_open_stream(fab):
    pub = await connect(fab, roles=ROLES)
    sub = await joined(fab)
    await pub.send_json(start(noEcho=True))
    await pub.receive_json()
    await pub.send_json({"type": "streamData", "streamId": "s", "streamSequenceId": 1, "dataType": "text"})
    closed = await pub.receive_json()
    assert closed["error"]["name"] == "BadRequest"
    assert (await sub.receive_json())["stream"]["error"]["name"] == "BadRequest"


async def test_stream_messages_without_a_stream_id_close_the_connection(fab):
    pub = await connect(fab, roles=ROLES)
    await pub.send_json({"type": "streamData", "streamSequenceId": 1})
    assert (await pub.receive_json())["event"] == "disconnected"
    assert await pub.wait_closed() == 1007


async def test_the_end_of_the_connection_cancels_its_streams(fab):
    pub = await connect(fab, roles=ROLES)
    sub = await joined(fab)
    await pub.send_json(start(noEcho=True))
    await pub.receive_json()
    await pub.send_json(data("s", 1, "a"))
    await pub.receive_json()
    assert (await sub.receive_json())["data"] == "a"
    await pub.aclose()
    terminal = await sub.receive_json()
    assert terminal["stream"] == {"streamId": "s", "streamSequenceId": 2, "endOfStream": True,
                                  "error": {"name": "Cancelled", "message": "The publisher's connection ended."}}


async def test_reliable_subscribers_number_fragments_independently(fab):
    pub = await connect(fab, roles=ROLES)
    sub = await joined(fab, subprotocol=RELIABLE)
    simple = await connect_in_process(fab, "chat", subprotocol=None, user_id="simple")
    with trio.fail_after(5):
        while not await fab.hub("chat").add_user_to_group("g", "simple"):  # once it is registered
            await trio.sleep(0.01)
    await pub.send_json({"type": "sendToGroup", "group": "g", "dataType": "text", "data": "plain", "noEcho": True})
    await pub.send_json(start(noEcho=True))
    await pub.receive_json()
    await pub.send_json(data("s", 1, "frag"))
    await pub.receive_json()
    await pub.send_json({"type": "streamEnd", "streamId": "s"})
    await pub.receive_json()
    got = [await sub.receive_json() for _ in range(3)]
    assert [m["sequenceId"] for m in got] == [1, 2, 3]
    assert [m.get("stream", {}).get("streamSequenceId") for m in got] == [None, 1, 2]
    assert got[2]["stream"]["endOfStream"] is True
    # simple clients get the fragments' payloads, never the (empty) terminal (decision streams.terminal)
    assert [await simple.receive(), await simple.receive()] == ["plain", "frag"]
    await pub.send_json({"type": "sendToGroup", "group": "g", "dataType": "text", "data": "after"})
    assert await simple.receive() == "after"


async def test_no_echo_false_echoes_fragments_and_terminal(fab):
    pub = await joined(fab)
    await pub.send_json(start())
    assert await pub.receive_json() == ack("s", 1)
    await pub.send_json(data("s", 1, "x"))
    frames = [await pub.receive_json() for _ in range(2)]
    assert sorted(f["type"] for f in frames) == ["message", "streamAck"]
    await pub.send_json({"type": "streamEnd", "streamId": "s"})
    frames = [await pub.receive_json() for _ in range(2)]
    assert sorted(f["type"] for f in frames) == ["message", "streamClosed"]


async def test_streams_over_protobuf(fab, pb):
    pub = await connect_in_process(fab, "chat", subprotocol=PROTOBUF, roles=ROLES)
    pb.DownstreamMessage.FromString(await pub.receive())
    sub = await connect_in_process(fab, "chat", subprotocol="protobuf.reliable.webpubsub.azure.v1", roles=ROLES)
    pb.DownstreamMessage.FromString(await sub.receive())
    U = pb.UpstreamMessage
    await sub.send(U(join_group_message=U.JoinGroupMessage(group="g", ack_id=1)).SerializeToString())
    assert pb.DownstreamMessage.FromString(await sub.receive()).ack_message.success
    m = U.SendToGroupMessage(group="g", no_echo=True)
    m.stream.stream_id = "p"
    m.stream.idle_timeout_ms = 60_000
    m.metadata["k"] = "v"
    await pub.send(U(send_to_group_message=m).SerializeToString())
    a = pb.DownstreamMessage.FromString(await pub.receive()).stream_ack_message
    assert (a.stream_id, a.expected_sequence_id) == ("p", 1)
    for seq in (1, 3, 2):
        await pub.send(U(stream_data_message=U.StreamDataMessage(
            stream_id="p", stream_sequence_id=seq if seq != 2 else 2,
            data=pb.MessageData(binary_data=bytes([seq])))).SerializeToString())
    first = pb.DownstreamMessage.FromString(await pub.receive()).stream_ack_message
    nack = pb.DownstreamMessage.FromString(await pub.receive()).stream_nack_message
    second = pb.DownstreamMessage.FromString(await pub.receive()).stream_ack_message
    assert (first.expected_sequence_id, nack.name, nack.expected_sequence_id, second.expected_sequence_id) == (
        2, "InvalidSequenceId", 2, 3)
    await pub.send(U(stream_data_message=U.StreamDataMessage(stream_id="p")).SerializeToString())  # keepalive
    end = U.StreamEndMessage(stream_id="p")
    end.error.user_error_code = "E"
    await pub.send(U(stream_end_message=end).SerializeToString())
    closed = pb.DownstreamMessage.FromString(await pub.receive()).stream_closed_message
    assert closed.stream_id == "p" and not closed.HasField("error")
    got = [pb.DownstreamMessage.FromString(await sub.receive()).data_message for _ in range(3)]
    assert [(d.sequence_id, d.stream.stream_sequence_id, d.stream.end_of_stream) for d in got] == [
        (1, 1, False), (2, 2, False), (3, 3, True)]
    assert [d.data.binary_data for d in got[:2]] == [b"\x01", b"\x02"] and dict(got[0].metadata) == {"k": "v"}
    assert (got[2].stream.error.name, got[2].stream.error.user_error_code) == ("UserError", "E")
