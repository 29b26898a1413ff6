"""Every check the suite makes, as data: what it checks, where the rule comes from, and who is
at fault when an endpoint departs from it.

A departure is always reported against one ``Rule``. The report groups by rule and prints its
source (a Microsoft document, a row of a ``specs`` table, or one of our recorded decisions)
and its one-sentence ``fault``.

Rules this module keeps:
- ``source`` cites public material or a ``specs`` table; ``decision`` names a ``Decision.id``
  from a ``specs`` module, checked at import so a renamed decision cannot go stale silently.
- Kinds: ``doc`` (Microsoft documents or SDK behaviour the endpoint must keep for Microsoft's
  clients to work), ``table`` (a row of our specs tables that restates the docs), and
  ``decision`` (where Microsoft is silent and we chose; an endpoint that chose otherwise
  departs from the fabric, not necessarily from Azure). ``--only-documented`` skips
  ``decision`` rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType



@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    kind: str  # "doc" | "table" | "decision"
    source: str
    fault: str
    decision: str | None = None


_ENDPOINT = "The endpoint is at fault: "
_DECIDED = ("The endpoint differs from the fabric's recorded decision (Microsoft's documents are "
            "silent here), so this is a difference to know about, not necessarily a bug: ")

_RULES = (
    # ---------------------------------------------------------------- handshake
    Rule("connect.accept", "a valid client token opens a WebSocket", "doc",
         "Microsoft docs: Web PubSub client protocol, 'access_token' query parameter",
         _ENDPOINT + "it refused a correctly signed client token for this hub."),
    Rule("connect.subprotocol", "the offered subprotocol is echoed in Sec-WebSocket-Protocol", "doc",
         "Microsoft docs: 'json.webpubsub.azure.v1' subprotocol reference; RFC 6455 §4.2.2",
         _ENDPOINT + "Microsoft's clients reject an upgrade that does not echo their subprotocol."),
    Rule("connect.first-frame", "system/connected is the first frame to a subprotocol client", "table",
         "specs.lifecycle TRANSITIONS CONNECTING -> OPEN (system/connected precedes every other frame); "
         "Azure/azure-webpubsub integration test ClientConnectTests",
         _ENDPOINT + "the first frame of a subprotocol connection must be system/connected."),
    Rule("connect.identity", "system/connected carries the token's user id and, on reliable "
         "subprotocols only, a reconnection token", "doc",
         "Microsoft docs: subprotocol reference, connected system message; Azure/azure-webpubsub "
         "protocols/client/client-spec.md §2.2",
         _ENDPOINT + "clients read their identity and recovery token from this message."),
    Rule("connect.initial-groups", "the token's webpubsub.group claim joins those groups on connect", "doc",
         "Microsoft docs: 'webpubsub.group' claim of the client access token",
         _ENDPOINT + "a connection must be in its token's groups as soon as it is connected."),
    Rule("auth.reject", "a token signed with another key is refused before the upgrade (HTTP 401)", "doc",
         "Microsoft docs: anonymous connect policy 'deny' (default) answers 401",
         _ENDPOINT + "it accepted a client token it could not have verified."),
    # ---------------------------------------------------------------- frames
    Rule("frame.valid", "every frame parses as the subprotocol's server message", "doc",
         "Microsoft docs: JSON and protobuf subprotocol references; tests/proto/webpubsub.v1.proto",
         _ENDPOINT + "it sent a frame Microsoft's client parsers cannot read."),
    Rule("frame.kind", "JSON subprotocols get text frames, protobuf ones binary frames", "doc",
         "Microsoft docs: subprotocol references (frame types)",
         _ENDPOINT + "the Python client cannot read binary frames on a JSON subprotocol."),
    Rule("frame.type", "only catalogued message types are sent (pong only when asked)", "table",
         "specs.webpubsub_json SERVER_MESSAGES; the .NET client throws on unknown types",
         _ENDPOINT + "it sent a message type Microsoft's .NET client throws on."),
    Rule("frame.shape", "required keys, constants and value types of every server message", "table",
         "specs.webpubsub_json SERVER_MESSAGES / specs.webpubsub_protobuf MESSAGES",
         _ENDPOINT + "a server message lacks a field Microsoft's clients require, or has the wrong type."),
    Rule("frame.null", "absent keys are omitted, never null (except connected.userId)", "table",
         "specs.webpubsub_json SERVER_MESSAGES nullable; the .NET client rejects \"error\": null",
         _ENDPOINT + "Microsoft's .NET client throws on null where a key should be absent."),
    Rule("frame.unknown-key", "server messages carry only catalogued keys/fields", "table",
         "specs.webpubsub_json SERVER_MESSAGES keys; specs.webpubsub_protobuf MESSAGES",
         "Either side: the endpoint sent keys this catalogue does not know (a newer protocol "
         "revision, or an endpoint bug); update specs/ if Microsoft documents them."),
    Rule("frame.key-order", "JSON keys in the catalogue's order", "table",
         "specs.webpubsub_json SERVER_MESSAGES keys; byte-exact comparison in Azure/azure-webpubsub "
         "integration tests for message.server",
         _ENDPOINT + "Microsoft's own integration test compares these frames byte for byte."),
    Rule("frame.data", "data matches dataType (text string, JSON value not null, padded base64)", "doc",
         "Microsoft docs: JSON subprotocol 'data' encoding; specs.webpubsub_json DATA_ENCODINGS",
         _ENDPOINT + "clients decode data by dataType and fail on a mismatch."),
    Rule("ack.error-shape", "a failed ack has error{name, message}; a successful one has none", "doc",
         "Microsoft docs: concept-ack.md; the Python client requires both name and message",
         _ENDPOINT + "Microsoft's Python client raises on an ack error without name and message."),
    # ---------------------------------------------------------------- acks
    Rule("ack.once", "exactly one ack per request with an ackId", "doc",
         "Microsoft docs: concept-ack.md ('the service sends an ack')",
         _ENDPOINT + "a client with a pending ack waits for it (and times out) or gets two answers."),
    Rule("ack.success", "a permitted joinGroup/leaveGroup/sendToGroup is acked success", "doc",
         "Microsoft docs: concept-ack.md; specs.errors ACK_ERRORS",
         _ENDPOINT + "it failed a request the connection was permitted to make."),
    Rule("ack.forbidden", "a request without the role is acked Forbidden and has no effect", "doc",
         "Microsoft docs: concept-ack.md 'Forbidden'; reference-permission.md roles; specs.errors ACK_ERRORS",
         _ENDPOINT + "it let a connection act without the role, or named the error differently."),
    Rule("ack.duplicate", "a repeated successful ackId is acked Duplicate and not processed again", "doc",
         "Microsoft docs: concept-ack.md 'Duplicate'",
         _ENDPOINT + "clients rely on Duplicate to retry safely."),
    Rule("forbidden.without-ack", "a forbidden request without ackId is ignored; the connection stays", "decision",
         "specs.errors INBOUND_POLICY forbidden; decision ack.forbidden-without-ack",
         _DECIDED + "Microsoft documents no answer for it.", decision="ack.forbidden-without-ack"),
    Rule("ping.pong", "ping is answered with pong", "doc",
         "Microsoft docs: JSON subprotocol reference (ping/pong, newest revision)",
         _ENDPOINT + "the JS client closes a connection that hears nothing for 120 s."),
    # ---------------------------------------------------------------- delivery
    Rule("deliver.group", "every member of a group receives each group message exactly once", "doc",
         "Microsoft docs: sendToGroup (client) and Send To Group (REST)",
         "The endpoint is at fault if it lost the message (or, if it is only slow, raise --timeout)."),
    Rule("deliver.non-member", "connections outside the group do not receive its messages", "doc",
         "Microsoft docs: group messaging",
         _ENDPOINT + "it delivered a group message to a connection that was not (or no longer) a member."),
    Rule("deliver.no-echo", "noEcho: the publisher does not receive its own group message", "doc",
         "Microsoft docs: JSON subprotocol sendToGroup 'noEcho'",
         _ENDPOINT + "it echoed a noEcho message to its publisher."),
    Rule("deliver.excluded", "REST 'excluded' connections do not receive the message", "doc",
         "Microsoft docs: REST Send To Group / Send To All 'excluded'",
         _ENDPOINT + "it delivered to an excluded connection."),
    Rule("deliver.filter", "REST 'filter' selects exactly the matching connections", "doc",
         "Microsoft docs: reference-odata-filter.md",
         _ENDPOINT + "its OData filter selected different connections."),
    Rule("deliver.user", "a user message reaches every connection of the user and no other", "doc",
         "Microsoft docs: REST Send To User",
         "The endpoint is at fault (or, if it is only slow, raise --timeout)."),
    Rule("deliver.connection", "a connection message reaches that connection only", "doc",
         "Microsoft docs: REST Send To Connection",
         "The endpoint is at fault (or, if it is only slow, raise --timeout)."),
    Rule("deliver.all", "a hub message reaches every connection of the hub but the excluded", "doc",
         "Microsoft docs: REST Send To All",
         "The endpoint is at fault (or, if it is only slow, raise --timeout)."),
    Rule("deliver.order", "messages from one publisher arrive in the order sent", "table",
         "design brief ordering contract; per-connection order of the subprotocol references",
         _ENDPOINT + "it reordered one publisher's messages."),
    Rule("deliver.payload", "dataType and data arrive as sent (converted per the subprotocol tables)", "doc",
         "Microsoft docs: subprotocol references, data conversion between subprotocols; "
         "specs.webpubsub_json DATA_ENCODINGS; specs.webpubsub_protobuf DATA_FIELDS",
         _ENDPOINT + "it changed a message's payload or dataType."),
    Rule("deliver.from", "'from' and 'group' say where a message came from; fromUserId names the publisher", "doc",
         "Microsoft docs: JSON subprotocol message responses",
         _ENDPOINT + "clients route messages by from/group."),
    Rule("protobuf.json-data", "JSON payloads reach protobuf clients as MessageData.json_data", "decision",
         "specs.webpubsub_protobuf decision protobuf.json-data",
         _DECIDED + "Microsoft's protobuf SDKs read json_data; the older docs say text_data.",
         decision="protobuf.json-data"),
    # ---------------------------------------------------------------- membership & permissions
    Rule("rest.status", "every REST operation answers the table's success status", "doc",
         "specs.rest OPERATIONS (api-version 2024-12-01 routes.tsp); the Python SDK raises on any other",
         _ENDPOINT + "Microsoft's service SDKs raise on any other success status."),
    Rule("rest.exists", "connectionExists / groupExists / userExists / checkPermission answer 200 or 404 as the hub is", "doc",
         "Microsoft docs: REST data plane HEAD operations; specs.rest OPERATIONS not_found",
         _ENDPOINT + "its existence probe disagrees with the hub's state."),
    Rule("rest.unknown-target", "PUT operations on an unknown connection answer 404", "decision",
         "specs.rest decision rest.unknown-target",
         _DECIDED + "Azure's team said 404 for missing resources (Azure/azure-webpubsub #57).",
         decision="rest.unknown-target"),
    Rule("permission.effect", "grant/revoke change what the live connection may do", "doc",
         "Microsoft docs: REST Grant/Revoke Permission; reference-permission.md; specs.rest decision rest.permissions",
         _ENDPOINT + "a granted or revoked permission did not take effect on the next request.",
         decision="rest.permissions"),
    # ---------------------------------------------------------------- closes
    Rule("close.client", "a client close frame is answered and ends the connection", "doc",
         "RFC 6455 §5.5.1; specs.lifecycle OPEN --CLIENT_CLOSE--> CLOSED",
         _ENDPOINT + "it did not complete the close handshake or kept the connection."),
    Rule("close.app-server", "REST closeConnection ends the connection", "doc",
         "Microsoft docs: REST Close Connection",
         _ENDPOINT + "the app server asked to close the connection and it stayed open."),
    Rule("close.rest", "REST closeConnection sends system/disconnected with the reason, then closes", "decision",
         "specs.errors CLOSE_RULES closed_by_app_server; decisions close.rest and rest.close-reason",
         _DECIDED + "Azure's close code for REST closes is undocumented.",
         decision="close.rest"),
    Rule("close.unexpected", "the endpoint does not close a connection the model expects open", "doc",
         "specs.lifecycle TRANSITIONS (no transition leaves OPEN without a cause)",
         _ENDPOINT + "it closed a healthy connection."),
    # ---------------------------------------------------------------- reliable
    Rule("reliable.sequence", "data messages on reliable subprotocols carry sequenceId 1, 2, 3 ... per connection", "doc",
         "Azure/azure-webpubsub protocols/client/client-spec.md §3.2; specs.reliable GUARANTEES",
         _ENDPOINT + "reliable clients drop a message whose sequenceId is not above the last seen."),
    Rule("reliable.no-sequence", "non-reliable subprotocols carry no sequenceId", "doc",
         "Microsoft docs: JSON subprotocol reference",
         _ENDPOINT + "sequenceId is for the reliable subprotocols only."),
    Rule("reliable.recover", "a dropped reliable session recovers: same connectionId, every unacked "
         "message replayed in order with its sequenceId, then live traffic", "doc",
         "Azure/azure-webpubsub protocols/client/client-spec.md §1.4, §3.2; specs.reliable SESSION_TRANSITIONS",
         _ENDPOINT + "a reliable client that recovers lost or reordered messages."),
    Rule("reliable.connected-again", "a recovery sends system/connected again with the same connectionId", "decision",
         "specs.reliable decision reliable.connected-again",
         _DECIDED + "Azure may or may not send connected again; clients accept both.",
         decision="reliable.connected-again"),
    Rule("reliable.recovery-refused", "recovering an unknown session is accepted, then closed with 1008", "doc",
         "Azure/azure-webpubsub protocols/client/client-spec.md §1.4 (1008 = do not recover)",
         _ENDPOINT + "clients retry an HTTP error for 30 s instead of starting a new connection."),
    # ---------------------------------------------------------------- bad input
    Rule("inbound.valid", "every valid client message is accepted (no close, the documented answer)", "doc",
         "Microsoft docs: JSON/protobuf subprotocol references; specs.webpubsub_json CLIENT_MESSAGES",
         _ENDPOINT + "it rejected a message Microsoft's clients may send."),
    Rule("inbound.invalid-with-ack", "an invalid message with an ackId is acked BadRequest; the connection stays", "decision",
         "specs.errors INBOUND_POLICY invalid_message; decision ack.bad-request",
         _DECIDED + "Azure's answer to invalid messages is undocumented.",
         decision="ack.bad-request"),
    Rule("inbound.invalid-without-ack", "an invalid message without ackId: system/disconnected, then close 1007", "decision",
         "specs.errors INBOUND_POLICY invalid_message; decision ack.invalid-without-ack",
         _DECIDED + "Microsoft documents only that the connection is closed.",
         decision="ack.invalid-without-ack"),
    Rule("inbound.malformed", "an unreadable frame: system/disconnected, then close 1007", "decision",
         "specs.errors CLOSE_RULES malformed_frame; decision close.malformed",
         _DECIDED + "Microsoft documents only that the service declines the client.",
         decision="close.malformed"),
    Rule("inbound.unsupported", "an unknown message type keeps the connection (ack BadRequest if it has an ackId)", "decision",
         "specs.errors INBOUND_POLICY unsupported; decision ack.unsupported",
         _DECIDED + "forward compatibility with newer clients is our choice.",
         decision="ack.unsupported"),
    Rule("inbound.wrong-frame", "a binary frame on JSON (text on protobuf) closes with 1003", "decision",
         "specs.errors CLOSE_RULES wrong_frame_type; decision close.malformed",
         _DECIDED + "the close code is undocumented.", decision="close.malformed"),
    Rule("inbound.too-big", "a frame over the endpoint's limit closes with 1009", "table",
         "specs.errors CLOSE_RULES message_too_big; Microsoft docs: limits (1 MB per message)",
         "The endpoint: RFC 6455 §7.4.1 names 1009 for a message too big to process."),
    Rule("inbound.bad-utf8", "a text frame that is not UTF-8 closes with 1007", "doc",
         "RFC 6455 §8.1 (MUST fail the connection, 1007)",
         _ENDPOINT + "RFC 6455 requires closing with 1007."),
    Rule("inbound.no-crash", "bad input never gets 1011 or a dropped socket; other connections carry on", "doc",
         "design brief 'Bad input'; RFC 6455 §7.4.1",
         _ENDPOINT + "bad input from one client must get a specific error, never an internal failure."),
    Rule("event.no-handler", "an event with ackId and no handler is acked NotFound", "decision",
         "specs.errors decision ack.event-no-handler",
         _DECIDED + "Azure's answer with no handler is undocumented.", decision="ack.event-no-handler"),
)

RULES: Mapping[str, Rule] = MappingProxyType({r.id: r for r in _RULES})


def _all_decisions() -> set[str]:
    from specs.render import all_decisions  # walks every specs module

    return {d.id for _, d in all_decisions()}


def _check() -> None:
    if len(RULES) != len(_RULES):
        raise RuntimeError("duplicate rule ids in specs.conform.rules")
    known = _all_decisions()
    for r in _RULES:
        if r.kind not in ("doc", "table", "decision"):
            raise RuntimeError(f"rule {r.id}: unknown kind {r.kind!r}")
        if r.decision is not None and r.decision not in known:
            raise RuntimeError(f"rule {r.id} names decision {r.decision!r}, which no specs module records")
        if r.kind == "decision" and r.decision is None:
            raise RuntimeError(f"rule {r.id} is a decision rule without a decision id")


_check()
