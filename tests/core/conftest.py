import pytest

import fabric
from fabric.config import load_config

ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")


@pytest.fixture
async def fab():
    async with fabric.open_fabric(load_config(None, env={}), access_key="test-key") as f:
        yield f
