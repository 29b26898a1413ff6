"""Actors: one task, one bounded mailbox, one run loop; others hold an ActorRef.

RULES this module keeps (read these before changing anything below):

1. A mailbox is a trio memory channel with a buffer of ``mailbox_size`` >= 1 items. Never
   ``math.inf``. The ref holds both ends; nobody else ever gets a channel end, so closing
   the ref's send end is the only way producers learn the actor is gone.
2. Only the actor's own task calls ``handle()``. Messages are handled one at a time, in the
   order they entered the mailbox (FIFO).
3. The run loop drains with ``receive_nowait()`` and parks only when the mailbox is empty,
   so a burst costs no scheduler round trip per message. It calls
   ``trio.lowlevel.checkpoint()`` after every ``mailbox_size`` consecutive messages, so a
   busy actor cannot starve its neighbours.
4. ``stop()`` is synchronous and takes effect at once: it closes the send end (tasks blocked
   in ``tell``/``ask`` wake with :exc:`ActorStopped`), discards whatever is still queued
   (queued asks fail with :exc:`ActorStopped`), and the loop exits after the message it is
   handling now. From then on every ``tell``/``tell_nowait``/``ask`` raises ``ActorStopped``.
5. Every accepted ask gets exactly one answer: the handler's return value, ``AskTimeout``,
   ``ActorStopped`` (queue discarded, actor crashed or cancelled mid-handle; a crash is the
   ``__cause__``) or ``MailboxFull`` (evicted by ``DROP_OLDEST``). Nobody waits forever.
6. ``on_stop()`` always runs, in ``finally``, shielded, bounded by ``on_stop_timeout``.
7. ``trio.Cancelled`` is never a crash: a cancelled actor ends in state ``"stopped"``.
8. Counters are plain integer increments on the ref (no locks: one trio thread). ``handled``
   is added once per batch, so it can lag by up to ``mailbox_size`` while a batch runs.
9. Memory: an idle actor is one parked frame plus its channel. The run loop parks with
   ``wait_task_rescheduled`` (not inside ``receive()``), and producers wake it when they
   find ``ref._idle`` set; the long-lived ``run_actor`` frame keeps few locals.
"""

from __future__ import annotations

import enum
import logging
from typing import Any

import attrs
import outcome  # trio's own dependency: trio.lowlevel.reschedule takes an Outcome
import trio

from ._errors import ActorError, ActorStopped, AskTimeout, InvalidSpec, MailboxFull

__all__ = ["Actor", "ActorRef", "ActorStatistics", "Overflow", "run_actor"]

logger = logging.getLogger("actors")


class Overflow(enum.Enum):
    """What ``tell_nowait`` does when the mailbox is full.

    BLOCK:        ``tell`` waits for room; ``tell_nowait`` raises :exc:`MailboxFull`.
    FAIL:         ``tell`` and ``tell_nowait`` raise :exc:`MailboxFull`.
    DROP_NEWEST:  the new message is discarded (counted in ``dropped``).
    DROP_OLDEST:  the oldest queued message is discarded to make room (counted in ``dropped``).
    """

    BLOCK = "block"
    FAIL = "fail"
    DROP_NEWEST = "drop_newest"
    DROP_OLDEST = "drop_oldest"


# Actor states, as reported by ActorStatistics.state. Compared by identity.
STARTING = "starting"
RUNNING = "running"
STOPPING = "stopping"
STOPPED = "stopped"
CRASHED = "crashed"

_BLOCK = Overflow.BLOCK
_DROP_OLDEST = Overflow.DROP_OLDEST
_DROP_NEWEST = Overflow.DROP_NEWEST
_WouldBlock = trio.WouldBlock
_EndOfChannel = trio.EndOfChannel
_SEND_GONE = (trio.ClosedResourceError, trio.BrokenResourceError)
_checkpoint = trio.lowlevel.checkpoint
_park = trio.lowlevel.wait_task_rescheduled


class Actor:
    """Subclass this and implement :meth:`handle`.

    ``mailbox_size``, ``overflow`` and ``on_stop_timeout`` are class attributes; override them
    in a subclass, or per instance with the constructor keywords (subclasses that define
    ``__init__`` pass them on with ``super().__init__(**kwargs)``).

    ``ref`` is set by :func:`run_actor` before :meth:`on_start` runs.
    """

    # `ref` lives in a slot so a minimal actor needs no instance dict; subclasses still get
    # a __dict__ for their own attributes.
    __slots__ = ("ref", "__dict__", "__weakref__")

    mailbox_size: int = 64
    overflow: Overflow = Overflow.BLOCK
    on_stop_timeout: float = 2.0
    ref: ActorRef

    def __init__(
        self,
        *,
        mailbox_size: int | None = None,
        overflow: Overflow | None = None,
        on_stop_timeout: float | None = None,
    ) -> None:
        if mailbox_size is not None:
            self.mailbox_size = mailbox_size
        if overflow is not None:
            self.overflow = overflow
        if on_stop_timeout is not None:
            self.on_stop_timeout = on_stop_timeout

    async def on_start(self) -> None:
        """Runs in the actor's task before the first message; raising fails the start."""

    async def handle(self, message: Any) -> Any:
        """Handle one message. The return value answers ``ask()``; raising crashes the actor."""
        raise NotImplementedError(f"{type(self).__name__} must implement handle()")

    async def on_stop(self) -> None:
        """Always runs when the actor ends (normally, crashed or cancelled).

        Runs shielded from cancellation but bounded by ``on_stop_timeout`` seconds. ``self.ref``
        is already closed: ``tell`` to yourself raises :exc:`ActorStopped`.
        """

    def stop(self) -> None:
        """Ask the actor to stop: it finishes the current message, then exits. Not a checkpoint."""
        ref = getattr(self, "ref", None)
        if ref is not None:
            ref.stop()


@attrs.frozen
class ActorStatistics:
    """A snapshot of one actor, returned by :meth:`ActorRef.statistics`."""

    name: str
    mailbox_used: int
    """Messages queued now."""
    mailbox_size: int
    peak: int
    """The most messages that have been queued at once."""
    told: int
    """Messages accepted into the mailbox (tells and asks)."""
    dropped: int
    """Messages discarded by DROP_NEWEST / DROP_OLDEST."""
    failed_tells: int
    """Sends refused with MailboxFull (BLOCK's tell_nowait, FAIL, an ask under DROP_NEWEST)."""
    handled: int
    """Messages whose handle() returned. Added once per batch: while a batch runs it can lag
    by up to ``mailbox_size``; exact whenever the actor is idle or has ended."""
    state: str
    """One of "starting", "running", "stopping", "stopped", "crashed"."""
    discarded: int = 0
    """Messages still queued when the actor stopped, thrown away unhandled."""


class _Ask:
    """The envelope of one ask(): the message plus a one-shot answer slot.

    The asker parks itself with ``wait_task_rescheduled``; the actor answers with
    ``reschedule``: no channel, no Event, one scheduler hop. If the answer comes before the
    asker has parked (it was still leaving a blocked ``send``), it is kept in ``_outcome``.
    """

    __slots__ = ("message", "_task", "_outcome")

    def __init__(self, message: Any) -> None:
        self.message = message
        self._task: trio.lowlevel.Task | None = None
        self._outcome: outcome.Outcome[Any] | None = None

    def _abort(self, raise_cancel: Any) -> trio.lowlevel.Abort:
        # The asker gave up (timeout or cancellation): later answers go nowhere.
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _answer(self, result: outcome.Outcome[Any]) -> None:
        if self._outcome is None:
            self._outcome = result
            task = self._task
            if task is not None:
                self._task = None
                trio.lowlevel.reschedule(task, result)


def _stopped_error(message: str, cause: BaseException | None) -> ActorStopped:
    err = ActorStopped(message)
    if cause is not None:
        err.__cause__ = cause
    return err


class ActorRef:
    """The handle other code holds to talk to an actor. Cheap to copy around; hashable.

    Created by :func:`run_actor`; never construct one yourself.
    """

    __slots__ = (
        "_name",
        "_send",
        "_recv",
        "_overflow",
        "_size",
        "_state",
        "_told",
        "_dropped",
        "_failed",
        "_handled",
        "_discarded",
        "_stopped_event",
        "_idle",
        "__weakref__",
    )

    def __init__(
        self,
        name: str | type,
        send: trio.MemorySendChannel[Any],
        recv: trio.MemoryReceiveChannel[Any],
        overflow: Overflow,
        size: int,
    ) -> None:
        self._name = name  # the given name, or the actor's class (name computed on demand)
        self._send = send
        self._recv = recv
        self._overflow = overflow
        self._size = size
        self._state = STARTING
        self._told = 0
        self._dropped = 0
        self._failed = 0
        self._handled = 0
        self._discarded = 0
        self._stopped_event: trio.Event | None = None
        self._idle: trio.lowlevel.Task | None = None  # the actor's task while parked idle

    @property
    def name(self) -> str:
        """The name given to :func:`run_actor`, else ``"<ClassName>-<hex id>"``."""
        # Computed, not stored, so an unnamed idle actor costs no string.
        name = self._name
        if name.__class__ is str:
            return name  # type: ignore[return-value]
        return f"{name.__name__}-{id(self):x}"  # type: ignore[union-attr]

    def __repr__(self) -> str:
        return f"<ActorRef {self.name!r} {self._state}>"

    # -- sending ------------------------------------------------------------------------

    def tell_nowait(self, message: Any) -> None:
        """Put ``message`` in the mailbox without waiting. Not a checkpoint.

        When the mailbox is full the overflow policy applies: BLOCK and FAIL raise
        :exc:`MailboxFull`; DROP_NEWEST discards ``message``; DROP_OLDEST discards the oldest
        queued message. Raises :exc:`ActorStopped` if the actor is stopping or stopped.
        """
        try:
            self._send.send_nowait(message)
        except _WouldBlock:
            self._overflow_nowait(message, False)
            return
        except _SEND_GONE:
            raise self._stopped("tell to") from None
        self._told += 1
        if self._idle is not None:
            self._wake()

    async def tell(self, message: Any) -> None:
        """Put ``message`` in the mailbox. Always a checkpoint.

        Under BLOCK, waits for room (cancellation leaves the mailbox unchanged). Under the
        other policies, behaves like :meth:`tell_nowait` after a checkpoint. Raises
        :exc:`ActorStopped` if the actor is stopping or stopped, also while waiting.
        """
        if self._overflow is _BLOCK:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                self._send.send_nowait(message)
            except _WouldBlock:
                # Full, so the actor is busy, not idle: no wake-up needed afterwards.
                try:
                    await self._send.send(message)
                except _SEND_GONE:
                    raise self._stopped("tell to") from None
                self._told += 1
                return
            except _SEND_GONE:
                raise self._stopped("tell to") from None
            self._told += 1
            if self._idle is not None:
                self._wake()
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            await trio.lowlevel.checkpoint()
            self.tell_nowait(message)

    async def ask(self, message: Any, *, timeout: float) -> Any:
        """Send ``message`` and wait for the value ``handle()`` returns. Always a checkpoint.

        ``timeout`` (seconds, > 0) bounds the whole exchange, including waiting for mailbox
        room under BLOCK. Raises :exc:`AskTimeout` when it passes; :exc:`ActorStopped` at once
        if the actor is stopping or stopped, or when it stops before answering (with the crash
        as ``__cause__`` if ``handle()`` raised); :exc:`MailboxFull` under FAIL/DROP_NEWEST
        when full, or if DROP_OLDEST later evicts the request; :exc:`InvalidSpec` (a
        ``ValueError``) if ``timeout`` is not > 0.
        """
        if not timeout > 0:  # also rejects NaN
            raise InvalidSpec(f"ask timeout must be > 0 seconds, got {timeout!r}")
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._state is not RUNNING and self._state is not STARTING:
            raise self._stopped("ask to")
        envelope = _Ask(message)
        with trio.CancelScope(deadline=trio.current_time() + timeout):
            try:
                self._send.send_nowait(envelope)
                self._told += 1
            except _WouldBlock:
                if self._overflow is _BLOCK:
                    try:
                        await self._send.send(envelope)
                    except _SEND_GONE:
                        raise self._stopped("ask to") from None
                    self._told += 1
                else:
                    self._overflow_nowait(envelope, True)
            except _SEND_GONE:
                raise self._stopped("ask to") from None
            if self._idle is not None:
                self._wake()
            answer = envelope._outcome
            if answer is None:
                envelope._task = trio.lowlevel.current_task()
                return await trio.lowlevel.wait_task_rescheduled(envelope._abort)
            return answer.unwrap()
        raise AskTimeout(f"no reply from actor {self.name!r} within {timeout} s")

    def _wake(self) -> None:
        task = self._idle
        self._idle = None
        trio.lowlevel.reschedule(task)

    def _abort_idle(self, raise_cancel: Any) -> trio.lowlevel.Abort:
        self._idle = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _overflow_nowait(self, message: Any, is_ask: bool) -> None:
        policy = self._overflow
        if policy is _DROP_OLDEST:
            try:
                oldest = self._recv.receive_nowait()
            except (_WouldBlock, _EndOfChannel):  # pragma: no cover - full means non-empty
                oldest = None
            self._send.send_nowait(message)  # cannot block: we just made room
            self._told += 1
            self._dropped += 1
            if oldest.__class__ is _Ask:
                oldest._answer(
                    outcome.Error(
                        MailboxFull(f"ask evicted from the full mailbox of {self.name!r}")
                    )
                )
            return
        if policy is _DROP_NEWEST and not is_ask:
            self._dropped += 1
            return
        # BLOCK's tell_nowait, FAIL, or an ask under DROP_NEWEST (an ask is never dropped
        # silently: the asker would only find out at its timeout).
        self._failed += 1
        raise MailboxFull(f"mailbox of actor {self.name!r} is full ({self._size} messages)")

    def _stopped(self, what: str) -> ActorStopped:
        return ActorStopped(f"{what} actor {self.name!r}, which is {self._state}")

    # -- stopping -----------------------------------------------------------------------

    def stop(self) -> None:
        """Request a graceful stop. Not a checkpoint; idempotent.

        The actor finishes the message it is handling, then exits. Messages still queued are
        discarded (queued asks fail with :exc:`ActorStopped`); senders blocked on a full
        mailbox wake with ``ActorStopped``.
        """
        if self._state is RUNNING or self._state is STARTING:
            self._state = STOPPING
            self._send.close()
            self._discard_queued(None)
            if self._idle is not None:
                self._wake()  # the loop then sees EndOfChannel

    @property
    def stopped(self) -> bool:
        """True once the actor's task has finished (including ``on_stop``)."""
        return self._state is STOPPED or self._state is CRASHED

    async def wait_stopped(self) -> None:
        """Wait until the actor has finished. Always a checkpoint."""
        if self.stopped:
            await trio.lowlevel.checkpoint()
            return
        if self._stopped_event is None:
            self._stopped_event = trio.Event()
        await self._stopped_event.wait()

    def statistics(self) -> ActorStatistics:
        """A snapshot of the mailbox and the counters. Not a checkpoint."""
        chan = self._send.statistics()
        return ActorStatistics(
            name=self.name,
            mailbox_used=chan.current_buffer_used,
            mailbox_size=self._size,
            peak=chan.peak_buffer_used,
            told=self._told,
            dropped=self._dropped,
            failed_tells=self._failed,
            handled=self._handled,
            state=self._state,
            discarded=self._discarded,
        )

    def _discard_queued(self, cause: BaseException | None) -> None:
        # Only called with the send end closed, so no blocked sender can refill the buffer.
        recv = self._recv
        while True:
            try:
                message = recv.receive_nowait()
            except (_WouldBlock, _EndOfChannel, trio.ClosedResourceError):
                return
            self._discarded += 1
            if message.__class__ is _Ask:
                message._answer(
                    outcome.Error(
                        _stopped_error(f"actor {self.name!r} stopped before answering", cause)
                    )
                )

    def _close(self, error: BaseException | None) -> None:
        """The run loop is over: refuse new messages and answer every queued ask."""
        if self._state is RUNNING or self._state is STARTING:
            self._state = STOPPING
        self._send.close()
        self._discard_queued(error if isinstance(error, Exception) else None)
        self._recv.close()
        self._idle = None

    def _finish(self, crashed: bool) -> None:
        self._state = CRASHED if crashed else STOPPED
        if self._stopped_event is not None:
            self._stopped_event.set()


def _open_mailbox(actor: Actor, name: str | None) -> ActorRef:
    """Validate ``actor``, create its mailbox and ref, and set ``actor.ref``."""
    if not isinstance(actor, Actor):
        raise InvalidSpec(f"run_actor() needs an Actor instance, got {actor!r}")
    size = actor.mailbox_size
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise InvalidSpec(f"mailbox_size must be an int >= 1, got {size!r}")
    overflow = actor.overflow
    if not isinstance(overflow, Overflow):
        raise InvalidSpec(f"overflow must be an Overflow, got {overflow!r}")
    timeout = actor.on_stop_timeout
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise InvalidSpec(f"on_stop_timeout must be > 0 seconds, got {timeout!r}")
    previous = getattr(actor, "ref", None)
    if isinstance(previous, ActorRef) and not previous.stopped:
        raise ActorError(f"actor {previous.name!r} is already running")
    send, recv = trio.open_memory_channel(size)
    ref = ActorRef(type(actor) if name is None else name, send, recv, overflow, size)
    actor.ref = ref
    return ref


async def run_actor(
    actor: Actor,
    *,
    name: str | None = None,
    task_status: trio.TaskStatus[ActorRef] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``actor`` until it stops, crashes or is cancelled.

    Sets ``actor.ref``, runs ``on_start()``, then calls ``task_status.started(ref)``, so
    ``ref = await nursery.start(run_actor, MyActor())`` returns a ref to a started actor.
    Returns normally after a stop; re-raises whatever ``handle()`` raised (the actor crashed)
    and ``Cancelled``. ``on_stop()`` runs in every case.

    To name the actor through ``nursery.start``, bind the name first:
    ``nursery.start(functools.partial(run_actor, name="x"), actor)``. (A ``name=`` keyword
    given to ``nursery.start`` itself is trio's task name and never reaches ``run_actor``.)
    """
    # This frame lives as long as the actor: it keeps few locals (RULE 9; the prologue and
    # the ending are helpers).
    ref = _open_mailbox(actor, name)
    error: BaseException | None = None
    current: _Ask | None = None  # the ask being handled, if any
    i = 0  # messages finished in the current batch, not yet added to ref._handled
    try:
        await actor.on_start()
        if ref._state is STARTING:
            ref._state = RUNNING
        task_status.started(ref)

        # The hot loop; see RULES 2 and 3. `handled` is added to the ref once per batch
        # (i = messages finished in this batch) instead of once per message.
        recv = ref._recv
        size = ref._size
        while True:
            for i in range(size):
                try:
                    message = recv.receive_nowait()
                except _WouldBlock:
                    break  # leaves the except block first: never await inside it
                except _EndOfChannel:  # stop() closed the mailbox and it is drained
                    ref._handled += i
                    return
                if message.__class__ is _Ask:
                    current = message
                    result = await actor.handle(message.message)
                    current = None
                    message._answer(outcome.Value(result))
                else:
                    await actor.handle(message)
            else:
                # A whole mailbox's worth without pausing: let the other tasks run.
                ref._handled += size
                i = 0
                await _checkpoint()
                continue
            # Empty: park until a producer (or stop()) reschedules us.
            ref._handled += i
            i = 0
            ref._idle = trio.lowlevel.current_task()
            await _park(ref._abort_idle)
    except BaseException as exc:
        error = exc
        ref._handled += i  # the messages this batch finished before the failure
        if current is not None:
            _fail_ask(ref, current, exc)
        raise
    finally:
        current = None
        await _end(actor, ref, error)


def _fail_ask(ref: ActorRef, ask: _Ask, exc: BaseException) -> None:
    what = "was cancelled" if isinstance(exc, trio.Cancelled) else "crashed"
    ask._answer(
        outcome.Error(_stopped_error(f"actor {ref.name!r} {what} while handling this ask", exc))
    )


async def _end(actor: Actor, ref: ActorRef, error: BaseException | None) -> None:
    """Close the mailbox, answer queued asks, run on_stop, mark the ref finished."""
    ref._close(error)
    crashed = isinstance(error, Exception)
    try:
        await _run_on_stop(actor, ref, error)
    except BaseException:
        crashed = True
        raise
    finally:
        ref._finish(crashed)


async def _run_on_stop(actor: Actor, ref: ActorRef, error: BaseException | None) -> None:
    with trio.CancelScope(shield=True) as scope:
        scope.deadline = trio.current_time() + actor.on_stop_timeout
        try:
            await actor.on_stop()
        except Exception as exc:
            if error is None:
                raise  # on_stop failing after a clean run is the actor's crash
            logger.error(
                "actor %r: on_stop() raised while the actor was ending", ref.name, exc_info=exc
            )
    if scope.cancelled_caught:
        logger.warning(
            "actor %r: on_stop() did not finish within %s s and was cancelled",
            ref.name,
            actor.on_stop_timeout,
        )
