"""The shared suite every broker must pass (memory now; Redis will join the factories)."""

import pytest
import trio
import trio.testing

from fabric.core.broker_memory import MemoryBus


class Node:
    def __init__(self):
        self.received = []

    async def on_publication(self, topic, message):
        self.received.append((topic, message))


def memory_factory():
    bus = MemoryBus()
    return lambda node: bus.attach(node.on_publication)


FACTORIES = {"memory": memory_factory}


@pytest.fixture(params=sorted(FACTORIES))
def attach(request):
    return FACTORIES[request.param]()


async def test_publish_reaches_subscribed_nodes_once_in_order(attach):
    a, b, c = Node(), Node(), Node()
    ba, bb, bc = attach(a), attach(b), attach(c)
    await ba.subscribe("t")
    await bb.subscribe("t")
    await bb.subscribe("t")  # idempotent
    for i in range(50):
        await bc.publish("t", i)
    assert [m for _, m in a.received] == list(range(50))
    assert [m for _, m in b.received] == list(range(50))
    assert c.received == []


async def test_nothing_after_unsubscribe(attach):
    a = Node()
    ba = attach(a)
    await ba.subscribe("t")
    await ba.publish("t", 1)
    await ba.unsubscribe("t")
    await ba.publish("t", 2)
    await ba.unsubscribe("t")  # idempotent
    assert a.received == [("t", 1)]


async def test_topics_are_isolated(attach):
    a = Node()
    ba = attach(a)
    await ba.subscribe("x")
    await ba.publish("y", 1)
    await ba.publish("x", 2)
    assert a.received == [("x", 2)]


async def test_per_publisher_order_with_concurrent_publishers(attach):
    a = Node()
    ba = attach(a)
    await ba.subscribe("t")
    pubs = [attach(Node()) for _ in range(4)]

    async def run(i, broker):
        for n in range(100):
            await broker.publish("t", (i, n))
            if n % 7 == 0:
                await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        for i, p in enumerate(pubs):
            nursery.start_soon(run, i, p)
    for i in range(4):
        assert [n for _, (j, n) in a.received if j == i] == list(range(100))


async def test_slow_subscriber_pushes_back_on_publisher(attach):
    gate = trio.Event()

    class Slow(Node):
        async def on_publication(self, topic, message):
            await gate.wait()
            await super().on_publication(topic, message)

    s = Slow()
    bs = attach(s)
    await bs.subscribe("t")
    done = trio.Event()

    async def publisher():
        await bs.publish("t", 1)
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()
        gate.set()
    assert s.received == [("t", 1)]
