"""Engine.IO v4 packet codec: both framings, strict decoding, the fan-out encodings."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric.socketio.eio_packets import (
    SEPARATOR,
    DecodeProblem,
    EncodedPacket,
    Packet,
    PacketDecodeError,
    PacketEncodeError,
    PacketType,
    binary_message,
    decode_payload,
    decode_text,
    decode_ws,
    encode_packet,
    encode_payload,
    encode_segment,
    encode_ws,
    iter_payload,
    join_segments,
    message_polling_segment,
    message_ws_payload,
    text_message,
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ----------------------------------------------------------------------------- unit


@pytest.mark.parametrize(
    ("text", "packet"),
    [
        ("0{}", Packet(PacketType.OPEN, "{}")),
        ("1", Packet(PacketType.CLOSE)),
        ("2", Packet(PacketType.PING)),
        ("2probe", Packet(PacketType.PING, "probe")),
        ("3probe", Packet(PacketType.PONG, "probe")),
        ("4hello", Packet(PacketType.MESSAGE, "hello")),
        ("4", Packet(PacketType.MESSAGE, "")),
        ("5", Packet(PacketType.UPGRADE)),
        ("6", Packet(PacketType.NOOP)),
        ("4\u00e9\U0001f600", Packet(PacketType.MESSAGE, "\u00e9\U0001f600")),
        ("bAQIDBA==", Packet(PacketType.MESSAGE, b"\x01\x02\x03\x04")),
        ("b", Packet(PacketType.MESSAGE, b"")),
    ],
)
def test_decode_text(text, packet):
    assert decode_text(text) == packet


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", DecodeProblem.EMPTY_PACKET),
        ("abc", DecodeProblem.UNKNOWN_TYPE),
        ("7", DecodeProblem.UNKNOWN_TYPE),
        ("9x", DecodeProblem.UNKNOWN_TYPE),
        (" 4x", DecodeProblem.UNKNOWN_TYPE),
        ("\u0664x", DecodeProblem.UNKNOWN_TYPE),  # an Arabic-Indic digit is not a type
        ("bAQIDBA", DecodeProblem.BAD_BASE64),  # padding missing
        ("bAQID BA==", DecodeProblem.BAD_BASE64),
        ("b-_8=", DecodeProblem.BAD_BASE64),  # base64url is not base64
        ("bAQIDBA==AA==", DecodeProblem.BAD_BASE64),
        ("b\u00e9", DecodeProblem.BAD_BASE64),
    ],
)
def test_decode_text_errors(text, problem):
    with pytest.raises(PacketDecodeError) as info:
        decode_text(text)
    assert info.value.problem is problem
    assert problem.value in str(info.value)


def test_decode_ws_binary_frame_is_a_binary_message():
    assert decode_ws(b"\x01\x02\x03\x04") == Packet(PacketType.MESSAGE, b"\x01\x02\x03\x04")
    assert decode_ws(bytearray(b"\x00")) == Packet(PacketType.MESSAGE, b"\x00")
    assert decode_ws(memoryview(b"")) == Packet(PacketType.MESSAGE, b"")
    assert type(decode_ws(bytearray(b"x")).data) is bytes


def test_decode_ws_text_frame_may_carry_base64():
    # engine.io-client with forceBase64 sends binary as "b..." text over WebSocket too.
    assert decode_ws("bAQID") == Packet(PacketType.MESSAGE, b"\x01\x02\x03")


def test_suite_payloads_decode():
    assert decode_payload("4hello") == [Packet(PacketType.MESSAGE, "hello")]
    assert decode_payload("4test1\x1e4test2\x1e4test3") == [
        Packet(PacketType.MESSAGE, "test1"),
        Packet(PacketType.MESSAGE, "test2"),
        Packet(PacketType.MESSAGE, "test3"),
    ]
    assert decode_payload(b"4hello\x1ebAQIDBA==") == [
        Packet(PacketType.MESSAGE, "hello"),
        Packet(PacketType.MESSAGE, b"\x01\x02\x03\x04"),
    ]


def test_payload_errors():
    with pytest.raises(PacketDecodeError) as info:
        decode_payload(b"")
    assert info.value.problem is DecodeProblem.EMPTY_PACKET
    with pytest.raises(PacketDecodeError) as info:
        decode_payload("4a\x1e\x1e4b")
    assert info.value.problem is DecodeProblem.EMPTY_PACKET
    with pytest.raises(PacketDecodeError) as info:
        decode_payload(b"4\xff\xfe")
    assert info.value.problem is DecodeProblem.NOT_UTF8
    with pytest.raises(PacketDecodeError) as info:
        decode_payload("4a\x1e")  # trailing separator = an empty last packet
    assert info.value.problem is DecodeProblem.EMPTY_PACKET


def test_iter_payload_yields_the_good_packets_before_the_bad_one():
    it = iter_payload("4a\x1e2\x1eabc\x1e4never")
    assert next(it) == Packet(PacketType.MESSAGE, "a")
    assert next(it) == Packet(PacketType.PING)
    with pytest.raises(PacketDecodeError):
        next(it)


def test_encode_ws():
    assert encode_ws(Packet(PacketType.MESSAGE, "hello")) == "4hello"
    assert encode_ws(Packet(PacketType.PONG, "probe")) == "3probe"
    assert encode_ws(Packet(PacketType.NOOP)) == "6"
    assert encode_ws(Packet(PacketType.MESSAGE, b"\x01\x02")) == b"\x01\x02"
    with pytest.raises(PacketEncodeError):
        encode_ws(Packet(PacketType.PING, b"\x01"))


def test_encode_segment_and_payload():
    assert encode_segment(Packet(PacketType.MESSAGE, "h\u00e9")) == "4h\u00e9".encode()
    assert encode_segment(Packet(PacketType.MESSAGE, b"\x01\x02\x03\x04")) == b"bAQIDBA=="
    assert encode_payload(
        [Packet(PacketType.MESSAGE, "hello"), Packet(PacketType.MESSAGE, b"\x01\x02\x03\x04")]
    ) == b"4hello\x1ebAQIDBA=="
    with pytest.raises(PacketEncodeError):
        encode_segment(Packet(PacketType.MESSAGE, "a\x1eb"))
    with pytest.raises(PacketEncodeError):
        encode_segment(Packet(PacketType.CLOSE, b"x"))


def test_message_functions_for_fan_out():
    assert message_ws_payload("hi") == (True, b"4hi")
    data = b"\x00\x01"
    is_text, payload = message_ws_payload(data)
    assert not is_text and payload is data  # no copy
    assert message_ws_payload(bytearray(b"\x02")) == (False, b"\x02")
    assert message_polling_segment("hi") == b"4hi"
    assert message_polling_segment(b"\x01\x02\x03\x04") == b"bAQIDBA=="
    with pytest.raises(PacketEncodeError):
        message_polling_segment("\x1e")


def test_encoded_packet_text_shares_one_buffer():
    p = text_message(b'2["chat","hi"]')
    assert p.is_text and p.ws == b'42["chat","hi"]'
    assert p.segment is p.ws
    assert p.nbytes == len(p.ws)
    assert p.ws_frame is None
    p.ws_frame = b"cached"  # the slot is free for the adapter
    assert p.ws_frame == b"cached"


def test_encoded_packet_binary_segment_is_built_once():
    data = b"\x01\x02\x03\x04"
    p = binary_message(data)
    assert not p.is_text and p.ws is data
    seg = p.segment
    assert seg == b"bAQIDBA=="
    assert p.segment is seg


def test_encoded_packet_with_separator_is_websocket_only():
    p = encode_packet(Packet(PacketType.MESSAGE, "a\x1eb"))
    assert p.ws == b"4a\x1eb"
    with pytest.raises(PacketEncodeError):
        p.segment  # noqa: B018
    with pytest.raises(PacketEncodeError):
        encode_packet(Packet(PacketType.UPGRADE, b""))


def test_join_segments():
    assert join_segments([]) == b""
    assert join_segments([text_message(b"a"), binary_message(b"\xff")]) == b"4a\x1eb/w=="


def test_packet_types_are_the_wire_digits():
    assert [int(t) for t in PacketType] == list(range(7))
    assert [t.name.lower() for t in PacketType] == [
        "open", "close", "ping", "pong", "message", "upgrade", "noop"
    ]


# ----------------------------------------------------------------------------- properties

texts = st.text(max_size=50)
payload_texts = st.text(max_size=50).filter(lambda s: SEPARATOR not in s)
text_packets = st.builds(Packet, st.sampled_from(list(PacketType)), texts)
binary_packets = st.builds(Packet, st.just(PacketType.MESSAGE), st.binary(max_size=64))
polling_packets = st.builds(Packet, st.sampled_from(list(PacketType)), payload_texts) | binary_packets


@FAST
@given(text_packets | binary_packets)
def test_websocket_round_trip(packet):
    assert decode_ws(encode_ws(packet)) == packet
    encoded = encode_packet(packet)
    frame = encoded.ws.decode("utf-8") if encoded.is_text else encoded.ws
    assert decode_ws(frame) == packet


@FAST
@given(polling_packets)
def test_segment_round_trip(packet):
    segment = encode_segment(packet)
    assert decode_text(segment.decode("utf-8")) == packet
    assert encode_packet(packet).segment == segment


@FAST
@given(st.lists(polling_packets, min_size=1, max_size=12))
def test_polling_payload_round_trip(packets):
    body = encode_payload(packets)
    assert decode_payload(body) == packets
    assert decode_payload(body.decode("utf-8")) == packets
    assert list(iter_payload(body)) == packets
    assert join_segments([encode_packet(p) for p in packets]) == body


@FAST
@given(st.binary(max_size=64))
def test_binary_message_both_formats(data):
    p = binary_message(data)
    assert p.ws == data
    assert p.segment == b"b" + base64.b64encode(data)
    assert message_polling_segment(data) == p.segment


@FAST
@given(st.text(max_size=40) | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
def test_garbage_text_raises_only_decode_errors(text):
    try:
        decode_text(text)
    except PacketDecodeError:
        pass


@FAST
@given(st.binary(max_size=80) | st.text(max_size=80).map(str.encode))
def test_garbage_bodies_raise_only_decode_errors(body):
    try:
        decode_payload(body)
    except PacketDecodeError:
        pass
    try:
        for _ in iter_payload(body):
            pass
    except PacketDecodeError:
        pass


@FAST
@given(st.lists(st.sampled_from(["4", "b", "2", "x", "=", "A", "\x1e", "", "1", "\u00e9"]), max_size=20))
def test_near_miss_bodies_raise_only_decode_errors(parts):
    body = "".join(parts)
    try:
        packets = decode_payload(body)
    except PacketDecodeError:
        return
    assert all(isinstance(p, Packet) for p in packets)


def test_encoded_packet_repr_is_short():
    assert "..." in repr(text_message(b"x" * 100))
    assert isinstance(EncodedPacket(True, b"4"), EncodedPacket)
