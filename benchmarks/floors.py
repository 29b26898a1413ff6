"""Benchmark: one client's request/response round trips and connection setup, each with the
floor under it.

Run:  .venv/bin/python benchmarks/floors.py [--round-trips N] [--rounds R] [--quick]
      .venv/bin/python benchmarks/floors.py --setup [--connections N] [--rounds R]

Why: the echo figure (one client, sequential round trips) is bound by the server's CPU per
round trip, and connection setup by its CPU per connection. This separates what the runtime
costs from what the protocols cost, with two floors that run no protocol at all (``loadgen
--proto raw``: each text frame comes back; ``P``+json goes to every other connection):

- ``floor_trio``: a bare echo on the fabric's own HTTP front and WebSocket transport on trio
  (``transport.http`` + ``transport.websocket``: this file re-run with ``--serve-floor``):
  one reader task, the handler queues the frame, the reader sends it at the end of its turn;
- ``floor_node``: the same on Node ``ws`` (``node/raw_node.js``), the library Node
  socket.io runs on;
- ``floor_python``: the same echo, with the same frame decoder and encoder as ``floor_trio``
  (``transport.websocket._simple_frame``, ``transport.frames.encode_frame``), on a bare
  ``select.epoll`` loop with no trio at all (this file re-run with ``--serve-epoll``): so
  ``floor_trio - floor_python`` is what the runtime (trio's scheduler pass, its epoll
  bookkeeping, the ``WebSocket`` reader's turn) costs per round trip, and ``floor_python``
  what Python itself does;

- ``fabric_trivial`` (not run unless named in ``--servers``): ``fabric serve`` whose Web
  PubSub message path is replaced by a trivial one that answers a ``sendToGroup`` with the
  same two frames (the ack, the group message echoing the data) without decoding, routing or
  checking anything: the whole fabric process is there (handshake, hub, timers, metrics, log
  writer) but not the message path, so ``fabric - fabric_trivial`` is that path's in-situ
  cost and ``fabric_trivial - floor_trio`` the process's (this file re-run with
  ``--serve-trivial``; a diagnostic, never a figure to compare with peers);

then the servers the echo scenario compares: ``fabric_sio`` and ``sio_node`` (Socket.IO
emit-with-ack, one frame back per round trip), ``fabric`` and ``wps_node`` (Web PubSub
``sendToGroup`` with an ackId to the sender's own group: an ack *and* a group message back
per round trip). Rounds alternate the servers so drift hits all alike. For each it prints
round trips/s and the server's user and system CPU per round trip (from /proc, over the
loadgen run), then the ratios. ``--setup`` does the same for opening ``--connections``
WebSockets (100 in flight; the idle scenario of ``python -m benchmarks``): connections/s,
setup p50, and the server's CPU per connection. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import NODE_DIR  # noqa: E402
from benchmarks.procs import PortAllocator, group_pids, run_command, running_server  # noqa: E402
from benchmarks.servers import SERVERS  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def _serve_floor(port: int) -> None:
    import trio

    from transport.frames import encode_frame
    from transport.http import Response, WebSocketAccept, serve_tcp

    sockets: set = set()
    ack = encode_frame(b"A", text=True)

    class Floor:
        async def handle_http(self, request):
            return Response(404, b"", ())

        async def handle_websocket(self, request):
            async def run(ws):
                async def on_message(data):
                    if isinstance(data, str):
                        if data[:1] == "P":  # broadcast the rest to every other socket, then ack
                            frame = encode_frame(data[1:].encode("utf-8"), text=True)
                            for other in sockets:
                                if other is not ws:
                                    other.send_nowait(frame)
                            ws.send_nowait(ack)
                            return
                        ws.send_nowait(encode_frame(data.encode("utf-8"), text=True))
                    else:
                        ws.send_nowait(encode_frame(data, text=False))

                sockets.add(ws)
                try:
                    await ws.run(on_message)
                finally:
                    sockets.discard(ws)

            return WebSocketAccept(None, run)

    trio.run(serve_tcp, Floor(), "127.0.0.1", port)


def _serve_epoll(port: int) -> None:
    """The floor without trio: one thread, one level-triggered ``select.epoll``; each
    readable socket is read once, and every complete simple frame in what it holds is echoed
    in one ``send``. Text and binary frames only (the load generator's raw echo); EOF or any
    other frame (a close) ends the connection. The opening handshake is read the same way
    (its request head, then the 101); nothing else of HTTP is served."""
    import select
    import socket

    from transport.frames import accept_key, encode_frame
    from transport.websocket import OP_TEXT, _simple_frame

    listener = socket.create_server(("127.0.0.1", port), backlog=1024)
    listener.setblocking(False)
    poller = select.epoll()
    poller.register(listener.fileno(), select.EPOLLIN)
    conns: dict[int, list] = {}  # fd -> [socket, bytes held, handshake done]

    def drop(fd: int) -> None:
        poller.unregister(fd)
        conns.pop(fd)[0].close()

    while True:
        for fd, _ in poller.poll():
            if fd == listener.fileno():
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    continue
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                conns[sock.fileno()] = [sock, b"", False]
                poller.register(sock.fileno(), select.EPOLLIN)
                continue
            conn = conns[fd]
            try:
                data = conn[0].recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                drop(fd)
                continue
            if conn[1]:
                data = conn[1] + data
            if not conn[2]:  # the handshake's request head
                if b"\r\n\r\n" not in data:
                    conn[1] = data
                    continue
                head, _, data = data.partition(b"\r\n\r\n")
                key = next((line.split(b":", 1)[1] for line in head.split(b"\r\n")
                            if line.lower().startswith(b"sec-websocket-key:")), None)
                if key is None:
                    drop(fd)
                    continue
                conn[0].send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                             + accept_key(key).encode() + b"\r\n\r\n")
                conn[2] = True
            out = []
            pos = 0
            frame = None
            while pos < len(data):
                frame = _simple_frame(data, pos, 1 << 20)
                if frame is None or type(frame) is int:
                    break
                opcode, message, pos = frame
                if opcode == OP_TEXT:
                    out.append(encode_frame(message.encode("utf-8"), text=True))
                else:
                    out.append(encode_frame(message, text=False))
            if out:
                conn[0].send(b"".join(out))
            if pos < len(data) and frame is None:  # a close frame, or anything else: done
                drop(fd)
                continue
            conn[1] = data[pos:]


def _serve_trivial(fabric_args: list[str]) -> int:
    """``fabric serve`` with ``ClientConnection.on_message`` answering a ``sendToGroup`` with
    an ack and the group message built by string slicing (the load generator's echo shape:
    ``{"type":"sendToGroup","group":G,"dataType":"json","data":D,"noEcho":false,"ackId":N}``);
    anything else takes the real path (the load generator's joinGroup)."""
    from fabric.cli import main as fabric_main
    from fabric.webpubsub import connection
    from transport.frames import encode_frame

    real = connection.ClientConnection.on_message

    async def on_message(self, data):
        if not isinstance(data, str) or '"type":"sendToGroup"' not in data:
            return await real(self, data)
        a = data.index('"ackId":') + 8
        ack_id = int(data[a:data.index("}", a)])
        g = data.index('"group":') + 8
        group = data[g:data.index(",", g)]
        d = data.index('"data":') + 7
        body = data[d:data.rindex(',"noEcho"')]
        self.ws.send_nowait(encode_frame(b'{"type":"ack","ackId":%d,"success":true}' % ack_id, text=True))
        self.ws.send_nowait(encode_frame(
            ('{"type":"message","from":"group","group":' + group + ',"dataType":"json","data":' + body + "}")
            .encode("utf-8"), text=True))

    connection.ClientConnection.on_message = on_message
    return fabric_main(fabric_args)


def _cpu(pids: list[int]) -> tuple[float, float]:
    user = system = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11]) / _TICK
        system += int(fields[12]) / _TICK
    return user, system


def _servers() -> dict[str, tuple]:
    """name -> (command(port), loadgen args, cwd)."""
    table = {
        "floor_trio": (lambda p: [sys.executable, str(Path(__file__).resolve()), "--serve-floor", str(p)],
                       ("--proto", "raw"), ROOT),
        "floor_node": (lambda p: ["node", str(NODE_DIR / "raw_node.js"), str(p)], ("--proto", "raw"), NODE_DIR),
        "floor_python": (lambda p: [sys.executable, str(Path(__file__).resolve()), "--serve-epoll", str(p)],
                         ("--proto", "raw"), ROOT),
    }
    for name in ("fabric_sio", "sio_node", "fabric", "wps_node"):
        s = SERVERS[name]
        table[name] = (s.command, s.loadgen_args, ROOT)
    fabric = SERVERS["fabric"]
    table["fabric_trivial"] = (
        lambda p: [sys.executable, str(Path(__file__).resolve()), "--serve-trivial", *fabric.command(p)[3:]],
        fabric.loadgen_args, ROOT)
    return table


def _loadgen_run(name: str, spec: tuple, port: int, loadgen: list[str], logs: Path) -> tuple[dict, float, float]:
    """Start ``name``'s server, run the load generator against it; its result record and
    the server's user and system CPU seconds over the run."""
    command, args, cwd = spec
    with running_server(command(port), port, logs / f"{name}.log", cwd=cwd) as server:
        time.sleep(0.3)
        pids = group_pids(server.pid) or [server.pid]
        u0, s0 = _cpu(pids)
        res = run_command(["node", "loadgen.js", "--port", str(port), *loadgen, *args], cwd=NODE_DIR, timeout=300)
        u1, s1 = _cpu(pids)
    if res.returncode != 0:
        raise SystemExit(f"{name}: loadgen failed: {res.stderr[-500:]}")
    return json.loads(res.stdout.strip().splitlines()[-1]), u1 - u0, s1 - s0


def _one(name: str, spec: tuple, port: int, round_trips: int, logs: Path) -> dict:
    record, user, system = _loadgen_run(
        name, spec, port, ["--scenario", "echo", "--clients", "1", "--messages", str(round_trips)], logs)
    echo = record["echo"]
    done = echo["round_trips"]
    return {
        "rate": echo["round_trips_per_s"],
        "user_us": user / done * 1e6,
        "sys_us": system / done * 1e6,
        "p50_ms": echo["rtt_ms"]["p50"],
        "errors": echo["errors"],
    }


def _one_setup(name: str, spec: tuple, port: int, connections: int, logs: Path) -> dict:
    record, user, system = _loadgen_run(
        name, spec, port, ["--scenario", "fanout", "--subs", str(connections), "--messages", "1", "--warmup", "0",
                           "--pace", "ack"], logs)
    c = record["connect"]
    ok = c["ok"] + 1  # the publisher too
    return {
        "rate": round(c["ok"] / c["wall_s"]),
        # Over the whole run (the one message and the closes are a small share).
        "user_us": user / ok * 1e6,
        "sys_us": system / ok * 1e6,
        "p50_ms": c["setup_ms"]["p50"],
        "errors": c["failed"],
    }


def _report(results: dict[str, list[dict]], unit: str, per: str) -> None:
    med = {n: {k: statistics.median(x[k] for x in v) for k in ("rate", "user_us", "sys_us", "p50_ms")}
           for n, v in results.items() if v}
    print(f"\n| server | {unit} | server user us/{per} | server sys us/{per} | total us/{per} | p50 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for n, m in med.items():
        print(f"| {n} | {m['rate']:,.0f} | {m['user_us']:.1f} | {m['sys_us']:.1f} | "
              f"{m['user_us'] + m['sys_us']:.1f} | {m['p50_ms']:.3f} |")
    print()
    for ours, peer in (("floor_python", "floor_node"), ("floor_trio", "floor_node"), ("floor_trio", "sio_node"), ("fabric_sio", "sio_node"),
                       ("fabric", "sio_node"), ("fabric", "wps_node")):
        if ours in med and peer in med:
            o, p = med[ours], med[peer]
            print(f"{ours} / {peer}: rate {o['rate'] / p['rate']:.2f}x, server CPU per {per} "
                  f"{(o['user_us'] + o['sys_us']) / (p['user_us'] + p['sys_us']):.2f}x")
    if "floor_python" in med and "floor_trio" in med:
        f, t = med["floor_python"], med["floor_trio"]
        print(f"floor_trio: the runtime (trio's pass and the WebSocket reader's turn) costs "
              f"{t['user_us'] + t['sys_us'] - f['user_us'] - f['sys_us']:.1f} us per {per} above a bare epoll loop "
              f"(user {t['user_us'] - f['user_us']:.1f} us)")
    if "fabric_trivial" in med and "fabric" in med:
        t, m = med["fabric_trivial"], med["fabric"]
        print(f"fabric: the Web PubSub message path costs {m['user_us'] + m['sys_us'] - t['user_us'] - t['sys_us']:.1f}"
              f" us of server CPU per {per} (fabric - fabric_trivial)")
        if "floor_trio" in med:
            f = med["floor_trio"]
            print(f"fabric_trivial: the fabric process costs {t['user_us'] + t['sys_us'] - f['user_us'] - f['sys_us']:.1f}"
                  f" us per {per} above the trio floor")
    if "floor_trio" in med:
        f = med["floor_trio"]
        for n in ("fabric_sio", "fabric"):
            if n in med:
                m = med[n]
                print(f"{n}: protocol work above the trio floor {m['user_us'] + m['sys_us'] - f['user_us'] - f['sys_us']:.1f}"
                      f" us of server CPU per {per}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--round-trips", type=int, default=20000)
    ap.add_argument("--setup", action="store_true", help="connection setup instead of round trips")
    ap.add_argument("--connections", type=int, default=5000, help="--setup: connections per run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="5,000 round trips (or 1,000 connections), one round")
    ap.add_argument("--servers", nargs="+", default=None)
    ap.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    ap.add_argument("--serve-epoll", type=int, metavar="PORT", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve-trivial"]:
        return _serve_trivial(argv[1:])
    a = ap.parse_args(argv)
    if a.serve_floor:
        _serve_floor(a.serve_floor)
        return 0
    if a.serve_epoll:
        _serve_epoll(a.serve_epoll)
        return 0
    if a.quick:
        a.round_trips, a.connections, a.rounds = 5000, 1000, 1
    table = _servers()
    names = a.servers or [n for n in table if n not in ("fabric_trivial", "floor_python")]
    logs = ROOT / "benchmarks" / "out" / "floors"
    ports = PortAllocator()
    results: dict[str, list[dict]] = {n: [] for n in names}
    if a.setup:
        print(f"connection setup: {a.connections} connections per run (100 in flight), {a.rounds} rounds, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    else:
        print(f"echo: {a.round_trips} round trips per run, {a.rounds} rounds, load {os.getloadavg()[0]:.2f}",
              flush=True)
    for r in range(a.rounds):
        for name in names:
            if a.setup:
                m = _one_setup(name, table[name], ports.take(), a.connections, logs)
                unit = "conn/s"
            else:
                m = _one(name, table[name], ports.take(), a.round_trips, logs)
                unit = "rt/s"
            results[name].append(m)
            print(f"  r{r + 1} {name:11} {m['rate']:6,} {unit}  user {m['user_us']:7.1f} us  sys {m['sys_us']:6.1f} us"
                  f"  p50 {m['p50_ms']:.3f} ms  errors {m['errors']}", flush=True)
    if a.setup:
        _report(results, "connections/s", "connection")
    else:
        _report(results, "round trips/s", "round trip")
    return 0


if __name__ == "__main__":
    sys.exit(main())
