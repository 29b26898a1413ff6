"""The tunnel's wire format (``fabric/appserver/tunnel_protocol.py``): every message kind
round-trips, the bytes match what the package's ``TunnelMessageProtocol`` writes, and every
malformed frame is a ``TunnelProtocolError`` that says what was wrong."""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.appserver import tunnel_protocol as tp

# What @azure/web-pubsub-socket.io 1.2.1 writes for
#   new TunnelHttpRequestMessage(7, true, "", "POST", "https://host/api/hubs/h/:send?api-version=2023-07-01",
#                                {"Content-Type": ["text/plain"]}, utf8('42["a"]'))
# (TunnelMessageProtocol.instance.getBytes, captured with Node 20).
PACKAGE_REQUEST = bytes.fromhex(
    "c10000009301d9b47b2241636b4964223a372c224c6f63616c526f7574696e67223a747275652c224368616e6e656c4e616d6522"
    "3a22222c22487474704d6574686f64223a22504f5354222c2255726c223a2268747470733a2f2f686f73742f6170692f687562"
    "732f682f3a73656e643f6170692d76657273696f6e3d323032332d30372d3031222c2248656164657273223a7b22436f6e7465"
    "6e742d54797065223a5b22746578742f706c61696e225d7d2c2254797065223a317dc40734325b2261225d")
# new TunnelHttpResponseMessage(3, false, 200, "", false, {"content-type": ["application/json"]}, [1, 2])
PACKAGE_RESPONSE = bytes.fromhex(
    "980000009302d9907b2241636b4964223a332c224c6f63616c526f7574696e67223a66616c73652c22537461747573436f6465"
    "223a3230302c224368616e6e656c4e616d65223a22222c224e6f74436f6d706c65746564223a66616c73652c22486561646572"
    "73223a7b22636f6e74656e742d74797065223a5b226170706c69636174696f6e2f6a736f6e225d7d2c2254797065223a327dc4"
    "020102")


def frame(array, *, length: int | None = None) -> bytes:
    body = msgpack.packb(array, use_bin_type=True)
    return struct.pack("<I", len(body) if length is None else length) + body


def test_decodes_what_the_package_writes():
    request = tp.decode(PACKAGE_REQUEST)
    assert request == tp.HttpRequest(7, "POST", "https://host/api/hubs/h/:send?api-version=2023-07-01",
                                     {"Content-Type": ["text/plain"]}, b'42["a"]', True, "")
    assert request.header("content-type") == "text/plain"
    response = tp.decode(PACKAGE_RESPONSE)
    assert response == tp.HttpResponse(3, 200, {"content-type": ["application/json"]}, b"\x01\x02")


def test_encodes_byte_for_byte_as_the_package():
    assert tp.encode(tp.decode(PACKAGE_REQUEST)) == PACKAGE_REQUEST
    assert tp.encode(tp.decode(PACKAGE_RESPONSE)) == PACKAGE_RESPONSE


@pytest.mark.parametrize("message", [
    tp.HttpRequest(1, "GET", "http://x/eventhandler/", {}, None),
    tp.HttpRequest(2**53 - 1, "POST", "http://x/p?q=1", {"a": ["1", "2"]}, b"\x00" * 70000, tracing_id="t1"),
    tp.HttpResponse(5, 202, {}, None),
    tp.HttpResponse(6, 200, {"Content-Type": ["text/plain"]}, b'{"Payload":"43[1]"}\n', not_completed=True),
    tp.ServiceStatus("keepalive"),
    tp.ConnectionReconnect("node-2", "http://127.0.0.1:1/", "move"),
    tp.ConnectionRebalance("node-3", None, ""),
    tp.ConnectionClose("bye"),
    tp.ConnectionConnected("cid", "app-1", None),
    tp.ConnectionConnected("cid"),
])
def test_every_kind_round_trips(message):
    assert tp.decode(tp.encode(message)) == message


_text = st.text(max_size=40)
_headers = st.dictionaries(st.text(min_size=1, max_size=20), st.lists(_text, max_size=3), max_size=5)
_content = st.one_of(st.none(), st.binary(min_size=1, max_size=200))
_ack = st.integers(0, tp.MAX_ACK_ID)
_messages = st.one_of(
    st.builds(tp.HttpRequest, _ack, st.sampled_from(["GET", "POST", "DELETE", "OPTIONS"]), _text, _headers, _content,
              st.booleans(), _text, st.one_of(st.none(), _text)),
    st.builds(tp.HttpResponse, _ack, st.integers(100, 999), _headers, _content, st.booleans(), st.booleans(), _text,
              st.one_of(st.none(), _text)),
    st.builds(tp.ServiceStatus, _text),
    st.builds(tp.ConnectionReconnect, st.one_of(st.none(), _text), st.one_of(st.none(), _text), _text),
    st.builds(tp.ConnectionRebalance, st.one_of(st.none(), _text), st.one_of(st.none(), _text), _text),
    st.builds(tp.ConnectionClose, _text),
    st.builds(tp.ConnectionConnected, _text, st.one_of(st.none(), _text), st.one_of(st.none(), _text)),
)


@settings(max_examples=300, deadline=None)
@given(_messages)
def test_round_trip_property(message):
    assert tp.decode(tp.encode(message)) == message


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_a_protocol_error(data):
    try:
        tp.decode(data)
    except tp.TunnelProtocolError as exc:
        assert str(exc)


@settings(max_examples=300, deadline=None)
@given(_messages, st.data())
def test_a_corrupted_frame_decodes_or_raises_a_protocol_error(message, data):
    raw = bytearray(tp.encode(message))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] = data.draw(st.integers(0, 255))
    try:
        tp.decode(bytes(raw))
    except tp.TunnelProtocolError:
        pass


@pytest.mark.parametrize("data, says", [
    (b"", "shorter than the 4-byte length prefix"),
    (b"\x01\x00", "shorter than the 4-byte length prefix"),
    (frame([1, "{}", None], length=500), "announces 500 bytes but"),
    (frame([1, "{}", None]) + b"\x00", "one message per frame"),
    (struct.pack("<I", 3) + b"\xc1\xc1\xc1", "not valid MessagePack"),
    (frame({"Type": 1}), "must be a MessagePack array"),
    (frame([1]), "must be a MessagePack array"),
    (frame([1, "{}", None, None]), "must be a MessagePack array"),
    (frame(["1", "{}", None]), "Type must be an integer"),
    (frame([True, "{}", None]), "Type must be an integer"),
    (frame([1, b"{}", None]), "second element must be its JSON text"),
    (frame([1, "{}", "text"]), "content must be binary or nil"),
    (frame([1, "not json", None]), "not valid JSON"),
    (frame([1, "[]", None]), "invalid HttpRequest"),
    (frame([1, '{"AckId": 1, "Url": "/"}', None]), "HttpMethod"),
    (frame([1, '{"AckId": -1, "HttpMethod": "GET", "Url": "/"}', None]), "out of range"),
    (frame([2, '{"AckId": 1}', None]), "StatusCode"),
    (frame([2, '{"AckId": 1, "StatusCode": 42}', None]), "not an HTTP status"),
    (frame([2, '{"AckId": 1, "StatusCode": 200, "Headers": {"a": "b"}}', None]), "Headers"),
    (frame([10, '{"UserId": "u"}', None]), "ConnectionId"),
])
def test_malformed_frames_say_what_is_wrong(data, says):
    with pytest.raises(tp.TunnelProtocolError) as caught:
        tp.decode(data)
    assert says in str(caught.value)


def test_a_named_request_error_carries_its_ack_id():
    with pytest.raises(tp.TunnelProtocolError) as caught:
        tp.decode(frame([1, '{"AckId": 9, "HttpMethod": 5, "Url": "/"}', None]))
    assert caught.value.ack_id == 9 and caught.value.kind is tp.MessageType.HTTP_REQUEST
    with pytest.raises(tp.TunnelProtocolError) as caught:
        tp.decode(frame([2, '{"AckId": 4, "StatusCode": 7}', None]))
    assert caught.value.ack_id == 4 and caught.value.kind is tp.MessageType.HTTP_RESPONSE
    with pytest.raises(tp.TunnelProtocolError) as caught:
        tp.decode(frame([1, "garbage", None]))
    assert caught.value.ack_id is None


def test_too_many_headers_are_refused_with_the_ack_id():
    headers = {f"h{i}": ["v"] for i in range(tp.MAX_HEADERS + 1)}
    with pytest.raises(tp.TunnelProtocolError, match="more than") as caught:
        tp.decode(tp.encode(tp.HttpRequest(3, "GET", "/", headers)))
    assert caught.value.ack_id == 3


def test_max_bytes_bounds_the_announced_length():
    data = tp.encode(tp.HttpRequest(1, "POST", "/", {}, b"x" * 1000))
    with pytest.raises(tp.TunnelProtocolError, match="at most 100"):
        tp.decode(data, max_bytes=100)


def test_unknown_and_none_types_are_unknown_messages():
    assert tp.decode(frame([42, "{}", None])) == tp.Unknown(42)
    assert tp.decode(frame([0, "{}", None])) == tp.Unknown(0)
    # two elements (content left out) are accepted as nil content
    assert tp.decode(frame([5, '{"Message": "hi"}'])) == tp.ServiceStatus("hi")


def test_extra_json_fields_are_ignored_and_nulls_default():
    text = '{"AckId": 1, "StatusCode": 204, "Headers": null, "Future": [1], "ChannelName": null, "Type": 2}'
    message = tp.decode(frame([2, text, None]))
    assert message == tp.HttpResponse(1, 204, {}, None, channel_name="")
