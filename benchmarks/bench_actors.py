"""Benchmark: the actor hop against a bare trio memory channel, measured in the same run.

Run:  .venv/bin/python benchmarks/bench_actors.py [--quick]

Each figure is the best of several rounds, and actor and bare rounds alternate so drift hits
both sides alike. Ratios are actor / bare: lower is better, for time and for memory.

1. tell, burst. A producer puts N messages with ``ref.tell_nowait`` in bursts of 64, with a
   checkpoint after each burst, into an actor whose ``handle`` counts them. The bare side does
   the same with ``send_nowait`` into a channel drained by a consumer task. The mailbox and the
   bare buffer are both 256; when either is full, the producer falls back to awaiting. Three
   bare consumers are shown:
   - the idiomatic ``async for`` (one scheduler trip per message);
   - a hand-written drain loop (``receive_nowait`` until empty, like the actor's) counting
     inline: the floor, and the baseline the 1.5x target is checked against;
   - the same drain loop calling an ``async def`` handler per message, as the actor does: the
     difference to the actor is the runtime's own overhead.
2. tell, awaited: ``await ref.tell(m)`` per message vs ``await send.send(m)`` (each is a
   checkpoint per message).
3. ask round trip: ``await ref.ask(m, timeout=...)`` vs a request channel plus a reply
   channel between two tasks (``await req.send(m); await rep.receive()``).
4. memory: tracemalloc over 10,000 idle actors (started, empty mailbox of the default size
   64) vs 10,000 idle bare tasks (``await trio.sleep_forever()``). For reference it also
   shows 10,000 tasks each idling in ``receive()`` on their own 64-slot channel.

Targets (from the brief): actor hop <= 1.5x a bare channel hop; <= 2 kB extra per idle actor.
This prints figures; it asserts nothing.
"""

from __future__ import annotations

import gc
import math
import sys
import time
import tracemalloc
from pathlib import Path

import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors import Actor, MailboxFull, run_actor  # noqa: E402

BURST = 64
MAILBOX = 256  # room for a few bursts, on both sides, so a burst never meets a full buffer


class Counter(Actor):
    """Counts messages; answers asks with the count."""

    def __init__(self) -> None:
        super().__init__(mailbox_size=MAILBOX)
        self.count = 0
        self.done = trio.Event()
        self.target = -1

    async def handle(self, message: object) -> int:
        self.count += 1
        if self.count == self.target:
            self.done.set()
        return self.count


# -- tell ------------------------------------------------------------------------------------


async def actor_tell_burst(n: int) -> float:
    async with trio.open_nursery() as nursery:
        actor = Counter()
        actor.target = n
        ref = await nursery.start(run_actor, actor)
        tell_nowait = ref.tell_nowait
        start = time.perf_counter()
        for i in range(n // BURST):
            for j in range(BURST):
                try:
                    tell_nowait(j)
                except MailboxFull:
                    await ref.tell(j)
            await trio.lowlevel.checkpoint()
        await actor.done.wait()
        elapsed = time.perf_counter() - start
        ref.stop()
    return elapsed


async def bare_burst(n: int, consumer: str) -> float:
    send, recv = trio.open_memory_channel(MAILBOX)
    done = trio.Event()

    async def consume_async_for() -> None:
        count = 0
        async for _ in recv:
            count += 1
            if count == n:
                done.set()

    async def consume_drain() -> None:
        count = 0
        receive_nowait = recv.receive_nowait
        while True:
            try:
                receive_nowait()
            except trio.WouldBlock:
                try:
                    await recv.receive()
                except trio.EndOfChannel:
                    return
            except trio.EndOfChannel:
                return
            count += 1
            if count == n:
                done.set()

    counter = Counter()
    counter.target = n
    counter.done = done

    async def consume_drain_handler() -> None:
        handle = counter.handle
        receive_nowait = recv.receive_nowait
        while True:
            try:
                message = receive_nowait()
            except trio.WouldBlock:
                try:
                    message = await recv.receive()
                except trio.EndOfChannel:
                    return
            except trio.EndOfChannel:
                return
            await handle(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            {
                "async-for": consume_async_for,
                "drain": consume_drain,
                "drain+handler": consume_drain_handler,
            }[consumer]
        )
        await trio.testing.wait_all_tasks_blocked()
        send_nowait = send.send_nowait
        start = time.perf_counter()
        for i in range(n // BURST):
            for j in range(BURST):
                try:
                    send_nowait(j)
                except trio.WouldBlock:
                    await send.send(j)
            await trio.lowlevel.checkpoint()
        await done.wait()
        elapsed = time.perf_counter() - start
        send.close()
    return elapsed


async def actor_tell_awaited(n: int) -> float:
    async with trio.open_nursery() as nursery:
        actor = Counter()
        actor.target = n
        ref = await nursery.start(run_actor, actor)
        tell = ref.tell
        start = time.perf_counter()
        for i in range(n):
            await tell(i)
        await actor.done.wait()
        elapsed = time.perf_counter() - start
        ref.stop()
    return elapsed


async def bare_awaited(n: int) -> float:
    send, recv = trio.open_memory_channel(MAILBOX)
    done = trio.Event()

    async def consume() -> None:
        count = 0
        async for _ in recv:
            count += 1
            if count == n:
                done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        start = time.perf_counter()
        for i in range(n):
            await send.send(i)
        await done.wait()
        elapsed = time.perf_counter() - start
        send.close()
    return elapsed


# -- ask ---------------------------------------------------------------------------------------


async def actor_ask(n: int) -> float:
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(run_actor, Counter())
        ask = ref.ask
        start = time.perf_counter()
        for i in range(n):
            await ask(i, timeout=60)
        elapsed = time.perf_counter() - start
        ref.stop()
    return elapsed


async def bare_ask(n: int) -> float:
    req_send, req_recv = trio.open_memory_channel(MAILBOX)
    rep_send, rep_recv = trio.open_memory_channel(MAILBOX)

    async def serve() -> None:
        count = 0
        async for _ in req_recv:
            count += 1
            await rep_send.send(count)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await trio.testing.wait_all_tasks_blocked()
        start = time.perf_counter()
        for i in range(n):
            await req_send.send(i)
            await rep_recv.receive()
        elapsed = time.perf_counter() - start
        req_send.close()
    return elapsed


# -- memory ------------------------------------------------------------------------------------


class Idle(Actor):
    async def handle(self, message: object) -> None:
        pass


async def idle_task() -> None:
    await trio.sleep_forever()


async def idle_channel_task() -> None:
    send, recv = trio.open_memory_channel(BURST)
    async for _ in recv:
        pass


async def memory_per_task(count: int, spawn) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            spawn(nursery)
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        nursery.cancel_scope.cancel()
    tracemalloc.stop()
    return (after - before) / count


# -- driver ------------------------------------------------------------------------------------


def best_of(rounds: int, *runs: tuple) -> list[float]:
    """Run each (fn, *args) `rounds` times, alternating between them; the best time of each."""
    results = [math.inf] * len(runs)
    for _ in range(rounds):
        for i, (fn, *args) in enumerate(runs):
            results[i] = min(results[i], trio.run(fn, *args))
    return results


def main() -> None:
    quick = "--quick" in sys.argv
    n_tell = 64_000 if quick else 320_000
    n_ask = 10_000 if quick else 50_000
    rounds = 3 if quick else 7
    n_idle = 10_000

    rows: list[tuple[str, str, str, str]] = []

    def rate_row(label: str, actor_s: float, bare_s: float, n: int) -> None:
        rows.append(
            (
                label,
                f"{actor_s / n * 1e9:6.0f} ns ({n / actor_s / 1e3:5.0f}k/s)",
                f"{bare_s / n * 1e9:6.0f} ns ({n / bare_s / 1e3:5.0f}k/s)",
                f"{actor_s / bare_s:5.2f}x",
            )
        )

    a, b_for, b_drain, b_handler = best_of(
        rounds,
        (actor_tell_burst, n_tell),
        (bare_burst, n_tell, "async-for"),
        (bare_burst, n_tell, "drain"),
        (bare_burst, n_tell, "drain+handler"),
    )
    rate_row("tell_nowait burst  vs send_nowait + async-for", a, b_for, n_tell)
    rate_row("tell_nowait burst  vs send_nowait + drain loop  [target]", a, b_drain, n_tell)
    rate_row("tell_nowait burst  vs send_nowait + drain + async handler", a, b_handler, n_tell)

    a, b = best_of(rounds, (actor_tell_awaited, n_tell // 4), (bare_awaited, n_tell // 4))
    rate_row("await tell         vs await send", a, b, n_tell // 4)

    a, b = best_of(rounds, (actor_ask, n_ask), (bare_ask, n_ask))
    rate_row("ask round trip     vs request + reply channels", a, b, n_ask)

    async def mem() -> tuple[float, float, float]:
        bare = await memory_per_task(n_idle, lambda n: n.start_soon(idle_task))
        chan = await memory_per_task(n_idle, lambda n: n.start_soon(idle_channel_task))
        actor = await memory_per_task(n_idle, lambda n: n.start_soon(run_actor, Idle()))
        return bare, chan, actor

    bare_m, chan_m, actor_m = trio.run(mem)

    print(
        f"actors benchmark: python {sys.version.split()[0]}, trio {trio.__version__}, "
        f"best of {rounds} alternating rounds, lower is better"
    )
    print()
    w = max(len(r[0]) for r in rows)
    print(f"{'time per message':<{w}}  {'actor':>22}  {'bare':>22}  ratio")
    for label, act, bare, ratio in rows:
        print(f"{label:<{w}}  {act:>22}  {bare:>22}  {ratio}")
    print()
    print(f"memory per task over {n_idle:,} idle tasks (tracemalloc)")
    print(f"  bare idle task (sleep_forever)               {bare_m:6.0f} B")
    print(
        f"  task idling in receive() on its own channel  {chan_m:6.0f} B"
        f"   (+{chan_m - bare_m:.0f} B over bare)"
    )
    print(
        f"  idle actor (run_actor, mailbox 64)  [target] {actor_m:6.0f} B"
        f"   (+{actor_m - bare_m:.0f} B over bare, {actor_m / bare_m:.2f}x)"
    )


if __name__ == "__main__":
    main()
