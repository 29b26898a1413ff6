"""Fixtures for broker tests: real redis-server processes (see ``redis_server.py``)."""

from __future__ import annotations

import itertools

import msgspec
import pytest
from redis_server import RedisServer

_prefixes = itertools.count(1)


@pytest.fixture(scope="session")
def redis_server():
    """One redis-server shared by the session; tests keep apart by channel prefix."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_server_factory():
    """Fresh redis-servers for one test (restarts, passwords, pauses), all stopped at the end."""
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


@pytest.fixture
def channel_prefix():
    """A channel prefix no other test uses (the session's redis-server is shared)."""
    return f"t{next(_prefixes)}:"


def _tuples(value):
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _decode(data: bytes):
    return _tuples(msgspec.msgpack.decode(data))


@pytest.fixture
def codec():
    """The test codec: msgpack over ints, strings and tuples (tuples come back as tuples),
    as ``RedisBus`` keyword arguments."""
    return {"encode": msgspec.msgpack.encode, "decode": _decode}
