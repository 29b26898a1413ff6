"""Invocations end to end through the in-process client (specs.invocation): the answers, the
error names, cancellation, the bound, transport loss, bad input, and the protobuf wire."""

from __future__ import annotations

import pytest
import trio

import fabric
from fabric import EventHandler, Payload, UserEventError, UserEventResponse
from fabric.testing import connect_in_process
from specs.invocation import MAX_INVOCATIONS_PER_CONNECTION
from tests.fabric_support import quick_config

from .client_support import connect

PROTOBUF = "protobuf.webpubsub.azure.v1"


class Handler(EventHandler):
    def __init__(self) -> None:
        self.started: list[str] = []
        self.cancelled: list[str] = []
        self.release = trio.Event()

    async def handle_user_event(self, request):
        self.started.append(request.invocation_id)
        if request.event == "wait":
            try:
                await self.release.wait()
            except trio.Cancelled:
                self.cancelled.append(request.invocation_id)
                raise
            return Payload.text("released")
        if request.event == "boom":
            raise RuntimeError("bug")
        if request.event == "refuse":
            raise UserEventError("Refused", "not today")
        if request.event == "state":
            return UserEventResponse(Payload.json(b'{"ok":true}'), connection_state="c3RhdGU=")
        return request.payload


async def open_with(handler, **server):
    return fabric.open_fabric(quick_config(**server), access_key="test-key", handlers={"chat": handler})


async def test_answers_and_error_names(autojump_clock):
    handler = Handler()
    async with await open_with(handler, upstream_timeout=3.0) as fab:
        c = await connect(fab)
        await c.send_json({"type": "invoke", "invocationId": "a", "target": "event", "event": "echo",
                           "dataType": "binary", "data": "AAE="})
        assert await c.receive_json() == {"type": "invokeResponse", "invocationId": "a", "success": True,
                                          "dataType": "binary", "data": "AAE="}
        await c.send_json({"type": "invoke", "invocationId": "b", "event": "state"})
        assert await c.receive_json() == {"type": "invokeResponse", "invocationId": "b", "success": True,
                                          "dataType": "json", "data": {"ok": True}}
        member = fab.running_hubs()["chat"].connections[c.connection_id]
        assert member.connection_state == "c3RhdGU="  # an invocation's answer may set the state
        for invocation_id, event, name in (("c", "boom", "InvocationFailed"), ("d", "refuse", "Refused"),
                                           ("e", "wait", "Timeout")):
            await c.send_json({"type": "invoke", "invocationId": invocation_id, "event": event})
            response = await c.receive_json()
            assert response["invocationId"] == invocation_id and response["success"] is False
            assert response["error"]["name"] == name, response
        counters = fab.hub("chat").statistics()["counters"]
        assert counters["invocations"] == 5 and counters["invocation_failures"] == 3


async def test_without_a_handler_the_answer_is_not_found(fab):
    c = await connect(fab)
    await c.send_json({"type": "invoke", "invocationId": "x", "event": "e"})
    response = await c.receive_json()
    assert response["error"] == {"name": "NotFound", "message": "no event handler for event 'e' in hub 'chat'"}


async def test_invocations_run_beside_the_reader_and_cancel_frees_the_slot(autojump_clock):
    handler = Handler()
    async with await open_with(handler) as fab:
        c = await connect(fab)
        for i in range(MAX_INVOCATIONS_PER_CONNECTION):
            await c.send_json({"type": "invoke", "invocationId": f"w{i}", "event": "wait"})
        await c.send_json({"type": "invoke", "invocationId": "over", "event": "echo", "data": 1})
        response = await c.receive_json()  # the reader is free: the 17th is refused at once
        assert response["invocationId"] == "over" and response["error"]["name"] == "TooManyInvocations"
        await c.send_json({"type": "ping"})
        assert await c.receive_json() == {"type": "pong"}
        await c.send_json({"type": "cancelInvocation", "invocationId": "w3"})
        await c.send_json({"type": "cancelInvocation", "invocationId": "never"})
        await c.send_json({"type": "invoke", "invocationId": "w0", "event": "echo", "data": 1})  # running: ignored
        await c.send_json({"type": "invoke", "invocationId": "next", "event": "echo", "data": 2})
        assert await c.receive_json() == {"type": "invokeResponse", "invocationId": "next", "success": True,
                                          "dataType": "json", "data": 2}
        assert handler.cancelled == ["w3"]
        handler.release.set()
        answered = sorted([(await c.receive_json())["invocationId"] for _ in range(MAX_INVOCATIONS_PER_CONNECTION - 1)])
        assert answered == sorted(f"w{i}" for i in range(MAX_INVOCATIONS_PER_CONNECTION) if i != 3)
        await c.send_json({"type": "ping"})  # nothing more: not for w3, not a second answer for w0
        assert await c.receive_json() == {"type": "pong"}
        counters = fab.hub("chat").statistics()["counters"]
        assert counters["invocations_cancelled"] == 1 and counters["invocation_cancels_ignored"] == 1
        assert counters["invocations_duplicate"] == 1


async def test_the_end_of_the_transport_stops_every_invocation(autojump_clock):
    handler = Handler()
    async with await open_with(handler) as fab:
        for protocol in ("json.webpubsub.azure.v1", "json.reliable.webpubsub.azure.v1"):
            c = await connect(fab, subprotocol=protocol)
            for i in range(3):
                await c.send_json({"type": "invoke", "invocationId": f"{protocol}{i}", "event": "wait"})
            with trio.fail_after(5):
                while len(handler.started) < 3:
                    await trio.sleep(0.01)
            await c.stream.aclose()  # the socket dies: a reliable session detaches, others end
            with trio.fail_after(5):
                while len(handler.cancelled) < 3:
                    await trio.sleep(0.01)
            assert sorted(handler.cancelled) == [f"{protocol}{i}" for i in range(3)]
            handler.started.clear()
            handler.cancelled.clear()


@pytest.mark.parametrize(
    ("frame", "invocation_id", "message"),
    [
        ('{"type":"invoke","invocationId":"1","target":"method","event":"e"}', "1", "'target' must be 'event'"),
        ('{"type":"invoke","invocationId":"2"}', "2", "'event' is required"),
        ('{"type":"invoke","invocationId":"3","event":"e","dataType":"text","data":7}', "3", "must be a string"),
        ('{"type":"invoke","invocationId":"4","event":"e","metadata":{"a":"b","A":"c"}}', "4", "more than once"),
        ('{"type":"invoke","invocationId":"5","event":"e","stream":{"streamId":"s"}}', "5", "not supported"),
    ],
)
async def test_malformed_invocations_are_answered_bad_request(fab, frame, invocation_id, message):
    fab.set_handler("chat", Handler())
    c = await connect(fab)
    await c.send(frame)
    response = await c.receive_json()
    assert response["invocationId"] == invocation_id and response["error"]["name"] == "BadRequest"
    assert message in response["error"]["message"]
    await c.send_json({"type": "ping"})  # the connection stays open
    assert await c.receive_json() == {"type": "pong"}


async def test_an_invoke_without_an_answerable_id_closes_like_any_invalid_message(fab):
    fab.set_handler("chat", Handler())
    c = await connect(fab)
    await c.send('{"type":"invoke","invocationId":7,"event":"e"}')
    disconnected = await c.receive_json()
    assert disconnected["type"] == "system" and disconnected["event"] == "disconnected"
    assert await c.wait_closed() == 1007


async def test_protobuf_invocations(pb):
    handler = Handler()
    async with await open_with(handler) as fab:
        c = await connect_in_process(fab, "chat", subprotocol=PROTOBUF)
        pb.DownstreamMessage.FromString(await c.receive())
        U = pb.UpstreamMessage
        m = U.InvokeEventMessage(event="echo", invocation_id="p1", data=pb.MessageData(text_data="hi"))
        m.metadata["Trace"] = "t"
        await c.send(U(invoke_event_message=m).SerializeToString())
        r = pb.DownstreamMessage.FromString(await c.receive()).invoke_response_message
        assert (r.invocation_id, r.success, r.data.text_data) == ("p1", True, "hi")
        await c.send(U(invoke_event_message=U.InvokeEventMessage(event="wait", invocation_id="p2"))
                     .SerializeToString())
        with trio.fail_after(5):
            while "p2" not in handler.started:
                await trio.sleep(0.01)
        await c.send(U(cancel_invocation_message=U.CancelInvocationMessage(invocation_id="p2")).SerializeToString())
        with trio.fail_after(5):
            while "p2" not in handler.cancelled:
                await trio.sleep(0.01)
        await c.send(U(invoke_event_message=U.InvokeEventMessage(event="refuse", invocation_id="p3"))
                     .SerializeToString())
        r = pb.DownstreamMessage.FromString(await c.receive()).invoke_response_message
        assert (r.invocation_id, r.success, r.error.name, r.error.message) == ("p3", False, "Refused", "not today")


async def test_a_cancel_after_the_answer_is_ignored(fab):
    fab.set_handler("chat", Handler())
    c = await connect(fab)
    await c.send_json({"type": "invoke", "invocationId": "done", "event": "echo", "dataType": "text", "data": "x"})
    assert (await c.receive_json())["success"] is True
    await c.send_json({"type": "cancelInvocation", "invocationId": "done"})
    await c.send_json({"type": "ping"})
    assert await c.receive_json() == {"type": "pong"}  # nothing answers the late cancel
    assert fab.hub("chat").statistics()["counters"]["invocation_cancels_ignored"] == 1
