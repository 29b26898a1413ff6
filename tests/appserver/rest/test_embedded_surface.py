"""The same operations on the embedded API (fabric.hub_api.HubHandle): one implementation,
two surfaces. Validation raises ValueError subclasses before anything happens."""

from __future__ import annotations

import jwt
import pytest

from fabric import Payload
from fabric.appserver.odata import FilterError, compile_filter
from fabric.appserver.service import InvalidArgument

from .rest_support import ROLES, connect


async def drain_until(client, *markers):
    """Messages until every marker arrived (markers sent after the messages, one per route)."""
    got, waiting = [], set(markers)
    while waiting:
        msg = await client.receive_json()
        if isinstance(msg.get("data"), str) and msg["data"] in waiting:
            waiting.discard(msg["data"])
        else:
            got.append(msg)
    return got


async def test_sends_with_filters_and_excluded(fab):
    hub = fab.hub("chat")
    a = await connect(fab, user_id="a")
    b = await connect(fab, user_id="b")
    await hub.add_connection_to_group("g", a.connection_id)
    await hub.add_connection_to_group("g", b.connection_id)
    await hub.send_to_all("f1", filter="userId eq 'a'")
    await hub.send_to_all("f2", filter=compile_filter("userId eq 'b'"))
    await hub.send_to_group("g", {"k": 1}, filter="'g' in groups", excluded=[b.connection_id])
    await hub.send_to_user("a", Payload.text("u"), filter="userId ne null", message_ttl_seconds=10)
    await hub.send_to_all("end")
    await hub.send_to_group("g", "end-g")
    # order is kept per topic only: the group message goes through the group's actor
    assert sorted(map(str, (m["data"] for m in await drain_until(a, "end", "end-g")))) == ["f1", "u", "{'k': 1}"]
    assert [m["data"] for m in await drain_until(b, "end", "end-g")] == ["f2"]


async def test_bulk_group_operations_and_paging(fab):
    hub = fab.hub("chat")
    clients = [await connect(fab, user_id=f"u{i}") for i in range(5)]
    assert await hub.add_connections_to_groups(["odd"], "endswith(userId, '1') or endswith(userId, '3')") == 2
    assert await hub.add_connections_to_groups(["all", "also"]) == 5
    assert await hub.remove_connections_from_groups(["also"], "userId ne 'u0'") == 4
    assert sorted(m["userId"] for m in await hub.list_connections_in_group("odd")) == ["u1", "u3"]
    assert [m["userId"] for m in await hub.list_connections_in_group("also")] == ["u0"]
    everyone = await hub.list_connections_in_group("all")
    assert [m["connectionId"] for m in everyone] == sorted(c.connection_id for c in clients)
    page, cursor = await hub.list_connections_page("all", max_page_size=2)
    assert page == everyone[:2] and cursor == everyone[1]["connectionId"]
    page, cursor = await hub.list_connections_page("all", max_page_size=2, after=cursor, top=1)
    assert page == everyone[2:3] and cursor is None


async def test_permission_model(fab):
    hub = fab.hub("chat")
    c = await connect(fab, roles=["webpubsub.sendToGroup"])
    cid = c.connection_id
    assert await hub.has_permission("sendToGroup", cid)
    await hub.revoke_permission("sendToGroup", cid, target="x")
    assert not await hub.has_permission("sendToGroup", cid, target="x")
    assert await hub.has_permission("sendToGroup", cid, target="y")
    assert not await hub.has_permission("sendToGroup", cid)
    assert await hub.grant_permission("sendToGroup", cid)
    assert await hub.has_permission("sendToGroup", cid, target="x")
    await hub.revoke_permission("sendToGroup", cid)
    assert not await hub.has_permission("sendToGroup", cid, target="y")
    assert not await hub.grant_permission("sendToGroup", "ghost")
    assert not await hub.has_permission("joinLeaveGroup", "ghost")


async def test_permission_entries_are_bounded(fab):
    hub = fab.hub("chat")
    c = await connect(fab)
    with pytest.raises(InvalidArgument) as info:
        for i in range(2000):
            await hub.grant_permission("joinLeaveGroup", c.connection_id, target=f"g{i}")
    assert info.value.target == "targetName"
    assert await hub.grant_permission("joinLeaveGroup", c.connection_id)  # the unscoped grant still works


@pytest.mark.parametrize("call, target", [
    (lambda h: h.send_to_group("", "x"), "group"),
    (lambda h: h.send_to_group("a\x00b", "x"), "group"),
    (lambda h: h.send_to_user("", "x"), "userId"),
    (lambda h: h.send_to_connection("\x01", "x"), "connectionId"),
    (lambda h: h.send_to_all("x", message_ttl_seconds=301), "messageTtlSeconds"),
    (lambda h: h.send_to_all("x", message_ttl_seconds=True), "messageTtlSeconds"),
    (lambda h: h.send_to_all("x", excluded="one-id"), "excluded"),
    (lambda h: h.add_connections_to_groups([]), "groups"),
    (lambda h: h.add_connections_to_groups("g"), "groups"),
    (lambda h: h.grant_permission("admin", "c"), "permission"),
    (lambda h: h.revoke_permission("sendToGroup", "c", target=" "), "targetName"),
    (lambda h: h.list_connections_page("g", max_page_size=0), "maxpagesize"),
    (lambda h: h.close_connection("c", reason=5), "reason"),
])
async def test_invalid_arguments_raise_before_anything_happens(fab, call, target):
    c = await connect(fab, roles=ROLES)
    with pytest.raises(InvalidArgument) as info:
        await call(fab.hub("chat"))
    assert info.value.target == target and isinstance(info.value, ValueError)
    await fab.hub("chat").send_to_all("after")
    assert (await c.receive_json())["data"] == "after"


async def test_filter_errors_raise_filter_error(fab):
    with pytest.raises(FilterError):
        await fab.hub("chat").send_to_all("x", filter="userId eq")
    with pytest.raises(FilterError):
        await fab.hub("chat").add_connections_to_groups(["g"], "nope")


async def test_client_tokens_for_each_client_type(fab):
    hub = fab.hub("chat")
    for kind, prefix in (("Default", "/client/hubs/"), ("MQTT", "/clients/mqtt/hubs/"), ("socketio", "/clients/socketio/hubs/")):
        out = hub.get_client_access_token(user_id="u", client_type=kind, endpoint="http://h:1")
        assert jwt.decode(out["token"], options={"verify_signature": False})["aud"] == f"http://h:1{prefix}chat"
        assert out["baseUrl"] == f"ws://h:1{prefix}chat" and out["url"].startswith(out["baseUrl"] + "?access_token=")
    with pytest.raises(InvalidArgument):
        hub.get_client_access_token(client_type="grpc")
    with pytest.raises(InvalidArgument):
        hub.get_client_access_token(minutes_to_expire=0)
