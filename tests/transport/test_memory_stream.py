"""The bounded in-process stream pair: backpressure, end of stream, and close semantics."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from transport.memory import memory_stream_pair


async def test_send_blocks_when_the_buffer_is_full_and_resumes_when_read(nursery):
    a, b = memory_stream_pair(max_buffer=10)
    done = trio.Event()

    async def send():
        await a.send_all(b"x" * 25)
        done.set()

    nursery.start_soon(send)
    await trio.testing.wait_all_tasks_blocked()
    assert not done.is_set()
    got = bytearray()
    while len(got) < 25:
        got += await b.receive_some(100)
    await done.wait()
    assert got == b"x" * 25


async def test_send_eof_and_close_end_the_peer_stream():
    a, b = memory_stream_pair()
    await a.send_all(b"hi")
    await a.send_eof()
    assert await b.receive_some() == b"hi"
    assert await b.receive_some() == b""
    c, d = memory_stream_pair()
    await c.aclose()
    assert await d.receive_some() == b""
    with pytest.raises(trio.BrokenResourceError):
        await d.send_all(b"x")


@pytest.mark.parametrize("op", ["receive_some", "send_all", "wait_send_all_might_not_block"])
async def test_closing_a_stream_wakes_its_own_blocked_call(nursery, op):
    a, b = memory_stream_pair(max_buffer=4)
    if op != "receive_some":
        await a.send_all(b"full")  # the buffer is full: the next send waits
    raised = []

    async def blocked():
        try:
            if op == "receive_some":
                await a.receive_some(10)
            elif op == "send_all":
                await a.send_all(b"more")
            else:
                await a.wait_send_all_might_not_block()
        except trio.ClosedResourceError:
            raised.append(True)

    nursery.start_soon(blocked)
    await trio.testing.wait_all_tasks_blocked()
    await a.aclose()
    with trio.fail_after(1):
        await trio.testing.wait_all_tasks_blocked()
    assert raised == [True]
