"""Small actors and helpers shared by the actor runtime tests."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import trio

from actors import Actor


class Crash(Exception):
    """What the test actors raise when told to crash."""


class Recorder(Actor):
    """Records every message it handles, in order. Understands a few commands:

    ``"crash"`` raises :class:`Crash`; ``"exit"`` stops the actor from inside;
    ``("sleep", seconds)`` sleeps; ``("wait", event)`` waits for a trio.Event;
    ``"hang"`` sleeps forever, ignoring stop requests. Anything else is answered with itself.
    """

    def __init__(self, log: list[Any] | None = None, events: list[str] | None = None, **kw: Any):
        super().__init__(**kw)
        self.log: list[Any] = [] if log is None else log
        self.events = events  # shared lifecycle log: "start:<name>", "stop:<name>"

    async def on_start(self) -> None:
        if self.events is not None:
            self.events.append(f"start:{self.ref.name}")

    async def on_stop(self) -> None:
        if self.events is not None:
            self.events.append(f"stop:{self.ref.name}")

    async def handle(self, message: Any) -> Any:
        self.log.append(message)
        if message == "crash":
            raise Crash(f"{self.ref.name} told to crash")
        if message == "exit":
            self.stop()
        elif message == "hang":
            await trio.sleep_forever()
        elif isinstance(message, tuple) and message[0] == "sleep":
            await trio.sleep(message[1])
        elif isinstance(message, tuple) and message[0] == "wait":
            await message[1].wait()
        return message


class StartCounter:
    """Counts how often each named child has been started (each incarnation)."""

    def __init__(self) -> None:
        self.starts: defaultdict[str, int] = defaultdict(int)
        self.events: list[str] = []

    def actor(self, name: str, **kw: Any):
        """A ChildSpec factory making a Recorder that counts its starts."""

        def make() -> Recorder:
            self.starts[name] += 1
            return Recorder(events=self.events, **kw)

        return make
