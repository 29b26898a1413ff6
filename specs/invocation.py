"""Client invocations (``invoke`` / ``invokeResponse`` / ``cancelInvocation``) as data: the
messages, the per-invocation state table, the error names, the limits and the decisions.

An invocation is a user event the client waits on for an answer: the service maps
``invoke{invocationId, event, dataType, data, metadata}`` to the blocking upstream user event
``azure.webpubsub.user.<event>`` of the hub's handler (webhook or in-process) and answers with
exactly one ``invokeResponse`` carrying the same ``invocationId``, unless the client cancelled
it first or the connection ended.

Sources: the JavaScript client ``@azure/web-pubsub-client`` 1.0.4+/1.1.0 (its JSON writer and
parser, ``invokeEvent``, ``InvocationManager``: the shapes, the client-generated ids, cancel on
abort) [SDK]; the canonical protobuf schema (``InvokeEventMessage`` = 10,
``CancelInvocationMessage`` = 11, ``InvokeResponseMessage`` = 5) [SPEC]; concept-ack.md's
``InvocationFailed`` error name [DOC]. Nothing public documents the service side (how an
invoke reaches upstream, which error names it answers), so those are ``DECISIONS``.

Rules this module keeps:
- ``TRANSITIONS`` is the whole behaviour of one invocation; ``fabric.webpubsub.connection``
  performs the effects of the row it is in, in order. ``render_markdown`` renders the table.
- Every accepted invoke ends in exactly one of: one ``invokeResponse`` (success or error), a
  client cancel (no answer), or the end of its transport (no answer: the SDKs fail pending
  invocations on any close).
- Pure data and pure functions; imports nothing of ours outside ``specs``.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Mapping
from types import MappingProxyType

import attrs

from specs._decisions import Decision

# =========================================================================== limits

#: Most invocations one connection may have waiting for their handler at once.
MAX_INVOCATIONS_PER_CONNECTION = 16
#: invocationId (and streamId, ``specs.streams``): 1..1024 code points, no control character.
MAX_ID_CHARS = 1024
#: The only ``target`` an invoke may name (absent means this one).
TARGET_EVENT = "event"


def identifier_problem(what: str, value: str) -> str | None:
    """Why ``value`` is not a valid ``invocationId``/``streamId`` (named ``what``), or None.

    The same rule as event names (``specs.names``): 1..MAX_ID_CHARS code points, no control
    character, valid Unicode."""
    n = len(value)
    if n == 0:
        return f"'{what}' must not be empty"
    if n > MAX_ID_CHARS:
        return f"'{what}' must be at most {MAX_ID_CHARS} characters"
    if value.isascii():
        if not value.isprintable():
            return f"'{what}' must not contain control characters"
        return None
    if any(unicodedata.category(c) == "Cc" for c in value):
        return f"'{what}' must not contain control characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return f"'{what}' must be valid Unicode"
    return None


# =========================================================================== error names


class InvokeErrorName(str, enum.Enum):
    """``error.name`` of a failed ``invokeResponse`` (clients must tolerate new names; an
    in-process handler's ``UserEventError`` name is passed through as given)."""

    BAD_REQUEST = "BadRequest"
    NOT_FOUND = "NotFound"
    TIMEOUT = "Timeout"
    INVOCATION_FAILED = "InvocationFailed"
    INTERNAL_SERVER_ERROR = "InternalServerError"
    TOO_MANY_INVOCATIONS = "TooManyInvocations"


ERROR_WHEN: Mapping[InvokeErrorName, str] = MappingProxyType({
    InvokeErrorName.BAD_REQUEST: "the invoke is invalid (no/invalid invocationId or event, a target other than "
    "'event', bad data, bad metadata) or asks for something unsupported (a stream on invoke); also an upstream "
    "request that cannot be built from the client's input (a header value with control characters)",
    InvokeErrorName.NOT_FOUND: "no event handler takes the event",
    InvokeErrorName.TIMEOUT: "the handler did not answer within server.upstream_timeout",
    InvokeErrorName.INVOCATION_FAILED: "the handler answered and said no: a webhook answered 4xx/5xx (the "
    "message quotes its text), an in-process handler raised something other than UserEventError",
    InvokeErrorName.INTERNAL_SERVER_ERROR: "no usable answer: the handler was unreachable, failed validation, "
    "answered a body that is too big or of the wrong type, or the server is shutting down",
    InvokeErrorName.TOO_MANY_INVOCATIONS: f"the connection already has {MAX_INVOCATIONS_PER_CONNECTION} "
    "invocations waiting (ours)",
})

# =========================================================================== the table


class InvocationState(enum.Enum):
    ABSENT = "absent"  # no invocation with this id is in flight on the connection
    RUNNING = "running"  # the handler was called and has not answered


class InvocationEvent(enum.Enum):
    INVOKE = "invoke"
    INVOKE_INVALID = "invoke_invalid"
    INVOKE_NO_HANDLER = "invoke_no_handler"
    INVOKE_TOO_MANY = "invoke_too_many"
    HANDLER_ANSWERED = "handler_answered"
    HANDLER_FAILED = "handler_failed"
    CANCEL = "cancel"
    TRANSPORT_ENDED = "transport_ended"


class InvocationEffect(enum.Enum):
    CALL_HANDLER = "call the handler's user event (a task of the hub, not the reader)"
    SEND_RESPONSE = "invokeResponse success with the reply's dataType/data and metadata (none when no reply)"
    SEND_ERROR = "invokeResponse success:false with an error {name, message}"
    STOP_WAITING = "cancel the waiting task (an HTTP request in flight is dropped) and free its slot"
    IGNORE = "nothing is sent; counted"


@attrs.frozen(slots=True)
class InvocationTransition:
    state: InvocationState
    event: InvocationEvent
    effects: tuple[InvocationEffect, ...]
    target: InvocationState
    note: str = ""


_A, _R = InvocationState.ABSENT, InvocationState.RUNNING
_E = InvocationEffect
_V = InvocationEvent

TRANSITIONS: tuple[InvocationTransition, ...] = (
    InvocationTransition(_A, _V.INVOKE, (_E.CALL_HANDLER,), _R),
    InvocationTransition(_A, _V.INVOKE_INVALID, (_E.SEND_ERROR,), _A, "BadRequest; nothing is called"),
    InvocationTransition(_A, _V.INVOKE_NO_HANDLER, (_E.SEND_ERROR,), _A, "NotFound"),
    InvocationTransition(_A, _V.INVOKE_TOO_MANY, (_E.SEND_ERROR,), _A, "TooManyInvocations"),
    InvocationTransition(_A, _V.CANCEL, (_E.IGNORE,), _A,
                         "unknown, finished or already cancelled id (decision invoke.cancel-unknown)"),
    InvocationTransition(_R, _V.INVOKE, (_E.IGNORE,), _R,
                         "the same id again while running: not run twice (decision invoke.duplicate-id)"),
    InvocationTransition(_R, _V.HANDLER_ANSWERED, (_E.SEND_RESPONSE,), _A),
    InvocationTransition(_R, _V.HANDLER_FAILED, (_E.SEND_ERROR,), _A, "Timeout, InvocationFailed, ..."),
    InvocationTransition(_R, _V.CANCEL, (_E.STOP_WAITING,), _A, "no invokeResponse (decision invoke.cancel)"),
    InvocationTransition(_R, _V.TRANSPORT_ENDED, (_E.STOP_WAITING,), _A,
                         "close, transport loss (also of a reliable session that may recover)"),
)

TABLE: Mapping[tuple[InvocationState, InvocationEvent], InvocationTransition] = MappingProxyType(
    {(t.state, t.event): t for t in TRANSITIONS}
)


def render_markdown() -> str:
    lines = ["| state | event | effects | next | note |", "|---|---|---|---|---|"]
    for t in TRANSITIONS:
        effects = "; ".join(e.value for e in t.effects)
        lines.append(f"| {t.state.value} | {t.event.value} | {effects} | {t.target.value} | {t.note} |")
    return "\n".join(lines) + "\n"


# =========================================================================== decisions

DECISIONS: tuple[Decision, ...] = (
    Decision(
        "invoke.upstream",
        "How does an invoke reach the app server?",
        "As the blocking user event azure.webpubsub.user.<event>, exactly as an `event` (same "
        "CloudEvents headers, body and Content-Type by dataType, x-webpubsub-metadata-* headers; no "
        "extra invocation header). In-process handlers get UserEventRequest(invocation_id=...). A 2xx "
        "answer is invokeResponse success: its body as data (dataType from Content-Type), none for an "
        "empty body; its X-WebPubSub-Metadata-* headers as metadata; ce-connectionState applies.",
        "newer-features evidence: a handler exercising the live service's invoke (processDocument, "
        "metadataOnly, errorTest) answers invokes as ordinary user events; the Web PubSub chat sample "
        "is built on invokeEvent the same way. An invented header could only be read by handlers "
        "written for this server.",
    ),
    Decision(
        "invoke.error-names",
        "Which error names does invokeResponse carry?",
        "ERROR_WHEN: BadRequest, NotFound, Timeout, InvocationFailed (the handler said no), "
        "InternalServerError (no usable answer), TooManyInvocations (ours); an in-process "
        "UserEventError's own name is passed through.",
        "[DOC] concept-ack.md names InvocationFailed; the rest mirror the ack names of `event` "
        "failures (specs.upstream) so one failure reads the same on both paths.",
    ),
    Decision(
        "invoke.cancel",
        "What does cancelInvocation do, and is it answered?",
        "It stops waiting for the handler at once (an HTTP request in flight is abandoned), frees the "
        "slot, and sends nothing: the client sends it only after it has given up (abort, or a failure "
        "without an answer) and has already dropped the invocation.",
        "[SDK] the JS client discards the invocation before sending cancelInvocation and ignores "
        "invokeResponse for unknown ids; an answer would be noise.",
    ),
    Decision(
        "invoke.cancel-unknown",
        "cancelInvocation for an id that is unknown, finished or already cancelled.",
        "Ignored (counted); the connection stays open.",
        "Cancels race with answers by design (the client cancels after a timeout the answer may "
        "have just beaten); there is no channel to report it on and nothing to undo.",
    ),
    Decision(
        "invoke.duplicate-id",
        "An invoke whose invocationId is already running on the connection.",
        "Not run again and not answered separately: the running invocation's invokeResponse is the "
        "answer for both. Finished ids are not remembered, so a later invoke with the same id runs.",
        "Idempotent like ackIds for an in-flight retry; remembering finished ids would cost memory "
        "per invocation for a case no SDK produces (the JS client refuses to register an id twice).",
    ),
    Decision(
        "invoke.limit",
        "How many invocations may one connection have waiting?",
        f"{MAX_INVOCATIONS_PER_CONNECTION}; one more is answered at once with TooManyInvocations.",
        "Bounded everything: invocations run concurrently with the connection's reader (so a cancel "
        "can arrive), which without a bound would let one client queue unbounded upstream work.",
    ),
    Decision(
        "invoke.transport-lost",
        "In-flight invocations when the transport ends (close, or a reliable session detaching).",
        "Stopped, without an answer.",
        "[SDK] the JS client rejects every pending invocation when its socket closes, recovery or "
        "not, so an answer after a recovery would only be discarded.",
    ),
    Decision(
        "invoke.no-payload",
        "An invoke without dataType/data (the JS writer omits both when there is no payload).",
        "The handler gets an empty text payload (text/plain, empty body).",
        "express ignores user events without a Content-Type, so 'no body' must still carry one; "
        "text/plain with an empty body is what a metadata-only message is (metadata.only).",
    ),
    Decision(
        "invoke.target",
        "Values of `target`.",
        "Absent or 'event'; anything else is BadRequest.",
        "[SDK] the JS client always writes 'event'; the protobuf schema has no target at all.",
    ),
    Decision(
        "invoke.service-initiated",
        "invokeResponse or other invocation messages sent by a client.",
        "Unsupported: ignored (no ackId to answer).",
        "[SDK] the JS README: 'Service-initiated invocations are not yet supported'.",
    ),
)
