"""Web PubSub for Socket.IO's default mode: fan-out through an app served by the fabric
against the same app on plain Node socket.io (issue 12).

    python -m benchmarks.default_mode [--reps 3] [--subs 1000,100] [--deliveries 100000] [--out FILE]

The app is ``benchmarks/node/sio_default_mode.js``: loadgen.js's Socket.IO contract on
socket.io 4.8 (namespace /fanout; join, publish with ``socket.to(room).emit``, echo). It runs

- **plain**: clients connect to the Node process (WebSocket only);
- **default**: the same script with ``useAzureSocketIO`` from ``@azure/web-pubsub-socket.io``
  1.2.1 pointed at one ``fabric serve`` (memory broker): clients connect to the fabric, which
  tunnels their packets to the app and fans the app's room sends out itself.

loadgen.js (``--proto sio --scenario fanout --pace e2e --window 16``, 64-byte payloads) has N
subscribers join one room through the app, then one publisher publishes about
``--deliveries`` deliveries; it reports deliveries/s, latency percentiles (publish to
delivery) and the CPU of the pids it is given (plain: the Node app; default: fabric and the
Node app). Each rep runs every (N, configuration) back to back, the order of the two
configurations alternating between reps, so the machine's load hits both alike; the ratio
``default / plain`` is taken within each rep and its median reported, with the load average
seen before each run.

Rules this module keeps: every process is ours, started in its own session and stopped
through its group (``benchmarks.procs``) in ``finally``; every wait is bounded; 127.0.0.1
only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import NODE_DIR, OUT_DIR, ROOT
from benchmarks.procs import HOST, PortAllocator, RunningServer, ServerFailed, raise_nofile_limit, run_command, running_server
from benchmarks.scenarios import LOADGEN, PAYLOAD_BYTES

APP = NODE_DIR / "sio_default_mode.js"
HUB = "bench"
KEY = "default-mode-bench-access-key-0123456789abcdef"
WINDOW = 16
LOADGEN_TIMEOUT_S = 150
DRAIN_S = 10
CONFIGS = ("plain", "default")


def _missing() -> str | None:
    for package in ("socket.io", "@azure/web-pubsub-socket.io", "ws"):
        if not (NODE_DIR / "node_modules" / package / "package.json").is_file():
            return f"{package} is not installed in {NODE_DIR} (run: cd benchmarks/node && npm ci)"
    return None


@contextlib.contextmanager
def _plain(ports: PortAllocator, logs: Path) -> Iterator[tuple[int, str, list[RunningServer]]]:
    port = ports.take()
    with running_server(["node", str(APP), str(port)], port, logs / "plain-app.log", cwd=NODE_DIR) as app:
        yield port, "/socket.io/", [app]


@contextlib.contextmanager
def _default(ports: PortAllocator, logs: Path, config: Path) -> Iterator[tuple[int, str, list[RunningServer]]]:
    port, app_port = ports.take(), ports.take()
    fabric = [sys.executable, "-m", "fabric", "serve", "--host", HOST, "--port", str(port), "--access-key", KEY,
              "--config", str(config)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
    with running_server(fabric, port, logs / "default-fabric.log", cwd=ROOT, env=env) as serve:
        app_env = dict(env, AZURE_CONNECTION_STRING=f"Endpoint=http://{HOST}:{port};AccessKey={KEY};Version=1.0;",
                       AZURE_HUB=HUB)
        # the app listens on app_port once its tunnel is up: that is its readiness
        with running_server(["node", str(APP), str(app_port)], app_port, logs / "default-app.log", cwd=NODE_DIR,
                            env=app_env) as app:
            yield port, f"/clients/socketio/hubs/{HUB}/", [serve, app]


def _loadgen(port: int, path: str, servers: list[RunningServer], subs: int, messages: int, label: str) -> dict:
    pids = [pid for s in servers for pid in s.pids()]
    cmd = ["node", str(LOADGEN), "--proto", "sio", "--ns", "/fanout", "--path", path, "--host", HOST,
           "--port", str(port), "--pid", ",".join(map(str, pids)), "--size", str(PAYLOAD_BYTES),
           "--label", label, "--timeout", str(LOADGEN_TIMEOUT_S), "--drain", str(DRAIN_S),
           "--scenario", "fanout", "--subs", str(subs), "--messages", str(messages), "--pace", "e2e",
           "--window", str(WINDOW)]
    res = run_command(cmd, cwd=NODE_DIR, timeout=LOADGEN_TIMEOUT_S + DRAIN_S + 60)
    for line in reversed(res.stdout.strip().splitlines()):
        with contextlib.suppress(ValueError):
            return json.loads(line)
    why = "timed out (killed)" if res.timed_out else f"exit code {res.returncode}"
    return {"label": label, "errors": [f"loadgen {why}, no result: {res.stderr.strip()[-1500:]}"]}


def _metrics(raw: dict) -> dict[str, Any]:
    f = raw.get("fanout") or {}
    latency = f.get("latency_ms") or {}
    server = raw.get("server") or {}
    return {"rate": f.get("delivered_per_s"), "p50_ms": latency.get("p50"), "p99_ms": latency.get("p99"),
            "lost": f.get("lost"), "cpu_s_per_100k": server.get("cpu_s_per_100k"),
            "errors": raw.get("errors") or []}


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--subs", default="1000,100", help="fan-out sizes, comma-separated")
    parser.add_argument("--deliveries", type=int, default=100_000, help="about this many deliveries a run")
    parser.add_argument("--out", type=Path, default=None, help="JSONL of every run (default benchmarks/out/)")
    args = parser.parse_args(argv)
    missing = _missing()
    if missing:
        print(missing, file=sys.stderr)
        return 2
    raise_nofile_limit()
    sizes = [int(s) for s in args.subs.split(",") if s.strip()]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or OUT_DIR / f"default-mode-{stamp}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    logs = OUT_DIR / "logs"
    ports = PortAllocator(base=32100)
    results: dict[tuple[int, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "fabric.toml"
        config.write_text(f"[hubs.{HUB}]\nanonymous_connect = true\n")
        for rep in range(args.reps):
            for subs in sizes:
                messages = max(40, args.deliveries // subs)
                order = CONFIGS if rep % 2 == 0 else tuple(reversed(CONFIGS))
                for name in order:
                    load = os.getloadavg()[0]
                    label = f"{name} N={subs} rep {rep + 1}"
                    opener = _plain(ports, logs) if name == "plain" else _default(ports, logs, config)
                    try:
                        with opener as (port, path, servers):
                            raw = _loadgen(port, path, servers, subs, messages, label)
                    except ServerFailed as exc:
                        raw = {"label": label, "errors": [f"{exc}: {exc.log_tail[-1500:]}"]}
                    m = _metrics(raw)
                    m.update(config=name, subs=subs, rep=rep + 1, messages=messages, load1=load)
                    results.setdefault((subs, name), []).append(m)
                    with open(out, "a") as f:
                        f.write(json.dumps({**m, "raw": raw}) + "\n")
                    print(f"{label}: {_fmt(m['rate'])} deliv/s, p99 {_fmt(m['p99_ms'], 1)} ms, lost {m['lost']}, "
                          f"load {load:.2f} {m['errors'] or ''}", flush=True)
    print(f"\nFan-out through a default-mode app vs the same app on plain Node socket.io "
          f"(medians of {args.reps} reps; ratio = default / plain, median of per-rep ratios)\n")
    print("| N | plain deliv/s | default deliv/s | ratio | per-rep ratios | plain p99 ms | default p99 ms | "
          "p99 ratio | CPU s/100k plain | CPU s/100k default |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for subs in sizes:
        plain, default = results[(subs, "plain")], results[(subs, "default")]
        ratios = [d["rate"] / p["rate"] for p, d in zip(plain, default) if p["rate"] and d["rate"]]
        p99s = [d["p99_ms"] / p["p99_ms"] for p, d in zip(plain, default) if p["p99_ms"] and d["p99_ms"]]
        print(f"| {subs} | {_fmt(_median([r['rate'] for r in plain]))} | {_fmt(_median([r['rate'] for r in default]))}"
              f" | {_fmt(_median(ratios), 2)}x | {', '.join(f'{r:.2f}' for r in ratios)}"
              f" | {_fmt(_median([r['p99_ms'] for r in plain]), 1)} | {_fmt(_median([r['p99_ms'] for r in default]), 1)}"
              f" | {_fmt(_median(p99s), 2)}x | {_fmt(_median([r['cpu_s_per_100k'] for r in plain]), 2)}"
              f" | {_fmt(_median([r['cpu_s_per_100k'] for r in default]), 2)} |")
    problems = [f"{m['config']} N={m['subs']} rep {m['rep']}: {m['errors']}" for runs in results.values() for m in runs
                if m["errors"] or m["lost"]]
    for problem in problems:
        print("PROBLEM", problem[:500])
    loads = [m["load1"] for runs in results.values() for m in runs]
    print(f"\nload average (1 min) before runs: min {min(loads):.2f}, median {statistics.median(loads):.2f}, "
          f"max {max(loads):.2f}; {os.cpu_count()} CPUs; runs in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
