"""Where a connection's memory goes: N idle JSON-subprotocol connections, tracemalloc diff.

    .venv/bin/python benchmarks/memory_per_connection.py [N]

Runs the fabric in this process and N raw clients in a child process (so only the
server's allocations are traced), then prints RSS and traced bytes per connection and the
top allocation sites. Used to get under the 20 kB-per-idle-connection budget.
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
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = []
for i in range(n):
    tok = jwt.encode({"aud": f"http://127.0.0.1:{port}/client/hubs/bench", "exp": int(time.time()) + 3600,
                      "sub": f"u{i}"}, "memory-benchmark-access-key-0123456789", algorithm="HS256")
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


async def main(n: int) -> None:
    import trio

    import fabric
    from fabric.config import load_config

    async with fabric.open_fabric(load_config(None, env={}), access_key="memory-benchmark-access-key-0123456789") as fab:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(fab.serve, "127.0.0.1", 0)
            await fab.get_hub("bench")
            gc.collect()
            r0 = rss_kb()
            tracemalloc.start(8)
            before = tracemalloc.take_snapshot()
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-c", CLIENT, str(port), str(n)],
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
            print(f"{n} idle connections")
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

    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
