"""A closed connection is freed by reference counting the moment it ends: no reference cycle
keeps it (and its socket, outbox, session, ~20-36 objects) for a later full collection, and
no timer structure holds it until its next heartbeat was due. Checked with the cyclic
collector off, over real TCP, for both protocols: after the connections close, no instance
of the connection classes is left among the tracked objects."""

from __future__ import annotations

import gc

import trio

import fabric
from fabric.core.auth import mint_client_token
from fabric.socketio.engine import EngineConnection
from fabric.socketio.server import SioConnection
from fabric.testing import connect_tcp
from fabric.webpubsub.connection import ClientConnection
from tests.fabric_support import quick_config

KEY = "freed-key-0123456789-0123456789-0123"
N = 20


def _alive(*classes) -> int:
    return sum(1 for o in gc.get_objects() if type(o) in classes)


async def _wait_for(predicate) -> None:
    with trio.fail_after(10):
        while not predicate():
            await trio.sleep(0.01)


async def _churn_webpubsub(port: int, *, abrupt: bool, subprotocol: str = "json.webpubsub.azure.v1") -> None:
    for i in range(N):
        token = mint_client_token(key=KEY, endpoint=f"http://127.0.0.1:{port}", hub="chat", user_id=f"u{i}",
                                  roles=("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"))
        client = await connect_tcp("127.0.0.1", port, f"/client/hubs/chat?access_token={token}", [subprotocol])
        assert (await client.receive_json())["event"] == "connected"
        await client.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
        assert (await client.receive_json())["success"] is True
        await client.send_json({"type": "sendToGroup", "group": "g", "data": "hi", "ackId": 2})
        if abrupt:
            await client.stream.aclose()  # EOF, no close frame
        else:
            await client.aclose()


async def _churn_socketio(port: int) -> None:
    for _ in range(N):
        client = await connect_tcp("127.0.0.1", port, "/socket.io/?EIO=4&transport=websocket")
        assert (await client.receive()).startswith("0{")
        await client.send("40")
        assert (await client.receive()).startswith("40{")
        await client.send('421["echo","hi"]')
        assert await client.receive() == '431["hi"]'
        await client.stream.aclose()


async def test_closed_connections_leave_nothing_behind():
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        async with fabric.open_fabric(quick_config(access_keys=(KEY,))) as fab, trio.open_nursery() as nursery:
            sio = fab.socketio()

            @sio.on("echo")
            def echo(sid, payload):
                return payload

            port = await nursery.start(fab.serve, "127.0.0.1", 0)
            await _churn_webpubsub(port, abrupt=False)
            await _churn_webpubsub(port, abrupt=True)
            # A reliable session closed by its client (a close frame ends it; no recovery wait).
            await _churn_webpubsub(port, abrupt=False, subprotocol="json.reliable.webpubsub.azure.v1")
            await _churn_socketio(port)
            hub = fab.hubs.running("chat")
            await _wait_for(lambda: not hub.connections)
            engine = fab.socketio_edge._plain.engine
            await _wait_for(lambda: not engine.sessions)
            await _wait_for(lambda: _alive(ClientConnection, EngineConnection, SioConnection) == 0)
            assert _alive(ClientConnection, EngineConnection, SioConnection) == 0
            nursery.cancel_scope.cancel()
    finally:
        if was_enabled:
            gc.enable()
