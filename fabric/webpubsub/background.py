"""One supervised task per hub for the Web PubSub edge's work that must not run on a reader.

``Background`` is a task child of the hub's supervisor (started by ``background_for`` the first
time a connection of the hub needs it: an invocation or a stream; a hub without them never
runs it) that owns:

- a nursery for invocation tasks (``spawn``): an ``invoke`` waits for its handler there, so
  the connection's reader keeps reading (a ``cancelInvocation`` can arrive) without a nursery
  per connection, which would cost about 1.2 kB on every idle connection;
- one timer heap for every stream's idle deadline (``call_at``), served by one task: a single
  sleeping task per hub instead of one per stream, exact under ``autojump_clock``.

Group presence (``joined``/``left``) is not here: it goes through the hub's notifier, in one
order with ``connected``/``disconnected``.

Rules this module keeps:
- Nothing here awaits a connection; callbacks given to ``call_at`` are synchronous and must
  not raise (a failure is logged, the timer task lives on).
- Timers are lazy: a cancelled entry stays in the heap until it would fire or until the heap
  is compacted (when more than half of it is dead), so cancelling is O(1) and the heap stays
  bounded by twice the live timers.
- The service dies with its hub's supervisor (hub shutdown or restart); ``background_for``
  starts a new one for the next connection, and work offered to a dead one is refused
  (``spawn`` returns False) rather than lost silently.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import weakref
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import trio

from actors import ChildSpec, Restart

if TYPE_CHECKING:
    from fabric.core.hub import Hub

log = logging.getLogger(__name__)

_COMPACT_MIN = 64


class Timer:
    """A handle on one ``call_at``; ``cancel()`` is O(1) and idempotent."""

    __slots__ = ("deadline", "callback", "cancelled", "_owner")

    def __init__(self, owner: "Background", deadline: float, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False
        self._owner = owner

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self.callback = None  # type: ignore[assignment]
            self._owner._live -= 1


class Background:
    """The hub's background work for the Web PubSub edge (see the module's rules)."""

    def __init__(self, hub: "Hub") -> None:
        self._hub_ref = weakref.ref(hub)
        self._nursery: trio.Nursery | None = None
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._live = 0
        self._changed: trio.Event | None = None
        self.spawned = 0
        self.refused = 0

    @property
    def running(self) -> bool:
        return self._nursery is not None

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """The supervised task: the nursery and the timer task."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._timers)
                task_status.started(self)
        finally:
            self._nursery = None

    # ---- tasks -------------------------------------------------------------------------

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Run ``fn(*args)`` in the hub's background nursery. False if the service is not
        running. ``fn`` must not raise (it would take the service down). No checkpoint."""
        nursery = self._nursery
        if nursery is None:
            self.refused += 1
            return False
        try:
            nursery.start_soon(fn, *args)
        except RuntimeError:  # the nursery is closing
            self.refused += 1
            return False
        self.spawned += 1
        return True

    # ---- timers ------------------------------------------------------------------------

    def call_at(self, deadline: float, callback: Callable[[], None]) -> Timer:
        """Call ``callback()`` once the trio clock passes ``deadline``. No checkpoint."""
        timer = Timer(self, deadline, callback)
        heap = self._heap
        first = heap[0][0] if heap else None
        heapq.heappush(heap, (deadline, next(self._seq), timer))
        self._live += 1
        if len(heap) > _COMPACT_MIN and len(heap) > 2 * self._live:
            self._heap = [e for e in heap if not e[2].cancelled]
            heapq.heapify(self._heap)
        if (first is None or deadline < first) and self._changed is not None:
            self._changed.set()
        return timer

    async def _timers(self) -> None:
        while True:
            self._changed = changed = trio.Event()
            heap = self._heap
            if heap:
                with trio.move_on_at(heap[0][0]):
                    await changed.wait()
            else:
                await changed.wait()
            now = trio.current_time()
            heap = self._heap
            while heap and heap[0][0] <= now:
                _, _, timer = heapq.heappop(heap)
                if timer.cancelled:
                    continue
                callback = timer.callback
                timer.cancel()
                try:
                    callback()
                except Exception:
                    log.exception("a timer callback failed")

    def timer_statistics(self) -> dict:
        return {"heap": len(self._heap), "live": self._live}

    def statistics(self) -> dict:
        return {"running": self.running, "spawned": self.spawned, "refused": self.refused,
                **self.timer_statistics()}


class _Entry:
    __slots__ = ("supervisor", "background", "ready")

    def __init__(self, supervisor: Any, background: Background) -> None:
        self.supervisor = supervisor
        self.background = background
        self.ready = trio.Event()


_services: "weakref.WeakKeyDictionary[Hub, _Entry]" = weakref.WeakKeyDictionary()

#: The hub supervisor child's name.
CHILD_NAME = "webpubsub:background"


def background_nowait(hub: "Hub") -> Background | None:
    """The hub's running background service, or None. No checkpoint."""
    entry = _services.get(hub)
    if entry is None or entry.supervisor is not hub.supervisor or not entry.background.running:
        return None
    return entry.background


async def background_for(hub: "Hub") -> Background:
    """The hub's background service, started as a child of the hub's supervisor if it does
    not run (first use, or a restarted hub). Checkpoint. Raises what ``start_child`` raises
    when the hub is stopping."""
    while True:
        entry = _services.get(hub)
        if entry is not None and entry.supervisor is hub.supervisor:
            if entry.background.running:
                return entry.background
            if not entry.ready.is_set():  # another connection is starting it
                await entry.ready.wait()
                continue
        entry = _Entry(hub.supervisor, Background(hub))
        _services[hub] = entry
        try:
            await hub.supervisor.start_child(ChildSpec(
                CHILD_NAME, entry.background.run, restart=Restart.TRANSIENT, shutdown_timeout=1.0))
        except BaseException:
            if _services.get(hub) is entry:
                del _services[hub]
            raise
        finally:
            entry.ready.set()
        return entry.background
