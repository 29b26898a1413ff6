"""Ack errors and WebSocket close codes as data: what the server answers when something fails.

The server imports the constants (``CloseCode.MESSAGE_TOO_BIG``,
``CLOSE_RULES[CloseSituation.SLOW_CLIENT]``, ``AckErrorName.FORBIDDEN``) and never spells a
code or error name itself, so this module is the whole taxonomy.

Rules this module keeps:
- Only WebSocket code 1008 has a documented Web PubSub meaning: "the session is gone, do not
  recover" (JS and Python clients stop recovery on it; every other code makes a reliable
  client try to recover). So a close that discards the session uses 1008 unless a more
  specific RFC 6455 code tells a developer more (1003, 1007, 1009, 1011) and then a recovery
  attempt is refused with 1008 anyway.
- Azure's documented close *reasons* (Normal, ClosedByAppServer, ServiceReload, PingTimeout,
  SlowClient) are categories for logs and metrics; ours are marked ``ours=True``.
- Decisions where Microsoft's sources are silent are in ``DECISIONS`` with their reasons.
  The sources: Microsoft Learn's concept-ack.md (ack errors, Duplicate) and
  reference-json-webpubsub-subprotocol.md (the ``disconnected`` message); the client protocol
  spec, Azure/azure-webpubsub ``protocols/client/client-spec.md`` §1.3, §1.4 (1008), §3.1,
  §3.2; the close reasons in Web PubSub's metrics and live-trace docs; RFC 6455; Microsoft's
  emulator where the docs are silent (evidence tags: ``specs._decisions``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

import attrs

from specs._decisions import Decision

# =========================================================================== ack errors


class AckErrorName(str, enum.Enum):
    """``error.name`` values of a failed ``ack`` (clients must tolerate new names)."""

    FORBIDDEN = "Forbidden"
    INTERNAL_SERVER_ERROR = "InternalServerError"
    DUPLICATE = "Duplicate"
    NOT_FOUND = "NotFound"
    TIMEOUT = "Timeout"
    BAD_REQUEST = "BadRequest"
    INVOCATION_FAILED = "InvocationFailed"


@attrs.frozen(slots=True)
class AckErrorRule:
    """When one ack error name is used.

    Attributes:
        name: the wire value.
        when: the situations that produce it.
        default_message: the ``error.message`` when the server has nothing more specific.
        source: where the name comes from.
        ours: True when no Microsoft document lists it for client acks.
        emitted: False for names that are reserved but never sent today.
    """

    name: AckErrorName
    when: str
    default_message: str
    source: str
    ours: bool = False
    emitted: bool = True


ACK_ERRORS: Mapping[AckErrorName, AckErrorRule] = MappingProxyType(
    {
        r.name: r
        for r in (
            AckErrorRule(
                AckErrorName.FORBIDDEN,
                "joinGroup/leaveGroup/sendToGroup without the matching role "
                "(webpubsub.joinLeaveGroup[.<group>], webpubsub.sendToGroup[.<group>] or a "
                "matching pattern role).",
                "The connection does not have permission to perform this action.",
                "[DOC] concept-ack.md",
            ),
            AckErrorRule(
                AckErrorName.INTERNAL_SERVER_ERROR,
                "An unexpected failure while processing the request, including an upstream "
                "event handler answering non-2xx to an `event` that carries an ackId.",
                "The service failed to process the message.",
                "[DOC] concept-ack.md",
            ),
            AckErrorRule(
                AckErrorName.DUPLICATE,
                "The ackId was already processed successfully on this logical connection "
                "(failed operations are not remembered, so they can be retried with the same "
                "ackId). Clients treat it as success.",
                "Message with ack-id has been processed.",
                "[DOC] concept-ack.md; message text per duplicate_ack_message() [EMU]",
            ),
            AckErrorRule(
                AckErrorName.NOT_FOUND,
                "An `event` with ackId that no event handler or listener takes.",
                "No event handler is interested in the event.",
                "[SPEC] 2021 json.webpubsub.azure.v1 schema; the use is ours (no public source "
                "says what an unhandled event with ackId gets)",
                ours=True,
            ),
            AckErrorRule(
                AckErrorName.TIMEOUT,
                "The upstream event handler did not answer an `event` with ackId in time.",
                "The operation timed out.",
                "[SPEC] 2021 json.webpubsub.azure.v1 schema",
            ),
            AckErrorRule(
                AckErrorName.BAD_REQUEST,
                "A message with an ackId that the codec rejected (InvalidMessage: missing or "
                "invalid field) or does not implement (Unsupported). Also the error name of "
                "invokeResponse/streamClosed answers to unsupported invoke/stream messages.",
                "The message is not supported or not valid.",
                "ours (the Microsoft emulator's enum has the same name) [EMU]",
                ours=True,
            ),
            AckErrorRule(
                AckErrorName.INVOCATION_FAILED,
                "Only in invokeResponse (never in an ack): the handler answered an invocation with "
                "a failure (a webhook's 4xx/5xx, an in-process handler's exception); "
                "specs.invocation names every invokeResponse error.",
                "The invocation failed.",
                "[DOC] concept-ack.md",
            ),
        )
    }
)

#: Short alias used by the server.
AckError = AckErrorName

#: Most processed ackIds remembered per logical connection for Duplicate detection (FIFO
#: eviction), as the Microsoft emulator does; the service's own size is undocumented.
DUPLICATE_ACK_CACHE_SIZE = 1000


def default_ack_message(name: str) -> str:
    """The default ``error.message`` for an ack error name (any name; unknown ones get a
    generic text)."""
    try:
        return ACK_ERRORS[AckErrorName(name)].default_message
    except ValueError:
        return "The request failed."


def duplicate_ack_message(ack_id: int) -> str:
    """``Message with ack-id: N has been processed`` (documented text)."""
    return f"Message with ack-id: {ack_id} has been processed"


def unsupported_message(type_: str, feature: str | None = None) -> str:
    """The ``error.message`` for an Unsupported message."""
    if feature is not None:
        return f"'{type_}' with '{feature}' is not supported by this server."
    return f"Message type '{type_}' is not supported by this server."


# =========================================================================== close codes


class CloseCode(enum.IntEnum):
    """The WebSocket close codes the server sends (RFC 6455 §7.4.1)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011

    # ---- aliases naming the situation (same values; IntEnum aliases compare equal)
    #: Web PubSub's meaning of 1008: the session is gone, clients must not recover.
    SESSION_GONE = 1008
    CLOSED_BY_APP_SERVER = 1008
    SLOW_CONSUMER = 1008
    RECOVERY_FAILED = 1008
    #: A simple sendToGroup-mode client without permission for its group.
    FORBIDDEN = 1008
    #: Malformed frame, or an invalid message without ackId.
    INVALID_MESSAGE = 1007
    #: A binary frame on a JSON subprotocol (a text frame on protobuf).
    WRONG_FRAME_TYPE = 1003


class CloseReason(str, enum.Enum):
    """Close categories for logs and metrics. The first five are Azure's documented reasons."""

    NORMAL = "Normal"
    CLOSED_BY_APP_SERVER = "ClosedByAppServer"
    SERVICE_RELOAD = "ServiceReload"
    PING_TIMEOUT = "PingTimeout"
    SLOW_CLIENT = "SlowClient"
    # ---- ours
    INVALID_PAYLOAD = "InvalidPayload"
    UNSUPPORTED_FRAME = "UnsupportedFrame"
    MESSAGE_TOO_BIG = "MessageTooBig"
    PROTOCOL_ERROR = "ProtocolError"
    SESSION_NOT_RECOVERABLE = "SessionNotRecoverable"
    EVENT_HANDLER_FAILED = "EventHandlerFailed"
    FORBIDDEN = "Forbidden"
    INTERNAL_ERROR = "InternalError"


AZURE_CLOSE_REASONS = frozenset(
    {
        CloseReason.NORMAL,
        CloseReason.CLOSED_BY_APP_SERVER,
        CloseReason.SERVICE_RELOAD,
        CloseReason.PING_TIMEOUT,
        CloseReason.SLOW_CLIENT,
    }
)


class CloseSituation(str, enum.Enum):
    """Why a connection closes; the key of ``CLOSE_RULES``."""

    CLIENT_CLOSED = "client_closed"
    SERVER_SHUTDOWN = "server_shutdown"
    CLOSED_BY_APP_SERVER = "closed_by_app_server"
    SLOW_CLIENT = "slow_client"
    RELIABLE_BUFFER_FULL = "reliable_buffer_full"
    PING_TIMEOUT = "ping_timeout"
    RECOVERY_FAILED = "recovery_failed"
    MALFORMED_FRAME = "malformed_frame"
    INVALID_MESSAGE = "invalid_message"
    WRONG_FRAME_TYPE = "wrong_frame_type"
    MESSAGE_TOO_BIG = "message_too_big"
    WEBSOCKET_PROTOCOL_ERROR = "websocket_protocol_error"
    INVALID_UTF8 = "invalid_utf8"
    NO_EVENT_HANDLER = "no_event_handler"
    EVENT_HANDLER_FAILED = "event_handler_failed"
    SIMPLE_CLIENT_FORBIDDEN = "simple_client_forbidden"
    INTERNAL_ERROR = "internal_error"


@attrs.frozen(slots=True)
class CloseRule:
    """How the server closes in one situation.

    Attributes:
        situation: the key.
        code: the WebSocket close code sent (for CLIENT_CLOSED: echoed, 1000 if none).
        reason: the category for logs and metrics.
        message: default text for the ``system/disconnected`` message and the close frame
            reason (truncate with ``close_frame_reason``).
        send_disconnected: subprotocol clients get ``system/disconnected`` before the close.
        session_kept: a reliable session survives and may be recovered.
        clients: what Microsoft's clients do on this close (their reconnect/recovery logic).
        when: the trigger.
        why: the reason for the code.
    """

    situation: CloseSituation
    code: CloseCode
    reason: CloseReason
    message: str
    send_disconnected: bool
    session_kept: bool
    clients: str
    when: str
    why: str

    @property
    def client_recovers(self) -> bool:
        """A reliable Microsoft client attempts recovery after this close code."""
        return self.code != CloseCode.SESSION_GONE


_RECOVER_THEN_RECONNECT = (
    "reliable clients try to recover (refused with 1008 since the session is gone), then "
    "auto-reconnect with a new connection; others auto-reconnect if enabled"
)
_NO_RECOVERY = "1008: clients skip recovery and auto-reconnect with a new connection if enabled"

CLOSE_RULES: Mapping[CloseSituation, CloseRule] = MappingProxyType(
    {
        r.situation: r
        for r in (
            CloseRule(
                CloseSituation.CLIENT_CLOSED,
                CloseCode.NORMAL,
                CloseReason.NORMAL,
                "The client closed the connection.",
                send_disconnected=False,
                session_kept=False,
                clients="the client initiated it; no recovery",
                when="a close frame arrives from the client; we echo its code (1000 if none)",
                why="RFC 6455 close handshake; a deliberate client close ends the session",
            ),
            CloseRule(
                CloseSituation.SERVER_SHUTDOWN,
                CloseCode.GOING_AWAY,
                CloseReason.SERVICE_RELOAD,
                "The service is shutting down.",
                send_disconnected=True,
                session_kept=False,
                clients=_RECOVER_THEN_RECONNECT,
                when="graceful shutdown (SIGINT/SIGTERM, leaving the embedded context)",
                why="1001 is RFC 6455's 'server going down'; not 1008 because a multi-node "
                "deployment may recover the session elsewhere later",
            ),
            CloseRule(
                CloseSituation.CLOSED_BY_APP_SERVER,
                CloseCode.SESSION_GONE,
                CloseReason.CLOSED_BY_APP_SERVER,
                "The connection was closed by the app server.",
                send_disconnected=True,
                session_kept=False,
                clients=_NO_RECOVERY,
                when="REST closeConnection / group/user/all close; message = the REST 'reason' "
                "when given",
                why="the app server discarded the session; 1008 says exactly that and saves every "
                "reliable client a futile recovery handshake (the emulator sends 1000 and then "
                "refuses recovery with 1008: same end state, one more round trip)",
            ),
            CloseRule(
                CloseSituation.SLOW_CLIENT,
                CloseCode.SESSION_GONE,
                CloseReason.SLOW_CLIENT,
                "The outbound message queue is full.",
                send_disconnected=True,
                session_kept=False,
                clients=_NO_RECOVERY,
                when="a fan-out found the connection's outbox over its count or byte bound "
                "(default slow-consumer policy)",
                why="messages were dropped for this connection, so a recovery would have a gap: "
                "the session is unrecoverable; 1008 with this text matches the Microsoft "
                "emulator. 1013 'try again later' was rejected: reliable clients would recover "
                "into a gap",
            ),
            CloseRule(
                CloseSituation.RELIABLE_BUFFER_FULL,
                CloseCode.SESSION_GONE,
                CloseReason.SLOW_CLIENT,
                "The reliable message buffer is full.",
                send_disconnected=True,
                session_kept=False,
                clients=_NO_RECOVERY,
                when="more than 1000 unacked messages or 16 MB for a reliable connection",
                why="[SPEC] client-spec.md §3.2: 'the connection is unrecoverable'",
            ),
            CloseRule(
                CloseSituation.PING_TIMEOUT,
                CloseCode.GOING_AWAY,
                CloseReason.PING_TIMEOUT,
                "The client did not answer keep-alive pings.",
                send_disconnected=True,
                session_kept=True,
                clients="reliable clients recover (the session is kept); others auto-reconnect",
                when="no pong/any frame within the keep-alive timeout; the close frame is best "
                "effort, then the transport is aborted",
                why="the transport is dead, not the session: any code but 1008 lets reliable "
                "clients recover; 1001 is the closest RFC meaning (1011 would blame the server)",
            ),
            CloseRule(
                CloseSituation.RECOVERY_FAILED,
                CloseCode.SESSION_GONE,
                CloseReason.SESSION_NOT_RECOVERABLE,
                "The connection cannot be recovered.",
                send_disconnected=False,
                session_kept=False,
                clients="clients abandon recovery and open a brand-new connection",
                when="a recovery request (awps_connection_id + awps_reconnection_token) for an "
                "unknown/expired session or with a bad token: accept the upgrade, then close",
                why="the only documented use of 1008 [SPEC] (client-spec.md §1.4); an HTTP error "
                "instead makes clients retry for 30 s [OBS]",
            ),
            CloseRule(
                CloseSituation.MALFORMED_FRAME,
                CloseCode.INVALID_PAYLOAD,
                CloseReason.INVALID_PAYLOAD,
                "The client message is not a valid JSON protocol message.",
                send_disconnected=True,
                session_kept=False,
                clients=_RECOVER_THEN_RECONNECT,
                when="codec_json.MalformedFrame: not UTF-8/JSON, not an object, no string type",
                why="the docs say the service 'declines the client'; 1007 (RFC: data "
                "inconsistent with the message type) and this text are the Microsoft "
                "emulator's. 1008 was considered (it would skip one futile recovery) but the "
                "specific code tells the author of a hand-written client what went wrong; "
                "Microsoft's SDKs never send such frames",
            ),
            CloseRule(
                CloseSituation.INVALID_MESSAGE,
                CloseCode.INVALID_PAYLOAD,
                CloseReason.INVALID_PAYLOAD,
                "The client message is not a valid JSON protocol message.",
                send_disconnected=True,
                session_kept=False,
                clients=_RECOVER_THEN_RECONNECT,
                when="codec_json.InvalidMessage WITHOUT an ackId, invocationId or streamId to "
                "answer (with one: ack BadRequest, invokeResponse BadRequest or streamClosed "
                "BadRequest, connection kept); the disconnected message carries the codec's "
                "explanation",
                why="concept-ack.md: without an ackId 'connection will be closed with "
                "disconnected message if any errors happen'; the emulator closes 1007 too",
            ),
            CloseRule(
                CloseSituation.WRONG_FRAME_TYPE,
                CloseCode.UNSUPPORTED_DATA,
                CloseReason.UNSUPPORTED_FRAME,
                "The JSON subprotocol requires text messages.",
                send_disconnected=True,
                session_kept=False,
                clients=_RECOVER_THEN_RECONNECT,
                when="a binary frame on a JSON subprotocol (protobuf: a text frame; message "
                "'The protobuf subprotocol requires binary messages.')",
                why="RFC 6455 1003 'cannot accept this type of data'; the emulator's choice",
            ),
            CloseRule(
                CloseSituation.MESSAGE_TOO_BIG,
                CloseCode.MESSAGE_TOO_BIG,
                CloseReason.MESSAGE_TOO_BIG,
                "The client message is too large.",
                send_disconnected=True,
                session_kept=False,
                clients=_RECOVER_THEN_RECONNECT,
                when="an inbound message over server.max_message_bytes (default 1 MiB)",
                why="RFC 6455 1009; the design brief's contract",
            ),
            CloseRule(
                CloseSituation.WEBSOCKET_PROTOCOL_ERROR,
                CloseCode.PROTOCOL_ERROR,
                CloseReason.PROTOCOL_ERROR,
                "The client frame is invalid.",
                send_disconnected=False,
                session_kept=False,
                clients=_RECOVER_THEN_RECONNECT,
                when="wsproto reports a framing violation (unmasked frame, bad opcode ...)",
                why="RFC 6455 1002; after a framing error no further data frame is safe to send",
            ),
            CloseRule(
                CloseSituation.INVALID_UTF8,
                CloseCode.INVALID_PAYLOAD,
                CloseReason.INVALID_PAYLOAD,
                "The client frame is not valid UTF-8.",
                send_disconnected=False,
                session_kept=False,
                clients=_RECOVER_THEN_RECONNECT,
                when="a text frame that is not UTF-8 (wsproto closes by itself)",
                why="RFC 6455 §8.1 mandates 1007",
            ),
            CloseRule(
                CloseSituation.NO_EVENT_HANDLER,
                CloseCode.NORMAL,
                CloseReason.NORMAL,
                "No event handler is interested in the message.",
                send_disconnected=False,
                session_kept=False,
                clients="simple clients only (no recovery)",
                when="a simple (sendEvent-mode) client sent a frame and no handler/listener "
                "takes the 'message' event",
                why="observed on Azure: 1000 with an empty reason (Azure/azure-webpubsub #432); "
                "we add a reason text",
            ),
            CloseRule(
                CloseSituation.EVENT_HANDLER_FAILED,
                CloseCode.INTERNAL_ERROR,
                CloseReason.EVENT_HANDLER_FAILED,
                "The event handler failed to process the message.",
                send_disconnected=False,
                session_kept=False,
                clients="simple clients only (no recovery)",
                when="a simple client's 'message' event got a non-2xx or no answer from upstream",
                why="[DOC] 'a non-2xx response drops the connection'; code undocumented, 1011 as "
                "the emulator",
            ),
            CloseRule(
                CloseSituation.SIMPLE_CLIENT_FORBIDDEN,
                CloseCode.POLICY_VIOLATION,
                CloseReason.FORBIDDEN,
                "The connection does not have permission to send to the group.",
                send_disconnected=False,
                session_kept=False,
                clients="simple clients only (no recovery)",
                when="a simple client in webpubsub_mode=sendToGroup without "
                "webpubsub.sendToGroup[.<group>] sent a frame",
                why="a simple client has no ack channel; 1008 'policy violation' is RFC 6455's "
                "code for a message that violates the server's policy",
            ),
            CloseRule(
                CloseSituation.INTERNAL_ERROR,
                CloseCode.INTERNAL_ERROR,
                CloseReason.INTERNAL_ERROR,
                "The service hit an internal error.",
                send_disconnected=True,
                session_kept=False,
                clients=_RECOVER_THEN_RECONNECT,
                when="an unexpected exception in the connection's tasks (a bug)",
                why="RFC 6455 1011",
            ),
        )
    }
)

#: RFC 6455 limits a close frame's reason to 123 bytes of UTF-8.
MAX_CLOSE_REASON_BYTES = 123


def close_frame_reason(text: str) -> str:
    """``text`` cut to at most 123 UTF-8 bytes on a character boundary (lone surrogates
    replaced), as a close frame requires."""
    data = text.encode("utf-8", "replace")
    if len(data) <= MAX_CLOSE_REASON_BYTES:
        return data.decode("utf-8")
    return data[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore")


def rule_for(situation: CloseSituation | str) -> CloseRule:
    """The close rule of a situation (accepts the enum or its string value)."""
    return CLOSE_RULES[CloseSituation(situation)]


# =========================================================================== inbound policy


@attrs.frozen(slots=True)
class InboundOutcome:
    """What the server does with one kind of problematic client message.

    Attributes:
        key: the outcome.
        with_ack_id: the answer when the message carried a readable ackId.
        without_ack_id: the answer otherwise.
        ack_error: the ack error name used (None = no ack error).
        close: the close situation used (None = the connection stays open).
    """

    key: str
    with_ack_id: str
    without_ack_id: str
    ack_error: AckErrorName | None
    close: CloseSituation | None


INBOUND_POLICY: Mapping[str, InboundOutcome] = MappingProxyType(
    {
        o.key: o
        for o in (
            InboundOutcome(
                "malformed_frame",
                "(no ackId can be read)",
                "system/disconnected, then close 1007",
                None,
                CloseSituation.MALFORMED_FRAME,
            ),
            InboundOutcome(
                "invalid_message",
                "ack BadRequest with the codec's message; connection kept (an invalid invoke "
                "with an invocationId: invokeResponse BadRequest; an invalid stream message with a "
                "streamId: streamClosed BadRequest, specs.streams)",
                "system/disconnected with the codec's message, then close 1007",
                AckErrorName.BAD_REQUEST,
                CloseSituation.INVALID_MESSAGE,
            ),
            InboundOutcome(
                "unsupported",
                "ack BadRequest (unsupported_message()); connection kept",
                "an invoke with a stream: invokeResponse error BadRequest; an event with a stream "
                "and a streamId: streamClosed error BadRequest; anything else ignored",
                AckErrorName.BAD_REQUEST,
                None,
            ),
            InboundOutcome(
                "forbidden",
                "ack Forbidden; connection kept",
                "ignored (logged and counted)",
                AckErrorName.FORBIDDEN,
                None,
            ),
            InboundOutcome(
                "duplicate_ack_id",
                "ack Duplicate with duplicate_ack_message(); the message is not processed again",
                "(not applicable)",
                AckErrorName.DUPLICATE,
                None,
            ),
        )
    }
)

# =========================================================================== decisions

DECISIONS: tuple[Decision, ...] = (
    Decision(
        "close.malformed",
        "Close code for a frame that is not a JSON protocol message (1003, 1007 or 1008?).",
        "1007 with the emulator's text, after a system/disconnected message; the session is "
        "discarded, so a reliable client's recovery attempt is refused with 1008.",
        "See CLOSE_RULES[MALFORMED_FRAME].why: RFC meaning and emulator parity beat saving "
        "one recovery round trip on a path only hand-written clients hit. 1003 is kept for "
        "the wrong frame type, as RFC 6455 defines it.",
    ),
    Decision(
        "close.slow-client",
        "Close code for the slow-consumer policy (1013 or 1008?).",
        "1008, reason SlowClient, message 'The outbound message queue is full.'",
        "The connection missed messages, so its session cannot be recovered without a gap; "
        "1008 is the code clients read as 'do not recover'. Matches the emulator.",
    ),
    Decision(
        "close.rest",
        "Close code for REST-initiated closes (ClosedByAppServer).",
        "system/disconnected with the REST reason, then 1008.",
        "Azure's code is undocumented (only 1008 has a documented meaning); the emulator uses "
        "1000 and refuses the follow-up recovery with 1008. 1008 reaches the same state "
        "without the futile recovery.",
    ),
    Decision(
        "close.ping-timeout",
        "Close code for PingTimeout.",
        "1001 best effort, then abort; the reliable session is kept for recovery.",
        "Only the transport is known dead; 1008 would forbid a legitimate recovery.",
    ),
    Decision(
        "close.shutdown",
        "Close code on graceful shutdown (ServiceReload).",
        "1001 after system/disconnected.",
        "RFC 6455 'going away'; unverified for Azure (emulator: not found).",
    ),
    Decision(
        "close.reason-text",
        "What goes in the close frame's reason.",
        "The rule's human message (or the REST reason), truncated to 123 UTF-8 bytes; the "
        "CloseReason category is for logs and metrics only.",
        "Azure documents the reasons as metrics/live-trace values, not frame text.",
    ),
    Decision(
        "ack.invalid-without-ack",
        "An InvalidMessage without ackId: ignore or close?",
        "Close 1007 with a system/disconnected message explaining the problem.",
        "concept-ack.md says errors without ackId close the connection with a disconnected "
        "message; the emulator closes 1007 for invalid messages.",
    ),
    Decision(
        "ack.forbidden-without-ack",
        "A forbidden operation without ackId: ignore or close?",
        "Ignore (log and count); the connection stays open.",
        "The emulator only logs; closing a fire-and-forget publisher over a permission error "
        "would surprise, and the docs' wording is about errors in general.",
    ),
    Decision(
        "ack.unsupported",
        "What answers an Unsupported message?",
        "ack BadRequest when it has an ackId; invokeResponse{success:false, error BadRequest} "
        "for an unsupported invoke (one with a stream); streamClosed{error BadRequest} for an "
        "unsupported stream (an event with a stream); otherwise ignore. Never close.",
        "Forward compatibility: a newer client keeps its connection, and its pending "
        "operation fails fast instead of waiting for a timeout.",
    ),
    Decision(
        "ack.bad-request",
        "Which ack error name for invalid/unsupported messages?",
        "BadRequest (ours; the emulator's enum has it).",
        "Documented names (Forbidden, InternalServerError, Duplicate) mean something else; "
        "clients tolerate new names.",
    ),
    Decision(
        "ack.event-no-handler",
        "An `event` with ackId that no handler takes (undocumented).",
        "ack NotFound; the connection stays open.",
        "The client asked for confirmation and nothing processed the event; NotFound is in "
        "the 2021 schema and clients treat unknown failures as failures. Simple clients in "
        "the same situation are closed 1000, as observed on Azure.",
    ),
    Decision(
        "ack.duplicate-cache",
        "How many processed ackIds to remember, and which?",
        "Only successful ones, the last 1000 per logical connection (FIFO), kept across "
        "reliable recovery.",
        "The emulator's AckCache; the service's size is undocumented.",
    ),
)
