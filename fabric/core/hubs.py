"""The hub registry: the running hubs of one fabric, each started on first use.

Rules this module keeps:
- One ``Hub`` per name, started once even when many tasks ask for it at the same time
  (the second caller waits for the first start); each runs as a TRANSIENT child of the
  registry's supervisor.
- The registry knows nothing of protocols or of how event handlers are built: the
  composition root gives it ``handler_for(name)``, awaited once per hub start.
- ``endpoint`` is the public base URL once the fabric listens (tokens and connection
  strings use it); ``access_keys`` are the keys every surface accepts.
- The broker is the composition root's: the registry only attaches hubs to it, reports its
  statistics (``broker_statistics``, for health) and routes what the broker could not
  deliver to a topic (``on_stray``) to the hub named in it.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

import trio

from actors import ChildSpec, Restart, Supervisor
from fabric.config import FabricConfig
from fabric.core.events import EventHandler
from fabric.core.hub import Hub

log = logging.getLogger(__name__)

HandlerFor = Callable[[str], Awaitable[EventHandler | None]]


class HubRegistry:
    """Running hubs by name, under one supervisor. Create with the fabric's config."""

    def __init__(self, config: FabricConfig, supervisor: Supervisor, broker_factory: Callable[..., Any],
                 handler_for: HandlerFor, *, bus_statistics: Callable[[], dict] | None = None) -> None:
        self.config = config
        self.supervisor = supervisor
        self._broker_factory = broker_factory
        self._bus_statistics = bus_statistics
        self._handler_for = handler_for
        self._hubs: dict[str, Hub] = {}
        self._starting: dict[str, trio.Event] = {}
        self.access_keys: tuple[str, ...] = config.server.access_keys
        #: The public base URL (``http://host:port``) once the fabric listens.
        self.endpoint: str | None = None

    async def get(self, name: str) -> Hub:
        """The running hub, started on first use. Checkpoint."""
        hub = self._hubs.get(name)
        if hub is not None:
            await hub.wait_started()
            return hub
        starting = self._starting.get(name)
        if starting is not None:
            await starting.wait()
            return await self.get(name)
        self._starting[name] = event = trio.Event()
        try:
            handler = await self._handler_for(name)
            hub = Hub(name, self.config.hub(name), self.config.server, self._broker_factory, handler=handler,
                      request_timeout=self.config.broker.request_timeout)
            hub.telemetry.counting = self.config.metrics.enabled
            await self.supervisor.start_child(ChildSpec(f"hub:{name}", hub.run, restart=Restart.TRANSIENT))
            self._hubs[name] = hub
        finally:
            del self._starting[name]
            event.set()
        return hub

    def broker_statistics(self) -> dict | None:
        """The node's broker link (state, reconnects, gaps, drops), or None for the memory
        broker (one process: nothing can be down). No checkpoint."""
        return self._bus_statistics() if self._bus_statistics is not None else None

    def on_stray(self, message: Any) -> None:
        """A request the broker delivered here for a topic no hub of this node wants any more:
        the hub named in its reply topic answers "nothing here". No checkpoint."""
        reply_to = getattr(message, "reply_to", None)
        if not isinstance(reply_to, str):
            return
        hub = self._hubs.get(reply_to.split("\x00")[1] if reply_to.count("\x00") == 2 else "")
        if hub is not None:
            hub.on_stray(message)

    def running(self, name: str) -> Hub | None:
        """The hub if it runs already (no start, no checkpoint)."""
        return self._hubs.get(name)

    def running_hubs(self) -> dict[str, Hub]:
        return dict(self._hubs)

    async def aclose(self) -> None:
        """Every hub closes its connections (1001) and stops, one after the other."""
        for hub in list(self._hubs.values()):
            try:
                await hub.aclose()
            except Exception:
                log.exception("hub %r failed to shut down cleanly", hub.name)

    def statistics(self) -> dict:
        return {name: hub.statistics() for name, hub in self._hubs.items()}
