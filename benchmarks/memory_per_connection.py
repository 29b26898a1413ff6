"""Where a connection's memory goes: N idle JSON-subprotocol connections, tracemalloc diff.

    .venv/bin/python benchmarks/memory_per_connection.py [N] [--join] [--tasks]

Runs the fabric in this process and N raw clients in a child process (so only the
server's allocations are traced), then prints RSS and traced bytes per connection and the
top allocation sites. Used to get under the 20 kB-per-idle-connection budget (issue 16: 15 kB).
``--join``: each client joins group ``g`` with an ackId, as loadgen.js's fan-out subscribers
do. ``--tasks``: trio tasks per connection (walked from the root task) with the await chain
each is parked in, and the Task objects alive beyond the running ones (a finished task kept
by a reference is memory too).
"""

from __future__ import annotations

import base64
import gc
import os
import socket
import subprocess
import sys
import time
import tracemalloc

CLIENT = r'''
import base64, os, socket, sys, time, jwt
port, n, join = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
socks = []
for i in range(n):
    tok = jwt.encode({"aud": f"http://127.0.0.1:{port}/client/hubs/bench", "exp": int(time.time()) + 3600,
                      "sub": f"u{i}", "role": ["webpubsub.joinLeaveGroup"]},
                     "memory-benchmark-access-key-0123456789", algorithm="HS256")
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /client/hubs/bench?access_token={tok} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Protocol: json.webpubsub.azure.v1\r\n\r\n").encode())
    data = b""
    while b"connected" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("server closed during the handshake")
        data += chunk
    if join:  # joinGroup with an ackId (a masked text frame, zero mask), then its ack
        body = b'{"type":"joinGroup","group":"g","ackId":1}'
        s.sendall(bytes([0x81, 0x80 | len(body)]) + bytes(4) + body)
        while b'"ack"' not in data:
            data += s.recv(4096)
    socks.append(s)
print("ready", flush=True)
sys.stdin.read()
'''


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


def _running_tasks() -> list:
    """Every running trio task, walked down the nurseries from the root task."""
    import trio

    running = []
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        running.append(task)
        pending.extend(t for nursery in task.child_nurseries for t in nursery.child_tasks)
    return running


def _tasks(n: int, before: int) -> None:
    """Running tasks per connection and where each kind is parked; Task objects kept alive."""
    import collections

    import trio

    running = _running_tasks()
    print(f"running tasks per connection: {(len(running) - before) / n:.2f}")
    chains: collections.Counter = collections.Counter()
    for task in running:
        names, coro = [], task.coro
        while coro is not None:
            code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
            names.append(code.co_qualname if code else type(coro).__name__)
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        chains[" > ".join(names)] += 1
    for chain, count in chains.most_common():
        if count >= n // 2:
            print(f"{count / n:5.2f}/conn  {chain}")
    alive = sum(1 for o in gc.get_objects() if type(o) is trio.lowlevel.Task)
    print(f"Task objects alive beyond the running ones: {(alive - len(running)) / n:.2f} per connection")


async def main(n: int) -> None:
    import trio

    import fabric
    from fabric.config import load_config

    async with fabric.open_fabric(load_config(None, env={}), access_key="memory-benchmark-access-key-0123456789") as fab:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(fab.serve, "127.0.0.1", 0)
            await fab.get_hub("bench")
            gc.collect()
            tasks_before = len(_running_tasks())
            r0 = rss_kb()
            tracemalloc.start(8)
            before = tracemalloc.take_snapshot()
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-c", CLIENT, str(port), str(n), "1" if "--join" in sys.argv else "0"],
                stdout=subprocess.PIPE, stdin=subprocess.PIPE)
            buf = b""
            with trio.fail_after(120):
                while b"ready" not in buf:
                    chunk = await proc.stdout.receive_some(100)
                    if not chunk:
                        raise SystemExit("client process failed")
                    buf += chunk
            await trio.sleep(1)
            gc.collect()
            after = tracemalloc.take_snapshot()
            r1 = rss_kb()
            stats = after.compare_to(before, "lineno")
            total = sum(s.size_diff for s in stats)
            print(f"{n} idle connections{' (each joined a group with an ackId)' if '--join' in sys.argv else ''}")
            if "--tasks" in sys.argv:
                _tasks(n, tasks_before)
            print(f"RSS per connection (inflated by tracemalloc itself): {(r1 - r0) / n:.1f} kB")
            print(f"traced bytes per connection: {total / n:.0f} B")
            for s in stats[:20]:
                frame = s.traceback[0]
                name = frame.filename.split("site-packages/")[-1].replace(os.getcwd() + "/", "")
                print(f"{s.size_diff / n:8.0f} B/conn {s.count_diff / n:5.1f} obj/conn  {name}:{frame.lineno}")
            proc.kill()
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    import trio

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    trio.run(main, int(args[0]) if args else 1000)
