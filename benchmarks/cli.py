"""``python -m benchmarks``: measure the fabric and its peers side by side in one run.

For every rep, every server and every scenario: start a fresh server on 127.0.0.1, run the
scenario against it, stop it (its process group, in ``finally``), pause (longer after large
runs, for TIME_WAIT), next. Server order rotates between reps. Raw records go to
``benchmarks/out/bench-STAMP.jsonl`` as they come; the markdown table to ``bench-STAMP.md``,
``latest.md`` and stdout; progress and failures to stderr.

Exit code: 0 if every run produced a measurement, 1 if any did not (or, with ``--strict``, if a
measured target failed), 2 for bad arguments or a missing prerequisite.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import NODE_DIR, OUT_DIR, ROOT
from benchmarks.procs import PortAllocator, ServerFailed, raise_nofile_limit, running_server
from benchmarks.report import OUR_SERVERS, markdown
from benchmarks.scenarios import SCENARIOS, RunContext
from benchmarks.servers import SERVERS, Server

DEFAULT_SERVERS = ("fabric", "sio_python", "sio_node", "wps_node")
#: ``--socketio``: the Socket.IO edge against its two peers, on issue 11's scenarios.
SOCKETIO_SERVERS = ("fabric_sio", "sio_node", "sio_python")
SOCKETIO_SCENARIOS = ("fanout100", "fanout1000", "fanout5000", "echo", "idle5000")
QUICK_SCENARIOS = tuple(name for name, s in SCENARIOS.items() if s.quick)
BIG_RUN_SUBS = 1000  # runs with at least this many connections are followed by the long pause
FD_MARGIN = 200


def _names(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out += [x for x in v.replace(",", " ").split() if x]
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Side-by-side benchmarks of the fabric against python-socketio and Node socket.io, in one run.",
    )
    ap.add_argument("--quick", action="store_true", help=f"one rep of {', '.join(QUICK_SCENARIOS)} (a couple of minutes)")
    ap.add_argument("--socketio", action="store_true",
                    help=f"Socket.IO: servers {' '.join(SOCKETIO_SERVERS)}, scenarios {' '.join(SOCKETIO_SCENARIOS)} "
                         "(unless --servers/--scenarios say otherwise)")
    ap.add_argument("--reps", type=int, help="reps per (server, scenario); medians are taken over them (default 3, --quick 1)")
    ap.add_argument("--scenarios", nargs="+", metavar="NAME", help=f"default: all ({', '.join(SCENARIOS)})")
    ap.add_argument("--servers", nargs="+", metavar="NAME", help=f"default: {' '.join(DEFAULT_SERVERS)}")
    ap.add_argument(
        "--stand-in",
        action="append",
        default=[],
        metavar="NAME=PEER",
        help="measure PEER's server under NAME (e.g. fabric=wps_node, to check the harness); flagged in the report",
    )
    ap.add_argument("--deliveries", type=int, default=200_000, help="deliveries per fan-out run (m = this / N, at least 40)")
    ap.add_argument("--pause", type=float, default=1.0, help="seconds between small runs")
    ap.add_argument("--pause-big", type=float, default=5.0, help=f"seconds after runs with >= {BIG_RUN_SUBS} connections")
    ap.add_argument("--base-port", type=int, default=31100, help="servers listen on free ports from here (below 32768)")
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR)
    ap.add_argument("--strict", action="store_true", help="exit 1 when a measured target fails")
    ap.add_argument("--list", action="store_true", help="list servers and scenarios, then exit")
    ap.add_argument(
        "--reliability",
        action="store_true",
        help="run the reliability harness (benchmarks/reliability.py: issue 16's findings, PASS/FAIL) instead; "
        "--quick for its small size, --scenarios to pick (see --list --reliability)",
    )
    a = ap.parse_args(argv)
    if a.reliability:
        from benchmarks import reliability

        a.scenarios = _names(a.scenarios) or None
        bad = [s for s in a.scenarios or [] if s not in reliability.SCENARIOS]
        if bad:
            ap.error(f"unknown reliability scenarios: {', '.join(bad)} (see --list --reliability)")
        return a
    if a.socketio:
        a.scenarios = _names(a.scenarios) or list(SOCKETIO_SCENARIOS)
        a.servers = _names(a.servers) or list(SOCKETIO_SERVERS)
    a.scenarios = _names(a.scenarios) or list(QUICK_SCENARIOS if a.quick else SCENARIOS)
    a.servers = _names(a.servers) or list(DEFAULT_SERVERS)
    if a.reps is None:
        a.reps = 1 if a.quick else 3
    bad = [s for s in a.scenarios if s not in SCENARIOS] + [s for s in a.servers if s not in SERVERS]
    if bad:
        ap.error(f"unknown: {', '.join(bad)} (see --list)")
    if not 1 <= a.reps <= 50:
        ap.error("--reps must be 1..50")
    a.stand_ins = {}
    for item in a.stand_in:
        name, _, peer = item.partition("=")
        if name not in SERVERS or peer not in SERVERS or name == peer:
            ap.error(f"--stand-in {item!r}: want NAME=PEER, both known servers")
        a.stand_ins[name] = peer
    return a


def resolve_servers(names: list[str], stand_ins: dict[str, str]) -> list[Server]:
    out = []
    for name in names:
        if name in stand_ins:
            peer = SERVERS[stand_ins[name]]
            out.append(dataclasses.replace(peer, name=name, description=f"STAND-IN: {peer.name} ({peer.description})"))
        else:
            out.append(SERVERS[name])
    return out


# ---------------------------------------------------------------- environment facts


def _cmd_out(cmd: list[str], cwd: Path = ROOT) -> str:
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=15)
        return r.stdout.strip() if r.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _py_version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def machine_facts() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    node_versions = _cmd_out(
        ["node", "-e", "const v=(p)=>{try{return require(p+'/package.json').version}catch(e){return 'absent'}};"
         "console.log(process.version, v('ws'), v('socket.io'))"],
        cwd=NODE_DIR,
    ).split()  # fmt: skip
    commit = _cmd_out(["git", "rev-parse", "--short", "HEAD"])
    dirty = bool(_cmd_out(["git", "status", "--porcelain", "--", "fabric", "transport", "actors"]))
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node_versions[0] if node_versions else "absent",
        "ws": node_versions[1] if len(node_versions) > 1 else "absent",
        "socket.io": node_versions[2] if len(node_versions) > 2 else "absent",
        "python-socketio": _py_version("python-socketio"),
        "uvicorn": _py_version("uvicorn"),
        "uvloop": _py_version("uvloop"),
        "fabric_commit": (commit or "?") + ("+dirty" if dirty else ""),
        "loadavg_start": os.getloadavg(),
    }


def machine_line(f: dict[str, Any]) -> str:
    return (
        f"Machine: {f['cpus']} CPUs ({f['cpu_model'] or '?'}), Linux {f['kernel']}, shared by server and generator. "
        f"Node {f['node']} (ws {f['ws']}, socket.io {f['socket.io']}); Python {f['python']} "
        f"(python-socketio {f['python-socketio']}, uvicorn {f['uvicorn']}, uvloop {f['uvloop']}); "
        f"fabric @ {f['fabric_commit']}. Payload 64 B; each server freshly started per run; "
        f"medians over reps; compare ratios, not absolutes."
    )


# ---------------------------------------------------------------- the run


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def run_one(server: Server, scen_name: str, rep: int, a: argparse.Namespace, ports: PortAllocator, log_path: Path) -> dict[str, Any]:
    scen = SCENARIOS[scen_name]
    port = ports.take()
    label = f"{server.name}/{scen_name}/r{rep}"
    bench: dict[str, Any] = {
        "server": server.name,
        "scenario": scen_name,
        "rep": rep,
        "port": port,
        "stand_in": a.stand_ins.get(server.name),
        "server_cmd": server.command(port),
    }
    t0 = time.monotonic()
    record: dict[str, Any]
    try:
        with running_server(server.command(port), port, log_path, cwd=ROOT, env=server.env()) as running:
            bench["pids"] = running.pids()
            try:
                record = scen.run(RunContext(server, running, label, a.deliveries))
            except Exception as e:  # a harness bug in one run must not lose the others
                record = {"label": label, "errors": [f"scenario raised {type(e).__name__}: {e}"], "_no_result": True}
            code = running.proc.poll()
            if code is not None:
                record.setdefault("errors", []).append(f"server exited with code {code} during the run")
            if record.get("errors") or record.get("_no_result"):
                record["_server_output"] = running.output(3000)
    except ServerFailed as e:
        last = [ln for ln in e.log_tail.splitlines() if ln.strip()][-1:]
        why = f"server did not start: {e}" + (f"; its last output line: {last[0].strip()}" if last else "")
        record = {"label": label, "errors": [why], "_no_result": True, "_server_output": e.log_tail}
    bench["wall_s"] = round(time.monotonic() - t0, 1)
    record["_bench"] = bench
    record["_metrics"] = scen.metrics(record)
    return record


def progress_line(rec: dict[str, Any], rep: int, reps: int) -> str:
    b, m = rec["_bench"], rec["_metrics"]
    head = f"r{rep}/{reps} {b['server']:<10} {b['scenario']:<10}"
    if m.get("rate") is None:
        return f"{head} FAILED ({b['wall_s']} s): {(m.get('problems') or ['no result'])[0][:400]}"
    parts = [f"{m['rate']:,.0f} {m['unit']}"]
    if m.get("p50_ms") is not None:
        parts.append(f"p50/p99 {m['p50_ms']}/{m['p99_ms']} ms")
    if m.get("cpu_s_per_100k") is not None:
        parts.append(f"cpu {m['cpu_s_per_100k']} s/100k")
    if m.get("rss_kb_per_conn") is not None:
        parts.append(f"rss {m['rss_kb_per_conn']} kB/conn")
    if m.get("lost"):
        parts.append(f"LOST {m['lost']}")
    line = f"{head} {', '.join(parts)} ({b['wall_s']} s)"
    if m.get("problems"):
        line += f" ! {m['problems'][0][:200]}"
    return line


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.reliability:
        from benchmarks import reliability

        if a.list:
            for name, sc in reliability.SCENARIOS.items():
                print(f"reliability {name:<16} {sc.title}")
            return 0
        return reliability.main(quick=a.quick, names=a.scenarios, out_dir=a.out_dir)
    servers = resolve_servers(a.servers, a.stand_ins)
    if a.list:
        for s in SERVERS.values():
            print(f"server   {s.name:<12} {s.description}")
        for name, sc in SCENARIOS.items():
            print(f"scenario {name:<12} {sc.describe(a.deliveries)}{'  [quick]' if sc.quick else ''}")
        return 0

    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "ws").is_dir():
        log(f"the load generator needs node and `npm ci` in {NODE_DIR} (./dev bench does both)")
        return 2
    soft, _hard = raise_nofile_limit()
    max_subs = max(SCENARIOS[s].subs for s in a.scenarios)
    if soft < max_subs + FD_MARGIN:
        log(f"warning: open-file limit {soft} < {max_subs + FD_MARGIN}: runs with {max_subs} connections may fail (ulimit -n)")
    runnable: list[Server] = []
    skipped: dict[str, str] = {}
    for s in servers:
        reason = s.missing()
        if reason:
            skipped[s.name] = reason
            log(f"cannot run {s.name}: {reason}")
        else:
            runnable.append(s)

    facts = machine_facts()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    a.out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = a.out_dir / f"bench-{stamp}.jsonl"
    md_path = a.out_dir / f"bench-{stamp}.md"
    ports = PortAllocator(a.base_port)
    notes = []
    for name, peer in a.stand_ins.items():
        notes.append(f"**`{name}` is a STAND-IN: these are `{peer}`'s numbers, not {name}'s.**")
    for name, reason in skipped.items():
        notes.append(f"`{name}` not run: {reason}")
    if facts["loadavg_start"][0] > 0.5:
        notes.append(f"Load average at start {facts['loadavg_start'][0]:.2f}: other work on the machine skews absolute numbers.")
    log(f"{len(runnable)} servers x {len(a.scenarios)} scenarios x {a.reps} reps -> {jsonl}")

    records: list[dict[str, Any]] = []
    interrupted = False
    try:
        for rep in range(1, a.reps + 1):
            k = (rep - 1) % max(1, len(runnable))
            order = runnable[k:] + runnable[:k]  # rotate so no server always goes first
            for server in order:
                log_path = a.out_dir / "logs" / f"{stamp}-{server.name}.log"
                for scen_name in a.scenarios:
                    scen = SCENARIOS[scen_name]
                    if not scen.applies_to(server):
                        continue
                    rec = run_one(server, scen_name, rep, a, ports, log_path)
                    rec["_bench"]["stamp"] = stamp
                    records.append(rec)
                    with open(jsonl, "a") as f:
                        f.write(json.dumps(rec) + "\n")
                    log(progress_line(rec, rep, a.reps))
                    if rec.get("_no_result") and rec.get("_server_output"):
                        log(f"  server output ({server.name}, last lines):\n" + _indent(rec["_server_output"][-1500:]))
                    time.sleep(a.pause_big if scen.subs >= BIG_RUN_SUBS else a.pause)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: reporting what was measured so far")

    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "mode": run_mode(a) + (", INTERRUPTED" if interrupted else ""),
        "reps": a.reps,
        "deliveries": a.deliveries,
        "machine": machine_line(facts),
        "notes": notes,
    }
    meta["labels"] = {name: f"{name} (stand-in: {peer})" for name, peer in a.stand_ins.items()}
    text, targets = markdown(records, scenarios=a.scenarios, servers=[s.name for s in servers], meta=meta)
    md_path.write_text(text)
    (a.out_dir / "latest.md").write_text(text)
    print(text, flush=True)
    log(f"raw records: {jsonl}; table: {md_path}; server logs: {a.out_dir / 'logs'}")

    failed_runs = [r for r in records if r["_metrics"].get("rate") is None]
    if failed_runs or interrupted or any(us in a.servers and us in skipped for us in OUR_SERVERS):
        return 1
    if a.strict and any(v is False for _t, v, _s in targets):
        return 1
    return 0


def run_mode(a: argparse.Namespace) -> str:
    if a.socketio and a.scenarios == list(SOCKETIO_SCENARIOS):
        return "Socket.IO"
    if a.quick and a.scenarios == list(QUICK_SCENARIOS):
        return "quick"
    if a.scenarios == list(SCENARIOS):
        return "full matrix"
    return "scenarios: " + ", ".join(a.scenarios)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.rstrip().splitlines())
