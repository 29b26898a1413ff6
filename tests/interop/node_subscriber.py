"""`node tests/js/reliable_subscriber.mjs` driven from a test: @azure/web-pubsub-client on the
JSON reliable subprotocol, one group, every message recorded and checked (see the script)."""

from __future__ import annotations

import json
import queue
import subprocess
import time
from typing import Any

import pytest

from interop_support import JS_DIR, WAIT_TIMEOUT, _OutputTail, require_node_modules


def _fail(what: str, *parts: Any) -> None:
    details = "\n".join(p if isinstance(p, str) else p.describe() for p in parts)
    pytest.fail(f"{what}\n{details}", pytrace=False)


class NodeSubscriber:
    """`node tests/js/reliable_subscriber.mjs` (see its header), with bounded reads."""

    def __init__(self, url: str, group: str, expect: int, deadline_s: float) -> None:
        node = require_node_modules()
        self.cmd = [node, str(JS_DIR / "reliable_subscriber.mjs"), "--url", url, "--group", group,
                    "--expect", str(expect), "--deadline-ms", str(int(deadline_s * 1000)),
                    "--op-timeout-ms", str(int(WAIT_TIMEOUT * 1000))]
        self.proc = subprocess.Popen(self.cmd, cwd=JS_DIR, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.stdout = _OutputTail(self.proc.stdout, "node-sub-stdout", maxlen=50)
        self.stderr = _OutputTail(self.proc.stderr, "node-sub-stderr", queueing=False)

    def describe(self) -> str:
        state = "running" if self.proc.poll() is None else f"exited with {self.proc.returncode}"
        return (f"node reliable_subscriber.mjs ({state})\n--- stdout (tail, truncated lines) ---\n"
                + "\n".join(line[:300] for line in list(self.stdout.lines)[-20:])
                + f"\n--- stderr ---\n{self.stderr.text()}")

    def next_line(self, kind: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _fail(f"no {kind!r} line from the node subscriber within {timeout} s", self)
            try:
                line = self.stdout.new_lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.proc.wait(5)
                _fail(f"the node subscriber ended before a {kind!r} line", self)
            msg = json.loads(line)
            if msg.get("type") == "fatal":
                _fail(f"the node subscriber failed: {msg.get('error')}", self)
            if msg.get("type") == kind:
                return msg

    def finish(self) -> tuple[dict[str, Any], int]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"finish\n")
        self.proc.stdin.flush()
        done = self.next_line("done", WAIT_TIMEOUT * 2)
        return done, self.proc.wait(WAIT_TIMEOUT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.stdout.join(2)
        self.stderr.join(2)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                try:
                    pipe.close()
                except BrokenPipeError:
                    pass
