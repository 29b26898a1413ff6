"""Unit tests of default mode's pieces that need no app (``fabric.socketio.tunnelled``):
Socket.IO header reading, the bounded queue towards the app, and an invoke's bookkeeping."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from fabric.core.commands import Reply
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


# ---- :invoke across nodes: the requesting node's merge, a node's relay -------------------


class _Hub:
    """A hub as ``_spread``/``_invoke_here`` see it: ``edge_request`` answers ``replies``
    after streaming ``streamed`` (value, node) on the open stream."""

    name = "h"
    reply_topic = "me"

    def __init__(self, replies=(), streamed=(), room=True):
        self.replies = list(replies)
        self.streamed = list(streamed)
        self.room = room
        self.receive = None
        self.told = []
        self.sent = []
        self.closed = []

    def open_stream(self, receive):
        if not self.room:
            return None
        self.receive = receive
        return 7

    def close_stream(self, stream_id):
        self.closed.append(stream_id)

    async def edge_request(self, name, args, *, filter=None):
        assert name == t.INVOKE_OP and args[:2] == ("me", 7)
        for value, node in self.streamed:
            self.receive(Reply(7, value, node))
        return self.replies

    async def edge_tell(self, name, args):
        self.told.append((name, args))

    async def stream_send(self, reply_to, stream_id, value):
        self.sent.append((reply_to, stream_id, value))


def _mode():
    return t.DefaultMode(None, None, None)


BODY = b'42["q"]'


async def test_the_requester_merges_every_nodes_acks_and_ends_when_each_is_done():
    mode = _mode()
    key, body = mode._numbered(BODY)
    hub = _Hub(
        replies=[Reply(1, 2, "n1"), Reply(1, 0, "n2"), Reply(1, None, "n4"), Reply(1, 1, "n3")],
        streamed=[(["a", "431[1]"], "n1"), (["x"], "n1"), (["a", "432[3]"], "n3"), (["d"], "n3"),
                  (["d"], "n3"), (["a", "433[2]"], "n1"), (["d"], "n1")])
    lines = [line async for line in mode._spread(hub, None, body, key)]
    assert lines == [b'{"Payload":"431[1]"}\n', b'{"Payload":"432[3]"}\n', b'{"Payload":"433[2]"}\n']
    assert hub.closed == [7] and hub.told == []  # everyone done: nobody to stop
    assert mode.counters["invoke_answers"] == 3


async def test_the_requester_keeps_a_bounded_backlog_but_every_done(monkeypatch):
    monkeypatch.setattr(t, "MAX_INVOKE_BUFFER", 2)
    mode = _mode()
    key, body = mode._numbered(BODY)
    hub = _Hub(replies=[Reply(1, 5, "n1")], streamed=[(["a", f"43{i}"], "n1") for i in range(5)] + [(["d"], "n1")])
    lines = [line async for line in mode._spread(hub, None, body, key)]
    assert len(lines) == 2 and mode.counters["invoke_answers_dropped"] == 3


async def test_a_node_that_never_finishes_is_told_to_stop_at_the_timeout(autojump_clock):
    mode = _mode()
    key, body = mode._numbered(BODY)
    hub = _Hub(replies=[Reply(1, 1, "n1")])
    assert [line async for line in mode._spread(hub, None, body, key)] == []
    assert hub.told == [(t.INVOKE_END_OP, ("me", 7))] and hub.closed == [7]


async def test_too_many_in_flight_reaches_this_nodes_clients_only():
    mode = _mode()
    key, body = mode._numbered(BODY)
    hub = _Hub(room=False)
    assert [line async for line in mode._spread(hub, None, body, key)] == []
    assert mode.counters["invokes_not_spread"] == 1


async def test_a_node_relays_nothing_for_what_it_cannot_serve(monkeypatch):
    mode = _mode()
    hub = _Hub()
    numbered = mode._numbered(BODY)[1]
    assert await mode._invoke_here(hub, ("me", 7), None) == 0  # malformed
    assert await mode._invoke_here(hub, ("me", "7", numbered), None) == 0
    assert await mode._invoke_here(hub, ("me", 7, BODY), None) == 0  # not numbered by the requester
    assert await mode._invoke_here(hub, ("me", 7, b"not sio"), None) == 0
    async with trio.open_nursery() as nursery:
        mode._nursery = nursery
        assert await mode._invoke_here(hub, ("me", 7, numbered), None) == 0  # no recipients here
        monkeypatch.setattr(t, "MAX_RELAYS", 0)
        assert await mode._invoke_here(hub, ("me", 8, numbered), None) == 0
        assert mode.counters["invokes_refused"] == 1
    assert hub.sent == [] and not mode._relays


class _Member:
    def __init__(self, cid):
        self.connection_id = cid
        self.closed = False
        self.namespaces = {"/"}
        self.invokes = {}
        self.got = []

    def from_app(self, body):
        self.got.append(body)


async def test_a_node_relays_its_clients_acks_then_done_and_stops_when_told():
    mode = _mode()
    hub = _Hub()
    a, b = _Member("a"), _Member("b")
    mode.connections["h"] = {"a": a, "b": b}
    key, numbered = mode._numbered(BODY)
    async with trio.open_nursery() as nursery:
        mode._nursery = nursery
        assert await mode._invoke_here(hub, ("me", 7, numbered), None) == 2
        assert a.got == b.got == [numbered]
        a.invokes[key].answer(a, "43x")
        await trio.testing.wait_all_tasks_blocked()
        assert hub.sent == [("me", 7, ["a", "43x"])]
        assert mode.statistics()["invokes_relayed"] == 1
        assert await mode._invoke_here(hub, ("me", 8, numbered), lambda m: m is a) == 1  # a filter
        await mode._invoke_end(("me", 8), None)  # the requester gave up on this one
        b.invokes[key].gone(b)  # b left without answering
        await trio.testing.wait_all_tasks_blocked()
    assert ("me", 7, ["d"]) in hub.sent and ("me", 8, ["d"]) in hub.sent
    assert not mode._relays and not a.invokes and not b.invokes


def test_the_invoke_command_and_its_stream_cross_the_wire():
    from fabric.appserver.odata import compile_filter
    from fabric.core.commands import Command, decode_message, encode_message

    selects = compile_filter("'0~Lw~cg' in groups and not ('0~Lw~eA' in groups)")
    body = _mode()._numbered(BODY)[1]
    command = Command("edge", (t.INVOKE_OP, "me", 7, body), filter=selects, request_id=3, reply_to="me")
    back = decode_message(encode_message(command), compile_filter=compile_filter)
    assert (back.op, back.args, back.filter.source) == ("edge", (t.INVOKE_OP, "me", 7, body), selects.source)
    for value in (3, ["a", '431000000000000["x"]'], ["d"]):
        reply = decode_message(encode_message(Reply(7, value, "n1")))
        assert (reply.request_id, reply.value, reply.node) == (7, value, "n1")


async def test_an_app_that_stops_reading_stops_the_other_nodes():
    mode = _mode()
    key, body = mode._numbered(BODY)
    hub = _Hub(replies=[Reply(1, 2, "n1")], streamed=[(["a", "431"], "n1")])
    stream = mode._spread(hub, None, body, key)
    assert await stream.__anext__() == b'{"Payload":"431"}\n'
    await stream.aclose()
    assert hub.told == [(t.INVOKE_END_OP, ("me", 7))] and hub.closed == [7]
