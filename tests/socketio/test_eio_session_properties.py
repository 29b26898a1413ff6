"""Random adapter-like drives of an Engine.IO session: invariants that must always hold."""

from __future__ import annotations

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fabric.socketio.eio_packets import binary_message, decode_payload, text_message
from fabric.socketio.eio_session import (
    EngineConfig,
    HttpReply,
    MessageReceived,
    SendResult,
    Session,
    SessionClosed,
    SessionState,
    Upgraded,
)

CONFIG = EngineConfig(
    ping_interval_ms=300, ping_timeout_ms=200, upgrade_timeout_ms=1000, close_timeout_ms=2000,
    max_payload=64, max_queue_packets=5, max_queue_bytes=40,
)

good_frames = st.sampled_from(["4hi", "3", "2probe", "5", "bAQID", "6"])
bad_frames = st.one_of(
    st.sampled_from(["2", "1", "3probe", "abc", "", "b!!"]), st.text(max_size=8), st.binary(max_size=8)
)
frames = st.one_of(good_frames, good_frames, good_frames, good_frames, good_frames, bad_frames)
good_bodies = st.lists(st.sampled_from(["4a", "3", "bAQID", "5", "6"]), min_size=1, max_size=4)
bad_bodies = st.lists(st.sampled_from(["4a", "1", "2", "x", ""]), min_size=1, max_size=4)
bodies = st.one_of(
    good_bodies.map(lambda parts: "\x1e".join(parts).encode()),
    good_bodies.map(lambda parts: "\x1e".join(parts).encode()),
    good_bodies.map(lambda parts: "\x1e".join(parts).encode()),
    bad_bodies.map(lambda parts: "\x1e".join(parts).encode()),
    st.binary(max_size=70),
)
common = st.one_of(
    st.tuples(st.just("send"), st.binary(max_size=12), st.booleans()),
    st.tuples(st.just("advance"), st.floats(min_value=0, max_value=0.4)),
    st.tuples(st.just("get")),
    st.tuples(st.just("take")),
    st.tuples(st.just("post"), bodies, st.sampled_from([None, "text/plain"])),
    st.tuples(st.just("ws"), frames),
    st.tuples(st.just("probe")),
    st.tuples(st.just("probe_frame"), frames),
    st.tuples(st.just("probe_frame"), st.sampled_from(["2probe", "5"])),
)
rare = st.one_of(
    st.tuples(st.just("get_aborted")),
    st.tuples(st.just("overlap")),
    st.tuples(st.just("post"), bodies, st.just("application/octet-stream")),
    st.tuples(st.just("post_too_large")),
    st.tuples(st.just("ws_closed"), st.booleans()),
    st.tuples(st.just("probe_closed")),
    st.tuples(st.just("close")),
)
ops = st.one_of(*[common] * 12, rare)
upgrade_prefix = st.sampled_from([[], [("probe",)], [("get",), ("probe",), ("probe_frame", "2probe")]])
scripts = st.builds(lambda a, b: a + b, upgrade_prefix, st.lists(ops, max_size=60))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["polling", "websocket"]), scripts)
def test_random_drives_keep_the_invariants(transport, script):
    now = 0.0
    s = Session("sid", CONFIG, transport, now)
    events: list = []
    parked = False
    probe = False

    def check_reply(reply: HttpReply, is_get: bool) -> None:
        assert reply.status in (200, 400, 413)
        events.extend(reply.events)
        if is_get and reply.status == 200:
            decode_payload(reply.body)  # every GET body is a valid payload

    for op in script:
        kind = op[0]
        if kind == "send":
            pkt = text_message(op[1].hex().encode()) if op[2] else binary_message(op[1])
            result = s.send(pkt)
            if s.state in (SessionState.CLOSING, SessionState.CLOSED):
                assert result is SendResult.CLOSED
        elif kind == "advance":
            now += op[1]
            events.extend(s.tick(now))
        elif kind == "get" and s.transport == "polling" and not parked:
            reply = s.begin_get(now)
            if reply is None:
                parked = True
            else:
                check_reply(reply, True)
        elif kind == "overlap" and s.transport == "polling" and parked:
            check_reply(s.begin_get(now), False)
        elif kind in ("take", "get") and parked:
            reply = s.take_get_reply()
            if reply is not None:
                parked = False
                check_reply(reply, True)
        elif kind == "get_aborted" and parked:
            parked = False
            e = s.get_aborted(now)
            if e is not None:
                events.append(e)
        elif kind == "post" and s.transport == "polling":
            reply = s.begin_post(op[2], now)
            if reply is None:
                reply = s.end_post(op[1], now) if len(op[1]) <= CONFIG.max_payload else s.post_too_large()
            check_reply(reply, False)
        elif kind == "ws" and s.transport == "websocket":
            e = s.receive_ws(op[1], now)
            if e is not None:
                events.append(e)
        elif kind == "ws_closed" and s.transport == "websocket":
            e = s.ws_closed(now, error=op[1])
            if e is not None:
                events.append(e)
        elif kind == "probe" and s.accepts_probe:
            s.attach_probe(now)
            probe = True
        elif kind == "probe_frame" and probe:
            out = s.receive_probe(op[1], now)
            events.extend(out.events)
            if out.close_probe or Upgraded() in out.events:
                probe = False
            if out.reply is not None:
                assert out.reply.ws == b"3probe"
        elif kind == "probe_closed" and probe:
            probe = False
            e = s.probe_closed()
            if e is not None:
                events.append(e)
        elif kind == "close":
            events.extend(s.close(now))

        # ---- invariants after every step
        if s.state is not SessionState.UPGRADING:
            probe = False
        assert s.queued_bytes <= CONFIG.max_queue_bytes
        assert s.queued <= CONFIG.max_queue_packets + 2  # + open and one ping
        if s.transport == "websocket":
            assert s.state is not SessionState.UPGRADING
            assert not s.get_ready or parked
        if s.state is SessionState.UPGRADING:
            assert s.transport == "polling"
        if s.state is SessionState.CLOSED:
            assert s.next_deadline() == float("inf")
        else:
            assert s.next_deadline() > now or s.next_deadline() <= now  # a number
        if not parked:
            assert s.take_get_reply() is None

    for e in events:
        event(type(e).__name__ + (f" {e.reason.value}" if isinstance(e, SessionClosed) else ""))
    closed = [i for i, e in enumerate(events) if isinstance(e, SessionClosed)]
    assert len(closed) <= 1
    if closed:
        assert s.state is SessionState.CLOSED
        assert not any(isinstance(e, (MessageReceived, Upgraded)) for e in events[closed[0] + 1:])
    else:
        assert s.state is not SessionState.CLOSED
    assert events.count(Upgraded()) <= 1
    if Upgraded() in events:
        assert s.transport == "websocket"
