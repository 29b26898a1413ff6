"""Benchmark: the actor hop against a bare trio memory channel, measured in the same run.

Run:  .venv/bin/python benchmarks/bench_actors.py [--quick]

What is compared (each figure is the best of several rounds; ratios are actor / bare, so
lower is better for time and memory):

1. tell, burst: a producer puts N messages with ``ref.tell_nowait`` in bursts of 64 (a
   checkpoint after each burst; mailbox and bare buffer both 256; when full, the producer
   falls back to the awaiting send on both sides) into an actor that counts them; the bare side does the same
   with ``send_nowait`` into a channel whose consumer task counts. Two bare consumers are
   shown: the idiomatic ``async for`` loop (one scheduler trip per message) and a hand-written
   drain loop (``receive_nowait`` until empty, like the actor's). The ratio is taken against
   the faster of the two.
2. tell, awaited: ``await ref.tell(m)`` per message vs ``await send.send(m)`` (both
   checkpoint per message).
3. ask round trip: ``await ref.ask(m, timeout=...)`` vs a request channel plus a reply
   channel between two tasks (``await req.send(m); await rep.receive()``).
4. memory: tracemalloc over 10,000 idle actors (a started ``Actor`` with an empty mailbox of
   the default size 64) vs 10,000 idle bare tasks (``await trio.sleep_forever()``), and, for
   reference, 10,000 tasks each idling in ``receive()`` on their own 64-slot channel.

Targets (from the brief): actor hop <= 1.5x a bare channel hop; <= 2 kB extra per idle actor.
This prints figures; it asserts nothing.
"""

from __future__ import annotations

import gc
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


async def bare_burst(n: int, drain: bool) -> float:
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

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume_drain if drain else consume_async_for)
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


def best(fn, *args, rounds: int) -> float:
    return min(trio.run(fn, *args) for _ in range(rounds))


def main() -> None:
    quick = "--quick" in sys.argv
    n_tell = 64_000 if quick else 320_000
    n_ask = 10_000 if quick else 50_000
    rounds = 3 if quick else 5
    n_idle = 10_000

    rows: list[tuple[str, str, str, str]] = []

    def rate_row(label: str, actor_s: float, bare_s: float, n: int) -> None:
        rows.append(
            (
                label,
                f"{actor_s / n * 1e9:8.0f} ns  ({n / actor_s / 1e3:7.0f}k/s)",
                f"{bare_s / n * 1e9:8.0f} ns  ({n / bare_s / 1e3:7.0f}k/s)",
                f"{actor_s / bare_s:5.2f}x",
            )
        )

    a = best(actor_tell_burst, n_tell, rounds=rounds)
    b_for = best(bare_burst, n_tell, False, rounds=rounds)
    b_drain = best(bare_burst, n_tell, True, rounds=rounds)
    rate_row("tell_nowait burst vs send_nowait + async-for", a, b_for, n_tell)
    rate_row("tell_nowait burst vs send_nowait + drain loop", a, b_drain, n_tell)

    a = best(actor_tell_awaited, n_tell // 4, rounds=rounds)
    b = best(bare_awaited, n_tell // 4, rounds=rounds)
    rate_row("await tell vs await send (per message)", a, b, n_tell // 4)

    a = best(actor_ask, n_ask, rounds=rounds)
    b = best(bare_ask, n_ask, rounds=rounds)
    rate_row("ask round trip vs request/reply channels", a, b, n_ask)

    async def mem() -> tuple[float, float, float]:
        bare = await memory_per_task(n_idle, lambda n: n.start_soon(idle_task))
        chan = await memory_per_task(n_idle, lambda n: n.start_soon(idle_channel_task))
        actor = await memory_per_task(n_idle, lambda n: n.start_soon(run_actor, Idle()))
        return bare, chan, actor

    bare_m, chan_m, actor_m = trio.run(mem)

    print(f"actors benchmark  (python {sys.version.split()[0]}, trio {trio.__version__}; "
          f"best of {rounds}; lower is better)")
    print()
    w = max(len(r[0]) for r in rows)
    print(f"{'hop (time per message)':<{w}}  {'actor':>26}  {'bare channel':>26}  ratio")
    for label, act, bare, ratio in rows:
        print(f"{label:<{w}}  {act:>26}  {bare:>26}  {ratio}")
    print()
    print(f"memory over {n_idle:,} idle tasks (tracemalloc, bytes per task)")
    print(f"  bare idle task (sleep_forever)            {bare_m:8.0f}")
    print(f"  task idle in receive() on its own channel {chan_m:8.0f}   "
          f"(+{chan_m - bare_m:.0f} over bare)")
    print(f"  idle actor (run_actor, mailbox 64)        {actor_m:8.0f}   "
          f"(+{actor_m - bare_m:.0f} over bare, {actor_m / bare_m:.2f}x)")


if __name__ == "__main__":
    main()
