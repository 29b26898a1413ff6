"""The in-memory broker: one process, any number of nodes on a shared ``MemoryBus``.

A single ``fabric serve`` uses one bus with one node. Tests attach several nodes to one
bus to check that routing never assumes every subscriber lives on the publishing node.
Delivery is a direct await of each subscribed node's callback, in subscription order, so
per-publisher order is trivially kept and a slow callback pushes back on the publisher.
"""

from __future__ import annotations

from typing import Any

from fabric.core.broker import OnPublication


class MemoryBus:
    """The topic table shared by the nodes (``MemoryBroker``) attached to it; ``published``
    counts publish calls across all of them."""

    def __init__(self) -> None:
        # topic -> subscribed nodes; a list (not a dict) because most topics have one node
        # and one list per connection topic is the cheaper shape.
        self._subscribers: dict[str, list[MemoryBroker]] = {}
        self.published = 0

    def attach(self, on_publication: OnPublication) -> MemoryBroker:
        """A new node on this bus that hands what it receives to ``on_publication``."""
        return MemoryBroker(self, on_publication)

    def add_subscriber(self, topic: str, node: MemoryBroker) -> None:
        """Append ``node`` to the topic's subscribers (the caller keeps it from subscribing twice)."""
        nodes = self._subscribers.get(topic)
        if nodes is None:
            self._subscribers[topic] = [node]
        else:
            nodes.append(node)

    def remove_subscriber(self, topic: str, node: MemoryBroker) -> None:
        """Remove a subscribed ``node``; the topic goes when its last node does."""
        nodes = self._subscribers.get(topic)
        if nodes is not None:
            nodes.remove(node)
            if not nodes:
                del self._subscribers[topic]

    def subscribers(self, topic: str) -> list[MemoryBroker] | None:
        """The nodes subscribed to ``topic`` in subscription order, or None. The bus's own list
        (no copy on the publish path): copy it before awaiting anything while iterating."""
        return self._subscribers.get(topic)


class MemoryBroker:
    """One node on a ``MemoryBus``: a ``fabric.core.broker.Broker`` for one process."""

    def __init__(self, bus: MemoryBus, on_publication: OnPublication) -> None:
        self._bus = bus
        self._on_publication = on_publication
        self._topics: set[str] = set()
        self.delivered = 0

    async def subscribe(self, topic: str) -> None:
        """Idempotent. Checkpoint: no (memory only)."""
        if topic in self._topics:
            return
        self._topics.add(topic)
        self._bus.add_subscriber(topic, self)

    async def unsubscribe(self, topic: str) -> None:
        if topic not in self._topics:
            return
        self._topics.discard(topic)
        self._bus.remove_subscriber(topic, self)

    async def publish(self, topic: str, message: Any) -> int:
        """Deliver to every subscribed node; how many there were. Checkpoint: only if a
        callback checkpoints."""
        self._bus.published += 1
        nodes = self._bus.subscribers(topic)
        if not nodes:
            return 0
        if len(nodes) == 1:
            node = nodes[0]
            node.delivered += 1
            await node._on_publication(topic, message)
            return 1
        nodes = list(nodes)
        for node in nodes:
            node.delivered += 1
            await node._on_publication(topic, message)
        return len(nodes)

    async def send(self, topic: str, message: Any) -> None:
        """``publish`` without its count (what hubs use for data)."""
        await self.publish(topic, message)

    def subscribed(self, topic: str) -> bool:
        return topic in self._topics

    def alone(self, topic: str) -> bool:
        """True if no other node of the bus subscribes ``topic`` (a hub's own topic: this
        is the only node of the hub, so every operation can stay local). No checkpoint."""
        nodes = self._bus.subscribers(topic)
        return not nodes or (len(nodes) == 1 and nodes[0] is self)

    async def aclose(self) -> None:
        for topic in list(self._topics):
            await self.unsubscribe(topic)

    def statistics(self) -> dict:
        return {"kind": "memory", "topics": len(self._topics), "delivered": self.delivered}
