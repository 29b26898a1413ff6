"""Log lines: one per connection opened and closed, REST access lines, warnings for upstream
failures and slow consumers; text or JSON; never a token, a key or a message body."""

from __future__ import annotations

import io
import json
import logging

import attrs
import pytest
import trio

import fabric
from fabric.config import SYSTEM_EVENTS, EventHandlerConfig, HubConfig, MetricsConfig
from fabric.core import logs
from tests.appserver.rest.rest_support import KEY, RestClient, connect
from tests.appserver.webhook.support import AppTransport, CloudEventsApp
from tests.fabric_support import quick_config

ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")
BODY = "BODY-7d1e0c5b-the-message-text-nobody-may-log"
METRICS_TOKEN = "metrics-token-4b1f2e9a0c"


@pytest.fixture
def captured():
    """Every record of the fabric as JSON lines (DEBUG and up), the handler removed after."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = logs.configure("debug", "json", stream=stream, secrets=(KEY, METRICS_TOKEN))
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_traffic_logs_lines_without_secrets(captured):
    config = attrs.evolve(
        quick_config(), metrics=MetricsConfig(token=METRICS_TOKEN),
        hubs={"logs": HubConfig(event_handlers=(EventHandlerConfig(
            "http://upstream.test/{event}", "*", SYSTEM_EVENTS),))})
    app = CloudEventsApp(keys=(KEY,))
    async with fabric.open_fabric(config, access_key=KEY) as fab:
        transport = AppTransport(app)
        fab.upstream_transport = transport
        token = fab.hub("logs").get_client_access_token(user_id="alice", roles=ROLES)["token"]
        a = await connect(fab, "logs", token=token)
        b = await connect(fab, "logs", user_id="bob", roles=ROLES)
        await a.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
        await a.receive_json()
        await a.send_json({"type": "sendToGroup", "group": "g", "dataType": "text", "data": BODY, "ackId": 2})
        await a.receive_json()
        await a.receive_json()
        rest = RestClient(fab)
        assert (await rest.send("/api/hubs/logs/:send", BODY)).status == 202
        assert (await rest.send("/api/hubs/logs/:send", BODY, authorization=f"Bearer {token}")).status == 401
        # an upstream failure: the handler app is down while a user event carries the body
        transport.down = True
        await b.send_json({"type": "event", "event": "hello", "dataType": "text", "data": BODY, "ackId": 3})
        answer = await b.receive_json()
        while answer.get("type") != "ack":
            answer = await b.receive_json()
        assert answer["success"] is False
        await a.aclose()
        await b.aclose()
        with trio.fail_after(5):
            while fab.running_hubs()["logs"].connections:
                await trio.sleep(0.01)
    records = lines(captured)
    text = captured.getvalue()
    for secret in (KEY, token, BODY, METRICS_TOKEN):
        assert secret not in text, f"a secret in the logs: {secret[:12]}..."
    opened = [r for r in records if r.get("event") == "connection.open"]
    closed = [r for r in records if r.get("event") == "connection.close"]
    assert {r["user"] for r in opened} == {"alice", "bob"}
    assert all(r["hub"] == "logs" and r["protocol"] == "json" and r["connection_id"] for r in opened)
    assert {r["connection_id"] for r in closed} == {r["connection_id"] for r in opened}
    assert all(isinstance(r["duration_s"], float) and r["code"] == "1000" for r in closed)
    access = [r for r in records if r.get("event") == "rest"]
    assert [(r["operation"], r["status"]) for r in access] == [("sendToAll", 202), ("sendToAll", 401)]
    assert all(r["path"] == "/api/hubs/logs/:send" and r["duration_ms"] >= 0 for r in access)
    assert any(r["level"] == "warning" and "hello" in r["msg"] and "failed" in r["msg"] for r in records), \
        "no warning for the failed upstream call"


async def test_slow_consumer_is_a_warning(captured):
    config = quick_config(outbox_max_bytes=16 * 1024, outbox_max_messages=16, close_timeout=0.2)
    async with fabric.open_fabric(config, access_key=KEY) as fab:
        reader = await connect(fab, "slow", roles=ROLES)
        writer = await connect(fab, "slow", roles=ROLES)
        await reader.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
        await reader.receive_json()
        hub = fab.running_hubs()["slow"]
        for i in range(200):  # the reader reads nothing: the pipe (64 KiB), then its outbox fill up
            await writer.send_json({"type": "sendToGroup", "group": "g", "dataType": "text", "data": "x" * 1000})
            if hub.counters["slow_consumer_closed"]:
                break
        with trio.fail_after(5):
            while len(fab.running_hubs()["slow"].connections) > 1:
                await trio.sleep(0.01)
        await writer.aclose()
    records = lines(captured)
    assert any(r["level"] == "warning" and "slow consumer" in r["msg"] for r in records)
    closed = [r for r in records if r.get("event") == "connection.close" and r["code"] == "1008"]
    assert closed, "the slow consumer's close line says 1008"


def test_text_format_and_redaction():
    redactor = logs.Redactor(["k" * 20])
    scrubbed = redactor.scrub("url /client/hubs/h?access_token=eyJhbGciOi.eyJzdWIiOi.sig&x=1 key " + "k" * 20
                              + " Authorization: Bearer abc.def.ghi Endpoint=http://h;AccessKey=secret;Version=1.0;")
    assert "eyJ" not in scrubbed and "k" * 20 not in scrubbed and "abc.def" not in scrubbed
    assert "AccessKey=***" in scrubbed and "access_token=***" in scrubbed
    record = logging.LogRecord("fabric.x", logging.INFO, __file__, 1, "hello %s", ("world",), None)
    record.fields = {"hub": "chat", "reason": "two words"}
    assert logs.TextFormatter().format(record).endswith('fabric.x: hello world hub=chat reason="two words"')
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["msg"] == "hello world" and line["hub"] == "chat" and line["level"] == "info"
