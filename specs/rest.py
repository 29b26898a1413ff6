"""Azure Web PubSub's data-plane REST API as data: versions, operations, parameters, errors.

``fabric/appserver/rest.py`` builds its router from ``OPERATIONS`` and nothing else, so this table is
the one source of truth for paths, methods, success codes and query parameters; a test
checks that every row has a handler and every handler a row. A conformance run can replay
the table against any endpoint.

Rules this module keeps:
- Paths, methods and success codes are exactly those of api-version ``2024-12-01``
  (Azure/azure-rest-api-specs ``specification/webpubsub/data-plane/WebPubSub/routes.tsp``
  and ``stable/2024-12-01/webpubsub.json``; the operations of the azure-messaging-webpubsubservice
  Python SDK). The Python SDK raises on any other success code, so ``success`` is a single status.
- Every choice where Microsoft's sources are silent is a ``Decision`` in ``DECISIONS``
  (no public source gives the status for unknown targets or the error codes; TTL;
  permissions; paging...).
- The name rules (``is_valid_*``) are shared by both surfaces (REST and the embedded API in
  ``fabric/appserver/service.py``): one set of rules, one implementation.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import attrs

from specs._decisions import Decision

# =========================================================================== versions

#: Stable (GA) data-plane versions, oldest first [SPEC].
GA_API_VERSIONS: tuple[str, ...] = ("2021-10-01", "2022-11-01", "2023-07-01", "2024-01-01", "2024-12-01")
#: Preview versions listed in the spec repository (Azure/azure-rest-api-specs
#: ``specification/webpubsub/data-plane/WebPubSub/preview/``); accepted too [SPEC].
PREVIEW_API_VERSIONS: tuple[str, ...] = (
    "2020-10-01", "2021-01-01", "2021-05-01-preview", "2021-08-01-preview", "2022-10-01-preview",
)
API_VERSIONS: frozenset[str] = frozenset(GA_API_VERSIONS + PREVIEW_API_VERSIONS)
#: What both SDKs send today, and what a request without ``api-version`` is treated as.
DEFAULT_API_VERSION = "2024-12-01"

# =========================================================================== parameters


@attrs.frozen(slots=True)
class Param:
    """One query parameter.

    Attributes:
        name: the query name, exactly as the SDKs spell it.
        kind: ``str``, ``int`` or ``list`` (repeated: ``excluded=a&excluded=b``).
        minimum, maximum: inclusive bounds for ``int``.
        default: the value when absent (``int`` only).
    """

    name: str
    kind: str = "str"
    minimum: int | None = None
    maximum: int | None = None
    default: int | None = None


EXCLUDED = Param("excluded", "list")
FILTER = Param("filter")
TTL = Param("messageTtlSeconds", "int", 0, 300)
REASON = Param("reason")
TARGET_NAME = Param("targetName")

# =========================================================================== operations


@attrs.frozen(slots=True)
class Operation:
    """One REST operation.

    Attributes:
        name: the spec's operation name (``routes.tsp``), used as the handler key.
        method: HTTP method.
        path: path template; ``{name}`` segments are parameters (percent-decoded).
        success: the one success status.
        query: the query parameters it takes (``api-version`` is common to all).
        body: ``message`` (a payload: JSON, text or binary by Content-Type), ``json`` (a JSON
            object), or None (a body is ignored).
        not_found: the 404 case, if any (HEAD: "absent"; PUT: unknown connection/user).
        sdk: the method of ``azure-messaging-webpubsubservice`` 1.3.0, or None if it has none.
        extension: True for what Azure does not have (GET /api/health).
    """

    name: str
    method: str
    path: str
    success: int
    query: tuple[Param, ...] = ()
    body: str | None = None
    not_found: str | None = None
    sdk: str | None = None
    extension: bool = False

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.strip("/").split("/"))


_HUB = "/api/hubs/{hub}"

OPERATIONS: tuple[Operation, ...] = (
    Operation("getServiceStatus", "HEAD", "/api/health", 200),
    Operation("getServiceStatusGet", "GET", "/api/health", 200, extension=True),
    Operation("sendToAll", "POST", f"{_HUB}/:send", 202, (EXCLUDED, FILTER, TTL), "message", sdk="send_to_all"),
    Operation("closeAllConnections", "POST", f"{_HUB}/:closeConnections", 204, (EXCLUDED, REASON),
              sdk="close_all_connections"),
    Operation("generateClientToken", "POST", f"{_HUB}/:generateToken", 200, (
        Param("userId"), Param("role", "list"), Param("minutesToExpire", "int", 1, 2**31 - 1, 60),
        Param("group", "list"), Param("clientType"),
    ), sdk="get_client_access_token (only with an Entra ID credential)"),
    Operation("addConnectionsToGroups", "POST", f"{_HUB}/:addToGroups", 200, body="json"),
    Operation("removeConnectionsFromGroups", "POST", f"{_HUB}/:removeFromGroups", 200, body="json"),
    Operation("closeConnection", "DELETE", f"{_HUB}/connections/{{connectionId}}", 204, (REASON,),
              sdk="close_connection"),
    Operation("connectionExists", "HEAD", f"{_HUB}/connections/{{connectionId}}", 200,
              not_found="no such connection", sdk="connection_exists"),
    Operation("sendToConnection", "POST", f"{_HUB}/connections/{{connectionId}}/:send", 202, (TTL,), "message",
              sdk="send_to_connection"),
    Operation("removeConnectionFromAllGroups", "DELETE", f"{_HUB}/connections/{{connectionId}}/groups", 204,
              sdk="remove_connection_from_all_groups"),
    Operation("groupExists", "HEAD", f"{_HUB}/groups/{{group}}", 200, not_found="no connection in the group",
              sdk="group_exists"),
    Operation("closeGroupConnections", "POST", f"{_HUB}/groups/{{group}}/:closeConnections", 204,
              (EXCLUDED, REASON), sdk="close_group_connections"),
    Operation("sendToGroup", "POST", f"{_HUB}/groups/{{group}}/:send", 202, (EXCLUDED, FILTER, TTL), "message",
              sdk="send_to_group"),
    Operation("listConnectionsInGroup", "GET", f"{_HUB}/groups/{{group}}/connections", 200, (
        Param("maxpagesize", "int", 1, 200, 200), Param("top", "int", 1, 2**31 - 1), Param("continuationToken"),
    ), sdk="list_connections"),
    Operation("removeConnectionFromGroup", "DELETE", f"{_HUB}/groups/{{group}}/connections/{{connectionId}}", 204,
              sdk="remove_connection_from_group"),
    Operation("addConnectionToGroup", "PUT", f"{_HUB}/groups/{{group}}/connections/{{connectionId}}", 200,
              not_found="no such connection", sdk="add_connection_to_group"),
    Operation("revokePermission", "DELETE", f"{_HUB}/permissions/{{permission}}/connections/{{connectionId}}", 204,
              (TARGET_NAME,), sdk="revoke_permission"),
    Operation("checkPermission", "HEAD", f"{_HUB}/permissions/{{permission}}/connections/{{connectionId}}", 200,
              (TARGET_NAME,), not_found="no such connection, or not permitted", sdk="has_permission"),
    Operation("grantPermission", "PUT", f"{_HUB}/permissions/{{permission}}/connections/{{connectionId}}", 200,
              (TARGET_NAME,), not_found="no such connection", sdk="grant_permission"),
    Operation("userExists", "HEAD", f"{_HUB}/users/{{userId}}", 200, not_found="the user has no connection",
              sdk="user_exists"),
    Operation("closeUserConnections", "POST", f"{_HUB}/users/{{userId}}/:closeConnections", 204,
              (EXCLUDED, REASON), sdk="close_user_connections"),
    Operation("sendToUser", "POST", f"{_HUB}/users/{{userId}}/:send", 202, (FILTER, TTL), "message",
              sdk="send_to_user"),
    Operation("removeUserFromAllGroups", "DELETE", f"{_HUB}/users/{{userId}}/groups", 204,
              sdk="remove_user_from_all_groups"),
    Operation("removeUserFromGroup", "DELETE", f"{_HUB}/users/{{userId}}/groups/{{group}}", 204,
              sdk="remove_user_from_group"),
    Operation("addUserToGroup", "PUT", f"{_HUB}/users/{{userId}}/groups/{{group}}", 200,
              not_found="the user has no connection", sdk="add_user_to_group"),
)

OPERATIONS_BY_NAME: Mapping[str, Operation] = MappingProxyType({op.name: op for op in OPERATIONS})

#: ``{permission}`` path values.
PERMISSIONS: tuple[str, ...] = ("joinLeaveGroup", "sendToGroup")

#: Send bodies: media type (parameters such as ``charset`` ignored) -> dataType [DOC][SPEC].
MESSAGE_CONTENT_TYPES: Mapping[str, str] = MappingProxyType({
    "application/json": "json",
    "text/plain": "text",
    "application/octet-stream": "binary",
})
#: A send without ``Content-Type`` (RFC 9110 §8.3: the recipient may assume octet-stream).
DEFAULT_CONTENT_TYPE = "application/octet-stream"
#: Group names one :addToGroups / :removeFromGroups body may list (decision rest.groups-by-filter).
MAX_GROUPS_PER_REQUEST = 1000

#: ``clientType`` of ``:generateToken`` (case-insensitive) -> the client path kind.
CLIENT_TYPES: Mapping[str, str] = MappingProxyType({"default": "default", "mqtt": "mqtt", "socketio": "socketio"})

# =========================================================================== errors


class ErrorCode:
    """``ErrorDetail.code`` and ``x-ms-error-code`` values (Azure's own are undocumented;
    SDKs map errors by status only, so these are ours and meant for people)."""

    INVALID_API_VERSION = "InvalidApiVersion"  # 400
    INVALID_HUB_NAME = "InvalidHubName"  # 400
    INVALID_GROUP_NAME = "InvalidGroupName"  # 400
    INVALID_USER_ID = "InvalidUserId"  # 400
    INVALID_CONNECTION_ID = "InvalidConnectionId"  # 400
    INVALID_PERMISSION = "InvalidPermission"  # 400
    INVALID_PARAMETER = "InvalidQueryParameter"  # 400: a query value of the wrong type or range
    INVALID_FILTER = "InvalidFilter"  # 400
    INVALID_JSON = "InvalidJson"  # 400: an application/json body that is not JSON
    INVALID_TEXT = "InvalidText"  # 400: a text/plain body that is not UTF-8
    INVALID_BODY = "InvalidRequestBody"  # 400: JSON of the wrong shape (:addToGroups)
    INVALID_CONTINUATION_TOKEN = "InvalidContinuationToken"  # 400
    UNSUPPORTED_MEDIA_TYPE = "UnsupportedMediaType"  # 415
    PAYLOAD_TOO_LARGE = "PayloadTooLarge"  # 413
    CONNECTION_NOT_FOUND = "ConnectionNotFound"  # 404 (PUT ops, checkPermission)
    USER_NOT_FOUND = "UserNotFound"  # 404 (addUserToGroup)
    NOT_FOUND = "NotFound"  # 404: no such path, or a HEAD probe's "absent"
    METHOD_NOT_ALLOWED = "MethodNotAllowed"  # 405
    # 401: the codes of fabric.core.auth.TokenError (MissingToken, InvalidToken, InvalidSignature,
    # TokenExpired, TokenNotYetValid, InvalidAudience, InvalidAlgorithm).


# =========================================================================== names

# One rule per name for every surface: specs/names.py (decisions names.group, names.ids).
from specs.names import (  # noqa: E402,F401
    MAX_NAME_CHARS, is_valid_connection_id, is_valid_group_name, is_valid_user_id,
)


# =========================================================================== decisions

DECISIONS: tuple[Decision, ...] = (
    Decision(
        "rest.unknown-target",
        "Status for operations on unknown connections/users (not documented).",
        "PUT operations (addConnectionToGroup, grantPermission: unknown connection; addUserToGroup: user "
        "without connections) answer 404 with ErrorDetail ConnectionNotFound/UserNotFound. HEAD probes "
        "answer 404 by definition (checkPermission also for an unknown connection). Sends (202), closes "
        "and removals (204) and revokePermission (204) succeed: they are idempotent or fire-and-forget.",
        "Azure/azure-webpubsub #57 (service team): 'Return 404 if resource not existed, for all requests "
        "that may return 200 and not for delete verb'; docs issue MicrosoftDocs/azure-docs #81677 shows the "
        "live service answering AddUserToGroup with 404 'User `dev` is not found.'; #47: a send to a "
        "missing connection does nothing; emulator PR #1090: 'structured missing-connection errors for add "
        "and idempotent remove'. App servers race with disconnects, so removals must not fail.",
    ),
    Decision(
        "rest.api-version",
        "Which api-version values are accepted, and what a request without one means.",
        "The five GA versions and the listed previews are accepted, each with every operation (no "
        "per-version gating). A missing api-version means 2024-12-01. An unknown value, or more than one, "
        "is 400 InvalidApiVersion (target api-version). Responses carry api-supported-versions.",
        "Every listed version is in Azure/azure-rest-api-specs and every SDK request carries one [SPEC][SDK]; "
        "Microsoft's emulator checks api-version only when present and sends api-supported-versions [EMU]. "
        "Gating old versions would only break old SDKs.",
    ),
    Decision(
        "rest.audience",
        "How the REST token's aud is compared.",
        "Only the path: percent-decoded, trailing '/' stripped, ASCII case-insensitive, against the "
        "request's own path (scheme, host, port and query ignored). exp is required, nbf honoured, 30 s "
        "skew; every configured access key is tried.",
        "[INF] from the SDKs: every SDK puts the full request URL (with query) in aud [SDK][OBS] (docs PR "
        "MicrosoftDocs/azure-docs #112208: 'exact request URL'), and behind a proxy the host differs.",
    ),
    Decision(
        "rest.error-codes",
        "ErrorDetail.code / x-ms-error-code values.",
        "Ours (ErrorCode), specific per failure, with 'target' naming the parameter at fault. 401 uses "
        "fabric.core.auth.TokenError codes and adds WWW-Authenticate: Bearer.",
        "The service's codes are not documented; the SDKs map errors by status only [SDK].",
    ),
    Decision(
        "rest.content-type",
        "Send bodies: which Content-Type values, and what an absent one means.",
        "The media type (parameters such as charset ignored, case-insensitive) selects the dataType: "
        "application/json -> json (the body must be one JSON value: else 400 InvalidJson; whitespace "
        "around it is trimmed, the rest forwarded byte for byte), text/plain -> "
        "text (must be UTF-8: else 400 InvalidText), application/octet-stream -> binary. Any other type: "
        "415. No Content-Type: application/octet-stream. Simple clients get the body as a text frame "
        "(json, text) or a binary frame (binary).",
        "The three media types of the send operations in routes.tsp [SPEC]; what simple clients receive "
        "per Microsoft Learn's reference-json-webpubsub-subprotocol.md [DOC]; RFC 9110 §8.3 for the absent "
        "header; the emulator answers 415 [EMU].",
    ),
    Decision(
        "rest.ttl",
        "messageTtlSeconds semantics.",
        "Validated (an integer 0..300, else 400 InvalidQueryParameter) on the four sends and enforced "
        "where a message can wait: a message still in a hub or group mailbox past its TTL is dropped "
        "instead of delivered, and a reliable session that recovers after the TTL does not get it "
        "replayed (its sequence id becomes a gap, which the SDKs accept). Once a frame is in a "
        "connection's outbox it is sent: the outbox is bounded and a recipient that cannot keep up "
        "is closed (or lagged) by the slow-consumer policy long before 300 s. The Python SDK 1.3.0 "
        "cannot send it (TypeError), the JS SDK can.",
        "routes.tsp messageTtlSeconds [SPEC]: 'messages that are not consumed by the client within the "
        "specified TTL will be dropped by the service'; dropping silently is [INF]. Microsoft's emulator "
        "also validates and never expires [EMU].",
    ),
    Decision(
        "rest.filter",
        "OData filter semantics where the doc is silent.",
        "See fabric/appserver/odata.py: identifier names case-insensitive, values compared exactly (ordinal); "
        "null propagation as Microsoft's emulator; operands type-checked when the filter is compiled, so "
        "a bad filter is 400 InvalidFilter (message 'Invalid syntax for <part> at position N: ...') "
        "before anything is sent; gt/ge/lt/le also order strings; lengths count code points; an empty "
        "filter= means no filter; limits 16 KiB, depth 100, 2000 terms.",
        "Microsoft Learn's reference-odata-filter.md [DOC] (EBNF, examples, the 'not length(userId) gt 5' "
        "error); emulator ODataFilterExecutor [EMU].",
    ),
    Decision(
        "rest.permissions",
        "grant/revoke/check with and without targetName.",
        "Per permission a connection has: allow-all (the unscoped role), allowed groups (scoped and pattern "
        "roles) and denied groups. grant without targetName: allow all, clear denials; grant g: allow g, "
        "undeny g. revoke without targetName: remove the unscoped, scoped and pattern roles and the "
        "denials (deny all); revoke g: drop the g role and, if something broader still allows g, deny g. "
        "check g: allowed and not denied; check without targetName: allow-all and no denial. Changes "
        "apply to the next request of the live connection (a revoked sendToGroup fails with Forbidden).",
        "Microsoft's emulator GroupPermissionManager (allow/deny literals over an allow-all/deny-all "
        "default) [EMU]; routes.tsp grant/revoke/checkPermission: no targetName = all groups [SPEC].",
    ),
    Decision(
        "rest.paging",
        "listConnectionsInGroup paging.",
        "Members ordered by connection id (ordinal); maxpagesize 1..200 (default 200), top 1..2^31-1; "
        "continuationToken is an opaque base64url cursor bound to the group (anything else: 400 "
        "InvalidContinuationToken); nextLink is relative (/api/hubs/...?api-version=..&maxpagesize=..&"
        "top=<remaining>&continuationToken=..), present only when more members follow and top is not "
        "reached. Each page reads membership when it is requested.",
        "The SDKs' pagers (Python resolves a relative nextLink against its endpoint; JS appends it to its "
        "endpoint) [SDK][OBS]; emulator paging by connection id [EMU].",
    ),
    Decision(
        "rest.names",
        "Valid group names, user ids and connection ids on the REST and embedded APIs.",
        "The rules of specs/names.py (names.group, names.ids), the same on every surface. Otherwise 400 InvalidGroupName / InvalidUserId / "
        "InvalidConnectionId (ValueError on the embedded API). Hub names: the SDK regex, else 400.",
        "routes.tsp group rule plus the issue's 'control characters' rule; ids have only minLength 1 in "
        "the spec, 1024 bounds the work.",
    ),
    Decision(
        "rest.groups-by-filter",
        ":addToGroups / :removeFromGroups bodies.",
        "application/json or no Content-Type (else 415); a JSON object {groups: [names], filter?: string} "
        "(else 400 InvalidJson / InvalidRequestBody); groups must be a non-empty "
        "list of at most MAX_GROUPS_PER_REQUEST (1,000) valid names (else 400 InvalidRequestBody / "
        "InvalidGroupName); a missing or empty filter selects every connection of the hub. The joins "
        "are done in slices that yield to other work. 200 with an empty body.",
        "routes.tsp AddToGroupsRequest; emulator UpdateGroupsAsync [EMU]. Azure documents no bound; ours "
        "exists because one 1 MB body of 90,000 names stalled the whole server for 16-24 s and "
        "started 90,000 groups (630 MB) for five connections (found by a REST fuzz run). 1,000 is the "
        "bound a connect answer's groups already have (specs/upstream.py MAX_CONNECT_GROUPS); more "
        "groups take more requests.",
    ),
    Decision(
        "rest.limits",
        "Request body size.",
        "The HTTP front rejects bodies over server.max_request_body_bytes (413) and a body that arrives "
        "too slowly (408) without stalling the listener; a send body over server.max_message_bytes is "
        "413 PayloadTooLarge.",
        "Ours: bad input gets a specific 4xx, never a stall or a 5xx; Web PubSub's documented service "
        "limits: 1 MB per message [DOC].",
    ),
    Decision(
        "rest.generate-token",
        ":generateToken details.",
        "clientType Default | MQTT | SocketIO (case-insensitive; else 400), minutesToExpire 1..2^31-1 "
        "(default 60), role* free strings, group* valid group names, userId a valid user id; the token is "
        "signed with the first access key, aud = http://<Host header>/client/hubs/<hub> (or the MQTT / "
        "Socket.IO path); answer 200 {\"token\": ...} as application/json.",
        "routes.tsp generateClientToken; Python SDK 1.3.0 token shape.",
    ),
    Decision(
        "rest.close-reason",
        "The close reason of the close operations.",
        "'reason' goes verbatim into the disconnected message of PubSub clients (the close frame's "
        "reason is truncated to the 123-byte WebSocket limit); absent or empty: ClosedByAppServer.",
        "specs.errors CLOSE_RULES closed_by_app_server.",
    ),
    Decision(
        "rest.method-and-path",
        "Unknown paths and wrong methods.",
        "404 NotFound for a path no operation has; 405 MethodNotAllowed with an Allow header for a known "
        "path and another method. GET and HEAD /api/health both answer 200 (GET with "
        "{\"status\":\"healthy\"}).",
        "Our documented contract (README: GET/HEAD /api/health -> 200); routes.tsp has HEAD [SPEC].",
    ),
)
