"""Waiting for a condition in tests, bounded: one place for the polling loops.

``eventually`` is for synchronous tests that drive real processes (SDK clients in threads,
``fabric serve`` nodes); ``eventually_async`` for trio tests. Both fail with what they were
waiting for once ``timeout`` passes; neither asserts the condition's value itself.
``counting_passes`` counts how often other tasks got to run while a block ran (whether long
work yields), for the test to assert on.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
import trio


def eventually(predicate: Callable[[], Any], what: str = "a condition", timeout: float = 10.0,
               interval: float = 0.05) -> float:
    """Seconds it took for ``predicate()`` to be true; fails the test after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


async def eventually_async(predicate: Callable[[], Any | Awaitable[Any]], timeout: float = 5.0,
                           interval: float = 0.005) -> None:
    """Until ``predicate()`` (a plain or an async callable) is true; ``trio.TooSlowError``
    after ``timeout``."""
    with trio.fail_after(timeout):
        while True:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await trio.sleep(interval)


class Passes:
    """How many scheduler passes a bystander task got (``count``)."""

    count = 0


@contextlib.asynccontextmanager
async def counting_passes() -> AsyncIterator[Passes]:
    """Run a bystander task that counts its scheduler passes while the block runs: code in
    the block that never yields leaves ``count`` near 0."""
    passes = Passes()
    done = trio.Event()

    async def count() -> None:
        while not done.is_set():
            passes.count += 1
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(count)
        try:
            yield passes
        finally:
            done.set()
