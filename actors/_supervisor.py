"""Supervisors: own a nursery, start children from specs, restart them by a strategy.

RULES this module keeps (read these before changing anything below):

1. Ownership. A running supervisor owns exactly one nursery. Every child incarnation is one
   task in it, wrapped by ``_run_incarnation``, inside its own CancelScope (the only handle
   by which the supervisor cancels that one child). Nothing a child raises reaches the
   nursery: the wrapper turns every ``Exception`` into a "crash" record. ``Cancelled``,
   ``KeyboardInterrupt`` and ``SystemExit`` always propagate and are never crashes.
2. ``except*``. A child that runs its own nursery can fail with a group mixing errors and
   ``Cancelled``. The wrapper splits it: the errors are the crash, ``Cancelled`` continues to
   the scope that was cancelled. A plain ``except Exception`` would let the whole group reach
   our nursery and take every sibling down.
3. Start order. Initial children start one after another, each fully started (its
   ``task_status.started()`` called) before the next. A child that fails before calling
   ``started()`` fails ``start_child()`` / ``run()`` with :exc:`ChildCrashed` instead of
   being restarted: a child that cannot start is a configuration problem for the caller.
   ``start_child_soon`` (task children that start at once, e.g. one per connection) has no
   caller waiting: there, an exit before ``started()`` is an ordinary crash.
4. One decision point. A child's exit is classified synchronously in its own wrapper task:
   no restart needed -> removed from the registry right there (cheap: 10k TEMPORARY
   connection children churn without waking anyone); restart needed -> appended to
   ``_pending`` (holds each child at most once, so it is bounded by the child count) and the
   supervisor's own task is woken. Only that task restarts, stops siblings for a strategy,
   counts intensity and escalates, one request at a time.
5. Every crash is logged once at ERROR with exc_info on the "actors" logger, naming the
   supervisor and the child; a crash that escalates is also raised. Never swallowed.
6. Shutdown of one child: stop request (``ref.stop()`` / ``Supervisor.stop()``; a task child
   has no stop protocol and is cancelled at once) -> its scope's deadline set to now +
   ``spec.shutdown_timeout`` -> trio cancels it when that passes. No extra task per stop.
   Whole-supervisor shutdown: children in reverse start order, one at a time, the whole
   sequence bounded by ``Supervisor.shutdown_timeout``; then the nursery is cancelled.
7. Registry hygiene: every child added to ``_children`` is removed in exactly one place
   (``_forget``), and ``run()``'s ``finally`` forgets whatever is left.
"""

from __future__ import annotations

import enum
import inspect
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from ._actor import Actor, ActorRef
from ._actor import run_actor as _run_actor
from ._errors import (
    ActorError,
    ActorStopped,
    ChildCrashed,
    InvalidSpec,
    RestartIntensityExceeded,
)

__all__ = [
    "ChildHandle",
    "ChildSpec",
    "Restart",
    "Strategy",
    "Supervisor",
    "SupervisorStatistics",
    "open_supervisor",
]

logger = logging.getLogger("actors")


class Strategy(enum.Enum):
    """Which children restart when one of them has to restart."""

    ONE_FOR_ONE = "one_for_one"
    """Only the child that exited."""
    ONE_FOR_ALL = "one_for_all"
    """All children: the others are stopped (reverse start order), then all start again."""
    REST_FOR_ONE = "rest_for_one"
    """The child that exited and every child started after it."""


class Restart(enum.Enum):
    """When a child is restarted after it ends."""

    PERMANENT = "permanent"
    """Always (after a crash and after a normal return or stop from inside)."""
    TRANSIENT = "transient"
    """Only after a crash (an exception)."""
    TEMPORARY = "temporary"
    """Never. Also removed (not restarted) when a strategy stops its siblings."""


def _check_timeout(what: str, value: object) -> None:
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or math.isnan(value)
        or value <= 0
    ):
        raise InvalidSpec(f"{what} must be a number > 0, got {value!r}")


@attrs.frozen
class ChildSpec:
    """How to start one child and what to do when it ends.

    ``start`` is either a zero-argument factory returning an :class:`Actor` or a
    :class:`Supervisor` (called anew for every restart), or an async function
    ``async def f(*, task_status=trio.TASK_STATUS_IGNORED)`` (a "task child"), which must
    call ``task_status.started()`` once it is ready.
    """

    name: str
    start: Callable[..., Any]
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float = 5.0
    """Seconds between the stop request and cancellation when this child is stopped."""

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidSpec(f"child name must be a non-empty str, got {self.name!r}")
        if not callable(self.start):
            raise InvalidSpec(f"child {self.name!r}: start must be callable, got {self.start!r}")
        if not isinstance(self.restart, Restart):
            raise InvalidSpec(
                f"child {self.name!r}: restart must be a Restart, got {self.restart!r}"
            )
        _check_timeout(f"child {self.name!r}: shutdown_timeout", self.shutdown_timeout)


def _is_async_callable(fn: Callable[..., Any]) -> bool:
    # inspect.iscoroutinefunction unwraps functools.partial; also accept objects whose
    # __call__ is async.
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)
    )


# Why a child's current incarnation is being stopped.
_FINAL = "final"  # stop_child / ChildHandle.stop / shutdown: never restart, remove
_RESTART = "restart"  # a strategy stops it; the supervisor's task starts it again

# Kinds of child, known once the incarnation has called start().
_TASK = "task"
_ACTOR = "actor"
_SUPERVISOR = "supervisor"


class ChildHandle:
    """One supervised child, stable across its restarts.

    ``ref`` is the current :class:`ActorRef` for an actor child (it changes on each restart),
    else None. ``value`` is whatever the current incarnation passed to
    ``task_status.started()``.
    """

    __slots__ = (
        "name",
        "spec",
        "ref",
        "value",
        "_supervisor",
        "_is_task",
        "_kind",
        "_scope",
        "_target",
        "_running",
        "_started",
        "_stop_mode",
        "_exit_event",
        "_removed",
        "_removed_event",
        "__weakref__",
    )

    def __init__(self, supervisor: Supervisor, spec: ChildSpec) -> None:
        self.name = spec.name
        self.spec = spec
        self.ref: ActorRef | None = None
        self.value: Any = None
        self._supervisor = supervisor
        self._is_task = _is_async_callable(spec.start)
        self._kind = _TASK if self._is_task else None
        self._scope: trio.CancelScope | None = None
        self._target: ActorRef | Supervisor | None = None  # what .stop() is sent to
        self._running = False  # an incarnation task exists
        self._started = False  # ... and it has called task_status.started()
        self._stop_mode: str | None = None
        self._exit_event: trio.Event | None = None  # current incarnation ended (lazy)
        self._removed = False
        self._removed_event: trio.Event | None = None  # lazy

    def __repr__(self) -> str:
        state = "stopped" if self._removed else ("running" if self._running else "restarting")
        return f"<ChildHandle {self.name!r} {state}>"

    @property
    def stopped(self) -> bool:
        """True once the child has ended for good and left its supervisor."""
        return self._removed

    @property
    def running(self) -> bool:
        """True while an incarnation of the child is running (False while it restarts)."""
        return self._running and not self._removed

    def stop(self) -> None:
        """Stop the child for good (no restart). Not a checkpoint; idempotent.

        Graceful: an actor or supervisor child gets a stop request and ``spec.shutdown_timeout``
        seconds to finish before it is cancelled. A task child is cancelled at once.
        """
        self._supervisor._request_stop(self, _FINAL)

    async def wait_stopped(self) -> None:
        """Wait until :attr:`stopped`. Always a checkpoint."""
        if self._removed:
            await trio.lowlevel.checkpoint()
            return
        if self._removed_event is None:
            self._removed_event = trio.Event()
        await self._removed_event.wait()


class _ChildStatus(trio.TaskStatus[Any]):
    """The task_status a child sees: records the start, then tells the supervisor.

    It lets go of trio's status once ``started()`` has passed it on: trio's status refers to
    the task that called ``start_child`` (through its nursery), and a child keeps its
    task_status for its whole life. A child started from a short-lived task (an HTTP
    connection's, for a WebSocket) would otherwise keep that finished task, its coroutine,
    nursery and cancel status alive: about 2 kB per connection.
    """

    __slots__ = ("_handle", "_outer")

    def __init__(self, handle: ChildHandle, outer: trio.TaskStatus[None]) -> None:
        self._handle = handle
        self._outer: trio.TaskStatus[None] | None = outer

    def started(self, value: Any = None) -> None:
        handle = self._handle
        if handle._started:
            raise RuntimeError(f"child {handle.name!r} called task_status.started() twice")
        handle._started = True
        handle.value = value
        if handle._kind is _ACTOR:
            handle.ref = value
            handle._target = value
        if handle._stop_mode is not None and handle._target is not None:
            handle._target.stop()  # a stop was requested while it was starting
        outer, self._outer = self._outer, None
        outer.started()  # type: ignore[union-attr]  # set until the first started()


@attrs.frozen
class SupervisorStatistics:
    """A snapshot of one supervisor, returned by :meth:`Supervisor.statistics`."""

    name: str
    children: int
    """Children registered now (running or about to restart)."""
    restarts: int
    """Restarts performed, each counted once against the intensity limit."""
    restarts_by_child: dict[str, int]
    """Restarts performed because of each child (the one whose exit triggered them)."""
    state: str
    """One of "new", "starting", "running", "stopping", "stopped"."""
    escalated: bool
    """True if the supervisor gave up with RestartIntensityExceeded."""
    crashes: int = 0
    """Child crashes seen (logged), whether or not they led to a restart."""


class Supervisor:
    """Runs children from :class:`ChildSpec`s and restarts them by ``strategy``.

    ``max_restarts`` restarts are allowed within any ``within`` seconds; one more and the
    supervisor stops its children and raises :exc:`RestartIntensityExceeded` out of
    :meth:`run`. ``shutdown_timeout`` bounds a whole graceful shutdown.

    A Supervisor object runs once; a parent restarts a child supervisor by calling its
    spec's factory again.
    """

    def __init__(
        self,
        name: str,
        children: Sequence[ChildSpec] = (),
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        max_restarts: int = 3,
        within: float = 5.0,
        shutdown_timeout: float = 5.0,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidSpec(f"supervisor name must be a non-empty str, got {name!r}")
        if isinstance(children, (str, bytes)) or not isinstance(children, Sequence):
            raise InvalidSpec(f"supervisor {name!r}: children must be a sequence of ChildSpec")
        seen: set[str] = set()
        for spec in children:
            if not isinstance(spec, ChildSpec):
                raise InvalidSpec(f"supervisor {name!r}: {spec!r} is not a ChildSpec")
            if spec.name in seen:
                raise InvalidSpec(f"supervisor {name!r}: duplicate child name {spec.name!r}")
            seen.add(spec.name)
        if not isinstance(strategy, Strategy):
            raise InvalidSpec(f"supervisor {name!r}: strategy must be a Strategy, got {strategy!r}")
        if not isinstance(max_restarts, int) or isinstance(max_restarts, bool) or max_restarts < 0:
            raise InvalidSpec(
                f"supervisor {name!r}: max_restarts must be an int >= 0, got {max_restarts!r}"
            )
        _check_timeout(f"supervisor {name!r}: within", within)
        _check_timeout(f"supervisor {name!r}: shutdown_timeout", shutdown_timeout)
        self.name = name
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.within = float(within)
        self.shutdown_timeout = float(shutdown_timeout)
        self._specs = tuple(children)
        self._children: dict[str, ChildHandle] = {}  # insertion order == start order
        self._pending: deque[tuple[ChildHandle, BaseException | None]] = deque()
        self._wakeup = trio.lowlevel.ParkingLot()
        self._restart_times: deque[float] = deque()  # at most max_restarts + 1 entries
        self._restarts = 0
        self._restarts_by_child: dict[str, int] = {}
        self._crashes = 0
        self._state = "new"
        self._escalated = False
        self._stop_requested = False
        self._nursery: trio.Nursery | None = None
        self._done = trio.Event()

    def __repr__(self) -> str:
        return f"<Supervisor {self.name!r} {self._state} children={len(self._children)}>"

    # -- public API -----------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start the initial children in order, call ``task_status.started(self)``, then
        supervise until :meth:`stop` / :meth:`aclose` or escalation.

        Returns after a graceful shutdown. Raises :exc:`RestartIntensityExceeded` (cause: the
        last :exc:`ChildCrashed`) when restarts exceed the limit, or :exc:`ChildCrashed` when
        an initial child fails to start; both after stopping the children already running.
        """
        if self._state != "new":
            raise ActorError(f"supervisor {self.name!r} has already run; create a new one")
        self._state = "starting"
        failure: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    for spec in self._specs:
                        if self._stop_requested:
                            break
                        await self._add_child(spec)
                except ChildCrashed as exc:
                    failure = exc
                if failure is None:
                    task_status.started(self)
                    if not self._stop_requested:
                        self._state = "running"
                        failure = await self._supervise()
                self._state = "stopping"
                await self._shutdown_children()
                nursery.cancel_scope.cancel()  # whatever outlived the bounded shutdown
        finally:
            self._state = "stopped"
            self._nursery = None
            self._pending.clear()
            for handle in list(self._children.values()):
                self._forget(handle)
            self._done.set()
        if failure is not None:
            raise failure

    async def start_child(self, spec: ChildSpec) -> ChildHandle:
        """Add and start a child; return once it has started. Always a checkpoint.

        Raises :exc:`InvalidSpec` for a bad spec or a name already in use,
        :exc:`ActorStopped` if the supervisor is stopping or stopped, :exc:`ChildCrashed`
        if the child fails before it calls ``task_status.started()``.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if not isinstance(spec, ChildSpec):
            raise InvalidSpec(f"start_child() needs a ChildSpec, got {spec!r}")
        if self._state == "new":
            raise ActorError(f"supervisor {self.name!r} is not running yet")
        if self._stop_requested or self._state not in ("starting", "running"):
            raise ActorStopped(f"supervisor {self.name!r} is {self._state}")
        return await self._add_child(spec)

    def start_child_soon(self, spec: ChildSpec) -> ChildHandle:
        """Add a task child and start it soon, without waiting for it. Not a checkpoint.

        For the many short-setup children of a busy supervisor (one per connection): no
        ``nursery.start`` (a nursery, a task status and a reparenting per child) and no
        round trip to the child before returning; the child's task is spawned straight into
        this supervisor's nursery and runs on the scheduler's next pass. ``spec.start`` must
        be an async function (a task child) and should call ``task_status.started()`` at
        once: as no caller waits for the start, a child that fails or returns before calling
        it is a crash like any other (logged, then restarted by ``spec.restart``), not a
        :exc:`ChildCrashed` raised here. Raises :exc:`InvalidSpec` (bad spec, name in use, not
        a task child), :exc:`ActorError` / :exc:`ActorStopped` as :meth:`start_child` does.
        """
        if not isinstance(spec, ChildSpec):
            raise InvalidSpec(f"start_child_soon() needs a ChildSpec, got {spec!r}")
        if self._state == "new":
            raise ActorError(f"supervisor {self.name!r} is not running yet")
        if self._stop_requested or self._state not in ("starting", "running"):
            raise ActorStopped(f"supervisor {self.name!r} is {self._state}")
        if spec.name in self._children:
            raise InvalidSpec(f"supervisor {self.name!r} already has a child {spec.name!r}")
        handle = ChildHandle(self, spec)
        if not handle._is_task:
            raise InvalidSpec(f"child {spec.name!r}: start_child_soon() runs task children only")
        nursery = self._nursery
        if nursery is None:
            raise ActorStopped(f"supervisor {self.name!r} is {self._state}: nowhere to start {spec.name!r}")
        self._children[spec.name] = handle
        scope = handle._scope = trio.CancelScope()
        handle._running = True
        nursery.start_soon(self._run_incarnation, handle, scope, True)
        return handle

    async def stop_child(self, name: str) -> None:
        """Stop the named child for good and wait until it has gone. Always a checkpoint.

        Graceful, bounded by the child's ``shutdown_timeout`` before it is cancelled (a task
        child is cancelled at once). Stopping a name that is not a current child does nothing.
        """
        handle = self._children.get(name)
        if handle is None:
            await trio.lowlevel.checkpoint()
            return
        handle.stop()
        await handle.wait_stopped()

    def stop(self) -> None:
        """Request a graceful shutdown. Not a checkpoint; idempotent. See :meth:`aclose`."""
        if not self._stop_requested:
            self._stop_requested = True
            self._wakeup.unpark_all()

    async def aclose(self) -> None:
        """Shut down gracefully and wait until :meth:`run` has finished. Always a checkpoint.

        Children stop in reverse start order, each with a stop request and its
        ``shutdown_timeout``; the whole sequence is bounded by ``self.shutdown_timeout``, after
        which everything left is cancelled.
        """
        self.stop()
        if self._state == "new":
            self._state = "stopped"
            self._done.set()
        if self._done.is_set():
            await trio.lowlevel.checkpoint()
            return
        await self._done.wait()

    def children(self) -> list[str]:
        """Names of the current children, in start order. Not a checkpoint."""
        return list(self._children)

    def child(self, name: str) -> ChildHandle:
        """The handle of a current child. Raises KeyError if there is none by that name."""
        return self._children[name]

    def statistics(self) -> SupervisorStatistics:
        """A snapshot of the children and restart counters. Not a checkpoint."""
        return SupervisorStatistics(
            name=self.name,
            children=len(self._children),
            restarts=self._restarts,
            restarts_by_child=dict(self._restarts_by_child),
            state=self._state,
            escalated=self._escalated,
            crashes=self._crashes,
        )

    # -- children: start, run, exit ---------------------------------------------------------

    async def _add_child(self, spec: ChildSpec) -> ChildHandle:
        if spec.name in self._children:
            raise InvalidSpec(f"supervisor {self.name!r} already has a child {spec.name!r}")
        handle = ChildHandle(self, spec)
        self._children[spec.name] = handle
        try:
            await self._start_incarnation(handle)
        except BaseException:
            self._forget(handle)
            raise
        return handle

    async def _start_incarnation(self, handle: ChildHandle) -> None:
        if self._nursery is None:  # run() and start_child() check the state before this
            raise ActorStopped(
                f"supervisor {self.name!r} is {self._state}: nowhere to start {handle.name!r}"
            )
        scope = handle._scope = trio.CancelScope()
        handle._target = None
        handle._kind = _TASK if handle._is_task else None
        handle._stop_mode = None
        handle._started = False
        handle._exit_event = None
        handle._running = True
        await self._nursery.start(self._run_incarnation, handle, scope)

    async def _run_incarnation(
        self,
        handle: ChildHandle,
        scope: trio.CancelScope,
        soon: bool = False,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        # ``soon``: spawned by start_child_soon, so nobody waits for the start: an exit
        # before started() is a crash of the child, never raised into our nursery.
        status = _ChildStatus(handle, task_status)
        del task_status  # only ``status`` refers to it, and lets go once started (see there)
        crash: BaseException | None = None
        try:
            with scope:
                try:
                    try:
                        if handle._is_task:  # most children (one per connection): one frame less
                            await handle.spec.start(task_status=status)
                        else:
                            await self._run_child(handle, status)
                    except Exception as exc:  # the exact object: an error, or a group of errors
                        crash = exc
                except* Exception as errors:  # a group mixing errors with Cancelled (RULE 2)
                    crash = errors
        except BaseException:
            # Cancelled from outside this child's scope (the supervisor itself is going away):
            # not a crash of this child, but an error mixed into it is still reported.
            if crash is not None:
                self._report_crash(handle, crash)
            raise
        finally:
            handle._running = False
            if handle._exit_event is not None:
                handle._exit_event.set()
        if not handle._started and not soon:
            if crash is None and handle._stop_mode is not None:
                status._outer.started()  # type: ignore[union-attr]  # stopped while starting: start() returns, child is gone
            else:
                if crash is None:
                    crash = ActorError(
                        f"child {handle.name!r} returned without calling task_status.started()"
                    )
                raise ChildCrashed(handle.name) from crash
        elif not handle._started and crash is None and handle._stop_mode is None:
            crash = ActorError(f"child {handle.name!r} returned without calling task_status.started()")
        self._child_exited(handle, crash)

    async def _run_child(self, handle: ChildHandle, status: _ChildStatus) -> None:
        """Run an actor or supervisor child (task children run in ``_run_incarnation``)."""
        child = handle.spec.start()
        if isinstance(child, Actor):
            handle._kind = _ACTOR
            await _run_actor(child, name=handle.name, task_status=status)
        elif isinstance(child, Supervisor):
            handle._kind = _SUPERVISOR
            handle._target = child
            if handle._stop_mode is not None:
                child.stop()
            await child.run(task_status=status)
        else:
            if inspect.iscoroutine(child):
                child.close()
            raise InvalidSpec(
                f"child {handle.name!r}: start() returned {child!r}; expected an Actor or a "
                "Supervisor (or make start an async function to run a task child)"
            )

    def _child_exited(self, handle: ChildHandle, crash: BaseException | None) -> None:
        """Classify an ended incarnation (runs in the child's wrapper task; RULE 4)."""
        if crash is not None:
            self._report_crash(handle, crash)
        mode = handle._stop_mode
        if mode is _RESTART:
            return  # the supervisor's task is waiting for this exit and will restart it
        restart = handle.spec.restart
        if (
            mode is None
            and not self._stop_requested
            and self._state in ("starting", "running")
            and (
                restart is Restart.PERMANENT
                or (restart is Restart.TRANSIENT and crash is not None)
            )
        ):
            self._pending.append((handle, crash))
            self._wakeup.unpark_all()
        else:
            self._forget(handle)

    def _report_crash(self, handle: ChildHandle, crash: BaseException) -> None:
        self._crashes += 1
        logger.error(
            "supervisor %r: child %r crashed: %r", self.name, handle.name, crash, exc_info=crash
        )

    def _forget(self, handle: ChildHandle) -> None:
        if handle._removed:
            return
        handle._removed = True
        if self._children.get(handle.name) is handle:
            del self._children[handle.name]
        if handle._removed_event is not None:
            handle._removed_event.set()

    # -- stopping children --------------------------------------------------------------------

    def _request_stop(self, handle: ChildHandle, mode: str) -> None:
        if handle._removed:
            return
        if handle._stop_mode is not _FINAL:
            handle._stop_mode = mode
        if not handle._running:
            # Waiting for a restart (pending, or between a strategy's stop and start).
            if mode is _FINAL:
                self._forget(handle)
            return
        scope = handle._scope
        if scope is None:  # _running is set only after _start_incarnation made the scope
            raise RuntimeError(
                f"child {handle.name!r} of supervisor {self.name!r} runs without a cancel scope"
            )
        if handle._kind is _TASK:
            scope.cancel()  # a task child has no stop protocol
            return
        target = handle._target
        if target is not None:
            target.stop()
        # else: not started yet; _ChildStatus.started() forwards the stop.
        deadline = trio.current_time() + handle.spec.shutdown_timeout
        if deadline < scope.deadline:
            scope.deadline = deadline

    async def _stop_and_wait(self, handle: ChildHandle, mode: str) -> None:
        self._request_stop(handle, mode)
        if handle._running:
            if handle._exit_event is None:
                handle._exit_event = trio.Event()
            await handle._exit_event.wait()

    async def _shutdown_children(self) -> None:
        with trio.move_on_after(self.shutdown_timeout):
            for handle in reversed(list(self._children.values())):
                await self._stop_and_wait(handle, _FINAL)

    # -- the supervisor's own task: restarts, strategies, intensity ---------------------------

    async def _supervise(self) -> BaseException | None:
        """Serve restart requests until stopped; return the escalation error, if any."""
        while not self._stop_requested:
            if not self._pending:
                await self._wakeup.park()
                continue
            handle, crash = self._pending.popleft()
            if handle._removed or handle._running:
                continue  # stopped for good meanwhile, or already restarted by a strategy
            failure = await self._restart(handle, crash)
            if failure is not None:
                return failure
        return None

    async def _restart(
        self, handle: ChildHandle, crash: BaseException | None
    ) -> BaseException | None:
        now = trio.current_time()
        times = self._restart_times
        times.append(now)
        while times[0] <= now - self.within:
            times.popleft()
        if len(times) > self.max_restarts:
            return self._escalate(handle, crash)
        self._restarts += 1
        self._restarts_by_child[handle.name] = self._restarts_by_child.get(handle.name, 0) + 1

        if self.strategy is Strategy.ONE_FOR_ONE:
            group = [handle]
        else:
            order = list(self._children.values())
            if self.strategy is Strategy.ONE_FOR_ALL:
                group = order
                others = [h for h in order if h is not handle]
            else:  # REST_FOR_ONE
                group = order[order.index(handle) :]
                others = group[1:]
            for other in reversed(others):
                mode = _FINAL if other.spec.restart is Restart.TEMPORARY else _RESTART
                await self._stop_and_wait(other, mode)
        for member in group:
            if self._stop_requested:
                break
            if member._removed or member._running:
                continue
            try:
                await self._start_incarnation(member)
            except ChildCrashed as exc:
                # Failed before started(): one more crash of that child; it goes back in the
                # queue and its next restart counts against the intensity limit.
                cause = exc.__cause__
                self._crashes += 1
                logger.error(
                    "supervisor %r: child %r failed to restart: %r",
                    self.name,
                    member.name,
                    cause,
                    exc_info=cause,
                )
                self._pending.append((member, cause))
        return None

    def _escalate(self, handle: ChildHandle, crash: BaseException | None) -> BaseException:
        self._escalated = True
        if crash is None:
            last = ChildCrashed(handle.name, f"child {handle.name!r} exited (restart: permanent)")
        else:
            last = ChildCrashed(handle.name)
            last.__cause__ = crash
        failure = RestartIntensityExceeded(
            f"supervisor {self.name!r}: more than {self.max_restarts} restarts within "
            f"{self.within} s (last: child {handle.name!r}); giving up"
        )
        failure.__cause__ = last
        logger.error("%s", failure)
        return failure


@asynccontextmanager
async def open_supervisor(
    name: str, children: Sequence[ChildSpec] = (), **kwargs: Any
) -> AsyncIterator[Supervisor]:
    """Run a :class:`Supervisor` in a nursery for the duration of the ``async with`` block.

    Entering starts the initial children (all started before the body runs); if one fails
    to start, entering raises its :exc:`ChildCrashed` (naked: the body never ran). Leaving
    shuts down gracefully (:meth:`Supervisor.aclose`). If the supervisor escalates while the
    body runs, the body is cancelled and the error leaves the block inside an ExceptionGroup
    (as from any trio nursery): catch it with ``except* RestartIntensityExceeded``.
    """
    supervisor = Supervisor(name, children, **kwargs)
    start_failure: ChildCrashed | None = None
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(supervisor.run)
        except ChildCrashed as exc:
            start_failure = exc  # run() has already stopped what it had started
        else:
            try:
                yield supervisor
            finally:
                await supervisor.aclose()
    if start_failure is not None:
        raise start_failure
