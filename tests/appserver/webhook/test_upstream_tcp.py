"""The webhook client over real loopback TCP: the bytes on the wire, connection reuse, a
handler app served by the project's own HTTP front, and a handler that is not listening."""

from __future__ import annotations

import json
import socket

import attrs
import pytest
import trio

import fabric
from fabric.config import SYSTEM_EVENTS, EventHandlerConfig
from fabric.core.events import ConnectResponse, EventHandler, UserEventResponse
from fabric.core.payload import Payload
from fabric.testing import ConnectionRejected, connect_in_process
from specs import upstream as spec
from transport.http import HttpLimits, serve_connection

from .conftest import connect
from .support import HUB, KEYS, CloudEventsApp, make_config, state_of


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@attrs.define
class Capture:
    """A raw HTTP/1.1 peer: records each request's bytes, answers from a script."""

    requests: list[bytes] = attrs.Factory(list)
    connections: int = 0
    arrived: trio.Event = attrs.Factory(trio.Event)

    async def wait_for(self, count: int) -> None:
        while len(self.requests) < count:
            self.arrived = trio.Event()
            await self.arrived.wait()

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream):
        self.connections += 1
        buffer = b""
        async with stream:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                while len(buffer) < length:
                    buffer += await stream.receive_some(65536)
                body, buffer = buffer[:length], buffer[length:]
                self.requests.append(head + b"\r\n\r\n" + body)
                self.arrived.set()
                if head.startswith(b"OPTIONS"):
                    await stream.send_all(b"HTTP/1.1 200 OK\r\nWebHook-Allowed-Origin: *\r\nContent-Length: 0\r\n\r\n")
                elif b"ce-eventName: connect\r\n" in head:
                    reply = b'{"userId":"wire-user"}'
                    await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
                                          b"ce-connectionState: " + state_of({"a": 1}).encode() + b"\r\n"
                                          b"Content-Length: " + str(len(reply)).encode() + b"\r\n\r\n" + reply)
                else:
                    await stream.send_all(b"HTTP/1.1 204 No Content\r\n\r\n")


async def test_request_bytes_on_the_wire():
    capture = Capture()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(capture.serve)
        template = f"http://127.0.0.1:{port}/api/{{hub}}/{{event}}?code=secret"
        config = make_config(handlers=(EventHandlerConfig(template, "*", SYSTEM_EVENTS),))
        async with fabric.open_fabric(config) as fab:
            fab.endpoint = "http://localhost:8080"
            c = await connect(fab)
            await c.send_json({"type": "event", "event": "ev", "ackId": 1, "dataType": "text", "data": "hé"})
            assert await c.receive_json() == {"type": "ack", "ackId": 1, "success": True}
            await c.aclose()
            with trio.fail_after(5):
                await capture.wait_for(5)
        nursery.cancel_scope.cancel()
    cid = c.connection_id
    options, connect_req, connected, event, disconnected = capture.requests
    assert options.startswith(f"OPTIONS /api/{HUB}/validate?code=secret HTTP/1.1\r\n".encode())
    assert b"\r\nWebHook-Request-Origin: localhost\r\nce-awpsversion: 1.0\r\n" in options
    assert event.startswith(f"POST /api/{HUB}/ev?code=secret HTTP/1.1\r\n".encode())
    head, _, body = event.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")[1:]
    ce = [line for line in lines if line.split(b":")[0].lower() in {n.lower().encode() for n in spec.REQUEST_HEADERS}]
    time_line = next(line for line in ce if line.startswith(b"ce-time: "))
    state = state_of({"a": 1}).encode()
    assert ce == [
        b"WebHook-Request-Origin: localhost",
        b"Content-Type: text/plain",
        b"ce-specversion: 1.0",
        b"ce-type: azure.webpubsub.user.ev",
        f"ce-source: /hubs/{HUB}/client/{cid}".encode(),
        b"ce-id: 3",
        time_line,
        b"ce-signature: " + spec.signature(KEYS, cid).encode(),
        b"ce-userId: wire-user",
        f"ce-connectionId: {cid}".encode(),
        f"ce-hub: {HUB}".encode(),
        b"ce-eventName: ev",
        b"ce-subprotocol: json.webpubsub.azure.v1",
        b"ce-connectionState: " + state,
        b"ce-awpsversion: 1.0",
    ]
    assert body == "hé".encode()
    assert b"Content-Length: 3" in lines
    assert connected.endswith(b"\r\n\r\n{}")
    assert json.loads(disconnected.partition(b"\r\n\r\n")[2]).keys() == {"reason"}
    assert capture.connections <= 2  # keep-alive: validation, connect, events reuse connections


async def test_a_handler_app_over_tcp_with_connection_reuse():
    class App(EventHandler):
        async def on_connect(self, request):
            return ConnectResponse(user_id="tcp-" + request.query["name"][0], connection_state=state_of({"n": 0}))

        async def on_user_event(self, ctx, event, payload):
            return UserEventResponse(Payload.text(f"{ctx.user_id}:{payload.body.decode()}"),
                                     connection_state=state_of({"n": payload.body.decode()}))

    app = CloudEventsApp(App())
    accepted = 0

    async def serve(*, task_status=trio.TASK_STATUS_IGNORED):
        nonlocal accepted
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        async with trio.open_nursery() as nursery:
            async with listeners[0]:
                while True:
                    stream = await listeners[0].accept()
                    accepted += 1
                    nursery.start_soon(serve_connection, stream, app, HttpLimits())

    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve)
        template = f"http://127.0.0.1:{port}/eventhandler/{{event}}"
        config = make_config(handlers=(EventHandlerConfig(template, "*", ("connect",)),))
        async with fabric.open_fabric(config) as fab:
            c = await connect(fab, query={"name": "zed"})
            assert c.user_id == "tcp-zed"
            for i in range(30):
                await c.send_json({"type": "event", "event": "n", "ackId": i + 1, "dataType": "text", "data": str(i)})
                assert (await c.receive_json())["data"] == f"tcp-zed:{i}"
                assert (await c.receive_json())["success"] is True
            await c.aclose()
            stats = fab.webhook(HUB).statistics()
        nursery.cancel_scope.cancel()
    events = app.events("n")
    assert events[0].header("ce-connectionState") == state_of({"n": 0})
    assert events[29].header("ce-connectionState") == state_of({"n": "28"})
    assert stats["counters"]["requests"] == 31
    assert accepted == 1  # one kept-alive connection for OPTIONS + 31 POSTs


async def test_handler_not_listening_rejects_connect_with_500():
    port = _free_port()
    config = make_config(handlers=(EventHandlerConfig(f"http://127.0.0.1:{port}/{{event}}", "*", SYSTEM_EVENTS),))
    async with fabric.open_fabric(config) as fab:
        with pytest.raises(ConnectionRejected) as info:
            await connect_in_process(fab, HUB)
    body = json.loads(info.value.body)
    assert info.value.status == 500 and "unreachable" in body["message"] and "ConnectError" in body["message"]
