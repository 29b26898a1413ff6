"""The shared suite every broker must pass: the memory broker and the Redis broker (several
``RedisBus`` instances on one real redis-server, i.e. several fabric nodes).

Delivery to another node may be asynchronous (Redis), so the tests never assume it has
happened when ``publish`` returns: they wait for a last marker message from the same
publisher on the same topic (per-publisher order then says everything before it arrived)
and check exact contents after it. "Nothing arrives" is checked the same way: the node
subscribes again and the marker published after that must be the next thing it sees.
"""

import functools
import itertools
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric.core.broker_memory import MemoryBus
from fabric.core.broker_redis import RedisBus
from tests.waiting import eventually_async

WAIT = 10.0  # seconds for anything expected to arrive


class Node:
    def __init__(self):
        self.received = []

    async def on_publication(self, topic, message):
        self.received.append((topic, message))

    def messages(self, topic="t"):
        return [m for t, m in self.received if t == topic]


async def eventually(predicate, timeout=WAIT):
    await eventually_async(predicate, timeout, interval=0.002)


async def wait_for(nodes, message, topic="t"):
    await eventually(lambda: all((topic, message) in n.received for n in nodes))


@asynccontextmanager
async def memory_factory(request):
    bus = MemoryBus()

    async def attach(node):
        return bus.attach(node.on_publication)

    yield attach


@asynccontextmanager
async def redis_factory(request, publisher="coredis"):
    """Each ``attach`` is a new node: its own ``RedisBus`` (two connections) on one server."""
    server = request.getfixturevalue("redis_server")
    prefix = request.getfixturevalue("channel_prefix")
    codec = request.getfixturevalue("codec")
    buses = []
    async with trio.open_nursery() as nursery:

        async def attach(node):
            bus = RedisBus(server.url, channel_prefix=prefix, node_id=f"node{len(buses)}", publisher=publisher, **codec)
            await nursery.start(bus.run)
            buses.append(bus)
            return bus.attach(node.on_publication)

        try:
            yield attach
        finally:
            for bus in buses:
                await bus.aclose()


FACTORIES = {
    "memory": memory_factory,
    "redis": redis_factory,  # publishes through coredis pipelines (the default)
    "redis-resp": functools.partial(redis_factory, publisher="resp"),  # through our RESP3 writer
}


@pytest.fixture(params=sorted(FACTORIES))
async def attach(request):
    async with FACTORIES[request.param](request) as attach:
        yield attach


async def test_publish_reaches_subscribed_nodes_once_in_order(attach):
    a, b, c = Node(), Node(), Node()
    ba, bb, bc = await attach(a), await attach(b), await attach(c)
    await ba.subscribe("t")
    await bb.subscribe("t")
    await bb.subscribe("t")  # idempotent
    for i in range(50):
        await bc.publish("t", i)
    await bc.publish("t", "end")
    await wait_for([a, b], "end")
    assert a.messages() == list(range(50)) + ["end"]
    assert b.messages() == list(range(50)) + ["end"]
    assert c.received == []


async def test_publisher_receives_its_own_publications_once(attach):
    a, b = Node(), Node()
    ba, bb = await attach(a), await attach(b)
    await ba.subscribe("t")
    await bb.subscribe("t")
    for i in range(20):
        await ba.publish("t", i)
    await ba.publish("t", "end")
    await wait_for([a, b], "end")
    assert a.messages() == list(range(20)) + ["end"]
    assert b.messages() == list(range(20)) + ["end"]


async def test_publish_counts_the_nodes_it_reached_and_send_keeps_order(attach):
    """``publish`` answers how many nodes got the message (requests wait for that many
    answers); ``send`` does not wait for them but keeps the same order."""
    a, b, c = Node(), Node(), Node()
    ba, bb, bc = await attach(a), await attach(b), await attach(c)
    assert await bc.publish("t", "nobody") == 0
    await ba.subscribe("t")
    await bb.subscribe("t")
    assert ba.subscribed("t") and not bc.subscribed("t")
    assert await bc.publish("t", "from outside") == 2
    # publish() returns once Redis has run it, not once every subscriber has read it; and a
    # member's own publication is delivered to it at once. Order across publishers is not
    # promised, so wait for the first before the second.
    await wait_for([a, b], "from outside")
    assert await ba.publish("t", "from a member") == 2
    await bb.unsubscribe("t")
    assert await bc.publish("t", "one left") == 1
    for i in range(30):
        await bc.send("t", i)
    await bc.publish("t", "end")
    await wait_for([a], "end")
    assert a.messages() == ["from outside", "from a member", "one left", *range(30), "end"]


@pytest.mark.parametrize("publisher", ["self", "other"])
async def test_nothing_after_unsubscribe(attach, publisher):
    a = Node()
    ba = await attach(a)
    bp = ba if publisher == "self" else await attach(Node())
    await ba.subscribe("t")
    await bp.publish("t", 1)
    await wait_for([a], 1)
    await ba.unsubscribe("t")
    await bp.publish("t", 2)
    await ba.unsubscribe("t")  # idempotent
    await ba.subscribe("t")  # only to see the end: the next message must be 3, never 2
    await bp.publish("t", 3)
    await wait_for([a], 3)
    assert a.received == [("t", 1), ("t", 3)]


async def test_topics_are_isolated(attach):
    a = Node()
    ba = await attach(a)
    bp = await attach(Node())
    await ba.subscribe("x")
    await bp.publish("y", 1)
    await bp.publish("x", 2)
    await ba.publish("y", 3)
    await ba.publish("x", 4)
    await wait_for([a], 2, "x")
    await wait_for([a], 4, "x")
    assert a.received == [("x", 2), ("x", 4)]


async def test_topics_with_separators_stay_apart(attach):
    """Topic parts may contain ':' and '%' (group names do); distinct topics never mix."""
    a = Node()
    ba = await attach(a)
    bp = await attach(Node())
    topics = ["g\x00hub\x00a:b", "g\x00hub:a\x00b", "g\x00hub\x00a%3Ab", "g\x00hub\x00a\x00b"]
    await ba.subscribe(topics[0])
    for i, topic in enumerate(topics):
        await bp.publish(topic, i)
    await bp.publish(topics[0], "end")
    await wait_for([a], "end", topics[0])
    assert a.received == [(topics[0], 0), (topics[0], "end")]


async def test_per_publisher_order_with_concurrent_publishers(attach):
    a = Node()
    ba = await attach(a)
    await ba.subscribe("t")
    pubs = [await attach(Node()) for _ in range(4)]

    async def run(i, broker):
        for n in range(100):
            await broker.publish("t", (i, n))
            if n % 7 == 0:
                await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        for i, p in enumerate(pubs):
            nursery.start_soon(run, i, p)
    await eventually(lambda: len(a.received) >= 400)
    for i in range(4):
        assert [n for _, (j, n) in a.received if j == i] == list(range(100))
    assert len(a.received) == 400


async def test_concurrent_publishes_from_one_node_each_arrive_once(attach):
    a = Node()
    ba = await attach(a)
    await ba.subscribe("t")
    bp = await attach(Node())

    async def run(i):
        for n in range(50):
            await bp.publish("t", (i, n))

    async with trio.open_nursery() as nursery:
        for i in range(8):
            nursery.start_soon(run, i)
    await eventually(lambda: len(a.received) >= 400)
    for i in range(8):
        assert [n for _, (j, n) in a.received if j == i] == list(range(50))
    assert len(a.received) == 400


async def test_slow_subscriber_pushes_back_on_publisher(attach):
    """A slow subscriber on the publishing node pushes back on the publisher (across
    nodes, the Redis broker's bound is Redis' output buffer: see test_broker_redis.py)."""
    gate = trio.Event()

    class Slow(Node):
        async def on_publication(self, topic, message):
            await gate.wait()
            await super().on_publication(topic, message)

    s = Slow()
    bs = await attach(s)
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


async def test_statistics_name_the_kind(attach):
    a = Node()
    ba = await attach(a)
    await ba.subscribe("t")
    stats = ba.statistics()
    assert stats["kind"] in ("memory", "redis")
    assert stats["topics"] == 1
    await ba.aclose()
    assert ba.statistics()["topics"] == 0


_examples = itertools.count()
_ops = st.lists(
    st.tuples(st.sampled_from(["sub", "unsub", "pub", "pub"]), st.integers(0, 2), st.sampled_from("abc")),
    max_size=40,
)


@pytest.mark.parametrize("kind", sorted(FACTORIES))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_ops)
def test_random_interleavings_keep_order_and_deliver_exactly_once(request, kind, ops):
    """Three nodes run a random sequence of subscribe / unsubscribe / publish (each awaited
    before the next). Every node gets exactly the messages published while it was
    subscribed, and each publisher's messages to a topic in publish order."""
    trio.run(_run_interleaving, request, kind, ops)


async def _run_interleaving(request, kind, ops):
    example = next(_examples)
    topics = {name: f"g\x00h{example}\x00{name}" for name in "abc"}
    nodes = [Node() for _ in range(3)]
    async with FACTORIES[kind](request) as attach:
        brokers = [await attach(node) for node in nodes]
        subscribed = [set() for _ in nodes]
        expected = [[] for _ in nodes]
        for serial, (op, n, name) in enumerate(ops):
            topic = topics[name]
            if op == "sub":
                await brokers[n].subscribe(topic)
                subscribed[n].add(topic)
            elif op == "unsub":
                await brokers[n].unsubscribe(topic)
                subscribed[n].discard(topic)
            else:
                await brokers[n].publish(topic, (n, serial))
                for m in range(3):
                    if topic in subscribed[m]:
                        expected[m].append((topic, (n, serial)))
        # The end: everyone subscribes everywhere, every publisher sends a last marker to
        # every topic; once all markers are in, everything before them is in.
        for broker in brokers:
            for topic in topics.values():
                await broker.subscribe(topic)
        for n, broker in enumerate(brokers):
            for topic in topics.values():
                await broker.publish(topic, ("end", n))
        markers = [(t, ("end", n)) for t in topics.values() for n in range(3)]
        await eventually(lambda: all(m in node.received for node in nodes for m in markers))
    for node, want in zip(nodes, expected):
        got = [item for item in node.received if item[1][0] != "end"]
        assert sorted(got) == sorted(want), "exactly the messages published while subscribed"
        for topic in topics.values():
            for n in range(3):
                serials = [s for t, (p, s) in got if t == topic and p == n]
                assert serials == sorted(serials), "per-publisher order"
