"""Benchmark: fan-out N=1000 with metrics on and off, in the same run.

Run:  .venv/bin/python -m benchmarks.metrics_overhead [--reps 4] [--subs 1000] [--deliveries 200000]
                                                      [--scrape-interval 1.0]

Needs ``npm ci`` in benchmarks/node (loadgen.js), like ``./dev bench``.

Two variants of ``fabric serve`` (the ``fabric`` server of ``benchmarks/servers.py``, Web PubSub
JSON subprotocol), each on a fresh process per run, driven by the ``fanout1000`` scenario
(N subscribers in one group, 64-byte payloads, closed loop with an e2e window of 16):

- ``on``: ``[metrics] enabled = true`` (hubs count fan-out per publication), and /metrics
  scraped every ``--scrape-interval`` seconds for the whole run (a Prometheus server
  scrapes every 15 s by default; every second is the harsher case);
- ``off``: ``[metrics] enabled = false`` (no counting, /metrics answers 404), no scrapes.

Reps alternate the order (on-off, off-on, ...) so drift hits both alike. It prints each run,
then the medians of deliveries/s and server CPU-s per 100k deliveries, and on/off ratios.
Raw records: benchmarks/out/metrics-STAMP.jsonl. Asserts nothing (the target: at most 3% apart).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from benchmarks import OUT_DIR, ROOT
from benchmarks.procs import PortAllocator, ServerFailed, raise_nofile_limit, running_server
from benchmarks.scenarios import SCENARIOS, RunContext
from benchmarks.servers import ACCESS_KEY, SERVERS, Server


def _config(enabled: bool) -> Path:
    path = Path(tempfile.mkstemp(prefix=f"metrics-{'on' if enabled else 'off'}-", suffix=".toml")[1])
    path.write_text(f"[metrics]\nenabled = {'true' if enabled else 'false'}\n")
    return path


def _variant(name: str, config: Path) -> Server:
    base = SERVERS["fabric"]
    return Server(name, f"fabric serve with {config.name}", base.loadgen_args,
                  lambda port: [sys.executable, "-m", "fabric", "serve", "--host", "127.0.0.1", "--port", str(port),
                                "--access-key", ACCESS_KEY, "--config", str(config), "--log-level", "warning"],
                  base.features, base.missing)


class Scraper(threading.Thread):
    """GET /metrics every ``interval`` seconds until stopped; counts answers and failures."""

    def __init__(self, port: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.interval = interval
        self.done = threading.Event()
        self.ok = self.failed = self.bytes = 0
        self.render_s: list[float] = []  # the server's own fabric_metrics_render_seconds

    def run(self) -> None:
        while not self.done.wait(self.interval):
            try:
                with urllib.request.urlopen(self.url, timeout=5) as answer:
                    body = answer.read()
                self.bytes += len(body)
                self.ok += 1
                found = re.search(rb"^fabric_metrics_render_seconds (\S+)$", body, re.M)
                if found:
                    self.render_s.append(float(found.group(1)))
            except (urllib.error.URLError, OSError):
                self.failed += 1


def run_one(server: Server, scrape_interval: float | None, deliveries: int, ports: PortAllocator, log: Path) -> dict:
    scenario = SCENARIOS["fanout1000"]
    port = ports.take()
    try:
        with running_server(server.command(port), port, log, cwd=ROOT, env=server.env()) as running:
            scraper = Scraper(port, scrape_interval) if scrape_interval else None
            if scraper is not None:
                scraper.start()
            try:
                record = scenario.run(RunContext(server, running, f"{server.name}/fanout1000", deliveries))
            finally:
                if scraper is not None:
                    scraper.done.set()
                    scraper.join(10)
            if scraper is not None:
                record["_scrapes"] = {"ok": scraper.ok, "failed": scraper.failed, "bytes": scraper.bytes,
                                      "render_ms_mean": round(statistics.fmean(scraper.render_s) * 1000, 2)
                                      if scraper.render_s else None}
    except ServerFailed as exc:
        record = {"errors": [f"server did not start: {exc}"]}
    record["_variant"] = server.name
    record["_metrics"] = scenario.metrics(record)
    return record


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.metrics_overhead", description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--deliveries", type=int, default=200_000)
    ap.add_argument("--scrape-interval", type=float, default=1.0)
    ap.add_argument("--pause", type=float, default=5.0, help="seconds between runs (TIME_WAIT)")
    a = ap.parse_args(argv)
    missing = SERVERS["fabric"].missing() or (None if (ROOT / "benchmarks/node/node_modules/ws").is_dir()
                                              else "run npm ci in benchmarks/node")
    if missing:
        print(f"cannot run: {missing}", file=sys.stderr)
        return 2
    raise_nofile_limit()
    OUT_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log = OUT_DIR / "logs" / f"{stamp}-metrics.log"
    raw_path = OUT_DIR / f"metrics-{stamp}.jsonl"
    on, off = _variant("metrics_on", _config(True)), _variant("metrics_off", _config(False))
    ports = PortAllocator()
    results: dict[str, list[dict]] = {"metrics_on": [], "metrics_off": []}
    with open(raw_path, "w") as raw:
        for rep in range(a.reps):
            for server in ((on, off) if rep % 2 == 0 else (off, on)):
                record = run_one(server, a.scrape_interval if server is on else None, a.deliveries, ports, log)
                raw.write(json.dumps(record) + "\n")
                raw.flush()
                m = record["_metrics"]
                results[server.name].append(m)
                scrapes = record.get("_scrapes")
                print(f"rep {rep + 1} {server.name:11s} {m.get('rate') or 0:9.0f} deliv/s  "
                      f"cpu {m.get('cpu_s_per_100k') or 0:.3f} s/100k  lost {m.get('lost')}"
                      + (f"  scrapes {scrapes['ok']} ok / {scrapes['failed']} failed, rendering "
                         f"{scrapes['render_ms_mean']} ms each" if scrapes else "")
                      + (f"  problems: {m['problems']}" if m.get("problems") else ""), flush=True)
                time.sleep(a.pause)

    def median(name: str, key: str) -> float | None:
        values = [m[key] for m in results[name] if m.get(key)]
        return statistics.median(values) if values else None

    print()
    print("| variant | deliveries/s (median) | server CPU-s per 100k (median) | runs |")
    print("|---|---|---|---|")
    for name in ("metrics_on", "metrics_off"):
        rate, cpu = median(name, "rate"), median(name, "cpu_s_per_100k")
        print(f"| {name} | {rate or 0:.0f} | {cpu or 0:.3f} | {sum(1 for m in results[name] if m.get('rate'))} |")
    rate_on, rate_off = median("metrics_on", "rate"), median("metrics_off", "rate")
    cpu_on, cpu_off = median("metrics_on", "cpu_s_per_100k"), median("metrics_off", "cpu_s_per_100k")
    if rate_on and rate_off and cpu_on and cpu_off:
        print(f"\non/off: throughput {rate_on / rate_off:.3f}x, CPU per delivery {cpu_on / cpu_off:.3f}x "
              f"(target: within 3%)")
    print(f"raw records: {raw_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
