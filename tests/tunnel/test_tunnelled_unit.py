"""Unit tests of default mode's pieces that need no app (``fabric.socketio.tunnelled``):
Socket.IO header reading, the bounded queue towards the app, and an invoke's bookkeeping."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from fabric.socketio import tunnelled as t


@pytest.mark.parametrize("text, expected", [
    ('0{"sid":"x"}', ("0", 0, "/", None, 1)),
    ("0/ns,", ("0", 0, "/ns", None, 5)),
    ("1", ("1", 0, "/", None, 1)),
    ('1/ns,{"close":true}', ("1", 0, "/ns", None, 5)),
    ('312["a"]', ("3", 0, "/", 12, 3)),
    ('3/ns,7["a"]', ("3", 0, "/ns", 7, 6)),
    ('52-/ns,4["e",{"_placeholder":true,"num":0}]', ("5", 2, "/ns", 4, 8)),
    ('61-0[{"_placeholder":true,"num":0}]', ("6", 1, "/", 0, 4)),
    ("2/ns", ("2", 0, "/ns", None, 4)),
])
def test_headers(text, expected):
    assert t._sio_header(text) == expected


@pytest.mark.parametrize("text", ["", "9", "x", "5-[]", "5x-[]", "51234567-[]"])
def test_not_headers(text):
    assert t._sio_header(text) is None


async def test_the_queue_to_the_app_is_bounded_and_batches():
    queue = t._Upstream()
    for i in range(t.MAX_QUEUED):
        await queue.put(b"4%d" % i)
    blocked = trio.Event()
    put_done = trio.Event()

    async def one_more():
        blocked.set()
        await queue.put(b"4last")
        put_done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one_more)
        await blocked.wait()
        await trio.testing.wait_all_tasks_blocked()
        assert not put_done.is_set()  # full: the reader waits (backpressure on the client)
        assert queue.put_nowait(b"3")  # what the service says itself has room past the bound
        batch = await queue.take()
        assert len(batch) == t.MAX_BATCH and batch[0] == b"40"
        await put_done.wait()
    rest = []
    queue.close()
    while (batch := await queue.take()) is not None:
        rest += batch
    assert rest[-2:] == [b"3", b"4last"] and len(rest) == t.MAX_QUEUED - t.MAX_BATCH + 2
    assert not queue.put_nowait(b"3")  # closed


async def test_an_invoke_ends_when_every_recipient_answered_or_left():
    class Member:
        def __init__(self, cid):
            self.connection_id = cid
            self.invokes = {}

    a, b, c = Member("a"), Member("b"), Member("c")
    invoke = t._Invoke(("/", 1), [a, b, c])
    for m in (a, b, c):
        m.invokes[invoke.key] = invoke
    invoke.answer(a, '431["x"]')
    invoke.answer(a, '431["again"]')  # a second answer from one client is ignored
    invoke.gone(b)
    invoke.answer(c, '431["y"]')
    assert [p async for p in invoke.receive] == ['431["x"]', '431["y"]']
    invoke.forget()
    assert not a.invokes and not c.invokes


async def test_an_invoke_with_nobody_to_ask_ends_at_once():
    invoke = t._Invoke(("/", 1), [])
    assert [p async for p in invoke.receive] == []


def test_an_app_payload_is_parsed_into_actions():
    actions = t.parse_app_payload(b'40{"sid":"a"}\x1e42["x"]\x1e451-["b",{"_placeholder":true,"num":0}]\x1ebAQI=\x1e2\x1e3'
                                  b'\x1e41/ns,\x1e41/ns,{"close":true}\x1e41{"close":false}\x1e1\x1e42["after close"]'
)
    kinds = [a[0] for a in actions]
    assert kinds == [t._CONNECT, t._SEND, t._SEND, t._SEND, t._PING, t._DISCONNECT, t._DISCONNECT_WITH_DATA,
                     t._DISCONNECT_WITH_DATA, t._CLOSE]
    assert actions[0][1] == "/" and actions[0][2].ws == b'40{"sid":"a"}'
    assert actions[3][1].ws == b"\x01\x02" and not actions[3][1].is_text
    assert actions[5][1] == "/ns"
    assert actions[6][1:] == ("/ns", True) and actions[7][1:] == ("/", False)


@pytest.mark.parametrize("body, kinds", [
    (b"", []),
    (b'{"type":"message"}', [t._IGNORED]),  # a Web PubSub JSON message: not for Socket.IO clients
    (b'42["a"]\x1e\x1e42["b"]', [t._SEND, t._IGNORED]),
    (b"b!!!\x1e42[]", [t._IGNORED]),
    (b"4" + "0/\u00e9,{}".encode() + b"\x1e42[]", [t._CONNECT, t._SEND]),
    (b'42["a"]\x1e40/bad\xff', [t._IGNORED]),  # not UTF-8: none of it
])
def test_odd_app_payloads(body, kinds):
    assert [a[0] for a in t.parse_app_payload(body)] == kinds
