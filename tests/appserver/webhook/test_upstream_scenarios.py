"""The same scenarios against an in-process handler and against the webhook handler.

Each test installs one ``EventHandler``; ``rig`` runs it in process, or behind the upstream
webhook (``CloudEventsApp`` turns the CloudEvents back into calls on the same handler). The
outcomes the client sees must match; where the two differ by design (an in-process
``UserEventError`` keeps its name, a webhook's non-2xx is ``InternalServerError``) the test
says so.
"""

from __future__ import annotations

import json

import pytest
import trio

from fabric.core.events import (
    ConnectRejected,
    ConnectResponse,
    EventHandler,
    UserEventError,
    UserEventResponse,
)
from fabric.core.payload import DataType, Payload
from fabric.testing import ConnectionClosed, ConnectionRejected, connect_in_process
from specs.errors import CLOSE_RULES, CloseSituation

from .conftest import HUB
from .support import state_of

ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")


class Recorder(EventHandler):
    """Echoes user events, records system events; behaviour switched by event name."""

    def __init__(self, *, connect=None) -> None:
        self.connect_answer = connect
        self.log: list[tuple] = []
        self.changed = trio.Event()
        self.slow_event = trio.Event()  # set to release a "slow" event

    def _note(self, *item) -> None:
        self.log.append(item)
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, kind: str, count: int = 1) -> list[tuple]:
        while len([x for x in self.log if x[0] == kind]) < count:
            await self.changed.wait()
        return [x for x in self.log if x[0] == kind]

    async def on_connect(self, request):
        self._note("connect", request.connection_id, request.user_id, dict(request.query), request.subprotocols)
        answer = self.connect_answer
        if callable(answer):
            return await answer(request)
        return answer

    async def on_connected(self, ctx):
        self._note("connected", ctx.connection_id, ctx.user_id, ctx.connection_state)

    async def on_disconnected(self, ctx, reason):
        self._note("disconnected", ctx.connection_id, ctx.user_id, ctx.connection_state, reason)

    async def on_user_event(self, ctx, event, payload):
        self._note("event", event, ctx.connection_id, ctx.user_id, ctx.connection_state, payload)
        if event == "fail":
            raise UserEventError("CustomFailure", "asked to fail")
        if event == "slow":
            await self.slow_event.wait()
            return Payload.text("finally")
        if event == "silent":
            return None
        if event == "setstate":
            return UserEventResponse(Payload.text("state set"), connection_state=payload.body.decode())
        if event == "clearstate":
            return UserEventResponse(None, connection_state=None)
        if event == "state":
            return Payload.text(ctx.connection_state or "<none>")
        return payload  # echo, with the same dataType


async def test_connect_sets_user_groups_roles_and_the_client_sees_them(rig):
    handler = Recorder(connect=ConnectResponse(user_id="from-handler", groups=("auto",), roles=ROLES))
    rig.use(handler)
    c = await rig.connect(query={"room": "42"})
    assert c.user_id == "from-handler"
    (connect,) = await handler.wait_for("connect")
    assert connect[1] == c.connection_id and connect[3] == {"room": ["42"]}
    assert connect[4] == ("json.webpubsub.azure.v1",)
    assert await rig.fab.hub(HUB).group_exists("auto")
    assert await rig.fab.hub(HUB).user_exists("from-handler")
    # the roles from the handler let the token-less-roles client join and send
    await c.send_json({"type": "joinGroup", "group": "other", "ackId": 1})
    assert await c.receive_json() == {"type": "ack", "ackId": 1, "success": True}
    await rig.fab.hub(HUB).send_to_group("auto", "hello auto")
    msg = await c.receive_json()
    assert msg["group"] == "auto" and msg["data"] == "hello auto"


async def test_connect_without_answer_keeps_the_token_identity(rig):
    rig.use(Recorder(connect=None))
    c = await rig.connect(user_id="token-user")
    assert c.user_id == "token-user"


@pytest.mark.parametrize("status", [401, 403, 429])
async def test_connect_rejection_status_reaches_the_client(rig, status):
    async def deny(request):
        raise ConnectRejected(status, "go away, " + request.connection_id[:4])

    rig.use(Recorder(connect=deny))
    with pytest.raises(ConnectionRejected) as info:
        await connect_in_process(rig.fab, HUB)
    assert info.value.status == status
    body = json.loads(info.value.body)
    assert body["code"] == "ConnectRejected" and "go away" in body["message"]


async def test_connect_handler_crash_is_500(rig):
    async def boom(request):
        raise RuntimeError("bug in the app")

    rig.use(Recorder(connect=boom))
    with pytest.raises(ConnectionRejected) as info:
        await connect_in_process(rig.fab, HUB)
    assert info.value.status == 500
    assert json.loads(info.value.body)["code"] == "ConnectHandlerFailed"


async def test_slow_connect_is_rejected_with_500_after_the_timeout(rig, autojump_clock):
    async def hang(request):
        await trio.sleep_forever()

    rig.use(Recorder(connect=hang))
    start = trio.current_time()
    with pytest.raises(ConnectionRejected) as info:
        await connect_in_process(rig.fab, HUB)
    elapsed = trio.current_time() - start
    timeout = rig.fab.config.server.upstream_timeout
    assert info.value.status == 500
    assert timeout <= elapsed <= timeout + 1
    assert "within" in json.loads(info.value.body)["message"]


async def test_connect_choosing_a_subprotocol_not_offered_is_500(rig):
    rig.use(Recorder(connect=ConnectResponse(subprotocol="json.reliable.webpubsub.azure.v1")))
    with pytest.raises(ConnectionRejected) as info:
        await connect_in_process(rig.fab, HUB)
    assert info.value.status == 500
    assert "did not offer" in json.loads(info.value.body)["message"]


async def test_connect_choosing_an_offered_subprotocol(rig):
    rig.use(Recorder(connect=ConnectResponse(subprotocol="json.webpubsub.azure.v1", user_id="u")))
    c = await rig.connect()
    assert c.subprotocol == "json.webpubsub.azure.v1" and c.user_id == "u"


@pytest.mark.parametrize("data_type, data", [
    ("text", "hello"), ("json", {"a": [1, 2, {"b": None}]}), ("json", "a string"), ("binary", "AAECAwQ="),
    ("protobuf", "CgR0ZXN0"),
])
async def test_user_event_reply_then_ack_for_every_data_type(rig, data_type, data):
    rig.use(Recorder())
    c = await rig.connect()
    await c.send_json({"type": "event", "event": "echo", "ackId": 7, "dataType": data_type, "data": data})
    assert await c.receive_json() == {"type": "message", "from": "server", "dataType": data_type, "data": data}
    assert await c.receive_json() == {"type": "ack", "ackId": 7, "success": True}


async def test_user_event_context_has_user_and_no_reply_still_acks(rig):
    handler = Recorder()
    rig.use(handler)
    c = await rig.connect(user_id="ann")
    await c.send_json({"type": "event", "event": "silent", "ackId": 1, "dataType": "text", "data": "x"})
    assert await c.receive_json() == {"type": "ack", "ackId": 1, "success": True}
    (event,) = await handler.wait_for("event")
    assert event[1:4] == ("silent", c.connection_id, "ann")


async def test_user_event_failure_with_ack_id_is_an_ack_error_and_the_connection_stays(rig):
    rig.use(Recorder())
    c = await rig.connect()
    await c.send_json({"type": "event", "event": "fail", "ackId": 3, "dataType": "text", "data": "x"})
    ack = await c.receive_json()
    assert ack["ackId"] == 3 and ack["success"] is False
    if rig.mode == "inprocess":
        assert ack["error"] == {"name": "CustomFailure", "message": "asked to fail"}
    else:  # non-2xx from the webhook: InternalServerError naming the status and the app's text
        assert ack["error"]["name"] == "InternalServerError"
        assert "500" in ack["error"]["message"] and "asked to fail" in ack["error"]["message"]
    await c.send_json({"type": "ping"})
    assert await c.receive_json() == {"type": "pong"}


async def test_failed_ack_id_is_not_remembered(rig):
    rig.use(Recorder())
    c = await rig.connect()
    await c.send_json({"type": "event", "event": "fail", "ackId": 9, "dataType": "text", "data": "x"})
    assert (await c.receive_json())["success"] is False
    await c.send_json({"type": "event", "event": "echo", "ackId": 9, "dataType": "text", "data": "again"})
    assert (await c.receive_json())["data"] == "again"
    assert await c.receive_json() == {"type": "ack", "ackId": 9, "success": True}
    await c.send_json({"type": "event", "event": "echo", "ackId": 9, "dataType": "text", "data": "dup"})
    assert (await c.receive_json())["error"]["name"] == "Duplicate"


async def test_user_event_failure_without_ack_id_closes_with_disconnected(rig):
    rig.use(Recorder())
    c = await rig.connect()
    await c.send_json({"type": "event", "event": "fail", "dataType": "text", "data": "x"})
    msg = await c.receive_json()
    assert msg["type"] == "system" and msg["event"] == "disconnected"
    assert "fail" in msg["message"]
    with pytest.raises(ConnectionClosed) as info:
        await c.receive()
    assert info.value.code == CLOSE_RULES[CloseSituation.EVENT_HANDLER_FAILED].code == 1011


async def test_slow_user_event_times_out_with_a_timeout_ack(rig, autojump_clock):
    handler = Recorder()
    rig.use(handler)
    c = await rig.connect()
    await c.send_json({"type": "event", "event": "slow", "ackId": 1, "dataType": "text", "data": "x"})
    ack = await c.receive_json(timeout=60)
    assert ack["ackId"] == 1 and ack["error"]["name"] == "Timeout"
    await c.send_json({"type": "event", "event": "echo", "ackId": 2, "dataType": "text", "data": "alive"})
    assert (await c.receive_json())["data"] == "alive"
    assert (await c.receive_json())["success"] is True


async def test_connection_state_round_trip(rig):
    first = state_of({"step": 1})
    handler = Recorder(connect=ConnectResponse(connection_state=first))
    rig.use(handler)
    c = await rig.connect()
    await c.send_json({"type": "event", "event": "state", "ackId": 1, "dataType": "text", "data": ""})
    assert (await c.receive_json())["data"] == first
    await c.receive_json()
    second = state_of({"step": 2, "who": "ünïcode"})
    await c.send_json({"type": "event", "event": "setstate", "ackId": 2, "dataType": "text", "data": second})
    assert (await c.receive_json())["data"] == "state set"
    await c.receive_json()
    await c.send_json({"type": "event", "event": "state", "ackId": 3, "dataType": "text", "data": ""})
    assert (await c.receive_json())["data"] == second
    await c.receive_json()
    await c.send_json({"type": "event", "event": "clearstate", "ackId": 4, "dataType": "text", "data": ""})
    assert await c.receive_json() == {"type": "ack", "ackId": 4, "success": True}
    await c.send_json({"type": "event", "event": "state", "ackId": 5, "dataType": "text", "data": ""})
    assert (await c.receive_json())["data"] == "<none>"
    await c.receive_json()
    await c.send_json({"type": "event", "event": "setstate", "ackId": 6, "dataType": "text", "data": "last"})
    await c.receive_json()
    await c.receive_json()
    await c.aclose()
    (disconnected,) = await handler.wait_for("disconnected")
    assert disconnected[3] == "last"


async def test_connected_and_disconnected_fire_once_each_with_ids(rig, autojump_clock):
    handler = Recorder(connect=ConnectResponse(user_id="dora"))
    rig.use(handler)
    c = await rig.connect()
    with trio.fail_after(5):
        (connected,) = await handler.wait_for("connected")
    assert connected[1:3] == (c.connection_id, "dora")
    await c.aclose()
    with trio.fail_after(5):
        (disconnected,) = await handler.wait_for("disconnected")
    assert disconnected[1:3] == (c.connection_id, "dora")
    await trio.sleep(30)  # virtual time: nothing else arrives later
    assert [x[0] for x in handler.log] == ["connect", "connected", "disconnected"]


async def test_a_slow_connected_handler_never_delays_messages(rig, autojump_clock):
    class SlowConnected(Recorder):
        async def on_connected(self, ctx):
            await trio.sleep(3600)

    rig.use(SlowConnected())
    c = await rig.connect()
    start = trio.current_time()
    await c.send_json({"type": "event", "event": "echo", "ackId": 1, "dataType": "text", "data": "quick"})
    assert (await c.receive_json())["data"] == "quick"
    assert (await c.receive_json())["success"] is True
    assert trio.current_time() - start < 1


async def test_simple_client_message_round_trip(rig):
    handler = Recorder()
    rig.use(handler)
    c = await rig.connect(subprotocol=None)
    await c.send("plain text")
    assert await c.receive() == "plain text"
    await c.send(b"\x00\x01\xff")
    assert await c.receive() == b"\x00\x01\xff"
    events = await handler.wait_for("event", 2)
    assert events[0][1] == "message" and events[0][5] == Payload(DataType.TEXT, b"plain text")
    assert events[1][5] == Payload(DataType.BINARY, b"\x00\x01\xff")


async def test_simple_client_handler_failure_closes_1011(rig):
    class Failing(Recorder):
        async def on_user_event(self, ctx, event, payload):
            raise UserEventError("X", "no")

    rig.use(Failing())
    c = await rig.connect(subprotocol=None)
    await c.send("hi")
    assert await c.wait_closed() == 1011


def _ld(field: int, body: bytes) -> bytes:
    """A protobuf length-delimited field (lengths here stay below 128)."""
    assert len(body) < 128
    return bytes([field << 3 | 2, len(body)]) + body


@pytest.mark.parametrize("data_field, data_type, value", [(1, DataType.TEXT, b"proto text"),
                                                          (2, DataType.BINARY, b"\x00\xffbin")])
async def test_protobuf_client_event_reply_then_ack(rig, data_field, data_type, value):
    """A protobuf-subprotocol client's event reaches the same handler; reply and ack come back
    encoded for it (frames built by hand from the .proto field numbers)."""
    from fabric.webpubsub import codec_protobuf

    handler = Recorder()
    rig.use(handler)
    client = await connect_in_process(rig.fab, HUB, subprotocol="protobuf.webpubsub.azure.v1")
    rig.clients.append(client)
    await client.receive()  # system/connected
    event = _ld(1, b"echo") + _ld(2, _ld(data_field, value)) + bytes([3 << 3, 5])  # ack_id = 5
    await client.send(_ld(5, event))  # UpstreamMessage.event_message = 5
    assert await client.receive() == codec_protobuf.encode_server_message(Payload(data_type, value))
    assert await client.receive() == codec_protobuf.encode_ack(5, True)
    (seen,) = await handler.wait_for("event")
    assert seen[1] == "echo" and seen[5] == Payload(data_type, value)
