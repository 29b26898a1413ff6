"""Stream sequencing against a small reference model of specs.streams (Hypothesis): random
starts, fragments with gaps, duplicates and reorders, keepalives, ends and idle timeouts.

The model below is written from the client spec's rules, not from the server's code: one
dict of open streams ``{id: (expected, deadline)}``. Two checks run it:
- ``StreamTable`` step by step (sans-IO, a perfect timer: every due stream expires when time
  moves), thousands of schedules;
- the whole server through the in-process client with ``autojump_clock`` (the real timer
  service, the real codec and fan-out), fewer schedules: what the publisher is answered and
  what a subscriber receives must be exactly what the model says, in order.
"""

from __future__ import annotations

import json

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fabric
from fabric.core.payload import Payload
from fabric.webpubsub.codec_json import StreamData, StreamEnd, StreamStart
from fabric.webpubsub.streams import StreamTable

from tests.fabric_support import quick_config

from .client_support import ROLES, connect

IDS = ("a", "b", "c")


class Model:
    """The reference: what the publisher hears (``replies``) and what the group gets (``published``)."""

    def __init__(self) -> None:
        self.open: dict[str, list] = {}  # id -> [expected, deadline, idle]
        self.now = 0.0
        self.replies: list[tuple] = []
        self.published: list[tuple] = []

    def _end(self, sid: str, reason: str | None, reply: str | None) -> None:
        expected = self.open.pop(sid)[0]
        self.published.append((sid, expected, "end", reason))
        if reply is not None:
            self.replies.append(("closed", sid, None if reply == "ok" else reply))

    def advance(self, dt: float) -> None:
        target = self.now + dt
        while True:  # streams expire at their own deadlines, in deadline order
            due = sorted((v[1], sid) for sid, v in self.open.items() if v[1] <= target)
            if not due:
                break
            self.now = due[0][0]
            self._end(due[0][1], "IdleTimeout", "IdleTimeout")
        self.now = target

    def start(self, sid: str, idle: float) -> None:
        if sid in self.open:
            self._end(sid, "BadRequest", "BadRequest")
            return
        self.open[sid] = [1, self.now + idle, idle]
        self.replies.append(("ack", sid, 1))

    def data(self, sid: str, seq: int) -> None:
        s = self.open.get(sid)
        if s is None:
            self.replies.append(("closed", sid, "StreamNotFound"))
        elif seq == s[0]:
            self.published.append((sid, seq, "data", f"{sid}{seq}"))
            s[0] += 1
            s[1] = self.now + s[2]
            self.replies.append(("ack", sid, s[0]))
        elif 0 < seq < s[0]:
            self.replies.append(("ack", sid, s[0]))
        else:
            self.replies.append(("nack", sid, s[0]))

    def keepalive(self, sid: str) -> None:
        s = self.open.get(sid)
        if s is None:
            self.replies.append(("closed", sid, "StreamNotFound"))
        else:
            s[1] = self.now + s[2]

    def end(self, sid: str) -> None:
        if sid not in self.open:
            self.replies.append(("closed", sid, "StreamNotFound"))
        else:
            self._end(sid, None, "ok")


# A schedule: operations with small ids and sequence numbers near the expected ones, so gaps,
# duplicates and reorders all happen often.
operations = st.one_of(
    st.tuples(st.just("start"), st.sampled_from(IDS), st.sampled_from([1.0, 2.5, 5.0])),
    st.tuples(st.just("data"), st.sampled_from(IDS), st.integers(0, 6)),
    st.tuples(st.just("data_next"), st.sampled_from(IDS), st.integers(-2, 1)),
    st.tuples(st.just("keepalive"), st.sampled_from(IDS), st.none()),
    st.tuples(st.just("end"), st.sampled_from(IDS), st.none()),
    st.tuples(st.just("sleep"), st.none(), st.sampled_from([0.3, 0.9, 1.7, 3.1])),
)
schedules = st.lists(operations, min_size=1, max_size=30)


def resolve(model: Model, op: tuple) -> tuple:
    """``data_next`` picks a sequence id relative to the model's expected one (a duplicate, the
    next, or a gap); everything else is as drawn."""
    kind, sid, arg = op
    if kind == "data_next":
        expected = model.open[sid][0] if sid in model.open else 1
        return ("data", sid, max(0, expected + arg))
    return op


def apply_model(model: Model, op: tuple) -> None:
    kind, sid, arg = op
    if kind == "sleep":
        model.advance(arg)
    elif kind == "start":
        model.start(sid, arg)
    elif kind == "data":
        model.data(sid, arg)
    elif kind == "keepalive":
        model.keepalive(sid)
    else:
        model.end(sid)


# --------------------------------------------------------------------------- the sans-IO table


def _record(step, replies, published, payload_text=None) -> None:
    if step.fragment is not None:
        published.append((step.fragment.stream_id, step.fragment.sequence_id, "data", payload_text))
    if step.terminal is not None:
        t = step.terminal
        published.append((t.stream_id, t.sequence_id, "end", t.error_name))
    reply = step.reply
    if reply is None:
        return
    sid = step.stream.stream_id if step.stream is not None else None
    if reply[0] == "ack":
        replies.append(("ack", sid, reply[1]))
    elif reply[0] == "nack":
        replies.append(("nack", sid, reply[1]))
    else:
        replies.append(("closed", sid, reply[1]))


@settings(max_examples=600, deadline=None)
@given(schedules)
def test_stream_table_follows_the_model(schedule):
    model, table = Model(), StreamTable()
    replies: list = []
    published: list = []
    now = 0.0
    for op in schedule:
        op = resolve(model, op)
        kind, sid, arg = op
        if kind == "sleep":
            target = now + arg
            while True:  # a perfect timer: expire whatever is due, in deadline order
                due = sorted((table.get(s).deadline, s) for s in IDS if table.get(s) is not None
                             and table.get(s).deadline <= target)
                if not due:
                    break
                now = due[0][0]
                step = table.expire(due[0][1], now)
                assert step is not None and not step.arm
                _record(step, replies, published)
            now = target
        elif kind == "start":
            step = table.start(StreamStart("g", sid, idle_timeout_ms=int(arg * 1000)), True, now)
            if step.stream is None:
                step.stream = type("S", (), {"stream_id": sid})()
            _record(step, replies, published)
        elif kind == "data":
            step = table.data(StreamData(sid, arg, Payload.text(f"{sid}{arg}")), lambda g: True, now)
            if step.stream is None:
                step.stream = type("S", (), {"stream_id": sid})()
            _record(step, replies, published, f"{sid}{arg}")
        elif kind == "keepalive":
            step = table.data(StreamData(sid), lambda g: True, now)
            if step.stream is None:
                step.stream = type("S", (), {"stream_id": sid})()
            _record(step, replies, published)
        else:
            step = table.end(StreamEnd(sid))
            if step.stream is None:
                step.stream = type("S", (), {"stream_id": sid})()
            _record(step, replies, published)
        apply_model(model, op)
    assert replies == model.replies
    assert published == model.published


def per_stream(items: list) -> dict:
    """Items grouped by stream id, each group in order: the server promises order within a
    stream, not between streams (two streams may expire at the same instant)."""
    out: dict = {}
    for item in items:
        out.setdefault(item[1] if item[0] in ("ack", "nack", "closed") else item[0], []).append(item)
    return out


# --------------------------------------------------------------------------- the whole server


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(schedule=schedules)
async def test_the_server_follows_the_model(autojump_clock, schedule):
    async with fabric.open_fabric(quick_config(), access_key="test-key") as fab:
        hub = "model"
        pub = await connect(fab, hub, roles=ROLES)
        sub = await connect(fab, hub, roles=ROLES)
        await sub.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
        assert (await sub.receive_json())["success"] is True
        model = Model()
        for op in schedule:
            op = resolve(model, op)
            kind, sid, arg = op
            if kind == "sleep":
                await trio.sleep(arg)
            elif kind == "start":
                await pub.send_json({"type": "sendToGroup", "group": "g", "noEcho": True,
                                     "stream": {"streamId": sid, "idleTimeoutMs": int(arg * 1000)}})
            elif kind == "data":
                await pub.send_json({"type": "streamData", "streamId": sid, "streamSequenceId": arg,
                                     "dataType": "text", "data": f"{sid}{arg}"})
            elif kind == "keepalive":
                await pub.send_json({"type": "streamData", "streamId": sid})
            else:
                await pub.send_json({"type": "streamEnd", "streamId": sid})
            apply_model(model, op)
            await trio.testing.wait_all_tasks_blocked()  # let the frame be handled before time moves
        # the model's pending timeouts happen too: let them (the model sleeps the same)
        await trio.sleep(6)
        model.advance(6)
        await pub.send_json({"type": "ping"})
        await sub.send_json({"type": "ping"})
        got_replies = []
        while True:
            frame = await pub.receive_json()
            if frame["type"] == "pong":
                break
            if frame["type"] == "streamAck":
                got_replies.append(("ack", frame["streamId"], frame["expectedSequenceId"]))
            elif frame["type"] == "streamNack":
                assert frame["name"] == "InvalidSequenceId"
                got_replies.append(("nack", frame["streamId"], frame["expectedSequenceId"]))
            else:
                assert frame["type"] == "streamClosed", frame
                got_replies.append(("closed", frame["streamId"], frame.get("error", {}).get("name")))
        got_published = []
        while True:
            frame = await sub.receive_json()
            if frame["type"] == "pong":
                break
            stream = frame["stream"]
            if stream.get("endOfStream"):
                got_published.append((stream["streamId"], stream["streamSequenceId"], "end",
                                      stream.get("error", {}).get("name")))
            else:
                got_published.append((stream["streamId"], stream["streamSequenceId"], "data", frame["data"]))
        assert per_stream(got_replies) == per_stream(model.replies), json.dumps(schedule)
        assert per_stream(got_published) == per_stream(model.published), json.dumps(schedule)
        await pub.aclose()
        await sub.aclose()
