"""Scale-out on Redis: what a broker costs, and what a second node costs (issue 13).

    python -m benchmarks.scaleout [--reps 3] [--quick] [--out FILE]

In one run, each rep interleaved so that drift hits every configuration alike:

- fan-out N=1000 (``loadgen.js``: one group, one publisher, 64-byte payloads, e2e window
  16, about 200k deliveries) against one ``fabric serve`` with the memory broker, one with
  Redis, and two with Redis (500 subscribers on each, ``--sub-ports``; the publisher on
  the first);
- cross-node latency at a fixed 5000 deliveries/s (100 subscribers, 50 messages/s, open
  loop): one node with the memory broker, one with Redis, and two nodes with every
  subscriber on the node the publisher is not on (every delivery crosses Redis);
- REST send-to-group through Redis: 50 subscribers, 2000 ``POST .../groups/g/:send`` from
  8 keep-alive connections, against one memory node (REST and subscribers together) and
  two Redis nodes (REST on one, subscribers on the other); every delivery is checked.

Targets: one node with Redis >= 0.9x the memory broker's fan-out; two nodes >= 0.9x one
node with Redis at the same total N; cross-node p99 <= 2x the single node's p99. Prints a
markdown table (medians over reps) and PASS/FAIL lines; a ratio is the median of the ratios
within each rep (the configurations of a rep run back to back and share the machine's load). The machine's two cores are shared
by the nodes, Redis and the load generator, so absolute numbers understate a real spread.

Rules this module keeps: every process is ours, started in its own session and stopped
through its group (``benchmarks.procs.stop_group``) in ``finally``; redis-server too.
Every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import trio

from benchmarks import NODE_DIR
from benchmarks.broker_redis import own_redis_server
from benchmarks.procs import (
    HOST,
    PortAllocator,
    raise_nofile_limit,
    run_command,
    stop_group,
)

ROOT = Path(__file__).resolve().parents[1]
LOADGEN = NODE_DIR / "loadgen.js"
KEY = "bench-secret"
HUB, GROUP = "bench", "g"
START_TIMEOUT = 30.0


# ---- processes ---------------------------------------------------------------------------


@contextmanager
def fabric_node(port: int, redis_url: str | None, log: Path):
    cmd = [sys.executable, "-m", "fabric", "serve", "--host", HOST, "--port", str(port), "--access-key", KEY,
           "--log-level", "warning"]
    if redis_url:
        cmd += ["--redis", redis_url]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=out, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        line = b""
        while not line.startswith(b"Endpoint="):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"fabric node on {port} did not start (see {log})")
            line = proc.stdout.readline()
        yield proc
    finally:
        stop_group(proc)
        if proc.stdout:
            proc.stdout.close()


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def redis_pid(url: str) -> int | None:
    port = url.rsplit(":", 1)[1].split("/")[0]
    out = subprocess.run(["pgrep", "-f", f"redis-server .*:{port}|redis-server .*--port {port}"],
                         capture_output=True, text=True, check=False)
    pids = [int(p) for p in out.stdout.split()]
    return pids[0] if pids else None


def loadgen(publisher_port: int, pids: list[int], args: list[str], sub_ports: list[int] | None = None,
            timeout: float = 150) -> dict:
    cmd = ["node", str(LOADGEN), "--proto", "wps", "--hub", HUB, "--group", GROUP, "--jwt-key", KEY,
           "--host", HOST, "--port", str(publisher_port), "--pid", ",".join(map(str, pids)), "--size", "64",
           "--timeout", str(timeout), "--drain", "10", *args]
    if sub_ports:
        cmd += ["--sub-ports", ",".join(map(str, sub_ports))]
    res = run_command(cmd, cwd=NODE_DIR, timeout=timeout + 80)
    for line in reversed(res.stdout.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {"errors": [f"loadgen gave no result: {res.stderr.strip()[-800:]}"]}


def problems(raw: dict) -> list[str]:
    out = [str(e) for e in raw.get("errors", [])]
    f = raw.get("fanout") or {}
    for key in ("lost", "duplicates", "out_of_order", "invalid_frames", "bad_seq"):
        if f.get(key):
            out.append(f"{key}={f[key]}")
    if (raw.get("connect") or {}).get("failed"):
        out.append(f"{raw['connect']['failed']} connections failed")
    return out


# ---- one configuration ------------------------------------------------------------------


class Setup:
    """``nodes`` fabric nodes (0 Redis: the memory broker) for one measurement."""

    def __init__(self, name: str, nodes: int, redis_url: str | None, ports: PortAllocator, logdir: Path) -> None:
        self.name, self.nodes, self.redis_url = name, nodes, redis_url
        self.ports = ports
        self.logdir = logdir

    @contextmanager
    def running(self):
        with ExitStack() as stack:
            ports = [self.ports.take() for _ in range(self.nodes)]
            procs = [stack.enter_context(fabric_node(p, self.redis_url, self.logdir / f"{self.name}-{p}.log"))
                     for p in ports]
            yield ports, [p.pid for p in procs]
        time.sleep(3)  # TIME_WAIT of a thousand sockets


def fanout(setup: Setup, messages: int) -> dict:
    with setup.running() as (ports, pids):
        rpid = redis_pid(setup.redis_url) if setup.redis_url else None
        redis_before = cpu_seconds(rpid) if rpid else 0.0
        raw = loadgen(ports[0], pids, ["--scenario", "fanout", "--subs", "1000", "--messages", str(messages),
                                       "--pace", "e2e", "--window", "16"], sub_ports=ports if len(ports) > 1 else None)
        redis_cpu = (cpu_seconds(rpid) - redis_before) if rpid else 0.0
    f = raw.get("fanout") or {}
    delivered = (f.get("expected") or 0) - (f.get("lost") or 0)
    return {"rate": f.get("delivered_per_s"), "p50": (f.get("latency_ms") or {}).get("p50"),
            "p99": (f.get("latency_ms") or {}).get("p99"), "cpu": (raw.get("server") or {}).get("cpu_s_per_100k"),
            "redis_cpu": redis_cpu * 1e5 / delivered if delivered else None, "problems": problems(raw)}


def latency(setup: Setup, cross: bool) -> dict:
    with setup.running() as (ports, pids):
        subs = [ports[1]] if cross else None
        raw = loadgen(ports[0], pids, ["--scenario", "fanout", "--subs", "100", "--messages", "500",
                                       "--pace", "rate", "--rate", "50"], sub_ports=subs)
    f = raw.get("fanout") or {}
    lat = f.get("latency_ms") or {}
    return {"rate": f.get("delivered_per_s"), "p50": lat.get("p50"), "p99": lat.get("p99"), "problems": problems(raw)}


def rest(setup: Setup) -> dict:
    with setup.running() as (ports, _pids):
        return trio.run(_rest_run, ports[0], ports[-1])


async def _rest_run(rest_port: int, sub_port: int, subscribers: int = 50, sends: int = 2000, conns: int = 8) -> dict:
    from fabric.core import auth
    from fabric.testing import client_target, connect_tcp

    endpoint = f"http://{HOST}:{sub_port}"
    clients = []
    for i in range(subscribers):
        token = auth.mint_client_token(key=KEY, endpoint=endpoint, hub=HUB, user_id=f"s{i}",
                                       roles=("webpubsub.joinLeaveGroup",), groups=(GROUP,), ttl_seconds=3600)
        c = await connect_tcp(HOST, sub_port, client_target(HUB, token), ["json.webpubsub.azure.v1"])
        await c.receive_json()  # connected
        clients.append(c)
    path = f"/api/hubs/{HUB}/groups/{GROUP}/:send?api-version=2024-12-01"
    token = auth.mint_rest_token(key=KEY, url=f"http://{HOST}:{rest_port}{path}", ttl_seconds=3600)
    latencies: list[float] = []
    counts = [0] * subscribers
    next_index = 0

    async def receive(i: int, c) -> None:
        while counts[i] < sends:
            msg = await c.receive_json(timeout=60)
            if msg.get("type") == "message":
                counts[i] += 1

    async def sender() -> None:
        nonlocal next_index
        stream = await trio.open_tcp_stream(HOST, rest_port)
        async with stream:
            buf = b""
            while next_index < sends:
                n = next_index
                next_index += 1
                body = json.dumps({"n": n}).encode()
                request = (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{rest_port}\r\nAuthorization: Bearer {token}\r\n"
                           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
                t0 = time.perf_counter()
                await stream.send_all(request)
                while b"\r\n\r\n" not in buf:
                    data = await stream.receive_some(65536)
                    if not data:
                        raise RuntimeError("REST connection closed")
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 202"):
                    raise RuntimeError(f"REST answered {head[:80]!r}")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(buf) < length:
                    buf += await stream.receive_some(65536)
                buf = buf[length:]
                latencies.append((time.perf_counter() - t0) * 1000)

    started = time.perf_counter()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            for i, c in enumerate(clients):
                nursery.start_soon(receive, i, c)
            async with trio.open_nursery() as senders:
                for _ in range(conns):
                    senders.start_soon(sender)
            sent_in = time.perf_counter() - started
    for c in clients:
        await c.aclose()
    latencies.sort()
    return {"rate": sends / sent_in, "p50": latencies[len(latencies) // 2],
            "p99": latencies[int(len(latencies) * 0.99)], "delivered": sum(counts),
            "problems": [] if sum(counts) == sends * subscribers else [f"delivered {sum(counts)} of {sends * subscribers}"]}


# ---- the run -----------------------------------------------------------------------------


def median(values):
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.median(values) if values else None


def fmt(value, digits=0):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaleout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one rep, fewer messages")
    parser.add_argument("--out", help="also write the markdown table to this file")
    parser.add_argument("--messages", type=int, default=1000,
                        help="fan-out messages per run (x1000 deliveries; runs under ~5 s are noise here)")
    parser.add_argument("--only", nargs="*", choices=["fanout", "latency", "rest", "simulate"],
                        default=["fanout", "latency", "rest", "simulate"])
    args = parser.parse_args()
    reps = 1 if args.quick else args.reps
    messages = 100 if args.quick else args.messages
    raise_nofile_limit()
    logdir = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
    ports = PortAllocator(base=32100)
    results: dict[str, list[dict]] = {}
    with own_redis_server() as redis_url:
        mem1 = Setup("memory-1", 1, None, ports, logdir)
        red1 = Setup("redis-1", 1, redis_url, ports, logdir)
        red2 = Setup("redis-2", 2, redis_url, ports, logdir)
        for rep in range(reps):
            print(f"rep {rep + 1}/{reps}", file=sys.stderr, flush=True)
            if "fanout" in args.only:
                order = (mem1, red1, red2) if rep % 2 == 0 else (red2, red1, mem1)  # drift hits all alike
                for setup in order:
                    results.setdefault(f"fanout {setup.name}", []).append(fanout(setup, messages))
                    print(f"  fanout {setup.name}: {results[f'fanout {setup.name}'][-1]}", file=sys.stderr, flush=True)
            if "latency" in args.only:
                for setup, cross in ((mem1, False), (red1, False), (red2, True)):
                    key = f"latency {setup.name}{' cross-node' if cross else ''}"
                    results.setdefault(key, []).append(latency(setup, cross))
                    print(f"  {key}: {results[key][-1]}", file=sys.stderr, flush=True)
            if "rest" in args.only:
                for setup in (mem1, red2):
                    key = f"rest {setup.name}"
                    results.setdefault(key, []).append(rest(setup))
                    print(f"  {key}: {results[key][-1]}", file=sys.stderr, flush=True)
    lines = [f"### Scale-out on Redis ({time.strftime('%Y-%m-%d')}, {reps} rep(s), medians)", "",
             "| measurement | rate | p50 ms | p99 ms | fabric CPU-s/100k | Redis CPU-s/100k | problems |",
             "|---|---:|---:|---:|---:|---:|---|"]
    med = {}
    for key, runs in results.items():
        m = {k: median([r.get(k) for r in runs]) for k in ("rate", "p50", "p99", "cpu", "redis_cpu")}
        med[key] = m
        unit = "deliv/s" if key.startswith(("fanout", "latency")) else "req/s"
        probs = "; ".join(sorted({p for r in runs for p in r.get("problems", [])})) or "none"
        lines.append(f"| {key} | {fmt(m['rate'])} {unit} | {fmt(m['p50'], 1)} | {fmt(m['p99'], 1)} | "
                     f"{fmt(m['cpu'], 2)} | {fmt(m['redis_cpu'], 2)} | {probs} |")
    lines.append("")

    def ratio(a, b):
        """The median over reps of a/b within each rep: the configurations of one rep run back
        to back, so they share the machine's load, which drifts by 2x between reps here."""
        pairs = [x.get("rate") / y.get("rate") for x, y in zip(results.get(a, []), results.get(b, []))
                 if x.get("rate") and y.get("rate")]
        return statistics.median(pairs) if pairs else None

    checks = []
    r1 = ratio("fanout redis-1", "fanout memory-1")
    r2 = ratio("fanout redis-2", "fanout redis-1")
    if r1 is not None:
        checks.append((f"one node with Redis / memory broker fan-out = {r1:.2f}x (target >= 0.9x)", r1 >= 0.9))
    if r2 is not None:
        checks.append((f"two nodes / one node with Redis fan-out at N=1000 = {r2:.2f}x (target >= 0.9x)", r2 >= 0.9))
    single = med.get("latency memory-1", {}).get("p99")
    cross = med.get("latency redis-2 cross-node", {}).get("p99")
    if single and cross:
        checks.append(((f"cross-node p99 {cross:.1f} ms / single-node p99 {single:.1f} ms = {cross / single:.2f}x "
                       "(target <= 2x)"), cross <= 2 * single))
    rr = ratio("rest redis-2", "rest memory-1")
    if rr is not None:
        checks.append((f"REST send-to-group through Redis / one memory node = {rr:.2f}x (no target)", True))
    for text, ok in checks:
        lines.append(f"- {'PASS' if ok else 'FAIL'}: {text}")
    if "simulate" in args.only:
        lines += ["", simulate()]
    report = "\n".join(lines)
    print(report)
    if args.out:
        Path(args.out).write_text(report + "\n")
    print(f"(node logs in {logdir})", file=sys.stderr)



# ---- a simulation of many nodes: what Redis holds, what operations cost ------------------


def simulate(nodes: int = 8, per_node: int = 500, rooms: int = 100) -> str:
    """``nodes`` in-process fabric nodes (each its own Redis connections) with ``per_node``
    connections each; every connection has a user of its own and joins one of ``rooms``
    groups. Reports Redis' channel count and memory, and the latency of operations that
    cross nodes, for the design's extrapolation to 10 nodes and 1M connections."""
    with own_redis_server() as redis_url:
        return trio.run(_simulate, redis_url, nodes, per_node, rooms)


def _redis(url: str, *args):
    import socket as stdlib_socket

    from fabric.core.redis_resp import NEED_MORE, RespParser, encode_command

    host, port = url.split("//")[1].split("/")[0].split(":")
    parser = RespParser()
    with stdlib_socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(encode_command(*args))
        while True:
            item = parser.parse()
            if item is not NEED_MORE:
                return item
            parser.feed(s.recv(1 << 20))


def _info(url: str, field: str) -> int:
    text = _redis(url, "INFO", "memory").decode()
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split(":")[1])
    return 0


async def _simulate(redis_url: str, nodes: int, per_node: int, rooms: int) -> str:
    import random

    import attrs

    import fabric
    from fabric.config import load_config
    from fabric.testing import connect_in_process

    base = load_config(None, env={})
    config = attrs.evolve(base, server=attrs.evolve(base.server, shutdown_timeout=0.2),
                          broker=attrs.evolve(base.broker, url=redis_url, channel_prefix="sim:"))
    memory_before = await trio.to_thread.run_sync(_info, redis_url, "used_memory")
    lines = []
    async with AsyncExit() as stack:
        fabs = [await stack.enter(fabric.open_fabric(attrs.evolve(
            config, broker=attrs.evolve(config.broker, node_id=f"sim{i}")), access_key=KEY)) for i in range(nodes)]
        clients = []
        started = time.perf_counter()
        for n, fab in enumerate(fabs):
            for i in range(per_node):
                room = f"r{(n * per_node + i) % rooms}"
                c = await connect_in_process(fab, HUB, user_id=f"u{n}-{i}", groups=[room])
                c.connection_id = (await c.receive_json())["connectionId"]
                clients.append((n, c, room))
        setup_s = time.perf_counter() - started
        channels = len(await trio.to_thread.run_sync(_redis, redis_url, "PUBSUB", "CHANNELS", "sim:*"))
        memory_after = await trio.to_thread.run_sync(_info, redis_url, "used_memory")
        keys = len(await trio.to_thread.run_sync(_redis, redis_url, "KEYS", "sim:*"))
        connections = nodes * per_node
        rng = random.Random(1)

        async def timed(fn, rounds=200):
            took = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                await fn()
                took.append((time.perf_counter() - t0) * 1000)
            took.sort()
            return took[len(took) // 2], took[int(len(took) * 0.99)]

        def pick():
            return clients[rng.randrange(len(clients))]

        async def exists():
            n, c, _ = pick()
            assert await fabs[(n + 1) % nodes].hub(HUB).connection_exists(c.connection_id)

        async def join_leave():
            n, c, _ = pick()
            hub = fabs[(n + 1) % nodes].hub(HUB)
            assert await hub.add_connection_to_group("sim-extra", c.connection_id)
            await hub.remove_connection_from_group("sim-extra", c.connection_id)

        async def members():
            room = f"r{rng.randrange(rooms)}"
            assert len(await fabs[rng.randrange(nodes)].hub(HUB).list_connections_in_group(room)) == connections // rooms

        async def room_send():
            room = f"r{rng.randrange(rooms)}"
            await fabs[rng.randrange(nodes)].hub(HUB).send_to_group(room, "x")
            for _, c, r in clients:
                if r == room:
                    msg = await c.receive_json()
                    assert msg["data"] == "x"

        results = {name: await timed(fn, 100 if name == "room_send" else 200)
                   for name, fn in (("exists", exists), ("join_leave", join_leave),
                                    ("members", members), ("room_send", room_send))}
        stats = fabs[0].bus.statistics()
    per_channel = (memory_after - memory_before) / channels if channels else 0
    lines += [
        f"### Simulation: {nodes} nodes x {per_node} connections ({connections}), {rooms} rooms, one Redis",
        "",
        (f"- setup: {connections} connections (each: connect, subscribe its connection, user and room) in "
        f"{setup_s:.1f} s ({connections / setup_s:.0f}/s, all nodes in one process)"),
        (f"- Redis: {channels} channels (one per connection, per user, per room, the hub, one reply topic "
        f"per node), {keys} keys (node heartbeats), {(memory_after - memory_before) / 1e6:.1f} MB more "
        f"memory = {per_channel:.0f} bytes per channel (rooms are subscribed by every node)"),
        f"- Redis connections: {nodes * 3} (publisher, subscriber, presence per node)",
        *(f"- {name}: p50 {p50:.2f} ms, p99 {p99:.2f} ms" for name, (p50, p99) in results.items()),
        (f"- node 0 broker: published {stats['published']}, delivered {stats['delivered']}, "
        f"batches {stats['batches']}, drops {stats['drops']}"),
    ]
    return "\n".join(lines)


class AsyncExit:
    """A tiny AsyncExitStack with ``enter`` (trio-friendly, closes in reverse order)."""

    def __init__(self) -> None:
        from contextlib import AsyncExitStack

        self._stack = AsyncExitStack()

    async def __aenter__(self):
        await self._stack.__aenter__()
        return self

    async def __aexit__(self, *exc):
        return await self._stack.__aexit__(*exc)

    async def enter(self, cm):
        return await self._stack.enter_async_context(cm)


if __name__ == "__main__":
    main()
