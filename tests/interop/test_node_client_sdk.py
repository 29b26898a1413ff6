"""Microsoft's JavaScript client SDK (npm @azure/web-pubsub-client 1.0.4) against `fabric serve`.

The Node side runs as subprocesses: `tests/js/roundtrip.mjs` (a self-contained JS-only
scenario) and `tests/js/client.mjs` (one client driven line by line, so Python and JavaScript
clients can talk to each other in one test). Tokens are minted by the JavaScript service SDK
(@azure/web-pubsub) unless a test says otherwise. Node must be installed, and tests/js must
have its npm packages (`./dev test` runs `npm ci` there): missing node fails under CI=true.
"""

from __future__ import annotations

import base64
import json
import subprocess

import pytest
from azure.messaging.webpubsubclient.models import WebPubSubDataType, WebPubSubProtocolType

from interop_support import JS_DIR, node_data, require_node_modules, unique

NODE_PROTOCOLS = [pytest.param("json", id="json"), pytest.param("reliable", id="json_reliable")]
PY_PROTOCOL = {"json": WebPubSubProtocolType.JSON, "reliable": WebPubSubProtocolType.JSON_RELIABLE}

# (dataType, value as the Python side sends/expects it)
PAYLOADS = [
    ("text", "héllo from the other side ✓"),
    ("json", {"n": 1, "list": [1, "two", None], "nested": {"t": True}}),
    ("json", "a json string"),
    ("binary", b"\x00\x01\xfe\xff\x80 bytes"),
]


@pytest.fixture(params=NODE_PROTOCOLS)
def protocol(request: pytest.FixtureRequest) -> str:
    return request.param


def _py_content(data_type: str, value: object) -> object:
    return memoryview(value) if data_type == "binary" else value


def test_js_only_roundtrip_scenario(fabric_server, protocol):
    """roundtrip.mjs: JS-minted tokens, join, acked sendToGroup (text/json/binary), noEcho,
    leaveGroup, Forbidden join without roles, all between two JS clients."""
    node = require_node_modules()
    cmd = [node, str(JS_DIR / "roundtrip.mjs"), "--connection-string", fabric_server.connection_string,
           "--hub", unique("jshub"), "--protocol", protocol, "--deadline-ms", "30000"]
    try:
        done = subprocess.run(cmd, cwd=JS_DIR, capture_output=True, timeout=40)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"roundtrip.mjs did not finish in 40 s: {exc.stdout!r}\n{fabric_server.describe()}", pytrace=False)
    lines = [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]
    report = "\n".join(json.dumps(line) for line in lines) + "\n--- stderr ---\n" + done.stderr.decode()
    if done.returncode != 0 or not lines or lines[-1] != {"step": "done", "ok": True}:
        pytest.fail(f"roundtrip.mjs exited {done.returncode}:\n{report}\n{fabric_server.describe()}", pytrace=False)
    assert [line["step"] for line in lines] == ["start", "join", "sendToGroup", "noEcho", "leaveGroup", "forbidden", "done"]


@pytest.mark.parametrize("mint", ["js", "python"])
def test_node_client_connects_joins_and_gets_its_echo(node_clients, protocol, mint):
    hub, group = unique("hub"), unique("g")
    user = unique("node")
    client = node_clients(hub, user_id=user, protocol=protocol, mint=mint)

    assert isinstance(client.connected["connectionId"], str) and client.connected["connectionId"]
    assert client.connected["userId"] == user
    joined = client.join(group)
    assert joined["isDuplicated"] is False
    sent = client.send(group, "to myself", "text")
    assert sent["isDuplicated"] is False and isinstance(sent.get("ackId"), int)
    got = client.collect_until("group-message", lambda m: m["data"] == "to myself")
    assert [(m["group"], m["dataType"], m["fromUserId"]) for m in got] == [(group, "text", user)]


def test_python_sdk_to_node_sdk(node_clients, sdk_clients, protocol):
    hub, group = unique("hub"), unique("g")
    node = node_clients(hub, protocol=protocol)
    node.join(group)
    py_user = unique("py")
    py = sdk_clients(hub, user_id=py_user, protocol=PY_PROTOCOL[protocol])

    for data_type, value in PAYLOADS:
        py.send_to_group(group, _py_content(data_type, value), WebPubSubDataType(data_type))
    py.send_to_group(group, "fence", WebPubSubDataType.TEXT)

    got = node.collect_until("group-message", lambda m: m["data"] == "fence")
    assert [(m["dataType"], node_data(m)) for m in got] == [*PAYLOADS, ("text", "fence")]
    assert {(m["group"], m["fromUserId"]) for m in got} == {(group, py_user)}
    seq = [m["sequenceId"] for m in got]
    if protocol == "reliable":
        assert seq == list(range(1, len(got) + 1)), seq
    else:
        assert all(s is None for s in seq), seq


def test_node_sdk_to_python_sdk(node_clients, sdk_clients, protocol):
    hub, group = unique("hub"), unique("g")
    py = sdk_clients(hub, protocol=PY_PROTOCOL[protocol])
    py.join(group)
    node_user = unique("node")
    node = node_clients(hub, user_id=node_user, protocol=protocol)

    for data_type, value in PAYLOADS:
        node.send(group, value, data_type)
    node.send(group, "fence", "text")

    got = py.collect_until(lambda m: m.data == "fence")
    assert [(m.data_type, m.data) for m in got] == [*PAYLOADS, ("text", "fence")]
    assert {(m.group, m.from_user_id) for m in got} == {(group, node_user)}


def test_node_no_echo_and_leave(node_clients, protocol):
    hub, group = unique("hub"), unique("g")
    sender = node_clients(hub, protocol=protocol)
    member = node_clients(hub, protocol=protocol)
    sender.join(group)
    member.join(group)

    sender.send(group, "not-for-sender", "text", no_echo=True)
    sender.send(group, "everyone", "text")
    assert [m["data"] for m in sender.collect_until("group-message", lambda m: m["data"] == "everyone")] == ["everyone"]
    assert [m["data"] for m in member.collect_until("group-message", lambda m: m["data"] == "everyone")] == [
        "not-for-sender", "everyone"]

    member.leave(group)
    sender.send(group, "after-leave", "text")
    member.join(group)
    sender.send(group, "after-rejoin", "text")
    assert [m["data"] for m in member.collect_until("group-message", lambda m: m["data"] == "after-rejoin")] == [
        "after-rejoin"]


def test_node_event_without_handler_and_forbidden_join(node_clients, protocol):
    hub, group = unique("hub"), unique("g")
    client = node_clients(hub, roles=(), protocol=protocol)

    event = client.call("event", event="nobody_listens", dataType="text", data="x")
    assert event["ok"] is False
    detail = event["error"]["errorDetail"]
    assert detail and detail.get("name") and detail.get("name") != "Duplicate", event

    join = client.call("join", group=group)
    assert join["ok"] is False and join["error"]["errorDetail"]["name"] == "Forbidden", join

    send = client.call("send", group=group, dataType="text", data="x", noEcho=False)
    assert send["ok"] is False and send["error"]["errorDetail"]["name"] == "Forbidden", send


def test_server_messages_arrive(node_clients, sdk_clients, echo_server, protocol):
    """Server-originated messages (`from: server`), produced by the embedded echo server's
    in-process event handler: `echo` replies to the sender, `broadcast` sends to the hub."""
    hub = echo_server.ECHO_HUB
    node = node_clients(hub, protocol=protocol, server=echo_server)
    py = sdk_clients(hub, protocol=PY_PROTOCOL[protocol], server=echo_server)

    # The Node client's own events come back to it as server messages.
    for data_type, value in PAYLOADS:
        result = node.call("event", event="echo", dataType=data_type,
                           data=base64.b64encode(value).decode() if data_type == "binary" else value)
        assert result["ok"] is True, result
        msg = node.next_event("server-message")
        assert (msg["dataType"], node_data(msg)) == (data_type, value)
        if protocol == "reliable":
            assert isinstance(msg["sequenceId"], int) and msg["sequenceId"] >= 1

    # A Python client's broadcast reaches the Node client (and the Python client itself).
    marker = {"broadcast": unique("b")}
    py.send_event("broadcast", marker, WebPubSubDataType.JSON)
    got = node.collect_until("server-message", lambda m: m["data"] == marker)
    assert got[-1]["dataType"] == "json"
    assert [m.data for m in py.collect_until(lambda m: m.data == marker)] == [marker]

    # A handler error is an ack error, and the connection carries on.
    failed = node.call("event", event="fail", dataType="text", data="x")
    assert failed["ok"] is False and failed["error"]["errorDetail"]["name"] == "InternalServerError", failed
    assert node.call("event", event="echo", dataType="text", data="after the failure")["ok"] is True
    assert node_data(node.next_event("server-message")) == "after the failure"
