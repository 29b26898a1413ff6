"""One peer cannot monopolise the event loop: a cap on fragments per message, and a reader
that yields to the scheduler while it works through one big receive."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from wsproto.events import Ping, TextMessage

from transport import websocket as wsmod
from transport.memory import memory_stream_pair
from transport.websocket import CLOSE_TOO_BIG, MAX_MESSAGE_FRAGMENTS, WebSocket

from ws_support import RawClient, fragments


async def _serve(nursery, handler=None, **kwargs):
    """A server WebSocket over a memory stream pair, run in ``nursery``. Returns the raw
    client, the socket and the list of messages the (default) handler received."""
    client_stream, server_stream = memory_stream_pair(1 << 22)
    ws = WebSocket(server_stream, subprotocol=None, **kwargs)
    received: list = []

    async def record(message):
        received.append(message)

    nursery.start_soon(ws.run, handler or record)
    return RawClient(client_stream), ws, received


def test_default_fragment_cap_is_sane():
    # Enough for a max-size (1 MiB) message in 1 KiB frames; see the module header.
    assert 256 <= MAX_MESSAGE_FRAGMENTS <= 4096


async def test_message_at_the_fragment_cap_is_delivered(nursery):
    client, ws, received = await _serve(nursery, max_message_fragments=16)
    await client.send(*fragments(16, "ab"))
    await client.send(TextMessage(data="after"))
    with trio.fail_after(5):
        while len(received) < 2:
            await trio.sleep(0)
    assert received == ["ab" * 16, "after"]
    assert ws.close_code is None


async def test_message_over_the_fragment_cap_closes_1009(nursery):
    client, ws, received = await _serve(nursery, max_message_fragments=16)
    await client.send(*fragments(17, "ab"), TextMessage(data="never"))
    with trio.fail_after(5):
        messages, close = await client.until_close()
    assert close is not None and close.code == CLOSE_TOO_BIG
    assert "fragments" in close.reason
    assert received == [] and messages == []
    assert ws.close_code == CLOSE_TOO_BIG


async def test_default_fragment_cap_applies_to_many_tiny_continuations(nursery):
    # The reported shape: a small message (well under max_message_bytes) sent as a flood of
    # one-byte continuation frames.
    client, ws, received = await _serve(nursery)
    farewells = []
    ws.farewell = lambda code, reason: farewells.append(code)
    await client.send(*fragments(MAX_MESSAGE_FRAGMENTS + 1))
    with trio.fail_after(5):
        _, close = await client.until_close()
    assert close is not None and close.code == CLOSE_TOO_BIG
    assert received == []
    assert farewells == [CLOSE_TOO_BIG]  # the application is told, as for an oversize message


async def test_partial_frames_of_one_big_frame_are_not_fragments(nursery):
    # A single large frame that arrives in many small reads is one fragment, not many.
    client, ws, received = await _serve(nursery, max_message_fragments=2)
    wire = client.frames(TextMessage(data="y" * 5000))
    for i in range(0, len(wire), 100):  # 51 reads of at most 100 bytes
        await client.stream.send_all(wire[i:i + 100])
        await trio.testing.wait_all_tasks_blocked()
    assert received == ["y" * 5000]
    assert ws.close_code is None


class _StepCounter(trio.abc.Instrument):
    """Counts the reader task's scheduler steps and the handler calls within each."""

    def __init__(self) -> None:
        self.steps = 0
        self.calls_in_step = 0
        self.max_calls_in_step = 0

    def before_task_step(self, task):
        if task.name.endswith("WebSocket._reader"):
            self.steps += 1
            self.calls_in_step = 0

    def after_task_step(self, task):
        if task.name.endswith("WebSocket._reader"):
            self.max_calls_in_step = max(self.max_calls_in_step, self.calls_in_step)


@pytest.mark.parametrize("kind", ["messages", "fragments", "pings"])
async def test_reader_yields_while_working_through_one_big_receive(nursery, kind):
    """A 64 KiB receive of tiny frames is ~10,000 events: the reader must let other tasks
    run every few dozen of them, not only once per receive."""
    counter = _StepCounter()
    received: list = []

    async def handler(message):  # no checkpoint: the handler gives no yield of its own
        counter.calls_in_step += 1
        received.append(message)

    client, ws, _ = await _serve(nursery, handler, max_message_fragments=100_000)
    await trio.testing.wait_all_tasks_blocked()

    n = 8000
    if kind == "messages":
        wire = client.frames(*[TextMessage(data="x") for _ in range(n)])
        expected = ["x"] * n
    elif kind == "fragments":
        wire = client.frames(*fragments(n))
        expected = ["x" * n]
    else:
        wire = client.frames(*[Ping(b"p") for _ in range(n)], TextMessage(data="done"))
        expected = ["done"]
    assert len(wire) <= wsmod.RECEIVE_SIZE  # one receive_some takes it all

    trio.lowlevel.add_instrument(counter)
    try:
        steps_before = counter.steps
        await client.stream.send_all(wire)
        with trio.fail_after(5):
            while received != expected:
                await trio.sleep(0)
        steps = counter.steps - steps_before
    finally:
        trio.lowlevel.remove_instrument(counter)
    every = wsmod.EVENTS_PER_YIELD
    assert steps >= n // every, f"{steps} reader steps for {n} events: the reader hogged the loop"
    assert counter.max_calls_in_step <= every
