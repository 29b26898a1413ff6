"""A bounded, in-process, bidirectional byte stream pair (no sockets).

``trio.testing.memory_stream_pair`` buffers without limit; this one blocks ``send_all``
once ``max_buffer`` bytes wait unread, like a socket with a full send buffer. It backs the
fabric's in-process client, so embedded tests exercise the real HTTP/WebSocket path with
the same backpressure as TCP.

Closing a stream while another task waits in its ``send_all`` or ``receive_some`` makes
that call raise ``trio.ClosedResourceError``, as ``trio.abc.AsyncResource.aclose``
requires of streams.
"""

from __future__ import annotations

import trio


class _Pipe:
    __slots__ = ("buffer", "max_buffer", "closed_write", "closed_read", "lot")

    def __init__(self, max_buffer: int) -> None:
        self.buffer = bytearray()
        self.max_buffer = max_buffer
        self.closed_write = False
        self.closed_read = False
        self.lot = trio.lowlevel.ParkingLot()


class MemoryStream(trio.abc.Stream):
    def __init__(self, incoming: _Pipe, outgoing: _Pipe) -> None:
        self._in = incoming
        self._out = outgoing
        self._closed = False

    async def send_all(self, data) -> None:
        if self._closed:
            raise trio.ClosedResourceError
        await trio.lowlevel.checkpoint_if_cancelled()
        view = memoryview(bytes(data))
        out = self._out
        while view:
            if out.closed_read:
                raise trio.BrokenResourceError("peer closed")
            room = out.max_buffer - len(out.buffer)
            if room <= 0:
                await out.lot.park()
                if self._closed:
                    raise trio.ClosedResourceError("stream closed while sending")
                continue
            out.buffer += view[:room]
            view = view[room:]
            out.lot.unpark_all()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        while len(self._out.buffer) >= self._out.max_buffer and not self._out.closed_read:
            await self._out.lot.park()
            if self._closed:
                raise trio.ClosedResourceError("stream closed while waiting")

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError
        await trio.lowlevel.checkpoint_if_cancelled()
        pipe = self._in
        while not pipe.buffer:
            if pipe.closed_write:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return b""
            await pipe.lot.park()
            if self._closed:
                raise trio.ClosedResourceError("stream closed while receiving")
        n = len(pipe.buffer) if max_bytes is None else min(max_bytes, len(pipe.buffer))
        data = bytes(pipe.buffer[:n])
        del pipe.buffer[:n]
        pipe.lot.unpark_all()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return data

    async def send_eof(self) -> None:
        self._out.closed_write = True
        self._out.lot.unpark_all()
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._out.closed_write = True
            self._in.closed_read = True
            self._in.buffer.clear()
            self._out.lot.unpark_all()
            self._in.lot.unpark_all()
        await trio.lowlevel.checkpoint()


def memory_stream_pair(max_buffer: int = 65536) -> tuple[MemoryStream, MemoryStream]:
    a_to_b = _Pipe(max_buffer)
    b_to_a = _Pipe(max_buffer)
    return MemoryStream(b_to_a, a_to_b), MemoryStream(a_to_b, b_to_a)
