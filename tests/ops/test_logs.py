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
from tests.forking import in_forked_child

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


@pytest.fixture
def installed():
    """``logs.configure`` on a StringIO; the handler removed and the root level restored after."""
    root = logging.getLogger()
    level, made = root.level, []

    def install(fmt: str, level: str = "info") -> tuple[io.StringIO, logging.Handler]:
        stream = io.StringIO()
        made.append(logs.configure(level, fmt, stream=stream, secrets=(KEY,)))
        return stream, made[-1]

    try:
        yield install
    finally:
        for handler in made:
            root.removeHandler(handler)
        root.setLevel(level)


VALUES = {"event": "connection.open", "connection_id": "AbC-dEf_12", "hub": "chat", "user": None,
          "protocol": "json", "duration_s": 0.5, "reason": "two words", "secret": f"key {KEY}"}


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_emit_writes_the_line_a_record_would(installed, fmt):
    """``logs.emit`` (no LogRecord: the lines every connection logs) and ``log.info`` with
    the same fields give the same line but for the time stamp, redacted alike."""
    stream, _ = installed(fmt)
    log = logging.getLogger("fabric.connections")
    logs.emit(log, logging.INFO, "connection opened", **VALUES)
    log.info("connection opened", extra=logs.fields(**VALUES))
    logs.emit(log, logging.DEBUG, "not at this level", **VALUES)
    fast, slow = stream.getvalue().splitlines()
    assert KEY not in fast and "***" in fast
    if fmt == "json":
        fast_obj, slow_obj = json.loads(fast), json.loads(slow)
        assert fast_obj.pop("ts").endswith("Z") and slow_obj.pop("ts").endswith("Z")
        assert fast_obj == slow_obj
        assert fast_obj["user"] is None and fast_obj["duration_s"] == 0.5 and fast_obj["level"] == "info"
    else:
        assert fast.split(" ", 2)[2] == slow.split(" ", 2)[2]
        assert fast.split(" ", 2)[2].startswith('INFO fabric.connections: connection opened event=connection.open')
        assert 'user=- protocol=json duration_s=0.5 reason="two words" secret="key ***"' in fast


def test_emit_goes_through_logging_when_anything_else_listens(installed):
    """Another handler on the way (or a filter on the logger) gets a real record: the
    direct line is only for when the installed handler is the one place it would go."""
    stream, _ = installed("json")
    log = logging.getLogger("fabric.connections")
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record)

    keeper = Keep()
    logging.getLogger("fabric").addHandler(keeper)
    try:
        logs.emit(log, logging.INFO, "connection opened", hub="chat")
    finally:
        logging.getLogger("fabric").removeHandler(keeper)
    assert [r.fields for r in seen] == [{"hub": "chat"}]
    only = logging.Filter("nothing.matches")
    log.addFilter(only)
    try:
        logs.emit(log, logging.INFO, "filtered out", hub="chat")
    finally:
        log.removeFilter(only)
    logs.emit(log, logging.INFO, "direct", hub="chat")
    assert [json.loads(line)["msg"] for line in stream.getvalue().splitlines()] == ["connection opened", "direct"]


def test_lines_of_a_trio_pass_are_written_together_in_order(installed):
    """Inside trio the handler writes on the scheduler's next pass (one write for the pass's
    lines), keeps the order of direct and ordinary lines, and leaves nothing behind when
    the run ends; outside trio a line is written at once."""
    stream, handler = installed("text")
    log = logging.getLogger("fabric.connections")
    writes: list[str] = []
    real_write = stream.write

    def counting_write(text):
        writes.append(text)
        return real_write(text)

    stream.write = counting_write

    async def main():
        for round_ in range(3):
            for i in range(5):
                if i % 2:
                    logs.emit(log, logging.INFO, "direct", round=round_, i=i)
                else:
                    log.info("record", extra=logs.fields(round=round_, i=i))
            assert stream.getvalue().count("\n") == 5 * round_  # not yet: on the next pass
            await trio.sleep(0)
            await trio.sleep(0)
            assert stream.getvalue().count("\n") == 5 * (round_ + 1)
        logs.emit(log, logging.INFO, "last", round=3, i=0)  # the run ends before a pass

    trio.run(main)
    got = [(int(line.split("round=")[1].split()[0]), int(line.split("i=")[1])) for line in stream.getvalue().splitlines()]
    assert got == [(r, i) for r in range(3) for i in range(5)] + [(3, 0)]
    assert len(writes) == 4, writes  # one per pass, and the last at the end of the run
    logs.emit(log, logging.INFO, "outside trio", round=4, i=0)
    assert stream.getvalue().splitlines()[-1].endswith("round=4 i=0") and len(writes) == 5

    async def burst():  # a pass that logs more than a batch writes as it goes
        for i in range(handler.BATCH + 10):
            logs.emit(log, logging.INFO, "burst", round=5, i=i)
        assert stream.getvalue().count("round=5") == handler.BATCH

    trio.run(burst)
    assert stream.getvalue().count("round=5") == handler.BATCH + 10


def test_a_forked_child_does_not_write_its_parents_waiting_lines(installed):
    stream, handler = installed("text")
    log = logging.getLogger("fabric.connections")

    async def fork_while_a_line_waits():
        logs.emit(log, logging.INFO, "waiting", who="parent")
        return in_forked_child(lambda: repr(list(handler._pending)))  # what the child would write

    child = trio.run(fork_while_a_line_waits)
    assert child == "[]"
    assert stream.getvalue().count("who=parent") == 1  # the parent's line, once, from the parent


def test_a_line_logged_as_the_run_ends_is_written_at_once(installed):
    """Lines logged while trio tears the run down (after the writer task has gone) are
    written directly, never raised into the code that logs."""
    stream, _ = installed("text")
    log = logging.getLogger("fabric.connections")

    async def linger():
        try:
            await trio.sleep_forever()
        finally:
            for i in range(3):
                logs.emit(log, logging.INFO, "going", i=i)
                await trio.lowlevel.cancel_shielded_checkpoint()

    async def main():
        trio.lowlevel.spawn_system_task(linger)
        logs.emit(log, logging.INFO, "started", i=-1)
        await trio.sleep(0)

    trio.run(main)
    assert [line.rsplit("i=", 1)[1] for line in stream.getvalue().splitlines()] == ["-1", "0", "1", "2"]


async def test_a_path_with_control_characters_cannot_forge_text_log_lines(installed):
    # Found by a REST fuzz run: the access line prints the percent-decoded path, so %0A, %0D
    # and %1B reached the text log as a line break, a carriage return and a terminal escape,
    # without any token (401 and 404 answers are logged too).
    stream, _ = installed("text")
    async with fabric.open_fabric(quick_config(), access_key=KEY) as fab:
        rest = RestClient(fab)
        forged = "/api/hubs/logs/groups/x%0A2026-12-04%2017:00:00,000%20ERROR%20fabric:%20FORGED%0D%1B[31mred/:send"
        response = await rest.raw_request("POST", forged + "?api-version=2024-12-01",
                                          [("Host", "fabric.local"), ("Content-Length", "2")], b"hi")
        assert response.status == 401
    forged_lines = [line for line in stream.getvalue().splitlines() if "FORGED" in line]
    assert len(forged_lines) == 1 and "fabric.access" in forged_lines[0], stream.getvalue()
    assert "\\n2026-12-04" in forged_lines[0] and "\\r\\x1b[31m" in forged_lines[0]
    assert "\x1b" not in stream.getvalue() and "\r" not in stream.getvalue()


def test_text_values_with_control_characters_are_quoted_and_escaped():
    record = logging.LogRecord("fabric.x", logging.INFO, __file__, 1, "user %s", ("a\nb\x1bc",), None)
    record.fields = {"user": "a\x1bb", "group": "x\ny"}
    line = logs.TextFormatter().format(record)
    assert "\n" not in line and "\x1b" not in line
    assert line.endswith('fabric.x: user a\\nb\\x1bc user="a\\u001bb" group="x\\ny"')
