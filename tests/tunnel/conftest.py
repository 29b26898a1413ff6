"""Fixtures for the server-tunnel tests: an in-process fabric with a key long enough for
PyJWT, and the Python tunnel client (``tunnel_client.py``)."""

from __future__ import annotations

import attrs
import pytest

import fabric
from fabric.config import load_config

KEY = "tunnel-test-access-key-0123456789abcdef"


def tunnel_config(**server):
    config = load_config(None, env={})
    settings = {"shutdown_timeout": 0.2, "access_keys": (KEY,), **server}
    return attrs.evolve(config, server=attrs.evolve(config.server, **settings))


@pytest.fixture
async def fab():
    async with fabric.open_fabric(tunnel_config()) as f:
        yield f
