"""Supervisor: specs, strategies, restart types, intensity, escalation, shutdown, scale."""

from __future__ import annotations

import gc
import logging
import weakref

import pytest
import trio
import trio.testing

from actors import (
    ActorError,
    ActorStopped,
    ChildCrashed,
    ChildSpec,
    InvalidSpec,
    Restart,
    RestartIntensityExceeded,
    Strategy,
    Supervisor,
    open_supervisor,
)

from actor_testkit import Crash, Recorder, StartCounter


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


def crash(sup: Supervisor, name: str) -> None:
    ref = sup.child(name).ref
    assert ref is not None
    ref.tell_nowait("crash")


# -- specs --------------------------------------------------------------------------------------


def _spec(name="a"):
    return ChildSpec(name, Recorder)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": ""},
        {"children": [_spec("a"), _spec("a")]},
        {"children": [object()]},
        {"children": "ab"},
        {"strategy": "one_for_one"},
        {"max_restarts": -1},
        {"max_restarts": 1.5},
        {"max_restarts": True},
        {"within": 0},
        {"within": -5},
        {"within": float("nan")},
        {"shutdown_timeout": 0},
        {"shutdown_timeout": "5"},
    ],
)
def test_invalid_supervisor_specs(kwargs):
    args = {"name": "sup", "children": ()} | kwargs
    with pytest.raises(InvalidSpec):
        Supervisor(args.pop("name"), args.pop("children"), **args)


@pytest.mark.parametrize(
    "args",
    [
        ("", Recorder),
        (None, Recorder),
        ("a", "not callable"),
        ("a", Recorder, "permanent"),
        ("a", Recorder, Restart.PERMANENT, 0),
        ("a", Recorder, Restart.PERMANENT, -1.0),
    ],
)
def test_invalid_child_specs(args):
    with pytest.raises(InvalidSpec):
        ChildSpec(*args)


def test_valid_specs_and_defaults():
    spec = ChildSpec("a", Recorder)
    assert (spec.restart, spec.shutdown_timeout) == (Restart.PERMANENT, 5.0)
    sup = Supervisor("s", [spec], max_restarts=0)
    assert sup.children() == []  # nothing runs before run()
    stats = sup.statistics()
    assert (stats.state, stats.children, stats.restarts, stats.escalated) == ("new", 0, 0, False)


async def test_bad_factory_result_fails_the_start():
    with pytest.raises(ChildCrashed) as info:
        async with open_supervisor("s", [ChildSpec("bad", lambda: 42)]):
            pass  # pragma: no cover
    assert info.value.name == "bad"
    assert isinstance(info.value.__cause__, InvalidSpec)


# -- starting -----------------------------------------------------------------------------------


async def test_initial_children_start_in_order_each_fully_started():
    log: list[str] = []

    def task_child(name):
        async def run(*, task_status=trio.TASK_STATUS_IGNORED):
            log.append(f"begin {name}")
            await trio.sleep(0)  # a checkpoint between beginning and started()
            await trio.sleep(0)
            log.append(f"started {name}")
            task_status.started(name.upper())
            await trio.sleep_forever()

        return run

    specs = [ChildSpec(n, task_child(n)) for n in "abc"]
    async with open_supervisor("s", specs) as sup:
        log.append("supervisor started")
        assert sup.children() == ["a", "b", "c"]
        assert sup.child("b").value == "B" and sup.child("b").ref is None
        assert sup.statistics().state == "running"
    assert log == [
        "begin a", "started a", "begin b", "started b", "begin c", "started c",
        "supervisor started",
    ]
    assert sup.children() == [] and sup.statistics().state == "stopped"


async def test_actor_children_get_refs_named_after_the_spec():
    async with open_supervisor("s", [ChildSpec("worker", Recorder)]) as sup:
        handle = sup.child("worker")
        assert handle.ref is not None and handle.ref.name == "worker"
        assert await handle.ref.ask("ping", timeout=1) == "ping"
        assert handle.running and not handle.stopped


async def test_initial_child_failing_to_start_fails_run_after_stopping_the_others():
    events: list[str] = []

    async def broken(*, task_status=trio.TASK_STATUS_IGNORED):
        raise Crash("no")

    specs = [
        ChildSpec("a", lambda: Recorder(events=events)),
        ChildSpec("broken", broken),
        ChildSpec("c", lambda: Recorder(events=events)),
    ]
    sup = Supervisor("s", specs)
    with pytest.raises(ChildCrashed) as info:
        await sup.run()
    assert info.value.name == "broken" and isinstance(info.value.__cause__, Crash)
    assert events == ["start:a", "stop:a"]
    assert sup.children() == []


async def test_start_child_failure_is_raised_and_leaves_no_trace():
    async def returns_early(*, task_status=trio.TASK_STATUS_IGNORED):
        return

    async with open_supervisor("s") as sup:
        with pytest.raises(ChildCrashed) as info:
            await sup.start_child(ChildSpec("early", returns_early))
        assert "without calling task_status.started()" in str(info.value.__cause__)
        assert sup.children() == []
        with pytest.raises(ChildCrashed):
            await sup.start_child(ChildSpec("bad", lambda: None))
        assert sup.children() == [] and sup.statistics().restarts == 0


async def test_start_child_rules():
    sup = Supervisor("s")
    with pytest.raises(ActorError):
        await sup.start_child(ChildSpec("a", Recorder))  # not running yet
    async with open_supervisor("s", [ChildSpec("a", Recorder)]) as sup:
        with pytest.raises(InvalidSpec):
            await sup.start_child(ChildSpec("a", Recorder))  # duplicate name
        with pytest.raises(InvalidSpec):
            await sup.start_child("a")  # type: ignore[arg-type]
        sup.stop()
        with pytest.raises(ActorStopped):
            await sup.start_child(ChildSpec("b", Recorder))
    with pytest.raises(ActorStopped):
        await sup.start_child(ChildSpec("b", Recorder))
    with pytest.raises(ActorError, match="already run"):
        await sup.run()


# -- restart types ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("restart", "how", "restarted"),
    [
        (Restart.PERMANENT, "crash", True),
        (Restart.PERMANENT, "exit", True),
        (Restart.TRANSIENT, "crash", True),
        (Restart.TRANSIENT, "exit", False),
        (Restart.TEMPORARY, "crash", False),
        (Restart.TEMPORARY, "exit", False),
    ],
)
async def test_restart_types(restart, how, restarted):
    counter = StartCounter()
    async with open_supervisor("s", [ChildSpec("c", counter.actor("c"), restart)]) as sup:
        first = sup.child("c")
        first.ref.tell_nowait(how)
        await settle()
        stats = sup.statistics()
        if restarted:
            assert sup.children() == ["c"] and sup.child("c") is first
            assert counter.starts["c"] == 2 and first.running
            assert first.ref.statistics().state == "running"  # the new incarnation's ref
            assert (stats.restarts, stats.restarts_by_child) == (1, {"c": 1})
        else:
            assert sup.children() == [] and first.stopped
            assert counter.starts["c"] == 1
            assert (stats.restarts, stats.restarts_by_child) == (0, {})
        assert stats.crashes == (1 if how == "crash" else 0)


async def test_task_child_restarts():
    runs = []

    async def flaky(*, task_status=trio.TASK_STATUS_IGNORED):
        runs.append(len(runs))
        task_status.started()
        if len(runs) < 3:
            raise Crash("again")
        await trio.sleep_forever()

    async with open_supervisor("s", [ChildSpec("flaky", flaky)], max_restarts=5) as sup:
        await settle()
        assert runs == [0, 1, 2]
        assert sup.statistics().restarts_by_child == {"flaky": 2}
        assert sup.child("flaky").running


# -- strategies ---------------------------------------------------------------------------------


async def _strategy_run(strategy, crash_name, names="abcd", restart_types=None):
    counter = StartCounter()
    restart_types = restart_types or {}
    specs = [
        ChildSpec(n, counter.actor(n), restart_types.get(n, Restart.PERMANENT)) for n in names
    ]
    async with open_supervisor("s", specs, strategy=strategy) as sup:
        counter.events.clear()
        crash(sup, crash_name)
        await settle()
        children = sup.children()
        events = list(counter.events)
        stats = sup.statistics()
    return counter, children, events, stats


async def test_one_for_one_restarts_only_the_crashed_child():
    counter, children, events, stats = await _strategy_run(Strategy.ONE_FOR_ONE, "b")
    assert children == list("abcd")
    assert dict(counter.starts) == {"a": 1, "b": 2, "c": 1, "d": 1}
    assert events == ["stop:b", "start:b"]
    assert stats.restarts_by_child == {"b": 1}


async def test_one_for_all_stops_the_others_in_reverse_and_restarts_all_in_order():
    counter, children, events, stats = await _strategy_run(Strategy.ONE_FOR_ALL, "b")
    assert children == list("abcd")
    assert dict(counter.starts) == {"a": 2, "b": 2, "c": 2, "d": 2}
    assert events == [
        "stop:b",  # the crash
        "stop:d", "stop:c", "stop:a",  # the others, reverse start order
        "start:a", "start:b", "start:c", "start:d",  # all, start order
    ]
    assert (stats.restarts, stats.restarts_by_child) == (1, {"b": 1})


async def test_rest_for_one_restarts_the_crashed_child_and_those_after_it():
    counter, children, events, stats = await _strategy_run(Strategy.REST_FOR_ONE, "b")
    assert children == list("abcd")
    assert dict(counter.starts) == {"a": 1, "b": 2, "c": 2, "d": 2}
    assert events == ["stop:b", "stop:d", "stop:c", "start:b", "start:c", "start:d"]


async def test_strategies_remove_temporary_siblings_instead_of_restarting_them():
    counter, children, events, stats = await _strategy_run(
        Strategy.ONE_FOR_ALL, "b", restart_types={"c": Restart.TEMPORARY}
    )
    assert children == ["a", "b", "d"]
    assert dict(counter.starts) == {"a": 2, "b": 2, "c": 1, "d": 2}


async def test_restarted_children_keep_their_place_in_start_order():
    counter = StartCounter()
    specs = [ChildSpec(n, counter.actor(n)) for n in "abc"]
    async with open_supervisor("s", specs, strategy=Strategy.ONE_FOR_ONE) as sup:
        crash(sup, "a")
        await settle()
        await sup.start_child(ChildSpec("d", counter.actor("d")))
        assert sup.children() == ["a", "b", "c", "d"]
        counter.events.clear()
    assert counter.events == ["stop:d", "stop:c", "stop:b", "stop:a"]


# -- intensity and escalation -------------------------------------------------------------------


async def test_intensity_exceeded_escalates_with_the_last_crash_as_cause(autojump_clock, caplog):
    counter = StartCounter()
    specs = [ChildSpec("ok", counter.actor("ok")), ChildSpec("bad", counter.actor("bad"))]
    sup = Supervisor("s", specs, max_restarts=2, within=10)
    with pytest.RaisesGroup(RestartIntensityExceeded) as info:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            for _ in range(3):
                crash(sup, "bad")
                await settle()
                await trio.sleep(1)
    err = info.value.exceptions[0]
    cause = err.__cause__
    assert isinstance(cause, ChildCrashed) and cause.name == "bad"
    assert isinstance(cause.__cause__, Crash)
    stats = sup.statistics()
    assert (stats.escalated, stats.restarts, stats.crashes, stats.state, stats.children) == (
        True, 2, 3, "stopped", 0)
    assert counter.starts == {"ok": 1, "bad": 3}
    assert counter.events[-2:] == ["stop:bad", "stop:ok"]  # the others stopped before raising
    assert "more than 2 restarts within 10.0 s" in caplog.text


async def test_run_raises_the_escalation_naked(autojump_clock):
    async def always_crashes(*, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        await trio.sleep(1)
        raise Crash("boom")

    sup = Supervisor("s", [ChildSpec("c", always_crashes)], max_restarts=3, within=10)
    with pytest.raises(RestartIntensityExceeded):
        await sup.run()
    assert sup.statistics().restarts == 3 and sup.statistics().escalated


async def test_restarts_spread_beyond_the_window_do_not_escalate(autojump_clock):
    counter = StartCounter()
    async with open_supervisor(
        "s", [ChildSpec("c", counter.actor("c"))], max_restarts=1, within=5
    ) as sup:
        for _ in range(6):
            crash(sup, "c")
            await settle()
            await trio.sleep(5)  # each restart falls out of the window before the next
        stats = sup.statistics()
        assert (stats.restarts, stats.escalated, counter.starts["c"]) == (6, False, 7)


async def test_max_restarts_zero_escalates_on_the_first_crash():
    with pytest.RaisesGroup(RestartIntensityExceeded):
        async with open_supervisor("s", [ChildSpec("c", Recorder)], max_restarts=0) as sup:
            crash(sup, "c")
            await trio.sleep_forever()


async def test_permanent_child_that_keeps_exiting_normally_escalates(autojump_clock):
    async def quits(*, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()

    sup = Supervisor("s", [ChildSpec("quits", quits)], max_restarts=2, within=1)
    with pytest.raises(RestartIntensityExceeded) as info:
        await sup.run()
    assert isinstance(info.value.__cause__, ChildCrashed)
    assert info.value.__cause__.__cause__ is None  # it exited, nothing was raised


async def test_nested_supervisor_escalation_is_a_crashed_child_of_the_parent():
    counter = StartCounter()

    def inner() -> Supervisor:
        return Supervisor("inner", [ChildSpec("leaf", counter.actor("leaf"))], max_restarts=0)

    specs = [ChildSpec("inner", inner), ChildSpec("sibling", counter.actor("sibling"))]
    outer = Supervisor("outer", specs, max_restarts=1, within=60)
    with pytest.RaisesGroup(RestartIntensityExceeded) as info:
        async with trio.open_nursery() as nursery:
            await nursery.start(outer.run)
            handle = outer.child("inner")
            first = handle.value  # what the child passed to started(): the Supervisor
            assert isinstance(first, Supervisor) and handle.ref is None
            first.child("leaf").ref.tell_nowait("crash")  # inner gives up; outer restarts it
            await settle()
            stats = outer.statistics()
            assert (stats.restarts_by_child, stats.escalated) == ({"inner": 1}, False)
            assert counter.starts == {"leaf": 2, "sibling": 1}
            assert first.statistics().escalated
            second = outer.child("inner").value
            assert second is not first and second.statistics().state == "running"
            # A second escalation is more than outer's own limit (1): outer escalates too.
            second.child("leaf").ref.tell_nowait("crash")
            await trio.sleep_forever()
    chain = info.value.exceptions[0]
    assert isinstance(chain.__cause__, ChildCrashed) and chain.__cause__.name == "inner"
    inner_error = chain.__cause__.__cause__
    assert isinstance(inner_error, RestartIntensityExceeded)
    assert inner_error.__cause__.name == "leaf"
    assert isinstance(inner_error.__cause__.__cause__, Crash)
    assert outer.statistics().escalated and outer.children() == []
    assert counter.events[-1] == "stop:sibling"


# -- stopping and shutdown ----------------------------------------------------------------------


async def test_aclose_stops_children_in_reverse_start_order():
    counter = StartCounter()
    specs = [ChildSpec(n, counter.actor(n)) for n in "abc"]
    async with open_supervisor("s", specs) as sup:
        await sup.start_child(ChildSpec("d", counter.actor("d")))
        counter.events.clear()
    assert counter.events == ["stop:d", "stop:c", "stop:b", "stop:a"]
    assert sup.children() == [] and sup.statistics().state == "stopped"
    await sup.aclose()  # idempotent


async def test_stop_child_is_graceful_and_final(autojump_clock):
    counter = StartCounter()
    specs = [ChildSpec(n, counter.actor(n)) for n in "ab"]
    async with open_supervisor("s", specs) as sup:
        handle = sup.child("a")
        gate = trio.Event()
        handle.ref.tell_nowait(("wait", gate))
        await settle()  # now handling it (a message still queued would be discarded)
        done = []

        async def stopper():
            await sup.stop_child("a")
            done.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stopper)
            await trio.sleep(1)
            assert done == [] and handle.running  # finishing its current message
            gate.set()
        assert handle.stopped and sup.children() == ["b"]
        assert counter.starts["a"] == 1  # a PERMANENT child stopped on request stays stopped
        await sup.stop_child("a")  # gone: nothing to do
        await sup.stop_child("never-existed")


async def test_shutdown_cancels_an_actor_that_ignores_stop_after_its_timeout(autojump_clock):
    events: list[str] = []
    spec = ChildSpec("stuck", lambda: Recorder(events=events), shutdown_timeout=7)
    async with open_supervisor("s", [spec]) as sup:
        sup.child("stuck").ref.tell_nowait("hang")
        await settle()
        start = trio.current_time()
        await sup.stop_child("stuck")
        assert trio.current_time() - start == pytest.approx(7)
        assert events == ["start:stuck", "stop:stuck"]  # on_stop still ran


async def test_supervisor_shutdown_is_bounded_as_a_whole(autojump_clock):
    specs = [ChildSpec(n, Recorder, shutdown_timeout=10) for n in "abc"]
    sup = Supervisor("s", specs, shutdown_timeout=4)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        for n in "abc":
            sup.child(n).ref.tell_nowait("hang")
        await settle()
        start = trio.current_time()
        await sup.aclose()
        assert trio.current_time() - start == pytest.approx(4)
    assert sup.children() == []


async def test_task_children_are_cancelled_at_once_on_stop(autojump_clock):
    cleanup = []

    async def conn(*, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            cleanup.append(trio.current_time())

    async with open_supervisor("s", [ChildSpec("conn", conn, Restart.TEMPORARY)]) as sup:
        start = trio.current_time()
        handle = sup.child("conn")
        handle.stop()
        await handle.wait_stopped()
        assert cleanup == [start] and handle.stopped and sup.children() == []


async def test_stop_during_start_stops_the_child(autojump_clock):
    async def slow_start(*, task_status=trio.TASK_STATUS_IGNORED):
        await trio.sleep(10)
        task_status.started()  # pragma: no cover - stopped before this
        await trio.sleep_forever()  # pragma: no cover

    async with open_supervisor("s") as sup:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup.start_child, ChildSpec("slow", slow_start))
            await trio.sleep(1)
            sup.child("slow").stop()
        assert sup.children() == []


async def test_supervisor_stop_during_initial_start_still_reports_started(autojump_clock):
    sup = Supervisor("s")

    async def stopper(*, task_status=trio.TASK_STATUS_IGNORED):
        sup.stop()
        task_status.started()
        await trio.sleep_forever()

    sup = Supervisor("s", [ChildSpec("a", stopper), ChildSpec("b", Recorder)])
    async with trio.open_nursery() as nursery:
        started = await nursery.start(sup.run)
        assert started is sup
    assert sup.statistics().state == "stopped" and sup.children() == []


async def test_outer_cancellation_is_not_a_crash(caplog):
    counter = StartCounter()
    sup = Supervisor("s", [ChildSpec(n, counter.actor(n)) for n in "ab"])
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            scope.cancel()
    stats = sup.statistics()
    assert (stats.crashes, stats.restarts, stats.state, stats.children) == (0, 0, "stopped", 0)
    assert sorted(counter.events) == ["start:a", "start:b", "stop:a", "stop:b"]
    assert "crashed" not in caplog.text


async def test_child_crash_mixed_with_cancellation_is_recorded_not_propagated(caplog):
    """RULE 2: a task child's own nursery fails with [error, Cancelled] while being stopped."""

    async def messy(*, task_status=trio.TASK_STATUS_IGNORED):
        async def sub():
            try:
                await trio.sleep_forever()
            finally:
                raise Crash("raised while being cancelled")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sub)
            task_status.started()
            await trio.sleep_forever()

    async with open_supervisor("s", [ChildSpec("sibling", Recorder)]) as sup:
        handle = await sup.start_child(ChildSpec("messy", messy, Restart.TEMPORARY))
        handle.stop()
        await handle.wait_stopped()
        assert sup.children() == ["sibling"] and sup.child("sibling").running
        assert sup.statistics().crashes == 1
    assert "child 'messy' crashed" in caplog.text


# -- crash reporting ----------------------------------------------------------------------------


async def test_crash_is_logged_with_the_child_name_and_traceback(caplog):
    caplog.set_level(logging.ERROR, logger="actors")
    async with open_supervisor("hub-chat", [ChildSpec("group-42", Recorder)]) as sup:
        crash(sup, "group-42")
        await settle()
    records = [r for r in caplog.records if r.name == "actors" and r.levelno == logging.ERROR]
    assert len(records) == 1
    record = records[0]
    assert "group-42" in record.getMessage() and "hub-chat" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is Crash
    assert "told to crash" in caplog.text and "Traceback" in caplog.text


async def test_temporary_child_crash_is_logged_not_swallowed(caplog):
    async def dies(*, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        raise Crash("temporary died")

    async with open_supervisor("s") as sup:
        await sup.start_child(ChildSpec("conn-7", dies, Restart.TEMPORARY))
        await settle()
        assert sup.children() == [] and sup.statistics().crashes == 1
    assert "child 'conn-7' crashed" in caplog.text and "temporary died" in caplog.text


async def test_open_supervisor_surfaces_escalation_as_a_group():
    with pytest.RaisesGroup(RestartIntensityExceeded):
        async with open_supervisor("s", [ChildSpec("c", Recorder)], max_restarts=0) as sup:
            crash(sup, "c")
            await trio.sleep_forever()


# -- dynamic children at scale ------------------------------------------------------------------


async def test_ten_thousand_temporary_task_children_start_and_stop():
    n = 10_000
    release = trio.Event()
    running = 0
    peak = 0

    async def connection(*, task_status=trio.TASK_STATUS_IGNORED):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        task_status.started()
        try:
            await release.wait()
        finally:
            running -= 1

    async with open_supervisor("hub") as sup:
        handles = [
            await sup.start_child(ChildSpec(f"conn-{i}", connection, Restart.TEMPORARY))
            for i in range(n)
        ]
        assert sup.statistics().children == n and peak == n
        # Half of them end on their own (the client went away) ...
        release.set()
        await settle()
        assert sup.statistics().children == 0 and running == 0
        assert all(h.stopped for h in handles)
        # ... and a second wave is stopped by the supervisor's shutdown.
        release = trio.Event()
        for i in range(n):
            await sup.start_child(ChildSpec(f"conn-b{i}", connection, Restart.TEMPORARY))
        assert len(sup.children()) == n
    assert sup.statistics().children == 0 and running == 0
    assert sup.statistics().restarts == 0 and sup.statistics().crashes == 0


async def test_a_running_child_does_not_keep_the_task_that_started_it():
    """A connection's child is started by its short-lived HTTP task; once that task ends, the
    child (which keeps its task_status for life) must not keep it, its nursery and its
    coroutine alive: that was ~2 kB per idle connection."""
    release = trio.Event()

    async def connection(*, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        await release.wait()

    starters: list[weakref.ref] = []

    async def starter(sup: Supervisor, name: str, start) -> None:
        starters.append(weakref.ref(trio.lowlevel.current_task()))
        await sup.start_child(ChildSpec(name, start, Restart.TEMPORARY))

    async with open_supervisor("hub") as sup:
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(starter, sup, f"conn-{i}", connection)
            nursery.start_soon(starter, sup, "actor", Recorder)
        await settle()
        assert len(sup.children()) == 4 and len(starters) == 4
        gc.collect()
        assert [ref() for ref in starters] == [None] * 4
        release.set()


async def test_crash_mixed_into_the_supervisors_own_cancellation_is_still_reported(caplog):
    async def messy(*, task_status=trio.TASK_STATUS_IGNORED):
        async def sub():
            try:
                await trio.sleep_forever()
            finally:
                raise Crash("raised while the whole tree is cancelled")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sub)
            task_status.started()
            await trio.sleep_forever()

    sup = Supervisor("s", [ChildSpec("messy", messy)])
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            scope.cancel()
    assert scope.cancelled_caught  # the Cancelled went where it belonged ...
    assert sup.statistics().crashes == 1  # ... and the error riding with it was logged
    assert "child 'messy' crashed" in caplog.text
    assert "raised while the whole tree is cancelled" in caplog.text


# -- start_child_soon: task children started without waiting ------------------------------------


async def test_start_child_soon_runs_the_child_on_the_next_pass_without_a_checkpoint():
    ran = []
    release = trio.Event()

    async def connection(*, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started("ready")
        ran.append(trio.lowlevel.current_task().parent_nursery)
        await release.wait()

    async with open_supervisor("hub") as sup:
        handle = sup.start_child_soon(ChildSpec("conn-1", connection, Restart.TEMPORARY))
        assert ran == [] and sup.children() == ["conn-1"] and handle.running  # not run yet
        await settle()
        assert ran == [sup._nursery] and handle.value == "ready"
        with pytest.raises(InvalidSpec):
            sup.start_child_soon(ChildSpec("conn-1", connection, Restart.TEMPORARY))  # name in use
        with pytest.raises(InvalidSpec, match="task children only"):
            sup.start_child_soon(ChildSpec("actor", Recorder))
        with pytest.raises(InvalidSpec):
            sup.start_child_soon("conn-2")  # type: ignore[arg-type]
        release.set()
        await settle()
        assert handle.stopped and sup.children() == []
        sup.stop()
        with pytest.raises(ActorStopped):
            sup.start_child_soon(ChildSpec("late", connection, Restart.TEMPORARY))
    with pytest.raises(ActorError):
        Supervisor("new").start_child_soon(ChildSpec("a", connection))


async def test_start_child_soon_failure_before_started_is_a_crash_not_raised(caplog):
    async def returns_early(*, task_status=trio.TASK_STATUS_IGNORED):
        return

    async def raises_early(*, task_status=trio.TASK_STATUS_IGNORED):
        raise Crash("could not start")

    async def fine(*, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        await trio.sleep_forever()

    async with open_supervisor("hub") as sup:
        sup.start_child_soon(ChildSpec("sibling", fine, Restart.TEMPORARY))
        sup.start_child_soon(ChildSpec("early", returns_early, Restart.TEMPORARY))
        sup.start_child_soon(ChildSpec("raises", raises_early, Restart.TEMPORARY))
        await settle()
        assert sup.children() == ["sibling"]  # the supervisor and the sibling live on
        assert sup.statistics().crashes == 2 and sup.statistics().restarts == 0
    assert "without calling task_status.started()" in caplog.text and "could not start" in caplog.text


async def test_start_child_soon_stopped_before_it_ran(autojump_clock):
    started = []

    async def connection(*, task_status=trio.TASK_STATUS_IGNORED):
        started.append(1)
        task_status.started()
        await trio.sleep_forever()

    async with open_supervisor("hub") as sup:
        handle = sup.start_child_soon(ChildSpec("conn", connection, Restart.TEMPORARY))
        await sup.stop_child("conn")
        assert handle.stopped and sup.children() == [] and sup.statistics().crashes == 0


async def test_a_child_started_soon_does_not_keep_the_task_that_started_it():
    release = trio.Event()

    async def connection(*, task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        await release.wait()

    starters: list[weakref.ref] = []

    async def starter(sup: Supervisor, name: str) -> None:
        starters.append(weakref.ref(trio.lowlevel.current_task()))
        sup.start_child_soon(ChildSpec(name, connection, Restart.TEMPORARY))

    async with open_supervisor("hub") as sup:
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(starter, sup, f"conn-{i}")
        await settle()
        assert len(sup.children()) == 3
        gc.collect()
        assert [ref() for ref in starters] == [None] * 3
        release.set()
