"""specs.webpubsub_json: the catalogue drives the codec; names, subprotocols, decisions."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabric.webpubsub import codec_json as cj
from specs import errors, invocation, lifecycle, metadata, streams
from specs import webpubsub_json as spec
from specs._decisions import render_decisions_markdown

CLASSES = {
    "joinGroup": cj.JoinGroup,
    "leaveGroup": cj.LeaveGroup,
    "sendToGroup": cj.SendToGroup,
    "event": cj.Event,
    "sequenceAck": cj.SequenceAck,
    "ping": cj.Ping,
    "streamData": cj.StreamData,
    "streamEnd": cj.StreamEnd,
    "invoke": cj.Invoke,
    "cancelInvocation": cj.CancelInvocation,
}
SAMPLE_BY_NAME = {"group": "g", "event": "e", "data": "x", "target": "event", "streamId": "s",
                  "invocationId": "i"}
SAMPLE_BY_TYPE = {"string": "v", "uint64": 1, "uint32": 1, "boolean": True, "object": {}, "any": 1}


def minimal(message: spec.ClientMessageSpec) -> dict:
    obj = {"type": message.type}
    for f in message.fields:
        if f.required:
            obj[f.name] = SAMPLE_BY_NAME.get(f.name, SAMPLE_BY_TYPE[f.json_type])
    return obj


def test_the_codec_implements_exactly_the_supported_types():
    assert spec.SUPPORTED_CLIENT_TYPES == set(CLASSES)


@pytest.mark.parametrize("message", list(spec.CLIENT_MESSAGES.values()), ids=lambda m: m.type)
def test_minimal_message_from_the_catalogue_decodes(message):
    decoded = cj.decode_client(json.dumps(minimal(message)))
    if message.supported:
        assert type(decoded) is CLASSES[message.type]
    else:
        assert decoded == cj.Unsupported(message.type, None, None, decoded.invocation_id,
                                         decoded.stream_id)


@pytest.mark.parametrize(
    ("message", "field"),
    [
        (m, f)
        for m in spec.CLIENT_MESSAGES.values()
        if m.supported
        for f in m.fields
        if f.required
    ],
    ids=lambda x: getattr(x, "type", None) or getattr(x, "name", None),
)
def test_every_required_field_is_enforced(message, field):
    obj = minimal(message)
    obj["ackId"] = 9
    del obj[field.name]
    with pytest.raises(cj.InvalidMessage) as info:
        cj.decode_client(json.dumps(obj))
    if spec.CLIENT_MESSAGES[message.type].fields and any(
        f.name == "ackId" for f in message.fields
    ):
        assert info.value.ack_id == 9
    obj[field.name] = None  # null is missing too
    with pytest.raises(cj.InvalidMessage):
        cj.decode_client(json.dumps(obj))


def test_field_defaults_are_what_the_codec_applies():
    send = spec.CLIENT_MESSAGES["sendToGroup"]
    assert send.field("dataType").default == spec.DEFAULT_DATA_TYPE.value
    msg = cj.decode_client(b'{"type":"sendToGroup","group":"g","data":1}')
    assert msg.payload.data_type is spec.DEFAULT_DATA_TYPE
    assert msg.no_echo is send.field("noEcho").default
    with pytest.raises(KeyError):
        send.field("nope")


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("g", True),
        ("a b", True),
        ("组", True),
        (" g ", True),
        ("x" * 1024, True),
        ("😀" * 1024, True),
        ("", False),
        (" ", False),
        ("\t\r ", False),
        ("\u3000", False),
        ("x" * 1025, False),
        ("a\nb", False),
        ("ab\n", False),
        ("a\ud800", False),
    ],
)
def test_group_name_rule(name, ok):
    assert spec.is_valid_group_name(name) is ok
    assert (spec.group_name_problem(name) is None) is ok


@given(st.text(max_size=1100))
def test_group_rule_is_the_published_pattern_read_as_a_full_match(name):
    """The published pattern, plus no control character (decision ``names.group``)."""
    import re
    import unicodedata

    pattern_ok = re.fullmatch(r"(?!\s+$).+", name, flags=0) is not None and "\n" not in name
    pattern_ok = pattern_ok and not any(unicodedata.category(c) == "Cc" for c in name)
    length_ok = 1 <= len(name) <= spec.GROUP_NAME_MAX_CHARS
    assert spec.is_valid_group_name(name) is (pattern_ok and length_ok)


@pytest.mark.parametrize(
    ("name", "ok"),
    [("e", True), ("message", True), ("ünïcode", True), ("a b", True), ("", False),
     ("a\r\nX-Injected: 1", False), ("a\x7f", False), ("x" * 1025, False)],
)  # fmt: skip
def test_event_name_rule(name, ok):
    assert spec.is_valid_event_name(name) is ok


@pytest.mark.parametrize(
    ("name", "ok"),
    [("hub1", True), ("Chat_hub", True), ("a`,.[]", True), ("a" * 128, True),
     ("1hub", False), ("", False), ("a" * 129, False), ("hub-1", False), ("hub\n", False),
     ("hübs", False)],
)  # fmt: skip
def test_hub_name_rule(name, ok):
    assert spec.is_valid_hub_name(name) is ok


# --------------------------------------------------------------------------- subprotocols


def test_subprotocol_table():
    table = {p.name: (p.reliable, p.binary, p.frame_kind) for p in spec.SUBPROTOCOLS.values()}
    assert table == {
        "json.webpubsub.azure.v1": (False, False, "text"),
        "json.reliable.webpubsub.azure.v1": (True, False, "text"),
        "protobuf.webpubsub.azure.v1": (False, True, "binary"),
        "protobuf.reliable.webpubsub.azure.v1": (True, True, "binary"),
    }
    assert spec.subprotocol_for(None) is None
    assert spec.subprotocol_for("mqtt") is None
    assert spec.subprotocol_for("JSON.webpubsub.azure.v1") is None  # exact names only
    assert spec.choose_subprotocol(["x", "json.webpubsub.azure.v1", "protobuf.webpubsub.azure.v1"]) == (
        spec.JSON_V1
    )
    assert spec.choose_subprotocol(["x"]) is None


# --------------------------------------------------------------------------- decisions


def test_decisions_have_unique_ids_and_render():
    all_decisions = (spec.DECISIONS + errors.DECISIONS + lifecycle.DECISIONS + metadata.DECISIONS
                     + invocation.DECISIONS + streams.DECISIONS)
    ids = [d.id for d in all_decisions]
    assert len(ids) == len(set(ids))
    assert all(d.question and d.decision and d.reason for d in all_decisions)
    table = render_decisions_markdown(all_decisions)
    assert table.count("\n") == len(all_decisions) + 2
    for d in all_decisions:
        assert f"`{d.id}`" in table


def test_server_message_catalogue_is_self_consistent():
    for m in spec.SERVER_MESSAGES.values():
        assert m.keys[0] == "type" and m.constants["type"] == m.type
        assert m.optional <= set(m.keys) and m.nullable <= set(m.keys)
        assert set(m.constants) <= set(m.keys) and set(m.nested) <= set(m.keys)
