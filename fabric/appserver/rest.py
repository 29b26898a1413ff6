"""The REST data plane: Azure Web PubSub's ``/api/hubs/...`` operations and ``/api/health``.

``Fabric.handle_http`` hands every ``/api/...`` request to :func:`handle`. This module only
translates HTTP into calls of the embedded API (``fabric/appserver/service.py``) and their results and
exceptions back into HTTP: one implementation, two surfaces.

Rules this module keeps:
- The router is built from ``specs.rest.OPERATIONS`` alone; every operation there has exactly
  one handler here (checked at import). Success statuses come from the table.
- Checks run in one order: route (404 / 405 with ``Allow``), ``api-version`` (400), the bearer
  token (401; health needs none), hub name (400), query parameters (400), body (413, 415,
  400), then the embedded call. The first failure answers; nothing has changed by then.
- Every failure is a JSON ``ErrorDetail`` (``code``, ``message``, ``target``) with an
  ``x-ms-error-code`` header. Bad input never causes a 5xx: the embedded API's
  ``InvalidArgument`` and ``FilterError`` become 400s; anything else escaping is a bug (the
  HTTP front answers it with a 500 and a log line).
- Stateless: paging cursors carry everything the next page needs.
- ``handle`` is a checkpoint (the embedded calls may wait on the hub or the broker); the body
  was already read, bounded, by the HTTP front.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import urllib.parse
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import msgspec

from fabric.appserver.odata import FilterError
from fabric.appserver.service import HubHandle, InvalidArgument, check_group
from fabric.core import auth
from fabric.core.payload import MAX_JSON_DEPTH, DataType, Payload, json_too_deep
from specs import metadata as spec_metadata
from specs import names
from specs import rest as spec
from specs.rest import ErrorCode
from transport.http import Request, Response, echo

if TYPE_CHECKING:
    from fabric.core.hubs import HubRegistry

_SUPPORTED = ("api-supported-versions", ", ".join(spec.GA_API_VERSIONS))
_DIGITS = re.compile(r"[0-9]{1,12}")
_HOST = re.compile(r"[A-Za-z0-9.\-:\[\]]{1,255}")
_WS = b" \t\r\n"


class HttpError(Exception):
    """An error answer: status, ``ErrorDetail.code``, message and optional target."""

    def __init__(self, status: int, code: str, message: str, target: str | None = None,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.target = target
        self.headers = headers


def error_response(status: int, code: str, message: str, target: str | None = None,
                   headers: tuple[tuple[str, str], ...] = ()) -> Response:
    body: dict[str, str] = {"code": code, "message": message}
    if target is not None:
        body["target"] = target
    return Response.json(status, body, (("x-ms-error-code", code), _SUPPORTED, *headers))


# ---- routing ---------------------------------------------------------------------------------


class _Route:
    __slots__ = ("op", "literals", "params")

    def __init__(self, op: spec.Operation) -> None:
        self.op = op
        self.literals: list[tuple[int, str]] = []
        self.params: list[tuple[int, str]] = []
        for i, segment in enumerate(op.segments):
            if segment.startswith("{") and segment.endswith("}"):
                self.params.append((i, segment[1:-1]))
            else:
                self.literals.append((i, segment.lower()))

    def match(self, segments: list[str]) -> dict[str, str] | None:
        for i, literal in self.literals:
            if segments[i].lower() != literal:
                return None
        return {name: segments[i] for i, name in self.params}


_ROUTES: dict[int, list[_Route]] = {}
for _op in spec.OPERATIONS:
    _ROUTES.setdefault(len(_op.segments), []).append(_Route(_op))


def _split_path(raw_path: str) -> list[str]:
    """Path segments, each percent-decoded (so ``a%2Fb`` is one segment ``a/b``)."""
    return [urllib.parse.unquote(s) for s in raw_path.lstrip("/").split("/")]


def route(method: str, raw_path: str) -> tuple[spec.Operation, dict[str, str]]:
    """The operation and path parameters for a request. Raises HttpError (404, 405).

    A trailing ``/`` is tried as an empty last segment first (``/groups/`` is the group "",
    a 400 later), then ignored (``/api/health/``).
    """
    segments = _split_path(raw_path)
    shapes = [segments, segments[:-1]] if len(segments) > 1 and segments[-1] == "" else [segments]
    allowed: list[str] = []
    for shape in shapes:
        for candidate in _ROUTES.get(len(shape), ()):
            params = candidate.match(shape)
            if params is None:
                continue
            if candidate.op.method == method:
                return candidate.op, params
            allowed.append(candidate.op.method)
        if allowed:
            break
    if allowed:
        methods = ", ".join(sorted(set(allowed)))
        raise HttpError(405, ErrorCode.METHOD_NOT_ALLOWED, f"{echo(method)} is not allowed here; use {methods}",
                        headers=(("allow", methods),))
    raise HttpError(404, ErrorCode.NOT_FOUND, f"no such resource: {echo(method)} {echo(raw_path)}")


# ---- parameters --------------------------------------------------------------------------------


def _api_version(request: Request) -> str:
    values = request.query.get("api-version")
    if values is None:
        return spec.DEFAULT_API_VERSION
    if len(values) != 1 or values[0] not in spec.API_VERSIONS:
        shown = values[0] if len(values) == 1 else ", ".join(values)
        raise HttpError(400, ErrorCode.INVALID_API_VERSION,
                        f"api-version {shown!r} is not supported; use one of {', '.join(spec.GA_API_VERSIONS)}",
                        "api-version")
    return values[0]


def _query(request: Request, op: spec.Operation) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for param in op.query:
        values = request.query.get(param.name)
        if param.kind == "list":
            out[param.name] = values or []
            continue
        if values is None:
            out[param.name] = param.default
            continue
        if len(values) != 1:
            raise HttpError(400, ErrorCode.INVALID_PARAMETER, f"{param.name} may be given only once", param.name)
        value = values[0]
        if param.kind == "int":
            lo, hi = param.minimum, param.maximum
            if _DIGITS.fullmatch(value) is None or not lo <= int(value) <= hi:  # type: ignore[operator]
                raise HttpError(400, ErrorCode.INVALID_PARAMETER,
                                f"{param.name} must be an integer from {lo} to {hi}, got {value[:40]!r}", param.name)
            out[param.name] = int(value)
        else:
            out[param.name] = value
    return out


def _payload(request: Request, registry: "HubRegistry") -> Payload:
    """The message of a send: its dataType from the Content-Type's media type."""
    body = request.body
    limit = registry.config.server.max_message_bytes
    if len(body) > limit:
        raise HttpError(413, ErrorCode.PAYLOAD_TOO_LARGE, f"the message is {len(body)} bytes; at most {limit} are accepted")
    content_type = request.header("content-type")
    media = content_type.split(";", 1)[0].strip().lower() if content_type else spec.DEFAULT_CONTENT_TYPE
    kind = spec.MESSAGE_CONTENT_TYPES.get(media)
    if kind is None:
        raise HttpError(415, ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                        f"Content-Type {content_type[:80]!r} is not supported; use "  # type: ignore[index]
                        + ", ".join(spec.MESSAGE_CONTENT_TYPES), "Content-Type")
    if kind == "json":
        body = body.strip(_WS)
        if json_too_deep(body):
            raise HttpError(400, ErrorCode.INVALID_JSON,
                            f"the body nests JSON deeper than {MAX_JSON_DEPTH} levels", "message")
        try:
            msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise HttpError(400, ErrorCode.INVALID_JSON, f"the body is not valid JSON: {exc}", "message") from None
        return Payload(DataType.JSON, body)
    if kind == "text":
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HttpError(400, ErrorCode.INVALID_TEXT, f"a text/plain body must be UTF-8: {exc}", "message") from None
        return Payload(DataType.TEXT, body)
    return Payload(DataType.BINARY, body)


class _GroupsBody(msgspec.Struct):
    groups: list[str] | None = None
    filter: str | None = None


def _groups_body(request: Request) -> _GroupsBody:
    content_type = request.header("content-type")
    if content_type and content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise HttpError(415, ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                        f"Content-Type {content_type[:80]!r} is not supported; use application/json", "Content-Type")
    if json_too_deep(request.body):
        raise HttpError(400, ErrorCode.INVALID_JSON, f"the body nests JSON deeper than {MAX_JSON_DEPTH} levels",
                        "body")
    try:
        parsed = msgspec.json.decode(request.body, type=_GroupsBody)
    except msgspec.ValidationError as exc:
        raise HttpError(400, ErrorCode.INVALID_BODY,
                        f'expected {{"groups": [names], "filter": "..."}}: {exc}', "body") from None
    except msgspec.DecodeError as exc:
        raise HttpError(400, ErrorCode.INVALID_JSON, f"the body is not valid JSON: {exc}", "body") from None
    if not parsed.groups:
        raise HttpError(400, ErrorCode.INVALID_BODY, "'groups' must be a non-empty list of group names", "groups")
    if len(parsed.groups) > spec.MAX_GROUPS_PER_REQUEST:
        raise HttpError(400, ErrorCode.INVALID_BODY,
                        f"'groups' names {len(parsed.groups)} groups; at most {spec.MAX_GROUPS_PER_REQUEST} per request",
                        "groups")
    return parsed


# ---- paging cursors ------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _cursor_tag(key: str, group: str, connection_id: str) -> str:
    message = f"{group}\x00{connection_id}".encode("utf-8", "surrogatepass")
    return _b64(hmac.new(key.encode("utf-8"), message, hashlib.sha256).digest()[:12])


def encode_cursor(key: str, group: str, last_connection_id: str) -> str:
    """An opaque continuation token: version, the last id returned, and an HMAC (with the
    access key) binding both to the group, so a forged or foreign token is refused."""
    encoded = _b64(last_connection_id.encode("utf-8", "surrogatepass"))
    return f"1.{encoded}.{_cursor_tag(key, group, last_connection_id)}"


def decode_cursor(keys: tuple[str, ...], group: str, token: str) -> str:
    """The last connection id of the previous page. Raises HttpError 400."""
    bad = HttpError(400, ErrorCode.INVALID_CONTINUATION_TOKEN,
                    "continuationToken is not one this server issued for this group", "continuationToken")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != "1" or len(parts[1]) > 2048:
        raise bad
    try:
        last = _unb64(parts[1]).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise bad from None
    if not any(hmac.compare_digest(parts[2], _cursor_tag(key, group, last)) for key in keys):
        raise bad
    return last


# ---- handlers --------------------------------------------------------------------------------------


class Call:
    """What a handler gets: the request, its operation, hub, path and query parameters."""

    __slots__ = ("registry", "request", "op", "hub", "path", "query", "api_version")

    def __init__(self, registry: "HubRegistry", request: Request, op: spec.Operation, hub: HubHandle | None,
                 path: dict[str, str], query: dict[str, Any], api_version: str) -> None:
        self.registry = registry
        self.request = request
        self.op = op
        self.hub = hub
        self.path = path
        self.query = query
        self.api_version = api_version

    def done(self) -> Response:
        return Response(self.op.success, b"", (_SUPPORTED,))

    def not_found(self, code: str, message: str) -> Response:
        return error_response(404, code, message)


Handler = Callable[[Call], Awaitable[Response]]
_HANDLERS: dict[str, Handler] = {}


def _handles(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        if name not in spec.OPERATIONS_BY_NAME:
            raise LookupError(f"no operation {name!r} in specs.rest")
        _HANDLERS[name] = fn
        return fn
    return register


def _message(call: Call) -> Payload:
    return _payload(call.request, call.registry)


def _metadata(call: Call) -> dict[str, str] | None:
    """``X-WebPubSub-Metadata-<key>`` request headers (``specs.metadata.fold_headers``); 400 when
    they break a rule, with the header as the target."""
    headers = call.request.headers  # lower-cased names, latin-1 values
    prefix = spec_metadata.REST_HEADER_PREFIX
    if not any(name.startswith(prefix) for name, _ in headers):
        return None
    folded = spec_metadata.fold_headers(headers, prefix)
    metadata, problem = spec_metadata.normalize((key, spec_metadata.header_text(value)) for key, value in folded.items())
    if problem is not None:
        raise HttpError(400, spec_metadata.REST_ERROR_CODE, problem, "X-WebPubSub-Metadata-*")
    return metadata


@_handles("getServiceStatus")
async def _health_head(call: Call) -> Response:
    return call.done()


@_handles("getServiceStatusGet")
async def _health_get(call: Call) -> Response:
    # 200 whatever the broker's state: a node whose Redis is down still serves its own
    # clients (design.md, "Scale-out"); the body says how the link is.
    body: dict = {"status": "healthy"}
    broker = call.registry.broker_statistics()
    if broker is not None:
        body["broker"] = broker
    return Response.json(200, body, (_SUPPORTED,))


@_handles("sendToAll")
async def _send_to_all(call: Call) -> Response:
    q = call.query
    await call.hub.send_to_all(_message(call), excluded=q["excluded"], filter=q["filter"],
                               message_ttl_seconds=q["messageTtlSeconds"], metadata=_metadata(call))
    return call.done()


@_handles("sendToGroup")
async def _send_to_group(call: Call) -> Response:
    q = call.query
    await call.hub.send_to_group(call.path["group"], _message(call), excluded=q["excluded"], filter=q["filter"],
                                 message_ttl_seconds=q["messageTtlSeconds"], metadata=_metadata(call))
    return call.done()


@_handles("sendToUser")
async def _send_to_user(call: Call) -> Response:
    q = call.query
    await call.hub.send_to_user(call.path["userId"], _message(call), filter=q["filter"],
                                message_ttl_seconds=q["messageTtlSeconds"], metadata=_metadata(call))
    return call.done()


@_handles("sendToConnection")
async def _send_to_connection(call: Call) -> Response:
    await call.hub.send_to_connection(call.path["connectionId"], _message(call),
                                      message_ttl_seconds=call.query["messageTtlSeconds"], metadata=_metadata(call))
    return call.done()


@_handles("closeAllConnections")
async def _close_all(call: Call) -> Response:
    await call.hub.close_all_connections(excluded=call.query["excluded"], reason=call.query["reason"])
    return call.done()


@_handles("closeGroupConnections")
async def _close_group(call: Call) -> Response:
    await call.hub.close_group_connections(call.path["group"], excluded=call.query["excluded"],
                                           reason=call.query["reason"])
    return call.done()


@_handles("closeUserConnections")
async def _close_user(call: Call) -> Response:
    await call.hub.close_user_connections(call.path["userId"], excluded=call.query["excluded"],
                                          reason=call.query["reason"])
    return call.done()


@_handles("closeConnection")
async def _close_connection(call: Call) -> Response:
    await call.hub.close_connection(call.path["connectionId"], reason=call.query["reason"])
    return call.done()


@_handles("connectionExists")
async def _connection_exists(call: Call) -> Response:
    cid = call.path["connectionId"]
    if await call.hub.connection_exists(cid):
        return call.done()
    return call.not_found(ErrorCode.CONNECTION_NOT_FOUND, f"connection {cid!r} does not exist")


@_handles("groupExists")
async def _group_exists(call: Call) -> Response:
    group = call.path["group"]
    if await call.hub.group_exists(group):
        return call.done()
    return call.not_found(ErrorCode.NOT_FOUND, f"group {group!r} has no connections")


@_handles("userExists")
async def _user_exists(call: Call) -> Response:
    user = call.path["userId"]
    if await call.hub.user_exists(user):
        return call.done()
    return call.not_found(ErrorCode.USER_NOT_FOUND, f"user {user!r} has no connections")


@_handles("addConnectionToGroup")
async def _add_connection(call: Call) -> Response:
    cid = call.path["connectionId"]
    if await call.hub.add_connection_to_group(call.path["group"], cid):
        return call.done()
    return call.not_found(ErrorCode.CONNECTION_NOT_FOUND, f"connection {cid!r} does not exist")


@_handles("removeConnectionFromGroup")
async def _remove_connection(call: Call) -> Response:
    await call.hub.remove_connection_from_group(call.path["group"], call.path["connectionId"])
    return call.done()


@_handles("removeConnectionFromAllGroups")
async def _remove_connection_all(call: Call) -> Response:
    await call.hub.remove_connection_from_all_groups(call.path["connectionId"])
    return call.done()


@_handles("addUserToGroup")
async def _add_user(call: Call) -> Response:
    user = call.path["userId"]
    if await call.hub.add_user_to_group(call.path["group"], user):
        return call.done()
    return call.not_found(ErrorCode.USER_NOT_FOUND, f"user {user!r} has no connections")


@_handles("removeUserFromGroup")
async def _remove_user(call: Call) -> Response:
    await call.hub.remove_user_from_group(call.path["group"], call.path["userId"])
    return call.done()


@_handles("removeUserFromAllGroups")
async def _remove_user_all(call: Call) -> Response:
    await call.hub.remove_user_from_all_groups(call.path["userId"])
    return call.done()


@_handles("addConnectionsToGroups")
async def _add_by_filter(call: Call) -> Response:
    body = _groups_body(call.request)
    await call.hub.add_connections_to_groups(body.groups, body.filter)  # type: ignore[arg-type]
    return call.done()


@_handles("removeConnectionsFromGroups")
async def _remove_by_filter(call: Call) -> Response:
    body = _groups_body(call.request)
    await call.hub.remove_connections_from_groups(body.groups, body.filter)  # type: ignore[arg-type]
    return call.done()


def _target(call: Call) -> str | None:
    target = call.query["targetName"]
    return None if target is None or target == "" else target


@_handles("grantPermission")
async def _grant(call: Call) -> Response:
    cid = call.path["connectionId"]
    if await call.hub.grant_permission(call.path["permission"], cid, target=_target(call)):
        return call.done()
    return call.not_found(ErrorCode.CONNECTION_NOT_FOUND, f"connection {cid!r} does not exist")


@_handles("revokePermission")
async def _revoke(call: Call) -> Response:
    await call.hub.revoke_permission(call.path["permission"], call.path["connectionId"], target=_target(call))
    return call.done()


@_handles("checkPermission")
async def _check(call: Call) -> Response:
    cid, permission, target = call.path["connectionId"], call.path["permission"], _target(call)
    if await call.hub.has_permission(permission, cid, target=target):
        return call.done()
    where = f" on group {target!r}" if target is not None else " on every group"
    return call.not_found(ErrorCode.NOT_FOUND, f"connection {cid!r} does not exist or lacks {permission}{where}")


@_handles("generateClientToken")
async def _generate_token(call: Call) -> Response:
    q = call.query
    endpoint = call.registry.config.server.public_endpoint  # what client tokens are checked against
    if not endpoint:
        host = call.request.header("host") or ""
        if _HOST.fullmatch(host) is None:
            host = urllib.parse.urlsplit(call.registry.endpoint or "http://localhost").netloc or "localhost"
        endpoint = f"http://{host}"
    user = q["userId"] or None
    token = call.hub.get_client_access_token(
        user_id=user, roles=q["role"], groups=q["group"], minutes_to_expire=q["minutesToExpire"],
        endpoint=endpoint, client_type=q["clientType"] or "Default")["token"]
    return Response.json(200, {"token": token}, (_SUPPORTED,))


@_handles("listConnectionsInGroup")
async def _list_connections(call: Call) -> Response:
    q = call.query
    group = check_group(call.path["group"])
    token = q["continuationToken"]
    after = decode_cursor(call.registry.access_keys, group, token) if token else None
    page_size, top = q["maxpagesize"], q["top"]
    items, last = await call.hub.list_connections_page(group, max_page_size=page_size, top=top, after=after)
    body: dict[str, Any] = {"value": items}
    if last is not None:
        params = [("api-version", call.api_version), ("maxpagesize", str(page_size))]
        if top is not None:
            params.append(("top", str(top - len(items))))
        params.append(("continuationToken", encode_cursor(call.registry.access_keys[0], group, last)))
        body["nextLink"] = (f"/api/hubs/{urllib.parse.quote(call.hub.name, safe='')}/groups/"
                            f"{urllib.parse.quote(group, safe='')}/connections?{urllib.parse.urlencode(params)}")
    return Response.json(200, body, (_SUPPORTED,))


_missing = [op.name for op in spec.OPERATIONS if op.name not in _HANDLERS]
if _missing:
    raise LookupError(f"operations without a handler: {_missing}")


# ---- entry point -----------------------------------------------------------------------------------


async def handle(registry: "HubRegistry", request: Request, *, trusted: bool = False) -> Response:
    """Answer one ``/api/...`` request. Checkpoint.

    ``trusted``: the request came through an authenticated server tunnel
    (``fabric/appserver/tunnel.py``) and carries no bearer token of its own."""
    try:
        op, path = route(request.method, request.raw_path)
        api_version = _api_version(request)
        hub: HubHandle | None = None
        if "hub" in path:
            try:
                if not trusted:
                    auth.verify_rest_token(request.header("authorization"), keys=registry.access_keys,
                                           request_path=request.raw_path,
                                           public_endpoint=registry.config.server.public_endpoint)
            except auth.TokenError as exc:
                raise HttpError(exc.status, exc.code, exc.message,
                                headers=(("www-authenticate", 'Bearer error="invalid_token"'),)) from None
            name = path["hub"]
            if not names.is_valid_hub_name(name):
                raise HttpError(400, ErrorCode.INVALID_HUB_NAME,
                                f"invalid hub name {name[:80]!r}: a letter, then up to 127 of A-Z a-z 0-9 _ ` , . [ ]",
                                "hub")
            hub = HubHandle(registry, name)
        call = Call(registry, request, op, hub, path, _query(request, op), api_version)
        return await _HANDLERS[op.name](call)
    except HttpError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.target, exc.headers)
    except InvalidArgument as exc:
        return error_response(400, exc.code, exc.message, exc.target)
    except FilterError as exc:
        return error_response(400, ErrorCode.INVALID_FILTER, str(exc), "filter")
