import inspect
from pathlib import Path

import pytest
import trio
import trio.testing

import fabric
from fabric.config import load_config
from tests.webpubsub.proto.oracle import pb  # noqa: F401 (fixture: protoc's generated module)

from .rest_support import KEY, RestClient

_HERE = Path(__file__).resolve().parent


def run_with_autojump(fn, clock=None, instruments=()):
    """trio.run with an autojump MockClock unless the test brings its own clock: waits that only
    time can end (a shutdown waiting for clients that never answer a close frame, a request
    body that never arrives) take no real time. (Hypothesis tests run each example with plain
    trio.run: they take the ``autojump_clock`` fixture as an argument instead.)"""
    return trio.run(fn, clock=clock or trio.testing.MockClock(autojump_threshold=0), instruments=instruments)


def pytest_collection_modifyitems(items):
    for item in items:
        fn = getattr(item, "obj", None)
        inner = getattr(getattr(fn, "hypothesis", None), "inner_test", fn)
        if Path(str(item.fspath)).resolve().parent == _HERE and inspect.iscoroutinefunction(inner):
            item.add_marker(pytest.mark.trio(run=run_with_autojump))


@pytest.fixture
async def fab():
    async with fabric.open_fabric(load_config(None, env={}), access_key=KEY) as f:
        yield f


@pytest.fixture
async def rest(fab):
    # async, so that every Hypothesis example (a trio run of its own) gets its own client
    return RestClient(fab)
