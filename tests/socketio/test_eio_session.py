"""The Engine.IO session state machine, driven the way the trio adapter will drive it.

Each official-suite scenario (conformance/socketio/suites/engine.io-v4) is replayed here as
a sans-IO script with an explicit clock; PING_INTERVAL/PING_TIMEOUT are the suite's.
"""

from __future__ import annotations

import json

import pytest

from fabric.socketio.eio_packets import (
    Packet,
    PacketEncodeError,
    PacketType,
    binary_message,
    encode_packet,
    text_message,
)
from fabric.socketio.eio_session import (
    CloseReason,
    EngineConfig,
    HttpReply,
    MessageReceived,
    SendResult,
    Session,
    SessionClosed,
    SessionMisuse,
    SessionState,
    UpgradeAborted,
    Upgraded,
    generate_sid,
)

SUITE = EngineConfig(ping_interval_ms=300, ping_timeout_ms=200, max_payload=1_000_000)
T = 100.0  # an arbitrary clock origin


def polling(config=SUITE, now=T) -> Session:
    s = Session("sid1", config, "polling", now)
    reply = s.begin_get(now)
    assert reply is not None and reply.status == 200 and reply.body.startswith(b"0{")
    return s


def websocket(config=SUITE, now=T) -> Session:
    s = Session("sid1", config, "websocket", now)
    batch = s.take_ws_batch()
    assert len(batch) == 1 and batch[0].ws.startswith(b"0{")
    return s


def ws_texts(session) -> list[str]:
    return [p.ws.decode() if p.is_text else p.ws for p in session.take_ws_batch()]


def post(session, body, now=T, content_type="text/plain;charset=UTF-8") -> HttpReply:
    assert session.begin_post(content_type, now) is None
    return session.end_post(body, now)


# ----------------------------------------------------------------------------- handshake


def test_polling_handshake_json_exact_keys_and_values():
    s = Session("abc", SUITE, "polling", T)
    assert s.state is SessionState.OPENING
    reply = s.begin_get(T)
    assert reply.status == 200
    assert reply.content_type == "text/plain; charset=UTF-8"
    assert reply.body == (
        b'0{"sid":"abc","upgrades":["websocket"],"pingInterval":300,"pingTimeout":200,'
        b'"maxPayload":1000000}'
    )
    assert s.state is SessionState.OPEN


def test_websocket_handshake_has_no_upgrades():
    s = Session("abc", SUITE, "websocket", T)
    (open_packet,) = s.take_ws_batch()
    assert open_packet.is_text
    value = json.loads(open_packet.ws[1:])
    assert list(value) == ["sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"]
    assert value["upgrades"] == []
    assert s.state is SessionState.OPEN


def test_no_upgrades_when_disallowed():
    s = Session("abc", EngineConfig(allow_upgrades=False), "polling", T)
    assert json.loads(s.handshake_json())["upgrades"] == []
    assert not s.accepts_probe
    s = Session("abc", EngineConfig(transports=("polling",)), "polling", T)
    assert json.loads(s.handshake_json())["upgrades"] == []


def test_default_config_values_are_nodes():
    c = EngineConfig()
    assert (c.ping_interval_ms, c.ping_timeout_ms, c.upgrade_timeout_ms, c.max_payload) == (
        25000, 20000, 10000, 1_000_000
    )
    with pytest.raises(ValueError):
        EngineConfig(ping_interval_ms=0)
    with pytest.raises(ValueError):
        EngineConfig(max_queue_bytes=0)


def test_generate_sid():
    a, b = generate_sid(), generate_sid()
    assert a != b and len(a) == 20 and "=" not in a


def test_unknown_transport():
    with pytest.raises(ValueError):
        Session("x", SUITE, "webtransport", T)


# ----------------------------------------------------------------------------- polling messages


def test_post_then_get_echo_one_packet():
    s = polling()
    reply = post(s, b"4hello")
    assert (reply.status, reply.content_type, reply.body) == (200, "text/html", b"ok")
    assert reply.events == (MessageReceived("hello"),)
    # the echo endpoint sends it back
    assert s.send(encode_packet(Packet(PacketType.MESSAGE, "hello"))) is SendResult.QUEUED
    assert s.begin_get(T).body == b"4hello"


def test_post_several_and_binary_packets():
    s = polling()
    reply = post(s, b"4test1\x1e4test2\x1ebAQIDBA==")
    assert reply.events == (
        MessageReceived("test1"), MessageReceived("test2"), MessageReceived(b"\x01\x02\x03\x04")
    )
    for e in reply.events:
        s.send(encode_packet(Packet(PacketType.MESSAGE, e.data)))
    assert s.begin_get(T).body == b"4test1\x1e4test2\x1ebAQIDBA=="


def test_parked_get_is_woken_by_send():
    s = polling()
    assert s.begin_get(T) is None  # parked
    assert not s.wants_write and s.take_get_reply() is None
    assert s.send(text_message(b"x")) is SendResult.WAKE
    assert s.send(text_message(b"y")) is SendResult.WAKE  # still parked until taken
    assert s.wants_write and s.get_ready
    assert s.take_get_reply().body == b"4x\x1e4y"
    assert s.take_get_reply() is None
    assert s.send(text_message(b"z")) is SendResult.QUEUED  # no GET parked


def test_invalid_packet_in_post_closes_with_parse_error():
    s = polling()
    reply = post(s, b"abc")
    assert reply.status == 400
    assert reply.events[-1] == SessionClosed(CloseReason.PARSE_ERROR, reply.events[-1].description)
    assert "unknown packet type" in reply.events[-1].description
    assert s.state is SessionState.CLOSED
    assert s.begin_get(T).status == 400  # the suite's next GET


def test_packets_before_a_bad_one_are_delivered():
    s = polling()
    reply = post(s, b"4a\x1e4b\x1eabc\x1e4c")
    assert reply.status == 400
    assert reply.events[:2] == (MessageReceived("a"), MessageReceived("b"))
    assert isinstance(reply.events[2], SessionClosed) and len(reply.events) == 3


def test_bad_utf8_body_is_a_parse_error():
    s = polling()
    reply = post(s, b"4\xff")
    assert reply.status == 400 and reply.events[0].reason is CloseReason.PARSE_ERROR


def test_duplicate_get_closes_the_session():
    s = polling()
    assert s.begin_get(T) is None
    second = s.begin_get(T + 0.005)
    assert second.status == 400
    assert second.events == (SessionClosed(CloseReason.TRANSPORT_ERROR, "overlap from client"),)
    assert s.get_ready
    first = s.take_get_reply()
    assert (first.status, first.body) == (200, b"1")
    assert s.begin_get(T + 0.01).status == 400


def test_cancelled_get_closes_the_session():
    s = polling()
    assert s.begin_get(T) is None
    closed = s.get_aborted(T + 0.005)
    assert closed == SessionClosed(CloseReason.TRANSPORT_ERROR, "poll connection closed prematurely")
    assert s.begin_get(T + 0.01).status == 400
    assert s.get_aborted(T) is None  # nothing parked any more


def test_octet_stream_post_is_refused_and_closes():
    s = polling()
    reply = s.begin_post("application/octet-stream", T)
    assert reply.status == 400
    assert reply.events == (SessionClosed(CloseReason.TRANSPORT_ERROR, "invalid content"),)


def test_other_content_types_are_fine():
    for ct in (None, "text/plain", "text/plain;charset=UTF-8", "application/json"):
        s = polling()
        assert post(s, b"4x", content_type=ct).status == 200


def test_overlapping_posts_close():
    s = polling()
    assert s.begin_post("text/plain", T) is None
    second = s.begin_post("text/plain", T)
    assert second.status == 400 and second.events[0].reason is CloseReason.TRANSPORT_ERROR
    assert s.end_post(b"4late", T).status == 400  # the first one finds the session gone


def test_post_too_large_is_413_and_keeps_the_session():
    s = Session("x", EngineConfig(max_payload=10), "polling", T)
    assert s.begin_post("text/plain", T) is None
    assert s.post_too_large() == HttpReply(413, None, b"")
    assert s.state is not SessionState.CLOSED
    assert post(s, b"4" + b"x" * 9).status == 200
    # end_post checks the bound too, should the adapter not have
    assert post(s, b"4" + b"x" * 10).status == 413


def test_post_aborted_closes():
    s = polling()
    assert s.begin_post(None, T) is None
    assert s.post_aborted().reason is CloseReason.TRANSPORT_ERROR
    assert s.post_aborted() is None


def test_post_with_upgrade_noop_open_packets_is_ignored():
    s = polling()
    reply = post(s, b"5\x1e6\x1e0\x1e4x")
    assert reply.events == (MessageReceived("x"),)


def test_client_ping_is_a_transport_error():
    s = polling()
    reply = post(s, b"2")
    assert reply.status == 200
    assert reply.events == (SessionClosed(CloseReason.TRANSPORT_ERROR, "invalid heartbeat direction"),)


# ----------------------------------------------------------------------------- heartbeat


def test_polling_ping_pong_three_times():
    s = polling()
    now = T
    for _ in range(3):
        assert s.next_deadline() == pytest.approx(now + 0.3)
        assert s.begin_get(now + 0.01) is None  # nothing yet: parked
        now = s.next_deadline()
        assert s.tick(now) == ()
        assert s.wants_write
        assert s.take_get_reply().body == b"2"
        assert s.next_deadline() == pytest.approx(now + 0.2)  # the pong deadline
        now += 0.05
        assert post(s, b"3", now).status == 200


def test_polling_ping_timeout_closes():
    s = polling()
    s.tick(T + 0.3)  # ping queued, nobody polls
    assert s.next_deadline() == pytest.approx(T + 0.5)
    assert s.tick(T + 0.49) == ()
    assert s.tick(T + 0.5) == (SessionClosed(CloseReason.PING_TIMEOUT, ""),)
    assert s.begin_get(T + 0.51).status == 400
    assert s.next_deadline() == float("inf")


def test_get_applies_deadlines_itself():
    # a GET just after the ping fell due gets it without waiting for the adapter's timer
    s = polling()
    assert s.begin_get(T + 0.3).body == b"2"
    # a GET after the pong deadline finds the session gone, timer or not
    reply = s.begin_get(T + 0.6)
    assert reply.status == 400 and reply.events == (SessionClosed(CloseReason.PING_TIMEOUT, ""),)


def test_late_timer_on_an_unpolled_session_counts_from_when_the_ping_fell_due():
    # The official suite's "closes the session upon ping timeout": the client sleeps
    # pingInterval + pingTimeout and polls. A loaded loop whose timer ran late must answer
    # as a punctual server would: the ping fell due at 0.3, nobody could see it before
    # polling, so the session is gone at 0.5.
    s = polling()
    assert s.tick(T + 0.45) == ()  # the ping's timer, 150 ms late
    assert s.next_deadline() == pytest.approx(T + 0.5)
    reply = s.begin_get(T + 0.501)
    assert reply.status == 400 and reply.events == (SessionClosed(CloseReason.PING_TIMEOUT, ""),)
    # a timer so late that the pong deadline passed too closes at once
    s = polling()
    assert s.tick(T + 0.6) == (SessionClosed(CloseReason.PING_TIMEOUT, ""),)


def test_late_timer_with_a_parked_get_gives_the_client_its_full_timeout():
    s = polling()
    assert s.begin_get(T + 0.01) is None  # parked: the ping is written as soon as it is queued
    s.tick(T + 0.45)  # 150 ms late
    assert s.take_get_reply().body == b"2"
    assert s.next_deadline() == pytest.approx(T + 0.65)
    assert post(s, b"3", T + 0.6).status == 200


def test_late_timer_on_a_websocket_gives_the_client_its_full_timeout():
    s = websocket()
    s.tick(T + 0.45)
    assert ws_texts(s) == ["2"]
    assert s.next_deadline() == pytest.approx(T + 0.65)


def test_post_applies_the_pong_deadline():
    s = polling()
    s.tick(T + 0.3)
    reply = s.begin_post("text/plain", T + 0.55)
    assert reply.status == 400 and reply.events[0].reason is CloseReason.PING_TIMEOUT


def test_websocket_ping_pong_and_timeout():
    s = websocket()
    for i in range(3):
        now = s.next_deadline()
        s.tick(now)
        assert ws_texts(s) == ["2"]
        assert s.receive_ws("3", now + 0.01) is None
    s.tick(s.next_deadline())
    assert ws_texts(s) == ["2"]
    closed = s.tick(s.next_deadline())
    assert closed == (SessionClosed(CloseReason.PING_TIMEOUT, ""),)


def test_pong_reschedules_from_the_pong():
    s = websocket()
    s.tick(T + 0.3)
    s.receive_ws("3", T + 0.45)
    assert s.next_deadline() == pytest.approx(T + 0.75)


def test_ping_is_queued_even_when_the_queue_is_full():
    s = websocket(EngineConfig(max_queue_packets=1))
    assert s.send(text_message(b"a")) is SendResult.WAKE
    assert s.send(text_message(b"b")) is SendResult.OVERFLOW
    s.tick(T + 25)
    assert ws_texts(s) == ["4a", "2"]


# ----------------------------------------------------------------------------- WebSocket


def test_websocket_messages():
    s = websocket()
    assert s.receive_ws("4hello", T) == MessageReceived("hello")
    assert s.receive_ws(b"\x01\x02\x03\x04", T) == MessageReceived(b"\x01\x02\x03\x04")
    assert s.receive_ws(bytearray(b"\x05"), T) == MessageReceived(b"\x05")
    assert s.receive_ws("4", T) == MessageReceived("")
    assert s.receive_ws("bAQID", T) == MessageReceived(b"\x01\x02\x03")
    for ignored in ("5", "6", "0"):
        assert s.receive_ws(ignored, T) is None


def test_websocket_invalid_packet_closes():
    s = websocket()
    s.send(text_message(b"pending"))
    closed = s.receive_ws("abc", T)
    assert closed.reason is CloseReason.PARSE_ERROR
    assert s.take_ws_batch() == []  # an error discards the queue
    assert s.receive_ws("4late", T) is None
    assert s.ws_closed(T) is None


def test_websocket_close_packet_closes():
    s = websocket()
    assert s.receive_ws("1", T) == SessionClosed(CloseReason.TRANSPORT_CLOSE, "close packet from client")


def test_websocket_gone():
    s = websocket()
    assert s.ws_closed(T).reason is CloseReason.TRANSPORT_CLOSE
    s = websocket()
    assert s.ws_closed(T, error=True).reason is CloseReason.TRANSPORT_ERROR


def test_websocket_send_wake_semantics():
    s = websocket()
    assert s.send(text_message(b"a")) is SendResult.WAKE
    assert s.send(text_message(b"b")) is SendResult.QUEUED
    assert s.queued == 2 and s.queued_bytes == 4  # b"4a" + b"4b"
    assert [p.ws for p in s.take_ws_batch()] == [b"4a", b"4b"]
    assert s.queued_bytes == 0
    assert s.send(binary_message(b"\x00")) is SendResult.WAKE


def test_queue_bounds():
    s = websocket(EngineConfig(max_queue_packets=3, max_queue_bytes=10))
    assert s.send(text_message(b"1234")) is SendResult.WAKE  # 5 bytes
    assert s.send(text_message(b"12345")) is SendResult.OVERFLOW  # 5 + 6 > 10: not queued
    assert s.send(text_message(b"123")) is SendResult.QUEUED  # 9
    assert s.send(text_message(b"")) is SendResult.QUEUED  # exactly 10
    assert s.send(text_message(b"")) is SendResult.OVERFLOW  # a 4th packet
    assert (s.queued, s.queued_bytes) == (3, 10)


def test_queue_count_bound():
    s = websocket(EngineConfig(max_queue_packets=2))
    assert s.send(text_message(b"a")) is SendResult.WAKE
    assert s.send(text_message(b"b")) is SendResult.QUEUED
    assert s.send(text_message(b"c")) is SendResult.OVERFLOW
    s.take_ws_batch()
    assert s.send(text_message(b"c")) is SendResult.WAKE


def test_misuse_is_reported():
    s = websocket()
    with pytest.raises(SessionMisuse):
        s.attach_probe(T)
    p = polling()
    with pytest.raises(SessionMisuse):
        p.take_ws_batch()
    with pytest.raises(SessionMisuse):
        p.receive_ws("4x", T)
    with pytest.raises(SessionMisuse):
        p.ws_closed(T)
    assert s.begin_get(T).status == 400  # a GET on a WebSocket session: transport mismatch


def test_polling_refuses_unframeable_text():
    s = polling()
    with pytest.raises(PacketEncodeError):
        s.send(encode_packet(Packet(PacketType.MESSAGE, "a\x1eb")))
    w = websocket()
    assert w.send(encode_packet(Packet(PacketType.MESSAGE, "a\x1eb"))) is SendResult.WAKE


# ----------------------------------------------------------------------------- closing


def test_client_close_packet_over_polling_answers_parked_get_with_noop():
    s = polling()
    assert s.begin_get(T) is None
    reply = post(s, b"1")
    assert reply.status == 200
    assert reply.events == (SessionClosed(CloseReason.TRANSPORT_CLOSE, "close packet from client"),)
    assert s.take_get_reply().body == b"6"
    assert s.begin_get(T).status == 400


def test_packets_after_a_close_packet_are_not_delivered():
    s = polling()
    reply = post(s, b"1\x1e4after")
    assert [type(e) for e in reply.events] == [SessionClosed]


def test_server_close_with_parked_get():
    s = polling()
    assert s.begin_get(T) is None
    events = s.close(T)
    assert events == (SessionClosed(CloseReason.FORCED_CLOSE, ""),)
    assert s.take_get_reply().body == b"1"
    assert s.close(T) == ()


def test_server_close_waits_for_a_get_to_carry_the_close_packet():
    s = polling()
    s.send(text_message(b"last"))
    assert s.close(T, CloseReason.FORCED_SERVER_CLOSE) == ()
    assert s.state is SessionState.CLOSING
    assert s.send(text_message(b"more")) is SendResult.CLOSED
    assert post(s, b"4ignored").events == ()  # inbound is ignored while closing
    reply = s.begin_get(T + 1)
    assert reply.body == b"4last\x1e1"
    assert reply.events == (SessionClosed(CloseReason.FORCED_SERVER_CLOSE, ""),)
    assert s.state is SessionState.CLOSED


def test_server_close_gives_up_after_close_timeout():
    s = polling()
    s.close(T)
    assert s.next_deadline() == pytest.approx(T + 30)
    assert s.tick(T + 29) == ()
    assert s.tick(T + 30) == (SessionClosed(CloseReason.FORCED_CLOSE, "close timeout"),)


def test_server_close_over_websocket_keeps_the_queue_for_a_last_batch():
    s = websocket()
    s.send(text_message(b"bye"))
    assert s.close(T) == (SessionClosed(CloseReason.FORCED_CLOSE, ""),)
    assert [p.ws for p in s.take_ws_batch()] == [b"4bye"]
    assert s.send(text_message(b"x")) is SendResult.CLOSED


def test_closed_session_answers_unknown_sid():
    s = polling()
    s.close(T)
    s.tick(T + 31)
    reply = s.begin_get(T + 31)
    assert json.loads(reply.body) == {"code": 1, "message": "Session ID unknown"}
    assert s.begin_post("text/plain", T).status == 400
    assert s.tick(T + 100) == ()


# ----------------------------------------------------------------------------- upgrade


def upgrading() -> Session:
    s = polling()
    assert s.accepts_probe
    s.attach_probe(T)
    assert s.state is SessionState.UPGRADING
    assert not s.accepts_probe  # a second WebSocket is accepted then closed
    return s


def test_successful_upgrade_suite_script():
    s = upgrading()
    out = s.receive_probe("2probe", T)
    assert out.reply.ws == b"3probe" and out.events == () and not out.close_probe
    # the paused client's GET is answered with a noop straight away
    reply = s.begin_get(T)
    assert reply.body == b"6"
    out = s.receive_probe("5", T)
    assert out.events == (Upgraded(),) and out.reply is None and not out.close_probe
    assert s.transport == "websocket" and s.state is SessionState.OPEN
    assert s.take_ws_batch() == []  # nothing (no noop) is written before the data
    assert s.receive_ws("4hello", T) == MessageReceived("hello")
    s.send(text_message(b"hello"))
    assert ws_texts(s) == ["4hello"]


def test_parked_get_is_released_by_the_probe_and_the_upgrade():
    s = upgrading()
    assert s.begin_get(T) is None
    s.receive_probe("2probe", T)
    assert s.wants_write
    assert s.take_get_reply().body == b"6"
    assert s.begin_get(T) == HttpReply(200, "text/plain; charset=UTF-8", b"6")
    s = upgrading()
    assert s.begin_get(T) is None
    s.receive_probe("5", T)
    assert s.get_ready and s.take_get_reply().body == b"6"


def test_packets_queued_during_upgrade_flow_on_the_websocket():
    s = upgrading()
    s.receive_probe("2probe", T)
    s.send(text_message(b"during"))
    s.receive_probe("5", T)
    assert ws_texts(s) == ["4during"]


def test_packets_queued_during_upgrade_may_still_go_by_polling():
    s = upgrading()
    s.receive_probe("2probe", T)
    s.send(text_message(b"during"))
    assert s.begin_get(T).body == b"4during"


def test_polling_after_upgrade_gets_400():
    s = upgrading()
    s.receive_probe("2probe", T)
    s.receive_probe("5", T)
    assert s.begin_get(T).status == 400


@pytest.mark.parametrize("frame", ["4hello", "2", "3probe", "abc", b"\x01", "6"])
def test_anything_else_on_the_probe_aborts_the_upgrade(frame):
    s = upgrading()
    out = s.receive_probe(frame, T)
    assert out.close_probe and out.reply is None
    assert out.events == (UpgradeAborted("unexpected packet during upgrade"),)
    assert s.transport == "polling" and s.state is SessionState.OPEN
    assert s.accepts_probe  # may try again
    assert s.receive_probe("5", T).close_probe  # the old probe is dead


def test_repeated_probe_pings_are_answered():
    s = upgrading()
    assert s.receive_probe("2probe", T).reply.ws == b"3probe"
    assert s.receive_probe("2probe", T).reply.ws == b"3probe"


def test_upgrade_timeout():
    s = polling(EngineConfig(ping_interval_ms=60_000))
    s.attach_probe(T)
    assert s.next_deadline() == pytest.approx(T + 10)
    s.receive_probe("2probe", T)
    assert s.tick(T + 9.9) == ()
    assert s.tick(T + 10) == (UpgradeAborted("upgrade timeout"),)
    assert s.state is SessionState.OPEN and s.transport == "polling"
    assert s.begin_get(T + 10) is None  # no longer probed: a GET parks again


def test_probe_closed_aborts():
    s = upgrading()
    assert s.probe_closed() == UpgradeAborted("probe transport closed")
    assert s.probe_closed() is None


def test_close_during_upgrade_aborts_the_probe():
    s = upgrading()
    assert s.begin_get(T) is None
    events = s.close(T)
    assert events[0] == UpgradeAborted("session closed")
    assert events[1].reason is CloseReason.FORCED_CLOSE
    assert s.take_get_reply().body == b"1"


def test_heartbeat_survives_the_upgrade():
    s = polling()
    s.tick(T + 0.3)  # ping queued on polling
    s.attach_probe(T + 0.31)
    s.receive_probe("2probe", T + 0.31)
    s.receive_probe("5", T + 0.32)
    assert ws_texts(s) == ["2"]
    assert s.tick(T + 0.5) == (SessionClosed(CloseReason.PING_TIMEOUT, ""),)
