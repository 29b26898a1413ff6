"""Metadata, invocations and group presence through both kinds of handler: every scenario runs
in-process and behind the webhook (``rig``), and the webhook's own wire is checked on its own
(headers out, headers back, error names, the presence opt-in)."""

from __future__ import annotations

import json

import pytest
import trio

from fabric.config import SYSTEM_EVENTS, EventHandlerConfig
from fabric.core.events import EventHandler, UserEventError, UserEventResponse
from fabric.core.payload import Payload
from transport.http import Response

from .conftest import open_rig
from .support import URL_TEMPLATE, PresenceHandlerConfig

ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")


class Features(EventHandler):
    """Replies with the request's metadata echoed plus ``reply: yes``; ``block`` waits until
    cancelled; ``nope`` refuses; ``empty`` answers nothing but metadata; ``nothing`` nothing."""

    def __init__(self) -> None:
        self.requests = []
        self.presence = []
        self.blocked = trio.Event()
        self.cancelled = 0

    async def handle_user_event(self, request):
        self.requests.append(request)
        if request.event == "block":
            self.blocked.set()
            try:
                await trio.sleep_forever()
            finally:
                self.cancelled += 1
        if request.event == "nope":
            raise UserEventError("Nope", "the handler says no")
        if request.event == "empty":
            return UserEventResponse(None, metadata={"only": "metadata"})
        if request.event == "nothing":
            return None
        return UserEventResponse(Payload.text("re:" + request.payload.body.decode()),
                                 metadata={**request.metadata, "Reply": "yes"})

    async def on_group_joined(self, context, group):
        self.presence.append(("joined", context.connection_id, group))

    async def on_group_left(self, context, group):
        self.presence.append(("left", context.connection_id, group))


async def test_event_metadata_reaches_the_handler_and_the_reply_carries_its_own(rig):
    handler = Features()
    rig.use(handler)
    c = await rig.connect()
    await c.send_json({"type": "event", "event": "e", "ackId": 1, "dataType": "text", "data": "x",
                       "metadata": {"Trace": "t-1", "tenant": "contoso"}})
    assert await c.receive_json() == {"type": "message", "from": "server", "dataType": "text", "data": "re:x",
                                      "metadata": {"trace": "t-1", "tenant": "contoso", "reply": "yes"}}
    assert await c.receive_json() == {"type": "ack", "ackId": 1, "success": True}
    assert dict(handler.requests[-1].metadata) == {"trace": "t-1", "tenant": "contoso"}
    assert handler.requests[-1].invocation_id is None
    # metadata alone in the answer: an empty text message carrying it (decision metadata.reply)
    await c.send_json({"type": "event", "event": "empty", "ackId": 2, "data": 1})
    assert await c.receive_json() == {"type": "message", "from": "server", "dataType": "text", "data": "",
                                      "metadata": {"only": "metadata"}}
    assert (await c.receive_json())["success"] is True
    # no metadata on the request: the handler sees an empty map
    await c.send_json({"type": "event", "event": "nothing", "ackId": 3, "data": 1})
    assert await c.receive_json() == {"type": "ack", "ackId": 3, "success": True}
    assert dict(handler.requests[-1].metadata) == {}


async def test_invocations_answer_with_data_and_metadata(rig):
    handler = Features()
    rig.use(handler)
    c = await rig.connect()
    await c.send_json({"type": "invoke", "invocationId": "1", "target": "event", "event": "e",
                       "dataType": "text", "data": "hi", "metadata": {"k": "v"}})
    assert await c.receive_json() == {"type": "invokeResponse", "invocationId": "1", "success": True,
                                      "dataType": "text", "data": "re:hi", "metadata": {"k": "v", "reply": "yes"}}
    if rig.mode == "inprocess":
        assert handler.requests[-1].invocation_id == "1"  # (the webhook has no invocation header)
    await c.send_json({"type": "invoke", "invocationId": "2", "event": "nothing"})
    assert await c.receive_json() == {"type": "invokeResponse", "invocationId": "2", "success": True}
    assert handler.requests[-1].payload == Payload.text("")  # decision invoke.no-payload
    await c.send_json({"type": "invoke", "invocationId": "3", "event": "nope"})
    error = (await c.receive_json())["error"]
    # in-process: the handler's own name; a webhook answering 500: InvocationFailed
    assert error["name"] == ("Nope" if rig.mode == "inprocess" else "InvocationFailed")
    assert "the handler says no" in error["message"]


async def test_a_cancelled_invocation_stops_its_handler_and_frees_the_slot(rig):
    handler = Features()
    rig.use(handler)
    c = await rig.connect()
    await c.send_json({"type": "invoke", "invocationId": "b", "event": "block"})
    with trio.fail_after(5):
        await handler.blocked.wait()
    await c.send_json({"type": "cancelInvocation", "invocationId": "b"})
    with trio.fail_after(5):
        while handler.cancelled == 0:
            await trio.sleep(0.01)
    await c.send_json({"type": "cancelInvocation", "invocationId": "b"})  # again: ignored
    await c.send_json({"type": "invoke", "invocationId": "b", "event": "e", "dataType": "text", "data": "2"})
    # the next frame answers the second invoke: the cancelled one was never answered
    assert (await c.receive_json())["data"] == "re:2"
    counters = rig.fab.hub(rig.hub).statistics()["counters"]
    assert counters["invocations_cancelled"] == 1 and counters["invocation_cancels_ignored"] == 1


async def test_an_invocation_that_outlives_the_timeout_is_answered_timeout(autojump_clock):
    async with open_rig("webhook", timeout=2.0) as rig:
        handler = Features()
        rig.use(handler)
        c = await rig.connect()
        await c.send_json({"type": "invoke", "invocationId": "t", "event": "block"})
        response = await c.receive_json()
        assert response["success"] is False and response["error"]["name"] == "Timeout"


async def test_group_presence_reaches_a_handler_that_opts_in(autojump_clock):
    handlers = (PresenceHandlerConfig(URL_TEMPLATE, "*", SYSTEM_EVENTS),)
    for mode in ("inprocess", "webhook"):
        async with open_rig(mode, handlers=handlers) as rig:
            handler = Features()
            rig.use(handler)
            c = await rig.connect(roles=ROLES, groups=("initial",))
            await c.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
            await c.receive_json()
            await c.send_json({"type": "joinGroup", "group": "g", "ackId": 2})  # already in: no event
            await c.receive_json()
            await rig.fab.hub(rig.hub).add_connection_to_group("rest", c.connection_id)
            await c.send_json({"type": "leaveGroup", "group": "g", "ackId": 3})
            await c.receive_json()
            await c.aclose()
            with trio.fail_after(5):
                while len(handler.presence) < 6:
                    await trio.sleep(0.05)
            await trio.sleep(0.5)
            cid = c.connection_id
            assert handler.presence[:4] == [("joined", cid, "initial"), ("joined", cid, "g"),
                                            ("joined", cid, "rest"), ("left", cid, "g")], mode
            # leaving every group when the connection ends (decision upstream.group-presence)
            assert sorted(handler.presence[4:]) == [("left", cid, "initial"), ("left", cid, "rest")], mode
            if mode == "webhook":
                sent = rig.app.events("joined")
                assert sent[0].header("ce-type") == "azure.webpubsub.gp.joined"
                assert sent[0].header("content-type") == "application/json; charset=utf-8"
                assert json.loads(sent[0].body) == {"group": "initial"}
                assert rig.app.events("left")[0].header("ce-type") == "azure.webpubsub.gp.left"


async def test_group_presence_is_opt_in_and_filtered(autojump_clock):
    # a handler configured the old way gets no presence events at all
    async with open_rig("webhook") as rig:
        rig.use(Features())
        c = await rig.connect(roles=ROLES)
        await c.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
        await c.receive_json()
        await trio.sleep(1)
        assert rig.app.events("joined") == [] and not rig.fab.webhook(rig.hub).handles_system_event("joined")
    # group_filters: only matching groups; only the events named
    handlers = (PresenceHandlerConfig(URL_TEMPLATE, "*", SYSTEM_EVENTS, group_presence_events=("joined",),
                                      group_filters=("chat.*",)),)
    async with open_rig("webhook", handlers=handlers) as rig:
        rig.use(Features())
        c = await rig.connect(roles=ROLES)
        for i, group in enumerate(("chat.a", "other", "chat.a.b", "chat.b"), 1):
            await c.send_json({"type": "joinGroup", "group": group, "ackId": i})
            await c.receive_json()
        await c.send_json({"type": "leaveGroup", "group": "chat.a", "ackId": 9})
        await c.receive_json()
        await trio.sleep(1)
        assert [json.loads(s.body)["group"] for s in rig.app.events("joined")] == ["chat.a", "chat.b"]
        assert rig.app.events("left") == []


async def test_the_webhook_sends_metadata_headers_and_reads_them_back(webhook_rig, autojump_clock):
    rig = webhook_rig
    rig.use(Features())
    c = await rig.connect()
    await c.send_json({"type": "event", "event": "e", "ackId": 1, "dataType": "text", "data": "x",
                       "metadata": {"Trace": "t", "b": "caf\u00e9"}})
    await c.receive_json()
    await c.receive_json()
    method, url, raw, body = rig.transport.raw[-1]
    names = [k.decode() for k, _ in raw]
    # one header per entry, lower-case keys, right after the CloudEvents headers
    at = names.index("ce-awpsversion")
    assert names[at + 1:at + 3] == ["x-webpubsub-metadata-trace", "x-webpubsub-metadata-b"]
    # decision metadata.header-encoding: latin-1 when the value fits (what Node reads), else UTF-8
    assert dict(raw)[b"x-webpubsub-metadata-b"] == "caf\u00e9".encode("latin-1")
    # connected/disconnected never carry metadata
    assert not any(k.startswith(b"x-webpubsub-metadata") for _, _, hs, _ in rig.transport.raw[:-1] for k, _ in hs)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # repeated header: the last one wins; a comma list: its last part, trimmed
        (Response(200, b"ok", (("content-type", "text/plain"), ("X-WebPubSub-Metadata-A", "1"),
                               ("x-webpubsub-metadata-a", "x, 2 "))), {"a": "2"}),
        # an empty key is not a key
        (Response(204, b"", (("X-WebPubSub-Metadata-", "v"), ("X-WEBPUBSUB-METADATA-Key", "v"))), {"key": "v"}),
    ],
)
async def test_answer_metadata_headers_fold_like_rest(webhook_rig, answer, expected):
    rig = webhook_rig

    async def override(seen):
        return answer if seen.method == "POST" and seen.event == "e" else None

    rig.app.override = override
    rig.use(Features())
    c = await rig.connect()
    await c.send_json({"type": "event", "event": "e", "ackId": 1, "data": 1})
    message = await c.receive_json()
    assert message["type"] == "message" and message["metadata"] == expected


async def test_invalid_answer_metadata_fails_the_event(webhook_rig):
    rig = webhook_rig

    async def override(seen):
        if seen.method == "POST" and seen.event in ("e", "i"):
            return Response(200, b"x", (("content-type", "text/plain"), ("X-WebPubSub-Metadata-a b", "v")))
        return None

    rig.app.override = override
    rig.use(Features())
    c = await rig.connect()
    await c.send_json({"type": "event", "event": "e", "ackId": 1, "data": 1})
    ack = await c.receive_json()
    assert ack["success"] is False and ack["error"]["name"] == "InternalServerError"
    assert "metadata" in ack["error"]["message"]
    await c.send_json({"type": "invoke", "invocationId": "1", "event": "i"})
    error = (await c.receive_json())["error"]
    assert error["name"] == "InternalServerError" and "metadata" in error["message"]


@pytest.mark.parametrize(("status", "name"), [(400, "InvocationFailed"), (503, "InvocationFailed"),
                                              (302, "InternalServerError")])
async def test_webhook_failures_name_the_invocation_error(webhook_rig, status, name):
    rig = webhook_rig

    async def override(seen):
        if seen.method == "POST" and seen.event == "i":
            return Response(status, b"handler text", (("content-type", "text/plain"),))
        return None

    rig.app.override = override
    rig.use(Features())
    c = await rig.connect()
    await c.send_json({"type": "invoke", "invocationId": "1", "event": "i", "dataType": "json", "data": [1]})
    response = await c.receive_json()
    assert response == {"type": "invokeResponse", "invocationId": "1", "success": False,
                        "error": {"name": name, "message": response["error"]["message"]}}
    if status != 302:
        assert "handler text" in response["error"]["message"]


async def test_no_handler_for_an_invocation_is_not_found():
    class OnlyE(Features):
        def handles_user_event(self, event):
            return event == "e"

    async with open_rig("inprocess") as rig:
        rig.use(OnlyE())
        c = await rig.connect()
        await c.send_json({"type": "invoke", "invocationId": "1", "event": "other"})
        assert await c.receive_json() == {"type": "invokeResponse", "invocationId": "1", "success": False,
                                          "error": {"name": "NotFound", "message": "no event handler for event "
                                                    "'other' in hub 'up'"}}


async def test_webhook_routes_invocations_by_user_event_pattern():
    handlers = (EventHandlerConfig(URL_TEMPLATE, "e", SYSTEM_EVENTS),)
    async with open_rig("webhook", handlers=handlers) as rig:
        rig.use(Features())
        c = await rig.connect()
        await c.send_json({"type": "invoke", "invocationId": "1", "event": "other"})
        response = await c.receive_json()
        assert response["success"] is False and response["error"]["name"] == "NotFound"
        await c.send_json({"type": "invoke", "invocationId": "2", "event": "e", "dataType": "text", "data": "x"})
        assert (await c.receive_json())["data"] == "re:x"
