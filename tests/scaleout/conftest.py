"""Fixtures for scale-out tests: several fabric nodes in one process (a shared ``MemoryBus``,
or each its own ``RedisBus`` on a real redis-server), and helpers for ``fabric serve`` nodes.

The redis-server machinery is ``tests/broker/redis_server.py`` (started on a free port,
stopped by its PID); this folder reuses it.
"""

from __future__ import annotations

import itertools
import sys
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import attrs
import pytest

_BROKER_TESTS = str(Path(__file__).resolve().parents[1] / "broker")
if _BROKER_TESTS not in sys.path:
    sys.path.insert(0, _BROKER_TESTS)
_HERE = str(Path(__file__).resolve().parent)
_INTEROP = str(Path(__file__).resolve().parents[1] / "interop")
for _path in (_HERE, _INTEROP):  # serve_nodes, interop_support, chaos_proxy, test_reliable_sdks
    if _path not in sys.path:
        sys.path.insert(0, _path)

from redis_server import RedisServer

import fabric
from fabric.core.broker_memory import MemoryBus
from tests.fabric_support import quick_config

_prefixes = itertools.count(1)


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_server_factory():
    servers: list[RedisServer] = []

    def make(**kwargs) -> RedisServer:
        server = RedisServer(**kwargs)
        servers.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in servers:
            server.close()


def node_config(url: str | None = None, prefix: str = "fabric:", node_id: str | None = None, **broker):
    config = quick_config()
    if url is not None:
        config = attrs.evolve(config, broker=attrs.evolve(config.broker, url=url, channel_prefix=prefix,
                                                          node_id=node_id, **broker))
    return config


@asynccontextmanager
async def open_nodes(n: int, kind: str, server: RedisServer | None = None, **broker):
    """``n`` fabrics that are one fabric: on one ``MemoryBus`` (kind "memory") or each with
    its own Redis connections (kind "redis"), sharing the access key."""
    prefix = f"s{next(_prefixes)}:"
    bus = MemoryBus() if kind == "memory" else None
    async with AsyncExitStack() as stack:
        nodes = []
        for i in range(n):
            if kind == "memory":
                config = node_config()
                node = await stack.enter_async_context(fabric.open_fabric(config, access_key="test-key", bus=bus))
            else:
                config = node_config(server.url, prefix, f"node{i}", **broker)
                node = await stack.enter_async_context(fabric.open_fabric(config, access_key="test-key"))
            nodes.append(node)
        yield nodes


@pytest.fixture(params=["memory", "redis"])
def kind(request):
    return request.param


@pytest.fixture
def nodes(kind, request):
    """``async with nodes(3) as (a, b, c)``: in-process nodes of the parametrized kind."""
    server = request.getfixturevalue("redis_server") if kind == "redis" else None

    def make(n: int, **broker):
        return open_nodes(n, kind, server, **broker)

    return make
