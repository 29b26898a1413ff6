"""``fabric conform`` against an embedded fabric (``fabric.open_fabric`` + ``fab.serve`` in a
background trio thread of this process) with more examples than the ``fabric serve`` run:
no process start-up, so the budget goes to examples."""

from __future__ import annotations

import os

import pytest
import trio

import fabric
from specs.conform.driver import Portal
from specs.conform.runner import Options, Session
from tests.fabric_support import quick_config

pytestmark = pytest.mark.slow
EXAMPLES = int(os.environ.get("CONFORM_EMBEDDED_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def embedded_connection_string():
    portal = Portal()
    portal.start()
    state: dict = {}

    async def start():
        ready, state["stop"], state["done"] = trio.Event(), trio.Event(), trio.Event()

        async def run():
            try:
                async with fabric.open_fabric(quick_config(host="127.0.0.1", port=0),
                                              access_key="embedded-conform-key-0123456789abcdef") as fab:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(fab.serve)
                        state["cs"] = fab.connection_string()
                        ready.set()
                        await state["stop"].wait()
                        nursery.cancel_scope.cancel()
            finally:
                ready.set()
                state["done"].set()

        portal.spawn(run)
        with trio.fail_after(10):
            await ready.wait()
        return state.get("cs")

    async def finish():
        state["stop"].set()
        with trio.move_on_after(10):
            await state["done"].wait()

    cs = portal.run(start)
    assert cs, "the embedded fabric did not start"
    try:
        yield cs
    finally:
        portal.run(finish)
        portal.close()


def test_embedded_fabric_conforms_with_more_examples(embedded_connection_string) -> None:
    options = Options(connection_string=embedded_connection_string, hub="embedded", examples=EXAMPLES, steps=30,
                      seed=int(os.environ.get("CONFORM_SEED", "4242")), probe_events=True)
    with Session(options) as session:
        assert session.diagnose() is None
        session.run_all()
        text = session.ledger.text(session.header())
    print(text)
    assert not session.ledger.found, text
    assert not session.ledger.errors, text
