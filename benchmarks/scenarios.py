"""What a run measures. Every scenario is one small class instance in ``SCENARIOS``.

A scenario gets a fresh server (``ctx.server`` / ``ctx.running``), runs its driver against it
(so far always ``loadgen.js`` via ``ctx.loadgen``), and returns the raw JSON record. ``metrics``
turns a raw record into the common columns of the report:

    rate, unit, p50_ms, p99_ms, cpu_s_per_100k, rss_kb_per_conn, lost, problems

To add a scenario (the REST send-to-group throughput ``rest_send`` is next), write a subclass
with ``run`` and ``metrics``, set ``requires`` to the server features it needs (``"rest"``:
only servers that serve Azure's data-plane REST API), and add an instance to ``SCENARIOS``.
Its driver may be anything bounded that returns a dict; ``ctx.loadgen`` is only a helper.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from benchmarks import NODE_DIR
from benchmarks.procs import HOST, run_command

if TYPE_CHECKING:
    from benchmarks.procs import RunningServer
    from benchmarks.servers import Server

LOADGEN = NODE_DIR / "loadgen.js"
PAYLOAD_BYTES = 64
LOADGEN_TIMEOUT_S = 150  # loadgen's own cap on connect + send; drain comes on top


@dataclass
class RunContext:
    """What a scenario gets for one measured run."""

    server: Server
    running: RunningServer
    label: str
    deliveries: int  # target deliveries per throughput run

    def loadgen(self, args: list[str], *, timeout_s: float = LOADGEN_TIMEOUT_S, drain_s: float = 10) -> dict[str, Any]:
        """Run loadgen.js against this server with its proto flags and the server's pids.

        Returns its JSON record; on failure a record whose ``errors`` say what happened
        (exit code, stderr tail, timeout) and which has no measurement.
        """
        cmd = [
            "node", str(LOADGEN), *self.server.loadgen_args,
            "--host", HOST, "--port", str(self.running.port),
            "--pid", ",".join(map(str, self.running.pids())),
            "--size", str(PAYLOAD_BYTES), "--label", self.label,
            "--timeout", str(timeout_s), "--drain", str(drain_s), *args,
        ]  # fmt: skip
        # loadgen hard-stops itself at timeout + drain + 30 s; this is the backstop.
        res = run_command(cmd, cwd=NODE_DIR, timeout=timeout_s + drain_s + 60)
        record: dict[str, Any] | None = None
        for line in reversed(res.stdout.strip().splitlines()):
            try:
                record = json.loads(line)
                break
            except ValueError:
                continue
        if record is None:
            why = "timed out (killed)" if res.timed_out else f"exit code {res.returncode}"
            record = {"label": self.label, "errors": [f"loadgen {why}, no result: {res.stderr.strip()[-1500:]}"]}
            record["_no_result"] = True
        elif res.returncode not in (0, None) or res.timed_out:
            record.setdefault("errors", []).append(f"loadgen exit code {res.returncode}")
        record["_loadgen_cmd"] = " ".join(cmd)
        if res.stderr.strip():
            record["_loadgen_stderr"] = res.stderr.strip()[-1500:]
        return record


def _q(d: dict[str, Any], *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)  # type: ignore[assignment]
    return d


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    quick: bool = False  # part of --quick
    subs: int = 1  # connections it opens (for the fd check and the pause after it)
    requires: frozenset[str] = field(default_factory=frozenset)  # server features needed; empty: any

    def applies_to(self, server: Server) -> bool:
        return self.requires <= server.features

    def describe(self, deliveries: int) -> str:
        return self.title

    def run(self, ctx: RunContext) -> dict[str, Any]:
        raise NotImplementedError

    def metrics(self, raw: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def problems(raw: dict[str, Any]) -> list[str]:
        """Everything that makes a record suspect, as short strings."""
        out = [str(e) for e in raw.get("errors", [])]
        failed = _q(raw, "connect", "failed")
        if failed:
            first = _q(raw, "connect", "first_errors") or []
            out.append(f"{failed} connections failed: {first[:2]}")
        for key in ("duplicates", "out_of_order", "invalid_frames", "bad_seq"):
            n = _q(raw, "fanout", key)
            if n:
                out.append(f"{key}={n}")
        lost, expected = _q(raw, "fanout", "lost"), _q(raw, "fanout", "expected")
        if lost:
            out.append(f"lost {lost} of {expected} deliveries (not received within the drain time)")
        echo_errors = _q(raw, "echo", "errors")
        if echo_errors:
            out.append(f"{echo_errors} echo round trips failed")
        return out


@dataclass(frozen=True)
class Fanout(Scenario):
    """N subscribers in one group, one publisher, closed loop: at most ``window`` messages not yet
    delivered to every subscriber (``--pace e2e``). About ``deliveries`` deliveries per run."""

    window: int = 16
    drain_s: float = 10
    ack_timeout_s: float = 10

    def messages(self, deliveries: int) -> int:
        return max(40, deliveries // self.subs)

    def describe(self, deliveries: int) -> str:
        return f"fan-out N={self.subs} (m={self.messages(deliveries)}, e2e window {self.window})"

    def run(self, ctx: RunContext) -> dict[str, Any]:
        args = [
            "--scenario", "fanout", "--subs", str(self.subs), "--messages", str(self.messages(ctx.deliveries)),
            "--pace", "e2e", "--window", str(self.window), "--ack-timeout", str(self.ack_timeout_s),
        ]  # fmt: skip
        return ctx.loadgen(args, drain_s=self.drain_s)

    def metrics(self, raw: dict[str, Any]) -> dict[str, Any]:
        f = raw.get("fanout") or {}
        return {
            "rate": f.get("delivered_per_s"),
            "unit": "deliv/s",
            "p50_ms": _q(f, "latency_ms", "p50"),
            "p99_ms": _q(f, "latency_ms", "p99"),
            "cpu_s_per_100k": _q(raw, "server", "cpu_s_per_100k"),
            "rss_kb_per_conn": _q(raw, "server", "rss_kb_per_conn"),
            "lost": f.get("lost"),
            "problems": self.problems(raw),
        }


@dataclass(frozen=True)
class Echo(Scenario):
    """One client, ``messages`` sequential request/ack round trips (wps: sendToGroup to its own
    group with an ackId; sio: emit 'echo' with an ack)."""

    messages: int = 5000

    def describe(self, deliveries: int) -> str:
        return f"echo, 1 client ({self.messages} round trips)"

    def run(self, ctx: RunContext) -> dict[str, Any]:
        return ctx.loadgen(["--scenario", "echo", "--clients", "1", "--messages", str(self.messages)])

    def metrics(self, raw: dict[str, Any]) -> dict[str, Any]:
        e = raw.get("echo") or {}
        cpu, done = _q(raw, "server", "cpu_s"), e.get("round_trips")
        return {
            "rate": e.get("round_trips_per_s"),
            "unit": "rt/s",
            "p50_ms": _q(e, "rtt_ms", "p50"),
            "p99_ms": _q(e, "rtt_ms", "p99"),
            "cpu_s_per_100k": round(cpu / done * 1e5, 3) if cpu is not None and done else None,
            "rss_kb_per_conn": None,
            "lost": e.get("errors"),
            "problems": self.problems(raw),
        }


@dataclass(frozen=True)
class Idle(Scenario):
    """Open N subscribers on a fresh server and measure its RSS growth per connection (VmRSS
    after connecting minus before, over N+1). One message is sent so delivery is checked.
    The rate is connections opened per second; p50/p99 are per-connection setup times."""

    def describe(self, deliveries: int) -> str:
        return f"idle N={self.subs} (rate: connections opened/s; latency: setup)"

    def run(self, ctx: RunContext) -> dict[str, Any]:
        args = ["--scenario", "fanout", "--subs", str(self.subs), "--messages", "1", "--warmup", "0", "--pace", "ack"]
        return ctx.loadgen(args)

    def metrics(self, raw: dict[str, Any]) -> dict[str, Any]:
        c = raw.get("connect") or {}
        ok, wall = c.get("ok"), c.get("wall_s")
        return {
            "rate": round(ok / wall) if ok and wall else None,
            "unit": "conn/s",
            "p50_ms": _q(c, "setup_ms", "p50"),
            "p99_ms": _q(c, "setup_ms", "p99"),
            "cpu_s_per_100k": None,
            "rss_kb_per_conn": _q(raw, "server", "rss_kb_per_conn"),
            "lost": _q(raw, "fanout", "lost"),
            "problems": self.problems(raw),
        }


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Fanout("fanout100", "fan-out N=100", subs=100),
        Fanout("fanout1000", "fan-out N=1000", quick=True, subs=1000),
        # python-socketio needs more than 10 s to drain 16 x 5000 queued deliveries, and its
        # publish acks come after its emits: give both room so "slow" is not counted as "lost".
        Fanout("fanout5000", "fan-out N=5000", subs=5000, drain_s=30, ack_timeout_s=60),
        Echo("echo", "echo", quick=True),
        Idle("idle5000", "idle N=5000", subs=5000),
    ]
}
