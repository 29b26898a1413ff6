"""Presence: a node that stopped its heartbeat (hung, partitioned) is removed by the others
within the bound; live nodes and other fabrics sharing the Redis are never touched."""

import socket
import time

import trio

from fabric.core.broker_redis import channel_name
from fabric.core.presence import fabric_tag, parse_client_list
from fabric.core.redis_resp import encode_command
from tests.scaleout.conftest import open_nodes


def ghost(redis, name: str, channel: bytes) -> socket.socket:
    """A connection that looks like a node's subscriber and never beats."""
    s = socket.create_connection(("127.0.0.1", redis.port), timeout=5)
    s.sendall(encode_command("CLIENT", "SETNAME", name) + encode_command("SUBSCRIBE", channel))
    time.sleep(0.1)
    s.recv(65536)
    return s


def alive(s: socket.socket) -> bool:
    """Not closed by Redis (whatever it was sent meanwhile is read and ignored)."""
    s.setblocking(False)
    try:
        while s.recv(65536):
            pass
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False


async def test_a_node_without_heartbeat_is_removed_within_the_bound(redis_server):
    ttl = 1.0
    async with open_nodes(2, "redis", redis_server, node_ttl=ttl) as (a, b):
        tag = fabric_tag(a.bus.prefix)
        dead = ghost(redis_server, f"fabric-sub:{tag}:00ff00ff00ff00ff:ghost", channel_name(a.bus.prefix, "c\x00chat\x00ghost"))
        other = ghost(redis_server, "fabric-sub:deadbeef:00ff00ff00ff00fe:other", channel_name(b"x:0:", "c\x00chat\x00o"))
        try:
            hub = b.hub("chat")
            assert await hub.connection_exists("ghost")
            started = trio.current_time()
            with trio.fail_after(1.5 * ttl + ttl + 2):
                while await hub.connection_exists("ghost"):
                    await trio.sleep(0.05)
            took = trio.current_time() - started
            assert took < 1.5 * ttl + ttl + 2
            assert not alive(dead) and alive(other), "only our fabric's dead node is removed"
            removed = a.bus.presence.nodes_removed + b.bus.presence.nodes_removed
            assert removed >= 1
            names = {c.get("name") for c in parse_client_list(redis_server.command("CLIENT", "LIST"))}
            assert sum(1 for n in names if n and n.startswith(f"fabric-sub:{tag}:")) == 2  # the two live nodes
            assert a.bus.state == b.bus.state == "connected"
        finally:
            dead.close()
            other.close()
