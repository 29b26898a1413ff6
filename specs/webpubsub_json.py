"""The Azure Web PubSub JSON subprotocol as data: the single source of truth.

``fabric.webpubsub.codec_json`` validates names and ranges through the functions here, the server
negotiates subprotocols from ``SUBPROTOCOLS``, and the tests check the encoder's output
against ``SERVER_MESSAGES`` (exact key orders). Conformance tooling can read the same tables
to drive any endpoint.

Rules this module keeps:
- Pure data plus tiny pure functions; imports nothing of ours outside ``specs``.
- Every choice where Microsoft's sources are open is a ``Decision`` in ``DECISIONS``
  (sources: "WebSocket client protocols for Azure Web PubSub" on learn.microsoft.com,
  the JSON subprotocol pages there, and Azure/azure-webpubsub ``protocols/client``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

import attrs

from specs.datatype import DataType
from specs._decisions import Decision

# --------------------------------------------------------------------------- numbers

#: ``ackId`` and ``sequenceId`` are uint64 on the wire (client spec, .proto ``uint64``).
UINT64_MAX = 2**64 - 1

#: The deepest nesting of arrays and objects accepted in any JSON the fabric reads: client
#: frames, REST bodies, event-handler answers (decision ``json.max-depth``).
MAX_JSON_DEPTH = 64

#: A numeric-string ``ackId``/``sequenceId`` is 1 to 20 ASCII digits (20 = len(str(UINT64_MAX))).
NUMERIC_STRING_PATTERN = r"[0-9]{1,20}"

#: ``ttlSeconds`` on a client ``sendToGroup`` (0 = never expires), as REST ``messageTtlSeconds``.
MAX_TTL_SECONDS = 300

# --------------------------------------------------------------------------- subprotocols


@attrs.frozen(slots=True)
class Subprotocol:
    """One predefined WebSocket subprotocol (Learn: WebSocket client protocols for Azure Web PubSub).

    Attributes:
        name: the ``Sec-WebSocket-Protocol`` token, echoed verbatim on accept.
        reliable: messages carry ``sequenceId``; sessions can be recovered (client-spec.md
            §1.4, §3.2).
        binary: frames are protobuf (binary frames) rather than JSON (text frames).
    """

    name: str
    reliable: bool
    binary: bool

    @property
    def frame_kind(self) -> str:
        """``"binary"`` or ``"text"``: the only WebSocket frame kind this subprotocol uses."""
        return "binary" if self.binary else "text"


JSON_V1 = Subprotocol("json.webpubsub.azure.v1", reliable=False, binary=False)
JSON_RELIABLE_V1 = Subprotocol("json.reliable.webpubsub.azure.v1", reliable=True, binary=False)
PROTOBUF_V1 = Subprotocol("protobuf.webpubsub.azure.v1", reliable=False, binary=True)
PROTOBUF_RELIABLE_V1 = Subprotocol(
    "protobuf.reliable.webpubsub.azure.v1", reliable=True, binary=True
)

#: Predefined subprotocols by exact name. Any other offered name, or none, makes the
#: connection a *simple WebSocket client* ("WebSocket client protocols for Azure Web PubSub" [DOC]).
SUBPROTOCOLS: Mapping[str, Subprotocol] = MappingProxyType(
    {p.name: p for p in (JSON_V1, JSON_RELIABLE_V1, PROTOBUF_V1, PROTOBUF_RELIABLE_V1)}
)


def subprotocol_for(name: str | None) -> Subprotocol | None:
    """The predefined subprotocol called exactly ``name``, or None (simple client)."""
    if name is None:
        return None
    return SUBPROTOCOLS.get(name)


def choose_subprotocol(offered: list[str] | tuple[str, ...]) -> Subprotocol | None:
    """The first predefined subprotocol the client offered, in the client's order.

    Microsoft's clients always offer exactly one [SDK][OBS]. With several offers and no
    ``connect`` handler the spec leaves the choice open; see decision ``subprotocol.pick``.
    """
    for name in offered:
        p = SUBPROTOCOLS.get(name)
        if p is not None:
            return p
    return None


# --------------------------------------------------------------------------- names
# One rule per name, for every surface: specs/names.py.
from specs.names import (  # noqa: E402,F401
    EVENT_NAME_MAX_CHARS, GROUP_NAME_MAX_CHARS, GROUP_NAME_MIN_CHARS, GROUP_NAME_PATTERN, HUB_NAME_PATTERN,
    event_name_problem, group_name_problem, is_valid_event_name, is_valid_group_name, is_valid_hub_name,
)



# --------------------------------------------------------------------------- data types

#: ``dataType`` when a ``sendToGroup``/``event`` omits it (or sends null) [DOC].
DEFAULT_DATA_TYPE = DataType.JSON


@attrs.frozen(slots=True)
class DataEncoding:
    """How one ``dataType`` travels.

    Attributes:
        data_type: the enum member (its ``.value`` is the JSON spelling we emit).
        json_data: what ``data`` holds in the JSON subprotocol.
        simple_frame: the frame kind a simple WebSocket client receives (what simple clients in
            a group receive, per Microsoft Learn's reference-json-webpubsub-subprotocol.md [DOC]).
        protobuf_field: the ``MessageData`` oneof field used by the protobuf subprotocol.
    """

    data_type: DataType
    json_data: str
    simple_frame: str
    protobuf_field: str


DATA_ENCODINGS: Mapping[DataType, DataEncoding] = MappingProxyType(
    {
        DataType.TEXT: DataEncoding(DataType.TEXT, "JSON string", "text", "text_data"),
        DataType.JSON: DataEncoding(
            DataType.JSON, "the JSON value itself (not null)", "text", "json_data"
        ),
        DataType.BINARY: DataEncoding(
            DataType.BINARY, "base64 string (RFC 4648, padded)", "binary", "binary_data"
        ),
        DataType.PROTOBUF: DataEncoding(
            DataType.PROTOBUF,
            "base64 string of a serialized google.protobuf.Any",
            "binary",
            "protobuf_data",
        ),
    }
)

# --------------------------------------------------------------------------- client messages


@attrs.frozen(slots=True)
class Field:
    """One property of a client message.

    Attributes:
        name: the JSON property name (camelCase, exact).
        json_type: ``string``, ``uint64``, ``boolean``, ``object``, ``any``.
        required: absent (or null) is an error when True.
        default: the value used when absent (None = no value).
        constraints: human-readable rule, enforced by the codec.
        lenient: what we accept beyond the strict type (empty = nothing).
    """

    name: str
    json_type: str
    required: bool
    default: object = None
    constraints: str = ""
    lenient: str = ""


@attrs.frozen(slots=True)
class ClientMessageSpec:
    """A client -> service message type.

    Attributes:
        type: the ``type`` value (matched case-sensitively, decision ``json.type-case``).
        fields: the known properties; any other property is ignored.
        supported: False = decoded as ``Unsupported`` (forward compatibility).
        reliable_only: only meaningful on the reliable subprotocols.
        notes: provenance and behaviour.
    """

    type: str
    fields: tuple[Field, ...]
    supported: bool = True
    reliable_only: bool = False
    notes: str = ""

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)


_ACK_ID = Field(
    "ackId",
    "uint64",
    required=False,
    constraints="0 <= ackId <= 2**64-1",
    lenient="numeric string of 1-20 ASCII digits; null = absent",
)
_GROUP = Field(
    "group",
    "string",
    required=True,
    constraints="1-1024 code points, not whitespace-only, no line feed (group_name_problem)",
)
_DATA_TYPE = Field(
    "dataType",
    "string",
    required=False,
    default="json",
    constraints="one of text, json, binary, protobuf",
    lenient="case-insensitive (.NET writes 'Text'); null = absent",
)
_DATA = Field(
    "data",
    "any",
    required=True,
    constraints=(
        "json: any JSON value except null, kept as raw bytes; text: a string; "
        "binary/protobuf: a padded standard base64 string"
    ),
)
_STREAM = Field(
    "stream",
    "object",
    required=False,
    constraints="{streamId, idleTimeoutMs?}: a stream start (specs.streams); then no data/dataType; "
    "idleTimeoutMs 1..2**32-1, default 300000",
)
_METADATA = Field(
    "metadata",
    "object",
    required=False,
    constraints="an object of strings, rules of specs.metadata (keys lower-cased); a message with "
    "metadata and no data is an empty text (decision metadata.only)",
)
_STREAM_ID = Field("streamId", "string", required=True,
                   constraints="1-1024 code points, no control character (specs.invocation.identifier_problem)")
_INVOCATION_ID = Field("invocationId", "string", required=True,
                       constraints="1-1024 code points, no control character")

CLIENT_MESSAGES: Mapping[str, ClientMessageSpec] = MappingProxyType(
    {
        m.type: m
        for m in (
            ClientMessageSpec(
                "joinGroup", (_GROUP, _ACK_ID), notes="needs webpubsub.joinLeaveGroup[.<group>]"
            ),
            ClientMessageSpec("leaveGroup", (_GROUP, _ACK_ID)),
            ClientMessageSpec(
                "sendToGroup",
                (
                    _GROUP,
                    _ACK_ID,
                    Field(
                        "noEcho",
                        "boolean",
                        required=False,
                        default=False,
                        lenient="null = absent",
                    ),
                    _DATA_TYPE,
                    _DATA,
                    _STREAM,
                    _METADATA,
                    Field("ttlSeconds", "uint32", required=False, default=0,
                          constraints="0..300; the message is dropped where it still waits after that long"),
                ),
                notes="needs webpubsub.sendToGroup[.<group>]; with stream: a stream start",
            ),
            ClientMessageSpec(
                "event",
                (
                    Field(
                        "event",
                        "string",
                        required=True,
                        constraints="1-1024 code points, no C0 control or DEL (event_name_problem)",
                    ),
                    _ACK_ID,
                    _DATA_TYPE,
                    _DATA,
                    _STREAM,
                    _METADATA,
                ),
                notes="routed to upstream user event <event>; with stream: Unsupported (streams target groups)",
            ),
            ClientMessageSpec(
                "sequenceAck",
                (
                    Field(
                        "sequenceId",
                        "uint64",
                        required=True,
                        constraints="0 <= sequenceId <= 2**64-1; cumulative",
                        lenient="numeric string of 1-20 ASCII digits",
                    ),
                ),
                reliable_only=True,
            ),
            ClientMessageSpec("ping", (), notes="answered with pong"),
            # ---- streams (client-spec.md §3.6; specs.streams) and invocations (the JS client
            # @azure/web-pubsub-client 1.0.4+; specs.invocation)
            ClientMessageSpec(
                "streamData",
                (
                    _STREAM_ID,
                    Field("streamSequenceId", "uint64", required=False,
                          constraints="with dataType and data: a fragment; 1, 2, 3... exactly",
                          lenient="numeric string of 1-20 ASCII digits; null = absent"),
                    _DATA_TYPE,
                    Field("data", "any", required=False),
                ),
                notes="only streamId = a keepalive; some but not all of the payload fields: invalid",
            ),
            ClientMessageSpec(
                "streamEnd",
                (
                    _STREAM_ID,
                    Field("error", "object", required=False,
                          constraints="{message?, userErrorCode?} (strings; a name is ignored)"),
                ),
            ),
            ClientMessageSpec(
                "invoke",
                (
                    _INVOCATION_ID,
                    Field("target", "string", required=False, default="event", constraints='"event"'),
                    Field("event", "string", required=True, constraints="as event names"),
                    _DATA_TYPE,
                    Field("data", "any", required=False,
                          constraints="as for event; absent: an empty text (decision invoke.no-payload)"),
                    _METADATA,
                ),
                notes="JS client 1.0.4+, .NET client; answered by exactly one invokeResponse",
            ),
            ClientMessageSpec(
                "cancelInvocation",
                (_INVOCATION_ID,),
                notes="not answered (decision invoke.cancel)",
            ),
            ClientMessageSpec(
                "setGroupState",
                (_GROUP, _ACK_ID, Field("state", "object", required=False)),
                supported=False,
                notes="JS client 1.1.0 message types only",
            ),
            ClientMessageSpec("subscribeGroupState", (_GROUP, _ACK_ID), supported=False),
            ClientMessageSpec("unsubscribeGroupState", (_GROUP, _ACK_ID), supported=False),
        )
    }
)

SUPPORTED_CLIENT_TYPES = frozenset(t for t, m in CLIENT_MESSAGES.items() if m.supported)
KNOWN_UNSUPPORTED_CLIENT_TYPES = frozenset(
    t for t, m in CLIENT_MESSAGES.items() if not m.supported
)

# --------------------------------------------------------------------------- server messages


@attrs.frozen(slots=True)
class ServerMessageSpec:
    """A service -> client message shape, with its exact key order.

    Attributes:
        name: catalogue key (``message.group``); ``type`` is the JSON ``type`` value.
        keys: every key that may appear, in the exact order it is written.
        optional: the keys of ``keys`` that are sometimes omitted (never written as null
            unless ``nullable``).
        nullable: keys written as JSON null when they have no value.
        constants: keys whose value is fixed for this shape.
        nested: key order of nested objects (``error`` -> ``("name", "message")``).
        notes: provenance and client constraints.
    """

    name: str
    type: str
    keys: tuple[str, ...]
    optional: frozenset[str] = frozenset()
    nullable: frozenset[str] = frozenset()
    constants: Mapping[str, object] = attrs.field(factory=dict)
    nested: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    notes: str = ""

    @property
    def required_keys(self) -> tuple[str, ...]:
        return tuple(k for k in self.keys if k not in self.optional)


_ERROR_KEYS = ("name", "message")

SERVER_MESSAGES: Mapping[str, ServerMessageSpec] = MappingProxyType(
    {
        m.name: m
        for m in (
            ServerMessageSpec(
                "ack",
                "ack",
                ("type", "ackId", "success", "error"),
                optional=frozenset({"error"}),
                constants={"type": "ack"},
                nested={"error": _ERROR_KEYS},
                notes=(
                    "error present iff success is false, and then carries both name and message "
                    "(Python client requires both; .NET rejects \"error\": null) [SDK]"
                ),
            ),
            ServerMessageSpec(
                "message.group",
                "message",
                ("type", "from", "group", "dataType", "data", "fromUserId", "metadata", "stream", "sequenceId"),
                optional=frozenset({"fromUserId", "metadata", "stream", "sequenceId"}),
                constants={"type": "message", "from": "group"},
                nested={"stream": ("streamId", "streamSequenceId", "endOfStream", "error")},
                notes="fromUserId omitted for REST sends and anonymous publishers; metadata when the message "
                "has some; stream on stream fragments (specs.streams; its error object: name, message, "
                "userErrorCode); sequenceId on reliable",
            ),
            ServerMessageSpec(
                "message.server",
                "message",
                ("type", "from", "dataType", "data", "metadata", "sequenceId"),
                optional=frozenset({"metadata", "sequenceId"}),
                constants={"type": "message", "from": "server"},
                notes=(
                    'byte-exact: {"type":"message","from":"server","dataType":"text","data":"Hello"} '
                    "(Microsoft integration test)"
                ),
            ),
            ServerMessageSpec(
                "system.connected",
                "system",
                ("type", "event", "userId", "connectionId", "reconnectionToken"),
                optional=frozenset({"reconnectionToken"}),
                nullable=frozenset({"userId"}),
                constants={"type": "system", "event": "connected"},
                notes="always the first frame to a subprotocol client; reconnectionToken on reliable",
            ),
            ServerMessageSpec(
                "system.disconnected",
                "system",
                ("type", "event", "message"),
                constants={"type": "system", "event": "disconnected"},
                notes="sent before the service closes the socket",
            ),
            ServerMessageSpec(
                "pong",
                "pong",
                ("type",),
                constants={"type": "pong"},
                notes="only in reply to ping: the .NET client throws on an unknown type",
            ),
            ServerMessageSpec(
                "invokeResponse.success",
                "invokeResponse",
                ("type", "invocationId", "success", "dataType", "data", "metadata"),
                optional=frozenset({"dataType", "data", "metadata"}),
                constants={"type": "invokeResponse", "success": True},
                notes="the handler's answer (specs.invocation); dataType and data together or neither",
            ),
            ServerMessageSpec(
                "invokeResponse.error",
                "invokeResponse",
                ("type", "invocationId", "success", "error"),
                constants={"type": "invokeResponse", "success": False},
                nested={"error": _ERROR_KEYS},
                notes="a failed or refused invocation (specs.invocation.ERROR_WHEN)",
            ),
            ServerMessageSpec(
                "streamAck",
                "streamAck",
                ("type", "streamId", "expectedSequenceId"),
                constants={"type": "streamAck"},
                notes="the next fragment expected (1 accepts a start); specs.streams",
            ),
            ServerMessageSpec(
                "streamNack",
                "streamNack",
                ("type", "streamId", "expectedSequenceId", "name", "message"),
                constants={"type": "streamNack"},
                notes="name InvalidSequenceId or TransientError; the stream stays open",
            ),
            ServerMessageSpec(
                "streamClosed",
                "streamClosed",
                ("type", "streamId", "error"),
                optional=frozenset({"error"}),
                constants={"type": "streamClosed"},
                nested={"error": _ERROR_KEYS},
                notes="the end of the publisher's stream: no error for a normal end, else specs.streams.ClosedName",
            ),
        )
    }
)

# --------------------------------------------------------------------------- decisions

DECISIONS: tuple[Decision, ...] = (
    Decision(
        "json.max-depth",
        "How deeply may JSON be nested (client messages, REST bodies, handler answers)?",
        "At most MAX_JSON_DEPTH = 64 levels of arrays and objects, counting the message envelope. "
        "Deeper input is malformed: a client frame closes 1007 (after system/disconnected), a REST "
        "body is 400 InvalidJson, a handler answer is a BadBody failure. Never a 5xx.",
        "64 is System.Text.Json's default MaxDepth, the .NET reader Azure's service is built on; "
        "without a bound, a 4 KB body of brackets reached the interpreter's recursion limit inside "
        "the JSON decoder (a 500 on REST).",
    ),
    Decision(
        "json.unknown-type",
        "A well-formed object whose string type we do not implement (stream*, invoke, "
        "cancelInvocation, group state, anything new).",
        "Decode as Unsupported(type, ack_id, ...) and keep the connection: the server answers "
        "an ack BadRequest when an ackId is readable (invokeResponse/streamClosed for invoke "
        "and stream messages), otherwise ignores it.",
        "Forward compatibility: newer JS/.NET clients send these; closing would kill their "
        "connections for a feature they may not even use. Only a frame we cannot read at all "
        "is malformed.",
    ),
    Decision(
        "json.type-case",
        "Is the type value compared case-insensitively like dataType?",
        "No: exact match; 'JoinGroup' is an unknown (Unsupported) type.",
        "Only dataType needs leniency: the .NET client writes it from a C# enum, capitalised "
        "[SDK]; every client writes type values in camelCase.",
    ),
    Decision(
        "json.missing-data",
        "sendToGroup/event without data.",
        "InvalidMessage ('data' is required) for every dataType, except a metadata-only "
        "message (metadata present, no data and no dataType), which is an empty text "
        "(decision metadata.only). An invoke without data is an empty text too "
        "(decision invoke.no-payload).",
        "The JSON subprotocol page lists data as a field of both messages [DOC]; delivering an "
        "invented empty value would hide a client bug. The emulator's metadata-only form is an "
        "empty text message [EMU].",
    ),
    Decision(
        "json.null-json-data",
        "data: null with dataType json.",
        "InvalidMessage.",
        "The .NET client throws on receiving data: null for json [SDK]; forwarding it "
        "would break .NET subscribers of the group.",
    ),
    Decision(
        "json.null-fields",
        "Optional fields sent as JSON null.",
        "null means absent for ackId, noEcho, dataType, stream, metadata; for required fields "
        "(group, event, data, sequenceId) null is 'missing'.",
        "Serializers that write nulls for unset properties stay compatible.",
    ),
    Decision(
        "json.numeric-strings",
        "What counts as a numeric string for ackId/sequenceId?",
        "JSON integers 0..2**64-1, or strings of 1-20 ASCII digits within that range. Floats "
        "(even 1.0), signs, whitespace, hex, exponents: InvalidMessage.",
        "Numeric strings are the leniency the client SDKs call for [SDK]; nothing suggests any "
        "client sends the rest.",
    ),
    Decision(
        "json.invalid-ackid",
        "An invalid ackId (negative, non-integer, too big).",
        "InvalidMessage with ack_id None: there is no ackId to answer, so the server treats it "
        "like any invalid message without ackId (see errors.INVALID_MESSAGE_POLICY).",
        "An ack for an id the client never validly sent could be matched to a wrong request.",
    ),
    Decision(
        "json.base64",
        "How lenient is base64 for binary/protobuf data?",
        "Standard alphabet, padding required, no whitespace; otherwise InvalidMessage.",
        "Every Microsoft client writes padded standard base64 (btoa/Buffer, "
        "Convert.ToBase64String, base64.b64encode).",
    ),
    Decision(
        "json.raw-json",
        "Is json data normalized?",
        "No: the exact bytes of the value as sent (inner whitespace included) are the "
        "Payload body and are written back verbatim; never re-encoded.",
        "Encode once, no float/int round-trip surprises, and it is faster.",
    ),
    Decision(
        "json.stream-start",
        "sendToGroup/event/invoke carrying a stream object (client-spec.md §3.6.1).",
        "sendToGroup: a StreamStart (a stream object without a string streamId is InvalidMessage; "
        "data or dataType beside it is InvalidMessage with the streamId). event/invoke: "
        "Unsupported(type, ack_id, feature='stream', ...), answered streamClosed/invokeResponse "
        "BadRequest.",
        "§3.6 streams target groups only; a start carries no payload (§3.6.1.2).",
    ),
    Decision(
        "json.metadata-ttl",
        "metadata and ttlSeconds on sendToGroup/event (emulator and canonical-proto evidence).",
        "metadata is read and validated on sendToGroup/event/invoke (specs.metadata) and travels "
        "with the message; ttlSeconds (sendToGroup only, 0..300, null = absent) is the message's "
        "TTL like REST messageTtlSeconds; out of range is InvalidMessage with the emulator's text.",
        "[EMU] parser rules; [SPEC] webpubsub.v1.proto SendToGroupMessage.ttl_seconds = 5 and the "
        "metadata maps. No JS client writes them yet (1.1.0 does not), other clients may.",
    ),
    Decision(
        "json.duplicate-keys",
        "An object with a repeated key.",
        "The last occurrence wins (msgspec's behaviour on both decode paths).",
        "Same as JavaScript's JSON.parse.",
    ),
    Decision(
        "json.malformed",
        "What is a malformed frame (the service 'declines the client')?",
        "Not valid UTF-8, not JSON, not an object, no string type, or nested deeper than the "
        "decoder's limit: MalformedFrame; the server closes (errors.CLOSE_RULES 'malformed_frame').",
        "Nothing can be answered when the type cannot be read.",
    ),
    Decision(
        "json.no-echo",
        "Values accepted for noEcho.",
        "true/false, null or absent = false; anything else InvalidMessage.",
        "Neither the docs nor the SDKs call for leniency here.",
    ),
    Decision(
        "json.ack-on-ackless-types",
        "An ackId on sequenceAck or ping.",
        "Ignored; errors in a sequenceAck are InvalidMessage with ack_id None.",
        "Neither message is acknowledged by the service [DOC].",
    ),
    Decision(
        "json.encode-bad-text",
        "A TEXT payload whose body is not valid UTF-8 (possible from a REST text/plain body).",
        "The encoder replaces invalid sequences with U+FFFD; it never raises. The REST layer "
        "should reject such bodies with 400.",
        "One bad body must not crash the group actor that encodes it for every member.",
    ),
    Decision(
        "json.encode-lone-surrogate",
        "A str with a lone surrogate reaching an encoder (e.g. a JWT sub decoded by PyJWT).",
        "Written as a \\uXXXX escape (valid JSON text) instead of raising.",
        "Encoders never raise on data; JS and .NET parsers accept the escape.",
    ),
    Decision(
        "json.user-id-null",
        "userId in system/connected for an anonymous connection.",
        "Written as null (the key is always present).",
        "A real-service capture quoted in a public README shows \"userId\":null.",
    ),
    Decision(
        "subprotocol.pick",
        "A client offers several subprotocols and there is no connect handler.",
        "Pick the first predefined one in the client's order; none predefined = simple client.",
        "Undefined in the client spec; Microsoft clients offer exactly one.",
    ),
)
