"""Socket.IO parser properties: round trips (binary and nested placeholders included),
the fast path agrees with the general encoder, and garbage raises only ParseError."""

from __future__ import annotations

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fabric.socketio.parser import (
    MAX_ACK_ID,
    RESERVED_EVENTS,
    Decoder,
    Packet,
    PacketType,
    ParseError,
    encode,
    encode_ack,
    encode_event,
    has_binary,
)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = PacketType

keys = st.text(max_size=8).filter(lambda k: k != "_placeholder")
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=15,
)
binary_values = st.recursive(
    scalars | st.binary(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=15,
)
event_names = st.text(max_size=12).filter(lambda s: s not in RESERVED_EVENTS) | st.integers() | st.floats(
    allow_nan=False, allow_infinity=False
)
namespaces = st.just("/") | st.text(max_size=10).filter(
    lambda s: "," not in s and all(ord(c) >= 0x20 and ord(c) != 0x7F for c in s)
).map(lambda s: "/" + s)
ack_ids = st.integers(min_value=0, max_value=MAX_ACK_ID)


def packets(values):
    return st.one_of(
        st.builds(
            Packet, st.just(CONNECT), namespaces,
            st.none() | st.dictionaries(keys, json_values, max_size=4), st.none(),
        ),
        st.builds(Packet, st.just(DISCONNECT), namespaces, st.none(), st.none()),
        st.builds(
            Packet, st.just(EVENT), namespaces,
            st.builds(lambda n, rest: [n, *rest], event_names, st.lists(values, max_size=4)),
            st.none() | ack_ids,
        ),
        st.builds(Packet, st.just(ACK), namespaces, st.lists(values, max_size=4), ack_ids),
        st.builds(
            Packet, st.just(CONNECT_ERROR), namespaces,
            st.text(max_size=20) | st.dictionaries(keys, json_values, max_size=3), st.none(),
        ),
    )


def decode_all(header: bytes, attachments: list[bytes], decoder: Decoder | None = None) -> Packet:
    d = decoder or Decoder(max_attachments=1000)
    result = d.feed(header.decode("utf-8"))
    for i, blob in enumerate(attachments):
        assert result is None and d.awaiting == len(attachments) - i
        result = d.feed(blob)
    assert d.awaiting == 0
    return result


def normalized(packet: Packet) -> Packet:
    """What the decoder returns for an encoded packet: binary types become EVENT/ACK."""
    ptype = {BINARY_EVENT: EVENT, BINARY_ACK: ACK}.get(packet.type, packet.type)
    return packet._replace(type=ptype)


@FAST
@given(packets(json_values))
def test_text_packets_round_trip(packet):
    header, attachments = encode(packet)
    assert attachments == []
    assert decode_all(header, attachments) == packet


@FAST
@given(packets(binary_values))
def test_binary_packets_round_trip(packet):
    header, attachments = encode(packet)
    assert bool(attachments) == has_binary(packet.data)
    if attachments:
        assert header[:1] in b"56" and int(header[1:header.index(b"-")]) == len(attachments)
    assert decode_all(header, attachments) == normalized(packet)


@settings(FAST, max_examples=100)
@given(st.lists(packets(binary_values), min_size=1, max_size=6))
def test_one_decoder_decodes_a_stream(stream):
    d = Decoder(max_attachments=1000)
    for packet in stream:
        header, attachments = encode(packet)
        assert decode_all(header, attachments, d) == normalized(packet)


@FAST
@given(event_names, st.lists(json_values, max_size=4), namespaces, st.none() | ack_ids)
def test_fast_event_path_agrees_with_encode(name, rest, nsp, ack_id):
    data = [name, *rest]
    assert encode_event(data, nsp, ack_id) == encode(Packet(EVENT, nsp, data, ack_id))[0]


@FAST
@given(st.lists(json_values, max_size=4), ack_ids, namespaces)
def test_fast_ack_path_agrees_with_encode(data, ack_id, nsp):
    assert encode_ack(data, ack_id, nsp) == encode(Packet(ACK, nsp, data, ack_id))[0]


def feed_quietly(d: Decoder, item) -> None:
    try:
        d.feed(item)
    except ParseError:
        pass


@FAST
@given(st.text(max_size=60))
def test_garbage_text_raises_only_parse_error(text):
    feed_quietly(Decoder(), text)


TOKENS = [
    "0", "1", "2", "3", "4", "5", "6", "7", "-", "/", ",", "[", "]", "{", "}", '"', ":",
    '"_placeholder"', "true", '"num"', "null", "a", "9" * 17, " ", "\x00", "\u00e9", "1e999",
]


@FAST
@given(st.lists(st.lists(st.sampled_from(TOKENS), max_size=20).map("".join) | st.binary(max_size=4), max_size=8))
def test_near_miss_streams_raise_only_parse_error(stream):
    d = Decoder(max_attachments=3)
    for item in stream:
        feed_quietly(d, item)
        assert d.awaiting >= 0


@FAST
@given(packets(binary_values), st.data())
def test_mutated_encodings_raise_only_parse_error(packet, data):
    header, attachments = encode(packet)
    text = header.decode("utf-8")
    assume(text)
    i = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
    op = data.draw(st.sampled_from(["delete", "insert", "replace", "truncate"]))
    ch = data.draw(st.sampled_from(TOKENS))
    mutated = {
        "delete": text[:i] + text[i + 1:],
        "insert": text[:i] + ch + text[i:],
        "replace": text[:i] + ch + text[i + 1:],
        "truncate": text[:i],
    }[op]
    d = Decoder()
    feed_quietly(d, mutated)
    for blob in attachments:
        feed_quietly(d, blob)
