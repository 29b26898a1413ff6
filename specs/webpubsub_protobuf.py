"""The Azure Web PubSub protobuf subprotocols as data: messages, field numbers, decisions.

``fabric.webpubsub.codec_protobuf`` derives its wire tags and its schema-driven (slow-path) decoder from
``MESSAGES``; the tests compare ``MESSAGES`` with the descriptors protoc generates from an
independently written ``tests/webpubsub/proto/webpubsub.v1.proto``. Conformance tooling can read the same
tables.

Rules this module keeps:
- Pure data plus tiny pure functions; imports nothing of ours outside ``specs``.
- The schema is the canonical one (Azure/azure-webpubsub
  ``protocols/protobuf.webpubsub.azure.v1/webpubsub.v1.proto`` @45d1999d, proto3, package
  ``azure.webpubsub``), as published there and on learn.microsoft.com ("Protobuf
  WebSocket subprotocol supported by Azure Web PubSub"). Field numbers are exact; names are the .proto snake_case names.
- Every choice where Microsoft's sources are open is a ``Decision`` in ``DECISIONS``. Rules
  shared with the JSON subprotocol (group/event names, null JSON, metadata, streams) are the
  JSON decisions in ``specs.webpubsub_json`` and are only referenced here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import attrs

from specs.datatype import DataType
from specs._decisions import Decision

#: The .proto package (the C# client and the canonical schema; the 2021 docs had none).
PACKAGE = "azure.webpubsub"

# --------------------------------------------------------------------------- wire types

WIRE_VARINT = 0
WIRE_FIXED64 = 1
WIRE_LEN = 2
WIRE_START_GROUP = 3
WIRE_END_GROUP = 4
WIRE_FIXED32 = 5

#: Scalar .proto types used by the schema and their wire type. Any other ``ProtoField.type``
#: is a message name (wire type 2) or ``MAP_STRING_STRING`` (a repeated entry message).
SCALAR_WIRE_TYPES: Mapping[str, int] = MappingProxyType(
    {
        "string": WIRE_LEN,
        "bytes": WIRE_LEN,
        "bool": WIRE_VARINT,
        "uint32": WIRE_VARINT,
        "uint64": WIRE_VARINT,
        "int64": WIRE_VARINT,
    }
)

#: ``map<string, string>``: on the wire a repeated message {1 key string, 2 value string}.
MAP_STRING_STRING = "map<string,string>"

# --------------------------------------------------------------------------- messages


@attrs.frozen(slots=True)
class ProtoField:
    """One field of a message.

    Attributes:
        number: the field number (exact).
        name: the .proto name (snake_case).
        type: a key of ``SCALAR_WIRE_TYPES``, ``MAP_STRING_STRING``, or the full name of a
            message in ``MESSAGES`` (``google.protobuf.Any`` included).
        label: ``""`` (proto3 implicit presence), ``"optional"`` (explicit presence) or
            ``"repeated"``.
        oneof: the name of the oneof the field belongs to, or None.
    """

    number: int
    name: str
    type: str
    label: str = ""
    oneof: str | None = None

    @property
    def is_message(self) -> bool:
        return self.type not in SCALAR_WIRE_TYPES and self.type != MAP_STRING_STRING

    @property
    def wire_type(self) -> int:
        return SCALAR_WIRE_TYPES.get(self.type, WIRE_LEN)

    @property
    def tag(self) -> int:
        """``number << 3 | wire_type``: the key that precedes the field on the wire."""
        return self.number << 3 | self.wire_type


@attrs.frozen(slots=True)
class ProtoMessage:
    """One message type.

    Attributes:
        name: the full name without the package (``UpstreamMessage.JoinGroupMessage``);
            ``google.protobuf.Any`` for the well-known type.
        fields: in field-number order.
    """

    name: str
    fields: tuple[ProtoField, ...]

    def field(self, name: str) -> ProtoField:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name}.{name}")

    def by_number(self, number: int) -> ProtoField:
        for f in self.fields:
            if f.number == number:
                return f
        raise KeyError(f"{self.name} #{number}")


def _m(name: str, *fields: ProtoField) -> ProtoMessage:
    return ProtoMessage(name, tuple(sorted(fields, key=lambda f: f.number)))


F = ProtoField
_U = "UpstreamMessage."
_D = "DownstreamMessage."

MESSAGES: Mapping[str, ProtoMessage] = MappingProxyType(
    {
        m.name: m
        for m in (
            # ---------------------------------------------------------------- upstream
            _m(
                "UpstreamMessage",
                F(1, "send_to_group_message", _U + "SendToGroupMessage", oneof="message"),
                F(5, "event_message", _U + "EventMessage", oneof="message"),
                F(6, "join_group_message", _U + "JoinGroupMessage", oneof="message"),
                F(7, "leave_group_message", _U + "LeaveGroupMessage", oneof="message"),
                F(8, "sequence_ack_message", _U + "SequenceAckMessage", oneof="message"),
                F(9, "ping_message", _U + "PingMessage", oneof="message"),
                F(10, "invoke_event_message", _U + "InvokeEventMessage", oneof="message"),
                F(
                    11,
                    "cancel_invocation_message",
                    _U + "CancelInvocationMessage",
                    oneof="message",
                ),
                F(13, "stream_data_message", _U + "StreamDataMessage", oneof="message"),
                F(14, "stream_end_message", _U + "StreamEndMessage", oneof="message"),
                F(15, "set_group_state_message", _U + "SetGroupStateMessage", oneof="message"),
                F(
                    16,
                    "subscribe_group_state_message",
                    _U + "SubscribeGroupStateMessage",
                    oneof="message",
                ),
                F(
                    17,
                    "unsubscribe_group_state_message",
                    _U + "UnsubscribeGroupStateMessage",
                    oneof="message",
                ),
            ),
            _m(
                _U + "SendToGroupMessage",
                F(1, "group", "string"),
                F(2, "ack_id", "uint64", "optional"),
                F(3, "data", "MessageData"),
                F(4, "no_echo", "bool", "optional"),
                F(5, "ttl_seconds", "uint32", "optional"),
                F(6, "metadata", MAP_STRING_STRING),
                F(7, "stream", _U + "StreamStartInfo"),
            ),
            _m(
                _U + "EventMessage",
                F(1, "event", "string"),
                F(2, "data", "MessageData"),
                F(3, "ack_id", "uint64", "optional"),
                F(4, "metadata", MAP_STRING_STRING),
                F(5, "stream", _U + "StreamStartInfo"),
            ),
            _m(
                _U + "JoinGroupMessage",
                F(1, "group", "string"),
                F(2, "ack_id", "uint64", "optional"),
            ),
            _m(
                _U + "LeaveGroupMessage",
                F(1, "group", "string"),
                F(2, "ack_id", "uint64", "optional"),
            ),
            _m(_U + "SequenceAckMessage", F(1, "sequence_id", "uint64")),
            _m(_U + "PingMessage"),
            _m(
                _U + "InvokeEventMessage",
                F(1, "event", "string"),
                F(2, "invocation_id", "string"),
                F(3, "data", "MessageData"),
                F(4, "metadata", MAP_STRING_STRING),
                F(5, "stream", _U + "StreamStartInfo"),
            ),
            _m(_U + "CancelInvocationMessage", F(1, "invocation_id", "string")),
            _m(
                _U + "StreamStartInfo",
                F(1, "stream_id", "string"),
                F(2, "idle_timeout_ms", "uint32", "optional"),
            ),
            _m(
                _U + "StreamDataMessage",
                F(1, "stream_id", "string"),
                F(2, "stream_sequence_id", "uint64", "optional"),
                F(3, "data", "MessageData", "optional"),
            ),
            _m(
                _U + "StreamEndMessage",
                F(1, "stream_id", "string"),
                F(2, "error", _U + "StreamEndMessage.StreamEndError", "optional"),
            ),
            _m(
                _U + "StreamEndMessage.StreamEndError",
                F(1, "message", "string", "optional"),
                F(2, "user_error_code", "string", "optional"),
            ),
            _m(
                _U + "SetGroupStateMessage",
                F(1, "group", "string"),
                F(2, "ack_id", "uint64", "optional"),
                F(3, "state", "GroupStateItem.GroupState", "optional"),
            ),
            _m(
                _U + "SubscribeGroupStateMessage",
                F(1, "group", "string"),
                F(2, "ack_id", "uint64", "optional"),
            ),
            _m(
                _U + "UnsubscribeGroupStateMessage",
                F(1, "group", "string"),
                F(2, "ack_id", "uint64", "optional"),
            ),
            # ---------------------------------------------------------------- downstream
            _m(
                "DownstreamMessage",
                F(1, "ack_message", _D + "AckMessage", oneof="message"),
                F(2, "data_message", _D + "DataMessage", oneof="message"),
                F(3, "system_message", _D + "SystemMessage", oneof="message"),
                F(4, "pong_message", _D + "PongMessage", oneof="message"),
                F(5, "invoke_response_message", _D + "InvokeResponseMessage", oneof="message"),
                F(6, "stream_ack_message", _D + "StreamAckMessage", oneof="message"),
                F(7, "stream_nack_message", _D + "StreamNackMessage", oneof="message"),
                F(8, "stream_closed_message", _D + "StreamClosedMessage", oneof="message"),
                F(
                    9,
                    "group_state_update_message",
                    _D + "GroupStateUpdateMessage",
                    oneof="message",
                ),
                F(
                    10,
                    "group_state_snapshot_message",
                    _D + "GroupStateSnapshotMessage",
                    oneof="message",
                ),
            ),
            _m(
                _D + "AckMessage",
                F(1, "ack_id", "uint64"),
                F(2, "success", "bool"),
                F(3, "error", _D + "AckMessage.ErrorMessage", "optional"),
            ),
            _m(
                _D + "AckMessage.ErrorMessage",
                F(1, "name", "string"),
                F(2, "message", "string"),
            ),
            _m(
                _D + "DataMessage",
                F(1, "from", "string"),
                F(2, "group", "string", "optional"),
                F(3, "data", "MessageData"),
                F(4, "sequence_id", "uint64", "optional"),
                F(5, "metadata", MAP_STRING_STRING),
                F(6, "stream", "StreamInfo", "optional"),
            ),
            _m(
                _D + "SystemMessage",
                F(1, "connected_message", _D + "SystemMessage.ConnectedMessage", oneof="message"),
                F(
                    2,
                    "disconnected_message",
                    _D + "SystemMessage.DisconnectedMessage",
                    oneof="message",
                ),
            ),
            _m(
                _D + "SystemMessage.ConnectedMessage",
                F(1, "connection_id", "string"),
                F(2, "user_id", "string"),
                F(3, "reconnection_token", "string", "optional"),
            ),
            # Field number 2, not 1 (both SDK protos and the canonical schema).
            _m(_D + "SystemMessage.DisconnectedMessage", F(2, "reason", "string")),
            _m(_D + "PongMessage"),
            _m(
                _D + "InvokeResponseMessage",
                F(1, "invocation_id", "string"),
                F(2, "success", "bool"),
                F(3, "data", "MessageData", "optional"),
                F(4, "error", _D + "InvokeResponseMessage.ErrorMessage", "optional"),
                F(5, "metadata", MAP_STRING_STRING),
            ),
            _m(
                _D + "InvokeResponseMessage.ErrorMessage",
                F(1, "name", "string"),
                F(2, "message", "string"),
            ),
            _m(
                _D + "StreamAckMessage",
                F(1, "stream_id", "string"),
                F(2, "expected_sequence_id", "uint64"),
            ),
            _m(
                _D + "StreamNackMessage",
                F(1, "stream_id", "string"),
                F(2, "name", "string"),
                F(3, "message", "string"),
                F(4, "expected_sequence_id", "uint64"),
            ),
            _m(
                _D + "StreamClosedMessage",
                F(1, "stream_id", "string"),
                F(2, "error", _D + "StreamClosedMessage.StreamClosedError", "optional"),
            ),
            _m(
                _D + "StreamClosedMessage.StreamClosedError",
                F(1, "name", "string"),
                F(2, "message", "string"),
            ),
            _m(
                _D + "GroupStateSnapshotMessage",
                F(1, "group", "string"),
                F(2, "items", "GroupStateItem", "repeated"),
                F(3, "sequence_id", "uint64", "optional"),
            ),
            _m(
                _D + "GroupStateUpdateMessage",
                F(1, "group", "string"),
                F(2, "items", "GroupStateItem", "repeated"),
                F(3, "sequence_id", "uint64", "optional"),
            ),
            # ---------------------------------------------------------------- shared
            _m(
                "MessageData",
                F(1, "text_data", "string", oneof="data"),
                F(2, "binary_data", "bytes", oneof="data"),
                F(3, "protobuf_data", "google.protobuf.Any", oneof="data"),
                F(4, "json_data", "string", oneof="data"),
            ),
            _m(
                "GroupStateItem",
                F(1, "connection_id", "string"),
                F(2, "user_id", "string", "optional"),
                F(3, "state", "GroupStateItem.GroupState", "optional"),
                F(4, "updated_at", "int64"),
            ),
            _m("GroupStateItem.GroupState", F(1, "entries", MAP_STRING_STRING)),
            _m(
                "StreamInfo",
                F(1, "stream_id", "string"),
                F(2, "stream_sequence_id", "uint64"),
                F(3, "end_of_stream", "bool", "optional"),
                F(4, "error", "StreamInfo.StreamError", "optional"),
            ),
            _m(
                "StreamInfo.StreamError",
                F(1, "name", "string"),
                F(2, "message", "string"),
                F(3, "user_error_code", "string"),
            ),
            # The well-known type carried by protobuf_data (google/protobuf/any.proto).
            _m("google.protobuf.Any", F(1, "type_url", "string"), F(2, "value", "bytes")),
        )
    }
)

#: Message types that are this package's own (everything but the well-known Any).
OWN_MESSAGES = frozenset(n for n in MESSAGES if not n.startswith("google.protobuf."))


def tag(message: str, field: str) -> int:
    """The wire tag of ``message.field`` (``tag("UpstreamMessage", "ping_message") == 74``)."""
    return MESSAGES[message].field(field).tag


# --------------------------------------------------------------------------- kinds


@attrs.frozen(slots=True)
class UpstreamKind:
    """One member of ``UpstreamMessage.message``, mapped to the JSON subprotocol's message.

    Attributes:
        field: the oneof member's name in ``UpstreamMessage``.
        json_type: the JSON ``type`` the decoded message stands for (``Unsupported.type``).
        supported: False = decoded as ``Unsupported`` (forward compatibility).
    """

    field: str
    json_type: str
    supported: bool

    @property
    def number(self) -> int:
        return MESSAGES["UpstreamMessage"].field(self.field).number


UPSTREAM_KINDS: Mapping[str, UpstreamKind] = MappingProxyType(
    {
        k.field: k
        for k in (
            UpstreamKind("send_to_group_message", "sendToGroup", True),
            UpstreamKind("event_message", "event", True),
            UpstreamKind("join_group_message", "joinGroup", True),
            UpstreamKind("leave_group_message", "leaveGroup", True),
            UpstreamKind("sequence_ack_message", "sequenceAck", True),
            UpstreamKind("ping_message", "ping", True),
            UpstreamKind("invoke_event_message", "invoke", True),
            UpstreamKind("cancel_invocation_message", "cancelInvocation", True),
            UpstreamKind("stream_data_message", "streamData", True),
            UpstreamKind("stream_end_message", "streamEnd", True),
            UpstreamKind("set_group_state_message", "setGroupState", False),
            UpstreamKind("subscribe_group_state_message", "subscribeGroupState", False),
            UpstreamKind("unsubscribe_group_state_message", "unsubscribeGroupState", False),
        )
    }
)


def unknown_upstream_type(number: int) -> str:
    """``Unsupported.type`` for an ``UpstreamMessage`` whose only message is an unknown
    length-delimited field (a oneof member newer than this schema)."""
    return f"upstream#{number}"


#: The ``MessageData.data`` member each data type travels in, both directions (decision
#: ``protobuf.json-data``). Upstream, ``text_data`` is TEXT even when it holds JSON text:
#: the C# client writes its Json payloads there and nothing on the wire tells them apart.
DATA_FIELDS: Mapping[DataType, str] = MappingProxyType(
    {
        DataType.TEXT: "text_data",
        DataType.BINARY: "binary_data",
        DataType.PROTOBUF: "protobuf_data",
        DataType.JSON: "json_data",
    }
)
DATA_TYPE_OF_FIELD: Mapping[str, DataType] = MappingProxyType(
    {f: d for d, f in DATA_FIELDS.items()}
)

#: ``DataMessage.from`` values (same strings as the JSON ``from``).
FROM_GROUP = "group"
FROM_SERVER = "server"

#: The largest varint a parser accepts (10 bytes); longer ones are malformed. Values wider
#: than 64 bits are truncated to 64 bits, as protobuf's own parsers do.
MAX_VARINT_BYTES = 10
UINT64_MASK = 2**64 - 1

#: Most protobuf fields (at every nesting level) one client frame may hold (decision
#: ``protobuf.field-budget``).
MAX_FIELDS_PER_FRAME = 16_384

# --------------------------------------------------------------------------- decisions

DECISIONS: tuple[Decision, ...] = (
    Decision(
        "protobuf.json-data",
        "Which MessageData member carries DataType.JSON payloads to protobuf clients: "
        "text_data with the JSON text (the docs' conversion table) or json_data = 4 (the SDK "
        "protos)?",
        "json_data (field 4), holding the JSON text exactly as published. Upstream, json_data "
        "is decoded as JSON (validated with msgspec; null rejected as in json.null-json-data) "
        "and text_data as TEXT.",
        "[SDK] Both of Microsoft's protobuf clients map json_data to their json data type "
        "when parsing: the JS client (Azure/azure-sdk-for-js sdk/web-pubsub/"
        "web-pubsub-client-protobuf/src/webPubSubProtobufProtocolBase.ts parseMessages: "
        "messageData.jsonData -> dataType 'json', data = JSON.parse(jsonData)) and the C# "
        "client (Azure/azure-webpubsub sdk/clients/protobuf-client/csharp/src/"
        "WebPubSubProtobufProtocolHelper.cs TryParseMessageData: DataCase JsonData -> "
        "WebPubSubDataType.Json). With text_data both would report 'text' and the JS client "
        "would hand the application a string instead of the JSON value, unlike JSON-protocol "
        "subscribers of the same group. The JS writer also sends its json payloads as "
        "json_data (_getIMessageData: jsonData = JSON.stringify(data)); the C# writer sends "
        "Text and Json alike as text_data (WriteData), so such JSON arrives here as TEXT. "
        "json_data = 4 is in both SDK protos and in the canonical schema "
        "(protocols/protobuf.webpubsub.azure.v1/webpubsub.v1.proto @45d1999d). Cost: a "
        "client generated from the 2021 docs' proto (no field 4) sees a MessageData with no "
        "data; no Microsoft client is such a client.",
    ),
    Decision(
        "protobuf.presence",
        "proto3 has no null: which downstream fields are written when empty or default?",
        "Canonical proto3 serialization: implicit-presence fields (ack_id, success, "
        "user_id, error name/message, reason) are omitted when 0/false/empty; explicit-presence "
        "ones are written whenever they have a value: DataMessage.group on every group "
        "message, sequence_id on reliable messages, reconnection_token when given, the ack "
        "error on failed acks. Fields in field-number order, so the bytes equal "
        "protobuf's own SerializeToString.",
        "Both SDK parsers read absent implicit fields as 0/''/false; the C# client uses "
        "HasSequenceId for presence (so it is written only on reliable connections). An "
        "anonymous connection's user_id is therefore '' where JSON writes null "
        "(json.user-id-null).",
    ),
    Decision(
        "protobuf.unknown-fields",
        "Fields that this schema does not know, or known fields with another wire type.",
        "Skipped (varint, 64-bit, length-delimited, 32-bit), as proto3 parsers do; a known "
        "field number with a mismatched wire type is an unknown field. Groups (wire types 3 "
        "and 4), wire types 6/7, field number 0, varints over 10 bytes, tags over 32 bits and "
        "truncation are MalformedFrame.",
        "Forward compatibility like json.unknown-type. Groups are proto2-only; no client "
        "sends them, and accepting them would mean tracking nesting for nothing.",
    ),
    Decision(
        "protobuf.merge",
        "A message field or oneof member that occurs more than once in one frame.",
        "Protobuf's rules: scalars and strings, last one wins; repeated occurrences of a "
        "message field merge (as if concatenated); a different member of the same oneof "
        "replaces the earlier one. Every occurrence must be well formed.",
        "Wire-level protobuf semantics; the tests check our result against protoc-generated "
        "classes on mutated frames.",
    ),
    Decision(
        "protobuf.strings",
        "A string field that is not valid UTF-8.",
        "MalformedFrame, for every string field of a known message (also in ignored ones "
        "such as metadata), as proto3 parsers reject the whole message.",
        "proto3 requires UTF-8 strings; Google's Python/C++/C# parsers fail the parse.",
    ),
    Decision(
        "protobuf.any",
        "What is kept of protobuf_data, and is it checked?",
        "The serialized google.protobuf.Any bytes exactly as received (the concatenation when "
        "the field repeats) become the PROTOBUF Payload body; they must parse as an Any "
        "(type_url a UTF-8 string, value bytes) or the frame is malformed.",
        "JSON clients get base64 of those bytes and simple clients the bytes themselves "
        "[DOC]; protobuf subscribers must be able to parse the Any inside their "
        "DownstreamMessage, and a protobuf parser rejects a broken one.",
    ),
    Decision(
        "protobuf.no-message",
        "An UpstreamMessage with no known oneof member.",
        "If it has an unknown length-delimited field (a newer message kind), "
        "Unsupported(type='upstream#<number>') of the last one, connection kept; otherwise "
        "(empty frame, only scalar fields) MalformedFrame.",
        "Mirrors json.unknown-type vs a JSON object without a type.",
    ),
    Decision(
        "protobuf.missing-data",
        "send_to_group/event without data, or with a MessageData that sets no member.",
        "InvalidMessage ('data' is required); with metadata entries and no data it is an empty "
        "text (decision metadata.only; an empty map is no map); an invoke without data is an "
        "empty text (invoke.no-payload); an empty text_data is valid (an empty TEXT).",
        "As json.missing-data. protobufjs and Google.Protobuf both write a oneof member "
        "even when it is empty, so an empty text is a real empty text.",
    ),
    Decision(
        "protobuf.unsupported",
        "Upstream kinds we do not implement, and streams on event/invoke.",
        "Unsupported with the JSON type name (UPSTREAM_KINDS): the group-state kinds with "
        "ack_id; event_message/invoke_event_message with a stream field -> Unsupported(type, "
        "ack_id, 'stream', invocation_id, stream_id). Empty ids are None. The whole message must "
        "still be well formed.",
        "One dispatch for both subprotocols (json.unknown-type, json.stream-start).",
    ),
    Decision(
        "protobuf.streams-invocations",
        "Presence and defaults of the stream and invocation fields.",
        "StreamStartInfo.idle_timeout_ms absent = 300000, present 0 = invalid; "
        "StreamDataMessage with neither stream_sequence_id nor data = keepalive, with one of "
        "them (or a MessageData without a member) = invalid; StreamEndMessage.error present "
        "(even empty) = the publisher's error; SendToGroupMessage.ttl_seconds 0 or absent = "
        "never expires, over 300 invalid. Ids and names follow the JSON rules "
        "(specs.invocation.identifier_problem).",
        "proto3 explicit presence ('optional') is what tells a keepalive from a fragment and "
        "an absent timeout from 0 [SPEC webpubsub.v1.proto]; the JSON rules keep both "
        "subprotocols one dispatch.",
    ),
    Decision(
        "protobuf.metadata",
        "Repeated and case-variant metadata keys in a protobuf map.",
        "A key repeated exactly: the last value wins (protobuf map semantics). Keys that differ "
        "only in case: invalid (specs.metadata decision metadata.case).",
        "Protobuf parsers merge repeated map keys; the case rule is the JSON one, so both "
        "subprotocols deliver the same map.",
    ),
    Decision(
        "protobuf.field-budget",
        "How much work may one client frame cost? A 1 MB frame of 500,000 two-byte fields "
        "is valid protobuf but costs about 0.3 s of pure-Python parsing on the event loop.",
        "At most MAX_FIELDS_PER_FRAME (16,384) fields per frame, counted at every level "
        "(merged occurrences count again); more is MalformedFrame. Large payloads are not "
        "affected: a 1 MB binary_data is one field.",
        "Bounded everything: the cap keeps the worst frame to a few milliseconds. Real "
        "messages have fewer than 10 fields; even metadata at the emulator's 8 KiB limit "
        "stays far below it. Protobuf itself has no such limit (a deliberate difference, "
        "like groups).",
    ),
    Decision(
        "protobuf.ids",
        "ack_id and sequence_id ranges.",
        "Any uint64 is accepted (varints wider than 64 bits are truncated like protobuf "
        "does); a sequence_ack_message without sequence_id means sequence id 0.",
        "proto3 uint64 semantics. The C# client rejects ids above 2**63-1 it receives, but "
        "the server only echoes ids clients chose.",
    ),
    Decision(
        "protobuf.text-encoding",
        "Bodies and strings that cannot be written as proto3 strings (TEXT/JSON bodies that "
        "are not UTF-8, str values with lone surrogates).",
        "Invalid sequences become U+FFFD; encoders never raise on data.",
        "A proto3 parser rejects the whole DownstreamMessage otherwise; same policy as "
        "json.encode-bad-text / json.encode-lone-surrogate.",
    ),
    Decision(
        "protobuf.with-sequence-id",
        "How the reliable variant of an already-encoded data message is produced.",
        "Insert sequence_id (field 4) after data (3) and before metadata (5) and stream (6), "
        "and re-frame the outer length: O(len) bytes, payload not re-encoded; the result equals "
        "a full encode with sequence_id. A publication without metadata or stream skips the "
        "search for fields 5/6 (the id is simply appended).",
        "Encode once per publication, stamp per connection (as the JSON codec does).",
    ),
)
