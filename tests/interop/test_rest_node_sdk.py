"""Microsoft's JavaScript service SDK (npm @azure/web-pubsub 1.2.0) against `fabric serve`.

`tests/js/rest.mjs` runs the main operations with the SDK (getClientAccessToken, sends with
each content type, `odata`-built filters, excluded, TTL, groups with listConnections paging
through nextLink, addConnectionsToGroups/removeConnectionsFromGroups, exists, permissions,
closes with reasons, a 400 for a bad filter) and checks every effect on plain `ws` clients.
Node must be installed (a missing node fails under CI=true) and tests/js must have its npm
packages (`./dev test` runs `npm ci` there).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from interop_support import JS_DIR, require_node_modules, unique

STEPS = ["getClientAccessToken", "sendToAllContentTypes", "filtersWithOdata", "sendToUserAndConnection", "groups",
         "exists", "permissions", "errors", "closes", "done"]


def test_js_service_sdk_drives_the_rest_api(fabric_server):
    node = require_node_modules()
    cmd = [node, str(JS_DIR / "rest.mjs"), "--connection-string", fabric_server.connection_string,
           "--hub", unique("jsrest"), "--deadline-ms", "40000"]
    try:
        done = subprocess.run(cmd, cwd=JS_DIR, capture_output=True, timeout=50)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"rest.mjs did not finish in 50 s: {exc.stdout!r}\n{fabric_server.describe()}", pytrace=False)
    lines = [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]
    report = "\n".join(json.dumps(line) for line in lines) + "\n--- stderr ---\n" + done.stderr.decode()
    if done.returncode != 0 or not lines or lines[-1] != {"step": "done", "ok": True}:
        pytest.fail(f"rest.mjs exited {done.returncode}:\n{report}\n{fabric_server.describe()}", pytrace=False)
    assert [line["step"] for line in lines] == STEPS
    fabric_server.check_alive()
