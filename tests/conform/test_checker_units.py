"""The checker's own parts, without an endpoint: its protobuf codec against protoc's (the
oracle), its JSON frame checks, the hub model's permission rules, connection strings,
transcripts, and the strategies."""

from __future__ import annotations

import base64

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specs.conform import protowire
from specs.conform.endpoint import ConnectionStringError, parse_connection_string
from specs.conform.model import Atom, Conn, Filter, Permission, permissions_from_roles
from specs.conform.strategies import (
    DATA_TYPES, PayloadSpec, inbound_probes, marker_of, oversize_probe, payload_specs,
)
from specs.conform.transcript import Transcript
from specs.conform.wire import Payload, decode_frame, decode_json_frame, encode_client
from specs.webpubsub_json import JSON_V1, PROTOBUF_V1

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# =========================================================================== protobuf vs protoc


@SETTINGS
@given(spec=payload_specs(), group=st.text(max_size=10), ack=st.integers(0, 2**64 - 1), no_echo=st.booleans())
def test_upstream_send_matches_protoc(pb, spec, group, ack, no_echo) -> None:
    p = spec.bind("m1")
    _, data = encode_client(PROTOBUF_V1, {"type": "sendToGroup", "group": group, "ackId": ack, "noEcho": no_echo,
                                          "payload": p})
    parsed = pb.UpstreamMessage.FromString(data)
    assert parsed.WhichOneof("message") == "send_to_group_message"
    m = parsed.send_to_group_message
    assert (m.group, m.ack_id, m.no_echo) == (group, ack, no_echo)
    assert m.HasField("ack_id") and m.HasField("no_echo")
    member = m.data.WhichOneof("data")
    assert member == {"text": "text_data", "json": "json_data", "binary": "binary_data",
                      "protobuf": "protobuf_data"}[p.data_type]
    if member == "protobuf_data":
        assert m.data.protobuf_data.SerializeToString() == p.body
    elif member == "binary_data":
        assert m.data.binary_data == p.body
    else:
        assert getattr(m.data, member).encode() == p.body


@pytest.mark.parametrize("msg, kind", [
    ({"type": "joinGroup", "group": "g", "ackId": 7}, "join_group_message"),
    ({"type": "leaveGroup", "group": "g"}, "leave_group_message"),
    ({"type": "sequenceAck", "sequenceId": 2**63}, "sequence_ack_message"),
    ({"type": "ping"}, "ping_message"),
    ({"type": "event", "event": "e", "ackId": 1, "payload": Payload.text("x")}, "event_message"),
])
def test_upstream_kinds_match_protoc(pb, msg, kind) -> None:
    parsed = pb.UpstreamMessage.FromString(encode_client(PROTOBUF_V1, msg)[1])
    assert parsed.WhichOneof("message") == kind


@SETTINGS
@given(ack=st.integers(0, 2**64 - 1), success=st.booleans(), name=st.text(max_size=8), text=st.text(max_size=8),
       seq=st.integers(1, 2**64 - 1), group=st.text(max_size=8), body=st.binary(max_size=12))
def test_downstream_decode_matches_protoc(pb, ack, success, name, text, seq, group, body) -> None:
    d = pb.DownstreamMessage()
    d.ack_message.ack_id = ack
    d.ack_message.success = success
    if not success:
        d.ack_message.error.name = name
        d.ack_message.error.message = text
    f = decode_frame(PROTOBUF_V1, d.SerializeToString())
    assert (f.kind, f.ack_id, f.success) == ("ack", ack, success)
    assert f.error == (None if success else (name, text))
    d = pb.DownstreamMessage()
    d.data_message.group = group
    setattr(d.data_message, "from", "group")
    d.data_message.data.binary_data = body
    d.data_message.sequence_id = seq
    f = decode_frame(PROTOBUF_V1, d.SerializeToString())
    assert (f.kind, f.source, f.group, f.sequence_id) == ("message", "group", group, seq)
    assert f.payload == Payload("binary", body)
    assert not f.problems


def test_protowire_rejects_what_protobuf_parsers_reject() -> None:
    for bad in (b"\x0a", b"\x0a\x05ab", b"\xff" * 11, b"\x00\x01", b"\x0b"):
        with pytest.raises(protowire.ProtoError):
            protowire.decode("DownstreamMessage", bad)
    with pytest.raises(protowire.ProtoError):  # a string that is not UTF-8
        protowire.decode("DownstreamMessage.AckMessage.ErrorMessage", b"\x0a\x02\xff\xfe")
    # a known field with the wrong wire type is a server bug the checker reports
    with pytest.raises(protowire.ProtoError):
        protowire.decode("DownstreamMessage.AckMessage", b"\x0a\x01x")


def test_disconnected_reason_is_field_2(pb) -> None:
    d = pb.DownstreamMessage()
    d.system_message.disconnected_message.reason = "bye"
    f = decode_frame(PROTOBUF_V1, d.SerializeToString())
    assert (f.kind, f.reason) == ("disconnected", "bye")


# =========================================================================== JSON frame checks


@pytest.mark.parametrize("text, rule", [
    ('{"type":"ack","ackId":1,"success":true,"error":null}', "frame.null"),
    ('{"type":"ack","ackId":1,"success":false}', "ack.error-shape"),
    ('{"type":"ack","ackId":1,"success":false,"error":{"name":"X"}}', "ack.error-shape"),
    ('{"type":"ack","success":true,"ackId":1}', "frame.key-order"),
    ('{"type":"message","from":"group","group":"g","dataType":"binary","data":"aGk"}', "frame.data"),
    ('{"type":"message","from":"group","group":"g","dataType":"json","data":null}', "frame.data"),
    ('{"type":"message","from":"elsewhere","dataType":"text","data":"x"}', "frame.type"),
    ('{"type":"pong","extra":1}', "frame.unknown-key"),
    ('{"type":"system","event":"connected","connectionId":"c"}', "frame.shape"),
    ("[1]", "frame.valid"),
])
def test_json_frame_problems(text, rule) -> None:
    assert rule in {r for r, _ in decode_json_frame(text).problems}


def test_json_frames_as_the_catalogue_writes_them_are_clean() -> None:
    for text in ('{"type":"ack","ackId":1,"success":false,"error":{"name":"Forbidden","message":"no"}}',
                 '{"type":"message","from":"group","group":"g","dataType":"text","data":"x","fromUserId":"u","sequenceId":3}',
                 '{"type":"message","from":"server","dataType":"binary","data":"aGk="}',
                 '{"type":"system","event":"connected","userId":null,"connectionId":"c","reconnectionToken":"t"}',
                 '{"type":"system","event":"disconnected","message":"bye"}', '{"type":"pong"}'):
        assert decode_json_frame(text).problems == [], text
    assert decode_frame(JSON_V1, b"\x00").problems[0][0] == "frame.kind"


@SETTINGS
@given(spec=payload_specs(DATA_TYPES), marker=st.integers(1, 10**6).map(lambda n: f"m{n}"))
def test_markers_survive_every_representation(spec: PayloadSpec, marker: str) -> None:
    p = spec.bind(marker)
    assert marker_of(p) == marker
    # as a JSON client receives it
    frame = decode_json_frame(msgspec.json.encode({"type": "message", "from": "server", "dataType": p.data_type,
                                                   "data": p.json_value()}).decode())
    assert frame.payload is not None and frame.payload.same_as(p) and marker_of(frame.payload) == marker
    # as a simple client receives it
    raw = p.body.decode() if p.data_type in ("text", "json") else p.body
    assert marker_of(decode_frame(None, raw).payload) == marker


def test_payload_comparison_is_by_meaning_for_json_only() -> None:
    assert Payload("json", b'{"a": 1.0, "b": [1]}').same_as(Payload("json", b'{"b":[1],"a":1}'))
    assert not Payload("text", b"a ").same_as(Payload("text", b"a"))
    assert Payload("binary", b"x").json_value() == base64.b64encode(b"x").decode()


# =========================================================================== model


def test_permissions_follow_the_roles_and_rest_decision() -> None:
    perms = permissions_from_roles(("webpubsub.joinLeaveGroup.a", "webpubsub.sendToGroup"))
    assert perms["joinLeaveGroup"].allows("a") and not perms["joinLeaveGroup"].allows("b")
    assert perms["sendToGroup"].allows("anything")
    p = perms["sendToGroup"]
    p.revoke("x")  # allow-all minus x
    assert not p.allows("x") and p.allows("y")
    p.grant("x")
    assert p.allows("x")
    p.revoke(None)
    assert not p.allows("y") and not p.allows(None)
    q = Permission()
    q.grant(None)
    assert q.allows(None) and q.allows("z")


def test_filters_render_odata_and_match() -> None:
    c = Conn("c_0", "u1", JSON_V1, (), permissions_from_roles(()), {"g0"})
    f = Filter(((Atom("user", "u1"), Atom("not-group", "g1")), (Atom("group", "g2"),)))
    assert f.matches(c)
    assert f.text() == "(userId eq 'u1' and not ('g1' in groups)) or 'g2' in groups"
    assert Atom("user", "o'k").text() == "userId eq 'o''k'"


# =========================================================================== endpoint, transcript


@pytest.mark.parametrize("text, endpoint", [
    ("Endpoint=http://localhost:8080;AccessKey=k;Version=1.0;", "http://localhost:8080"),
    ("endpoint=https://x.webpubsub.azure.com/;accesskey=k", "https://x.webpubsub.azure.com"),
    ("Endpoint=http://localhost;Port=8081;AccessKey=k;Version=1.0;", "http://localhost:8081"),
    ("Endpoint=x.webpubsub.azure.com;AccessKey=k", "https://x.webpubsub.azure.com"),
])
def test_connection_strings(text, endpoint) -> None:
    assert parse_connection_string(text).endpoint == endpoint


@pytest.mark.parametrize("text", ["", "Endpoint=http://h", "AccessKey=k", "Endpoint=ftp://h;AccessKey=k",
                                  "Endpoint=http://h:99999;AccessKey=k", "Endpoint=http://h/path;AccessKey=k",
                                  "Endpoint=http://h;AccessKey=k;Port=x", "garbage"])
def test_bad_connection_strings(text) -> None:
    with pytest.raises(ConnectionStringError):
        parse_connection_string(text)


def test_transcript_folds_runs_and_uses_labels() -> None:
    t = Transcript()
    t.alias("ABCDEF", "c_0")
    t.alias("run1-", "")
    for i in range(10):
        t.add("c_0", "<", f'{{"group":"run1-g0","n":{i},"id":"ABCDEF"}}')
    text = t.render()
    assert "ABCDEF" not in text and "run1-" not in text and "similar lines" in text
    assert len(text.splitlines()) == 3


# =========================================================================== strategies


@SETTINGS
@given(probe=inbound_probes(("json", "protobuf"), events=True))
def test_probes_are_what_they_claim(probe) -> None:
    if probe.protocol == "json" and probe.frame == "text" and probe.rule in ("inbound.valid", "inbound.invalid-with-ack",
                                                                            "inbound.invalid-without-ack"):
        obj = msgspec.json.decode(probe.data)
        assert isinstance(obj, dict) and isinstance(obj["type"], str)
    if probe.protocol == "protobuf" and probe.rule == "inbound.valid":
        protowire.decode("UpstreamMessage", probe.data)
    assert probe.expect.split(":")[0] in ("ack", "pong", "silent", "close")


def test_oversize_probe_is_one_byte_over() -> None:
    probe = oversize_probe(1000)
    assert len(probe.data.encode()) == 1001 and probe.expect == "close:1009"
