"""Benchmark: invocations beside events, and group streams beside plain group sends.

Run:  .venv/bin/python benchmarks/invocation.py [--quick] [--calls N] [--rounds R]
                                                 [--subscribers S] [--messages M]

Everything runs on this machine, on 127.0.0.1, each server in its own process group:

- ``fabric serve --event-handler bench=...`` whose webhook is a minimal CloudEvents echo app on
  the project's own HTTP front (``benchmarks/upstream_echo.py --serve-handler``);
- an embedded fabric with an in-process echo handler (this file re-run with
  ``--serve-inprocess``): the handler implements ``handle_user_event`` and answers both events
  and invocations with the payload.

Part 1, round trips (one client, the fabric's own WebSocket client over TCP, JSON subprotocol,
one request at a time): ``event`` with an ackId (the reply message and the ack awaited) and
``invoke`` (the ``invokeResponse`` awaited), each through the in-process handler and through
the webhook, in alternating rounds so drift hits all alike.

Part 2, fan-out: S subscribers (a separate process, ``--subscribe``, so their parsing does not
share a core with the publisher) in one group; the publisher sends M messages either as plain
``sendToGroup`` messages or as the fragments of one stream (``sendToGroup`` with ``stream``,
then ``streamData`` 1..M, then ``streamEnd``), without waiting for acks, and the clock stops
when every subscriber has all M. Deliveries/s = S x M / elapsed; the fabric's own CPU time per
100k deliveries (from /proc) says what the server paid, whatever bounds the wall clock (with
Python subscribers on the same 2 cores, usually the subscribers).

It prints one markdown table per part (round trips/s, p50, p99; deliveries/s and the ratio
stream/plain). Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

from benchmarks.upstream_echo import KEY, Proc, endpoint_of, pct  # noqa: E402

HUB = "bench"
GROUP = "g"
PAYLOAD = "x" * 64


# ---------------------------------------------------------------------------- child modes


def serve_inprocess() -> None:
    """An embedded fabric whose hub echoes events and invocations in process."""
    import fabric
    from fabric.core.events import EventHandler

    class Echo(EventHandler):
        async def handle_user_event(self, request):
            return request.payload

    async def main():
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with fabric.open_fabric(access_key=KEY, handlers={HUB: Echo()}) as fab:
                async with trio.open_nursery() as nursery:
                    await nursery.start(fab.serve, "127.0.0.1", 0)
                    print(fab.connection_string(), flush=True)
                    async for _ in signals:
                        break
                    nursery.cancel_scope.cancel()

    trio.run(main)


async def _client(endpoint: str, user: str):
    from fabric.core import auth
    from fabric.testing import connect_tcp

    host, port = endpoint.split("//", 1)[1].rsplit(":", 1)
    token = auth.mint_client_token(key=KEY, endpoint=endpoint, hub=HUB, user_id=user,
                                   roles=("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"))
    client = await connect_tcp(host, int(port), f"/client/hubs/{HUB}?access_token={token}",
                               ["json.webpubsub.azure.v1"])
    await client.receive()  # system/connected
    return client


def subscribe(endpoint: str, count: int) -> None:
    """S subscribers in GROUP; prints READY, then for each line 'GO <n>' on stdin waits until
    every subscriber has n more messages and prints 'DONE <unix time of the last one>'."""

    async def main():
        clients = []
        for i in range(count):
            c = await _client(endpoint, f"sub{i}")
            await c.send(json.dumps({"type": "joinGroup", "group": GROUP, "ackId": 1}))
            await c.receive()
            clients.append(c)
        print("READY", flush=True)
        stdin = trio.lowlevel.FdStream(0)
        buffer = b""
        while True:
            while b"\n" not in buffer:
                chunk = await stdin.receive_some(1024)
                if not chunk:
                    return
                buffer += chunk
            line, buffer = buffer.split(b"\n", 1)
            if not line.startswith(b"GO "):
                continue
            messages = int(line.split()[1])
            last = [0.0]

            async def drain(c):
                for _ in range(messages):
                    await c.receive(timeout=120)
                last[0] = max(last[0], time.time())

            async with trio.open_nursery() as nursery:
                for c in clients:
                    nursery.start_soon(drain, c)
            print(f"DONE {last[0]:.6f}", flush=True)

    trio.run(main)


# ---------------------------------------------------------------------------- measurements


async def event_round_trips(endpoint: str, n: int) -> list[float]:
    client = await _client(endpoint, "bench")
    out = []
    try:
        for i in range(1, n + 1):
            frame = json.dumps({"type": "event", "event": "echo", "ackId": i, "dataType": "text",
                                "data": f"{i:08d}" + PAYLOAD})
            start = time.perf_counter()
            await client.send(frame)
            reply = await client.receive_json()
            ack = await client.receive_json()
            out.append(time.perf_counter() - start)
            if reply.get("type") != "message" or not ack.get("success"):
                raise RuntimeError(f"unexpected answer {reply} / {ack}")
    finally:
        await client.aclose()
    return out


async def invoke_round_trips(endpoint: str, n: int) -> list[float]:
    client = await _client(endpoint, "bench")
    out = []
    try:
        for i in range(1, n + 1):
            frame = json.dumps({"type": "invoke", "invocationId": str(i), "target": "event", "event": "echo",
                                "dataType": "text", "data": f"{i:08d}" + PAYLOAD})
            start = time.perf_counter()
            await client.send(frame)
            response = await client.receive_json()
            out.append(time.perf_counter() - start)
            if response.get("type") != "invokeResponse" or not response.get("success"):
                raise RuntimeError(f"unexpected answer {response}")
    finally:
        await client.aclose()
    return out


async def publish(endpoint: str, messages: int, stream: bool, stream_id: str) -> float:
    """Send the messages (no waiting for acks); returns the unix time of the first send."""
    client = await _client(endpoint, "publisher")
    try:
        async with trio.open_nursery() as nursery:
            async def drain():  # acks and streamAcks: read and dropped
                while True:
                    await client.receive(timeout=600)

            nursery.start_soon(drain)
            started = time.time()
            if stream:
                await client.send(json.dumps({"type": "sendToGroup", "group": GROUP, "noEcho": True,
                                              "stream": {"streamId": stream_id}}))
                for seq in range(1, messages + 1):
                    await client.send(json.dumps({"type": "streamData", "streamId": stream_id,
                                                  "streamSequenceId": seq, "dataType": "text", "data": PAYLOAD}))
                await client.send(json.dumps({"type": "streamEnd", "streamId": stream_id}))
            else:
                for _ in range(messages):
                    await client.send(json.dumps({"type": "sendToGroup", "group": GROUP, "noEcho": True,
                                                  "dataType": "text", "data": PAYLOAD}))
            await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
        return started
    finally:
        await client.aclose()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), in seconds."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary(samples: list[float]) -> tuple[float, float, float]:
    return 1.0 / statistics.fmean(samples), pct(samples, 0.5) * 1e3, pct(samples, 0.99) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 calls, 1 round, 20 x 500 fan-out")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--serve-inprocess", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--subscribe", nargs=2, metavar=("ENDPOINT", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_inprocess:
        serve_inprocess()
        return
    if args.subscribe:
        subscribe(args.subscribe[0], int(args.subscribe[1]))
        return
    calls, rounds = (500, 1) if args.quick else (args.calls, args.rounds)
    subscribers, messages = (20, 500) if args.quick else (args.subscribers, args.messages)
    procs: list[Proc] = []
    rt: dict[str, list[float]] = {}
    fanout: dict[str, list[float]] = {"plain": [], "stream": []}
    cpu: dict[str, list[float]] = {"plain": [], "stream": []}
    try:
        handler = Proc([sys.executable, str(ROOT / "benchmarks" / "upstream_echo.py"), "--serve-handler"], "PORT ")
        procs.append(handler)
        base = f"http://127.0.0.1:{int(handler.line.split()[1])}"
        webhook = Proc([sys.executable, "-m", "fabric", "serve", "--host", "127.0.0.1", "--port", "0",
                        f"--access-key={KEY}", "--event-handler", f"{HUB}={base}/eventhandler/{{event}}"], "Endpoint=")
        procs.append(webhook)
        inprocess = Proc([sys.executable, __file__, "--serve-inprocess"], "Endpoint=")
        procs.append(inprocess)
        targets = {"in-process": endpoint_of(inprocess.line), "webhook": endpoint_of(webhook.line)}
        kinds = {"event": event_round_trips, "invoke": invoke_round_trips}
        for name, endpoint in targets.items():  # warm-up: connections, validation, caches
            for kind, fn in kinds.items():
                trio.run(fn, endpoint, 50)
                rt[f"{kind} / {name}"] = []
        for _ in range(rounds):
            for name, endpoint in targets.items():
                for kind, fn in kinds.items():
                    rt[f"{kind} / {name}"] += trio.run(fn, endpoint, calls)

        # fan-out, against the plain `fabric serve` (the webhook one: no handler involved)
        endpoint = targets["webhook"]
        subs = Proc([sys.executable, __file__, "--subscribe", endpoint, str(subscribers)], "READY")
        procs.append(subs)
        for r in range(rounds + 1):  # the first round warms up
            for mode in ("plain", "stream"):
                expected = messages + (1 if mode == "stream" else 0)  # a stream ends with its terminal message
                subs.proc.stdin.write(f"GO {expected}\n")
                subs.proc.stdin.flush()
                cpu_before = cpu_seconds(webhook.proc.pid)
                started = trio.run(publish, endpoint, messages, mode == "stream", f"s{r}")
                line = subs.proc.stdout.readline().split()
                if not line or line[0] != "DONE":
                    raise RuntimeError(f"the subscribers said {line}")
                if r:
                    fanout[mode].append(float(line[1]) - started)
                    cpu[mode].append((cpu_seconds(webhook.proc.pid) - cpu_before) * 100_000 / (subscribers * messages))
    finally:
        for proc in reversed(procs):
            proc.stop()

    print(f"\n## invocations beside events: {calls} sequential calls x {rounds} round(s), one client, 127.0.0.1")
    print("JSON subprotocol; 72-byte text payload; handler: echo in process, or a CloudEvents echo app "
          "(transport.http) behind the webhook\n")
    print("| measurement | round trips/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    for name, samples in rt.items():
        rate, p50, p99 = summary(samples)
        print(f"| {name} | {rate:,.0f} | {p50:.2f} | {p99:.2f} |")
    print(f"\n## streaming vs plain group sends: {subscribers} subscribers x {messages} messages x {rounds} round(s)\n")
    print("| measurement | deliveries/s (median) | seconds (median) | fabric CPU-s per 100k deliveries |")
    print("|---|---:|---:|---:|")
    medians = {m: statistics.median(v) for m, v in fanout.items()}
    cpu_medians = {m: statistics.median(v) for m, v in cpu.items()}
    for mode, label in (("plain", "sendToGroup (plain group messages)"), ("stream", "one stream (streamData fragments)")):
        print(f"| {label} | {subscribers * messages / medians[mode]:,.0f} | {medians[mode]:.2f} | "
              f"{cpu_medians[mode]:.2f} |")
    print(f"\nstream / plain: throughput {medians['plain'] / medians['stream']:.2f}, "
          f"fabric CPU {cpu_medians['stream'] / cpu_medians['plain']:.2f}")


if __name__ == "__main__":
    main()
