"""Several ``fabric serve`` processes on one redis-server are one fabric, checked with
Microsoft's SDKs: REST on one node drives a client on another (every operation), a group
spread over three nodes gets a publisher's stream in order, a reliable client recovers on
the other nodes across 20 aborts, a node killed (SIGKILL) or hung (SIGSTOP) leaves
``exists`` within the bound, Redis restarted mid-stream costs a bounded gap, and
``--workers 2`` serves one port."""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.request

import pytest
import serve_nodes
import trio
from azure.core.rest import HttpRequest
from azure.messaging.webpubsubclient.models import (
    CallbackType,
    WebPubSubDataType,
    WebPubSubProtocolType,
)
from interop_support import SdkClient, open_json_client, unique
from serve_nodes import SwitchingProxy, kill, pause, resume
from test_reliable_sdks import (
    BOTH_ROLES,
    check_recoveries,
    publish_through_chaos,
    wait_until,
)

from tests.waiting import eventually

pytestmark = [pytest.mark.interop, pytest.mark.slow]
TEXT = WebPubSubDataType.TEXT


@pytest.fixture
def fabric_nodes(redis_server):
    made = []

    def make(n: int, **settings):
        fab = serve_nodes.new_fabric(redis_server.url, **settings)
        made.append(fab)
        return fab, [fab.start() for _ in range(n)]

    try:
        yield make
    finally:
        for fab in made:
            fab.close()


def fenced(client: SdkClient, service, marker: str | None = None):
    marker = marker or unique("fence")
    service.send_to_connection(client.connection_id, marker, content_type="text/plain")
    return client.collect_until(lambda m: m.data == marker)[:-1]


def health(node) -> dict:
    with urllib.request.urlopen(f"{node.endpoint}/api/health", timeout=5) as r:
        assert r.status == 200
        return json.loads(r.read())


def post_groups(service, hub: str, op: str, groups: list[str], filter: str) -> int:
    request = HttpRequest("POST", f"/api/hubs/{hub}/:{op}", params={"api-version": "2024-12-01"},
                          json={"groups": groups, "filter": filter})
    response = service.send_request(request)
    assert response.status_code == 200, (response.status_code, response.text())
    return response.status_code


def test_rest_on_one_node_drives_a_client_on_another(fabric_nodes):
    _, (a, b) = fabric_nodes(2)
    hub, group = unique("xnode"), unique("g")
    client = SdkClient(a.client_url(hub, user_id="alice"), protocol=WebPubSubProtocolType.JSON, label="alice",
                       server=a).open()
    try:
        rest = b.service_client(hub)
        cid = client.connection_id
        assert rest.connection_exists(cid) and rest.user_exists("alice")
        assert not rest.connection_exists("no-such-connection") and not rest.group_exists(group)
        rest.add_connection_to_group(group, cid)
        assert rest.group_exists(group)
        assert [c.connection_id for c in rest.list_connections(group=group)] == [cid]
        rest.send_to_group(group, "hello group", content_type="text/plain")
        assert client.next_message().data == "hello group"
        rest.remove_connection_from_group(group, cid)
        rest.send_to_group(group, "not for alice", content_type="text/plain")
        assert fenced(client, rest) == []
        rest.add_user_to_group(group, "alice")
        rest.send_to_user("alice", "hello user", content_type="text/plain")
        assert client.next_message().data == "hello user"
        rest.remove_user_from_group(group, "alice")
        assert not rest.group_exists(group)
        rest.add_user_to_group(group, "alice")
        rest.remove_user_from_all_groups("alice")
        assert not rest.group_exists(group)
        rest.add_connection_to_group(group, cid)
        rest.remove_connection_from_all_groups(cid)
        assert not rest.group_exists(group)
        post_groups(rest, hub, "addToGroups", [group], "userId eq 'alice'")
        assert rest.group_exists(group)
        post_groups(rest, hub, "removeFromGroups", [group], "userId eq 'alice'")
        assert not rest.group_exists(group)
        assert not rest.has_permission("sendToGroup", cid, target_name=group)
        rest.grant_permission("sendToGroup", cid, target_name=group)
        assert rest.has_permission("sendToGroup", cid, target_name=group)
        client.send_to_group(group, "allowed now", TEXT)  # acked: the grant reached node A
        rest.revoke_permission("sendToGroup", cid, target_name=group)
        assert not rest.has_permission("sendToGroup", cid, target_name=group)
        rest.send_to_all("to everyone", content_type="text/plain")
        assert client.next_message().data == "to everyone"
        rest.close_connection(cid, reason="from node B")
        assert client.disconnected.wait(10), "the client was not closed"
        eventually(lambda: not rest.connection_exists(cid), "the closed connection to leave exists")
        a.check_alive()
        b.check_alive()
    finally:
        client.close()


def test_group_over_three_nodes_gets_the_stream_in_order(fabric_nodes):
    _, nodes = fabric_nodes(3)
    hub, group = unique("spread"), unique("g")
    members = [SdkClient(node.client_url(hub, user_id=f"m{i}", roles=BOTH_ROLES), label=f"m{i}", server=node).open()
               for i, node in enumerate(nodes * 2)]
    publisher = SdkClient(nodes[0].client_url(hub, user_id="pub", roles=BOTH_ROLES), label="pub",
                          server=nodes[0]).open()
    try:
        for m in members:
            m.join(group)
        total = 300
        for i in range(total):
            publisher.send_to_group(group, f"m{i}", TEXT, no_echo=True)
        for m in members:
            got = m.collect_until(lambda msg: msg.data == f"m{total - 1}", timeout=20)
            assert [x.data for x in got] == [f"m{i}" for i in range(total)], m.label
        rest = nodes[2].service_client(hub)
        assert len(list(rest.list_connections(group=group))) == 6
    finally:
        for c in (*members, publisher):
            c.close()


# The SDK's ack thread does not catch send errors (see tests/interop/test_reliable_sdks.py).
@pytest.mark.filterwarnings(
    r"ignore:Exception in thread .*\(sequence_id_ack_periodically\):pytest.PytestUnhandledThreadExceptionWarning")
async def test_reliable_client_recovers_on_other_nodes_across_20_aborts(fabric_nodes):
    _, nodes = await trio.to_thread.run_sync(lambda: fabric_nodes(2))
    hub, group = unique("move"), unique("g")
    total, aborts = 8000, 20
    with SwitchingProxy([n.port for n in nodes], name="switch") as proxy:
        url = proxy.proxied(nodes[0].client_url(hub, user_id="mover", roles=BOTH_ROLES))
        sdk = SdkClient(url, label="mover", server=nodes[0])
        connected_ids: list[str] = []
        sdk.client.subscribe(CallbackType.CONNECTED, lambda args: connected_ids.append(args.connection_id))
        try:
            await trio.to_thread.run_sync(sdk.open)
            first_id = sdk.connection_id
            await trio.to_thread.run_sync(sdk.join, group)
            pub_url = nodes[1].client_url(hub, roles=BOTH_ROLES)
            async with open_json_client(pub_url, label="pub", server=nodes[1]) as pub:
                await publish_through_chaos(pub, group, proxy, total=total, aborts=aborts, diagnostics=tuple(nodes))
            got: list = []

            def drain() -> bool:
                while True:
                    try:
                        got.append(sdk.messages.get_nowait())
                    except queue.Empty:
                        return len(got) >= total

            await wait_until(drain, 10, f"{total} SDK callbacks", proxy, *nodes)
            await trio.sleep(0.5)
            drain()
            check_recoveries(proxy, first_id, aborts)
            moved = sum(1 for a, b in zip(proxy.upstreams, proxy.upstreams[1:]) if a != b)
        finally:
            await trio.to_thread.run_sync(sdk.close)
    got.sort(key=lambda m: m.serial)
    assert [m.data for m in got] == [f"m{i}" for i in range(total)]
    assert [m.sequence_id for m in got] == list(range(1, total + 1))
    assert connected_ids == [first_id]
    assert moved >= aborts, f"the proxy alternated nodes {moved} times: {proxy.upstreams}"
    taken = [health(n)["broker"] for n in nodes]
    assert all(t["state"] == "connected" for t in taken)


def test_killed_node_leaves_exists_and_the_others_carry_on(fabric_nodes):
    _, (a, b, c) = fabric_nodes(3)
    hub, group = unique("kill"), unique("g")
    on_a = SdkClient(a.client_url(hub, user_id="on_a", roles=BOTH_ROLES), label="on_a", server=a).open()
    on_c = SdkClient(c.client_url(hub, user_id="on_c", roles=BOTH_ROLES), label="on_c", server=c).open()
    try:
        rest = b.service_client(hub)
        rest.add_connection_to_group(group, on_a.connection_id)
        rest.add_connection_to_group(group, on_c.connection_id)
        assert rest.connection_exists(on_c.connection_id)
        kill(c)
        took = eventually(lambda: not rest.connection_exists(on_c.connection_id), "the killed node's connection "
                          "to leave exists", timeout=10)
        assert not rest.user_exists("on_c")
        assert [x.connection_id for x in rest.list_connections(group=group)] == [on_a.connection_id]
        rest.send_to_group(group, "still here", content_type="text/plain")
        assert on_a.next_message().data == "still here"
        print(f"killed node gone from exists after {took:.2f} s")
    finally:
        on_a.close()


def test_hung_node_leaves_exists_within_the_bound_and_comes_back(fabric_nodes):
    ttl = 2.0
    _, (a, b) = fabric_nodes(2, node_ttl=ttl, request_timeout=1.0)
    hub = unique("hang")
    on_b = SdkClient(b.client_url(hub, user_id="on_b"), protocol=WebPubSubProtocolType.JSON, label="on_b",
                     server=b).open()
    rest = a.service_client(hub)
    try:
        assert rest.connection_exists(on_b.connection_id)
        pause(b)
        try:
            took = eventually(lambda: not rest.connection_exists(on_b.connection_id),
                              "a hung node's connection to leave exists", timeout=1.5 * ttl + 3)
        finally:
            resume(b)
        print(f"hung node gone from exists after {took:.2f} s (node_ttl {ttl} s)")
        assert health(a)["broker"]["presence"]["nodes_removed"] >= 1
        # back: it reconnects, resubscribes (presence rebuilt), and is reachable again
        eventually(lambda: rest.connection_exists(on_b.connection_id), "the resumed node's connection to exist again",
                   timeout=15)
        rest.send_to_connection(on_b.connection_id, "welcome back", content_type="text/plain")
        assert on_b.next_message(timeout=10).data == "welcome back"
        assert health(b)["broker"]["gaps"] >= 1
    finally:
        on_b.close()


def test_redis_restart_mid_stream_costs_a_bounded_gap(redis_server_factory):
    redis = redis_server_factory()
    fab = serve_nodes.new_fabric(redis.url)
    try:
        a, b = fab.start(), fab.start()
        hub, group = unique("restart"), unique("g")
        on_a = SdkClient(a.client_url(hub, user_id="on_a", roles=BOTH_ROLES), label="on_a", server=a).open()
        on_b = SdkClient(b.client_url(hub, user_id="on_b", roles=BOTH_ROLES), label="on_b", server=b).open()
        on_a.join(group)
        on_b.join(group)
        rest = a.service_client(hub)
        sent: list[tuple[float, str]] = []
        stop = threading.Event()

        def publish() -> None:
            i = 0
            while not stop.is_set():
                text = f"m{i}"
                sent.append((time.monotonic(), text))
                try:
                    rest.send_to_group(group, text, content_type="text/plain")
                except Exception as exc:  # noqa: BLE001 - a REST failure would be a finding
                    pytest.fail(f"sendToGroup failed during the restart: {exc!r}")
                i += 1
                time.sleep(0.01)

        publisher = threading.Thread(target=publish, daemon=True)
        publisher.start()
        time.sleep(1.0)
        down_at = time.monotonic()
        redis.restart(down_for=1.0)
        up_at = time.monotonic()
        eventually(lambda: health(b)["broker"]["state"] == "connected" and health(a)["broker"]["state"] == "connected",
                   "both nodes to reconnect", timeout=15)
        time.sleep(1.0)
        stop.set()
        publisher.join(10)
        last = sent[-1][1]
        got_a = [m.data for m in on_a.collect_until(lambda m: m.data == last, timeout=10)]
        got_b = [m.data for m in on_b.collect_until(lambda m: m.data == last, timeout=10)]
        everything = [t for _, t in sent]
        assert got_a == everything, "the publishing node's own member must lose nothing"
        assert len(set(got_b)) == len(got_b), "nothing may arrive twice"
        assert got_b == sorted(got_b, key=everything.index), "order must hold"
        lost = [t for t in everything if t not in set(got_b)]
        lost_at = [ts for ts, t in sent if t in set(lost)]
        assert all(down_at - 1.0 <= ts <= up_at + 5.0 for ts in lost_at), "losses only around the outage"
        print(f"Redis down {up_at - down_at:.2f} s: {len(lost)} of {len(everything)} lost on the remote node")
        stats = health(b)["broker"]
        assert stats["gaps"] >= 1 and stats["state"] == "connected"
        rest.send_to_group(group, "after", content_type="text/plain")
        assert on_b.next_message().data == "after"
        on_a.close()
        on_b.close()
    finally:
        fab.close()


def test_two_workers_serve_one_port(fabric_nodes, redis_server):
    fab = serve_nodes.new_fabric(redis_server.url)
    try:
        node = fab.start("--workers", "2")
        seen = set()
        deadline = time.monotonic() + 20
        while len(seen) < 2 and time.monotonic() < deadline:
            seen.add(health(node)["broker"]["node_id"])
        assert len(seen) == 2, f"one port, two processes: saw {seen}"
        hub, group = unique("workers"), unique("g")
        clients = [SdkClient(node.client_url(hub, user_id=f"w{i}", roles=BOTH_ROLES), label=f"w{i}", server=node).open()
                   for i in range(6)]
        rest = node.service_client(hub)
        for c in clients:
            rest.add_connection_to_group(group, c.connection_id)
        rest.send_to_group(group, "to all workers", content_type="text/plain")
        for c in clients:
            assert c.next_message().data == "to all workers"
        victim = int(min(seen).rsplit("-", 1)[1])
        import os
        import signal
        os.kill(victim, signal.SIGKILL)

        def node_ids() -> set[str]:
            found = set()
            for _ in range(6):
                try:
                    found.add(health(node)["broker"]["node_id"])
                except OSError:
                    pass  # a connection the killed worker had accepted (SO_REUSEPORT queues are per socket)
            return found

        eventually(lambda: len(node_ids() - seen) >= 1, "the killed worker to be replaced", timeout=30)
        node.check_alive()
        for c in clients:
            c.close()
    finally:
        fab.close()  # SIGINT: the supervisor drains both workers and exits 0
