"""Hypothesis strategies for what a client may send, built from the ``specs`` tables: every
valid client message, payloads of every data type, and near-miss invalid frames (wrong types,
missing fields, bad names, oversize, bad UTF-8, unknown types), each paired with the outcome
the tables promise.

Rules this module keeps:
- Strategies draw *content*; identities (ackIds, markers, group prefixes) are bound at send
  time, so shrinking never has to rediscover an id.
- Every probe says what the endpoint must do with it (``Probe.expect``), derived from
  ``specs.errors.INBOUND_POLICY`` / ``CLOSE_RULES`` and the catalogues; the inbound suite
  checks exactly that.
- Bounded sizes: names at most 1025 characters (one over the limit), payloads a few dozen
  bytes, except the single oversize probe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgspec
from hypothesis import strategies as st

from specs.conform import protowire
from specs.conform.wire import Payload, message_data
from specs.errors import INBOUND_POLICY, AckErrorName, CloseCode
from specs.names import GROUP_NAME_MAX_CHARS
from specs.webpubsub_json import CLIENT_MESSAGES, KNOWN_UNSUPPORTED_CLIENT_TYPES, UINT64_MAX

# =========================================================================== payloads

DATA_TYPES = ("text", "json", "binary", "protobuf")
REST_DATA_TYPES = ("text", "json", "binary")  # REST has no content type for protobuf

json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@dataclass(frozen=True)
class PayloadSpec:
    """What a message carries, before its marker is bound."""

    data_type: str
    content: object

    def __repr__(self) -> str:
        return f"{self.data_type}({self.content!r})"

    def bind(self, marker: str) -> Payload:
        tag = f"~{marker}~"
        if self.data_type == "text":
            return Payload("text", (tag + str(self.content)).encode("utf-8"))
        if self.data_type == "json":
            return Payload("json", msgspec.json.encode([tag, self.content]))
        if self.data_type == "binary":
            return Payload("binary", tag.encode("ascii") + bytes(self.content))  # type: ignore[arg-type]
        return Payload("protobuf", protowire.any_bytes(f"type.googleapis.com/conform.{marker}",
                                                       bytes(self.content)))  # type: ignore[arg-type]


def payload_specs(data_types: tuple[str, ...] = DATA_TYPES) -> st.SearchStrategy[PayloadSpec]:
    options = []
    if "text" in data_types:
        options.append(st.builds(PayloadSpec, st.just("text"), st.text(max_size=12)))
    if "json" in data_types:
        options.append(st.builds(PayloadSpec, st.just("json"), json_values))
    if "binary" in data_types:
        options.append(st.builds(PayloadSpec, st.just("binary"), st.binary(max_size=16)))
    if "protobuf" in data_types:
        options.append(st.builds(PayloadSpec, st.just("protobuf"), st.binary(max_size=8)))
    return st.one_of(options)


_TAG = re.compile(r"^~(m\d+)~")
_BTAG = re.compile(rb"^~(m\d+)~")


def marker_of(p: Payload | None) -> str | None:
    """The marker a payload was bound with, whatever it became on the way (None if none)."""
    if p is None:
        return None
    body = p.body
    if p.data_type in ("text", "json"):
        try:
            value = msgspec.json.decode(body)
        except msgspec.DecodeError:
            value = None
        if isinstance(value, list) and value and isinstance(value[0], str):
            m = _TAG.match(value[0])
            if m:
                return m.group(1)
        m = _TAG.match(body.decode("utf-8", "replace"))
        return m.group(1) if m else None
    m = _BTAG.match(body)
    if m:
        return m.group(1).decode("ascii")
    try:
        any_ = protowire.decode("google.protobuf.Any", body)
    except protowire.ProtoError:
        return None
    url = any_.get("type_url")
    if isinstance(url, str) and "/conform." in url:
        return url.rsplit(".", 1)[-1]
    return None


# =========================================================================== names

#: Valid group names (specs.names rule): printable, not only whitespace, 1..1024 code points.
group_names = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=24,
).filter(lambda s: not s.isspace()) | st.just("g" * GROUP_NAME_MAX_CHARS)

invalid_group_names = st.sampled_from(
    ["", " ", "\t", "a\nb", "a\x01b", "a\x7fb", "g" * (GROUP_NAME_MAX_CHARS + 1)]
)

ack_ids = st.integers(0, UINT64_MAX) | st.integers(0, UINT64_MAX).map(str)

# =========================================================================== probes


@dataclass(frozen=True)
class Probe:
    """One client frame and what the endpoint must do with it.

    Attributes:
        name: a short description for the report.
        protocol: ``json`` or ``protobuf`` (the subprotocol family to open).
        frame: ``text`` / ``binary`` / ``raw-text`` (a text frame with arbitrary bytes).
        data: the frame payload.
        expect: ``ack`` (ack success), ``ack:<Name>`` (ack error), ``pong``, ``silent`` (no
            answer; stays open), ``close:<code>`` (system/disconnected where the rules say so,
            then that close code), ``invokeResponse``, ``streamClosed``.
        ack_id: the ackId the answer must carry.
        rule: the rule checked.
    """

    name: str
    protocol: str
    frame: str
    data: str | bytes
    expect: str
    rule: str
    ack_id: int | None = None

    def __repr__(self) -> str:
        shown = self.data if isinstance(self.data, str) else self.data.hex()
        if len(shown) > 80:
            shown = shown[:79] + "…"
        return f"Probe({self.name}: {shown!r} -> {self.expect})"


def _j(obj: object) -> str:
    return msgspec.json.encode(obj).decode()


_BAD_REQUEST = AckErrorName.BAD_REQUEST.value
_INVALID = INBOUND_POLICY["invalid_message"]
_MALFORMED_CLOSE = int(CloseCode.INVALID_PAYLOAD)
_WRONG_FRAME_CLOSE = int(CloseCode.UNSUPPORTED_DATA)
_TOO_BIG_CLOSE = int(CloseCode.MESSAGE_TOO_BIG)


@st.composite
def valid_json_probes(draw, events: bool = False) -> Probe:
    """A valid JSON client message on a connection holding every role (``event`` messages only
    with ``events``: they reach the hub's event handler, if it has one)."""
    kind = draw(st.sampled_from(["joinGroup", "leaveGroup", "sendToGroup", "ping"] + (["event"] if events else [])))
    if kind == "ping":
        return Probe("ping", "json", "text", _j({"type": "ping"}), "pong", "ping.pong")
    ack = draw(ack_ids)
    ack_num = int(ack)
    if kind in ("joinGroup", "leaveGroup"):
        msg = {"type": kind, "group": draw(group_names), "ackId": ack}
        return Probe(f"{kind} (valid)", "json", "text", _j(msg), "ack", "inbound.valid", ack_num)
    spec = draw(payload_specs())
    p = spec.bind("m0")
    dt = p.data_type
    dt_spelling = draw(st.sampled_from([dt, dt.capitalize()]))  # .NET writes "Text"
    if kind == "event":
        msg = {"type": "event", "event": draw(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")),
                                                     min_size=1, max_size=12)),
               "ackId": ack, "dataType": dt_spelling, "data": p.json_value()}
        return Probe("event (valid, no handler)", "json", "text", _j(msg), "ack:NotFound", "event.no-handler", ack_num)
    msg = {"type": "sendToGroup", "group": draw(group_names), "ackId": ack,
           "noEcho": draw(st.booleans()), "dataType": dt_spelling, "data": p.json_value()}
    return Probe("sendToGroup (valid)", "json", "text", _j(msg), "ack", "inbound.valid", ack_num)


@st.composite
def invalid_json_probes(draw) -> Probe:
    """A near miss: one thing wrong, with or without an ackId."""
    with_ack = draw(st.booleans())
    ack = draw(st.integers(1, 2**31))
    base_type = draw(st.sampled_from(["joinGroup", "leaveGroup", "sendToGroup"]))
    msg: dict[str, object] = {"type": base_type, "group": "g"}
    if base_type == "sendToGroup":
        msg.update(dataType="text", data="x")
    flaw = draw(st.sampled_from([
        "group-missing", "group-not-string", "group-invalid", "data-missing", "json-null",
        "datatype-unknown", "binary-not-base64", "binary-unpadded", "text-not-string", "noecho-not-bool",
    ] if base_type == "sendToGroup" else ["group-missing", "group-not-string", "group-invalid"]))
    if flaw == "group-missing":
        del msg["group"]
    elif flaw == "group-not-string":
        msg["group"] = draw(st.sampled_from([1, None, ["g"], {"g": 1}, True]))
    elif flaw == "group-invalid":
        msg["group"] = draw(invalid_group_names)
    elif flaw == "data-missing":
        del msg["data"]
    elif flaw == "json-null":
        msg.update(dataType="json", data=None)
    elif flaw == "datatype-unknown":
        msg["dataType"] = draw(st.sampled_from(["xml", "", "bin", 7]))
    elif flaw == "binary-not-base64":
        msg.update(dataType="binary", data=draw(st.sampled_from(["@@@@", "a b=", "!"])))
    elif flaw == "binary-unpadded":
        msg.update(dataType="binary", data="aGk")
    elif flaw == "text-not-string":
        msg.update(dataType="text", data=draw(st.sampled_from([1, ["x"], {"a": 1}, True])))
    elif flaw == "noecho-not-bool":
        msg["noEcho"] = draw(st.sampled_from(["yes", 1, [True]]))
    if with_ack:
        msg["ackId"] = ack
        return Probe(f"{base_type} {flaw}", "json", "text", _j(msg), f"ack:{_BAD_REQUEST}",
                     "inbound.invalid-with-ack", ack)
    return Probe(f"{base_type} {flaw}", "json", "text", _j(msg), f"close:{_MALFORMED_CLOSE}",
                 "inbound.invalid-without-ack")


@st.composite
def bad_ack_id_probes(draw) -> Probe:
    """An ackId that is not a uint64: there is no ackId to answer (decision json.invalid-ackid)."""
    bad = draw(st.sampled_from([-1, 1.5, "1a", " 1", "0x10", UINT64_MAX + 1, str(UINT64_MAX + 1), True]))
    return Probe(f"joinGroup ackId={bad!r}", "json", "text", _j({"type": "joinGroup", "group": "g", "ackId": bad}),
                 f"close:{_MALFORMED_CLOSE}", "inbound.invalid-without-ack")


@st.composite
def unsupported_json_probes(draw) -> Probe:
    t = draw(st.sampled_from(sorted(KNOWN_UNSUPPORTED_CLIENT_TYPES - {"invoke", "streamData", "streamEnd",
                                                                     "cancelInvocation"}) + ["fooBar", "JoinGroup"]))
    with_ack = draw(st.booleans())
    ack = draw(st.integers(1, 2**31))
    msg: dict[str, object] = {"type": t, "group": "g"}
    if with_ack:
        msg["ackId"] = ack
        return Probe(f"unknown type {t}", "json", "text", _j(msg), f"ack:{_BAD_REQUEST}", "inbound.unsupported", ack)
    return Probe(f"unknown type {t}", "json", "text", _j(msg), "silent", "inbound.unsupported")


malformed_json_probes = st.sampled_from([
    Probe("not JSON", "json", "text", '{"type":"joinGroup",', f"close:{_MALFORMED_CLOSE}", "inbound.malformed"),
    Probe("JSON array", "json", "text", '["joinGroup"]', f"close:{_MALFORMED_CLOSE}", "inbound.malformed"),
    Probe("no type", "json", "text", '{"group":"g","ackId":1}', f"close:{_MALFORMED_CLOSE}", "inbound.malformed"),
    Probe("type not a string", "json", "text", '{"type":1,"ackId":1}', f"close:{_MALFORMED_CLOSE}", "inbound.malformed"),
    Probe("empty text", "json", "text", "", f"close:{_MALFORMED_CLOSE}", "inbound.malformed"),
    Probe("binary frame on JSON", "json", "binary", b'{"type":"ping"}', f"close:{_WRONG_FRAME_CLOSE}",
          "inbound.wrong-frame"),
    Probe("text not UTF-8", "json", "raw-text", b'{"type":"joinGroup","group":"\xff\xfe"}', f"close:{_MALFORMED_CLOSE}",
          "inbound.bad-utf8"),
])


def _pb(kind: str, inner: dict) -> bytes:
    return protowire.encode("UpstreamMessage", {kind: inner})


@st.composite
def protobuf_probes(draw) -> Probe:
    which = draw(st.sampled_from(["join", "send", "ping", "bad-utf8", "truncated", "empty", "text-frame",
                                  "unknown-member", "invalid-group"]))
    ack = draw(st.integers(1, 2**40))
    if which == "join":
        return Probe("join_group_message", "protobuf", "binary",
                     _pb("join_group_message", {"group": draw(group_names), "ack_id": ack}), "ack", "inbound.valid", ack)
    if which == "send":
        spec = draw(payload_specs())
        p = spec.bind("m0")
        data = _pb("send_to_group_message", {"group": draw(group_names), "ack_id": ack, "data": message_data(p),
                                             "no_echo": draw(st.booleans())})
        return Probe("send_to_group_message", "protobuf", "binary", data, "ack", "inbound.valid", ack)
    if which == "ping":
        return Probe("ping_message", "protobuf", "binary", _pb("ping_message", {}), "pong", "ping.pong")
    if which == "bad-utf8":
        inner = protowire.length_delimited(1, b"\xff\xfe") + protowire.key(2, 0) + protowire.varint(ack)
        return Probe("group not UTF-8", "protobuf", "binary", protowire.length_delimited(6, inner),
                     f"close:{_MALFORMED_CLOSE}", "inbound.malformed")
    if which == "truncated":
        return Probe("truncated frame", "protobuf", "binary", protowire.key(6, 2) + b"\x10\x0a",
                     f"close:{_MALFORMED_CLOSE}", "inbound.malformed")
    if which == "empty":
        return Probe("empty frame", "protobuf", "binary", b"", f"close:{_MALFORMED_CLOSE}", "inbound.malformed")
    if which == "text-frame":
        return Probe("text frame on protobuf", "protobuf", "text", '{"type":"ping"}', f"close:{_WRONG_FRAME_CLOSE}",
                     "inbound.wrong-frame")
    if which == "unknown-member":
        return Probe("unknown UpstreamMessage member #30", "protobuf", "binary",
                     protowire.length_delimited(30, b"\x08\x01"), "silent", "inbound.unsupported")
    bad = draw(invalid_group_names)
    return Probe(f"join_group_message group={bad[:8]!r}", "protobuf", "binary",
                 _pb("join_group_message", {"group": bad, "ack_id": ack}), f"ack:{_BAD_REQUEST}",
                 "inbound.invalid-with-ack", ack)


def oversize_probe(limit: int) -> Probe:
    """One frame a byte over ``limit`` (a valid sendToGroup, so only its size is wrong)."""
    head = '{"type":"sendToGroup","group":"g","dataType":"text","data":"'
    tail = '"}'
    filler = "x" * max(0, limit + 1 - len(head) - len(tail))
    return Probe(f"a {limit + 1}-byte frame", "json", "text", head + filler + tail, f"close:{_TOO_BIG_CLOSE}",
                 "inbound.too-big")


def inbound_probes(protocols: tuple[str, ...], events: bool = False) -> st.SearchStrategy[Probe]:
    """Every probe family for the subprotocol families under test."""
    options = []
    if "json" in protocols:
        options += [valid_json_probes(events), invalid_json_probes(), bad_ack_id_probes(), unsupported_json_probes(),
                    malformed_json_probes]
    if "protobuf" in protocols:
        options.append(protobuf_probes())
    return st.one_of(options)


