"""The demos in a real browser: headless Chromium (Debian's ``chromium``) driven by
``playwright-core`` (``tests/browser/demos.mjs``). Two pages chat and draw and each sees the
other's messages and strokes; a late joiner gets the drawing; hostile text stays text; the
status page counts connections. Screenshots land in ``tests/browser/artifacts/`` (or
``$FABRIC_TEST_ARTIFACTS``).

Needs ``chromium`` and ``node`` on PATH and ``npm ci`` in this folder: skipped locally without
them, a failure under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import IN_CI, require_tool

HERE = Path(__file__).resolve().parent
ARTIFACTS = Path(os.environ.get("FABRIC_TEST_ARTIFACTS", HERE / "artifacts")) / "browser"


def _require_playwright() -> None:
    if not (HERE / "node_modules" / "playwright-core").is_dir():
        message = "playwright-core is not installed: run `npm ci` in tests/browser"
        if IN_CI:
            pytest.fail(message + " (CI=true: a missing tool is a failure, not a skip)")
        pytest.skip(message)


@pytest.mark.slow
@pytest.mark.interop
def test_two_pages_chat_and_draw():
    chromium = require_tool("chromium")
    node = require_tool("node")
    _require_playwright()
    server = subprocess.Popen([sys.executable, "-m", "fabric", "serve", "--demo", "--port", "0",
                               "--access-key", "browser-test-key-0123456789"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline and not line.startswith("Endpoint="):
            line = server.stdout.readline()
            if not line and server.poll() is not None:
                pytest.fail(f"fabric serve --demo did not start: {server.stderr.read()}")
        base = re.match(r"Endpoint=(http://[^;]+);", line).group(1)
        run = subprocess.run([node, str(HERE / "demos.mjs"), base, str(ARTIFACTS), chromium],
                             capture_output=True, text=True, timeout=180, cwd=HERE)
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    lines = [json.loads(x) for x in run.stdout.splitlines() if x.startswith("{")]
    assert lines, f"no result from demos.mjs (exit {run.returncode}): {run.stdout[-2000:]} {run.stderr[-2000:]}"
    result = lines[-1]
    assert result["ok"], result.get("error", "") + " " + json.dumps(result.get("errors", []))[:2000]
    assert run.returncode == 0
    assert any(m.endswith("hello from alice") for m in result["chat"]["bob"])
    assert any(m.endswith("hi alice, bob here") for m in result["chat"]["alice"])
    board = result["whiteboard"]
    assert board["alice"] == board["bob"] == board["late"] >= 3
    for name in ("chat.png", "whiteboard.png", "status.png"):
        assert (ARTIFACTS / name).stat().st_size > 1000
