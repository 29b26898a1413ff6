import pytest

import fabric
from fabric.config import load_config

from .rest_support import KEY, RestClient


@pytest.fixture
async def fab():
    async with fabric.open_fabric(load_config(None, env={}), access_key=KEY) as f:
        yield f


@pytest.fixture
def rest(fab):
    return RestClient(fab)
