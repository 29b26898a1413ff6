"""In-process Web PubSub clients for tests: ``ROLES`` and ``connect``."""

from fabric.testing import connect_in_process

#: Both client roles: join/leave any group and send to any group.
ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")


async def connect(fab, hub="chat", **kw):
    """An in-process client; with a subprotocol, ``system/connected`` is read and its ids noted
    (``client.connection_id``, ``client.user_id``)."""
    client = await connect_in_process(fab, hub, **kw)
    if client.subprotocol:
        connected = await client.receive_json()
        assert connected["type"] == "system" and connected["event"] == "connected"
        client.connection_id = connected["connectionId"]
        client.user_id = connected.get("userId")
    return client
