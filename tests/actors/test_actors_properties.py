"""Hypothesis properties of the actor runtime.

(a) Tells from several concurrent senders arrive in per-sender FIFO order, none lost (BLOCK).
(b) A supervisor's observable state (children, incarnations, restart counts, escalation)
    always matches a small model, under random crashes, normal exits, stops, new children
    and the passage of time. hypothesis-trio does not import with current Hypothesis, so the
    state machine is synchronous, runs in a worker thread, and drives trio through
    ``trio.from_thread.run``.
"""

from __future__ import annotations

from collections import defaultdict
from functools import partial
from typing import Any, ClassVar

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from actors import (
    Actor,
    ChildCrashed,
    ChildSpec,
    MailboxFull,
    Restart,
    RestartIntensityExceeded,
    Strategy,
    Supervisor,
    run_actor,
)

from actor_testkit import StartCounter

# -- (a) per-sender FIFO, nothing lost -------------------------------------------------------


class Collector(Actor):
    def __init__(self, pauses: list[bool], **kw: Any) -> None:
        super().__init__(**kw)
        self.pauses = pauses
        self.received: list[tuple[int, int]] = []

    async def handle(self, message: tuple[int, int]) -> None:
        if self.pauses[len(self.received) % len(self.pauses)]:
            await trio.lowlevel.checkpoint()  # a handler that sometimes awaits
        self.received.append(message)


sender_plans = st.lists(  # per sender: for each message, (use tell_nowait?, pause first?)
    st.lists(st.tuples(st.booleans(), st.booleans()), max_size=25), min_size=1, max_size=5
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    plans=sender_plans,
    mailbox_size=st.integers(1, 6),
    handler_pauses=st.lists(st.booleans(), min_size=1, max_size=8),
)
async def test_tells_from_several_senders_arrive_in_per_sender_order(
    plans, mailbox_size, handler_pauses
):
    async with trio.open_nursery() as nursery:
        actor = Collector(handler_pauses, mailbox_size=mailbox_size)
        ref = await nursery.start(run_actor, actor)

        async def sender(sender_id: int, plan: list[tuple[bool, bool]]) -> None:
            for seq, (nowait, pause) in enumerate(plan):
                if pause:
                    await trio.lowlevel.checkpoint()
                message = (sender_id, seq)
                if nowait:
                    try:
                        ref.tell_nowait(message)
                    except MailboxFull:
                        await ref.tell(message)  # full: fall back to waiting
                else:
                    await ref.tell(message)

        async with trio.open_nursery() as senders:
            for sender_id, plan in enumerate(plans):
                senders.start_soon(sender, sender_id, plan)
        await trio.testing.wait_all_tasks_blocked()
        ref.stop()

    by_sender: defaultdict[int, list[int]] = defaultdict(list)
    for sender_id, seq in actor.received:
        by_sender[sender_id].append(seq)
    for sender_id, plan in enumerate(plans):
        assert by_sender[sender_id] == list(range(len(plan)))
    total = sum(len(plan) for plan in plans)
    stats = ref.statistics()
    assert len(actor.received) == stats.told == stats.handled == total
    assert stats.dropped == stats.discarded == 0
    assert stats.peak <= mailbox_size


# -- (b) the supervisor against a model -------------------------------------------------------


class Harness:
    """The trio side, shared with the machine running in the worker thread."""

    nursery: ClassVar[trio.Nursery]
    clock: ClassVar[trio.testing.MockClock]


class SupervisorModel:
    """What the supervisor should look like, derived only from the documented rules."""

    def __init__(self, strategy: Strategy, max_restarts: int, within: float) -> None:
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.within = within
        self.order: list[str] = []  # registered children, start order
        self.kind: dict[str, Restart] = {}
        self.starts: defaultdict[str, int] = defaultdict(int)
        self.restarts = 0
        self.by_child: dict[str, int] = {}
        self.crashes = 0
        self.times: list[float] = []
        self.escalated: str | None = None  # the child whose exit escalated

    def add(self, name: str, restart: Restart) -> None:
        self.order.append(name)
        self.kind[name] = restart
        self.starts[name] += 1

    def stop(self, name: str) -> None:
        self.order.remove(name)

    def exited(self, name: str, crashed: bool, now: float) -> None:
        if crashed:
            self.crashes += 1
        restart = self.kind[name]
        if not (restart is Restart.PERMANENT or (restart is Restart.TRANSIENT and crashed)):
            self.order.remove(name)
            return
        self.times.append(now)
        while self.times[0] <= now - self.within:
            self.times.pop(0)
        if len(self.times) > self.max_restarts:
            self.escalated = name
            self.order = []
            return
        self.restarts += 1
        self.by_child[name] = self.by_child.get(name, 0) + 1
        if self.strategy is Strategy.ONE_FOR_ONE:
            group, others = [name], []
        elif self.strategy is Strategy.ONE_FOR_ALL:
            group, others = list(self.order), [n for n in self.order if n != name]
        else:
            group = self.order[self.order.index(name) :]
            others = group[1:]
        for other in others:
            if self.kind[other] is Restart.TEMPORARY:
                self.order.remove(other)
        for member in group:
            if member in self.order:
                self.starts[member] += 1


class SupervisorMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.sup: Supervisor | None = None
        self.model: SupervisorModel | None = None
        self.counter = StartCounter()
        self.escalation: BaseException | None = None
        self.next_id = 0

    # trio-side helpers (run through the portal) ------------------------------------------

    def portal(self, fn, *args):
        return trio.from_thread.run(fn, *args)

    async def _run_supervisor(self, sup: Supervisor, *, task_status=trio.TASK_STATUS_IGNORED):
        try:
            await sup.run(task_status=task_status)
        except RestartIntensityExceeded as exc:
            self.escalation = exc

    async def _tell_and_settle(self, name: str, message: str) -> float:
        assert self.sup is not None
        ref = self.sup.child(name).ref
        assert ref is not None
        ref.tell_nowait(message)
        now = trio.current_time()
        await trio.testing.wait_all_tasks_blocked()
        return now

    async def _settle(self, call=None, *args) -> None:
        if call is not None:
            await call(*args)
        await trio.testing.wait_all_tasks_blocked()

    def spec(self, restart: Restart) -> ChildSpec:
        name = f"c{self.next_id}"
        self.next_id += 1
        return ChildSpec(name, self.counter.actor(name), restart)

    @property
    def live(self) -> bool:
        return self.sup is not None and self.model is not None and self.model.escalated is None

    # rules -----------------------------------------------------------------------------

    @initialize(
        strategy=st.sampled_from(Strategy),
        max_restarts=st.integers(0, 3),
        within=st.sampled_from([1.0, 4.0]),
        restarts=st.lists(st.sampled_from(Restart), min_size=1, max_size=4),
    )
    def start_supervisor(self, strategy, max_restarts, within, restarts):
        specs = [self.spec(r) for r in restarts]
        self.model = SupervisorModel(strategy, max_restarts, within)
        for spec in specs:
            self.model.add(spec.name, spec.restart)
        self.sup = Supervisor(
            "sm", specs, strategy=strategy, max_restarts=max_restarts, within=within
        )
        self.portal(Harness.nursery.start, self._run_supervisor, self.sup)

    @precondition(lambda self: self.live and self.model.order)
    @rule(index=st.integers(0, 7), crashed=st.booleans())
    def child_exits(self, index, crashed):
        name = self.model.order[index % len(self.model.order)]
        now = self.portal(self._tell_and_settle, name, "crash" if crashed else "exit")
        self.model.exited(name, crashed, now)

    @precondition(lambda self: self.live and self.model.order)
    @rule(index=st.integers(0, 7))
    def stop_child(self, index):
        name = self.model.order[index % len(self.model.order)]
        self.portal(self._settle, self.sup.stop_child, name)
        self.model.stop(name)

    @precondition(lambda self: self.live)
    @rule(restart=st.sampled_from(Restart))
    def start_child(self, restart):
        spec = self.spec(restart)
        self.portal(self._settle, self.sup.start_child, spec)
        self.model.add(spec.name, restart)

    @precondition(lambda self: self.live)
    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0]))
    def time_passes(self, seconds):
        self.portal(self._settle, _jump, seconds)

    @rule()
    def settle(self):
        """Always available (after an escalation nothing else is), and changes nothing."""
        self.portal(self._settle)

    # the observable state matches the model ----------------------------------------------

    @invariant()
    def matches_model(self):
        if self.sup is None:
            return
        model = self.model
        stats = self.sup.statistics()
        assert self.sup.children() == model.order
        for name in model.order:
            handle = self.sup.child(name)
            assert handle.running and handle.ref is not None and not handle.ref.stopped
        assert dict(self.counter.starts) == dict(model.starts)
        assert stats.restarts == model.restarts
        assert stats.restarts_by_child == model.by_child
        assert stats.crashes == model.crashes
        assert stats.escalated == (model.escalated is not None)
        if model.escalated is not None:
            assert stats.state == "stopped"
            assert isinstance(self.escalation, RestartIntensityExceeded)
            cause = self.escalation.__cause__
            assert isinstance(cause, ChildCrashed) and cause.name == model.escalated
        else:
            assert stats.state == "running" and self.escalation is None

    def teardown(self):
        if self.sup is not None:
            self.portal(self.sup.aclose)
            assert self.sup.children() == []


async def _jump(seconds: float) -> None:
    Harness.clock.jump(seconds)


async def test_supervisor_state_matches_the_model(mock_clock):
    Harness.clock = mock_clock
    async with trio.open_nursery() as nursery:
        Harness.nursery = nursery
        await trio.to_thread.run_sync(
            partial(
                run_state_machine_as_test,
                SupervisorMachine,
                settings=settings(
                    max_examples=200,
                    stateful_step_count=40,
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                ),
            )
        )
