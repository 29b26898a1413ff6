"""The chat demo's in-process event handler: presence from ``connected``/``disconnected``.

Rooms are groups the browser joins itself (``joinGroup``) and messages go to a room with
``sendToGroup``; the sender's name is the token's user id, which the fabric stamps on every
group message (``fromUserId``), so a page cannot speak for someone else. The handler only
keeps who is online (bounded) and tells everyone when that changes.
"""

from __future__ import annotations

from typing import Any

import msgspec

from fabric.core.events import ConnectionContext, EventHandler
from fabric.core.payload import Payload

MAX_USERS = 10_000
MAX_LISTED = 200


class ChatHandler(EventHandler):
    """``hub`` is the chat hub's embedded API (``HubHandle``)."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.online: dict[str, int] = {}

    async def on_connected(self, context: ConnectionContext) -> None:
        user = context.user_id
        if user is None or (user not in self.online and len(self.online) >= MAX_USERS):
            return
        self.online[user] = self.online.get(user, 0) + 1
        if self.online[user] == 1:
            await self._presence(user, "joined")

    async def on_disconnected(self, context: ConnectionContext, reason: str) -> None:
        user = context.user_id
        count = self.online.get(user or "", 0)
        if count <= 0:
            return
        if count > 1:
            self.online[user] = count - 1
            return
        del self.online[user]
        await self._presence(user, "left")

    async def _presence(self, user: str, event: str) -> None:
        online = sorted(self.online)[:MAX_LISTED]
        body = msgspec.json.encode({"kind": "presence", "event": event, "user": user, "online": online,
                                    "count": len(self.online)})
        await self.hub.send_to_all(Payload.json(body))
