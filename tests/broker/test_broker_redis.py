"""The Redis broker beyond the shared contract: channel names, URLs, the RESP3 parser, and
faults against real redis-server processes (restart, stall, outage, bad credentials, an
old server, foreign messages, oversize messages, bounds)."""

import functools

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from redis_server import free_port

from fabric.core.broker_redis import (
    MAGIC,
    RedisAuthError,
    RedisBus,
    RedisProtocolError,
    RedisUnavailable,
    RedisURLError,
    channel_name,
    open_redis_bus,
)
from fabric.core.redis_resp import (
    NEED_MORE,
    Push,
    RedisURL,
    RespError,
    RespParser,
    encode_command,
)
from tests.waiting import eventually_async

WAIT = 10.0
#: Timeouts that make fault tests quick; the defaults are for production.
FAST = {"command_timeout": 1.0, "health_interval": 0.2, "backoff_initial": 0.02, "backoff_max": 0.3, "connect_timeout": 1.0}


class Node:
    def __init__(self):
        self.received = []

    async def on_publication(self, topic, message):
        self.received.append((topic, message))

    def messages(self, topic="t"):
        return [m for t, m in self.received if t == topic]


async def eventually(predicate, timeout=WAIT):
    await eventually_async(predicate, timeout)


@pytest.fixture(params=["coredis", "resp"])
def publisher(request):
    """The publisher implementation, for tests of publishing faults (both must pass)."""
    return request.param


@pytest.fixture
async def nodes(codec, channel_prefix):
    """``await nodes(url, **options) -> RedisBus``: running buses, closed at the end."""
    buses = []
    async with trio.open_nursery() as nursery:

        async def start(url, **options):
            bus = RedisBus(url, channel_prefix=channel_prefix, node_id=f"n{len(buses)}", **{**codec, **options})
            await nursery.start(bus.run)
            buses.append(bus)
            return bus

        try:
            yield start
        finally:
            for bus in buses:
                await bus.aclose()


# ---- channel names, URLs, RESP3 (no server) ------------------------------------------------


def test_channel_scheme():
    p = b"fabric:0:"
    assert channel_name(p, "g\x00chat\x00room 1") == b"fabric:0:g:chat:room 1"
    assert channel_name(p, "h\x00chat") == b"fabric:0:h:chat"
    assert channel_name(p, "u\x00chat\x00alice:admin") == b"fabric:0:u:chat:alice%3Aadmin"
    assert channel_name(p, "g\x00chat\x0050%") == b"fabric:0:g:chat:50%25"
    assert channel_name(p, "c\x00chat\x00\u00e9t\u00e9") == "fabric:0:c:chat:\u00e9t\u00e9".encode()


@settings(max_examples=300)
@given(st.lists(st.text(alphabet=st.sampled_from("ab:%\x003A25"), max_size=6), min_size=1, max_size=4),
       st.lists(st.text(alphabet=st.sampled_from("ab:%\x003A25"), max_size=6), min_size=1, max_size=4))
def test_channel_scheme_is_injective(a, b):
    ta, tb = "\x00".join(a), "\x00".join(b)
    if ta != tb:
        assert channel_name(b"p:", ta) != channel_name(b"p:", tb)


def test_db_is_part_of_the_channel_name(codec):
    assert RedisBus("redis://h/3", **codec).channel("h\x00x") == b"fabric:3:h:x"
    assert RedisBus("redis://h", channel_prefix="app:", **codec).channel("h\x00x") == b"app:0:h:x"


@pytest.mark.parametrize("url, expected", [
    ("redis://localhost", ("redis", "localhost", 6379, 0, None, None)),
    ("redis://:p%40ss@10.0.0.1:7000/2", ("redis", "10.0.0.1", 7000, 2, None, "p@ss")),
    ("rediss://user:pw@host/1", ("rediss", "host", 6379, 1, "user", "pw")),
    ("redis://[::1]:6380?db=4", ("redis", "::1", 6380, 4, None, None)),
    ("unix:///run/redis.sock?db=5", ("unix", None, None, 5, None, None)),
])
def test_url_parsing(url, expected):
    u = RedisURL(url)
    assert (u.scheme, u.host, u.port, u.db, u.username, u.password) == expected


@pytest.mark.parametrize("url", [
    "", "http://host", "redis://", "redis://host/abc", "redis://host:99999", "redis://host/1?db=2",
    "redis://host?timeout=3", "unix://", "redis://host/-1",
])
def test_bad_urls_are_clear_errors(url, codec):
    with pytest.raises(RedisURLError) as info:
        RedisBus(url, **codec)
    assert "Redis URL" in str(info.value)


def test_passwords_never_show():
    u = RedisURL("redis://bob:hunter2@host:1/0")
    assert "hunter2" not in u.redacted and "hunter2" not in repr(u)
    assert u.redacted == "redis://bob:***@host:1/0"
    with pytest.raises(RedisURLError) as info:
        RedisURL("redis://bob:hunter2@host/x")
    assert "hunter2" not in str(info.value)
    with pytest.raises(RedisURLError) as info:
        RedisURL("ftp://bob:hunter2@host/x")
    assert "hunter2" not in str(info.value)


@settings(max_examples=200)
@given(st.data())
def test_parser_handles_any_split(data):
    stream = (
        b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n"
        b"+PONG\r\n-ERR nope\r\n:42\r\n_\r\n#t\r\n,1.5\r\n(123\r\n"
        b"%2\r\n$1\r\na\r\n*2\r\n:1\r\n:2\r\n$1\r\nb\r\n~1\r\n+x\r\n"
        b"=8\r\ntxt:some\r\n!3\r\nbad\r\n|1\r\n+k\r\n+v\r\n+after\r\n"
        b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n$-1\r\n"
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    parser = RespParser()
    out = []
    last = 0
    for cut in cuts + [len(stream)]:
        parser.feed(stream[last:cut])
        last = cut
        while (item := parser.parse()) is not NEED_MORE:
            out.append(item)
    assert out == [
        [b"message", b"ch", b"hello"], b"PONG", "ERR nope", 42, None, True, 1.5, 123,
        {b"a": [1, 2], b"b": [b"x"]}, b"some", "bad", b"after", [b"subscribe", b"ch", 1], None,
    ]
    assert type(out[0]) is Push and isinstance(out[2], RespError) and isinstance(out[10], RespError)


def test_parser_bounds_what_it_holds():
    parser = RespParser(max_bytes=100)
    with pytest.raises(RedisProtocolError):
        parser.feed(b"$1000\r\n" + b"x" * 200)


def test_encode_command():
    assert encode_command("PUBLISH", b"ch", 7) == b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$1\r\n7\r\n"


# ---- start-up errors -------------------------------------------------------------------------


async def test_unreachable_redis_is_a_clear_error(codec):
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisUnavailable) as info:
        async with open_redis_bus(url, connect_timeout=2, **codec):
            pass  # pragma: no cover
    text = str(info.value)
    assert "127.0.0.1" in text and ":***@" in text and "hunter2" not in text


async def test_wrong_or_missing_password_is_a_clear_error(redis_server_factory, codec, channel_prefix):
    server = redis_server_factory(password="s3cret")
    for url, words in [
        (f"redis://:wrong@127.0.0.1:{server.port}/0", "refused the credentials"),
        (f"redis://bob:wrong@127.0.0.1:{server.port}/0", "refused the credentials"),
        (f"redis://127.0.0.1:{server.port}/0", "requires a password"),
    ]:
        with pytest.raises(RedisAuthError) as info:
            async with open_redis_bus(url, **codec):
                pass  # pragma: no cover
        assert words in str(info.value)
        assert "wrong" not in str(info.value) and "s3cret" not in str(info.value)
    # The right password works end to end.
    a, b = Node(), Node()
    async with open_redis_bus(server.url, channel_prefix=channel_prefix, **codec) as bus_a, \
            open_redis_bus(server.url, channel_prefix=channel_prefix, **codec) as bus_b:
        ba, bb = bus_a.attach(a.on_publication), bus_b.attach(b.on_publication)
        await ba.subscribe("t")
        await bb.publish("t", "hello")
        await eventually(lambda: a.received == [("t", "hello")])
        assert "s3cret" not in repr(ba.statistics())


async def _fake_server(answer: bytes, *, task_status=trio.TASK_STATUS_IGNORED):
    async def handler(stream):
        await stream.receive_some(4096)
        await stream.send_all(answer)
        await trio.sleep(1)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handler, listeners)


@pytest.mark.parametrize("answer, words", [
    # What Redis 5 answers to HELLO (it has no RESP3).
    (b"-ERR unknown command `HELLO`, with args beginning with: `3`, \r\n", "does not speak RESP3"),
    # A server that knows HELLO but not protocol 3.
    (b"-NOPROTO unsupported protocol version\r\n", "does not speak RESP3"),
    # Not Redis at all.
    (b"HTTP/1.1 400 Bad Request\r\n\r\n", "RESP3"),
    # RESP2 map-less answer.
    (b"*2\r\n$6\r\nserver\r\n$5\r\nredis\r\n", "without switching to RESP3"),
])
async def test_a_server_without_resp3_is_a_clear_error(answer, words, codec):
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_fake_server, answer)
        with pytest.raises(RedisProtocolError) as info:
            async with open_redis_bus(f"redis://127.0.0.1:{port}", connect_timeout=2, **codec):
                pass  # pragma: no cover
        assert words in str(info.value)
        nursery.cancel_scope.cancel()


async def test_a_unix_socket_url_works(redis_server_factory, nodes):
    server = redis_server_factory(unix_socket=True)
    a = Node()
    ba = (await nodes(server.unix_url)).attach(a.on_publication)
    bp = (await nodes(server.url)).attach(Node().on_publication)  # TCP and unix: one fabric
    await ba.subscribe("t")
    await bp.publish("t", "over tcp")
    await ba.publish("t", "over unix")
    await eventually(lambda: a.messages() == ["over tcp", "over unix"])


# ---- messages on our channels that are not ours --------------------------------------------


async def test_foreign_and_malformed_messages_are_counted_drops(redis_server, nodes):
    a = Node()
    bus_a = await nodes(redis_server.url)
    bus_p = await nodes(redis_server.url)
    ba, bp = bus_a.attach(a.on_publication), bus_p.attach(Node().on_publication)
    await ba.subscribe("t")
    channel = bus_a.channel("t")
    for data in [b"hello from another app", b"", MAGIC + b"12345678" + b"\xc1", MAGIC + b"123", MAGIC]:
        assert await trio.to_thread.run_sync(redis_server.command, "PUBLISH", channel, data) == 1
    await bp.publish("t", "real")
    await eventually(lambda: a.received == [("t", "real")])
    stats = ba.statistics()
    assert stats["drops"] == {"foreign": 2, "malformed": 3}
    assert stats["dropped"] == 5 and stats["state"] == "connected" and stats["reconnects"] == 0


async def test_a_failing_callback_is_counted_and_delivery_goes_on(redis_server, nodes):
    class Failing(Node):
        async def on_publication(self, topic, message):
            if message == "boom":
                raise RuntimeError("hub bug")
            await super().on_publication(topic, message)

    a = Failing()
    ba = (await nodes(redis_server.url)).attach(a.on_publication)
    bp = (await nodes(redis_server.url)).attach(Node().on_publication)
    await ba.subscribe("t")
    await bp.publish("t", "boom")
    await bp.publish("t", "after")
    await eventually(lambda: a.received == [("t", "after")])
    assert ba.statistics()["drops"] == {"callback_failed": 1}


async def test_an_oversized_message_drops_the_connection_not_the_node(redis_server, nodes):
    a = Node()
    bus_a = await nodes(redis_server.url, max_message_bytes=64 * 1024, **FAST)
    ba = bus_a.attach(a.on_publication)
    bp = (await nodes(redis_server.url, **FAST)).attach(Node().on_publication)
    await ba.subscribe("t")
    await bp.publish("t", "x" * 200_000)
    await eventually(lambda: bus_a.reconnects >= 1 and bus_a.state == "connected")
    await bp.publish("t", "small")
    await eventually(lambda: a.received == [("t", "small")])
    with pytest.raises(ValueError):
        await ba.publish("t", "y" * 100_000)  # over this node's own bound: refused, not sent


async def test_large_messages_cross_intact(redis_server, nodes):
    a = Node()
    ba = (await nodes(redis_server.url)).attach(a.on_publication)
    bp = (await nodes(redis_server.url)).attach(Node().on_publication)
    await ba.subscribe("t")
    big = "".join(chr(0x41 + i % 26) for i in range(1_000_000))
    await bp.publish("t", big)
    await bp.publish("t", "end")
    await eventually(lambda: ("t", "end") in a.received)
    assert a.messages() == [big, "end"]


# ---- faults mid-run ------------------------------------------------------------------------


async def test_redis_restart_mid_stream_bounded_loss_then_normal_service(redis_server_factory, nodes, publisher):
    """The bound: a node misses only what was published between the moment its subscriber
    connection dropped and the moment its resubscription was confirmed (``gap_seconds``);
    every publish that did not reach Redis raised."""
    server = redis_server_factory()
    s = Node()
    bus_s = await nodes(server.url, publisher=publisher, **FAST)
    bus_p = await nodes(server.url, publisher=publisher, **FAST)
    bs, bp = bus_s.attach(s.on_publication), bus_p.attach(Node().on_publication)
    await bs.subscribe("t")
    ok, failed = [], []
    counter = {"n": 0}
    marks = {}

    async def publisher(task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        while True:
            n = counter["n"]
            counter["n"] += 1
            try:
                await bp.publish("t", n)
                ok.append(n)
            except RedisUnavailable:
                failed.append(n)
            await trio.sleep(0.001)

    async def subscriber_back():
        while not (bus_s.statistics()["gap_seconds"] > 0 and bus_s.state == "connected"):
            await trio.sleep(0.0005)
        marks["back"] = counter["n"]

    async with trio.open_nursery() as nursery:
        await nursery.start(publisher)
        await eventually(lambda: len(s.received) >= 200)
        marks["kill"] = counter["n"]
        nursery.start_soon(subscriber_back)
        await trio.to_thread.run_sync(functools.partial(server.restart, down_for=0.3))
        await eventually(lambda: "back" in marks and bus_p.state == "connected")
        await eventually(lambda: s.received[-1][1] > marks["back"] + 300)
        nursery.cancel_scope.cancel()

    got = s.messages()
    assert got == sorted(set(got)), "order kept, nothing twice"
    assert failed, "publishes during the outage raised"
    lost = sorted(set(ok) - set(got))
    assert all(marks["kill"] - 1 <= n <= marks["back"] for n in lost), (lost, marks)
    assert {n for n in ok if n > marks["back"]} <= set(got)
    stats_s, stats_p = bs.statistics(), bp.statistics()
    assert stats_s["reconnects"] >= 1 and stats_s["gaps"] >= 1 and stats_s["gap_seconds"] > 0
    assert stats_p["failed"] == len(failed)
    assert stats_s["state"] == stats_p["state"] == "connected"


async def test_a_stalled_redis_is_detected_and_service_resumes(redis_server_factory, nodes, publisher):
    server = redis_server_factory()
    a = Node()
    bus_a = await nodes(server.url, publisher=publisher, **FAST)
    bus_p = await nodes(server.url, publisher=publisher, **FAST)
    ba, bp = bus_a.attach(a.on_publication), bus_p.attach(Node().on_publication)
    await ba.subscribe("t")
    await bp.publish("t", "before")
    await eventually(lambda: a.received == [("t", "before")])
    server.pause()
    try:
        with trio.fail_after(5):
            with pytest.raises(RedisUnavailable):
                await bp.publish("t", "during")  # not answered within command_timeout
        await eventually(lambda: bus_a.state == "reconnecting")
    finally:
        server.resume()
    await eventually(lambda: bus_a.state == "connected" and bus_p.state == "connected")
    await bp.publish("t", "after")
    await eventually(lambda: ("t", "after") in a.received)
    assert bus_a.reconnects >= 1


async def test_during_an_outage_local_delivery_goes_on_and_publish_raises(redis_server_factory, nodes, publisher):
    server = redis_server_factory()
    local, remote = Node(), Node()
    bus_l = await nodes(server.url, publisher=publisher, **FAST)
    bus_r = await nodes(server.url, publisher=publisher, **FAST)
    bl, br = bus_l.attach(local.on_publication), bus_r.attach(remote.on_publication)
    await bl.subscribe("t")
    await br.subscribe("t")
    server.kill()
    await eventually(lambda: bus_l.state == "reconnecting")
    with pytest.raises(RedisUnavailable) as info:
        await bl.publish("t", "during")
    assert "this node's subscribers" in str(info.value)
    assert local.messages() == ["during"]
    await bl.subscribe("later")  # recorded now, subscribed in Redis on reconnect
    await trio.to_thread.run_sync(server.start)
    await eventually(lambda: bus_l.state == "connected" and bus_r.state == "connected")
    await br.publish("t", "after")
    await br.publish("later", "x")
    await eventually(lambda: ("later", "x") in local.received and ("t", "after") in local.received)
    assert remote.messages() == ["after"]
    assert bl.statistics()["subscribed"] == 2


async def test_every_topic_is_resubscribed_after_a_restart(redis_server_factory, nodes):
    server = redis_server_factory()
    a = Node()
    bus_a = await nodes(server.url, **FAST)
    bus_p = await nodes(server.url, **FAST)
    ba, bp = bus_a.attach(a.on_publication), bus_p.attach(Node().on_publication)
    topics = [f"c\x00hub\x00conn{i}" for i in range(2500)]
    async with trio.open_nursery() as nursery:
        for topic in topics:
            nursery.start_soon(ba.subscribe, topic)
    assert ba.statistics()["subscribed"] == 2500
    await trio.to_thread.run_sync(server.restart)
    await eventually(lambda: bus_a.state == "connected" and bus_a.statistics()["subscribed"] == 2500
                     and bus_p.state == "connected")
    sample = topics[::97]
    for topic in sample:
        await bp.publish(topic, topic)
    await eventually(lambda: len(a.received) == len(sample))
    assert a.received == [(t, t) for t in sample]


async def test_a_slow_remote_subscriber_does_not_block_the_publisher(redis_server, nodes):
    gate = trio.Event()

    class Slow(Node):
        async def on_publication(self, topic, message):
            await gate.wait()
            await super().on_publication(topic, message)

    s = Slow()
    bs = (await nodes(redis_server.url)).attach(s.on_publication)
    bp = (await nodes(redis_server.url)).attach(Node().on_publication)
    await bs.subscribe("t")
    with trio.fail_after(5):
        for i in range(300):
            await bp.publish("t", i)  # Redis confirmed each; nothing waits for the slow node
    gate.set()
    await eventually(lambda: len(s.received) == 300)
    assert s.messages() == list(range(300))


async def test_what_redis_published_before_an_unsubscribe_is_still_delivered(redis_server, nodes):
    """The race of the contract test, made certain: the reader is held in a callback while
    another node publishes 2 and this one unsubscribes; 2 was published while subscribed
    (Redis executed it first), so it arrives, and nothing after the unsubscribe does."""
    gate, holding = trio.Event(), trio.Event()

    class Held(Node):
        async def on_publication(self, topic, message):
            if message == 1:
                holding.set()
                await gate.wait()
            await super().on_publication(topic, message)

    held = Held()
    bus = await nodes(redis_server.url)
    bs = bus.attach(held.on_publication)
    bp = (await nodes(redis_server.url)).attach(Node().on_publication)
    await bs.subscribe("t")
    await bp.publish("t", 1)
    await holding.wait()
    assert await bp.publish("t", 2) == 1  # Redis delivered it to the held node's connection
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bs.unsubscribe, "t")
        await trio.testing.wait_all_tasks_blocked()
        assert not bs.subscribed("t") and not bus.subscribed("t")
        await bs.publish("t", "local, after the call")  # stops at once
        gate.set()
    assert held.messages() == [1, 2]
    assert await bp.publish("t", 3) == 0
    await bs.subscribe("u")
    await bp.publish("u", "marker")
    await eventually(lambda: held.messages("u") == ["marker"])
    assert held.messages() == [1, 2]
    assert bus.statistics()["channels"] == 1


async def test_subscribing_again_while_leaving(redis_server, nodes):
    """An unsubscribe still waiting for Redis, then a subscribe of the same topic: the
    broker stays a receiver, gets each message once, and the Redis subscription holds."""
    gate, holding = trio.Event(), trio.Event()

    class Held(Node):
        async def on_publication(self, topic, message):
            if message == 1:
                holding.set()
                await gate.wait()
            await super().on_publication(topic, message)

    held = Held()
    bus = await nodes(redis_server.url)
    bs = bus.attach(held.on_publication)
    bp = (await nodes(redis_server.url)).attach(Node().on_publication)
    await bs.subscribe("t")
    await bp.publish("t", 1)
    await holding.wait()
    await bp.publish("t", 2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(bs.unsubscribe, "t")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(bs.unsubscribe, "t")  # a second call waits for the first
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(bs.subscribe, "t")
        await trio.testing.wait_all_tasks_blocked()
        assert bs.subscribed("t")
        gate.set()
    assert bs.subscribed("t") and bus.statistics()["subscribed"] == 1
    await bp.publish("t", 3)
    await eventually(lambda: held.messages() == [1, 2, 3])
    await bs.publish("t", 4)
    assert held.messages() == [1, 2, 3, 4]


async def test_two_hubs_on_one_node(redis_server, nodes):
    h1, h2, other = Node(), Node(), Node()
    bus = await nodes(redis_server.url)
    b1, b2 = bus.attach(h1.on_publication), bus.attach(h2.on_publication)
    bo = (await nodes(redis_server.url)).attach(other.on_publication)
    await b1.subscribe("t")
    await b2.subscribe("t")
    await bo.publish("t", 1)
    # 1 comes through Redis, 2 locally at once: wait for 1 (no order between two publishers)
    await eventually(lambda: h1.messages() == [1] and h2.messages() == [1])
    await b1.publish("t", 2)
    await eventually(lambda: h1.messages() == [1, 2] and h2.messages() == [1, 2])
    await b1.unsubscribe("t")
    assert bus.statistics()["subscribed"] == 1  # h2 still wants it
    await bo.publish("t", 3)
    await eventually(lambda: h2.messages() == [1, 2, 3])
    await b2.publish("t", 4)
    await eventually(lambda: h2.messages() == [1, 2, 3, 4])
    await b1.subscribe("t")
    await bo.publish("t", 5)
    await eventually(lambda: h1.messages() == [1, 2, 5] and h2.messages() == [1, 2, 3, 4, 5])
    await b1.aclose()
    await b2.aclose()
    assert bus.statistics()["subscribed"] == 0


async def test_pending_publishes_are_bounded(redis_server, nodes, publisher):
    a = Node()
    ba = (await nodes(redis_server.url)).attach(a.on_publication)
    bus_p = await nodes(redis_server.url, max_pending=8, max_batch=4, publisher=publisher)
    bp = bus_p.attach(Node().on_publication)
    await ba.subscribe("t")
    peak = 0

    async def run(i):
        nonlocal peak
        for n in range(25):
            await bp.publish("t", (i, n))
            peak = max(peak, bus_p.statistics()["pending"])

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(run, i)
    await eventually(lambda: len(a.received) == 500)
    assert 0 < peak <= 8
    for i in range(20):
        assert [n for _, (j, n) in a.received if j == i] == list(range(25))
    assert bus_p.statistics()["batches"] >= 500 / 4


async def test_close_fails_what_is_pending_and_refuses_more(redis_server, codec, channel_prefix):
    async with open_redis_bus(redis_server.url, channel_prefix=channel_prefix, **codec) as bus:
        broker = bus.attach(Node().on_publication)
        await broker.subscribe("t")
        assert broker.statistics()["state"] == "connected"
    assert bus.state == "closed"
    with pytest.raises(trio.ClosedResourceError):
        await broker.publish("t", 1)
    with pytest.raises(trio.ClosedResourceError):
        await broker.subscribe("u")
    await broker.unsubscribe("t")  # still fine: idempotent cleanup
