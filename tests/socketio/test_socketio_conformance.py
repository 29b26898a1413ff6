"""The official Socket.IO project's conformance suites (25 Engine.IO + 32 Socket.IO tests)
against ``examples/socketio_conformance.py``, through the shared harness's ``run.sh``.

Node and npm are required: without them the test skips locally and fails under CI=true.

One test of the Engine.IO suite races on a loaded machine whatever the server does:
"closes the session upon cancelled polling request" aborts a GET 5 ms after calling
``fetch``; when node-fetch has not yet written the request by then (its TCP connect not yet
processed by the client's event loop, seen with NODE_DEBUG=net), the server never sees that
GET and the next GET is a first poll. When that test, and only it, fails, the Engine.IO suite
runs again (at most twice); any other failure fails at once.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.socketio.sio_support import ROOT, start_app

pytestmark = pytest.mark.interop

RUN_SH = ROOT.parent / "shared" / "conformance" / "socketio" / "run.sh"
EXAMPLE = ROOT / "examples" / "socketio_conformance.py"
RACY = "closes the session upon cancelled polling request"


def _run(host: str, port: int, suites: str) -> tuple[int, str]:
    done = subprocess.run(["bash", str(RUN_SH), host, str(port)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "SUITES": suites})
    return done.returncode, done.stdout + done.stderr


def _counts(output: str, suite: str) -> tuple[int, int]:
    match = re.search(rf"^{re.escape(suite)}: (\d+) passed, (\d+) failed", output, re.M)
    assert match, output
    return int(match[1]), int(match[2])


def test_official_suites_pass_57_of_57():
    require_tool("node")
    require_tool("npm")
    if not RUN_SH.exists():
        pytest.fail(f"the conformance harness is missing: {RUN_SH}")
    app = start_app(EXAMPLE)
    try:
        rc, output = _run(app.host, app.port, "socket.io")
        assert rc == 0 and _counts(output, "socket.io") == (32, 0), output + app.recent_output()
        for _attempt in range(3):
            rc, output = _run(app.host, app.port, "engine.io")
            failures = [line for line in output.splitlines() if line.strip().startswith("FAIL")]
            if rc == 0:
                break
            assert all(RACY in line for line in failures), output + app.recent_output()
        assert rc == 0 and _counts(output, "engine.io") == (25, 0), output + app.recent_output()
    finally:
        app.stop()
