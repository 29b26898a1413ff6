"""The embedded API for one hub: the operations Azure's REST API offers, as methods.

One implementation, two surfaces: ``fabric/appserver/rest.py`` only translates HTTP into these calls
(and their exceptions into status codes), so every rule below holds for both.

Rules this module keeps:
- Every argument is validated here, with the rules of ``specs/rest.py``: a bad group name,
  user id, connection id, permission, TTL, page size or filter raises :class:`InvalidArgument`
  or ``fabric.appserver.odata.FilterError`` (both ``ValueError``) before anything changes or is sent.
- Unknown targets (undocumented by Microsoft; ``specs.rest`` decision ``rest.unknown-target``): the
  "add" operations and ``grant_permission`` return False; sends, closes and removals do
  nothing and succeed.
- Permissions change the live connection at once (its ``fabric.core.permissions.Permissions``,
  read on every request); see decision
  ``rest.permissions``. At most ``MAX_PERMISSION_ENTRIES`` per connection.
- Every operation is one ``Hub`` method after validation, so the hub decides where the
  target lives (this process, or another node through the broker).
- Methods are checkpoints (they may start the hub or wait on the broker) unless they say
  otherwise.

Payloads: ``str`` is sent as text, ``bytes`` as binary, a ``Payload`` as it is, and any
other value is JSON-encoded (``dataType: json``). The four sends take ``metadata`` (a
``str -> str`` mapping, ``specs.metadata``: keys lower-cased and validated; REST fills it
from ``X-WebPubSub-Metadata-*`` headers).
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import msgspec

from fabric.appserver.odata import Filter, compile_filter
from fabric.core import auth
from fabric.core.payload import DataType, Payload
from fabric.core.permissions import MAX_PERMISSION_ENTRIES, TooManyPermissions
from fabric.core.publication import Publication
from specs import errors as spec_errors
from specs import metadata as spec_metadata
from specs import rest as spec

if TYPE_CHECKING:
    from fabric.core.hub import Hub
    from fabric.core.hubs import HubRegistry

PERMISSIONS = spec.PERMISSIONS
DEFAULT_CLOSE_REASON = spec_errors.CloseReason.CLOSED_BY_APP_SERVER.value
_PARAM = spec.ErrorCode.INVALID_PARAMETER


class InvalidArgument(ValueError):
    """A bad argument. ``code`` is a ``specs.rest.ErrorCode`` value; ``target`` names the
    parameter (the REST name: ``group``, ``userId``, ``messageTtlSeconds``...)."""

    def __init__(self, code: str, target: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.target = target
        self.message = message


def to_payload(data: Any) -> Payload:
    if isinstance(data, Payload):
        return data
    if isinstance(data, str):
        return Payload(DataType.TEXT, data.encode("utf-8"))
    if isinstance(data, (bytes, bytearray, memoryview)):
        return Payload(DataType.BINARY, bytes(data))
    return Payload(DataType.JSON, msgspec.json.encode(data))


# ---- validation (shared by both surfaces) --------------------------------------------------


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_group(group: object, target: str = "group") -> str:
    if not spec.is_valid_group_name(group):
        raise InvalidArgument(spec.ErrorCode.INVALID_GROUP_NAME, target,
                              f"invalid group name {_show(group)}: 1-1024 characters, not only whitespace, "
                              "no control characters")
    return group  # type: ignore[return-value]


def check_user(user_id: object, target: str = "userId") -> str:
    if not spec.is_valid_user_id(user_id):
        raise InvalidArgument(spec.ErrorCode.INVALID_USER_ID, target,
                              f"invalid user id {_show(user_id)}: 1-1024 characters, no control characters")
    return user_id  # type: ignore[return-value]


def check_connection_id(connection_id: object, target: str = "connectionId") -> str:
    if not spec.is_valid_connection_id(connection_id):
        raise InvalidArgument(spec.ErrorCode.INVALID_CONNECTION_ID, target,
                              f"invalid connection id {_show(connection_id)}: 1-1024 characters, "
                              "no control characters")
    return connection_id  # type: ignore[return-value]


def check_permission(permission: object) -> str:
    if permission not in PERMISSIONS:
        raise InvalidArgument(spec.ErrorCode.INVALID_PERMISSION, "permission",
                              f"unknown permission {_show(permission)}; expected one of {', '.join(PERMISSIONS)}")
    return permission  # type: ignore[return-value]


def check_int(value: object, name: str, minimum: int, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InvalidArgument(_PARAM, name, f"{name} must be an integer from {minimum} to {maximum}, got {_show(value)}")
    return value


def check_ttl(message_ttl_seconds: object) -> int | None:
    """``messageTtlSeconds``: None or 0..300 (validated; see decision ``rest.ttl``)."""
    if message_ttl_seconds is None:
        return None
    return check_int(message_ttl_seconds, "messageTtlSeconds", 0, 300)


def check_metadata(metadata: Mapping[str, str] | None, target: str = "metadata") -> dict[str, str] | None:
    """Message metadata (``specs.metadata``): None/empty is None; keys come back lower-case."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise InvalidArgument(spec_metadata.REST_ERROR_CODE, target,
                              f"metadata must be a mapping of strings, got {_show(metadata)}")
    out, problem = spec_metadata.normalize(metadata.items())
    if problem is not None:
        raise InvalidArgument(spec_metadata.REST_ERROR_CODE, target, problem)
    return out


def check_filter(filter: str | Filter | None) -> Filter | None:
    """None or an empty string: no filter. Raises ``FilterError``."""
    if filter is None or isinstance(filter, Filter):
        return filter
    if filter == "":
        return None
    return compile_filter(filter)


def check_excluded(excluded: Iterable[str]) -> frozenset[str]:
    if isinstance(excluded, str):
        raise InvalidArgument(_PARAM, "excluded", "excluded is a collection of connection ids, not one string")
    out = frozenset(excluded)
    for item in out:
        if not isinstance(item, str):
            raise InvalidArgument(_PARAM, "excluded", f"excluded connection ids must be strings, got {_show(item)}")
    return out


def check_groups(groups: Iterable[str], target: str = "groups") -> list[str]:
    if isinstance(groups, str):
        raise InvalidArgument(spec.ErrorCode.INVALID_BODY, target, "groups is a list of group names, not one string")
    items = list(dict.fromkeys(groups))
    if not items:
        raise InvalidArgument(spec.ErrorCode.INVALID_BODY, target, "groups must name at least one group")
    for group in items:
        check_group(group, target)
    return items


def _reason(reason: str | None) -> str:
    if reason is None or reason == "":
        return DEFAULT_CLOSE_REASON
    if not isinstance(reason, str):
        raise InvalidArgument(_PARAM, "reason", f"reason must be a string, got {_show(reason)}")
    return reason


def _member(connection_id: str, user_id: str | None) -> dict:
    if user_id:
        return {"connectionId": connection_id, "userId": user_id}
    return {"connectionId": connection_id}


class HubHandle:
    """The embedded API of one hub: Azure's data-plane operations as methods (see the
    module's rules). Every operation validates here and then asks the ``Hub``."""

    def __init__(self, registry: "HubRegistry", name: str) -> None:
        self._registry = registry
        self.name = name

    async def _hub(self) -> "Hub":
        return await self._registry.get(self.name)

    # ---- sending -----------------------------------------------------------------

    async def send_to_all(self, data: Any, *, excluded: Iterable[str] = (), filter: str | Filter | None = None,
                          message_ttl_seconds: int | None = None, metadata: Mapping[str, str] | None = None) -> None:
        """Send to every connection of the hub (but ``excluded``; only those ``filter`` selects)."""
        skip, selects = check_excluded(excluded), check_filter(filter)
        ttl = check_ttl(message_ttl_seconds)
        meta = check_metadata(metadata)
        hub = await self._hub()
        await hub.send_to_all(Publication("server", to_payload(data), excluded=skip, filter=selects, ttl_seconds=ttl,
                                          metadata=meta))

    async def send_to_group(self, group: str, data: Any, *, excluded: Iterable[str] = (),
                            filter: str | Filter | None = None, message_ttl_seconds: int | None = None,
                            metadata: Mapping[str, str] | None = None) -> None:
        check_group(group)
        skip, selects = check_excluded(excluded), check_filter(filter)
        ttl = check_ttl(message_ttl_seconds)
        meta = check_metadata(metadata)
        hub = await self._hub()
        await hub.publish(Publication("group", to_payload(data), group=group, excluded=skip, filter=selects,
                                      ttl_seconds=ttl, metadata=meta))

    async def send_to_user(self, user_id: str, data: Any, *, filter: str | Filter | None = None,
                           message_ttl_seconds: int | None = None, metadata: Mapping[str, str] | None = None) -> None:
        check_user(user_id)
        selects = check_filter(filter)
        ttl = check_ttl(message_ttl_seconds)
        meta = check_metadata(metadata)
        hub = await self._hub()
        await hub.send_to_user(user_id, Publication("server", to_payload(data), filter=selects, ttl_seconds=ttl,
                                                    metadata=meta))

    async def send_to_connection(self, connection_id: str, data: Any, *,
                                 message_ttl_seconds: int | None = None, metadata: Mapping[str, str] | None = None) -> None:
        check_connection_id(connection_id)
        ttl = check_ttl(message_ttl_seconds)
        meta = check_metadata(metadata)
        hub = await self._hub()
        await hub.send_to_connection(connection_id, Publication("server", to_payload(data), ttl_seconds=ttl,
                                                                metadata=meta))

    # ---- groups ------------------------------------------------------------------

    async def add_connection_to_group(self, group: str, connection_id: str) -> bool:
        """False if there is no such connection."""
        check_group(group)
        check_connection_id(connection_id)
        return await (await self._hub()).add_to_group(connection_id, group)

    async def remove_connection_from_group(self, group: str, connection_id: str) -> None:
        check_group(group)
        check_connection_id(connection_id)
        await (await self._hub()).remove_from_group(connection_id, group)

    async def remove_connection_from_all_groups(self, connection_id: str) -> None:
        check_connection_id(connection_id)
        await (await self._hub()).remove_from_all_groups(connection_id)

    async def add_user_to_group(self, group: str, user_id: str) -> bool:
        """Add every connection of the user. False if the user has no connection."""
        check_group(group)
        check_user(user_id)
        return await (await self._hub()).add_user_to_group(user_id, group)

    async def remove_user_from_group(self, group: str, user_id: str) -> None:
        check_group(group)
        check_user(user_id)
        await (await self._hub()).remove_user_from_group(user_id, group)

    async def remove_user_from_all_groups(self, user_id: str) -> None:
        check_user(user_id)
        await (await self._hub()).remove_user_from_all_groups(user_id)

    async def add_connections_to_groups(self, groups: Iterable[str], filter: str | Filter | None = None) -> int:
        """Add every connection the filter selects (all, without one) to every group.
        Returns how many connections were selected."""
        names, selects = check_groups(groups), check_filter(filter)
        return await (await self._hub()).add_connections_to_groups(names, selects)

    async def remove_connections_from_groups(self, groups: Iterable[str], filter: str | Filter | None = None) -> int:
        """Remove every connection the filter selects (all, without one) from every group."""
        names, selects = check_groups(groups), check_filter(filter)
        return await (await self._hub()).remove_connections_from_groups(names, selects)

    async def list_connections_in_group(self, group: str) -> list[dict]:
        """Every member as ``{"connectionId", "userId"?}``, ordered by connection id."""
        items, _ = await self.list_connections_page(group, max_page_size=2**31 - 1)
        return items

    async def list_connections_page(self, group: str, *, max_page_size: int = 200, top: int | None = None,
                                    after: str | None = None) -> tuple[list[dict], str | None]:
        """One page of members, ordered by connection id, starting after ``after``.

        At most ``min(max_page_size, top)`` items. The second value is the cursor for the next
        page (the last id returned), or None when nothing follows or ``top`` is reached.
        """
        check_group(group)
        check_int(max_page_size, "maxpagesize", 1, 2**31 - 1)
        if top is not None:
            check_int(top, "top", 1, 2**31 - 1)
        members = await (await self._hub()).group_members(group)
        start = bisect.bisect_right([cid for cid, _ in members], after) if after is not None else 0
        limit = max_page_size if top is None else min(max_page_size, top)
        page = members[start:start + limit]
        more = start + limit < len(members) and (top is None or top > limit)
        return [_member(cid, user) for cid, user in page], (page[-1][0] if more and page else None)

    # ---- closing -----------------------------------------------------------------

    async def close_connection(self, connection_id: str, reason: str | None = DEFAULT_CLOSE_REASON) -> None:
        check_connection_id(connection_id)
        why = _reason(reason)
        await (await self._hub()).close_connection(connection_id, why)

    async def close_all_connections(self, *, excluded: Iterable[str] = (),
                                    reason: str | None = DEFAULT_CLOSE_REASON) -> None:
        skip, why = check_excluded(excluded), _reason(reason)
        await (await self._hub()).close_all(skip, why)

    async def close_group_connections(self, group: str, *, excluded: Iterable[str] = (),
                                      reason: str | None = DEFAULT_CLOSE_REASON) -> None:
        check_group(group)
        skip, why = check_excluded(excluded), _reason(reason)
        await (await self._hub()).close_group(group, skip, why)

    async def close_user_connections(self, user_id: str, *, excluded: Iterable[str] = (),
                                     reason: str | None = DEFAULT_CLOSE_REASON) -> None:
        check_user(user_id)
        skip, why = check_excluded(excluded), _reason(reason)
        await (await self._hub()).close_user(user_id, skip, why)

    # ---- queries -----------------------------------------------------------------

    async def connection_exists(self, connection_id: str) -> bool:
        check_connection_id(connection_id)
        return await (await self._hub()).connection_exists(connection_id)

    async def group_exists(self, group: str) -> bool:
        check_group(group)
        return await (await self._hub()).group_exists(group)

    async def user_exists(self, user_id: str) -> bool:
        check_user(user_id)
        return await (await self._hub()).user_exists(user_id)

    # ---- permissions (decision rest.permissions) --------------------------------------

    def _permission_args(self, permission: str, connection_id: str, target: str | None) -> None:
        check_permission(permission)
        check_connection_id(connection_id)
        if target is not None:
            check_group(target, "targetName")

    async def grant_permission(self, permission: str, connection_id: str, *, target: str | None = None) -> bool:
        """Allow ``permission`` on ``target`` (a group), or on every group. False if there is
        no such connection."""
        self._permission_args(permission, connection_id, target)
        hub = await self._hub()
        try:
            return await hub.grant_permission(connection_id, permission, target)
        except TooManyPermissions:
            raise _too_many(connection_id) from None

    async def revoke_permission(self, permission: str, connection_id: str, *, target: str | None = None) -> None:
        """Take ``permission`` away on ``target``, or on every group (scoped and pattern roles
        included). Revoking one group that a broader role still allows denies that group."""
        self._permission_args(permission, connection_id, target)
        hub = await self._hub()
        try:
            await hub.revoke_permission(connection_id, permission, target)
        except TooManyPermissions:
            raise _too_many(connection_id) from None

    async def has_permission(self, permission: str, connection_id: str, *, target: str | None = None) -> bool:
        """With a target: may the connection act on that group now. Without: on every group
        (the unscoped role, and no group revoked). False if there is no such connection."""
        self._permission_args(permission, connection_id, target)
        return await (await self._hub()).has_permission(connection_id, permission, target)

    # ---- tokens ------------------------------------------------------------------

    def get_client_access_token(self, *, user_id: str | None = None, roles: Iterable[str] = (),
                                groups: Iterable[str] = (), minutes_to_expire: int = 60,
                                endpoint: str | None = None, client_type: str = "default") -> dict:
        """``{"token", "url", "baseUrl"}`` as the Azure SDKs return. No checkpoint.

        ``client_type``: ``default``, ``mqtt`` or ``socketio`` (case-insensitive).
        """
        if user_id is not None:
            check_user(user_id)
        check_int(minutes_to_expire, "minutesToExpire", 1, 2**31 - 1)
        kind = spec.CLIENT_TYPES.get(client_type.lower()) if isinstance(client_type, str) else None
        if kind is None:
            raise InvalidArgument(_PARAM, "clientType",
                                  f"unknown clientType {_show(client_type)}; expected Default, MQTT or SocketIO")
        role_list = [r for r in roles]
        for role in role_list:
            if not isinstance(role, str) or not role or len(role) > 2048:
                raise InvalidArgument(_PARAM, "role", f"invalid role {_show(role)}")
        group_list = [check_group(g) for g in groups]
        endpoint = endpoint or self._registry.endpoint or "http://127.0.0.1:8080"
        token = auth.mint_client_token(
            key=self._registry.access_keys[0], endpoint=endpoint, hub=self.name, user_id=user_id,
            roles=tuple(role_list), groups=tuple(group_list), ttl_seconds=minutes_to_expire * 60,
            client_type=kind)
        url = auth.client_url(endpoint, self.name, token, client_type=kind)
        return {"token": token, "url": url, "baseUrl": url.split("?", 1)[0]}

    def statistics(self) -> dict | None:
        hub = self._registry.running(self.name)
        return hub.statistics() if hub else None


def _too_many(connection_id: str) -> InvalidArgument:
    return InvalidArgument(_PARAM, "targetName",
                           f"connection {connection_id} already holds {MAX_PERMISSION_ENTRIES} "
                           "permission entries; grant or revoke without targetName instead")
