"""Where a Socket.IO connection's memory goes: N idle WebSocket clients in one room, tracemalloc diff.

    .venv/bin/python benchmarks/memory_socketio.py [N] [--no-trace]

Runs ``examples/socketio_bench.py``'s app in this process and N raw Socket.IO clients in a child
process (so only the server's allocations are traced). Each client opens an Engine.IO WebSocket,
joins ``/fanout`` and the room ``bench`` (what ``idle5000`` does through loadgen.js). Prints RSS
and traced bytes per connection and the top allocation sites. ``--no-trace``: RSS only (the
figure the 20 kB budget is about; tracemalloc inflates it).
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLIENT = r'''
import base64, os, socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = []

def frame(text):
    data = text.encode()
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    assert len(data) < 126
    return bytes([0x81, 0x80 | len(data)]) + mask + body

def wait_for(s, token, data=b""):
    while token not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("server closed")
        data += chunk
    return data

for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    wait_for(s, b'"maxPayload"')
    s.sendall(frame("40/fanout,"))
    wait_for(s, b'40/fanout,{"sid"')
    s.sendall(frame('42/fanout,1["join","bench"]'))
    wait_for(s, b"43/fanout,1[true]")
    socks.append(s)
print("ready", flush=True)
sys.stdin.read()
'''


def _census():
    """(size by type, count by type) of gc-tracked objects and the untracked ones they refer to."""
    import collections

    sizes: collections.Counter = collections.Counter()
    counts: collections.Counter = collections.Counter()
    seen: set[int] = set()
    for obj in gc.get_objects():
        for o in (obj, *gc.get_referents(obj)):
            if id(o) in seen or (o is not obj and gc.is_tracked(o)):
                continue
            seen.add(id(o))
            name = type(o).__qualname__
            sizes[name] += sys.getsizeof(o)
            counts[name] += 1
    return sizes, counts


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


async def main(n: int, trace: bool) -> None:
    import trio

    import fabric
    from examples.socketio_bench import CONFIG, build
    from fabric.config import loads_config

    async with fabric.open_fabric(loads_config(CONFIG, source="memory_socketio.py", env={})) as fab:
        build(fab)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(fab.serve, "127.0.0.1", 0)
            await fab.get_hub("bench")
            gc.collect()
            if "--types" in sys.argv:
                sizes0, counts0 = _census()
            r0 = rss_kb()
            if trace:
                tracemalloc.start(8)
                before = tracemalloc.take_snapshot()
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-c", CLIENT, str(port), str(n)],
                stdout=subprocess.PIPE, stdin=subprocess.PIPE)
            buf = b""
            with trio.fail_after(300):
                while b"ready" not in buf:
                    chunk = await proc.stdout.receive_some(100)
                    if not chunk:
                        raise SystemExit("client process failed")
                    buf += chunk
            await trio.sleep(1)
            gc.collect()
            r1 = rss_kb()
            print(f"{n} idle Socket.IO connections (WebSocket, /fanout, one room)")
            print(f"RSS per connection{' (inflated by tracemalloc itself)' if trace else ''}: {(r1 - r0) / n:.1f} kB")
            if "--types" in sys.argv:  # live objects by type, per connection: after minus before
                sizes1, counts1 = _census()
                keys = set(sizes1) | set(sizes0)
                diff = {k: sizes1.get(k, 0) - sizes0.get(k, 0) for k in keys}
                print(f"live objects (gc-tracked and what they refer to, shallow sizes): "
                      f"{sum(diff.values()) / n:.0f} B per connection")
                for name in sorted(keys, key=lambda k: -diff[k])[:32]:
                    print(f"{diff[name] / n:8.0f} B/conn {(counts1.get(name, 0) - counts0.get(name, 0)) / n:6.2f} obj/conn  "
                          f"{name}")
                import collections

                tasks = collections.Counter()
                stacks = {}
                for obj in gc.get_objects():
                    if type(obj).__qualname__ == "Task" and hasattr(obj, "coro"):
                        key = obj.name.split(":")[0][:60]
                        tasks[key] += 1
                        if key not in stacks:
                            frames = []
                            coro = obj.coro
                            while coro is not None and len(frames) < 20:
                                code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
                                frames.append(code.co_qualname if code else type(coro).__name__)
                                coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
                            stacks[key] = frames
                if "--detail" in sys.argv:
                    detail = collections.Counter()
                    for obj in gc.get_objects():
                        t = type(obj).__qualname__
                        if t == "frame":
                            detail["frame " + obj.f_code.co_qualname] += 1
                        elif t == "method":
                            detail["method " + getattr(obj.__func__, "__qualname__", "?")] += 1
                        elif t == "function":
                            detail["function " + obj.__qualname__] += 1
                        elif t == "dict":
                            detail["dict keys " + ",".join(map(str, list(obj)[:4]))[:70]] += 1
                        elif t in ("set", "list", "cell") and detail[f"sampled {t}"] < 30:
                            detail[f"sampled {t}"] += 1
                            refs = [type(r).__qualname__ for r in gc.get_referrers(obj)[:2]]
                            detail[f"sampled {t} in " + ",".join(refs)] += n / 30
                    for key, count in detail.most_common(40):
                        if count >= n * 0.9:
                            print(f"{count / n:5.2f}/conn {key}")
                for key, count in tasks.most_common(4):
                    print(f"{count / n:5.2f} tasks/conn {key}: {' > '.join(stacks[key])}")
            if "--trim" in sys.argv:  # how much of it is free heap glibc kept (fragmentation)
                import ctypes

                ctypes.CDLL("libc.so.6").malloc_trim(0)
                print(f"RSS per connection after malloc_trim(0): {(rss_kb() - r0) / n:.1f} kB")
            if trace:
                after = tracemalloc.take_snapshot()
                for key in ("lineno", "traceback"):
                    stats = after.compare_to(before, key)
                    total = sum(s.size_diff for s in stats)
                    if key == "lineno":
                        print(f"traced bytes per connection: {total / n:.0f} B")
                    for s in stats[:25 if key == "lineno" else 6]:
                        frames = s.traceback if key == "traceback" else s.traceback[:1]
                        print(f"{s.size_diff / n:8.0f} B/conn {s.count_diff / n:5.1f} obj/conn")
                        for frame in list(frames)[:6 if key == "traceback" else 1]:
                            name = frame.filename.split("site-packages/")[-1].replace(os.getcwd() + "/", "")
                            print(f"        {name}:{frame.lineno}")
            proc.kill()
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    import trio

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    trio.run(main, int(args[0]) if args else 1000, "--no-trace" not in sys.argv)
