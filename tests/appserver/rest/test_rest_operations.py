"""Every REST operation over real HTTP (in process), checked by its effect on live clients.

Absence ("this client got nothing") is checked with a fence: a later message every client
receives; what arrives before it is everything that was sent to that client.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse

import jwt
import pytest

from fabric.testing import ConnectionClosed, connect_in_process
from specs import rest as spec
from specs.errors import CloseCode

from .rest_support import ROLES, VERSION, connect, connect_simple, settle

JSON = "json.webpubsub.azure.v1"
RELIABLE = "json.reliable.webpubsub.azure.v1"
HUB = "/api/hubs/chat"


async def fence(rest, *clients, group=None):
    """Send a marker to every client (through the hub) and return what each got before it."""
    await rest.send(f"{HUB}/:send", "--fence--")
    out = []
    for c in clients:
        got = []
        while True:
            msg = await c.receive()
            if (msg == "--fence--" if isinstance(msg, str) and not msg.startswith("{")
                    else isinstance(msg, str) and json.loads(msg).get("data") == "--fence--"):
                break
            got.append(json.loads(msg) if isinstance(msg, str) and msg.startswith("{") else msg)
        out.append(got)
    return out


# ---- sends: content types and data types, per subprotocol -------------------------------------------

BODIES = [
    ("text/plain", "héllo ✓".encode(), "text", "héllo ✓"),
    ("text/plain; charset=utf-8", b"with charset", "text", "with charset"),
    ("TEXT/PLAIN;charset=UTF-8", b"upper case", "text", "upper case"),
    ("application/json", b'{"a": [1, "two", null]}', "json", {"a": [1, "two", None]}),
    ("application/json; charset=utf-8", b'"a json string"', "json", "a json string"),
    ("application/octet-stream", b"\x00\x01\xfe\xff", "binary", base64.b64encode(b"\x00\x01\xfe\xff").decode()),
    (None, b"\x10\x20", "binary", base64.b64encode(b"\x10\x20").decode()),  # no Content-Type: octet-stream
]


@pytest.mark.parametrize("content_type, body, data_type, data", BODIES)
@pytest.mark.parametrize("protocol", [JSON, RELIABLE])
async def test_send_to_all_reaches_pubsub_clients_with_the_right_data_type(fab, rest, content_type, body,
                                                                            data_type, data, protocol):
    c = await connect(fab, subprotocol=protocol)
    r = await rest.send(f"{HUB}/:send", body, content_type)
    assert r.status == 202 and r.body == b"", r
    msg = await c.receive_json()
    expected = {"type": "message", "from": "server", "dataType": data_type, "data": data}
    if protocol == RELIABLE:
        expected["sequenceId"] = 1
    assert msg == expected


PROTOBUF_BODIES = [
    ("text/plain", "héllo ✓".encode(), "text_data", "héllo ✓"),
    ("application/json; charset=utf-8", b'{"a": [1, null]}', "json_data", '{"a": [1, null]}'),
    ("application/octet-stream", b"\x00\x01\xfe", "binary_data", b"\x00\x01\xfe"),
]


@pytest.mark.parametrize("content_type, body, field, value", PROTOBUF_BODIES)
@pytest.mark.parametrize("protocol", ["protobuf.webpubsub.azure.v1", "protobuf.reliable.webpubsub.azure.v1"])
async def test_sends_reach_protobuf_clients_with_the_right_data_field(fab, rest, pb, content_type, body, field,
                                                                      value, protocol):
    """specs.webpubsub_protobuf: TEXT -> text_data, JSON -> json_data (the JSON text), BINARY ->
    binary_data; REST sends arrive from "server", group sends from "group" with the group."""
    c = await connect_in_process(fab, "chat", subprotocol=protocol)
    first = pb.DownstreamMessage.FromString(await c.receive())
    cid = first.system_message.connected_message.connection_id
    assert cid
    assert (await rest.send(f"{HUB}/:send", body, content_type)).status == 202
    assert (await rest.call("PUT", f"{HUB}/groups/pg/connections/{cid}")).status == 200
    assert (await rest.send(f"{HUB}/groups/pg/:send", body, content_type)).status == 202
    for expected_from, group, sequence_id in (("server", "", 1), ("group", "pg", 2)):
        msg = pb.DownstreamMessage.FromString(await c.receive())
        data_message = msg.data_message
        assert getattr(data_message, "from") == expected_from and data_message.group == group
        assert data_message.data.WhichOneof("data") == field
        assert getattr(data_message.data, field) == value
        if protocol.startswith("protobuf.reliable"):
            assert data_message.sequence_id == sequence_id


@pytest.mark.parametrize("content_type, body, text", [
    ("text/plain", "héllo".encode(), True),
    ("application/json", b'"quoted"', True),
    ("application/json", b'{"k": 1}', True),
    ("application/octet-stream", b"\x00\xff", False),
])
async def test_simple_clients_get_raw_frames(fab, rest, content_type, body, text):
    c = await connect_simple(fab)
    assert (await rest.send(f"{HUB}/:send", body, content_type)).status == 202
    frame = await c.receive()
    assert frame == (body.decode() if text else body)


async def test_send_to_group_user_and_connection(fab, rest):
    a = await connect(fab, user_id="alice", roles=ROLES)
    b = await connect(fab, user_id="bob", roles=ROLES)
    s = await connect_simple(fab, user_id="alice")
    await a.send_json({"type": "joinGroup", "group": "room", "ackId": 1})
    assert (await a.receive_json())["success"]
    assert (await rest.call("PUT", f"{HUB}/groups/room/connections/{s.connection_id}")).status == 200

    r = await rest.send(f"{HUB}/groups/room/:send", b'{"n": 1}', "application/json")
    assert r.status == 202
    assert await a.receive_json() == {"type": "message", "from": "group", "group": "room", "dataType": "json",
                                      "data": {"n": 1}}
    assert await s.receive() == '{"n": 1}'

    assert (await rest.send(f"{HUB}/users/alice/:send", "to alice")).status == 202
    assert (await a.receive_json())["data"] == "to alice"
    assert await s.receive() == "to alice"

    assert (await rest.send(f"{HUB}/connections/{b.connection_id}/:send", b"\x01", "application/octet-stream")).status == 202
    assert await b.receive_json() == {"type": "message", "from": "server", "dataType": "binary", "data": "AQ=="}

    got_a, got_b, got_s = await fence(rest, a, b, s)
    assert got_a == [] and got_b == [] and got_s == []


async def test_sends_to_unknown_targets_are_accepted_and_do_nothing(fab, rest):
    a = await connect(fab)
    for path in (f"{HUB}/groups/nobody-here/:send", f"{HUB}/users/ghost/:send", f"{HUB}/connections/ghost/:send"):
        r = await rest.send(path, "lost")
        assert r.status == 202, (path, r)
    assert await fence(rest, a) == [[]]


async def test_excluded(fab, rest):
    a, b, c = [await connect(fab, user_id="u", roles=ROLES) for _ in range(3)]
    for i, x in enumerate((a, b, c)):
        await x.send_json({"type": "joinGroup", "group": "g", "ackId": i + 1})
        await x.receive_json()
    r = await rest.send(f"{HUB}/:send", "all but a", query=[("excluded", a.connection_id)])
    assert r.status == 202
    r = await rest.send(f"{HUB}/groups/g/:send", "g but a,b",
                        query=[("excluded", a.connection_id), ("excluded", b.connection_id), ("excluded", "unknown")])
    assert r.status == 202
    got = await fence(rest, a, b, c)
    assert [[m["data"] for m in g] for g in got] == [[], ["all but a"], ["all but a", "g but a,b"]]


async def test_filters_select_recipients_of_each_send(fab, rest):
    u1 = await connect(fab, user_id="user1", roles=ROLES)
    u2 = await connect(fab, user_id="user2", roles=ROLES)
    u1b = await connect(fab, user_id="user1", roles=ROLES)
    anon = await connect(fab, roles=ROLES)
    for i, c in enumerate((u1, u2)):
        await c.send_json({"type": "joinGroup", "group": "vip", "ackId": 1})
        await c.receive_json()
    sends = [
        (f"{HUB}/:send", "userId eq 'user1'", "all-user1"),
        (f"{HUB}/:send", "userId eq null", "all-anon"),
        (f"{HUB}/:send", "'vip' in groups and userId ne 'user2'", "all-vip-not-2"),
        (f"{HUB}/:send", f"connectionId eq '{u1b.connection_id}'", "all-by-id"),
        (f"{HUB}/groups/vip/:send", "startswith(userId, 'user') and length(groups) ge 1", "vip-users"),
        (f"{HUB}/groups/vip/:send", "not (userId in ('user1'))", "vip-not-1"),
        (f"{HUB}/users/user1/:send", f"connectionId ne '{u1.connection_id}'", "user1-not-first"),
        (f"{HUB}/users/user1/:send", "", "user1-empty-filter-is-no-filter"),
    ]
    for path, flt, text in sends:
        r = await rest.send(path, text, query=[("filter", flt)])
        assert r.status == 202, (flt, r)
    got = await fence(rest, u1, u2, u1b, anon)
    assert [[m["data"] for m in g] for g in got] == [
        ["all-user1", "all-vip-not-2", "vip-users", "user1-empty-filter-is-no-filter"],
        ["vip-users", "vip-not-1"],
        ["all-user1", "all-by-id", "user1-not-first", "user1-empty-filter-is-no-filter"],
        ["all-anon"],
    ]


async def test_filter_sees_membership_changed_through_rest(fab, rest):
    a = await connect(fab, user_id="a")
    b = await connect(fab, user_id="b")
    assert (await rest.call("PUT", f"{HUB}/users/a/groups/x")).status == 200
    await rest.send(f"{HUB}/:send", "x only", query=[("filter", "'x' in groups")])
    assert (await rest.call("DELETE", f"{HUB}/users/a/groups/x")).status == 204
    await rest.send(f"{HUB}/:send", "x only again", query=[("filter", "'x' in groups")])
    assert [[m["data"] for m in g] for g in await fence(rest, a, b)] == [["x only"], []]


async def test_message_ttl_is_accepted_in_range(fab, rest):
    a = await connect(fab, user_id="a")
    for ttl in ("0", "1", "300"):
        for path in (f"{HUB}/:send", f"{HUB}/users/a/:send", f"{HUB}/connections/{a.connection_id}/:send",
                     f"{HUB}/groups/g/:send"):
            r = await rest.send(path, f"ttl {ttl}", query=[("messageTtlSeconds", ttl)])
            assert r.status == 202, r
    got = (await fence(rest, a))[0]
    assert [m["data"] for m in got] == ["ttl 0", "ttl 0", "ttl 0", "ttl 1", "ttl 1", "ttl 1", "ttl 300", "ttl 300", "ttl 300"]


@pytest.mark.parametrize("version", sorted(spec.API_VERSIONS))
async def test_every_listed_api_version_is_accepted(fab, rest, version):
    a = await connect(fab)
    r = await rest.send(f"{HUB}/:send", version, api_version=version)
    assert r.status == 202, r
    assert (await a.receive_json())["data"] == version
    assert r.headers["api-supported-versions"] == ", ".join(spec.GA_API_VERSIONS)


async def test_a_missing_api_version_means_the_current_one(fab, rest):
    a = await connect(fab)
    assert (await rest.send(f"{HUB}/:send", "no version", api_version=None)).status == 202
    assert (await a.receive_json())["data"] == "no version"


# ---- closing ------------------------------------------------------------------------------------------

async def expect_closed(client, reason: str | None):
    """PubSub clients get system/disconnected with the reason, then a 1008 close."""
    if client.subprotocol:
        msg = await client.receive_json()
        assert msg == {"type": "system", "event": "disconnected", "message": reason}
    assert await client.wait_closed() == CloseCode.CLOSED_BY_APP_SERVER


async def test_close_connection_with_reason(fab, rest):
    a = await connect(fab)
    s = await connect_simple(fab)
    r = await rest.call("DELETE", f"{HUB}/connections/{a.connection_id}", query=[("reason", "bye now")])
    assert r.status == 204 and r.body == b""
    await expect_closed(a, "bye now")
    r = await rest.call("DELETE", f"{HUB}/connections/{s.connection_id}")
    assert r.status == 204
    await expect_closed(s, None)
    assert s.close_reason == "ClosedByAppServer"
    # unknown connection: still 204
    assert (await rest.call("DELETE", f"{HUB}/connections/gone")).status == 204


async def test_close_all_group_user_with_excluded_and_reasons(fab, rest):
    keep = await connect(fab, user_id="k")
    g1 = await connect(fab, user_id="x")
    g2 = await connect(fab, user_id="y")
    u1 = await connect(fab, user_id="z")
    u2 = await connect(fab, user_id="z")
    for c in (g1, g2):
        assert (await rest.call("PUT", f"{HUB}/groups/grp/connections/{c.connection_id}")).status == 200
    r = await rest.call("POST", f"{HUB}/groups/grp/:closeConnections",
                        query=[("reason", "group done"), ("excluded", g2.connection_id)])
    assert r.status == 204
    await expect_closed(g1, "group done")
    r = await rest.call("POST", f"{HUB}/users/z/:closeConnections", query=[("excluded", u1.connection_id)])
    assert r.status == 204
    await expect_closed(u2, "ClosedByAppServer")
    r = await rest.call("POST", f"{HUB}/:closeConnections",
                        query=[("reason", "all gone"), ("excluded", keep.connection_id)])
    assert r.status == 204
    await expect_closed(g2, "all gone")
    await expect_closed(u1, "all gone")
    assert (await rest.call("HEAD", f"{HUB}/connections/{keep.connection_id}")).status == 200
    await rest.send(f"{HUB}/:send", "still here")
    assert (await keep.receive_json())["data"] == "still here"


# ---- exists -------------------------------------------------------------------------------------------

async def test_exists_probes(fab, rest):
    a = await connect(fab, user_id="someone")
    assert (await rest.call("HEAD", f"{HUB}/connections/{a.connection_id}")).status == 200
    assert (await rest.call("HEAD", f"{HUB}/users/someone")).status == 200
    assert (await rest.call("HEAD", f"{HUB}/groups/g")).status == 404
    await rest.call("PUT", f"{HUB}/groups/g/connections/{a.connection_id}")
    r = await rest.call("HEAD", f"{HUB}/groups/g")
    assert r.status == 200 and r.body == b""
    missing = [await rest.call("HEAD", p) for p in (f"{HUB}/connections/nope", f"{HUB}/users/nobody",
                                                      f"{HUB}/groups/empty")]
    assert [m.status for m in missing] == [404, 404, 404]
    assert all(m.body == b"" for m in missing)  # HEAD: headers only
    assert [m.headers["x-ms-error-code"] for m in missing] == ["ConnectionNotFound", "UserNotFound", "NotFound"]
    await a.aclose()
    for _ in range(100):
        if (await rest.call("HEAD", f"{HUB}/users/someone")).status == 404:
            break
        await settle()
    assert (await rest.call("HEAD", f"{HUB}/users/someone")).status == 404
    assert (await rest.call("HEAD", f"{HUB}/connections/{a.connection_id}")).status == 404


# ---- groups --------------------------------------------------------------------------------------------

async def test_connection_group_membership(fab, rest):
    a = await connect(fab, user_id="a")
    cid = a.connection_id
    assert (await rest.call("PUT", f"{HUB}/groups/g1/connections/{cid}")).status == 200
    assert (await rest.call("PUT", f"{HUB}/groups/g2/connections/{cid}")).status == 200
    assert (await rest.call("PUT", f"{HUB}/groups/g2/connections/{cid}")).status == 200  # idempotent
    hub = fab.running_hubs()["chat"]
    assert hub.connections[cid].groups == {"g1", "g2"}
    assert (await rest.call("DELETE", f"{HUB}/groups/g1/connections/{cid}")).status == 204
    assert hub.connections[cid].groups == {"g2"}
    assert (await rest.call("DELETE", f"{HUB}/connections/{cid}/groups")).status == 204
    assert hub.connections[cid].groups == set()
    # unknown connection: add is 404, removals are 204
    r = await rest.call("PUT", f"{HUB}/groups/g1/connections/ghost")
    assert r.status == 404 and r.error["code"] == "ConnectionNotFound"
    assert (await rest.call("DELETE", f"{HUB}/groups/g1/connections/ghost")).status == 204
    assert (await rest.call("DELETE", f"{HUB}/connections/ghost/groups")).status == 204


async def test_user_group_membership(fab, rest):
    a1 = await connect(fab, user_id="ann")
    a2 = await connect(fab, user_id="ann")
    other = await connect(fab, user_id="other")
    assert (await rest.call("PUT", f"{HUB}/users/ann/groups/team")).status == 200
    assert (await rest.call("PUT", f"{HUB}/users/ann/groups/more")).status == 200
    await rest.send(f"{HUB}/groups/team/:send", "team")
    assert [[m["data"] for m in g] for g in await fence(rest, a1, a2, other)] == [["team"], ["team"], []]
    assert (await rest.call("DELETE", f"{HUB}/users/ann/groups/team")).status == 204
    assert (await rest.call("HEAD", f"{HUB}/groups/team")).status == 404
    assert (await rest.call("HEAD", f"{HUB}/groups/more")).status == 200
    assert (await rest.call("DELETE", f"{HUB}/users/ann/groups")).status == 204
    assert (await rest.call("HEAD", f"{HUB}/groups/more")).status == 404
    r = await rest.call("PUT", f"{HUB}/users/ghost/groups/team")
    assert r.status == 404 and r.error["code"] == "UserNotFound"
    assert (await rest.call("DELETE", f"{HUB}/users/ghost/groups/team")).status == 204
    assert (await rest.call("DELETE", f"{HUB}/users/ghost/groups")).status == 204


async def test_add_and_remove_connections_to_groups_by_filter(fab, rest):
    u1 = await connect(fab, user_id="user1")
    u2 = await connect(fab, user_id="user2")
    anon = await connect(fab)
    hub = fab.running_hubs()["chat"]
    body = json.dumps({"groups": ["a", "b"], "filter": "userId ne null"})
    r = await rest.call("POST", f"{HUB}/:addToGroups", body=body, content_type="application/json")
    assert r.status == 200 and r.body == b""
    assert [hub.connections[c.connection_id].groups for c in (u1, u2, anon)] == [{"a", "b"}, {"a", "b"}, set()]
    body = json.dumps({"groups": ["a"], "filter": "userId eq 'user1'"})
    assert (await rest.call("POST", f"{HUB}/:removeFromGroups", body=body, content_type="application/json")).status == 200
    assert [hub.connections[c.connection_id].groups for c in (u1, u2, anon)] == [{"b"}, {"a", "b"}, set()]
    # no filter: every connection
    body = json.dumps({"groups": ["everyone"]})
    assert (await rest.call("POST", f"{HUB}/:addToGroups", body=body, content_type="application/json; charset=utf-8")).status == 200
    assert all("everyone" in hub.connections[c.connection_id].groups for c in (u1, u2, anon))
    body = json.dumps({"groups": ["everyone", "b"], "filter": None})
    assert (await rest.call("POST", f"{HUB}/:removeFromGroups", body=body, content_type="application/json")).status == 200
    assert [hub.connections[c.connection_id].groups for c in (u1, u2, anon)] == [set(), {"a"}, set()]
    # filters over groups membership
    body = json.dumps({"groups": ["c"], "filter": "'a' in groups"})
    assert (await rest.call("POST", f"{HUB}/:addToGroups", body=body, content_type="application/json")).status == 200
    assert hub.connections[u2.connection_id].groups == {"a", "c"}


# ---- listing members: paging --------------------------------------------------------------------------

def _query_of(link: str) -> list[tuple[str, str]]:
    parsed = urllib.parse.urlsplit(link)
    return [(k, v) for k, v in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True) if k != "api-version"]


async def list_all(rest, group: str, query):
    """Follow nextLink (relative) until the end; return the pages."""
    pages = []
    r = await rest.call("GET", f"{HUB}/groups/{urllib.parse.quote(group, safe='')}/connections", query=query)
    while True:
        assert r.status == 200, r
        body = r.json()
        pages.append(body["value"])
        link = body.get("nextLink")
        if not link:
            return pages
        assert link.startswith("/api/hubs/chat/groups/"), link
        assert ("api-version", VERSION) in urllib.parse.parse_qsl(urllib.parse.urlsplit(link).query)
        r = await rest.call("GET", urllib.parse.urlsplit(link).path, query=_query_of(link))


@pytest.mark.parametrize("group", ["members", "with space/slash%& ü"])
async def test_list_connections_pages_and_next_links(fab, rest, group):
    clients = [await connect(fab, user_id=f"u{i}" if i % 2 else None) for i in range(5)]
    for c in clients:
        assert (await rest.call("PUT", f"{HUB}/groups/{urllib.parse.quote(group, safe='')}/connections/{c.connection_id}")).status == 200
    expected = sorted(
        ({"connectionId": c.connection_id, "userId": f"u{i}"} if i % 2 else {"connectionId": c.connection_id}
         for i, c in enumerate(clients)), key=lambda m: m["connectionId"])
    pages = await list_all(rest, group, [])
    assert pages == [expected]
    pages = await list_all(rest, group, [("maxpagesize", "2")])
    assert [len(p) for p in pages] == [2, 2, 1] and sum(pages, []) == expected
    pages = await list_all(rest, group, [("maxpagesize", "2"), ("top", "3")])
    assert [len(p) for p in pages] == [2, 1] and sum(pages, []) == expected[:3]
    pages = await list_all(rest, group, [("top", "4")])
    assert pages == [expected[:4]]
    pages = await list_all(rest, group, [("maxpagesize", "5")])
    assert pages == [expected]
    pages = await list_all(rest, "nobody-here", [])
    assert pages == [[]]


async def test_list_connections_tolerates_members_leaving_between_pages(fab, rest):
    clients = [await connect(fab) for _ in range(4)]
    for c in clients:
        await rest.call("PUT", f"{HUB}/groups/g/connections/{c.connection_id}")
    ordered = sorted(c.connection_id for c in clients)
    r = await rest.call("GET", f"{HUB}/groups/g/connections", query=[("maxpagesize", "2")])
    first = [m["connectionId"] for m in r.json()["value"]]
    assert first == ordered[:2]
    # the last one returned leaves: the cursor still works
    await rest.call("DELETE", f"{HUB}/groups/g/connections/{ordered[1]}")
    link = r.json()["nextLink"]
    r = await rest.call("GET", urllib.parse.urlsplit(link).path, query=_query_of(link))
    assert [m["connectionId"] for m in r.json()["value"]] == ordered[2:]
    assert "nextLink" not in r.json()


# ---- permissions ---------------------------------------------------------------------------------------

async def ack(client, msg):
    ack_id = msg["ackId"]
    await client.send_json(msg)
    while True:
        got = await client.receive_json()
        if got.get("type") == "ack" and got.get("ackId") == ack_id:
            return got


async def test_revoked_send_to_group_fails_at_once_and_grant_restores_it(fab, rest):
    c = await connect(fab, roles=ROLES)
    cid = c.connection_id
    perm = f"{HUB}/permissions/sendToGroup/connections/{cid}"
    assert (await rest.call("HEAD", perm)).status == 200
    assert (await ack(c, {"type": "sendToGroup", "group": "g", "data": "1", "dataType": "text", "ackId": 1}))["success"]
    assert (await rest.call("DELETE", perm)).status == 204
    nack = await ack(c, {"type": "sendToGroup", "group": "g", "data": "2", "dataType": "text", "ackId": 2})
    assert nack["success"] is False and nack["error"]["name"] == "Forbidden"
    assert (await rest.call("HEAD", perm)).status == 404
    assert (await rest.call("HEAD", perm, query=[("targetName", "g")])).status == 404
    # grant one group
    assert (await rest.call("PUT", perm, query=[("targetName", "g")])).status == 200
    assert (await rest.call("HEAD", perm, query=[("targetName", "g")])).status == 200
    assert (await rest.call("HEAD", perm, query=[("targetName", "h")])).status == 404
    assert (await rest.call("HEAD", perm)).status == 404  # not on every group
    assert (await ack(c, {"type": "sendToGroup", "group": "g", "data": "3", "dataType": "text", "ackId": 3}))["success"]
    assert not (await ack(c, {"type": "sendToGroup", "group": "h", "data": "4", "dataType": "text", "ackId": 4}))["success"]
    # grant all, then revoke just one group: that group is denied, others stay allowed
    assert (await rest.call("PUT", perm)).status == 200
    assert (await rest.call("DELETE", perm, query=[("targetName", "h")])).status == 204
    assert (await rest.call("HEAD", perm, query=[("targetName", "h")])).status == 404
    assert (await rest.call("HEAD", perm, query=[("targetName", "other")])).status == 200
    assert (await rest.call("HEAD", perm)).status == 404  # one group is denied
    assert not (await ack(c, {"type": "sendToGroup", "group": "h", "data": "5", "dataType": "text", "ackId": 5}))["success"]
    assert (await ack(c, {"type": "sendToGroup", "group": "other", "data": "6", "dataType": "text", "ackId": 6}))["success"]
    # granting the group again lifts the denial; granting all clears every denial
    assert (await rest.call("PUT", perm, query=[("targetName", "h")])).status == 200
    assert (await ack(c, {"type": "sendToGroup", "group": "h", "data": "7", "dataType": "text", "ackId": 7}))["success"]
    assert (await rest.call("DELETE", perm, query=[("targetName", "h")])).status == 204
    assert (await rest.call("PUT", perm)).status == 200
    assert (await rest.call("HEAD", perm)).status == 200


async def test_join_leave_permission_and_pattern_roles(fab, rest):
    c = await connect(fab, roles=["webpubsub.joinLeaveGroups.room-*"])
    perm = f"{HUB}/permissions/joinLeaveGroup/connections/{c.connection_id}"
    assert (await rest.call("HEAD", perm, query=[("targetName", "room-1")])).status == 200
    assert (await rest.call("HEAD", perm, query=[("targetName", "lobby")])).status == 404
    assert (await rest.call("DELETE", perm, query=[("targetName", "room-2")])).status == 204
    assert not (await ack(c, {"type": "joinGroup", "group": "room-2", "ackId": 1}))["success"]
    assert (await ack(c, {"type": "joinGroup", "group": "room-1", "ackId": 2}))["success"]
    assert (await rest.call("DELETE", perm)).status == 204  # all: the pattern role goes too
    assert not (await ack(c, {"type": "leaveGroup", "group": "room-1", "ackId": 3}))["success"]


async def test_permissions_on_unknown_connections(fab, rest):
    path = f"{HUB}/permissions/sendToGroup/connections/ghost"
    r = await rest.call("PUT", path)
    assert r.status == 404 and r.error["code"] == "ConnectionNotFound"
    assert (await rest.call("DELETE", path)).status == 204
    assert (await rest.call("HEAD", path)).status == 404


async def test_simple_send_to_group_client_loses_permission(fab, rest):
    s = await connect_simple(fab, roles=["webpubsub.sendToGroup"],
                             query={"webpubsub_mode": "sendToGroup", "group": "feed"})
    reader = await connect(fab)
    await rest.call("PUT", f"{HUB}/groups/feed/connections/{reader.connection_id}")
    await s.send("first")
    assert (await reader.receive_json())["data"] == "first"
    assert (await rest.call("DELETE", f"{HUB}/permissions/sendToGroup/connections/{s.connection_id}",
                            query=[("targetName", "feed")])).status == 204
    await s.send("second")
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await s.receive()
    assert closed.value.code == CloseCode.FORBIDDEN


# ---- tokens ---------------------------------------------------------------------------------------------

async def test_generate_token_connects_with_user_roles_and_groups(fab, rest):
    r = await rest.call("POST", f"{HUB}/:generateToken", query=[
        ("userId", "minted"), ("role", "webpubsub.joinLeaveGroup"), ("role", "webpubsub.sendToGroup.g1"),
        ("group", "g1"), ("group", "g 2"), ("minutesToExpire", "5")])
    assert r.status == 200 and r.headers["content-type"].startswith("application/json"), r
    token = r.json()["token"]
    assert set(r.json()) == {"token"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "minted" and claims["role"] == ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup.g1"]
    assert claims["webpubsub.group"] == ["g1", "g 2"]
    assert abs(claims["exp"] - (time.time() + 300)) < 30
    assert claims["aud"] == "http://fabric.local/client/hubs/chat"
    c = await connect(fab, token=token)
    assert (await rest.call("HEAD", f"{HUB}/users/minted")).status == 200
    assert (await rest.call("HEAD", f"{HUB}/groups/g%202")).status == 200
    assert (await ack(c, {"type": "sendToGroup", "group": "g1", "data": "x", "dataType": "text", "ackId": 1}))["success"]


@pytest.mark.parametrize("client_type, prefix", [("MQTT", "/clients/mqtt/hubs/"), ("mqtt", "/clients/mqtt/hubs/"),
                                                 ("SocketIO", "/clients/socketio/hubs/"), ("Default", "/client/hubs/"),
                                                 (None, "/client/hubs/")])
async def test_generate_token_client_types(fab, rest, client_type, prefix):
    query = [("clientType", client_type)] if client_type else []
    r = await rest.call("POST", f"{HUB}/:generateToken", query=query)
    assert r.status == 200, r
    claims = jwt.decode(r.json()["token"], options={"verify_signature": False})
    assert urllib.parse.urlsplit(claims["aud"]).path == prefix + "chat"
    assert "sub" not in claims and abs(claims["exp"] - (time.time() + 3600)) < 30


# ---- health -----------------------------------------------------------------------------------------------

async def test_health_get_and_head_need_no_token(fab, rest):
    r = await rest.call("GET", "/api/health", authorization=None)
    assert r.status == 200 and r.json() == {"status": "healthy"}
    r = await rest.call("HEAD", "/api/health", authorization=None, api_version=None)
    assert r.status == 200 and r.body == b""
    r = await rest.call("POST", "/api/health", authorization=None)
    assert r.status == 405 and r.headers["allow"] == "GET, HEAD" and r.error["code"] == "MethodNotAllowed"


async def test_unknown_hub_is_fine_and_the_hub_starts_on_demand(fab, rest):
    assert (await rest.send("/api/hubs/Fresh_hub.1/:send", "nobody listens")).status == 202
    assert "Fresh_hub.1" in fab.running_hubs()
    c = await connect_in_process(fab, "Fresh_hub.1", subprotocol=None)
    await settle()
    assert (await rest.send("/api/hubs/Fresh_hub.1/:send", "now someone")).status == 202
    assert await c.receive() == "now someone"
