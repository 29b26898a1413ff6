"""Client group streams (client spec §3.6) as data: the per-stream state table, the sequence
rules, the acknowledgements, the terminal errors, the limits and the decisions.

A stream is one logical ordered message a publisher sends to a group as many fragments:
``sendToGroup{group, stream:{streamId, idleTimeoutMs?}}`` starts it (no data), ``streamData``
carries fragments numbered 1, 2, 3... (``streamSequenceId``), ``streamData{streamId}`` alone is a
keepalive, ``streamEnd`` ends it. The service answers the publisher with ``streamAck``
(``expectedSequenceId``: the next fragment it wants), ``streamNack`` (a retriable error) and
``streamClosed`` (terminal). Subscribers receive each fragment as a normal group message with
``stream:{streamId, streamSequenceId}``, and a terminal message with ``endOfStream: true``.

Sources: Azure/azure-webpubsub ``protocols/client/client-spec.md`` §3.6 [SPEC] (the rules quoted
in the table notes), the canonical protobuf schema (``StreamStartInfo``, ``StreamDataMessage``,
``StreamEndMessage``, ``StreamAckMessage``, ``StreamNackMessage``, ``StreamClosedMessage``,
``StreamInfo``) [SPEC], the JavaScript client 1.1.0 (``openGroupStream``, ``onGroupStream``) [SDK].

Rules this module keeps:
- ``TRANSITIONS`` is the whole behaviour of one stream id on one connection; the server
  (``fabric.webpubsub.streams``) performs the effects of its row in order, and the Hypothesis
  test in ``tests/webpubsub/test_streams_model.py`` checks the server against a model of this table.
- Sequence ids are exact: a fragment is published only when its id is the next expected one;
  lower ids are duplicates (re-acked, never republished), higher ids and 0 are nacked
  ``InvalidSequenceId`` with the expected id; the stream stays open through both.
- Every stream ends exactly once: one terminal message to the group (subscribers must learn
  that it ended, whoever ended it) and, while the publisher can still hear it, one
  ``streamClosed``.
- Pure data; imports nothing of ours outside ``specs``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

import attrs

from specs._decisions import Decision
from specs.invocation import identifier_problem  # noqa: F401 (the streamId rule, re-exported)

# =========================================================================== limits

#: ``stream.idleTimeoutMs`` when the start omits it (client spec §3.6.1.4).
DEFAULT_IDLE_TIMEOUT_MS = 300_000
#: The largest idle timeout a start may ask for (the field is a uint32).
MAX_IDLE_TIMEOUT_MS = 2**32 - 1
#: Most streams one connection may have open at once.
MAX_STREAMS_PER_CONNECTION = 64


class NackName(str, enum.Enum):
    """``streamNack.name`` (client spec §3.6.4.5: exactly these two)."""

    INVALID_SEQUENCE_ID = "InvalidSequenceId"
    TRANSIENT_ERROR = "TransientError"


class ClosedName(str, enum.Enum):
    """``streamClosed.error.name`` (client spec §3.6.4.7: exactly these five)."""

    STREAM_NOT_FOUND = "StreamNotFound"
    FORBIDDEN = "Forbidden"
    BAD_REQUEST = "BadRequest"
    INTERNAL_SERVER_ERROR = "InternalServerError"
    IDLE_TIMEOUT = "IdleTimeout"


class TerminalName(str, enum.Enum):
    """``stream.error.name`` on a subscriber's terminal message (client spec §3.6.5.4-5:
    ``UserError`` for a publisher's error, service errors "such as" the others)."""

    USER_ERROR = "UserError"
    IDLE_TIMEOUT = "IdleTimeout"
    INTERNAL_SERVER_ERROR = "InternalServerError"
    FORBIDDEN = "Forbidden"
    CANCELLED = "Cancelled"
    BAD_REQUEST = "BadRequest"


# =========================================================================== the table


class StreamState(enum.Enum):
    ABSENT = "absent"  # no open stream with this id on the connection
    OPEN = "open"  # accepted; expects fragment `expected`


class StreamEvent(enum.Enum):
    START = "start"  # a valid start, the publisher may send to the group, room for one more stream
    START_FORBIDDEN = "start_forbidden"  # no sendToGroup permission for the group
    START_INVALID = "start_invalid"  # bad group/streamId/idleTimeoutMs, or too many streams
    DATA_NEXT = "data_next"  # streamSequenceId == expected, sender still permitted
    DATA_NEXT_FORBIDDEN = "data_next_forbidden"  # streamSequenceId == expected, permission revoked
    DATA_DUPLICATE = "data_duplicate"  # 1 <= streamSequenceId < expected
    DATA_GAP = "data_gap"  # streamSequenceId > expected, or 0
    DATA_INVALID = "data_invalid"  # some but not all of streamSequenceId/dataType/data, bad data
    KEEPALIVE = "keepalive"  # streamData with only streamId
    END = "end"  # streamEnd (with or without a client error)
    IDLE_TIMEOUT = "idle_timeout"  # no accepted fragment or keepalive for idleTimeoutMs
    TRANSPORT_LOST = "transport_lost"  # a reliable session detached (it may recover)
    CONNECTION_ENDED = "connection_ended"  # the logical connection is gone


class StreamEffect(enum.Enum):
    ACK = "streamAck{expectedSequenceId: expected} to the publisher"
    NACK = "streamNack{InvalidSequenceId, expectedSequenceId: expected} to the publisher"
    CLOSED = "streamClosed to the publisher (error name in the note; none for a normal end)"
    CLOSED_NOT_FOUND = "streamClosed{StreamNotFound} to the publisher"
    PUBLISH = "publish the fragment to the group with stream{streamId, streamSequenceId}; expected += 1"
    PUBLISH_TERMINAL = ("publish the terminal message: empty text, stream{streamId, streamSequenceId: expected, "
                        "endOfStream: true, error?}")
    ARM_TIMER = "(re)start the idle timer: now + idleTimeoutMs"
    DISARM_TIMER = "stop the idle timer and forget the stream"


@attrs.frozen(slots=True)
class StreamTransition:
    state: StreamState
    event: StreamEvent
    effects: tuple[StreamEffect, ...]
    target: StreamState
    note: str = ""


_AB, _OP = StreamState.ABSENT, StreamState.OPEN
_F = StreamEffect
_S = StreamEvent

TRANSITIONS: tuple[StreamTransition, ...] = (
    StreamTransition(_AB, _S.START, (_F.ACK, _F.ARM_TIMER), _OP, "§3.6.1.6: streamAck{1}"),
    StreamTransition(_AB, _S.START_FORBIDDEN, (_F.CLOSED,), _AB, "Forbidden (§3.6.1.7)"),
    StreamTransition(_AB, _S.START_INVALID, (_F.CLOSED,), _AB, "BadRequest (§3.6.1.7)"),
    StreamTransition(_AB, _S.DATA_NEXT, (_F.CLOSED_NOT_FOUND,), _AB, "§3.6.2.2"),
    StreamTransition(_AB, _S.DATA_NEXT_FORBIDDEN, (_F.CLOSED_NOT_FOUND,), _AB, "§3.6.2.2"),
    StreamTransition(_AB, _S.DATA_DUPLICATE, (_F.CLOSED_NOT_FOUND,), _AB, "§3.6.2.2"),
    StreamTransition(_AB, _S.DATA_GAP, (_F.CLOSED_NOT_FOUND,), _AB, "§3.6.2.2"),
    StreamTransition(_AB, _S.DATA_INVALID, (_F.CLOSED_NOT_FOUND,), _AB, "§3.6.2.2"),
    StreamTransition(_AB, _S.KEEPALIVE, (_F.CLOSED_NOT_FOUND,), _AB, "§3.6.2.9"),
    StreamTransition(_AB, _S.END, (_F.CLOSED_NOT_FOUND,), _AB, "§3.6.3.5"),
    StreamTransition(_OP, _S.START, (_F.PUBLISH_TERMINAL, _F.CLOSED, _F.DISARM_TIMER), _AB,
                     "BadRequest: the id is already open (decision streams.duplicate-start)"),
    StreamTransition(_OP, _S.START_FORBIDDEN, (_F.PUBLISH_TERMINAL, _F.CLOSED, _F.DISARM_TIMER), _AB,
                     "BadRequest (decision streams.duplicate-start)"),
    StreamTransition(_OP, _S.START_INVALID, (_F.PUBLISH_TERMINAL, _F.CLOSED, _F.DISARM_TIMER), _AB,
                     "BadRequest (decision streams.duplicate-start)"),
    StreamTransition(_OP, _S.DATA_NEXT, (_F.PUBLISH, _F.ACK, _F.ARM_TIMER), _OP,
                     "§3.6.2.5; acks are coalesced per tick (decision streams.ack-every)"),
    StreamTransition(_OP, _S.DATA_NEXT_FORBIDDEN, (_F.PUBLISH_TERMINAL, _F.CLOSED, _F.DISARM_TIMER), _AB,
                     "Forbidden to both (decision streams.permission)"),
    StreamTransition(_OP, _S.DATA_DUPLICATE, (_F.ACK,), _OP, "§3.6.2.6: not republished; the timer is not reset"),
    StreamTransition(_OP, _S.DATA_GAP, (_F.NACK,), _OP, "§3.6.2.7; the timer is not reset"),
    StreamTransition(_OP, _S.DATA_INVALID, (_F.PUBLISH_TERMINAL, _F.CLOSED, _F.DISARM_TIMER), _AB,
                     "BadRequest to both (decision streams.invalid-data)"),
    StreamTransition(_OP, _S.KEEPALIVE, (_F.ARM_TIMER,), _OP, "§3.6.2.8-9: not delivered, not answered"),
    StreamTransition(_OP, _S.END, (_F.PUBLISH_TERMINAL, _F.CLOSED, _F.DISARM_TIMER), _AB,
                     "§3.6.3.3-4: terminal error UserError{message, userErrorCode} when the end carries "
                     "one; streamClosed without error"),
    StreamTransition(_OP, _S.IDLE_TIMEOUT, (_F.PUBLISH_TERMINAL, _F.CLOSED, _F.DISARM_TIMER), _AB,
                     "IdleTimeout to both (§3.6.1.4)"),
    StreamTransition(_OP, _S.TRANSPORT_LOST, (), _OP,
                     "kept with the session; the idle timer keeps running (§3.6.6.3: the client "
                     "resumes and replays unacked fragments, which arrive as duplicates)"),
    StreamTransition(_OP, _S.CONNECTION_ENDED, (_F.PUBLISH_TERMINAL, _F.DISARM_TIMER), _AB,
                     "Cancelled to the group; nobody to tell the publisher"),
)

TABLE: Mapping[tuple[StreamState, StreamEvent], StreamTransition] = MappingProxyType(
    {(t.state, t.event): t for t in TRANSITIONS}
)

#: The terminal error published, and the streamClosed error sent, per ending event.
ENDINGS: Mapping[StreamEvent, tuple[TerminalName | None, ClosedName | None]] = MappingProxyType({
    StreamEvent.START: (TerminalName.BAD_REQUEST, ClosedName.BAD_REQUEST),
    StreamEvent.START_FORBIDDEN: (TerminalName.BAD_REQUEST, ClosedName.BAD_REQUEST),
    StreamEvent.START_INVALID: (TerminalName.BAD_REQUEST, ClosedName.BAD_REQUEST),
    StreamEvent.DATA_NEXT_FORBIDDEN: (TerminalName.FORBIDDEN, ClosedName.FORBIDDEN),
    StreamEvent.DATA_INVALID: (TerminalName.BAD_REQUEST, ClosedName.BAD_REQUEST),
    StreamEvent.END: (None, None),  # UserError when the publisher's end carries an error
    StreamEvent.IDLE_TIMEOUT: (TerminalName.IDLE_TIMEOUT, ClosedName.IDLE_TIMEOUT),
    StreamEvent.CONNECTION_ENDED: (TerminalName.CANCELLED, None),
})


def render_markdown() -> str:
    lines = ["| state | event | effects | next | note |", "|---|---|---|---|---|"]
    for t in TRANSITIONS:
        effects = "; ".join(e.name for e in t.effects) or "-"
        lines.append(f"| {t.state.value} | {t.event.value} | {effects} | {t.target.value} | {t.note} |")
    return "\n".join(lines) + "\n"


# =========================================================================== decisions

DECISIONS: tuple[Decision, ...] = (
    Decision(
        "streams.ack-every",
        "How often is streamAck sent (the spec allows batching)?",
        "Every accepted fragment and every duplicate is acknowledged, coalesced per stream: the "
        "latest expected id goes out once the server has handled what it already read from the "
        "connection (one scheduler tick), so a burst of fragments costs one streamAck. A start's "
        "ack goes at once; any other answer on a stream (nack, streamClosed) first sends its "
        "pending ack. Keepalives are never answered.",
        "§3.6.4.3 lets the service batch, and acks are cumulative, so one ack per burst loses "
        "nothing; but a client that bounds its unacked buffer (§3.6.6.4) would stall on a batched "
        "tail if an ack ever waited for more data, so nothing waits: the tail is flushed the tick "
        "it is accepted. Measured: per-fragment acks cost the publisher's connection one frame, "
        "one outbox put and one writer wake-up per fragment.",
    ),
    Decision(
        "streams.duplicate-start",
        "A start for a streamId that is already open on the connection.",
        "The open stream ends: terminal BadRequest to the group, streamClosed{BadRequest} to the "
        "publisher; the new start is not accepted.",
        "§3.6.1.3 makes ids unique among active streams and §3.6.1.7 rejects a start that 'already "
        "exists'; the only way to reject is streamClosed with that id, which the client reads as "
        "the end of the open stream too, so the server ends it as well and both sides agree.",
    ),
    Decision(
        "streams.permission",
        "Permission to stream to a group, and its revocation mid-stream.",
        "webpubsub.sendToGroup[.<group>] (or a matching pattern role) at start: without it "
        "streamClosed{Forbidden}. Checked again for every fragment: once revoked, the stream ends "
        "with Forbidden to both the publisher and the group.",
        "A stream is a sendToGroup spread over time; revocation applies to the next request "
        "(decision rest.permissions), and a stream without a terminal message would leave "
        "subscribers waiting for their idle timeout.",
    ),
    Decision(
        "streams.invalid-data",
        "streamData with some but not all of streamSequenceId/dataType/data, or bad data.",
        "The stream ends with BadRequest (terminal to the group, streamClosed to the publisher). "
        "Without a streamId (or an unreadable one) it is an invalid message: close 1007.",
        "§3.6.2.4 forbids such messages; nothing in them can be published or nacked meaningfully. "
        "streamSequenceId 0 is not this case: it is nacked like a gap (it is not the next id).",
    ),
    Decision(
        "streams.timer",
        "What keeps a stream alive?",
        "Accepted fragments and keepalives restart the idle timer; duplicates, gaps and nacks do "
        "not. The timer keeps running while a reliable session is detached.",
        "§3.6.1.4: 'accepted stream activity, such as stream data or keepalive'; a publisher "
        "resending stale fragments is not making progress.",
    ),
    Decision(
        "streams.terminal",
        "The shape of the subscribers' terminal message.",
        "dataType text, data \"\" (protobuf: empty text_data), stream{streamId, streamSequenceId: "
        "the next expected id, endOfStream: true, error?}; noEcho as the start said; not delivered "
        "to simple WebSocket clients (nothing in a raw frame could say it ended).",
        "§3.6.3.3 and §3.6.5.3 ('MAY carry an empty payload'); the JS parser drops group messages "
        "without a dataType, and Python/.NET clients require data, so the payload is an empty text.",
    ),
    Decision(
        "streams.end-closed",
        "Is streamClosed after a streamEnd with a client error sent with an error?",
        "No: every accepted streamEnd is answered streamClosed without error.",
        "§3.6.3.4 names the error-free streamClosed for a stream closed 'without an error', and the "
        "allowed streamClosed names (§3.6.4.7) have no UserError; the publisher knows its own error.",
    ),
    Decision(
        "streams.start-extras",
        "ackId, metadata and ttlSeconds on a stream start; streams on `event`/`invoke`.",
        "An ackId is answered with an ack too (success after the streamAck, or the error of the "
        "refusal) and remembered like any ackId; start metadata goes with every fragment and the "
        "terminal; a TTL applies to every fragment. `event`/`invoke` with a stream are Unsupported "
        "(client-originated streams target groups only, §3.6).",
        "§3.6.1.2 says SHOULD NOT for the ackId, so it may come; answering it keeps 'every ackId "
        "gets one ack'. Metadata and TTL belong to the message the stream is.",
    ),
    Decision(
        "streams.connection-end",
        "Open streams when the connection ends.",
        "Each ends with a terminal Cancelled message to its group. A reliable session that only "
        "detached keeps its streams (they may be resumed).",
        "§3.6.5.5 lists Cancelled among service terminal errors; stream state is scoped to the "
        "connection (§3.6.6.3).",
    ),
)
