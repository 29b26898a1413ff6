"""The seam between routing and where subscribers live: the broker interface.

Every send (to a group, a user, a connection, or everyone in a hub) is published to a
topic through the broker; the broker hands each publication back, through the callback
given at construction, to every node subscribed to that topic (this process included).
The in-memory broker is the default and the reference implementation; a Redis broker
(later) implements the same four operations and must pass the same shared test suite
(``tests/broker/``).

Rules every broker keeps:
- Per publisher and topic, publications arrive in publish order.
- ``publish`` may block (backpressure) but never drops silently; a failure raises.
- A node receives a publication for a topic once per publish while subscribed, and never
  after ``unsubscribe`` returned.
- Subscriptions are reference counted by the caller, not the broker: subscribe/unsubscribe
  are idempotent per topic.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Protocol

OnPublication = Callable[[str, Any], Awaitable[None]]


class Broker(Protocol):
    async def subscribe(self, topic: str) -> None: ...

    async def unsubscribe(self, topic: str) -> None: ...

    async def publish(self, topic: str, message: Any) -> None: ...

    def statistics(self) -> dict: ...


def group_topic(hub: str, group: str) -> str:
    return f"g\x00{hub}\x00{group}"


def user_topic(hub: str, user: str) -> str:
    return f"u\x00{hub}\x00{user}"


def connection_topic(hub: str, connection_id: str) -> str:
    return f"c\x00{hub}\x00{connection_id}"


def hub_topic(hub: str) -> str:
    return f"h\x00{hub}"
