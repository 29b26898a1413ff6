"""An in-process fabric for tests: ``quick_config`` and the ``fab`` fixture.

A folder's conftest re-exports the fixture (``from tests.fabric_support import fab``).
"""

import attrs
import pytest

import fabric
from fabric.config import load_config


def quick_config(**server):
    """The default config, with a short shutdown: in-process test clients do not answer
    close frames, and each test would otherwise wait the full close handshake at exit."""
    config = load_config(None, env={})
    return attrs.evolve(config, server=attrs.evolve(config.server, **{"shutdown_timeout": 0.2, **server}))


@pytest.fixture
async def fab():
    async with fabric.open_fabric(quick_config(), access_key="test-key") as f:
        yield f
