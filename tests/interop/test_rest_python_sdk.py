"""Microsoft's Python service SDK (azure-messaging-webpubsubservice) drives every operation it
exposes against `fabric serve`; effects are checked on real WebSocket clients (the Python
client SDK, and plain WebSockets for simple clients). The operations the SDK lacks
(`:addToGroups`, `:removeFromGroups`, health) go through signed raw HTTP.

Python SDK 1.3.0 quirks (reference §6.2/§6.3) are tested as such: `send_*` with
`message_ttl_seconds` raises TypeError (the kwarg leaks into the transport), so TTL goes via
`params=`; a `str` sent without `content_type` is JSON (`"hi"` with quotes).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.messaging.webpubsubclient.models import SendMessageError, WebPubSubDataType, WebPubSubProtocolType
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from fabric.core.auth import mint_rest_token
from specs import rest as spec

from interop_support import JSON_SUBPROTOCOL, WAIT_TIMEOUT, open_raw_client, unique

TEXT, JSON_DT, BINARY = WebPubSubDataType.TEXT, WebPubSubDataType.JSON, WebPubSubDataType.BINARY


def fenced(client, service, marker=None):
    """Everything the client received before a marker sent to it alone (by connection id)."""
    marker = marker or unique("fence")
    service.send_to_connection(client.connection_id, marker, content_type="text/plain")
    got = client.collect_until(lambda m: m.data == marker)
    return got[:-1]


def wait_for(predicate, what: str, timeout: float = WAIT_TIMEOUT):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def raw(server, method: str, path: str, *, query: dict[str, str] | None = None, body: bytes = b"",
        content_type: str | None = None, sign: bool = True) -> tuple[int, dict[str, str], bytes]:
    """A signed HTTP request as the SDKs sign them (aud = full URL, HS256 with the key)."""
    params = {"api-version": spec.DEFAULT_API_VERSION, **(query or {})}
    url = f"{server.endpoint}{path}?{urllib.parse.urlencode(params)}"
    headers = {}
    if sign:
        headers["Authorization"] = "Bearer " + mint_rest_token(key=server.key, url=url)
    if content_type:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(url, data=body if method in ("POST", "PUT") else None, headers=headers,
                                     method=method)
    try:
        with urllib.request.urlopen(request, timeout=WAIT_TIMEOUT) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()



# ---- sends ------------------------------------------------------------------------------------------------

def test_send_to_all_with_each_content_type(fabric_server, sdk_clients):
    hub = unique("hub")
    service = fabric_server.service_client(hub)
    json_client = sdk_clients(hub, protocol=WebPubSubProtocolType.JSON)
    reliable = sdk_clients(hub)
    service.send_to_all("plain text ✓", content_type="text/plain")
    service.send_to_all({"k": [1, None, "x"]})
    service.send_to_all(b"\x00\x01\xff", content_type="application/octet-stream")
    service.send_to_all("no content type")  # the SDK sends JSON: the string with its quotes
    for client in (json_client, reliable):
        got = fenced(client, service)
        assert [(m.kind, m.data_type, m.data) for m in got] == [
            ("server", "text", "plain text ✓"),
            ("server", "json", {"k": [1, None, "x"]}),
            ("server", "binary", b"\x00\x01\xff"),
            ("server", "json", "no content type"),
        ]


def test_send_to_group_user_connection_with_excluded_and_filter(fabric_server, sdk_clients):
    hub, group = unique("hub"), unique("grp")
    service = fabric_server.service_client(hub)
    a = sdk_clients(hub, user_id="alice")
    b = sdk_clients(hub, user_id="bob")
    a2 = sdk_clients(hub, user_id="alice")
    for c in (a, b, a2):
        c.join(group)
    service.send_to_group(group, "to group", content_type="text/plain", excluded=[b.connection_id])
    service.send_to_group(group, {"only": "bob"}, filter="userId eq 'bob'")
    service.send_to_user("alice", "to alice", content_type="text/plain",
                         filter=f"connectionId ne '{a2.connection_id}'")
    service.send_to_connection(b.connection_id, b"\x07", content_type="application/octet-stream")
    service.send_to_all("by filter", content_type="text/plain", filter=f"'{group}' in groups and userId ne 'bob'",
                        excluded=[a.connection_id])
    got_a, got_b, got_a2 = (fenced(c, service) for c in (a, b, a2))
    assert sorted((m.kind, m.group, m.data) for m in got_a) == [("group", group, "to group"), ("server", None, "to alice")]
    assert sorted((m.kind, m.data_type, str(m.data)) for m in got_b) == [
        ("group", "json", "{'only': 'bob'}"), ("server", "binary", "b'\\x07'")]
    assert sorted((m.kind, m.data) for m in got_a2) == [("group", "to group"), ("server", "by filter")]
    assert all(m.from_user_id is None for m in got_a + got_b + got_a2 if m.kind == "group")


def test_message_ttl(fabric_server, sdk_clients):
    hub = unique("hub")
    service = fabric_server.service_client(hub)
    c = sdk_clients(hub, user_id="ttl")
    with pytest.raises(TypeError):  # Python SDK 1.3.0 defect (reference §6.3)
        service.send_to_all("x", content_type="text/plain", message_ttl_seconds=10)
    service.send_to_all("ttl 10", content_type="text/plain", params={"messageTtlSeconds": 10})
    service.send_to_user("ttl", "ttl 0", content_type="text/plain", params={"messageTtlSeconds": 0})
    with pytest.raises(HttpResponseError) as info:
        service.send_to_all("x", content_type="text/plain", params={"messageTtlSeconds": 301})
    assert info.value.status_code == 400
    assert info.value.response.headers["x-ms-error-code"] == "InvalidQueryParameter"
    assert [m.data for m in fenced(c, service)] == ["ttl 10", "ttl 0"]


@pytest.mark.parametrize("version", spec.GA_API_VERSIONS)
def test_every_ga_api_version(fabric_server, sdk_clients, version):
    hub = unique("hub")
    service = WebPubSubServiceClient.from_connection_string(fabric_server.connection_string, hub=hub, api_version=version)
    c = sdk_clients(hub, user_id="v")
    service.send_to_all(version, content_type="text/plain")
    assert service.connection_exists(c.connection_id) and service.user_exists("v")
    assert [m.data for m in fenced(c, service)] == [version]


def test_unknown_api_version_is_400(fabric_server):
    service = WebPubSubServiceClient.from_connection_string(fabric_server.connection_string, hub="h",
                                                            api_version="2099-01-01")
    with pytest.raises(HttpResponseError) as info:
        service.send_to_all("x", content_type="text/plain")
    assert info.value.status_code == 400
    assert info.value.response.headers["x-ms-error-code"] == "InvalidApiVersion"


def test_bad_filter_is_400_and_sends_nothing(fabric_server, sdk_clients):
    hub = unique("hub")
    service = fabric_server.service_client(hub)
    c = sdk_clients(hub)
    with pytest.raises(HttpResponseError) as info:
        service.send_to_all("x", content_type="text/plain", filter="not length(userId) gt 5")
    assert info.value.status_code == 400
    body = json.loads(info.value.response.text())
    assert body["code"] == "InvalidFilter" and "not length(userId)" in body["message"]
    assert fenced(c, service) == []


def test_wrong_key_is_401(fabric_server):
    cs = fabric_server.connection_string.replace(fabric_server.key, "k" + "x" * 40)
    service = WebPubSubServiceClient.from_connection_string(cs, hub="h")
    from azure.core.exceptions import ClientAuthenticationError

    with pytest.raises(ClientAuthenticationError) as info:
        service.send_to_all("x", content_type="text/plain")
    assert info.value.status_code == 401
    assert info.value.response.headers["x-ms-error-code"] == "InvalidSignature"


# ---- exists, groups, users ------------------------------------------------------------------------------------

def test_exists_and_membership(fabric_server, sdk_clients):
    hub, group = unique("hub"), unique("grp")
    service = fabric_server.service_client(hub)
    c = sdk_clients(hub, user_id="member")
    other = sdk_clients(hub, user_id="member")
    assert service.connection_exists(c.connection_id) is True
    assert service.connection_exists("no-such-connection") is False
    assert service.user_exists("member") is True and service.user_exists("nobody") is False
    assert service.group_exists(group) is False

    service.add_connection_to_group(group, c.connection_id)
    assert service.group_exists(group) is True
    service.send_to_group(group, "in", content_type="text/plain")
    assert [(m.kind, m.data) for m in fenced(c, service)] == [("group", "in")]
    assert fenced(other, service) == []
    service.remove_connection_from_group(group, c.connection_id)
    assert service.group_exists(group) is False

    service.add_user_to_group(group, "member")
    service.send_to_group(group, "user in", content_type="text/plain")
    assert [m.data for m in fenced(c, service)] == ["user in"]
    assert [m.data for m in fenced(other, service)] == ["user in"]
    service.remove_user_from_group(group, "member")
    assert service.group_exists(group) is False

    g2, g3 = unique("g"), unique("g")
    service.add_connection_to_group(g2, c.connection_id)
    service.add_connection_to_group(g3, c.connection_id)
    service.remove_connection_from_all_groups(c.connection_id)
    assert not service.group_exists(g2) and not service.group_exists(g3)
    service.add_user_to_group(g2, "member")
    service.remove_user_from_all_groups("member")
    assert not service.group_exists(g2)

    # unknown targets: adds are 404, removals succeed (specs.rest decision rest.unknown-target)
    with pytest.raises(ResourceNotFoundError):
        service.add_connection_to_group(group, "no-such-connection")
    with pytest.raises(ResourceNotFoundError):
        service.add_user_to_group(group, "nobody")
    service.remove_connection_from_group(group, "no-such-connection")
    service.remove_user_from_group(group, "nobody")
    service.remove_connection_from_all_groups("no-such-connection")
    service.remove_user_from_all_groups("nobody")


def test_list_connections_follows_next_links(fabric_server, sdk_clients):
    hub, group = unique("hub"), "list me/with ü & %"
    service = fabric_server.service_client(hub)
    clients = [sdk_clients(hub, user_id=f"lister{i}") for i in range(5)]
    for c in clients:
        service.add_connection_to_group(group, c.connection_id)
    expected = sorted((c.connection_id, f"lister{i}") for i, c in enumerate(clients))
    assert sorted((m.connection_id, m.user_id) for m in service.list_connections(group=group)) == expected
    paged = service.list_connections(group=group, maxpagesize=2)
    pages = [[(m.connection_id, m.user_id) for m in page] for page in paged.by_page()]
    assert [len(p) for p in pages] == [2, 2, 1] and sum(pages, []) == expected
    top = [(m.connection_id, m.user_id) for m in service.list_connections(group=group, maxpagesize=2, top=3)]
    assert top == expected[:3]
    assert list(service.list_connections(group=unique("empty"))) == []


# ---- closing ------------------------------------------------------------------------------------------------------

def assert_closed_with(client, reason: str) -> None:
    if not client.disconnected.wait(WAIT_TIMEOUT):
        pytest.fail("no disconnected callback")
    assert client.disconnected_args.message == reason


def test_close_operations_with_reasons_and_excluded(fabric_server, sdk_clients):
    hub, group = unique("hub"), unique("grp")
    service = fabric_server.service_client(hub)
    one = sdk_clients(hub, user_id="one")
    g1, g2 = sdk_clients(hub, user_id="g1"), sdk_clients(hub, user_id="g2")
    u1, u2 = sdk_clients(hub, user_id="twice"), sdk_clients(hub, user_id="twice")
    keep = sdk_clients(hub, user_id="keep")
    service.close_connection(one.connection_id, reason="just you")
    assert_closed_with(one, "just you")
    wait_for(lambda: not service.connection_exists(one.connection_id), "the closed connection to go")
    for c in (g1, g2):
        service.add_connection_to_group(group, c.connection_id)
    service.close_group_connections(group, reason="group closed", excluded=[g2.connection_id])
    assert_closed_with(g1, "group closed")
    service.close_user_connections("twice", reason="user closed", excluded=[u1.connection_id])
    assert_closed_with(u2, "user closed")
    service.close_all_connections(reason="everyone", excluded=[keep.connection_id])
    for c in (g2, u1):
        assert_closed_with(c, "everyone")
    assert service.connection_exists(keep.connection_id)
    service.close_connection("no-such-connection", reason="nobody")  # 204 all the same
    assert [m.data for m in fenced(keep, service)] == []


async def test_closes_and_raw_frames_on_simple_clients(fabric_server):
    import trio

    hub = unique("hub")
    service = fabric_server.service_client(hub)
    url = fabric_server.client_url(hub, user_id="simple")
    async with open_raw_client(url, server=fabric_server) as simple:
        await trio.to_thread.run_sync(lambda: service.send_to_user("simple", "text frame", content_type="text/plain"))
        assert await simple.recv() == "text frame"
        await trio.to_thread.run_sync(lambda: service.send_to_user("simple", {"j": 1}))
        assert json.loads(await simple.recv()) == {"j": 1}
        await trio.to_thread.run_sync(lambda: service.send_to_user("simple", b"\x01\x02", content_type="application/octet-stream"))
        assert await simple.recv() == b"\x01\x02"
        await trio.to_thread.run_sync(lambda: service.close_user_connections("simple", reason="bye simple"))
        frames, closed = await simple.expect_close()
        assert frames == [] and closed.code == 1008 and closed.reason == "bye simple"
    async with open_raw_client(url, subprotocol=JSON_SUBPROTOCOL, server=fabric_server) as pubsub:
        assert json.loads(await pubsub.recv())["event"] == "connected"
        await trio.to_thread.run_sync(lambda: service.close_all_connections(reason="bye all"))
        frames, closed = await pubsub.expect_close()
        assert [json.loads(f) for f in frames] == [{"type": "system", "event": "disconnected", "message": "bye all"}]
        assert closed.code == 1008


# ---- permissions --------------------------------------------------------------------------------------------------

def test_permissions_take_effect_on_the_live_connection(fabric_server, sdk_clients):
    hub, group, other = unique("hub"), unique("grp"), unique("grp")
    service = fabric_server.service_client(hub)
    c = sdk_clients(hub, user_id="p")
    c.join(group)
    c.send_to_group(group, "allowed", TEXT)
    assert service.has_permission("sendToGroup", c.connection_id) is True
    service.revoke_permission("sendToGroup", c.connection_id)
    assert service.has_permission("sendToGroup", c.connection_id) is False
    with pytest.raises(SendMessageError) as info:
        c.send_to_group(group, "refused", TEXT)
    assert info.value.error_detail.name == "Forbidden"
    service.grant_permission("sendToGroup", c.connection_id, target_name=group)
    assert service.has_permission("sendToGroup", c.connection_id, target_name=group) is True
    assert service.has_permission("sendToGroup", c.connection_id, target_name=other) is False
    c.send_to_group(group, "allowed again", TEXT)
    with pytest.raises(SendMessageError):
        c.send_to_group(other, "not there", TEXT)
    service.revoke_permission("joinLeaveGroup", c.connection_id, target_name=other)
    with pytest.raises(SendMessageError):
        c.join(other)
    service.grant_permission("joinLeaveGroup", c.connection_id, target_name=other)
    c.join(other)
    with pytest.raises(ResourceNotFoundError):
        service.grant_permission("sendToGroup", "no-such-connection")
    service.revoke_permission("sendToGroup", "no-such-connection")
    assert service.has_permission("sendToGroup", "no-such-connection") is False
    got = [m.data for m in c.collect_until(lambda m: m.data == "allowed again")]
    assert got == ["allowed", "allowed again"]


# ---- tokens -------------------------------------------------------------------------------------------------------

class KeySignedCredential:
    """A TokenCredential whose 'Entra ID' token is a JWT the fabric accepts (signed with its
    access key, aud = the :generateToken URL): makes the SDK call POST /:generateToken."""

    def __init__(self, server, hub: str) -> None:
        self.server, self.hub = server, hub

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        url = f"{self.server.endpoint}/api/hubs/{self.hub}/:generateToken"
        return AccessToken(mint_rest_token(key=self.server.key, url=url, ttl_seconds=300), int(time.time()) + 300)


def test_generate_token_through_the_rest_operation(fabric_server, sdk_clients):
    from interop_support import SdkClient

    hub, group = unique("hub"), unique("grp")
    service = WebPubSubServiceClient(fabric_server.endpoint, hub, credential=KeySignedCredential(fabric_server, hub))
    result = service.get_client_access_token(user_id="minted", roles=["webpubsub.sendToGroup"], groups=[group],
                                             minutes_to_expire=5, enforce_https=False)
    assert result["url"].startswith(f"ws://127.0.0.1:{fabric_server.port}/client/hubs/{hub}?access_token=")
    client = SdkClient(result["url"], label="minted", server=fabric_server)
    try:
        client.open()
        assert client.connected_args.user_id == "minted"
        keys = fabric_server.service_client(hub)
        assert keys.group_exists(group)
        client.send_to_group(group, "minted works", TEXT)  # the role, and the initial group
        assert client.collect_until(lambda m: m.data == "minted works")[-1].group == group
    finally:
        client.close()
    mqtt = service.get_client_access_token(client_protocol="MQTT", enforce_https=False)
    assert "/clients/mqtt/hubs/" in mqtt["url"]


# ---- what the SDK lacks: raw signed HTTP ---------------------------------------------------------------------------

def test_add_and_remove_by_filter_and_health_over_raw_http(fabric_server, sdk_clients):
    hub, g = unique("hub"), unique("grp")
    service = fabric_server.service_client(hub)
    vip = sdk_clients(hub, user_id="vip-1")
    pleb = sdk_clients(hub, user_id="pleb")
    vip2 = sdk_clients(hub, user_id="vip-2")
    body = json.dumps({"groups": [g], "filter": "startswith(userId, 'vip')"}).encode()
    status, headers, out = raw(fabric_server, "POST", f"/api/hubs/{hub}/:addToGroups", body=body,
                               content_type="application/json")
    assert status == 200 and out == b"", (status, out)
    assert sorted(m.user_id for m in service.list_connections(group=g)) == ["vip-1", "vip-2"]
    service.send_to_group(g, "vips", content_type="text/plain")
    assert [m.data for m in fenced(vip, service)] == ["vips"] and fenced(pleb, service) == []
    assert [m.data for m in fenced(vip2, service)] == ["vips"]
    body = json.dumps({"groups": [g], "filter": "userId eq 'vip-2'"}).encode()
    status, _, _ = raw(fabric_server, "POST", f"/api/hubs/{hub}/:removeFromGroups", body=body,
                       content_type="application/json")
    assert status == 200
    assert [m.user_id for m in service.list_connections(group=g)] == ["vip-1"]
    service.send_to_group(g, "vips again", content_type="text/plain")
    assert [m.data for m in fenced(vip, service)] == ["vips again"] and fenced(vip2, service) == []
    # errors
    status, headers, out = raw(fabric_server, "POST", f"/api/hubs/{hub}/:addToGroups", body=b'{"groups": []}',
                               content_type="application/json")
    assert status == 400 and headers["x-ms-error-code"] == json.loads(out)["code"] == "InvalidRequestBody"
    status, headers, _ = raw(fabric_server, "POST", f"/api/hubs/{hub}/:addToGroups", body=b"{}", sign=False,
                             content_type="application/json")
    assert status == 401 and headers["x-ms-error-code"] == "MissingToken"
    # health: no token needed
    for method in ("HEAD", "GET"):
        status, _, out = raw(fabric_server, method, "/api/health", sign=False)
        assert status == 200
    assert json.loads(raw(fabric_server, "GET", "/api/health", sign=False)[2]) == {"status": "healthy"}
