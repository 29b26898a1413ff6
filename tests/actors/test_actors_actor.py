"""Actor, ActorRef and run_actor: mailbox order, overflow policies, ask, stop, statistics."""

from __future__ import annotations

import math
from functools import partial

import pytest
import trio
import trio.testing

from actors import (
    Actor,
    ActorError,
    ActorStopped,
    AskTimeout,
    InvalidSpec,
    MailboxFull,
    Overflow,
    run_actor,
)

from actor_testkit import Crash, Recorder

# -- order and basic delivery -------------------------------------------------------------------


async def test_mailbox_is_fifo_for_tell_nowait_and_tell(nursery):
    actor = Recorder(mailbox_size=8)
    ref = await nursery.start(run_actor, actor)
    for i in range(5):
        ref.tell_nowait(i)
    for i in range(5, 30):
        await ref.tell(i)  # waits for room when the 8 slots are full
    await trio.testing.wait_all_tasks_blocked()
    assert actor.log == list(range(30))
    stats = ref.statistics()
    assert (stats.told, stats.handled, stats.mailbox_used, stats.state) == (30, 30, 0, "running")
    assert 1 <= stats.peak <= 8


async def test_ref_is_set_before_on_start_and_named(nursery):
    seen = []

    class Named(Actor):
        async def on_start(self):
            seen.append(self.ref.name)

        async def handle(self, message):
            return message

    ref = await nursery.start(partial(run_actor, name="alpha"), Named())
    anon = await nursery.start(run_actor, Named())
    assert seen == ["alpha", anon.name]
    assert ref.name == "alpha" and anon.name.startswith("Named-")
    assert ref.statistics().state == "running"


async def test_constructor_keywords_override_class_attributes():
    class Small(Actor):
        mailbox_size = 3
        overflow = Overflow.FAIL

    assert (Small().mailbox_size, Small().overflow) == (3, Overflow.FAIL)
    custom = Small(mailbox_size=9, overflow=Overflow.DROP_OLDEST, on_stop_timeout=0.5)
    assert (custom.mailbox_size, custom.overflow, custom.on_stop_timeout) == (
        9,
        Overflow.DROP_OLDEST,
        0.5,
    )
    assert Small.mailbox_size == 3  # the class is untouched


@pytest.mark.parametrize(
    "kwargs",
    [{"mailbox_size": 0}, {"mailbox_size": -1}, {"mailbox_size": 2.5}, {"mailbox_size": True},
     {"mailbox_size": math.inf}, {"overflow": "block"}, {"on_stop_timeout": 0}],
)
async def test_run_actor_rejects_bad_settings(kwargs):
    with pytest.raises(InvalidSpec):
        await run_actor(Recorder(**kwargs))


async def test_run_actor_rejects_a_non_actor_and_a_running_actor(nursery):
    with pytest.raises(InvalidSpec):
        await run_actor(object())  # type: ignore[arg-type]
    actor = Recorder()
    await nursery.start(run_actor, actor)
    with pytest.raises(ActorError, match="already running"):
        await run_actor(actor)


async def test_fairness_yields_every_mailbox_size_messages(nursery):
    """A busy actor (its handler never checkpoints) still lets other tasks run."""
    size = 4
    log: list[str] = []

    class Busy(Actor):
        mailbox_size = size

        async def handle(self, message):
            log.append("m")
            if message < 40:
                self.ref.tell_nowait(message + 1)  # the mailbox never empties

    async def ticker():
        for _ in range(200):
            log.append("t")
            await trio.lowlevel.checkpoint()

    ref = await nursery.start(run_actor, Busy())
    nursery.start_soon(ticker)
    ref.tell_nowait(0)
    await trio.testing.wait_all_tasks_blocked()
    runs = [len(run) for run in "".join(log).split("t") if run]
    assert sum(runs) == 41
    assert max(runs) <= 2 * size  # at most one batch on each side of a scheduler pass


async def test_a_burst_is_drained_in_one_wake_up(nursery):
    """Queued messages are handled back to back, without a scheduler pass between them."""
    log: list[str] = []

    class Quiet(Actor):
        async def handle(self, message):
            log.append("m")

    async def ticker():
        for _ in range(50):
            log.append("t")
            await trio.lowlevel.checkpoint()

    ref = await nursery.start(run_actor, Quiet())
    nursery.start_soon(ticker)
    for i in range(40):  # fewer than mailbox_size (64): one batch
        ref.tell_nowait(i)
    await trio.testing.wait_all_tasks_blocked()
    runs = [len(run) for run in "".join(log).split("t") if run]
    assert runs == [40]


# -- overflow policies --------------------------------------------------------------------------


async def _blocked_actor(nursery, overflow, size=2):
    """An actor stuck handling its first message, with a full mailbox of `size` more."""
    gate = trio.Event()
    actor = Recorder(mailbox_size=size, overflow=overflow)
    ref = await nursery.start(run_actor, actor)
    ref.tell_nowait(("wait", gate))
    await trio.testing.wait_all_tasks_blocked()
    for i in range(size):
        ref.tell_nowait(i)
    return actor, ref, gate


async def test_block_policy_tell_nowait_raises_and_tell_waits(nursery):
    actor, ref, gate = await _blocked_actor(nursery, Overflow.BLOCK)
    with pytest.raises(MailboxFull):
        ref.tell_nowait("refused")
    done = trio.Event()

    async def waiting_sender():
        await ref.tell("waited")
        done.set()

    nursery.start_soon(waiting_sender)
    await trio.testing.wait_all_tasks_blocked()
    assert not done.is_set()  # still waiting for room
    gate.set()
    await done.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert actor.log[1:] == [0, 1, "waited"]
    stats = ref.statistics()
    assert (stats.failed_tells, stats.dropped, stats.told) == (1, 0, 4)


async def test_fail_policy_raises_for_tell_and_tell_nowait(nursery):
    actor, ref, gate = await _blocked_actor(nursery, Overflow.FAIL)
    with pytest.raises(MailboxFull):
        ref.tell_nowait("a")
    with pytest.raises(MailboxFull):
        await ref.tell("b")
    with pytest.raises(MailboxFull):
        await ref.ask("c", timeout=1)
    gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert actor.log[1:] == [0, 1]
    assert ref.statistics().failed_tells == 3


async def test_drop_newest_discards_the_new_message(nursery):
    actor, ref, gate = await _blocked_actor(nursery, Overflow.DROP_NEWEST)
    ref.tell_nowait("dropped-1")
    await ref.tell("dropped-2")
    with pytest.raises(MailboxFull):  # an ask is refused, never silently dropped
        await ref.ask("ask", timeout=1)
    gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert actor.log[1:] == [0, 1]
    stats = ref.statistics()
    assert (stats.dropped, stats.failed_tells, stats.told) == (2, 1, 3)


async def test_drop_oldest_discards_the_oldest_queued_message(nursery, autojump_clock):
    actor, ref, gate = await _blocked_actor(nursery, Overflow.DROP_OLDEST, size=3)
    ref.tell_nowait("new-1")  # evicts 0
    await ref.tell("new-2")  # evicts 1
    evicted = []

    async def asker():
        try:
            await ref.ask("old-ask", timeout=10)
        except MailboxFull as exc:
            evicted.append(exc)

    nursery.start_soon(asker)  # the ask evicts 2 and queues itself ...
    await trio.testing.wait_all_tasks_blocked()
    ref.tell_nowait("new-3")  # ... then "new-1" goes ...
    ref.tell_nowait("new-4")  # ... then "new-2" ...
    ref.tell_nowait("new-5")  # ... then the ask, whose asker is told at once
    await trio.testing.wait_all_tasks_blocked()
    assert len(evicted) == 1
    gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert actor.log[1:] == ["new-3", "new-4", "new-5"]
    stats = ref.statistics()
    assert (stats.dropped, stats.failed_tells, stats.peak) == (6, 0, 3)


# -- ask ----------------------------------------------------------------------------------------


async def test_ask_returns_the_handler_result(nursery):
    class Doubler(Actor):
        async def handle(self, message):
            return message * 2

    ref = await nursery.start(run_actor, Doubler())
    assert await ref.ask(21, timeout=1) == 42
    assert [await ref.ask(i, timeout=1) for i in range(5)] == [0, 2, 4, 6, 8]
    assert ref.statistics().handled == 6


async def test_ask_times_out(nursery, autojump_clock):
    ref = await nursery.start(run_actor, Recorder())
    start = trio.current_time()
    with pytest.raises(AskTimeout) as info:
        await ref.ask(("sleep", 100), timeout=5)
    assert isinstance(info.value, TimeoutError)
    assert trio.current_time() - start == pytest.approx(5)
    # The actor is still fine and answers the next ask once the slow one is done.
    assert await ref.ask("next", timeout=200) == "next"


async def test_ask_timeout_covers_waiting_for_mailbox_room(nursery, autojump_clock):
    actor, ref, gate = await _blocked_actor(nursery, Overflow.BLOCK)
    with pytest.raises(AskTimeout):
        await ref.ask("x", timeout=3)
    assert ref.statistics().told == 3  # the refused ask never entered the mailbox


@pytest.mark.parametrize("timeout", [0, -1, -0.001, math.nan])
async def test_ask_rejects_non_positive_timeouts(nursery, timeout):
    ref = await nursery.start(run_actor, Recorder())
    with pytest.raises(InvalidSpec):
        await ref.ask("x", timeout=timeout)
    with pytest.raises(ValueError):
        await ref.ask("x", timeout=timeout)


async def test_ask_to_a_stopped_actor_fails_at_once(nursery, autojump_clock):
    ref = await nursery.start(run_actor, Recorder())
    ref.stop()
    start = trio.current_time()
    with pytest.raises(ActorStopped):
        await ref.ask("x", timeout=100)  # stopping: refused at once
    await ref.wait_stopped()
    with pytest.raises(ActorStopped):
        await ref.ask("x", timeout=100)  # stopped
    assert trio.current_time() == start  # no waiting, not even for the timeout


async def test_ask_fails_when_the_actor_stops_while_it_waits(nursery, autojump_clock):
    gate = trio.Event()
    ref = await nursery.start(run_actor, Recorder())
    ref.tell_nowait(("wait", gate))
    results = []

    async def asker():
        try:
            await ref.ask("queued", timeout=100)
        except ActorStopped as exc:
            results.append((trio.current_time(), exc))

    nursery.start_soon(asker)
    await trio.testing.wait_all_tasks_blocked()
    start = trio.current_time()
    ref.stop()  # the queued ask is discarded and answered with ActorStopped
    await trio.testing.wait_all_tasks_blocked()
    assert len(results) == 1 and results[0][0] == start
    gate.set()
    await ref.wait_stopped()
    assert ref.statistics().discarded == 1


async def test_ask_whose_handler_raises_gets_actor_stopped_with_the_crash(autojump_clock):
    errors = []
    with pytest.RaisesGroup(Crash):
        async with trio.open_nursery() as nursery:
            ref = await nursery.start(run_actor, Recorder())
            try:
                await ref.ask("crash", timeout=10)
            except ActorStopped as exc:
                errors.append(exc)
    assert len(errors) == 1
    assert isinstance(errors[0].__cause__, Crash)
    assert ref.stopped and ref.statistics().state == "crashed"


async def test_asks_queued_behind_a_crash_fail_with_the_crash_as_cause(autojump_clock):
    errors = []

    async def asker(ref):
        try:
            await ref.ask("behind", timeout=10)
        except ActorStopped as exc:
            errors.append(exc)

    with pytest.RaisesGroup(Crash):
        async with trio.open_nursery() as nursery:
            gate = trio.Event()
            ref = await nursery.start(run_actor, Recorder())
            ref.tell_nowait(("wait", gate))
            ref.tell_nowait("crash")
            nursery.start_soon(asker, ref)
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
    assert len(errors) == 1 and isinstance(errors[0].__cause__, Crash)


async def test_ask_while_cancelled_actor_is_handling_it(autojump_clock):
    errors = []
    async with trio.open_nursery() as outer:
        scope = trio.CancelScope()

        async def run_in_scope(task_status=trio.TASK_STATUS_IGNORED):
            with scope:
                await run_actor(Recorder(), task_status=task_status)

        ref = await outer.start(run_in_scope)

        async def asker():
            try:
                await ref.ask("hang", timeout=100)
            except ActorStopped as exc:
                errors.append(exc)

        outer.start_soon(asker)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
    assert len(errors) == 1 and isinstance(errors[0].__cause__, trio.Cancelled)
    assert ref.statistics().state == "stopped"  # cancellation is not a crash


# -- stop ---------------------------------------------------------------------------------------


async def test_tell_to_a_stopped_actor_raises(nursery):
    ref = await nursery.start(run_actor, Recorder())
    ref.stop()
    with pytest.raises(ActorStopped):
        ref.tell_nowait("x")
    with pytest.raises(ActorStopped):
        await ref.tell("x")
    await ref.wait_stopped()
    assert ref.stopped
    with pytest.raises(ActorStopped):
        ref.tell_nowait("x")
    with pytest.raises(ActorStopped):
        await ref.tell("x")
    ref.stop()  # idempotent


async def test_a_sender_blocked_on_a_full_mailbox_wakes_when_the_actor_stops(nursery):
    actor, ref, gate = await _blocked_actor(nursery, Overflow.BLOCK)
    errors = []

    async def sender():
        try:
            await ref.tell("blocked")
        except ActorStopped as exc:
            errors.append(exc)

    nursery.start_soon(sender)
    await trio.testing.wait_all_tasks_blocked()
    ref.stop()
    await trio.testing.wait_all_tasks_blocked()
    assert len(errors) == 1
    gate.set()
    await ref.wait_stopped()
    assert actor.log == [("wait", gate)]  # queued messages were discarded, not handled
    assert ref.statistics().discarded == 2


async def test_stop_from_inside_finishes_the_current_message_then_exits(nursery):
    events: list[str] = []
    actor = Recorder(events=events)
    ref = await nursery.start(partial(run_actor, name="inner"), actor)
    gate = trio.Event()
    ref.tell_nowait(("wait", gate))
    ref.tell_nowait("exit")
    ref.tell_nowait("never")
    gate.set()
    await ref.wait_stopped()
    assert actor.log == [("wait", gate), "exit"]
    assert events == ["start:inner", "stop:inner"]
    stats = ref.statistics()
    assert (stats.handled, stats.discarded, stats.state) == (2, 1, "stopped")


async def test_run_actor_returns_after_stop_and_reraises_a_crash():
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(run_actor, Recorder())
        ref.stop()
    assert ref.statistics().state == "stopped"
    actor = Recorder()

    async def crash_it_soon():
        await trio.testing.wait_all_tasks_blocked()
        actor.ref.tell_nowait("crash")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(crash_it_soon)
        with pytest.raises(Crash):  # raised naked out of run_actor itself
            await run_actor(actor)
    assert actor.ref.statistics().state == "crashed"


async def test_on_stop_runs_after_stop_crash_and_cancel():
    events: list[str] = []
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(partial(run_actor, name="a"), Recorder(events=events))
        ref.stop()
    with pytest.RaisesGroup(Crash):
        async with trio.open_nursery() as nursery:
            ref = await nursery.start(partial(run_actor, name="b"), Recorder(events=events))
            ref.tell_nowait("crash")
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(partial(run_actor, name="c"), Recorder(events=events))
        nursery.cancel_scope.cancel()
    assert events == ["start:a", "stop:a", "start:b", "stop:b", "start:c", "stop:c"]


async def test_on_stop_is_shielded_but_bounded(autojump_clock, caplog):
    finished = []

    class SlowStop(Actor):
        on_stop_timeout = 3.0

        async def handle(self, message):
            return message

        async def on_stop(self):
            await trio.sleep(1)  # runs although the actor was cancelled: shielded
            finished.append(trio.current_time())
            await trio.sleep_forever()  # ... but not forever: bounded

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(run_actor, SlowStop())
        nursery.cancel_scope.cancel()
    assert finished == [start + 1]
    assert trio.current_time() == pytest.approx(start + 3)
    assert ref.stopped
    assert "on_stop() did not finish within 3.0 s" in caplog.text


async def test_on_start_failure_fails_the_start_and_still_runs_on_stop(nursery):
    events = []

    class BadStart(Actor):
        async def on_start(self):
            raise Crash("cannot start")

        async def handle(self, message):
            return message

        async def on_stop(self):
            events.append("on_stop")

    actor = BadStart()
    with pytest.raises(Crash):
        await nursery.start(run_actor, actor)
    assert events == ["on_stop"]
    assert actor.ref.stopped


async def test_on_stop_failure_after_a_clean_run_is_a_crash():
    class BadStop(Actor):
        async def handle(self, message):
            return message

        async def on_stop(self):
            raise Crash("on_stop failed")

    with pytest.RaisesGroup(Crash):
        async with trio.open_nursery() as nursery:
            ref = await nursery.start(run_actor, BadStop())
            ref.stop()
    assert ref.statistics().state == "crashed"


async def test_wait_stopped(nursery):
    ref = await nursery.start(run_actor, Recorder())
    done = []

    async def waiter():
        await ref.wait_stopped()
        done.append(ref.stopped)

    nursery.start_soon(waiter)
    nursery.start_soon(waiter)
    await trio.testing.wait_all_tasks_blocked()
    assert done == []
    ref.stop()
    await trio.testing.wait_all_tasks_blocked()
    assert done == [True, True]
    await ref.wait_stopped()  # already stopped: returns at once


async def test_handler_exceptions_are_not_swallowed_nor_turned_into_stops():
    class Handler(Actor):
        async def handle(self, message):
            raise KeyError(message)

    with pytest.RaisesGroup(KeyError):
        async with trio.open_nursery() as nursery:
            ref = await nursery.start(run_actor, Handler())
            await ref.tell("k")
    assert ref.statistics().state == "crashed"
    assert ref.statistics().handled == 0


async def test_default_handle_is_not_implemented():
    with pytest.RaisesGroup(NotImplementedError):
        async with trio.open_nursery() as nursery:
            ref = await nursery.start(run_actor, Actor())
            ref.tell_nowait("x")
