"""Tokens minted by Microsoft's JavaScript service SDK (npm @azure/web-pubsub, in tests/js) verify.

The SDK runs offline: client tokens are signed locally and REST calls go to an in-process
fake httpClient that records the URL and Authorization header."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import urllib.parse
from pathlib import Path

import pytest

from fabric.core.auth import TokenError, connection_string, verify_client_token, verify_rest_token

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = ROOT / "tests" / "js"
KEY = "primary-key-0123456789-0123456789-0123456789"
ENDPOINT = "http://127.0.0.1:8080"

SCRIPT = r"""
import { WebPubSubServiceClient } from "@azure/web-pubsub";
import { createHttpHeaders } from "@azure/core-rest-pipeline";
const [conn, hub] = process.argv.slice(-2);
const rest = [];
const httpClient = {
  async sendRequest(request) {
    rest.push({ url: request.url, authorization: request.headers.get("authorization") });
    return { status: request.method === "PUT" ? 200 : 202, headers: createHttpHeaders(), request };
  },
};
const client = new WebPubSubServiceClient(conn, hub, { httpClient, retryOptions: { maxRetries: 0 } });
const full = await client.getClientAccessToken({ userId: "alice", roles: ["webpubsub.sendToGroup"], groups: ["g1"] });
const anonymous = await client.getClientAccessToken();
const socketio = await client.getClientAccessToken({ clientProtocol: "socketio" });
await client.sendToAll({ hello: 1 }, { filter: "userId eq 'u1'" });
await client.group("room 1").addUser("bob");
console.log(JSON.stringify({ full, anonymous, socketio, rest }));
"""


def _require_tool(name: str) -> str:
    """tests/conftest.py::require_tool, loaded by path (tests/ is not a package)."""
    spec = importlib.util.spec_from_file_location("_fabric_tests_root_conftest", ROOT / "tests" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.require_tool(name)


@pytest.fixture(scope="module")
def js_tokens() -> dict:
    node = _require_tool("node")
    if not (JS_DIR / "node_modules" / "@azure" / "web-pubsub").is_dir():
        message = f"{JS_DIR / 'node_modules'} lacks @azure/web-pubsub: run `npm ci` in tests/js"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [node, "--input-type=module", "-e", SCRIPT, "--", connection_string(ENDPOINT, KEY), "chat"],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_js_sdk_client_token_verifies(js_tokens):
    full = js_tokens["full"]
    assert full["baseUrl"] == "ws://127.0.0.1:8080/client/hubs/chat"
    identity = verify_client_token(full["token"], keys=[KEY], hub="chat")
    assert (identity.user_id, identity.roles, identity.groups, identity.claims) == (
        "alice",
        ("webpubsub.sendToGroup",),
        ("g1",),
        {},
    )
    anonymous = verify_client_token(js_tokens["anonymous"]["token"], keys=["other", KEY], hub="CHAT")
    assert (anonymous.user_id, anonymous.roles, anonymous.groups) == (None, (), ())


def test_js_sdk_socketio_token(js_tokens):
    token = js_tokens["socketio"]["token"]
    verify_client_token(token, keys=[KEY], hub="chat", client_path_prefixes=("/clients/socketio/hubs/",))
    with pytest.raises(TokenError) as info:
        verify_client_token(token, keys=[KEY], hub="chat")
    assert info.value.code == "InvalidAudience"


def test_js_sdk_rest_tokens_verify(js_tokens):
    assert len(js_tokens["rest"]) == 2
    for request in js_tokens["rest"]:
        split = urllib.parse.urlsplit(request["url"])
        claims = verify_rest_token(request["authorization"], keys=[KEY], request_path=split.path + "?" + split.query)
        assert claims["aud"] == request["url"]
        with pytest.raises(TokenError):
            verify_rest_token(request["authorization"], keys=[KEY], request_path="/api/hubs/chat/:other")
