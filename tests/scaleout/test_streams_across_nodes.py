"""Group streams (client spec §3.6) across nodes: a stream published on node A reaches
subscribers on node B exactly as it reaches subscribers on A (stream id, sequence ids, the
terminal's end of stream and error, metadata, in order among the publisher's other sends),
in every format, on a ``MemoryBus`` and through a real redis-server (where the publication
crosses as its wire form, ``StreamPublication`` being a registered publication kind)."""

from __future__ import annotations

import json

import pytest
import trio

from fabric.testing import connect_in_process
from tests.webpubsub.client_support import ROLES, connect
from tests.webpubsub.proto.oracle import pb  # noqa: F401 (fixture)

pytestmark = pytest.mark.slow

RELIABLE = "json.reliable.webpubsub.azure.v1"
PROTOBUF_RELIABLE = "protobuf.reliable.webpubsub.azure.v1"


async def joined(fab, group="g", **kw):
    client = await connect(fab, roles=ROLES, **kw)
    await client.send_json({"type": "joinGroup", "group": group, "ackId": 1})
    assert await client.receive_json() == {"type": "ack", "ackId": 1, "success": True}
    return client


async def request(pub, message, expected):
    await pub.send_json(message)
    assert await pub.receive_json() == expected


def fragment(seq, data_type, data):
    return {"type": "streamData", "streamId": "s", "streamSequenceId": seq, "dataType": data_type, "data": data}


def ack(expected):
    return {"type": "streamAck", "streamId": "s", "expectedSequenceId": expected}


async def test_a_stream_reaches_another_node_as_it_reaches_its_own(nodes, pb):  # noqa: F811 (the fixture)
    async with nodes(2) as (a, b):
        pub = await connect(a, user_id="pub", roles=ROLES)
        local = await joined(a)
        remote = await joined(b)
        remote_reliable = await joined(b, subprotocol=RELIABLE)
        remote_pb = await connect_in_process(b, "chat", subprotocol=PROTOBUF_RELIABLE, roles=ROLES)
        pb.DownstreamMessage.FromString(await remote_pb.receive())  # connected
        U = pb.UpstreamMessage
        await remote_pb.send(U(join_group_message=U.JoinGroupMessage(group="g", ack_id=1)).SerializeToString())
        assert pb.DownstreamMessage.FromString(await remote_pb.receive()).ack_message.success
        remote_simple = await connect_in_process(b, "chat", subprotocol=None, user_id="simple")
        with trio.fail_after(5):
            while not await b.hub("chat").add_user_to_group("g", "simple"):  # once it is registered
                await trio.sleep(0.01)

        plain = {"type": "sendToGroup", "group": "g", "dataType": "text", "noEcho": True}
        await pub.send_json({**plain, "data": "before"})
        await request(pub, {"type": "sendToGroup", "group": "g", "noEcho": True, "metadata": {"Model": "m1"},
                            "stream": {"streamId": "s"}}, ack(1))
        await request(pub, fragment(1, "text", "tok "), ack(2))
        await request(pub, fragment(2, "json", {"n": [1, None]}), ack(3))
        await request(pub, fragment(3, "binary", "AP8="), ack(4))
        await request(pub, {"type": "streamEnd", "streamId": "s", "error": {"message": "cut", "userErrorCode": "E1"}},
                      {"type": "streamClosed", "streamId": "s"})
        await pub.send_json({**plain, "data": "after"})

        def message(data_type, data, stream=None):
            m = {"type": "message", "from": "group", "group": "g", "dataType": data_type, "data": data,
                 "fromUserId": "pub"}
            if stream is not None:
                m |= {"metadata": {"model": "m1"}, "stream": stream}
            return m

        expected = [
            message("text", "before"),
            message("text", "tok ", {"streamId": "s", "streamSequenceId": 1}),
            message("json", {"n": [1, None]}, {"streamId": "s", "streamSequenceId": 2}),
            message("binary", "AP8=", {"streamId": "s", "streamSequenceId": 3}),
            message("text", "", {"streamId": "s", "streamSequenceId": 4, "endOfStream": True,
                                 "error": {"name": "UserError", "message": "cut", "userErrorCode": "E1"}}),
            message("text", "after"),
        ]
        got_local = [await local.receive_json() for _ in expected]
        got_remote = [await remote.receive_json() for _ in expected]
        assert got_local == expected
        assert got_remote == got_local

        reliable = [await remote_reliable.receive_json() for _ in expected]
        assert [m.pop("sequenceId") for m in reliable] == list(range(1, len(expected) + 1))
        assert reliable == expected

        got_pb = [pb.DownstreamMessage.FromString(await remote_pb.receive()).data_message for _ in expected]
        assert [d.sequence_id for d in got_pb] == list(range(1, len(expected) + 1))
        streamed = got_pb[1:5]
        assert [(d.stream.stream_id, d.stream.stream_sequence_id, d.stream.end_of_stream) for d in streamed] == [
            ("s", 1, False), ("s", 2, False), ("s", 3, False), ("s", 4, True)]
        assert (streamed[3].stream.error.name, streamed[3].stream.error.message,
                streamed[3].stream.error.user_error_code) == ("UserError", "cut", "E1")
        assert [dict(d.metadata) for d in streamed] == [{"model": "m1"}] * 4
        assert not got_pb[0].HasField("stream") and not got_pb[5].HasField("stream")
        assert json.loads(streamed[1].data.json_data) == {"n": [1, None]}
        assert streamed[2].data.binary_data == b"\x00\xff"

        # a simple client gets the fragments' payloads and never the terminal (decision
        # streams.terminal), wherever the stream came from
        got_simple = [await remote_simple.receive() for _ in range(5)]
        assert got_simple == ["before", "tok ", '{"n":[1,null]}', b"\x00\xff", "after"]


async def test_a_publisher_leaving_cancels_its_stream_on_every_node(nodes):
    async with nodes(2) as (a, b):
        pub = await connect(a, roles=ROLES)
        remote = await joined(b)
        await request(pub, {"type": "sendToGroup", "group": "g", "noEcho": True, "stream": {"streamId": "s"}}, ack(1))
        await request(pub, fragment(1, "text", "a"), ack(2))
        assert (await remote.receive_json())["stream"] == {"streamId": "s", "streamSequenceId": 1}
        await pub.aclose()
        terminal = await remote.receive_json()
        assert terminal["data"] == "" and terminal["stream"] == {
            "streamId": "s", "streamSequenceId": 2, "endOfStream": True,
            "error": {"name": "Cancelled", "message": "The publisher's connection ended."}}
