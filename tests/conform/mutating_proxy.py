"""A TCP proxy in front of a Web PubSub endpoint that breaks its behaviour on the wire, so the
tests can show that ``fabric conform`` catches each mutation today, before the server has its
own ``FABRIC_TEST_MUTATION`` hook.

Mutations (JSON subprotocols only; everything else passes through untouched):

- ``drop-50th``: every 50th distinct group message per group (counted by its data, across all
  connections) is dropped for every recipient.
- ``ack-before-route``: a ``joinGroup`` with an ackId is acked ``success`` by the proxy at once
  and reaches the server only ``ACK_BEFORE_ROUTE_DELAY`` later (the server's own ack for it is
  swallowed): the ack no longer means the join took effect, nor that it was permitted.
- ``ignore-noecho``: ``noEcho: true`` on client ``sendToGroup`` is rewritten to false.

Rules this module keeps:
- Plain HTTP (REST) connections are piped byte for byte; a WebSocket upgrade is piped until the
  101, then parsed frame by frame (RFC 6455 §5.2) in both directions; client frames are
  re-masked. Fragmented or non-text frames pass through unchanged.
- Runs in its own trio thread; every buffer is bounded (``MAX_HEAD``, ``MAX_FRAME``).
"""

from __future__ import annotations

import os
import struct
import threading

import msgspec
import trio

MUTATIONS = ("drop-50th", "ack-before-route", "ignore-noecho")
MAX_HEAD = 64 * 1024
MAX_FRAME = 4 * 1024 * 1024
ACK_BEFORE_ROUTE_DELAY = 0.2


class MutatingProxy:
    def __init__(self, upstream_host: str, upstream_port: int, mutation: str) -> None:
        if mutation not in MUTATIONS:
            raise ValueError(mutation)
        self.upstream = (upstream_host, upstream_port)
        self.mutation = mutation
        self.port = 0
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=lambda: trio.run(self._main), daemon=True)
        self._groups: dict[str, dict[bytes, int]] = {}  # group -> data -> ordinal (drop-50th)
        self.errors: list[str] = []  # unexpected failures of single proxied connections

    def __enter__(self) -> "MutatingProxy":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self

    def __exit__(self, *exc) -> None:
        if self._token is not None and self._stop is not None:
            try:
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join(10)

    def connection_string(self, access_key: str) -> str:
        return f"Endpoint=http://127.0.0.1:{self.port};AccessKey={access_key};Version=1.0;"

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._handle, listeners)
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    # ------------------------------------------------------------------ one connection

    async def _handle(self, client: trio.SocketStream) -> None:
        try:
            server = await trio.open_tcp_stream(*self.upstream)
        except OSError:
            await client.aclose()
            return
        try:
            async with client, server:
                head, rest = await _read_head(client)
                await server.send_all(head + rest)
                if b"upgrade: websocket" not in head.lower():
                    await _pipe_both(client, server)
                    return
                shead, srest = await _read_head(server)
                await client.send_all(shead)
                if not shead.startswith(b"HTTP/1.1 101"):
                    await client.send_all(srest)
                    await _pipe_both(client, server)
                    return
                await self._websocket(client, server, srest)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError, ValueError):
            pass  # one side went away: that connection is over, the proxy carries on
        except* Exception as group:  # anything else ends this connection only, and is kept for the test
            if len(self.errors) < 20:
                self.errors.append(repr(group.exceptions[0]))

    async def _websocket(self, client: trio.SocketStream, server: trio.SocketStream, early: bytes) -> None:
        swallow: set[int] = set()  # ackIds whose server ack is replaced by the proxy's
        lock = trio.Lock()  # one writer at a time towards the client ...
        up_lock = trio.Lock()  # ... and towards the server (delayed joins write too)

        async def to_server(data: bytes) -> None:
            async with up_lock:
                await server.send_all(data)

        async def to_client(data: bytes, opcode: int = 1) -> None:
            async with lock:
                await client.send_all(_frame(opcode, data, masked=False))

        async def upstream() -> None:  # client -> server
            async for fin, opcode, payload in _frames(client, b""):
                if fin and opcode == 1:
                    out = await self._client_text(payload, to_client, to_server, swallow, nursery)
                    if out is None:
                        continue
                    payload = out
                await to_server(_frame(opcode, payload, masked=True, fin=fin))

        async def downstream() -> None:  # server -> client
            async for fin, opcode, payload in _frames(server, early):
                if fin and opcode == 1 and not self._keep_server_text(payload, swallow):
                    continue
                async with lock:
                    await client.send_all(_frame(opcode, payload, masked=False, fin=fin))
                if opcode == 8:
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(upstream)
            await downstream()
            nursery.cancel_scope.cancel()

    async def _client_text(self, payload: bytes, to_client, to_server, swallow: set[int], nursery) -> bytes | None:
        try:
            msg = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            return payload
        if not isinstance(msg, dict):
            return payload
        if self.mutation == "ignore-noecho" and msg.get("type") == "sendToGroup" and msg.get("noEcho") is True:
            msg["noEcho"] = False
            return msgspec.json.encode(msg)
        if (self.mutation == "ack-before-route" and msg.get("type") == "joinGroup"
                and isinstance(msg.get("ackId"), int)):
            ack_id = msg["ackId"]
            swallow.add(ack_id)
            await to_client(msgspec.json.encode({"type": "ack", "ackId": ack_id, "success": True}))

            async def later() -> None:
                await trio.sleep(ACK_BEFORE_ROUTE_DELAY)
                try:
                    await to_server(_frame(1, payload, masked=True))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

            nursery.start_soon(later)
            return None
        return payload

    def _keep_server_text(self, payload: bytes, swallow: set[int]) -> bool:
        try:
            msg = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            return True
        if not isinstance(msg, dict):
            return True
        if self.mutation == "ack-before-route" and msg.get("type") == "ack" and msg.get("ackId") in swallow:
            swallow.discard(msg["ackId"])
            return False
        if self.mutation == "drop-50th" and msg.get("type") == "message" and msg.get("from") == "group":
            seen = self._groups.setdefault(str(msg.get("group")), {})
            key = msgspec.json.encode(msg.get("data"))
            ordinal = seen.setdefault(key, len(seen) + 1)
            return ordinal % 50 != 0
        return True


# =========================================================================== framing


async def _read_head(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_HEAD:
            raise ValueError("HTTP head too large")
        data = await stream.receive_some(65536)
        if not data:
            raise ValueError("closed during the HTTP head")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


async def _pipe(src: trio.SocketStream, dst: trio.SocketStream) -> None:
    while True:
        data = await src.receive_some(65536)
        if not data:
            return
        await dst.send_all(data)


async def _pipe_both(a: trio.SocketStream, b: trio.SocketStream) -> None:
    async with trio.open_nursery() as nursery:
        async def one(src, dst):
            try:
                await _pipe(src, dst)
            finally:
                nursery.cancel_scope.cancel()
        nursery.start_soon(one, a, b)
        nursery.start_soon(one, b, a)


async def _frames(stream: trio.SocketStream, early: bytes):
    """Yield (fin, opcode, unmasked payload) until EOF."""
    buf = bytearray(early)
    while True:
        while True:
            parsed = _parse(buf)
            if parsed is None:
                break
            fin, opcode, payload, used = parsed
            del buf[:used]
            yield fin, opcode, payload
        data = await stream.receive_some(65536)
        if not data:
            return
        buf += data
        if len(buf) > MAX_FRAME + 16:
            raise ValueError("frame too large for the proxy")


def _parse(buf: bytearray):
    if len(buf) < 2:
        return None
    b0, b1 = buf[0], buf[1]
    n = b1 & 0x7F
    pos = 2
    if n == 126:
        if len(buf) < 4:
            return None
        n = struct.unpack("!H", buf[2:4])[0]
        pos = 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n = struct.unpack("!Q", buf[2:10])[0]
        pos = 10
    mask = b""
    if b1 & 0x80:
        if len(buf) < pos + 4:
            return None
        mask = bytes(buf[pos:pos + 4])
        pos += 4
    if len(buf) < pos + n:
        return None
    payload = bytes(buf[pos:pos + n])
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bool(b0 & 0x80), b0 & 0x0F, payload, pos + n


def _frame(opcode: int, payload: bytes, *, masked: bool, fin: bool = True) -> bytes:
    head = bytearray([(0x80 if fin else 0) | opcode])
    n = len(payload)
    mbit = 0x80 if masked else 0
    if n < 126:
        head.append(mbit | n)
    elif n < 65536:
        head.append(mbit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mbit | 127)
        head += struct.pack("!Q", n)
    if masked:
        mask = os.urandom(4)
        return bytes(head) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(head) + payload
