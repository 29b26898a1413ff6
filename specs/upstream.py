"""Upstream event handlers as data: the CloudEvents requests the server sends, and what every
way a handler can fail does to the client.

The server (``fabric.appserver.webhook``, ``fabric.core.events``, ``fabric.core.counters`` and
``fabric.webpubsub.connection``) imports these names and never spells a header, a
content type, a status or an error name itself, so this module is the whole contract.

Rules this module keeps:
- Requests are CloudEvents 1.0 in HTTP *binary* mode, exactly as Azure Web PubSub sends them
  (Microsoft Learn's reference-cloud-events.md; the CloudEvents model in Azure/azure-webpubsub
  ``protocols/server/cloud-events/main.tsp``; the express and ASP.NET Core handler SDKs): the
  headers in ``REQUEST_HEADERS`` order, ``ce-awpsversion: 1.0`` on every request (the express
  and ASP.NET Core SDKs ignore requests without it), ``ce-signature`` with one ``sha256=<hex>``
  entry per access key, ``WebHook-Request-Origin`` = the service host without scheme or port.
- Every handler failure has exactly one outcome per situation in ``FAILURES``: a refused
  handshake (HTTP status), an ack error (name), a close (``specs.errors`` situation), or a
  log line and a counter for the non-blocking events. Nothing a handler answers crashes a
  hub or leaves a connection waiting: every call is bounded by ``server.upstream_timeout``
  and every body by ``server.max_message_bytes``.
- Choices where Microsoft's sources are silent are in ``DECISIONS`` with their reasons.
- Sans-IO: never imports trio or httpx.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType

import attrs

from specs._decisions import Decision
from specs.errors import AckErrorName, CloseSituation

# =========================================================================== the requests

SPEC_VERSION = "1.0"
AWPS_VERSION = "1.0"
SYSTEM_TYPE_PREFIX = "azure.webpubsub.sys."
USER_TYPE_PREFIX = "azure.webpubsub.user."
#: Group presence events (``joined``/``left``): ``azure.webpubsub.gp.<event>`` [SDK]
#: (@azure/web-pubsub-express 1.1.0 ``cloudEventsDispatcher``: ``azure.webpubsub.gp.joined``,
#: ``azure.webpubsub.gp.left``, ``ce-eventName`` ``joined``/``left``).
GROUP_PRESENCE_TYPE_PREFIX = "azure.webpubsub.gp."
#: The presence events a handler may opt into (Azure's ARM model: an event handler's
#: ``groupPresenceEvents.eventNames``, valid values "joined", "left"; ``groupFilters``: group
#: patterns, none = every group) [DOC].
GROUP_PRESENCE_EVENTS: tuple[str, ...] = ("joined", "left")

#: The event name used in ``url_template``'s ``{event}`` for the abuse-protection OPTIONS.
VALIDATE_EVENT = "validate"
#: The user event a simple (no subprotocol) client's every frame becomes.
SIMPLE_CLIENT_EVENT = "message"

# Header names exactly as sent (HTTP is case-insensitive; the casing is Azure's docs').
H_ORIGIN = "WebHook-Request-Origin"
H_ALLOWED_ORIGIN = "WebHook-Allowed-Origin"
H_CONTENT_TYPE = "Content-Type"
H_SPECVERSION = "ce-specversion"
H_TYPE = "ce-type"
H_SOURCE = "ce-source"
H_ID = "ce-id"
H_TIME = "ce-time"
H_SIGNATURE = "ce-signature"
H_USER_ID = "ce-userId"
H_CONNECTION_ID = "ce-connectionId"
H_HUB = "ce-hub"
H_EVENT_NAME = "ce-eventName"
H_SUBPROTOCOL = "ce-subprotocol"
H_CONNECTION_STATE = "ce-connectionState"
H_AWPS_VERSION = "ce-awpsversion"

#: Every event POST carries these, in this order; the optional ones only when they apply:
#: ``ce-userId`` when the connection has a user, ``ce-subprotocol`` when a subprotocol was
#: negotiated (never on ``connect``), ``ce-connectionState`` when the connection has state.
#: (httpx adds Host, Accept, Accept-Encoding, Connection, User-Agent and Content-Length.)
REQUEST_HEADERS: tuple[str, ...] = (
    H_ORIGIN, H_CONTENT_TYPE, H_SPECVERSION, H_TYPE, H_SOURCE, H_ID, H_TIME, H_SIGNATURE,
    H_USER_ID, H_CONNECTION_ID, H_HUB, H_EVENT_NAME, H_SUBPROTOCOL, H_CONNECTION_STATE,
    H_AWPS_VERSION,
)
OPTIONAL_HEADERS = frozenset({H_USER_ID, H_SUBPROTOCOL, H_CONNECTION_STATE})

#: The validation request: ``OPTIONS url_for(hub, "validate")`` with exactly these.
VALIDATION_HEADERS: tuple[str, ...] = (H_ORIGIN, H_AWPS_VERSION)

#: Content types of the system events' JSON bodies (connect: the request; connected: ``{}``;
#: disconnected: ``{"reason": ...}``).
SYSTEM_CONTENT_TYPE = "application/json; charset=utf-8"

#: A user event's body and Content-Type by the client's dataType (Microsoft Learn's
#: reference-cloud-events.md [DOC]; simple clients: text frame = text, binary frame = binary).
USER_CONTENT_TYPES: Mapping[str, str] = MappingProxyType({
    "text": "text/plain",
    "json": "application/json",
    "binary": "application/octet-stream",
    "protobuf": "application/x-protobuf",
})

#: A 2xx user-event answer's media type (parameters ignored, case-insensitive) → the dataType
#: of the reply to the sender. A missing Content-Type means binary (RFC 9110 §8.3). Any other
#: media type with a non-empty body is ``Failure.BAD_CONTENT_TYPE``. An empty body is "no
#: reply" whatever the type (express's bare ``res.success()`` sends octet-stream + no body).
REPLY_DATA_TYPES: Mapping[str | None, str] = MappingProxyType({
    "text/plain": "text",
    "application/json": "json",
    "application/octet-stream": "binary",
    "application/x-protobuf": "protobuf",
    None: "binary",
})

#: The connect answer's JSON fields (anything else is ignored).
CONNECT_RESPONSE_FIELDS: tuple[str, ...] = ("userId", "groups", "roles", "subprotocol")

# ---- limits

#: Largest ``ce-connectionState`` value kept (Node's default cap on all request headers
#: together is 16 KiB, so a bigger state would make express answer 431 on every event).
MAX_CONNECTION_STATE_BYTES = 8 * 1024
#: At most this many groups / roles in one connect answer.
MAX_CONNECT_GROUPS = 1000
MAX_CONNECT_ROLES = 1000
MAX_USER_ID_CHARS = 1024
#: How much of a failed answer's body is quoted in logs, ack messages and rejections.
ERROR_DETAIL_CHARS = 200
#: After a failed validation, the next event that needs the handler retries it once this
#: many seconds have passed (so a handler app started after the fabric is picked up).
VALIDATION_RETRY_SECONDS = 1.0
#: connected/disconnected are retried this many times when the request never reached the
#: handler (connection refused/reset before sending), after these pauses.
NOTIFICATION_RETRY_DELAYS: tuple[float, ...] = (0.2, 1.0)


def ce_type(event: str, *, system: bool) -> str:
    if system and event in GROUP_PRESENCE_EVENTS:
        return GROUP_PRESENCE_TYPE_PREFIX + event
    return (SYSTEM_TYPE_PREFIX if system else USER_TYPE_PREFIX) + event


def presence_body(group: str) -> dict:
    """The JSON body of a ``joined``/``left`` event: ``{"group": <name>}`` (express 1.1 reads
    ``GroupJoinedRequest.group`` / ``GroupLeftRequest.group`` from it) [SDK]."""
    return {"group": group}


def ce_source(hub: str, connection_id: str) -> str:
    return f"/hubs/{hub}/client/{connection_id}"


def ce_time(epoch: float | None = None) -> str:
    """``yyyy-MM-ddTHH:mm:ssZ`` (UTC, whole seconds), as Azure sends it."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if epoch is None else epoch))


def signature(keys: Iterable[str], connection_id: str) -> str:
    """``sha256=<hex>,sha256=<hex>``: HMAC-SHA256 of the connection id under each access key
    (UTF-8 both), lower-case hex, in key order (primary first)."""
    msg = connection_id.encode("utf-8")
    return ",".join(
        "sha256=" + hmac.new(k.encode("utf-8"), msg, hashlib.sha256).hexdigest() for k in keys
    )


def verify_signature(header: str, keys: Iterable[str], connection_id: str) -> bool:
    """What an upstream checks: any entry equals HMAC under any of its keys (hex compared
    case-insensitively, as ASP.NET Core does). For tests and conformance runs."""
    got = {part.strip().lower() for part in header.split(",") if part.strip()}
    return any(f"sha256={hmac.new(k.encode(), connection_id.encode(), hashlib.sha256).hexdigest()}" in got
               for k in keys)


def origin_allowed(allowed_values: Sequence[str], origin_host: str, origin_netloc: str) -> bool:
    """Does a validation answer's ``WebHook-Allowed-Origin`` (one or several header lines,
    each maybe a comma list) admit us? ``*``, our host, or our ``host:port`` (express's
    ``allowedEndpoints`` answers ``new URL(endpoint).host``, which keeps the port); compared
    case-insensitively."""
    ours = {origin_host.lower(), origin_netloc.lower()}
    for line in allowed_values:
        for item in line.split(","):
            item = item.strip().lower()
            if item == "*" or item in ours:
                return True
    return False


def media_type(content_type: str | None) -> str | None:
    """``text/plain; charset=utf-8`` → ``text/plain``; None for a missing/empty header."""
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


# =========================================================================== failures


class Failure(str, enum.Enum):
    """Every way an upstream call can fail."""

    UNREACHABLE = "unreachable"  # connection refused/reset, DNS, TLS, a broken response
    TIMEOUT = "timeout"  # no complete answer within server.upstream_timeout
    VALIDATION_FAILED = "validation_failed"  # the OPTIONS abuse-protection check failed
    CLIENT_ERROR = "client_error"  # the handler answered 4xx
    SERVER_ERROR = "server_error"  # the handler answered 5xx
    REDIRECT = "redirect"  # 3xx: redirects are never followed
    UNEXPECTED_STATUS = "unexpected_status"  # 1xx leftovers, or anything else non-2xx
    BODY_TOO_LARGE = "body_too_large"  # answer body over server.max_message_bytes
    CONTENT_ENCODING = "content_encoding"  # a compressed answer (we ask for identity)
    BAD_CONTENT_TYPE = "bad_content_type"  # a media type the event cannot carry
    BAD_BODY = "bad_body"  # invalid JSON / UTF-8, or a connect answer of the wrong shape (a userId no header can carry)
    SUBPROTOCOL_NOT_OFFERED = "subprotocol_not_offered"  # connect chose one the client did not offer
    BAD_CONNECTION_STATE = "bad_connection_state"  # several ce-connectionState headers, too long, or not header text
    UNSENDABLE = "unsendable"  # a value (user id, event name) cannot go in an HTTP header
    HANDLER_ERROR = "handler_error"  # an in-process handler raised / answered a wrong type
    NOT_RUNNING = "not_running"  # the hub's upstream client is not running (shutdown)


@attrs.frozen(slots=True)
class FailureRule:
    """What one failure does, for each kind of event.

    Attributes:
        failure: the key.
        connect_status: the HTTP status refusing the handshake (0: the handler's own 4xx).
        ack_error: the ack error of a PubSub client's ``event`` that carried an ackId.
        close: without an ackId (PubSub clients) and for simple clients: this close
            situation (its code; PubSub clients get ``system/disconnected`` first).
        notification: what happens on ``connected``/``disconnected``/``joined``/``left``.
        when: the trigger.
        invoke_error: the ``invokeResponse`` error name of an ``invoke`` (``specs.invocation``).
    """

    failure: Failure
    connect_status: int
    ack_error: AckErrorName
    close: CloseSituation
    notification: str
    when: str
    invoke_error: AckErrorName = AckErrorName.INTERNAL_SERVER_ERROR


_LOGGED = "logged (rate-limited) and counted in the handler's statistics(); never retried"
_RETRIED = ("retried after 0.2 s and 1 s (the request never reached the handler), then logged "
            "and counted")

FAILURES: Mapping[Failure, FailureRule] = MappingProxyType({
    r.failure: r
    for r in (
        FailureRule(Failure.UNREACHABLE, 500, AckErrorName.INTERNAL_SERVER_ERROR,
                    CloseSituation.EVENT_HANDLER_FAILED, _RETRIED,
                    "connection refused/reset or a malformed HTTP answer"),
        FailureRule(Failure.TIMEOUT, 500, AckErrorName.TIMEOUT,
                    CloseSituation.EVENT_HANDLER_FAILED, _LOGGED,
                    "no complete answer within server.upstream_timeout (default 20 s)",
                    AckErrorName.TIMEOUT),
        FailureRule(Failure.VALIDATION_FAILED, 500, AckErrorName.INTERNAL_SERVER_ERROR,
                    CloseSituation.EVENT_HANDLER_FAILED, _LOGGED,
                    "OPTIONS answered non-2xx, without WebHook-Allowed-Origin, or with origins "
                    "that exclude us; retried by the next event after VALIDATION_RETRY_SECONDS"),
        FailureRule(Failure.CLIENT_ERROR, 0, AckErrorName.INTERNAL_SERVER_ERROR,
                    CloseSituation.EVENT_HANDLER_FAILED, _LOGGED,
                    "the handler answered 4xx (connect: the handshake is refused with that "
                    "very status and the handler's text as the message)", AckErrorName.INVOCATION_FAILED),
        FailureRule(Failure.SERVER_ERROR, 500, AckErrorName.INTERNAL_SERVER_ERROR,
                    CloseSituation.EVENT_HANDLER_FAILED, _LOGGED, "the handler answered 5xx",
                    AckErrorName.INVOCATION_FAILED),
        FailureRule(Failure.REDIRECT, 500, AckErrorName.INTERNAL_SERVER_ERROR,
                    CloseSituation.EVENT_HANDLER_FAILED, _LOGGED,
                    "the handler answered 3xx; redirects are not followed"),
        FailureRule(Failure.UNEXPECTED_STATUS, 500, AckErrorName.INTERNAL_SERVER_ERROR,
                    CloseSituation.EVENT_HANDLER_FAILED, _LOGGED, "any other non-2xx status"),
        FailureRule(Failure.BODY_TOO_LARGE, 500, AckErrorName.INTERNAL_SERVER_ERROR,
                    CloseSituation.EVENT_HANDLER_FAILED, _LOGGED,
                    "Content-Length, or the bytes read, over server.max_message_bytes; reading "
                    "stops there and the HTTP connection is dropped"),
        FailureRule(Failure.CONTENT_ENCODING, 500, AckErrorName.INTERNAL_SERVER_ERROR,
                    CloseSituation.EVENT_HANDLER_FAILED, _LOGGED,
                    "a Content-Encoding other than identity (we send Accept-Encoding: identity; "
                    "decompressing would unbound the body)"),
        FailureRule(Failure.BAD_CONTENT_TYPE, 500, AckErrorName.INTERNAL_SERVER_ERROR,
                    CloseSituation.EVENT_HANDLER_FAILED, _LOGGED,
                    "a user-event reply whose media type is not in REPLY_DATA_TYPES (e.g. an "
                    "HTML error page with 200); a connect answer with a body that is not JSON"),
        FailureRule(Failure.BAD_BODY, 500, AckErrorName.INTERNAL_SERVER_ERROR,
                    CloseSituation.EVENT_HANDLER_FAILED, _LOGGED,
                    "malformed JSON, invalid UTF-8 text, a connect answer that is not an object "
                    "or has fields of the wrong type, an invalid group name, too many groups/roles"),
        FailureRule(Failure.SUBPROTOCOL_NOT_OFFERED, 500, AckErrorName.INTERNAL_SERVER_ERROR,
                    CloseSituation.EVENT_HANDLER_FAILED, _LOGGED,
                    "connect: the answer's subprotocol is not one the client offered (or one "
                    "this server cannot speak)"),
        FailureRule(Failure.BAD_CONNECTION_STATE, 500, AckErrorName.INTERNAL_SERVER_ERROR,
                    CloseSituation.EVENT_HANDLER_FAILED, _LOGGED,
                    "more than one ce-connectionState header, or one over "
                    "MAX_CONNECTION_STATE_BYTES (a non-base64 value is NOT a failure: see "
                    "DECISIONS upstream.state-opaque)"),
        FailureRule(Failure.UNSENDABLE, 500, AckErrorName.BAD_REQUEST,
                    CloseSituation.EVENT_HANDLER_FAILED, _LOGGED,
                    "a user id, event name or state with control characters cannot be an HTTP "
                    "header value; the request is not sent", AckErrorName.BAD_REQUEST),
        FailureRule(Failure.HANDLER_ERROR, 500, AckErrorName.INTERNAL_SERVER_ERROR,
                    CloseSituation.EVENT_HANDLER_FAILED, "logged with the traceback and counted",
                    "an in-process handler raised something other than ConnectRejected / "
                    "UserEventError, or returned a wrong type", AckErrorName.INVOCATION_FAILED),
        FailureRule(Failure.NOT_RUNNING, 500, AckErrorName.INTERNAL_SERVER_ERROR,
                    CloseSituation.EVENT_HANDLER_FAILED, "dropped and counted",
                    "the hub's upstream client is stopped (shutdown) or restarting"),
    )
})

#: The whole failure outcome, one sentence per event kind (rendered into docs).
OUTCOMES: Mapping[str, str] = MappingProxyType({
    "connect": "the handshake is refused before the upgrade: the handler's own 4xx status with "
    "its text, else 500 (code ConnectHandlerFailed, the reason in the JSON body's message); a "
    "log line names the handler URL and the problem",
    "user event with ackId": "ack {success:false, error:{name, message}}: Timeout for a timeout, "
    "BadRequest for an unsendable request, InternalServerError otherwise; the message names the "
    "status/problem and quotes up to ERROR_DETAIL_CHARS of the handler's text; the connection "
    "stays open; the ackId is not remembered, so a retry with the same ackId is processed",
    "user event without ackId": "the connection is closed: system/disconnected with the reason, "
    "then close 1011 (CloseSituation.EVENT_HANDLER_FAILED)",
    "simple client message": "close 1011 (CloseSituation.EVENT_HANDLER_FAILED), reason = the "
    "problem",
    "connected / disconnected / joined / left": "never awaited by the connection; failures are "
    "logged (rate-limited) and counted; a full notification queue drops the event and counts it",
    "invoke": "invokeResponse {success:false, error:{name, message}} with FailureRule.invoke_error "
    "(Timeout, InvocationFailed for a 4xx/5xx answer, BadRequest for an unsendable request, "
    "InternalServerError otherwise); the connection stays open",
})

# =========================================================================== decisions

DECISIONS: tuple[Decision, ...] = (
    Decision(
        "upstream.user-event-no-ack",
        "A PubSub client's `event` without ackId whose handler fails (undocumented).",
        "Close: system/disconnected naming the problem, then 1011.",
        "[DOC] reference-cloud-events.md: 'the connection would be dropped if the response status "
        "code isn't success'; concept-ack.md: without an ackId errors close the connection with a "
        "disconnected message. Dropping the event silently would hide a broken handler from a "
        "fire-and-forget client; 1011 is what specs.errors already uses for simple clients.",
    ),
    Decision(
        "upstream.user-event-ack-names",
        "Which ack error names for upstream failures?",
        "Timeout for a timeout; BadRequest when the request cannot be built from the client's "
        "input; InternalServerError for everything else (non-2xx, unreachable, invalid answer, "
        "failed validation). The connection stays open.",
        "Timeout and InternalServerError are the names the 2021 schema and concept-ack.md give; "
        "clients tolerate any name. Keeping the connection lets clients that asked for an ack "
        "retry (the Python SDK does, 3 times).",
    ),
    Decision(
        "upstream.failed-ack-not-remembered",
        "Is the ackId of an event whose handler failed remembered for Duplicate detection?",
        "No: only successful events are remembered.",
        "[EMU] Microsoft's emulator caches only successful acks (AckCache), so the same ackId "
        "may retry.",
    ),
    Decision(
        "upstream.connect-failure-status",
        "Status for a connect handler that fails other than with 4xx.",
        "500 for every failure (5xx, timeout, unreachable, invalid answer, failed validation); "
        "4xx answers pass through with their own status.",
        "[DOC] 'the response from Upstream will be returned' for 4xx; troubleshooting shows 500 "
        "for upstream failures. Passing a 502/503 through would make clients treat a broken "
        "handler as a transient gateway problem.",
    ),
    Decision(
        "upstream.connect-invalid-answer",
        "A 2xx connect answer that is malformed (bad JSON, wrong field types, unknown "
        "subprotocol, bad group names, too big).",
        "Refuse the handshake with 500; never accept the connection while ignoring the answer.",
        "The answer may carry the userId/roles the app relies on for authorization; accepting "
        "without them could grant the wrong identity. Fail closed, with a log line naming the "
        "field.",
    ),
    Decision(
        "upstream.connect-empty-strings",
        "`\"userId\": \"\"` / `\"subprotocol\": \"\"` in a connect answer.",
        "Treated as absent.",
        "Microsoft's own sample answer shows empty strings for both, and the docs say a blank "
        "subprotocol header is invalid, so the sample cannot mean 'set it to empty'.",
    ),
    Decision(
        "upstream.state-opaque",
        "A ce-connectionState value that is not base64.",
        "Kept and echoed byte for byte (one warning log line per hub that Microsoft's SDKs would "
        "fail to decode it); only several headers or a value over MAX_CONNECTION_STATE_BYTES "
        "fail the event. An empty value clears the state.",
        "[DOC] the state is an opaque string ('do base64 encode the string value if it contains "
        "complex characters'); base64(JSON) is the SDKs' convention, not the protocol's.",
    ),
    Decision(
        "upstream.reply-content-types",
        "Which user-event reply Content-Types are accepted?",
        "text/plain → text, application/json → json (the body must parse), "
        "application/octet-stream or none → binary, application/x-protobuf → protobuf; "
        "parameters ignored; anything else with a body fails the event.",
        "The documented three plus the protobuf type we send; a 200 text/html page is a proxy "
        "or framework error, and forwarding it as binary would hide it.",
    ),
    Decision(
        "upstream.validation",
        "When and how is the abuse-protection check done?",
        "Lazily, before the first event that needs a handler URL (one check per distinct "
        "validate URL, concurrent callers share it); success is kept for the hub's life; a "
        "failure fails that event and is retried by a later event after "
        "VALIDATION_RETRY_SECONDS. WebHook-Allowed-Origin may be '*', our host, or our "
        "host:port.",
        "[DOC] validation precedes delivery; lazily (not at startup) lets a handler app start "
        "after the fabric, as in local development. express answers host:port from "
        "allowedEndpoints, so a local setup would never validate on the host alone.",
    ),
    Decision(
        "upstream.origin",
        "The WebHook-Request-Origin value for a self-hosted server.",
        "The host (no scheme, no port) of server.public_endpoint, else of the endpoint the "
        "listener printed (127.0.0.1 for 0.0.0.0), else server.host.",
        "ASP.NET Core matches it against the host of its configured endpoint (the connection "
        "string's), so it must be the same host the connection string names.",
    ),
    Decision(
        "upstream.retries",
        "Are failed upstream requests retried?",
        "Blocking events (connect, user events): never. connected/disconnected: twice, only "
        "when the request never reached the handler (connection refused before sending).",
        "A blocking event's client waits and retries itself (the SDKs do); a handler may not be "
        "idempotent, so only requests known not to have arrived are repeated.",
    ),
    Decision(
        "upstream.notification-order",
        "Ordering and concurrency of connected/disconnected.",
        "A fixed pool of notification workers (default 8) fed by bounded queues, a connection's "
        "events always on the same worker: its connected is delivered before its disconnected; "
        "connections run in parallel; a full queue drops and counts.",
        "[DOC] these are non-blocking; per-connection order is what apps assume (onConnected "
        "before onDisconnected), and a fixed pool bounds the load a reconnect storm puts on "
        "the handler.",
    ),
    Decision(
        "upstream.concurrency",
        "How many upstream requests at once?",
        "At most max_concurrency (default 64) per hub, over one shared httpx client whose "
        "keep-alive pool has the same bound; waiting for a slot counts against the timeout.",
        "Bounded everything; one pool per hub reuses connections across all its clients.",
    ),
    Decision(
        "upstream.timeout-grace",
        "The core also bounds every handler call; which timeout wins?",
        "The core waits upstream_timeout + TIMEOUT_GRACE (0.25 s) so a webhook's own timeout, "
        "with its more specific message, fires first.",
        "Both end in the same outcome; the grace only decides which log line explains it.",
    ),
    Decision(
        "upstream.metadata",
        "Message metadata headers (x-webpubsub-metadata-*).",
        "A user event or invocation carrying metadata sends one header per entry, "
        "x-webpubsub-metadata-<lower-case key>: <value>, after the CloudEvents headers (never on "
        "connect/connected/disconnected). A 2xx answer's X-WebPubSub-Metadata-* headers (folded by "
        "specs.metadata.fold_headers) are the reply's metadata; invalid ones fail the event "
        "(BadBody); a non-2xx answer's are ignored.",
        "Only Microsoft's emulator and the canonical webpubsub.v1.proto show metadata "
        "[EMU][SPEC]; no Learn page or REST spec version documents it. See specs.metadata.",
    ),
    Decision(
        "upstream.group-presence",
        "How do joined/left reach a handler, and when?",
        "Non-blocking notifications like connected: ce-type azure.webpubsub.gp.joined / "
        "azure.webpubsub.gp.left, ce-eventName joined / left, Content-Type application/json; "
        "charset=utf-8, body {\"group\": \"<name>\"}, the usual CloudEvents headers. Sent only to a "
        "handler that opts in (in-process: overrides on_group_joined/on_group_left; webhook: its "
        "group_presence_events, filtered by group_filters patterns). joined fires when a connection "
        "becomes a member of a group (client joinGroup, REST, token or connect-answer groups), left "
        "when it stops being one (leaveGroup, REST removal, and every group when the connection "
        "ends); a join of a group it is already in fires nothing. A handler gets a connection's "
        "notifications in the order they happened: its token and connect-answer groups joined, "
        "then connected; every group left, then disconnected.",
        "[SDK] @azure/web-pubsub-express 1.1.0 dispatches exactly these types and reads `group` "
        "from the JSON body (its tests send ce-eventName joined/left); [DOC] Azure's ARM model "
        "(groupPresenceEvents: eventNames joined/left, groupFilters patterns) makes them opt-in "
        "per handler. Leaving every group at disconnect is what presence needs to stay true. No "
        "source gives an order; membership's own order means an app never hears of a connection "
        "leaving a group after it heard the connection was gone.",
    ),
    Decision(
        "upstream.invoke-errors",
        "Which invokeResponse error does each upstream failure give?",
        "FailureRule.invoke_error: a 4xx/5xx answer is InvocationFailed (the message quotes the "
        "handler's text), a timeout Timeout, an unsendable request BadRequest, everything else "
        "InternalServerError.",
        "InvocationFailed is the documented name for an invocation that failed [DOC concept-ack.md]; "
        "the others keep the meaning they have for `event` acks (specs.invocation invoke.error-names).",
    ),
    Decision(
        "upstream.client-certificates",
        "clientCertificates in the connect request.",
        "Always an empty list: the listener speaks plain HTTP (TLS terminates in front of it).",
        "The .NET deserializer accepts an empty list; omitting the key is riskier.",
    ),
)
