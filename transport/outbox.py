"""A connection's bounded queue of encoded frames, drained by its writer task.

Rules:
- Bounded in count *and* bytes. ``put_nowait`` never blocks and never grows past the
  bounds: it returns False instead and the caller applies its slow-consumer policy. A
  fan-out sender therefore never waits for a slow reader.
- Control frames (pong, ping, close) have their own small lane that the writer always
  drains first, so a full data lane cannot delay a pong or a close.
- After ``close_data()`` no data frame is accepted; control frames still are, so the
  close frame can follow the last data frame.
- The writer takes *everything* queued in one ``get_batch`` so it can send it with one
  ``send_all``: the cost of a wake-up and a syscall is shared by the whole batch.
- Memory matters (one per connection): plain lists (swapped, never popped from the left)
  and a single parked-task slot instead of deques and a ParkingLot.
- The connection's reader may *hold* the writer's wake-ups while it runs without yielding
  (``hold``): what it queues in that turn is then sent by the reader itself at the end of
  the turn (``take_nowait`` + one send, when the writer is parked with nothing in flight) or
  handed to the writer by ``release``. Nothing else runs during such a turn (trio is
  single-threaded and the turn has no checkpoint), so the hold can delay no other task's
  frames; a request/response round trip then costs one scheduler pass instead of three.
- A data frame may carry a deadline (``expires_at``, trio time): past it, the writer drops
  it instead of sending it (counted in ``expired``). Frames without one cost nothing: the
  deadline list exists only while a frame with a deadline is queued, and the writer reads
  the clock only then. Control frames never expire.
"""

from __future__ import annotations

import attrs
import trio

CONTROL_LANE_SIZE = 8
_EMPTY: list = []


@attrs.frozen
class OutboxStatistics:
    queued: int
    queued_bytes: int
    max_items: int
    max_bytes: int
    peak_bytes: int
    frames_sent: int
    rejected: int
    expired: int = 0


class Outbox:
    __slots__ = (
        "_data", "_control", "_bytes", "_waiter", "max_items", "max_bytes",
        "_peak_bytes", "_sent", "_rejected", "_data_closed", "_expiry", "_expired", "_held",
        "_finished",
    )

    def __init__(self, max_items: int, max_bytes: int) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("outbox bounds must be positive")
        self._data: list[bytes] = []
        self._control: list[bytes] | None = None
        self._bytes = 0
        self._waiter: trio.lowlevel.Task | None = None
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._peak_bytes = 0
        self._sent = 0
        self._rejected = 0
        self._data_closed = False
        self._expiry: list[tuple[int, float]] | None = None  # (index in _data, deadline)
        self._expired = 0
        self._held = False
        self._finished = False

    def __len__(self) -> int:
        return len(self._data) + (len(self._control) if self._control else 0)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def _wake(self) -> None:
        task = self._waiter
        if task is not None and not self._held:
            self._waiter = None
            trio.lowlevel.reschedule(task)

    def put_nowait(self, frame: bytes, *, reply: bool = False, expires_at: float | None = None) -> bool:
        """Queue a data frame. False when that would pass a bound (nothing is queued).

        ``reply`` frames (acks, pongs: answers to the client's own requests) may use a
        second allowance of the same size beyond the bounds, so a fan-out that filled the
        outbox cannot make a client miss its acks; a client that requests faster than it
        reads still hits the (doubled) bound.
        """
        if self._data_closed:
            return False
        n = self._bytes + len(frame)
        if reply:
            if n > 2 * self.max_bytes or len(self._data) >= 2 * self.max_items:
                self._rejected += 1
                return False
        elif n > self.max_bytes or len(self._data) >= self.max_items:
            self._rejected += 1
            return False
        self._data.append(frame)
        if expires_at is not None:
            if self._expiry is None:
                self._expiry = []
            self._expiry.append((len(self._data) - 1, expires_at))
        self._bytes = n
        if n > self._peak_bytes:
            self._peak_bytes = n
        if self._waiter is not None and not self._held:
            self._wake()
        return True

    def put_final(self, frame: bytes) -> None:
        """Queue the last frame (the close frame): after all data, whatever the bounds."""
        self._data_closed = True
        self._data.append(frame)
        self._wake()

    def put_control(self, frame: bytes) -> bool:
        """Queue a control frame ahead of data. False if the control lane is full."""
        if self._control is None:
            self._control = []
        elif len(self._control) >= CONTROL_LANE_SIZE:
            return False
        self._control.append(frame)
        self._wake()
        return True

    def close_data(self) -> None:
        """Accept no more data frames (what is queued is still sent)."""
        self._data_closed = True

    def discard_data(self) -> int:
        """Drop every queued data frame; returns how many were dropped."""
        n = len(self._data)
        self._data = []
        self._bytes = 0
        self._expiry = None
        return n

    def finish(self) -> None:
        """The connection is over: no more data is accepted, and ``get_batch`` returns None
        from now on (the writer's cue to return), waking a writer parked in it. Ends a
        writer without cancelling it: a cancellation costs trio a cancel-status walk and a
        raised ``Cancelled`` through the writer's frames, a visible share of a short-lived
        connection's CPU. No checkpoint."""
        self._finished = True
        self._data_closed = True
        task = self._waiter
        if task is not None:
            self._waiter = None
            trio.lowlevel.reschedule(task)

    # ---- the reader's turn (see the module header) -----------------------------------

    def hold(self) -> None:
        """Queue without waking the writer until ``release`` or ``take_nowait``. Only for
        a stretch of code with no checkpoint. No checkpoint."""
        self._held = True

    def release(self) -> None:
        """End a hold: wake the writer if something was queued meanwhile. No checkpoint."""
        self._held = False
        if self._waiter is not None and (self._data or self._control):
            self._wake()

    @property
    def writer_parked(self) -> bool:
        """The writer waits in ``get_batch`` with nothing in flight: whoever takes the queue
        now may send it directly without reordering anything."""
        return self._waiter is not None

    def take_nowait(self) -> list[bytes]:
        """End a hold and take everything queued (control frames first), as ``get_batch``
        would, for a caller that sends it itself. Only while ``writer_parked``; whatever the
        caller cannot send goes back with ``put_back``. No checkpoint."""
        self._held = False
        return self._take()

    def put_back(self, rest: bytes) -> None:
        """Queue the unsent tail of what ``take_nowait`` returned, ahead of everything, and
        wake the writer to send it. No checkpoint."""
        self._data.insert(0, rest)
        if self._expiry is not None:
            self._expiry = [(i + 1, deadline) for i, deadline in self._expiry]
        self._bytes += len(rest)
        self._sent -= 1
        self._wake()

    async def get_batch(self) -> list[bytes] | None:
        """Wait until something is queued, then take all of it (control frames first); None
        once ``finish`` was called.

        Checkpoint: yes, except when it returns None. Only one task may wait at a time (the
        connection's writer).
        """
        if self._finished:
            return None
        if not self._data and not self._control:
            while not self._data and not self._control:
                if self._finished:
                    return None
                if self._waiter is not None:
                    raise RuntimeError("another task is already waiting on this outbox")
                self._waiter = trio.lowlevel.current_task()

                def abort(_raise_cancel):
                    self._waiter = None
                    return trio.lowlevel.Abort.SUCCEEDED

                await trio.lowlevel.wait_task_rescheduled(abort)
            # Woken by the first frame: let the tasks that became runnable with it (a group
            # actor, the reader answering the same request) queue theirs before we take the
            # batch, so one wake-up and one send_all carry them all.
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            await trio.lowlevel.checkpoint()
        return self._take()

    def _take(self) -> list[bytes]:
        data = self._data
        if self._expiry is not None:
            data = self._drop_expired(data)
        control = self._control
        if control:
            batch = control + data
            self._control = None
        else:
            batch = data
        self._data = []
        self._bytes = 0
        self._sent += len(batch)
        return batch

    def _drop_expired(self, data: list[bytes]) -> list[bytes]:
        """``data`` without the frames whose deadline passed (one clock read)."""
        now = trio.current_time()
        late = {i for i, deadline in self._expiry if deadline < now}
        self._expiry = None
        if not late:
            return data
        self._expired += len(late)
        return [frame for i, frame in enumerate(data) if i not in late]

    def statistics(self) -> OutboxStatistics:
        return OutboxStatistics(
            queued=len(self), queued_bytes=self._bytes, max_items=self.max_items,
            max_bytes=self.max_bytes, peak_bytes=self._peak_bytes,
            frames_sent=self._sent, rejected=self._rejected, expired=self._expired,
        )
