"""Socket.IO v5 parser: socket.io-parser's rules, our stricter ones, binary reassembly."""

from __future__ import annotations

import pytest

from fabric.socketio.parser import (
    MAX_ACK_ID,
    RESERVED_EVENTS,
    Decoder,
    InvalidPacket,
    Packet,
    PacketType,
    ParseError,
    decode,
    encode,
    encode_ack,
    encode_event,
    has_binary,
)

CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = PacketType
PH0 = {"_placeholder": True, "num": 0}
PH1 = {"_placeholder": True, "num": 1}


# ----------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    ("text", "packet"),
    [
        # the official suite's packets
        ("0", Packet(CONNECT)),
        ('0{"token":"123"}', Packet(CONNECT, "/", {"token": "123"})),
        ("0/custom,", Packet(CONNECT, "/custom")),
        ('0/custom,{"token":"abc"}', Packet(CONNECT, "/custom", {"token": "abc"})),
        ("0/random", Packet(CONNECT, "/random")),  # nsp up to the end
        ("1", Packet(DISCONNECT)),
        ("1/custom", Packet(DISCONNECT, "/custom")),
        ("1/admin,", Packet(DISCONNECT, "/admin")),
        ('2["message",1,"2",{"3":[true]}]', Packet(EVENT, "/", ["message", 1, "2", {"3": [True]}])),
        ('2456["message-with-ack",1,"2",{"3":[false]}]',
         Packet(EVENT, "/", ["message-with-ack", 1, "2", {"3": [False]}], 456)),
        # the protocol document's examples
        ('2/admin,["bar"]', Packet(EVENT, "/admin", ["bar"])),
        ('212["foo"]', Packet(EVENT, "/", ["foo"], 12)),
        ('3/admin,13["bar"]', Packet(ACK, "/admin", ["bar"], 13)),
        ("30[]", Packet(ACK, "/", [], 0)),
        ('4{"message":"Not authorized"}', Packet(CONNECT_ERROR, "/", {"message": "Not authorized"})),
        ('4/admin,"legacy string"', Packet(CONNECT_ERROR, "/admin", "legacy string")),
        # number event names are allowed (isPayloadValid)
        ("2[42]", Packet(EVENT, "/", [42])),
        ("2[1.5,true]", Packet(EVENT, "/", [1.5, True])),
        ("2/,[\"x\"]", Packet(EVENT, "/", ["x"])),
        ("2 [\"x\"] ", Packet(EVENT, "/", ["x"])),  # JSON whitespace
        ('2["caf\u00e9","\U0001f600"]', Packet(EVENT, "/", ["caf\u00e9", "\U0001f600"])),
        ('2/ns\u00e9,["x"]', Packet(EVENT, "/ns\u00e9", ["x"])),
        ('29007199254740991["x"]', Packet(EVENT, "/", ["x"], MAX_ACK_ID)),
        ('50-["x",{"a":1}]', Packet(EVENT, "/", ["x", {"a": 1}])),  # binary type, no attachments
        ('60-7[]', Packet(ACK, "/", [], 7)),
    ],
)
def test_decode(text, packet):
    assert decode(text) == packet
    assert Decoder().feed(text) == packet


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty packet"),
        ("abc", "unknown packet type 'a'"),  # "4abc" in the suite
        ("7", "unknown packet type"),
        (" 2[\"x\"]", "unknown packet type"),
        ("\u0662[\"x\"]", "unknown packet type"),
        ("{}", "unknown packet type"),
        ("2{}", "must be an array"),  # "42{}" in the suite
        ('2abc["message-with-ack",1]', "invalid JSON"),  # "42abc[...]" in the suite
        ("2", "EVENT packets need a payload"),
        ("212", "EVENT packets need a payload"),
        ("2/admin", "EVENT packets need a payload"),
        ('2/admin["x"]', "EVENT packets need a payload"),  # missing comma: all of it is the nsp
        ("2[]", "must not be empty"),
        ("2null", "must be an array"),
        ('2"x"', "must be an array"),
        ("2[null]", "first element"),
        ("2[[\"x\"]]", "first element"),
        ("2[{}]", "first element"),
        ("2[true]", "first element"),
        ('2["x"', "invalid JSON"),
        ('2["x"]]', "invalid JSON"),
        ("2[NaN]", "invalid JSON"),
        ('2["\\ud800"]', "invalid JSON"),  # JSON.parse would accept a lone surrogate
        ("2[1e400]", "invalid JSON"),
        ("3", "ACK packets need a payload"),
        ("312", "ACK packets need a payload"),
        ("3{}", "must be an array"),
        ('3["x"]', "ACK packets need an ack id"),
        ("0[]", "CONNECT payload must be an object"),
        ('0"x"', "CONNECT payload must be an object"),
        ("0null", "CONNECT payload must be an object"),
        ("01{}", "CONNECT packets cannot carry an ack id"),
        ("1{}", "DISCONNECT takes no payload"),
        ("1/admin,{}", "DISCONNECT takes no payload"),
        ("11", "DISCONNECT packets cannot carry an ack id"),
        ("4", "CONNECT_ERROR packets need a payload"),
        ("4[]", "object or a string"),
        ("4null", "object or a string"),
        ("4/x,3{}", "CONNECT_ERROR packets cannot carry an ack id"),
        ('29007199254740992["x"]', "too large"),
        ('2123456789012345678901234567890["x"]', "too large"),
        ('2/a\x00b,["x"]', "bad namespace"),
        ('2/a\x7f,["x"]', "bad namespace"),
        ('5["x"]', "illegal attachments"),
        ('5-["x"]', "illegal attachments"),  # Node reads an empty count as 0
        ('5a-["x"]', "illegal attachments"),
        ('5\u0661-["x"]', "illegal attachments"),
        ('5 1-["x"]', "illegal attachments"),
        ('511-["x",{}]', "too many attachments"),
        ('599999999999999999999-["x"]', "too many attachments"),
        ('51-{}', "must be an array"),
        ('51-["connect",{"_placeholder":true,"num":0}]', "reserved"),
        ('51-[{"_placeholder":true,"num":0}]', "first element"),
        ('61-[{"_placeholder":true,"num":0}]', "need an ack id"),
    ],
)
def test_decode_errors(text, why):
    with pytest.raises(ParseError, match=why if not why.startswith("unknown") else "unknown packet type"):
        Decoder().feed(text)


@pytest.mark.parametrize("name", sorted(RESERVED_EVENTS))
def test_reserved_event_names(name):
    with pytest.raises(ParseError, match="reserved"):
        decode(f'2["{name}"]')
    with pytest.raises(InvalidPacket):
        encode(Packet(EVENT, "/", [name]))
    with pytest.raises(InvalidPacket):
        encode_event([name])


def test_reserved_names_are_nodes():
    assert RESERVED_EVENTS == {
        "connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"
    }


def test_deep_json_is_a_parse_error_not_a_crash():
    with pytest.raises(ParseError):
        decode("2" + "[" * 100_000 + "]" * 100_000)
    deep = '2["x",' + '{"a":' * 200 + "1" + "}" * 200 + "]"
    assert decode(deep).data[0] == "x"


# ----------------------------------------------------------------------------- binary


def test_suite_binary_event():
    d = Decoder()
    assert d.awaiting == 0
    assert d.feed('52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]') is None
    assert d.awaiting == 2
    assert d.feed(b"\x01\x02\x03") is None
    assert d.awaiting == 1
    packet = d.feed(bytearray(b"\x04\x05\x06"))
    assert packet == Packet(EVENT, "/", ["message", b"\x01\x02\x03", b"\x04\x05\x06"])
    assert type(packet.data[2]) is bytes
    assert d.awaiting == 0


def test_suite_binary_ack():
    d = Decoder()
    assert d.feed('52-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]') is None
    d.feed(b"\x01\x02\x03")
    packet = d.feed(b"\x04\x05\x06")
    assert packet == Packet(EVENT, "/", ["message-with-ack", b"\x01\x02\x03", b"\x04\x05\x06"], 789)
    # the server's answer
    header, attachments = encode(Packet(ACK, "/", packet.data[1:], 789))
    assert header == b'62-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
    assert attachments == [b"\x01\x02\x03", b"\x04\x05\x06"]


def test_binary_with_namespace_and_nested_placeholders():
    d = Decoder()
    d.feed('62-/admin,5[{"a":[{"_placeholder":true,"num":1}]},{"_placeholder":true,"num":0}]')
    d.feed(b"zero")
    assert d.feed(b"one") == Packet(ACK, "/admin", [{"a": [b"one"]}, b"zero"], 5)


def test_placeholder_lookalikes_that_are_not_placeholders():
    d = Decoder()
    d.feed('51-["x",{"_placeholder":false,"num":0},{"_placeholder":"true"},{"_placeholder":true,"num":0}]')
    packet = d.feed(b"B")
    assert packet.data == ["x", {"_placeholder": False, "num": 0}, {"_placeholder": "true"}, b"B"]
    # in a plain EVENT a placeholder is just data, as in Node
    assert decode('2["x",{"_placeholder":true,"num":0}]').data == ["x", PH0]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ('51-["x",{"_placeholder":true}]', "malformed placeholder"),
        ('51-["x",{"_placeholder":true,"num":"0"}]', "malformed placeholder"),
        ('51-["x",{"_placeholder":true,"num":0.0}]', "malformed placeholder"),
        ('51-["x",{"_placeholder":true,"num":true}]', "malformed placeholder"),
        ('51-["x",{"_placeholder":true,"num":0,"extra":1}]', "malformed placeholder"),
        ('51-["x",{"_placeholder":true,"num":1}]', "out of range"),
        ('51-["x",{"_placeholder":true,"num":-1}]', "out of range"),
        ('51-["x"]', "attachment count mismatch"),
        ('52-["x",{"_placeholder":true,"num":0}]', "attachment count mismatch"),
        ('52-["x",{"_placeholder":true,"num":0},{"_placeholder":true,"num":0}]', "attachment count mismatch"),
        ('50-["x",{"_placeholder":true,"num":0}]', "out of range"),
    ],
)
def test_placeholder_errors(text, why):
    with pytest.raises(ParseError, match=why):
        Decoder().feed(text)


def test_binary_when_not_reassembling():
    with pytest.raises(ParseError, match="binary data while not reassembling"):
        Decoder().feed(b"\x01")


def test_text_while_awaiting_attachments_resets():
    d = Decoder()
    d.feed('51-["x",{"_placeholder":true,"num":0}]')
    with pytest.raises(ParseError, match="text data while awaiting"):
        d.feed('2["y"]')
    assert d.awaiting == 0
    assert d.feed('2["y"]') == Packet(EVENT, "/", ["y"])  # usable again


def test_max_attachments_is_a_parameter():
    two = '52-["x",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
    with pytest.raises(ParseError, match="too many attachments"):
        Decoder(max_attachments=1).feed(two)
    assert Decoder(max_attachments=2).feed(two) is None
    with pytest.raises(ParseError, match="too many"):
        Decoder(max_attachments=0).feed('51-["x",{"_placeholder":true,"num":0}]')
    assert Decoder(max_attachments=0).feed('50-["x"]') == Packet(EVENT, "/", ["x"])
    with pytest.raises(ValueError):
        Decoder(max_attachments=-1)


def test_decode_refuses_binary_with_attachments():
    with pytest.raises(ParseError, match="needs a Decoder"):
        decode('51-["x",{"_placeholder":true,"num":0}]')


def test_reset_drops_a_partial_packet():
    d = Decoder()
    d.feed('51-["x",{"_placeholder":true,"num":0}]')
    d.reset()
    assert d.awaiting == 0
    with pytest.raises(ParseError):
        d.feed(b"late")


# ----------------------------------------------------------------------------- encoding


def test_encode_simple_packets():
    assert encode(Packet(CONNECT, "/", {"sid": "abc"})) == (b'0{"sid":"abc"}', [])
    assert encode(Packet(CONNECT, "/custom", {"sid": "abc"})) == (b'0/custom,{"sid":"abc"}', [])
    assert encode(Packet(CONNECT)) == (b"0", [])
    assert encode(Packet(DISCONNECT, "/admin")) == (b"1/admin,", [])
    assert encode(Packet(DISCONNECT)) == (b"1", [])
    assert encode(Packet(EVENT, "/", ["auth", {}])) == (b'2["auth",{}]', [])
    assert encode(Packet(EVENT, "/custom", ["auth", {"token": "abc"}])) == (b'2/custom,["auth",{"token":"abc"}]', [])
    assert encode(Packet(ACK, "/", [1, "2", {"3": [False]}], 456)) == (b'3456[1,"2",{"3":[false]}]', [])
    assert encode(Packet(CONNECT_ERROR, "/random", {"message": "Invalid namespace"})) == (
        b'4/random,{"message":"Invalid namespace"}', []
    )
    assert encode(Packet(CONNECT_ERROR, "/", "legacy")) == (b'4"legacy"', [])
    assert encode(Packet(EVENT, "/", ["caf\u00e9"])) == ('2["caf\u00e9"]'.encode(), [])


def test_encode_binary_event_matches_the_suite():
    header, attachments = encode(Packet(EVENT, "/", ["message-back", b"\x01\x02\x03", bytearray(b"\x04\x05\x06")]))
    assert header == b'52-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]'
    assert attachments == [b"\x01\x02\x03", b"\x04\x05\x06"]
    assert all(type(a) is bytes for a in attachments)


def test_encode_does_not_mutate_the_callers_data():
    data = ["x", {"k": [b"a", (b"b", 1)]}]
    header, attachments = encode(Packet(EVENT, "/nsp", data, 3))
    assert data == ["x", {"k": [b"a", (b"b", 1)]}]
    assert header == b'52-/nsp,3["x",{"k":[{"_placeholder":true,"num":0},[{"_placeholder":true,"num":1},1]]}]'
    assert attachments == [b"a", b"b"]


def test_encode_explicit_binary_type_without_binary():
    assert encode(Packet(BINARY_EVENT, "/", ["x"])) == (b'50-["x"]', [])
    assert decode('50-["x"]') == Packet(EVENT, "/", ["x"])


def test_memoryview_attachments():
    header, attachments = encode(Packet(EVENT, "/", ["x", memoryview(b"mv")]))
    assert attachments == [b"mv"] and header.startswith(b"51-")


@pytest.mark.parametrize(
    "packet",
    [
        Packet(EVENT, "/", []),
        Packet(EVENT, "/", "x"),
        Packet(EVENT, "/", None),
        Packet(EVENT, "/", [None]),
        Packet(EVENT, "/", [b"binary name"]),
        Packet(EVENT, "admin", ["x"]),
        Packet(EVENT, "/a,b", ["x"]),
        Packet(EVENT, "/a\nb", ["x"]),
        Packet(EVENT, "/", ["x"], -1),
        Packet(EVENT, "/", ["x"], MAX_ACK_ID + 1),
        Packet(EVENT, "/", ["x"], True),
        Packet(EVENT, "/", ["x"], "1"),
        Packet(ACK, "/", []),
        Packet(ACK, "/", {}, 1),
        Packet(CONNECT, "/", [], None),
        Packet(CONNECT, "/", {"a": 1}, 5),
        Packet(CONNECT, "/", {"a": b"bin"}),
        Packet(DISCONNECT, "/", {}),
        Packet(CONNECT_ERROR, "/", None),
        Packet(CONNECT_ERROR, "/", 5),
        Packet(EVENT, "/", ["x", object()]),
        Packet(EVENT, "/", ["x", "\ud800"]),
        Packet(EVENT, "/", ["x", b"bin", {"_placeholder": True, "num": 0}]),
    ],
)
def test_encode_refuses_invalid_packets(packet):
    with pytest.raises(InvalidPacket):
        encode(packet)


def test_fast_paths():
    assert encode_event(["chat", "hi"]) == b'2["chat","hi"]'
    assert encode_event(["chat", "hi"], "/room") == b'2/room,["chat","hi"]'
    assert encode_event(["chat"], "/room", 12) == b'2/room,12["chat"]'
    assert encode_event([7]) == b"2[7]"
    assert encode_ack([1, "2"], 456) == b'3456[1,"2"]'
    assert encode_ack([], 0, "/a") == b"3/a,0[]"
    for data, nsp, ack in [(["x"], "/", None), (["x", {"a": [1.5, None]}], "/n", 3), ([1], "/", 0)]:
        assert encode_event(data, nsp, ack) == encode(Packet(EVENT, nsp, data, ack))[0]


@pytest.mark.parametrize(
    "call",
    [
        lambda: encode_event([]),
        lambda: encode_event(("x",)),
        lambda: encode_event([None]),
        lambda: encode_event(["disconnect"]),
        lambda: encode_event(["x"], "nsp"),
        lambda: encode_event(["x"], "/a,b"),
        lambda: encode_event(["x"], "/", -1),
        lambda: encode_event(["x"], "/", 2**53),
        lambda: encode_event(["x", object()]),
        lambda: encode_ack({}, 1),
        lambda: encode_ack([], None),
        lambda: encode_ack([], 1, "x"),
    ],
)
def test_fast_paths_refuse_invalid_input(call):
    with pytest.raises(InvalidPacket):
        call()


def test_has_binary():
    assert not has_binary(["x", {"a": [1, "b", None]}])
    assert has_binary(["x", {"a": [1, b""]}])
    assert has_binary({"k": (bytearray(),)})
    assert has_binary(memoryview(b""))
    assert not has_binary("bytes")


def test_prefix_cache_is_bounded_and_stays_right():
    for i in range(5000):
        assert encode_event(["x"], f"/n{i}") == f'2/n{i},["x"]'.encode()
    assert encode_event(["x"]) == b'2["x"]'
    assert encode_ack([], 1) == b"31[]"
