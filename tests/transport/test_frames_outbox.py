import base64
import hashlib

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameDecoder, Opcode

from transport.frames import accept_key, encode_frame, valid_client_key
from transport.outbox import CONTROL_LANE_SIZE, Outbox


@given(st.binary(max_size=70000), st.booleans())
def test_encode_frame_parses_as_one_fin_frame(payload, text):
    frame = encode_frame(payload, text=text)
    decoder = FrameDecoder(client=True)  # a client decodes unmasked server frames
    decoder.receive_bytes(frame)
    parsed = decoder.process_buffer()
    assert parsed.opcode is (Opcode.TEXT if text else Opcode.BINARY)
    assert parsed.payload == payload
    assert parsed.frame_finished and parsed.message_finished


def test_accept_key_matches_rfc6455_example():
    # RFC 6455 §1.3
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_valid_client_key():
    assert valid_client_key(base64.b64encode(b"x" * 16))
    assert not valid_client_key(b"short")
    assert not valid_client_key(b"!!!not base64!!!")


def test_outbox_bounds_count_and_bytes():
    box = Outbox(max_items=3, max_bytes=10)
    assert box.put_nowait(b"aaaa")
    assert box.put_nowait(b"bbbb")
    assert not box.put_nowait(b"ccc")  # 11 bytes > 10
    assert box.put_nowait(b"cc")
    assert not box.put_nowait(b"")  # count bound
    s = box.statistics()
    assert (s.queued, s.queued_bytes, s.rejected) == (3, 10, 2)


async def test_outbox_batches_control_first():
    box = Outbox(max_items=10, max_bytes=100)
    box.put_nowait(b"d1")
    box.put_nowait(b"d2")
    box.put_control(b"c1")
    assert await box.get_batch() == [b"c1", b"d1", b"d2"]
    assert len(box) == 0 and box.queued_bytes == 0


async def test_outbox_control_lane_is_bounded_and_works_when_data_full():
    box = Outbox(max_items=1, max_bytes=100)
    assert box.put_nowait(b"x")
    assert not box.put_nowait(b"y")
    for _ in range(CONTROL_LANE_SIZE):
        assert box.put_control(b"p")
    assert not box.put_control(b"p")


async def test_outbox_close_data_rejects_new_data():
    box = Outbox(max_items=10, max_bytes=100)
    box.put_nowait(b"a")
    box.close_data()
    assert not box.put_nowait(b"b")
    assert await box.get_batch() == [b"a"]


async def test_outbox_wakes_parked_writer():
    box = Outbox(max_items=10, max_bytes=100)
    got = []

    async def writer():
        got.append(await box.get_batch())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        box.put_nowait(b"z")
    assert got == [[b"z"]]


async def test_outbox_finish_ends_a_parked_writer_and_every_later_batch():
    box = Outbox(max_items=10, max_bytes=100)
    got = []

    async def writer():
        while (batch := await box.get_batch()) is not None:
            got.append(batch)
        got.append(None)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        box.put_nowait(b"a")
        await trio.testing.wait_all_tasks_blocked()
        assert got == [[b"a"]]
        box.finish()
    assert got == [[b"a"], None]
    assert not box.put_nowait(b"late")  # no data after the end
    assert await box.get_batch() is None


async def test_outbox_all_expired_batch_is_empty_not_the_end():
    """An empty batch (every frame past its deadline) must not read as ``finish``'s None."""
    box = Outbox(max_items=10, max_bytes=100)
    box.put_nowait(b"old", expires_at=trio.current_time() - 1)
    assert await box.get_batch() == []
