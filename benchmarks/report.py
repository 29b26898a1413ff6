"""Medians over reps, the markdown table, ratios against the peers, and the targets.

Input: the run's records (loadgen JSON plus a ``_bench`` dict: server, scenario, rep). Output:
markdown text. Medians are taken per metric over the reps that measured it; the rate also shows
min-max. Ratios are always ``fabric / peer`` of those medians.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.scenarios import SCENARIOS
from benchmarks.servers import OURS as OUR_SERVERS
from benchmarks.servers import PEERS

OURS = "fabric"
#: The peers each of our servers is compared with (ratio rows), in report order.
PEERS_OF = {"fabric": PEERS, "fabric_sio": ("sio_python", "sio_node")}
METRICS = ("rate", "p50_ms", "p99_ms", "cpu_s_per_100k", "rss_kb_per_conn")


@dataclass
class Cell:
    """One (scenario, server): its medians over reps."""

    scenario: str
    server: str
    runs: int = 0
    measured: int = 0
    unit: str = ""
    median: dict[str, float | None] = field(default_factory=dict)
    rate_min: float | None = None
    rate_max: float | None = None
    lost: int = 0
    problems: list[str] = field(default_factory=list)


def summarize(records: Sequence[dict[str, Any]]) -> dict[tuple[str, str], Cell]:
    cells: dict[tuple[str, str], Cell] = {}
    per: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in records:
        b = rec["_bench"]
        key = (b["scenario"], b["server"])
        cell = cells.setdefault(key, Cell(*key))
        cell.runs += 1
        m = rec.get("_metrics") or {}
        per.setdefault(key, []).append(m)
        if m.get("rate") is not None:
            cell.measured += 1
        cell.unit = m.get("unit") or cell.unit
        cell.lost += m.get("lost") or 0
        for p in m.get("problems") or []:
            cell.problems.append(f"r{b['rep']}: {p}")
    for key, ms in per.items():
        cell = cells[key]
        for name in METRICS:
            cell.median[name] = median([m.get(name) for m in ms])
        rates = [m["rate"] for m in ms if m.get("rate") is not None]
        if rates:
            cell.rate_min, cell.rate_max = min(rates), max(rates)
    return cells


def median(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


# ---------------------------------------------------------------- formatting


def fmt_rate(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 10_000:
        return f"{x / 1000:.1f}k"
    return f"{x:,.0f}"


def fmt_ms(x: float | None) -> str:
    if x is None:
        return "-"
    if x < 1:
        return f"{x:.3f}"
    if x < 10:
        return f"{x:.2f}"
    if x < 100:
        return f"{x:.1f}"
    return f"{x:,.0f}"


def fmt_num(x: float | None, nd: int) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def fmt_ratio(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}x" if x < 10 else f"{x:.1f}x"


# ---------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    text: str
    scenario: str
    # (cells of that scenario by server) -> (verdict, shown value); verdict None: not measured
    check: Callable[[dict[str, Cell]], tuple[bool | None, str]]
    #: The server the target is about (one of ``OUR_SERVERS``).
    ours: str = OURS


def _rate_ratio_at_least(peer: str, k: float, us: str = OURS) -> Callable[[dict[str, Cell]], tuple[bool | None, str]]:
    def check(cells: dict[str, Cell]) -> tuple[bool | None, str]:
        ours, theirs = cells.get(us), cells.get(peer)
        if ours is None or theirs is None:
            return None, f"not measured ({us} and {peer} both needed)"
        r = ratio(ours.median.get("rate"), theirs.median.get("rate"))
        if r is None:
            return False, "no throughput measured (see problems)"
        return r >= k, (f"{fmt_ratio(r)} ({fmt_rate(ours.median['rate'])} vs {fmt_rate(theirs.median['rate'])} "
                        f"{ours.unit or 'deliv/s'})")

    return check


def _ours_at_most(metric: str, limit: float, unit: str, us: str = OURS) -> Callable[[dict[str, Cell]], tuple[bool | None, str]]:
    def check(cells: dict[str, Cell]) -> tuple[bool | None, str]:
        ours = cells.get(us)
        if ours is None:
            return None, "not measured"
        v = ours.median.get(metric)
        if v is None:
            return False, "no value measured (see problems)"
        return v <= limit, f"{v:.2f} {unit}"

    return check


TARGETS = (
    Target("fan-out N=1000 throughput >= 4x sio_python", "fanout1000", _rate_ratio_at_least("sio_python", 4.0)),
    Target("fan-out N=1000 throughput >= 0.5x sio_node", "fanout1000", _rate_ratio_at_least("sio_node", 0.5)),
    Target(
        "server CPU <= 2 CPU-s per 100k deliveries (fan-out N=1000)",
        "fanout1000",
        _ours_at_most("cpu_s_per_100k", 2.0, "CPU-s/100k"),
    ),
    Target("idle RSS <= 20 kB per connection at N=5000", "idle5000", _ours_at_most("rss_kb_per_conn", 20.0, "kB/conn")),
    # Socket.IO (issue 11): the fabric's Socket.IO edge against Node socket.io and python-socketio.
    *(t for n in (1000, 5000) for t in (
        Target(f"fan-out N={n} throughput >= 1.0x sio_node", f"fanout{n}",
               _rate_ratio_at_least("sio_node", 1.0, "fabric_sio"), "fabric_sio"),
        Target(f"fan-out N={n} throughput >= 8x sio_python", f"fanout{n}",
               _rate_ratio_at_least("sio_python", 8.0, "fabric_sio"), "fabric_sio"),
        Target(f"server CPU <= 1 CPU-s per 100k deliveries (fan-out N={n})", f"fanout{n}",
               _ours_at_most("cpu_s_per_100k", 1.0, "CPU-s/100k", "fabric_sio"), "fabric_sio"),
    )),
    Target("idle RSS <= 20 kB per connection at N=5000", "idle5000",
           _ours_at_most("rss_kb_per_conn", 20.0, "kB/conn", "fabric_sio"), "fabric_sio"),
    Target("emit-with-ack echo >= 0.8x sio_node", "echo", _rate_ratio_at_least("sio_node", 0.8, "fabric_sio"),
           "fabric_sio"),
)


def evaluate_targets(cells: dict[tuple[str, str], Cell]) -> list[tuple[Target, bool | None, str]]:
    out = []
    for t in TARGETS:
        by_server = {srv: c for (scen, srv), c in cells.items() if scen == t.scenario}
        verdict, shown = t.check(by_server)
        out.append((t, verdict, shown))
    return out


# ---------------------------------------------------------------- markdown


def markdown(
    records: Sequence[dict[str, Any]],
    *,
    scenarios: Sequence[str],
    servers: Sequence[str],
    meta: dict[str, Any],
) -> tuple[str, list[tuple[Target, bool | None, str]]]:
    cells = summarize(records)
    targets = evaluate_targets(cells)
    lines = [
        f"### {meta['date']} ({meta['mode']}, {meta['reps']} rep{'s' if meta['reps'] != 1 else ''})",
        "",
        meta["machine"],
        "",
    ]
    for note in meta.get("notes", []):
        lines.append(f"> {note}")
    if meta.get("notes"):
        lines.append("")
    lines += [
        "| scenario | server | rate: median (min-max) | p50 ms | p99 ms | server CPU-s / 100k | RSS kB / conn | lost | runs ok |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for scen in scenarios:
        present = [s for s in servers if (scen, s) in cells]
        if not present:
            continue
        title = SCENARIOS[scen].describe(meta["deliveries"])
        labels = meta.get("labels", {})
        for i, srv in enumerate(present):
            c = cells[(scen, srv)]
            md = c.median
            rate = "-"
            if md.get("rate") is not None:
                rate = f"{fmt_rate(md['rate'])} {c.unit}"
                if c.measured > 1:
                    rate += f" ({fmt_rate(c.rate_min)}-{fmt_rate(c.rate_max)})"
            lines.append(
                f"| {title if i == 0 else ''} | {labels.get(srv, srv)} | {rate} | {fmt_ms(md.get('p50_ms'))} | {fmt_ms(md.get('p99_ms'))} | "
                f"{fmt_num(md.get('cpu_s_per_100k'), 2)} | {fmt_num(md.get('rss_kb_per_conn'), 1)} | {c.lost:,} | "
                f"{c.measured}/{c.runs}{' !' if c.problems else ''} |"
            )
        for us in OUR_SERVERS:
            if us not in present:
                continue
            ours = cells[(scen, us)].median
            for peer in PEERS_OF.get(us, PEERS):
                if peer not in present:
                    continue
                theirs = cells[(scen, peer)].median
                r = {k: fmt_ratio(ratio(ours.get(k), theirs.get(k))) for k in METRICS}
                lines.append(
                    f"| | **{us} / {peer}** | **{r['rate']}** | {r['p50_ms']} | {r['p99_ms']} | "
                    f"{r['cpu_s_per_100k']} | {r['rss_kb_per_conn']} | | |"
                )
    lines += [
        "",
        "rate: deliveries/s (fan-out), round trips/s (echo), connections opened/s (idle; its p50/p99 "
        "are per-connection setup times). Latency under e2e pacing is mostly queueing (window x fan-out "
        "time). CPU and RSS are the server's (all processes in its group), from /proc; CPU is per 100k "
        "deliveries (fan-out), round trips (echo) or connections opened (idle, over the connect phase alone). "
        "Ratios are ours / peer of the medians: above 1 is better for rate, below 1 for the rest. "
        "`!`: see problems.",
    ]
    shown_ours = [us for us in OUR_SERVERS if us in servers] or [OURS]
    for us in shown_ours:
        lines += ["", f"**Targets ({meta.get('labels', {}).get(us, us)}):**", ""]
        verdicts = []
        for t, verdict, shown in targets:
            if t.ours != us:
                continue
            word = {True: "PASS", False: "FAIL", None: "SKIP"}[verdict]
            verdicts.append(verdict)
            lines.append(f"- {word}: {t.text}: {shown}")
        measured = [v for v in verdicts if v is not None]
        overall = "PASS" if measured and all(measured) else ("FAIL" if measured else "SKIP")
        skipped = sum(v is None for v in verdicts)
        lines.append(f"- **{overall}** overall ({sum(bool(v) for v in measured)}/{len(measured)} measured targets met"
                     f"{f', {skipped} not measured in this run' if skipped else ''})")  # fmt: skip
    problems = [(k, c) for k, c in cells.items() if c.problems]
    if problems:
        lines += ["", "**Problems:**", ""]
        for (scen, srv), c in sorted(problems, key=lambda kc: (scenarios.index(kc[0][0]) if kc[0][0] in scenarios else 99, kc[0][1])):
            for p in c.problems[:6]:
                lines.append(f"- {srv} / {scen} {_oneline(p)}")
            if len(c.problems) > 6:
                lines.append(f"- {srv} / {scen}: ... {len(c.problems) - 6} more")
    return "\n".join(lines) + "\n", targets


def _oneline(s: str, limit: int = 300) -> str:
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 3] + "..."
