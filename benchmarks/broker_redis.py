"""Benchmark: the memory broker against the Redis broker, publish -> receive, in one run.

Run:  .venv/bin/python benchmarks/broker_redis.py [--messages 20000] [--redis-url URL] [--reps 3]

Without ``--redis-url`` it starts its own ``redis-server`` (no persistence) on a free port
of 127.0.0.1 and stops that PID at the end. Brokers: ``memory``; ``redis`` (publishing
through coredis pipelines, the default); ``redis-resp`` (``publisher="resp"``: our own
RESP3 writer); the subscriber side is the same for both. Messages are real ``Publication``s (a 100-byte
text payload to a group) in their wire form (``Publication.to_wire`` / ``from_wire``), as a
hub will publish them.

Scenarios (one topic; two subscriber nodes, a third node publishes unless said otherwise):
- ``seq``: one publisher task awaiting each publish (a single busy client or REST caller);
- ``conc16``: 16 publisher tasks at once (many clients of one node): Redis batches them;
- ``paced``: 2,500 msg/s from 16 tasks = 5,000 deliveries/s (latency below saturation);
- ``local+remote``: the publishing node is one of the two subscribers; its copy is
  delivered directly (the short-circuit), the other node's through Redis. Latencies are
  shown per path: the remote one is also what local delivery through Redis would cost.

Columns: messages/s = messages published / (first publish -> last delivery); deliveries/s
= both nodes' deliveries over the same time; latency = publish call -> callback, per
delivery, p50 and p99. Each figure is the median of ``--reps`` rounds. 2 cores are shared
by the publisher, both subscribers and redis-server, so compare rows, not absolutes.
This prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio.lowlevel

from fabric.core.broker_memory import MemoryBus
from fabric.core.broker_redis import RedisBus
from fabric.core.payload import DataType, Payload
from fabric.core.publication import Publication

TOPIC = "g\x00bench\x00room"


@contextmanager
def own_redis_server():
    """A redis-server on a free port, stopped by its PID (SIGTERM, bounded wait, SIGKILL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", workdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)


class Sink:
    """A subscriber node's callback: records publish->receive latency per message."""

    def __init__(self, sent: list[float], expected: int) -> None:
        self.sent = sent
        self.latencies: list[float] = []
        self.expected = expected
        self.done = trio.Event()
        self.last = 0.0

    async def on_publication(self, topic, publication) -> None:
        now = time.perf_counter()
        index = int(publication.payload.body[:8])
        self.latencies.append(now - self.sent[index])
        if len(self.latencies) >= self.expected:
            self.last = now
            self.done.set()


async def ignore(topic, publication) -> None:
    """The publishing node's callback in scenarios where it subscribes to nothing."""


def make_publications(n: int) -> list[Publication]:
    pad = b"x" * 92
    return [Publication("group", Payload(DataType.TEXT, b"%08d" % i + pad), group="room") for i in range(n)]


async def run_round(kind: str, scenario: str, n: int, url: str | None, rep: int) -> dict:
    publications = make_publications(n)
    sent = [0.0] * n
    sinks = [Sink(sent, n), Sink(sent, n)]
    async with trio.open_nursery() as nursery:
        buses = []
        if kind == "memory":
            bus = MemoryBus()
            attach = [bus.attach] * 3
        else:
            for i in range(3):
                b = RedisBus(url, encode=Publication.to_wire, decode=Publication.from_wire,
                             channel_prefix=f"bench{rep}{scenario}:", node_id=f"bench{i}",
                             publisher="resp" if kind == "redis-resp" else "coredis")
                await nursery.start(b.run)
                buses.append(b)
            attach = [b.attach for b in buses]
        local = scenario == "local+remote"
        # local+remote: node 0 publishes and subscribes; otherwise node 2 only publishes.
        brokers = [attach[0](sinks[0].on_publication), attach[1](sinks[1].on_publication)]
        publisher = brokers[0] if local else attach[2](ignore)
        for broker in brokers:
            await broker.subscribe(TOPIC)
        tasks = 1 if scenario == "seq" else 16
        rate = 2500.0 if scenario == "paced" else None
        start = time.perf_counter()

        async def publish_share(k: int) -> None:
            for i in range(k, n, tasks):
                if rate is not None:
                    delay = start + i / rate - time.perf_counter()
                    if delay > 0:
                        await trio.sleep(delay)
                sent[i] = time.perf_counter()
                await publisher.publish(TOPIC, publications[i])

        async with trio.open_nursery() as publishers:
            for k in range(tasks):
                publishers.start_soon(publish_share, k)
        with trio.fail_after(120):
            for sink in sinks:
                await sink.done.wait()
        elapsed = max(s.last for s in sinks) - start
        for b in buses:
            await b.aclose()
        nursery.cancel_scope.cancel()
    lat = {name: sorted(s.latencies) for name, s in zip(("a", "b"), sinks)}
    both = sorted(lat["a"] + lat["b"])
    return {
        "msg_s": n / elapsed,
        "deliveries_s": 2 * n / elapsed,
        "p50": pct(both, 50), "p99": pct(both, 99),
        "local_p50": pct(lat["a"], 50), "local_p99": pct(lat["a"], 99),
        "remote_p50": pct(lat["b"], 50), "remote_p99": pct(lat["b"], 99),
    }


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * p / 100))] * 1000


async def main_async(args) -> None:
    scenarios = ["seq", "conc16", "paced", "local+remote"]
    rows = []
    for scenario in scenarios:
        n = args.messages if scenario != "seq" else min(args.messages, args.seq_messages)
        for kind in ("memory", "redis", "redis-resp"):
            results = [await run_round(kind, scenario, n, args.redis_url, rep) for rep in range(args.reps)]
            med = {k: statistics.median(r[k] for r in results) for k in results[0]}
            rows.append((scenario, kind, n, med))
            print(f"  {scenario:13} {kind:6} done", file=sys.stderr)
    print(f"\n{args.messages} messages (seq: {min(args.messages, args.seq_messages)}), 2 subscriber nodes, "
          f"median of {args.reps}; latency in ms; load average before/after: {args.load_before} / "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| scenario | broker | messages/s | deliveries/s | p50 | p99 | x memory (msg/s) |")
    print("|---|---|---|---|---|---|---|")
    memory = {}
    for scenario, kind, n, m in rows:
        if kind == "memory":
            memory[scenario] = m["msg_s"]
        ratio = m["msg_s"] / memory[scenario]
        print(f"| {scenario} | {kind} | {m['msg_s']:,.0f} | {m['deliveries_s']:,.0f} | {m['p50']:.3f} | "
              f"{m['p99']:.3f} | {ratio:.2f} |")
    print("\nlocal+remote, per path (ms):\n")
    print("| broker | local p50 | local p99 | remote p50 | remote p99 |")
    print("|---|---|---|---|---|")
    for scenario, kind, n, m in rows:
        if scenario == "local+remote":
            print(f"| {kind} | {m['local_p50']:.3f} | {m['local_p99']:.3f} | {m['remote_p50']:.3f} | {m['remote_p99']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--seq-messages", type=int, default=5000,
                        help="messages for the sequential scenario (one Redis round trip each)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    args.load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if args.redis_url:
        trio.run(main_async, args)
    else:
        with own_redis_server() as url:
            args.redis_url = url
            trio.run(main_async, args)


if __name__ == "__main__":
    main()
