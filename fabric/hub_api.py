"""The embedded API for one hub: the operations Azure's REST API offers, as methods.

One implementation, two surfaces: the REST layer (``fabric/rest``, a later issue) only
translates HTTP into these calls. Methods are checkpoints (they may start the hub or wait
on the broker) unless they end in ``_nowait`` or are plain queries.

Payloads: ``str`` is sent as text, ``bytes`` as binary, a ``Payload`` as it is, and any
other value is JSON-encoded (``dataType: json``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

import msgspec

from specs import errors as spec_errors

from . import auth
from . import broker as topics
from .messages import DataType, Payload
from .publication import Publication

if TYPE_CHECKING:
    from .app import Fabric
    from .hub import Hub

PERMISSIONS = ("joinLeaveGroup", "sendToGroup")
_BY_APP = spec_errors.CloseSituation.CLOSED_BY_APP_SERVER


def to_payload(data: Any) -> Payload:
    if isinstance(data, Payload):
        return data
    if isinstance(data, str):
        return Payload(DataType.TEXT, data.encode("utf-8"))
    if isinstance(data, (bytes, bytearray, memoryview)):
        return Payload(DataType.BINARY, bytes(data))
    return Payload(DataType.JSON, msgspec.json.encode(data))


class HubHandle:
    def __init__(self, fabric: "Fabric", name: str) -> None:
        self._fabric = fabric
        self.name = name

    async def _hub(self) -> "Hub":
        return await self._fabric.get_hub(self.name)

    # ---- sending -----------------------------------------------------------------

    async def send_to_all(self, data: Any, *, excluded: Iterable[str] = ()) -> None:
        hub = await self._hub()
        await hub.publish_to(topics.hub_topic(self.name),
                             Publication("server", to_payload(data), excluded=frozenset(excluded)))

    async def send_to_group(self, group: str, data: Any, *, excluded: Iterable[str] = ()) -> None:
        hub = await self._hub()
        await hub.publish(Publication("group", to_payload(data), group=group, excluded=frozenset(excluded)))

    async def send_to_user(self, user_id: str, data: Any) -> None:
        hub = await self._hub()
        await hub.publish_to(topics.user_topic(self.name, user_id), Publication("server", to_payload(data)))

    async def send_to_connection(self, connection_id: str, data: Any) -> None:
        hub = await self._hub()
        await hub.publish_to(topics.connection_topic(self.name, connection_id), Publication("server", to_payload(data)))

    # ---- groups ------------------------------------------------------------------

    async def add_connection_to_group(self, group: str, connection_id: str) -> bool:
        hub = await self._hub()
        connection = hub.connections.get(connection_id)
        if connection is None:
            return False
        await hub.join_group(connection, group)
        return True

    async def remove_connection_from_group(self, group: str, connection_id: str) -> None:
        hub = await self._hub()
        connection = hub.connections.get(connection_id)
        if connection is not None:
            await hub.leave_group(connection, group)

    async def remove_connection_from_all_groups(self, connection_id: str) -> None:
        hub = await self._hub()
        connection = hub.connections.get(connection_id)
        if connection is not None:
            for group in list(connection.groups):
                await hub.leave_group(connection, group)

    async def add_user_to_group(self, group: str, user_id: str) -> None:
        hub = await self._hub()
        for connection in list(hub.users.get(user_id, {}).values()):
            await hub.join_group(connection, group)

    async def remove_user_from_group(self, group: str, user_id: str) -> None:
        hub = await self._hub()
        for connection in list(hub.users.get(user_id, {}).values()):
            await hub.leave_group(connection, group)

    async def remove_user_from_all_groups(self, user_id: str) -> None:
        hub = await self._hub()
        for connection in list(hub.users.get(user_id, {}).values()):
            for group in list(connection.groups):
                await hub.leave_group(connection, group)

    async def list_connections_in_group(self, group: str) -> list[dict]:
        hub = await self._hub()
        local = hub.groups.get(group)
        if local is None:
            return []
        return [{"connectionId": c.connection_id, **({"userId": c.user_id} if c.user_id else {})}
                for c in local.members.values()]

    # ---- closing -----------------------------------------------------------------

    async def close_connection(self, connection_id: str, reason: str = "ClosedByAppServer") -> None:
        hub = await self._hub()
        connection = hub.connections.get(connection_id)
        if connection is not None:
            connection.close_for(_BY_APP, reason)

    async def close_all_connections(self, *, excluded: Iterable[str] = (), reason: str = "ClosedByAppServer") -> None:
        hub = await self._hub()
        skip = set(excluded)
        for connection in list(hub.connections.values()):
            if connection.connection_id not in skip:
                connection.close_for(_BY_APP, reason)

    async def close_group_connections(self, group: str, *, excluded: Iterable[str] = (),
                                      reason: str = "ClosedByAppServer") -> None:
        hub = await self._hub()
        local = hub.groups.get(group)
        skip = set(excluded)
        for connection in list(local.members.values()) if local else ():
            if connection.connection_id not in skip:
                connection.close_for(_BY_APP, reason)

    async def close_user_connections(self, user_id: str, *, excluded: Iterable[str] = (),
                                     reason: str = "ClosedByAppServer") -> None:
        hub = await self._hub()
        skip = set(excluded)
        for connection in list(hub.users.get(user_id, {}).values()):
            if connection.connection_id not in skip:
                connection.close_for(_BY_APP, reason)

    # ---- queries -----------------------------------------------------------------

    async def connection_exists(self, connection_id: str) -> bool:
        return connection_id in (await self._hub()).connections

    async def group_exists(self, group: str) -> bool:
        local = (await self._hub()).groups.get(group)
        return bool(local and local.members)

    async def user_exists(self, user_id: str) -> bool:
        return bool((await self._hub()).users.get(user_id))

    # ---- permissions -------------------------------------------------------------

    @staticmethod
    def _role(permission: str, target: str | None) -> str:
        if permission not in PERMISSIONS:
            raise ValueError(f"unknown permission {permission!r}; expected one of {', '.join(PERMISSIONS)}")
        return f"webpubsub.{permission}" + (f".{target}" if target else "")

    async def grant_permission(self, permission: str, connection_id: str, *, target: str | None = None) -> bool:
        role = self._role(permission, target)
        connection = (await self._hub()).connections.get(connection_id)
        if connection is None:
            return False
        connection.roles.add(role)
        return True

    async def revoke_permission(self, permission: str, connection_id: str, *, target: str | None = None) -> None:
        role = self._role(permission, target)
        connection = (await self._hub()).connections.get(connection_id)
        if connection is not None:
            connection.roles.discard(role)
            if target is None:
                prefix = role + "."
                for r in [r for r in connection.roles if r.startswith(prefix)]:
                    connection.roles.discard(r)

    async def has_permission(self, permission: str, connection_id: str, *, target: str | None = None) -> bool:
        self._role(permission, target)
        connection = (await self._hub()).connections.get(connection_id)
        if connection is None:
            return False
        if target is None:
            return f"webpubsub.{permission}" in connection.roles
        return auth.role_grants(connection.roles, permission, target)

    # ---- tokens ------------------------------------------------------------------

    def get_client_access_token(self, *, user_id: str | None = None, roles: Iterable[str] = (),
                                groups: Iterable[str] = (), minutes_to_expire: int = 60,
                                endpoint: str | None = None) -> dict:
        """``{"token", "url"}`` as the Azure SDKs return. No checkpoint."""
        endpoint = endpoint or self._fabric.endpoint or "http://127.0.0.1:8080"
        token = auth.mint_client_token(
            key=self._fabric.access_keys[0], endpoint=endpoint, hub=self.name, user_id=user_id,
            roles=tuple(roles), groups=tuple(groups), ttl_seconds=minutes_to_expire * 60)
        return {"token": token, "url": auth.client_url(endpoint, self.name, token)}

    def statistics(self) -> dict | None:
        hub = self._fabric.running_hubs().get(self.name)
        return hub.statistics() if hub else None
