"""Interop: Microsoft's @azure/web-pubsub-express as a real upstream handler app.

`tests/js/express_handler.mjs` (express 4 + @azure/web-pubsub-express 1.0.6, Node 20) runs as
the app server; `fabric serve --event-handler HUB=http://127.0.0.1:PORT/eventhandler/{event}`
calls it; Microsoft's Python (`azure-messaging-webpubsubclient`) and JavaScript
(`@azure/web-pubsub-client`) clients connect to the fabric. The express app is started with
`allowedEndpoints` naming the fabric, so its abuse-protection answer is a host:port list, not
"*". Every wait is bounded; a failure shows both processes' output.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from interop_support import (  # noqa: E402
    JS_DIR,
    ROOT,
    WAIT_TIMEOUT,
    FabricServer,
    NodeClient,
    SdkClient,
    _await_listening,
    _child_env,
    _free_port,
    _OutputTail,
    require_node_modules,
    stop_server,
    unique,
)

HUB = "expresshub"
TEXT = "text"


class ExpressApp:
    """The `node express_handler.mjs` process and the JSON lines it printed."""

    def __init__(self, hub: str, allowed: list[str]) -> None:
        node = require_node_modules()
        if not (JS_DIR / "node_modules" / "@azure" / "web-pubsub-express").is_dir():
            pytest.fail("tests/js/node_modules lacks @azure/web-pubsub-express: run ./dev test (npm ci)", pytrace=False)
        cmd = [node, str(JS_DIR / "express_handler.mjs"), "--hub", hub]
        for url in allowed:
            cmd += ["--allowed-endpoint", url]
        self.proc = subprocess.Popen(cmd, cwd=JS_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.stdout = _OutputTail(self.proc.stdout, "express-stdout")
        self.stderr = _OutputTail(self.proc.stderr, "express-stderr", queueing=False)
        self.seen: list[dict[str, Any]] = []
        self.port = self.wait_for(lambda m: m["type"] == "listening", "the listening line")["port"]
        self.server: FabricServer | None = None

    def describe(self) -> str:
        text = f"--- express stdout ---\n{self.stdout.text()}\n--- express stderr ---\n{self.stderr.text()}"
        if self.server is not None:
            text += "\n" + self.server.describe()
        return text

    def _pump(self, timeout: float) -> bool:
        try:
            line = self.stdout.new_lines.get(timeout=timeout)
        except queue.Empty:
            return False
        if line is None:
            pytest.fail("the express app exited\n" + self.describe(), pytrace=False)
        try:
            msg = json.loads(line)
        except ValueError:
            pytest.fail(f"the express app printed a non-JSON line {line!r}\n" + self.describe(), pytrace=False)
        if msg.get("type") == "fatal":
            pytest.fail(f"the express app failed: {msg['error']}\n" + self.describe(), pytrace=False)
        self.seen.append(msg)
        return True

    def drain(self) -> None:
        while self._pump(0.0):
            pass

    def wait_for(self, predicate: Callable[[dict], bool], what: str, timeout: float = WAIT_TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.seen:
                if predicate(msg):
                    return msg
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"express never reported {what} within {timeout} s\n" + self.describe(), pytrace=False)
            self._pump(min(remaining, 0.2))

    def all(self, predicate: Callable[[dict], bool]) -> list[dict]:
        self.drain()
        return [m for m in self.seen if predicate(m)]

    def close(self) -> int:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(5)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        self.stdout.join(2)
        self.stderr.join(2)
        return self.proc.returncode


def start_fabric_with_handler(port: int, handler_url: str) -> FabricServer:
    key = "k" + unique("expresskey").replace("_", "") + "x" * 24
    cmd = [sys.executable, "-m", "fabric", "serve", "--host", "127.0.0.1", "--port", str(port),
           f"--access-key={key}", "--event-handler", f"{HUB}={handler_url}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    server = FabricServer(proc, cmd, _OutputTail(proc.stdout, "stdout"),
                          _OutputTail(proc.stderr, "stderr", queueing=False))
    try:
        _await_listening(server, key, None)
    except BaseException:
        stop_server(server, check=False)
        raise
    server.stdout.queueing = False
    return server


@pytest.fixture(scope="module")
def express_setup():
    fabric_port = _free_port()
    app = ExpressApp(HUB, [f"http://127.0.0.1:{fabric_port}"])
    try:
        server = start_fabric_with_handler(fabric_port, f"http://127.0.0.1:{app.port}/eventhandler/{{event}}")
        app.server = server
        try:
            yield app, server
        finally:
            stop_server(server)
    finally:
        rc = app.close()
        assert rc == 0, f"the express app exited with {rc}\n{app.describe()}"


@pytest.fixture
def clients(express_setup):
    app, server = express_setup
    made: list[Any] = []

    def python(name: str, *, open: bool = True) -> SdkClient:
        url = server.client_url(HUB) + f"&name={name}"
        client = SdkClient(url, label=name, server=server)
        made.append(client)
        if open:
            client.open()
        return client

    def node(name: str) -> NodeClient:
        url = server.client_url(HUB) + f"&name={name}"
        client = NodeClient(server, url=url, protocol="json", label=name)
        made.append(client)
        return client.start()

    yield python, node
    for client in made:
        client.close()


def test_abuse_protection_validation_passes(express_setup, clients):
    app, server = express_setup
    python, _ = clients
    python("validator")
    options = app.wait_for(lambda m: m["type"] == "http" and m["method"] == "OPTIONS", "the validation request")
    assert options["path"] == "/eventhandler/validate"
    assert options["origin"] == "127.0.0.1" and options["awps"] == "1.0" and options["status"] == 200
    assert options["allowed"] == [f"127.0.0.1:{server.port}"]  # express: allowedEndpoints' host:port
    app.wait_for(lambda m: m["type"] == "http" and m["path"] == "/eventhandler/connect", "the connect request")
    posts = app.all(lambda m: m["type"] == "http" and m["method"] == "POST")
    assert all(p["status"] in (200, 204) for p in posts), posts
    assert len(app.all(lambda m: m["type"] == "http" and m["method"] == "OPTIONS")) == 1


def test_handle_connect_sets_user_groups_and_roles(express_setup, clients):
    app, server = express_setup
    python, _ = clients
    client = python("ann")
    assert client.connected_args.user_id == "express-ann"
    connect = app.wait_for(lambda m: m["type"] == "connect" and m["connectionId"] == client.connection_id,
                           "ann's connect event")
    assert connect["query"]["name"] == ["ann"] and connect["hub"] == HUB
    assert connect["subprotocols"] == ["json.reliable.webpubsub.azure.v1"]
    assert connect["clientCertificates"] == [] and connect["hasHeaders"] and connect["signature"].startswith("sha256=")
    # roles from handleConnect: the token has none, yet joining and sending are allowed
    group = unique("g")
    client.join(group)
    client.send_to_group(group, "mine", _dt(TEXT))
    assert client.collect_until(lambda m: m.data == "mine")[-1].group == group
    # groups from handleConnect: the connection is in express-group
    server.service_client(HUB).send_to_group("express-group", "to the express group", content_type="text/plain")
    got = client.collect_until(lambda m: m.data == "to the express group")
    assert got[-1].group == "express-group"


@pytest.mark.parametrize("status", [401, 403])
def test_failing_handle_connect_fails_the_handshake_with_its_status(express_setup, clients, status):
    import trio

    from fabric.testing import ConnectionRejected, connect_tcp

    app, server = express_setup
    token = server.client_url(HUB).split("access_token=", 1)[1]

    async def handshake():
        with trio.fail_after(WAIT_TIMEOUT):
            await connect_tcp("127.0.0.1", server.port, f"/client/hubs/{HUB}?access_token={token}&fail={status}",
                              ["json.webpubsub.azure.v1"])

    with pytest.raises(ConnectionRejected) as info:
        trio.run(handshake)
    assert info.value.status == status
    assert json.loads(info.value.body)["message"] == "refused by express"
    python, _ = clients
    client = python(f"x&fail={status}", open=False)
    with pytest.raises(Exception) as sdk_info:
        client.open()
    assert f"Handshake status {status}" in str(sdk_info.value) and "refused by express" in str(sdk_info.value)


def _dt(name: str):
    from azure.messaging.webpubsubclient.models import WebPubSubDataType

    return {"text": WebPubSubDataType.TEXT, "json": WebPubSubDataType.JSON,
            "binary": WebPubSubDataType.BINARY}[name]


def test_user_event_replies_reach_the_python_client(express_setup, clients):
    from azure.messaging.webpubsubclient.models import SendMessageError

    app, _ = express_setup
    python, _ = clients
    client = python("py")
    client.send_event("echo", "hello express", _dt(TEXT))
    reply = client.next_message()
    assert (reply.kind, reply.data_type, reply.data) == ("server", "text", "hello express")
    client.send_event("echo", {"nested": [1, 2]}, _dt("json"))
    reply = client.next_message()
    assert (reply.data_type, reply.data) == ("json", {"nested": [1, 2]})
    client.send_event("echo", memoryview(b"\x00\x01\x02"), _dt("binary"))
    reply = client.next_message()
    assert reply.data_type == "binary" and bytes(reply.data) == b"\x00\x01\x02"
    seen = app.all(lambda m: m["type"] == "user-event" and m["connectionId"] == client.connection_id)
    assert [(m["event"], m["dataType"], m["userId"]) for m in seen] == [
        ("echo", "text", "express-py"), ("echo", "json", "express-py"), ("echo", "binary", "express-py")]
    with pytest.raises(SendMessageError) as info:
        client.send_event("fail", "x", _dt(TEXT))
    assert info.value.error_detail.name == "InternalServerError"
    assert "express says no" in info.value.error_detail.message
    client.send_event("quiet", "no reply", _dt(TEXT))  # res.success(): acked, nothing sent back
    client.send_event("echo", "still here", _dt(TEXT))
    assert client.next_message().data == "still here"


def test_user_event_replies_reach_the_javascript_client(express_setup, clients):
    app, _ = express_setup
    _, node = clients
    client = node("js")
    assert client.connected["userId"] == "express-js"
    client.ok("event", event="echo", dataType="text", data="from node")
    reply = client.next_event("server-message")
    assert (reply["dataType"], reply["data"]) == ("text", "from node")
    client.ok("event", event="echo", dataType="json", data={"k": "v"})
    assert client.next_event("server-message")["data"] == {"k": "v"}
    counts = []
    for _ in range(3):
        client.ok("event", event="count", dataType="text", data="")
        counts.append(client.next_event("server-message")["data"])
    assert counts == ["1", "2", "3"]  # res.setState in each answer comes back on the next event
    failed = client.call("event", event="fail", dataType="text", data="x")
    assert failed["ok"] is False


def test_connection_state_set_in_connect_comes_back(express_setup, clients):
    app, _ = express_setup
    python, _ = clients
    client = python("st")
    client.send_event("state", "", _dt(TEXT))
    reply = client.next_message()
    assert reply.data_type == "json" and reply.data == {"greeting": "hi st"}
    client.send_event("count", "", _dt(TEXT))
    client.send_event("count", "", _dt(TEXT))
    assert [client.next_message().data for _ in range(2)] == ["1", "2"]
    client.send_event("state", "", _dt(TEXT))
    assert client.next_message().data == {"greeting": "hi st", "count": 2}
    connected = app.wait_for(lambda m: m["type"] == "connected" and m["connectionId"] == client.connection_id,
                             "st's connected event")
    assert connected["states"] == {"greeting": "hi st"}


def test_on_connected_and_on_disconnected_fire_once_each(express_setup, clients):
    app, _ = express_setup
    python, _ = clients
    client = python("once")
    cid = client.connection_id
    connected = app.wait_for(lambda m: m["type"] == "connected" and m["connectionId"] == cid, "the connected event")
    assert connected["userId"] == "express-once"
    client.close()
    disconnected = app.wait_for(lambda m: m["type"] == "disconnected" and m["connectionId"] == cid,
                                "the disconnected event")
    assert disconnected["userId"] == "express-once" and isinstance(disconnected["reason"], str)
    # a later connection's events are a fence: nothing more arrives for this one after them
    later = python("fence")
    app.wait_for(lambda m: m["type"] == "connected" and m["connectionId"] == later.connection_id, "the fence")
    for kind in ("connect", "connected", "disconnected"):
        assert len(app.all(lambda m, k=kind: m["type"] == k and m["connectionId"] == cid)) == 1, kind
