"""X-WebPubSub-Metadata-* request headers on the four :send operations (specs.metadata):
folded (prefix case-insensitive, key lower-cased, last header and last comma part win), validated
(400 InvalidMetadata naming the header, nothing sent), and delivered as the message's metadata
to JSON, reliable and protobuf clients (kept across a reliable replay); the embedded API takes
the same map as ``metadata=``."""

from __future__ import annotations

import pytest
import trio

from fabric.appserver.service import InvalidArgument

from .rest_support import ROLES, connect, connect_in_process, settle

HUB = "/api/hubs/chat"
RELIABLE = "json.reliable.webpubsub.azure.v1"


async def test_metadata_headers_reach_clients_on_every_send(fab, rest):
    c = await connect(fab, user_id="u1", roles=ROLES)
    await c.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
    await c.receive_json()
    headers = [("X-WebPubSub-Metadata-Trace", "t1"), ("x-webpubsub-metadata-tenant", "a, b ,  contoso"),
               ("X-WEBPUBSUB-METADATA-Trace", "t2"), ("X-WebPubSub-Metadata-", "ignored"), ("X-Other", "no")]
    expected = {"trace": "t2", "tenant": "contoso"}
    for path in (f"{HUB}/:send", f"{HUB}/groups/g/:send", f"{HUB}/users/u1/:send",
                 f"{HUB}/connections/{c.connection_id}/:send"):
        r = await rest.send(path, "hi", headers=headers)
        assert r.status == 202, r
        msg = await c.receive_json()
        assert msg["metadata"] == expected and msg["data"] == "hi", (path, msg)
    # without the headers: no metadata key at all
    assert (await rest.send(f"{HUB}/:send", "plain")).status == 202
    assert "metadata" not in await c.receive_json()


async def test_metadata_survives_a_reliable_replay(fab, rest):
    c = await connect(fab, subprotocol=RELIABLE)
    assert (await rest.send(f"{HUB}/:send", "x", headers=[("X-WebPubSub-Metadata-K", "v")])).status == 202
    msg = await c.receive_json()
    assert msg == {"type": "message", "from": "server", "dataType": "text", "data": "x", "metadata": {"k": "v"},
                   "sequenceId": 1}
    hub = fab.running_hubs()["chat"]
    member = hub.connections[c.connection_id]
    (sequence_id, publication), = member.replay.unacked()
    assert sequence_id == 1 and dict(publication.metadata) == {"k": "v"}


async def test_metadata_reaches_protobuf_clients(fab, rest, pb):
    c = await connect_in_process(fab, "chat", subprotocol="protobuf.webpubsub.azure.v1")
    pb.DownstreamMessage.FromString(await c.receive())  # connected
    assert (await rest.send(f"{HUB}/:send", "x", headers=[("X-WebPubSub-Metadata-K", "v"),
                                                          ("X-WebPubSub-Metadata-L", "")])).status == 202
    dm = pb.DownstreamMessage.FromString(await c.receive()).data_message
    assert dict(dm.metadata) == {"k": "v", "l": ""} and dm.data.text_data == "x"


@pytest.mark.parametrize(
    "headers",
    [
        [("X-WebPubSub-Metadata-" + "k" * 257, "v")],
        [("X-WebPubSub-Metadata-k", "v" * 1025)],
        [(f"X-WebPubSub-Metadata-k{i}", "v" * 1000) for i in range(9)],  # over 8 KiB together
    ],
)
async def test_invalid_metadata_headers_are_400_and_nothing_is_sent(fab, rest, headers):
    c = await connect(fab)
    r = await rest.send(f"{HUB}/:send", "x", headers=headers)
    assert r.status == 400 and r.error["code"] == "InvalidMetadata", r
    assert r.error["target"] == "X-WebPubSub-Metadata-*"
    await settle()
    with pytest.raises(trio.TooSlowError):  # nothing was sent
        await c.receive(timeout=1)


async def test_the_embedded_api_takes_metadata(fab):
    c = await connect(fab, user_id="u", roles=ROLES)
    hub = fab.hub("chat")
    await hub.send_to_user("u", {"a": 1}, metadata={"Key": "value"})
    assert (await c.receive_json())["metadata"] == {"key": "value"}
    for bad in ({"a b": "v"}, {"k": 1}, {"k": "v", "K": "w"}, ["k", "v"]):
        with pytest.raises(InvalidArgument) as info:
            await hub.send_to_all("x", metadata=bad)
        assert info.value.code == "InvalidMetadata"
    await hub.send_to_all("x", metadata={})  # an empty map is no metadata
    assert "metadata" not in await c.receive_json()
