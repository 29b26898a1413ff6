"""The seam between routing and where subscribers live: the broker interface.

Every send (to a group, a user, a connection, or everyone in a hub) and every control
command of the service API is published to a topic through the broker; the broker hands
each message back, through the callback given at construction, to every node subscribed
to that topic (this process included). The in-memory broker is the default and the
reference implementation; the Redis broker implements the same operations and passes the
same shared test suite (``tests/broker/``).

Rules every broker keeps:
- Per publisher and topic, messages arrive in publish order.
- ``publish`` may block (backpressure) but never drops silently; a failure raises
  (``BrokerUnavailable`` when other nodes could not be reached: this node's own
  subscribers got the message all the same).
- ``publish`` returns how many nodes the message reached (this node included), or None if
  the broker cannot tell. A request/response protocol waits for that many replies.
  ``send`` is ``publish`` without that answer: it returns once the message is on its way
  (data needs no count, and waiting for a remote round trip per message would serialize a
  publisher on the broker's latency).
- A node receives a message for a topic once per publish while subscribed, and never
  after ``unsubscribe`` returned.
- Subscriptions are reference counted by the caller, not the broker: subscribe/unsubscribe
  are idempotent per topic.

Topics are hub-scoped, so nothing of one hub ever reaches another hub's callback:
``g`` group, ``u`` user, ``c`` connection, ``h`` the hub, ``n`` one node of the hub (its
reply topic: answers to its requests, and requests addressed to it alone).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Protocol

OnPublication = Callable[[str, Any], Awaitable[None]]


class BrokerUnavailable(Exception):
    """Other nodes could not be reached (the broker's link is down or stalled). The
    message reached this node's own subscribers."""


class Broker(Protocol):
    async def subscribe(self, topic: str) -> None: ...

    async def unsubscribe(self, topic: str) -> None: ...

    async def publish(self, topic: str, message: Any) -> int | None: ...

    async def send(self, topic: str, message: Any) -> None:
        """Deliver locally and hand to the other nodes, without waiting for them (a link
        that cannot take it raises ``BrokerUnavailable`` after local delivery)."""

    def subscribed(self, topic: str) -> bool: ...

    def statistics(self) -> dict: ...


def group_topic(hub: str, group: str) -> str:
    return f"g\x00{hub}\x00{group}"


def user_topic(hub: str, user: str) -> str:
    return f"u\x00{hub}\x00{user}"


def connection_topic(hub: str, connection_id: str) -> str:
    return f"c\x00{hub}\x00{connection_id}"


def hub_topic(hub: str) -> str:
    return f"h\x00{hub}"


def node_topic(hub: str, node: str) -> str:
    return f"n\x00{hub}\x00{node}"
