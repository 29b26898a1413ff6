"""Bad answers from a handler: each has the outcome specs/upstream.py documents and a log line,
and afterwards the hub and the connection carry on (never a crash, never a stuck client)."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
import trio

from fabric.core.events import EventHandler
from fabric.testing import ConnectionRejected, connect_in_process
from specs import upstream as spec
from transport.http import Response

from .conftest import open_rig
from .support import HUB

MAX = 1 << 20  # server.max_message_bytes default: the body bound


class Echo(EventHandler):
    async def on_user_event(self, ctx, event, payload):
        return payload


class Endless(httpx.AsyncByteStream):
    """A body that never ends (counts what was pulled from it)."""

    def __init__(self, chunk: int = 65536, stall: bool = False) -> None:
        self.pulled = 0
        self.chunk = chunk
        self.stall = stall

    async def __aiter__(self):
        while True:
            if self.stall and self.pulled:
                await trio.sleep_forever()
            self.pulled += self.chunk
            yield b"x" * self.chunk


def answer(status=200, body=b"", headers=(), **kw):
    return Response(status, body, tuple(headers))


BAD_USER_EVENT_ANSWERS = [
    ("html page", answer(200, b"<html>oops</html>", [("content-type", "text/html")]), "text/html", "bad_content_type"),
    ("huge declared", answer(200, b"x" * (MAX + 1), [("content-type", "application/octet-stream")]),
     "limit", "body_too_large"),
    ("bad json", answer(200, b'{"a": ', [("content-type", "application/json")]), "not valid JSON", "bad_body"),
    ("bad utf-8", answer(200, b"\xff\xfe\xfa", [("content-type", "text/plain")]), "not valid utf-8", "bad_body"),
    ("unknown charset", answer(200, b"abc", [("content-type", "text/plain; charset=nope")]), "not valid nope", "bad_body"),
    ("redirect", answer(302, b"", [("location", "http://upstream.test/elsewhere")]), "redirect", "redirect"),
    ("gzip", answer(200, b"\x1f\x8b...", [("content-type", "text/plain"), ("content-encoding", "gzip")]),
     "Content-Encoding", "content_encoding"),
    ("two states", answer(200, b"", [("ce-connectionState", "YQ=="), ("ce-connectionState", "Yg==")]),
     "2 ce-connectionState", "bad_connection_state"),
    ("huge state", answer(200, b"", [("ce-connectionState", "A" * (spec.MAX_CONNECTION_STATE_BYTES + 4))]),
     "ce-connectionState is", "bad_connection_state"),
    ("state with control characters", answer(200, b"", [("ce-connectionState", "a\x01b")]),
     "control characters", "bad_connection_state"),
    ("400", answer(400, b"your event is wrong"), "answered 400: your event is wrong", "client_error"),
    ("503", answer(503, b"busy"), "answered 503: busy", "server_error"),
    ("100-ish", answer(199, b""), "answered 199", "unexpected_status"),
]


@pytest.mark.parametrize("name, bad, text, failure", BAD_USER_EVENT_ANSWERS, ids=[c[0] for c in BAD_USER_EVENT_ANSWERS])
async def test_bad_user_event_answer(name, bad, text, failure, caplog):
    async with open_rig("webhook") as rig:
        rig.use(Echo())

        async def override(seen):
            return bad if seen.event == "bad" else None

        rig.app.override = override
        c = await rig.connect()
        await c.send_json({"type": "event", "event": "bad", "ackId": 1, "dataType": "text", "data": "x"})
        ack = await c.receive_json()
        assert ack["ackId"] == 1 and ack["success"] is False
        assert ack["error"]["name"] == "InternalServerError" and text in ack["error"]["message"], ack
        assert rig.webhook.statistics()["counters"][f"failed_{failure}"] == 1
        assert any(failure in r.getMessage() and r.levelno >= logging.INFO and r.name == "fabric.appserver.webhook"
                   for r in caplog.records)
        # the connection carries on
        await c.send_json({"type": "event", "event": "good", "ackId": 2, "dataType": "text", "data": "fine"})
        assert (await c.receive_json())["data"] == "fine"
        assert (await c.receive_json())["success"] is True
        # and without an ackId the same answer closes it (disconnected first, then 1011)
        await c.send_json({"type": "event", "event": "bad", "dataType": "text", "data": "x"})
        msg = await c.receive_json()
        assert msg["event"] == "disconnected" and text in msg["message"]
        assert await c.wait_closed() == 1011
        assert (await rig.connect()).connection_id  # the hub is fine


async def test_endless_body_is_read_only_up_to_the_bound(caplog):
    async with open_rig("webhook") as rig:
        rig.use(Echo())
        stream = Endless()

        async def override(seen):
            if seen.event == "bad":
                return httpx.Response(200, headers=[("content-type", "application/octet-stream")], stream=stream)
            return None

        rig.app.override = override
        c = await rig.connect()
        await c.send_json({"type": "event", "event": "bad", "ackId": 1, "dataType": "text", "data": "x"})
        ack = await c.receive_json()
        assert "over the limit" in ack["error"]["message"]
        assert MAX < stream.pulled <= MAX + stream.chunk


async def test_a_body_that_stalls_times_out(autojump_clock):
    async with open_rig("webhook") as rig:
        rig.use(Echo())

        async def override(seen):
            if seen.event == "bad":
                return httpx.Response(200, headers=[("content-type", "text/plain")], stream=Endless(10, stall=True))
            return None

        rig.app.override = override
        c = await rig.connect()
        await c.send_json({"type": "event", "event": "bad", "ackId": 1, "dataType": "text", "data": "x"})
        ack = await c.receive_json(timeout=60)
        assert ack["error"]["name"] == "Timeout"
        assert rig.webhook.statistics()["counters"]["failed_timeout"] == 1


async def test_redirects_are_not_followed():
    async with open_rig("webhook") as rig:
        rig.use(Echo())

        async def override(seen):
            if seen.event == "bad":
                return answer(307, b"", [("location", "http://upstream.test/hubs/up/events/good")])
            return None

        rig.app.override = override
        c = await rig.connect()
        await c.send_json({"type": "event", "event": "bad", "ackId": 1, "dataType": "text", "data": "x"})
        assert "not followed" in (await c.receive_json())["error"]["message"]
        assert rig.app.events("good") == []


async def test_non_base64_state_is_kept_opaque_with_a_warning(caplog):
    async with open_rig("webhook") as rig:
        rig.use(Echo())

        async def override(seen):
            if seen.event == "set":
                return answer(204, b"", [("ce-connectionState", "plain state, not base64!")])
            return None

        rig.app.override = override
        c = await rig.connect()
        await c.send_json({"type": "event", "event": "set", "ackId": 1, "dataType": "text", "data": ""})
        assert (await c.receive_json())["success"] is True
        await c.send_json({"type": "event", "event": "next", "ackId": 2, "dataType": "text", "data": "n"})
        await c.receive_json()
        assert rig.app.events("next")[0].header("ce-connectionState") == "plain state, not base64!"
        assert any("not base64" in r.getMessage() for r in caplog.records)


async def test_empty_state_header_clears_the_state():
    async with open_rig("webhook") as rig:
        rig.use(Echo())

        async def override(seen):
            if seen.event == "set":
                return answer(200, b"", [("ce-connectionState", "YQ==")])
            if seen.event == "clear":
                return answer(200, b"", [("ce-connectionState", "")])
            return None

        rig.app.override = override
        c = await rig.connect()
        for i, event in enumerate(("set", "probe1", "clear", "probe2"), 1):
            await c.send_json({"type": "event", "event": event, "ackId": i, "dataType": "text", "data": "p"})
            while (await c.receive_json())["type"] != "ack":
                pass
        assert rig.app.events("probe1")[0].header("ce-connectionState") == "YQ=="
        assert rig.app.events("probe2")[0].header("ce-connectionState") is None


async def test_empty_200_is_no_reply():
    async with open_rig("webhook") as rig:
        rig.use(Echo())

        async def override(seen):  # express's bare res.success()
            return answer(200, b"", [("content-type", "application/octet-stream")]) if seen.event == "e" else None

        rig.app.override = override
        c = await rig.connect()
        await c.send_json({"type": "event", "event": "e", "ackId": 1, "dataType": "text", "data": "x"})
        assert await c.receive_json() == {"type": "ack", "ackId": 1, "success": True}


async def test_reply_media_types_map_to_data_types():
    async with open_rig("webhook") as rig:
        rig.use(Echo())
        answers = {
            "t": answer(200, "ü".encode("latin-1"), [("content-type", "TEXT/PLAIN; charset=ISO-8859-1")]),
            "j": answer(200, b'{"k": [1]}', [("content-type", "application/json; charset=utf-8")]),
            "b": answer(200, b"\x00\x01", []),  # no Content-Type: binary
            "p": answer(200, b"\n\x01x", [("content-type", "application/x-protobuf")]),
        }

        async def override(seen):
            return answers.get(seen.event)

        rig.app.override = override
        c = await rig.connect()
        got = []
        for i, event in enumerate("tjbp", 1):
            await c.send_json({"type": "event", "event": event, "ackId": i, "dataType": "text", "data": ""})
            msg = await c.receive_json()
            got.append((msg["dataType"], msg["data"]))
            await c.receive_json()
        assert got == [("text", "ü"), ("json", {"k": [1]}), ("binary", "AAE="), ("protobuf", "CgF4")]


BAD_CONNECT_ANSWERS = [
    ("malformed json", answer(200, b'{"userId": ', [("content-type", "application/json")]), "not valid JSON"),
    ("array", answer(200, b"[]", [("content-type", "application/json")]), "must be a JSON object"),
    ("userId number", answer(200, b'{"userId": 5}', []), "userId must be a string"),
    # A user id no ce-userId header could carry: every later event would fail on it.
    ("userId with a line break", answer(200, b'{"userId": "a\\r\\nX-Inj: 1"}', []), "control characters"),
    ("groups string", answer(200, b'{"groups": "g"}', []), "groups must be a list of strings"),
    ("bad group", answer(200, b'{"groups": [" "]}', []), "invalid group"),
    ("roles numbers", answer(200, b'{"roles": [1]}', []), "roles must be a list of strings"),
    ("too many groups", answer(200, json.dumps({"groups": [f"g{i}" for i in range(spec.MAX_CONNECT_GROUPS + 1)]}).encode(), []),
     "at most"),
    ("subprotocol not offered", answer(200, b'{"subprotocol": "mqtt"}', []), "did not offer"),
    ("html", answer(200, b"<html/>", [("content-type", "text/html")]), "expected application/json"),
    ("huge", answer(200, b" " * (MAX + 1), [("content-type", "application/json")]), "limit"),
    ("redirect", answer(301, b"", [("location", "http://x/")]), "redirect"),
    ("server error", answer(502, b"bad gateway"), "answered 502: bad gateway"),
    ("two states", answer(204, b"", [("ce-connectionState", "YQ=="), ("ce-connectionState", "Yg==")]),
     "ce-connectionState headers"),
    ("state with control characters", answer(204, b"", [("ce-connectionState", "a\x7fb")]), "control characters"),
]


@pytest.mark.parametrize("name, bad, text", BAD_CONNECT_ANSWERS, ids=[c[0] for c in BAD_CONNECT_ANSWERS])
async def test_bad_connect_answer_is_500(name, bad, text, caplog):
    async with open_rig("webhook") as rig:
        broken = True

        async def override(seen):
            return bad if seen.event == "connect" and broken else None

        rig.app.override = override
        with pytest.raises(ConnectionRejected) as info:
            await connect_in_process(rig.fab, HUB)
        body = json.loads(info.value.body)
        assert info.value.status == 500 and body["code"] == "ConnectHandlerFailed"
        assert text in body["message"], body
        assert any(text in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
        broken = False
        assert (await rig.connect()).connection_id  # nothing stuck


async def test_connect_4xx_passes_through_with_the_handlers_text():
    async with open_rig("webhook") as rig:
        async def override(seen):
            return answer(418, b"I'm a teapot, not your handler") if seen.event == "connect" else None

        rig.app.override = override
        with pytest.raises(ConnectionRejected) as info:
            await connect_in_process(rig.fab, HUB)
        assert info.value.status == 418
        assert json.loads(info.value.body) == {"code": "ConnectRejected", "message": "I'm a teapot, not your handler"}


async def test_connect_empty_strings_mean_absent_and_state_without_body():
    async with open_rig("webhook") as rig:
        replies = iter([
            answer(200, b'{"userId": "", "subprotocol": "", "groups": [], "roles": []}',
                   [("content-type", "application/json")]),
            answer(200, b"", [("ce-connectionState", "eyJrIjoidiJ9")]),
        ])

        async def override(seen):
            return next(replies) if seen.event == "connect" else None

        rig.app.override = override
        c = await rig.connect(user_id="from-token")
        assert c.user_id == "from-token" and c.subprotocol == "json.webpubsub.azure.v1"
        c2 = await rig.connect()
        await c2.aclose()
        (disconnected,) = await rig.app.wait_for("disconnected")
        assert disconnected.header("ce-connectionState") == "eyJrIjoidiJ9"


async def test_a_validation_that_hangs_is_named_in_the_timeout(autojump_clock):
    # A hostile-upstream run found the timeout naming the connect URL when it was the
    # abuse-protection OPTIONS that never answered.
    async with open_rig("webhook") as rig:
        async def override(seen):
            if seen.method == "OPTIONS":
                await trio.sleep_forever()
            return None

        rig.app.override = override
        with pytest.raises(ConnectionRejected) as info:
            await connect_in_process(rig.fab, HUB)
        message = json.loads(info.value.body)["message"]
        assert info.value.status == 500 and "abuse-protection validation" in message, message
        assert "did not answer within" in message
