"""The webhook client on its own terms: the exact requests, validation, signatures, routing,
notifications, concurrency and shutdown (all in memory; the wire itself is in
test_upstream_tcp.py)."""

from __future__ import annotations

import json
import logging
import re

import pytest
import trio

from fabric.appserver.webhook import WebhookEventHandler
from fabric.config import EventHandlerConfig
from fabric.core.events import ConnectResponse, EventHandler, UserEventResponse
from fabric.core.payload import Payload
from fabric.testing import ConnectionRejected, connect_in_process
from specs import upstream as spec
from transport.http import Response

from .conftest import connect, open_rig
from .support import BASE, HUB, KEYS, CloudEventsApp, state_of

ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")


class Echo(EventHandler):
    def __init__(self, connect_answer=None):
        self.connect_answer = connect_answer

    async def on_connect(self, request):
        return self.connect_answer

    async def on_user_event(self, ctx, event, payload):
        return payload


def ours(raw_headers):
    """The CloudEvents headers of one request, in order, as (name, value) strings."""
    names = {n.lower() for n in spec.REQUEST_HEADERS}
    return [(k.decode(), v.decode()) for k, v in raw_headers if k.decode().lower() in names]


def expected_headers(*, event, system, connection_id, user_id=None, subprotocol=None, state=None,
                     content_type, ce_id, ce_time, origin="127.0.0.1"):
    out = [
        ("WebHook-Request-Origin", origin),
        ("Content-Type", content_type),
        ("ce-specversion", "1.0"),
        ("ce-type", ("azure.webpubsub.sys." if system else "azure.webpubsub.user.") + event),
        ("ce-source", f"/hubs/{HUB}/client/{connection_id}"),
        ("ce-id", ce_id),
        ("ce-time", ce_time),
        ("ce-signature", spec.signature(KEYS, connection_id)),
    ]
    if user_id is not None:
        out.append(("ce-userId", user_id))
    out += [("ce-connectionId", connection_id), ("ce-hub", HUB), ("ce-eventName", event)]
    if subprotocol:
        out.append(("ce-subprotocol", subprotocol))
    if state:
        out.append(("ce-connectionState", state))
    out.append(("ce-awpsversion", "1.0"))
    return out


async def test_every_request_carries_the_exact_headers(webhook_rig, autojump_clock):
    rig = webhook_rig
    state = state_of({"k": "v"})
    rig.use(Echo(ConnectResponse(connection_state=state)))
    c = await rig.connect(user_id="alice")
    await rig.app.wait_for("connected")  # not awaited by the connection: fence it for a fixed order
    await c.send_json({"type": "event", "event": "echo", "ackId": 1, "dataType": "json", "data": {"x": 1}})
    await c.receive_json()
    await c.receive_json()
    await c.aclose()
    await rig.app.wait_for("disconnected")
    raw = rig.transport.raw
    assert [(m, u) for m, u, _, _ in raw] == [
        ("OPTIONS", f"{BASE}/hubs/up/events/validate"),
        ("POST", f"{BASE}/hubs/up/events/connect"),
        ("POST", f"{BASE}/hubs/up/events/connected"),
        ("POST", f"{BASE}/hubs/up/events/echo"),
        ("POST", f"{BASE}/hubs/up/events/disconnected"),
    ]
    assert [(k.decode(), v.decode()) for k, v in raw[0][2] if k.lower().startswith((b"webhook", b"ce-"))] == [
        ("WebHook-Request-Origin", "127.0.0.1"), ("ce-awpsversion", "1.0")]
    cid = c.connection_id
    for i, (_, _, headers, _) in enumerate(raw[1:], 1):
        values = dict(ours(headers))
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", values["ce-time"])
        assert values["ce-id"] == str(i)
    sub = "json.webpubsub.azure.v1"
    times = [dict(ours(h))["ce-time"] for _, _, h, _ in raw[1:]]
    assert ours(raw[1][2]) == expected_headers(
        event="connect", system=True, connection_id=cid, user_id="alice",
        content_type="application/json; charset=utf-8", ce_id="1", ce_time=times[0])
    assert ours(raw[2][2]) == expected_headers(
        event="connected", system=True, connection_id=cid, user_id="alice", subprotocol=sub, state=state,
        content_type="application/json; charset=utf-8", ce_id="2", ce_time=times[1])
    assert ours(raw[3][2]) == expected_headers(
        event="echo", system=False, connection_id=cid, user_id="alice", subprotocol=sub, state=state,
        content_type="application/json", ce_id="3", ce_time=times[2])
    assert ours(raw[4][2]) == expected_headers(
        event="disconnected", system=True, connection_id=cid, user_id="alice", subprotocol=sub, state=state,
        content_type="application/json; charset=utf-8", ce_id="4", ce_time=times[3])
    # bodies: connected is exactly {}, disconnected carries the reason, the event its data
    assert raw[2][3] == b"{}"
    assert json.loads(raw[4][3]).keys() == {"reason"}
    assert raw[3][3] == b'{"x":1}'
    # other headers httpx adds: no compression, no proxy surprises
    names = [k.decode().lower() for k, _ in raw[3][2]]
    assert "content-length" in names and dict((k.decode().lower(), v) for k, v in raw[3][2])["accept-encoding"] == b"identity"


async def test_no_user_means_no_ce_userid(webhook_rig):
    rig = webhook_rig
    rig.use(Echo())
    await rig.connect()
    (connect_event,) = await rig.app.wait_for("connect")
    assert connect_event.header("ce-userId") is None
    assert connect_event.header("ce-subprotocol") is None  # never on connect
    assert connect_event.header("ce-connectionState") is None


async def test_connect_body_is_list_valued_maps(webhook_rig):
    rig = webhook_rig
    rig.use(Echo())
    token = rig.fab.hub(HUB).get_client_access_token(user_id="bob", roles=ROLES, groups=("g0",))["token"]
    await connect_in_process(rig.fab, HUB, token=token, query={"a": "1", "b": "x y"})
    (event,) = await rig.app.wait_for("connect")
    body = json.loads(event.body)
    assert list(body) == ["claims", "query", "headers", "subprotocols", "clientCertificates"]
    assert body["query"] == {"a": ["1"], "b": ["x y"]}  # no access_token
    assert body["subprotocols"] == ["json.webpubsub.azure.v1"] and body["clientCertificates"] == []
    assert all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in body["headers"].values())
    assert "authorization" not in body["headers"] and "sec-websocket-key" not in body["headers"]
    assert all(isinstance(v, list) for v in body["claims"].values())
    assert "role" not in body["claims"] or body["claims"]["role"] == list(ROLES)


async def test_user_event_content_types_and_bodies(webhook_rig):
    rig = webhook_rig
    rig.use(Echo())
    c = await rig.connect()
    sent = [("text", "héllo", "text/plain", "héllo".encode()), ("json", [1, "two"], "application/json", b'[1,"two"]'),
            ("binary", "AAEC", "application/octet-stream", b"\x00\x01\x02"),
            ("protobuf", "CgR0ZXN0", "application/x-protobuf", b"\n\x04test")]
    for i, (data_type, data, _, _) in enumerate(sent):
        await c.send_json({"type": "event", "event": "echo", "ackId": i + 1, "dataType": data_type, "data": data})
        await c.receive_json()
        await c.receive_json()
    events = rig.app.events("echo")
    assert [(e.header("content-type"), e.body) for e in events] == [(ct, body) for _, _, ct, body in sent]


async def test_signature_checks_with_either_key(autojump_clock):
    for keys in ((KEYS[0],), (KEYS[1],)):
        async with open_rig("webhook") as rig:
            rig.app.keys, rig.app.require_every_key = keys, True
            rig.use(Echo())
            c = await rig.connect()
            await c.send_json({"type": "event", "event": "echo", "ackId": 1, "dataType": "text", "data": "ok"})
            assert (await c.receive_json())["data"] == "ok"
            assert rig.app.signature_failures == 0
    async with open_rig("webhook") as rig:  # an app with another key refuses (401 passes through)
        rig.app.keys = ("a-key-the-fabric-does-not-have-000000000",)
        rig.use(Echo())
        with pytest.raises(ConnectionRejected) as info:
            await connect_in_process(rig.fab, HUB)
        assert info.value.status == 401 and rig.app.signature_failures == 1


async def test_validation_happens_once_before_first_use_even_when_concurrent(webhook_rig):
    rig = webhook_rig
    rig.use(Echo())
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(rig.connect)
    options = [s for s in rig.app.seen if s.method == "OPTIONS"]
    assert len(options) == 1 and rig.app.seen[0].method == "OPTIONS"
    assert options[0].path == "/hubs/up/events/validate"
    assert rig.webhook.statistics()["validated"] == [f"{BASE}/hubs/up/events/validate"]


@pytest.mark.parametrize("answer, problem", [
    (Response(200), "no WebHook-Allowed-Origin"),
    (Response(200, b"", (("WebHook-Allowed-Origin", "someone-else.example"),)), "does not allow origin"),
    (Response(404, b"Cannot OPTIONS /x"), "OPTIONS answered 404: Cannot OPTIONS /x"),
    (Response(302, b"", (("location", "http://elsewhere/"),)), "OPTIONS answered 302"),
])
async def test_failed_validation_is_a_clear_failure_and_is_retried(webhook_rig, autojump_clock, caplog, answer, problem):
    rig = webhook_rig
    rig.use(Echo())
    bad = True

    async def validation(seen):
        return answer if seen.method == "OPTIONS" and bad else None

    rig.app.override = validation
    with pytest.raises(ConnectionRejected) as info:
        await connect_in_process(rig.fab, HUB)
    message = json.loads(info.value.body)["message"]
    assert info.value.status == 500
    assert "abuse-protection validation" in message and problem in message
    assert any("abuse-protection validation" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    # within the retry interval the failure is remembered, not re-asked
    with pytest.raises(ConnectionRejected):
        await connect_in_process(rig.fab, HUB)
    assert len([s for s in rig.app.seen if s.method == "OPTIONS"]) == 1
    # the app is fixed; after the interval the next event validates again and succeeds
    bad = False
    await trio.sleep(spec.VALIDATION_RETRY_SECONDS)
    c = await rig.connect()
    assert c.connection_id
    assert len([s for s in rig.app.seen if s.method == "OPTIONS"]) == 2


async def test_failed_validation_fails_user_events_with_an_ack_error(autojump_clock):
    config = dict(handlers=(EventHandlerConfig(BASE + "/{event}", "*", ("connected",)),))
    async with open_rig("webhook", **config) as rig:
        rig.use(Echo())
        rig.app.allowed_origin = "not-us.example"
        c = await rig.connect()
        await c.send_json({"type": "event", "event": "echo", "ackId": 1, "dataType": "text", "data": "x"})
        ack = await c.receive_json()
        assert ack["error"]["name"] == "InternalServerError"
        assert "failed abuse-protection validation" in ack["error"]["message"]


async def test_allowed_origin_may_name_host_and_port(autojump_clock):
    async with open_rig("webhook") as rig:
        rig.fab.endpoint = "http://localhost:8080"
        rig.app.allowed_origin = "LOCALHOST:8080"  # express: new URL(endpoint).host, lower-cased by us
        rig.use(Echo())
        await rig.connect()
        options = [s for s in rig.app.seen if s.method == "OPTIONS"]
        assert options[0].header("webhook-request-origin") == "localhost"


async def test_first_matching_handler_wins_per_event():
    handlers = (
        EventHandlerConfig(BASE + "/a/{event}", "alpha,beta", ("connect",)),
        EventHandlerConfig(BASE + "/b/{event}", "*", ("connected", "disconnected", "connect")),
    )
    async with open_rig("webhook", handlers=handlers) as rig:
        rig.use(Echo())
        c = await rig.connect()
        await rig.app.wait_for("connected")
        for i, event in enumerate(("alpha", "gamma", "beta"), 1):
            await c.send_json({"type": "event", "event": event, "ackId": i, "dataType": "text", "data": event})
            assert (await c.receive_json())["data"] == event
            await c.receive_json()
        await c.aclose()
        await rig.app.wait_for("disconnected")
        posts = [(s.path, s.event) for s in rig.app.seen if s.method == "POST"]
        assert posts == [("/a/connect", "connect"), ("/b/connected", "connected"), ("/a/alpha", "alpha"),
                         ("/b/gamma", "gamma"), ("/a/beta", "beta"), ("/b/disconnected", "disconnected")]
        assert sorted(s.path for s in rig.app.seen if s.method == "OPTIONS") == ["/a/validate", "/b/validate"]


async def test_events_no_handler_takes_are_not_found_and_unsubscribed_system_events_are_not_sent():
    handlers = (EventHandlerConfig(BASE + "/{event}", "only", ()),)
    async with open_rig("webhook", handlers=handlers) as rig:
        rig.use(Echo(ConnectResponse(user_id="nobody-asked")))
        c = await rig.connect()
        assert c.user_id is None  # no connect handler configured: the answer is never asked for
        await c.send_json({"type": "event", "event": "other", "ackId": 1, "dataType": "text", "data": "x"})
        assert (await c.receive_json())["error"]["name"] == "NotFound"
        await c.send_json({"type": "event", "event": "only", "ackId": 2, "dataType": "text", "data": "x"})
        assert (await c.receive_json())["data"] == "x"
        await c.receive_json()
        await c.aclose()
        assert [s.event for s in rig.app.seen if s.method == "POST"] == ["only"]


async def test_set_handler_none_goes_back_to_the_webhooks(webhook_rig):
    rig = webhook_rig

    class InProcess(EventHandler):
        async def on_user_event(self, ctx, event, payload):
            return Payload.text("in-process")

    rig.use(Echo())
    rig.fab.set_handler(HUB, InProcess())
    c = await rig.connect()
    await c.send_json({"type": "event", "event": "e", "ackId": 1, "dataType": "text", "data": "webhook"})
    assert (await c.receive_json())["data"] == "in-process"
    await c.receive_json()
    rig.fab.set_handler(HUB, None)
    await c.send_json({"type": "event", "event": "e", "ackId": 2, "dataType": "text", "data": "webhook"})
    assert (await c.receive_json())["data"] == "webhook"


async def test_handler_down_everywhere(webhook_rig, autojump_clock, caplog):
    rig = webhook_rig
    rig.use(Echo())
    c = await rig.connect()  # validated while up
    await rig.app.wait_for("connected")
    rig.transport.down = True
    await c.send_json({"type": "event", "event": "echo", "ackId": 1, "dataType": "text", "data": "x"})
    ack = await c.receive_json()
    assert ack["error"]["name"] == "InternalServerError" and "unreachable" in ack["error"]["message"]
    with pytest.raises(ConnectionRejected) as info:
        await connect_in_process(rig.fab, HUB)
    assert info.value.status == 500 and "unreachable" in json.loads(info.value.body)["message"]
    await c.aclose()
    await trio.sleep(5)  # the disconnected event: tried, retried twice, then counted
    counters = rig.webhook.statistics()["counters"]
    assert counters["disconnected_failed"] == 1 and counters["notification_retries"] == 2
    assert any("disconnected event" in r.getMessage() and "unreachable" in r.getMessage() for r in caplog.records)


async def test_notification_retry_succeeds_when_the_handler_comes_back(webhook_rig, autojump_clock):
    rig = webhook_rig
    rig.use(Echo())
    c = await rig.connect()
    await rig.app.wait_for("connected")
    rig.transport.down = True
    await c.aclose()
    await trio.sleep(0.1)
    rig.transport.down = False
    await rig.app.wait_for("disconnected")
    assert rig.webhook.statistics()["counters"]["disconnected_delivered"] == 1


async def test_connected_before_disconnected_per_connection_even_when_slow(webhook_rig, autojump_clock):
    rig = webhook_rig
    order = []

    class SlowConnected(Echo):
        async def on_connected(self, ctx):
            await trio.sleep(3)
            order.append(("connected", ctx.connection_id))

        async def on_disconnected(self, ctx, reason):
            order.append(("disconnected", ctx.connection_id))

    rig.use(SlowConnected())
    clients = [await rig.connect() for _ in range(4)]
    for c in clients:
        await c.aclose()
    await trio.sleep(10)
    for c in clients:
        mine = [kind for kind, cid in order if cid == c.connection_id]
        assert mine == ["connected", "disconnected"]


async def test_full_notification_queue_drops_and_counts(autojump_clock, caplog):
    async with open_rig("webhook") as rig:
        gate = trio.Event()

        class Stuck(Echo):
            async def on_connected(self, ctx):
                await gate.wait()

        rig.use(Stuck())
        hub_config = rig.fab.config.hub(HUB)
        small = WebhookEventHandler(HUB, hub_config, access_keys=KEYS, timeout=100, notify_workers=1,
                                    notify_queue=2, transport=rig.transport)
        rig.fab.set_handler(HUB, small)  # started with the hub, by the fabric
        for _ in range(6):
            await rig.connect()
        counters = small.statistics()["counters"]
        assert counters["notifications_dropped"] == 3  # 1 in flight, 2 queued, 3 dropped
        assert any("dropped" in r.getMessage() for r in caplog.records)
        gate.set()


async def test_bounded_concurrency(autojump_clock):
    async with open_rig("webhook") as rig:
        in_flight = peak = 0

        class Slow(Echo):
            async def on_user_event(self, ctx, event, payload):
                nonlocal in_flight, peak
                in_flight += 1
                peak = max(peak, in_flight)
                await trio.sleep(1)
                in_flight -= 1
                return payload

        rig.use(Slow())
        small = WebhookEventHandler(HUB, rig.fab.config.hub(HUB), access_keys=KEYS, timeout=100,
                                    max_concurrency=2, transport=rig.transport)
        rig.fab.set_handler(HUB, small)
        clients = [await rig.connect() for _ in range(6)]

        async def one(c):
            await c.send_json({"type": "event", "event": "e", "ackId": 1, "dataType": "text", "data": "x"})
            assert (await c.receive_json(timeout=60))["data"] == "x"

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            for c in clients:
                nursery.start_soon(one, c)
        assert peak == 2
        assert trio.current_time() - start >= 3  # six 1-second events, two at a time


async def test_shutdown_delivers_queued_disconnected_events():
    async with open_rig("webhook") as rig:
        rig.use(Echo())
        for _ in range(3):
            await rig.connect()
        await rig.app.wait_for("connected", 3)
        app = rig.app
    # leaving the block closed every connection (1001) and stopped the upstream client
    assert len(app.events("disconnected")) == 3


async def test_user_event_response_may_only_change_state(webhook_rig):
    rig = webhook_rig

    class StateOnly(Echo):
        async def on_user_event(self, ctx, event, payload):
            if event == "set":
                return UserEventResponse(connection_state="c3RhdGU=")
            return Payload.text(ctx.connection_state or "-")

    rig.use(StateOnly())
    c = await rig.connect()
    await c.send_json({"type": "event", "event": "set", "ackId": 1, "dataType": "text", "data": ""})
    assert await c.receive_json() == {"type": "ack", "ackId": 1, "success": True}
    await c.send_json({"type": "event", "event": "get", "ackId": 2, "dataType": "text", "data": ""})
    assert (await c.receive_json())["data"] == "c3RhdGU="
    assert rig.app.events("get")[0].header("ce-connectionState") == "c3RhdGU="


async def test_statistics_shape(webhook_rig):
    rig = webhook_rig
    rig.use(Echo())
    c = await rig.connect()
    await c.send_json({"type": "event", "event": "e", "ackId": 1, "dataType": "text", "data": "x"})
    await c.receive_json()
    stats = rig.webhook.statistics()
    assert stats["running"] is True and stats["in_flight"] == 0 and stats["counters"]["requests"] >= 2
    assert stats["user_event_seconds"] > 0
    assert isinstance(CloudEventsApp().events(), list)


async def test_handlers_from_a_config_file_and_flags_with_anonymous_connect():
    import fabric
    from fabric.appserver.webhook import WebhookEventHandler as Webhook
    from fabric.config import loads_config, parse_event_handler_flag

    from .support import AppTransport

    config = loads_config(f'''
[server]
access_keys = ["{KEYS[0]}", "{KEYS[1]}"]

[hubs.{HUB}]
anonymous_connect = true

[[hubs.{HUB}.event_handlers]]
url_template = "{BASE}/first/{{event}}"
user_event_pattern = "a,b"
system_events = ["connect"]
''', env={}, overrides={"event_handlers": [parse_event_handler_flag(f"{HUB}={BASE}/flag/{{event}}")]})
    app = CloudEventsApp(Echo(ConnectResponse(user_id="anon-named-by-handler")))
    async with fabric.open_fabric(config) as fab:
        fab.upstream_transport = AppTransport(app)
        c = await connect(fab, HUB, anonymous=True)
        assert c.user_id == "anon-named-by-handler"
        assert isinstance(fab.webhook(HUB), Webhook)
        for i, event in enumerate(("a", "z"), 1):
            await c.send_json({"type": "event", "event": event, "ackId": i, "dataType": "text", "data": event})
            assert (await c.receive_json())["data"] == event
            await c.receive_json()
        await c.aclose()
        await app.wait_for("disconnected")
    posts = [s.path for s in app.seen if s.method == "POST"]
    # the file's handler first (connect, a), the flag's for the rest (connected, z, disconnected)
    assert posts[0] == "/first/connect" and posts[-1] == "/flag/disconnected"
    assert sorted(posts[1:-1]) == ["/first/a", "/flag/connected", "/flag/z"]  # connected is not awaited
