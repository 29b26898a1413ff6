"""Web PubSub for Socket.IO's default mode on two fabric nodes (issue 12): two ``fabric serve
--redis`` nodes are one fabric, and the chat app (``tests/tunnel_js/chat.mjs``, unmodified
but for ``useAzureSocketIO``) runs as two instances, one attached to each node. That is how a
Node deployment scales with the package: ``useAzureSocketIO`` takes one connection string and
opens its tunnels to that one endpoint (its ``WebPubSubServiceCaller`` has a single
endpoint), so an app process serves the clients of the node it tunnels to, and a second node
gets a second app process. Clients (``socket.io-client``, ``clients.mjs``) connect to both
nodes: rooms, excepts, ``socketsJoin``/``socketsLeave``/``disconnectSockets`` and the
namespace broadcast cross the nodes through the hub, and so does ``emitWithAck`` to a room,
whose acks stream back from every node (``specs/socketio_default.py``,
socketio-default.invoke-scope). A node
the app has no tunnel to refuses the hub's handshakes with 503 and the reason
(socketio-default.other-nodes).
"""

from __future__ import annotations

import sys
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio

from fabric.core import auth

from .node_support import open_node, open_serve, require_node

_BROKER_TESTS = str(Path(__file__).resolve().parents[1] / "broker")
if _BROKER_TESTS not in sys.path:
    sys.path.insert(0, _BROKER_TESTS)

from redis_server import RedisServer  # noqa: E402

pytestmark = pytest.mark.interop

HUB = "chat"
PATH = f"/clients/socketio/hubs/{HUB}"


@pytest.fixture(autouse=True)
def _node():
    require_node()


@pytest.fixture
def redis_url():
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.close()


def _token(serve) -> str:
    return auth.mint_client_token(key=serve.key, endpoint=serve.endpoint, hub=HUB, client_type="socketio")


@asynccontextmanager
async def _two_nodes(redis_url: str):
    async with (
        open_serve("--redis", redis_url) as one,
        open_serve("--redis", redis_url) as two,
        open_node("chat.mjs", "azure", one.connection_string, HUB, name="chat on node 1"),
        open_node("chat.mjs", "azure", two.connection_string, HUB, name="chat on node 2") as app2,
        open_node("clients.mjs", name="clients") as clients,
    ):
        yield one, two, clients, app2


class _Clients:
    def __init__(self, driver, nodes: dict) -> None:
        self.driver = driver
        self.nodes = nodes  # client name -> the node it connects to
        self._markers = iter(range(1, 1 << 30))

    async def connect(self, name: str, node, transports=("websocket",)) -> str:
        self.nodes[name] = node
        return await self.driver.call("connect", name=name, endpoint=node.endpoint, path=PATH, token=_token(node),
                                      transports=list(transports))

    async def emit(self, name: str, event: str, *args):
        return await self.driver.call("emit", name=name, event=event, args=list(args))

    async def step(self, sender: str, event: str, *args) -> dict[str, list]:
        """``sender`` emits; then its app sends a marker to the whole namespace: what each
        client got in between (one app's broadcasts reach a client in the order sent)."""
        answer = await self.emit(sender, event, *args)
        marker = f"m{next(self._markers)}"
        assert await self.emit(sender, "all", marker) == "ok"
        got = {name: await self.driver.call("until", name=name, marker=marker) for name in self.nodes}
        got["answer"] = answer
        return got


async def test_one_fabric_two_nodes_two_app_instances(redis_url):
    async with _two_nodes(redis_url) as (one, two, driver, app2):
        c = _Clients(driver, {})
        await c.connect("X", one, ("polling", "websocket"))
        await c.connect("Y", two)
        await c.connect("Z", two, ("polling",))
        assert await c.emit("X", "join", "r") == "joined r"
        assert await c.emit("Y", "join", "r") == "joined r"
        assert await c.emit("Y", "join", "quiet") == "joined quiet"
        assert await c.emit("Z", "join", "z") == "joined z"

        # a room spanning both nodes gets broadcasts from either app instance
        got = await c.step("X", "broadcast", ["r"], [], "from app 1")
        assert got["X"] == got["Y"] == [["msg", "X", "from app 1"]] and got["Z"] == []
        got = await c.step("Y", "broadcast", ["r"], [], "from app 2")
        assert got["X"] == got["Y"] == [["msg", "Y", "from app 2"]] and got["Z"] == []
        got = await c.step("Y", "say", "r", "to the others")  # socket.to(room): all but the sender
        assert got["X"] == [["msg", "Y", "to the others"]] and got["Y"] == [] and got["Z"] == []

        # except a room whose member is on the other node
        got = await c.step("X", "broadcast", ["r"], ["quiet"], "not to quiet")
        assert got["X"] == [["msg", "X", "not to quiet"]] and got["Y"] == [] and got["Z"] == []

        # socketsJoin / socketsLeave from app 1 for a socket on node 2 (app 2's socket)
        assert (await c.step("X", "socketsJoin", "z", "r"))["answer"] == "ok"
        got = await c.step("X", "broadcast", ["r"], [], "z joined")
        assert got["X"] == got["Y"] == got["Z"] == [["msg", "X", "z joined"]]
        got = await c.step("Z", "say", "r", "z speaks")  # and app 2 sees the room in Z's socket
        assert got["X"] == got["Y"] == [["msg", "Z", "z speaks"]] and got["Z"] == []
        assert (await c.step("X", "socketsLeave", "z", "r"))["answer"] == "ok"
        got = await c.step("Y", "broadcast", ["r"], [], "z left")
        assert got["X"] == got["Y"] == [["msg", "Y", "z left"]] and got["Z"] == []

        # binary from node 2's app to a room spanning both nodes
        assert await c.emit("Y", "bin", "r", {"$placeholder": False}) == -1  # not a buffer: just relayed
        got = await c.step("Y", "broadcast", ["r"], [], "after bin")
        assert got["X"][-1] == ["msg", "Y", "after bin"]

        # emitWithAck to a room spanning both nodes: every member answers, whichever node it is
        # on and whichever app instance asks (invoke-scope); the order of answers is arrival's
        answers = await c.emit("X", "ask", "r", "q1")
        assert sorted(answers) == ["answer:X:q1", "answer:Y:q1"]
        answers = await c.emit("Y", "ask", "r", "q2")
        assert sorted(answers) == ["answer:X:q2", "answer:Y:q2"]
        answers = await c.emit("X", "ask", "z", "q3")  # a room on the other node only
        assert answers == ["answer:Z:q3"]
        # nobody answers: the app's own timeout ends its wait, as with one node
        assert await c.emit("X", "asksilent", "r") == "error: operation has timed out"
        got = await c.step("X", "broadcast", ["r"], [], "after ask")
        assert got["X"] == got["Y"] == [["msg", "X", "after ask"]]  # no "question" was recorded as msg

        # disconnectSockets from app 1 for a socket on node 2: Z's socket ends at app 2 too
        assert await c.emit("X", "kick", "z", False) == "kicking"
        gone = await driver.wait_for(lambda o: o.get("event") == "disconnect", 20, "Z's disconnect")
        assert gone == {"event": "disconnect", "name": "Z", "reason": "io server disconnect"}
        del c.nodes["Z"]
        ended = await app2.wait_for(lambda o: o.get("event") == "server" and o.get("name") == "Z", 20,
                                    "Z's socket ending at app 2")
        assert ended["disconnect"] == "client namespace disconnect"
        got = await c.step("Y", "broadcast", ["r", "z"], [], "after kick")
        assert got["X"] == got["Y"] == [["msg", "Y", "after kick"]]


async def test_a_node_without_the_apps_tunnel_refuses_with_the_reason(redis_url):
    """The app is attached to node 2 only: node 1 refuses the hub's handshakes with 503 and
    says why (the embedded server never serves them), once it has checked; node 2 serves."""
    async with (
        open_serve("--redis", redis_url) as one,
        open_serve("--redis", redis_url) as two,
        open_node("chat.mjs", "azure", two.connection_string, HUB, name="chat on node 2"),
        open_node("clients.mjs", name="clients") as clients,
        httpx.AsyncClient() as http,
    ):
        url = f"{one.endpoint}{PATH}/?EIO=4&transport=polling&access_token={_token(one)}"
        with trio.fail_after(20):  # the first handshake may come before node 1's first check
            while (answer := await http.get(url)).status_code != 503:
                await trio.sleep(0.2)
        assert "served in Socket.IO default mode by app servers attached to other nodes" in answer.text
        assert (await http.get(url)).status_code == 503  # and it stays so
        metrics = (await http.get(one.endpoint + "/metrics")).text
        assert "fabric_socketio_default_handshakes_elsewhere_total" in metrics
        answer = await clients.request("connect", name="on1", endpoint=one.endpoint, path=PATH, token=_token(one),
                                       transports=["polling"])
        assert not answer["ok"]
        c = _Clients(clients, {})
        await c.connect("on2", two)
        assert await c.emit("on2", "echo", "hi") == "hi:1"
