"""The fabric: a realtime message fabric on trio speaking Azure Web PubSub's protocols.

Embedded use::

    async with fabric.open_fabric(config) as fab:
        port = await nursery.start(fab.serve, "127.0.0.1", 0)
        await fab.hub("chat").send_to_group("room", {"hello": "world"})
"""

from fabric.core.events import (  # noqa: F401
    ConnectionContext,
    ConnectRejected,
    ConnectRequest,
    ConnectResponse,
    EventHandler,
    UserEventError,
    UserEventResponse,
)
from fabric.core.payload import DataType, Payload  # noqa: F401


def __getattr__(name):  # lazy: keep `python -m fabric --help` and codec imports light
    if name in ("open_fabric", "Fabric"):
        from . import app

        return getattr(app, name)
    if name == "load_config":
        from fabric.config import load_config

        return load_config
    raise AttributeError(name)
