"""Benchmark: echo through an upstream event handler (client event → handler → reply).

Run:  .venv/bin/python benchmarks/upstream_echo.py [--quick] [--events N] [--rounds R]
                                                    [--handler python|express]

Everything runs on this machine, on 127.0.0.1, each server in its own process group:

- the handler app: by default a minimal CloudEvents echo app on the project's own HTTP front
  (``transport.http``, h11; this file re-run with ``--serve-handler``); with ``--handler
  express`` Microsoft's @azure/web-pubsub-express on express (``tests/js/express_handler.mjs``,
  needs ``npm ci`` in tests/js). It answers the validation OPTIONS and echoes each user event.
- ``fabric serve --event-handler bench=http://127.0.0.1:HP/eventhandler/{event}``.
- the same ``fabric serve`` with the webhook client on httpx for plain http (this file re-run
  with ``--fabric-httpx serve ...``; ``WebhookEventHandler.use_pool = False``), to compare the
  h11 pool (``fabric.appserver.http_pool``) with httpx in the same run.
- for comparison, an embedded fabric with an *in-process* echo handler (this file re-run
  with ``--serve-inprocess``): the same WebSocket path without the HTTP hop.

One client (the fabric's own small WebSocket client over TCP, JSON subprotocol) sends N
events one after another, each with an ackId, and waits for the reply message and the ack.
Rounds alternate between the three measurements so drift hits all alike:

1. ``fabric + webhook``: the full round trip (h11 pool), and the same with httpx;
2. ``fabric + in-process``: the round trip without the upstream hop;
3. ``handler alone, bare h11``: the same CloudEvent POSTed straight to the handler by a bare
   h11 client over one kept-alive socket: the handler's share (its HTTP server, its code,
   loopback), the floor any client can reach;
4. ``handler alone, httpx``: the same with httpx (the HTTP library the fabric uses).

It prints round trips/s, p50 and p99 for each, and splits the mean webhook round trip into
the handler's share (3) and the fabric's own overhead (1 − 3), the latter into the
WebSocket/JSON/dispatch path (2), httpx's per-request cost (4 − 3) and the upstream client's
own work (1 − 2 − 4). It also prints the fabric process's CPU time (user + system, from
/proc) per webhook round trip for the pool and for httpx: on a loaded machine a steadier
comparison than latency. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

HUB = "bench"
KEY = "bench-upstream-key-0123456789abcdef0123456789"
READY_TIMEOUT = 20.0


# ---------------------------------------------------------------------------- child modes


def serve_handler(port: int) -> None:
    """A minimal CloudEvents echo handler on transport.http (h11); prints 'PORT n'."""
    from transport.http import HttpLimits, Response, serve_tcp

    class EchoApp:
        handled = 0
        seconds = 0.0

        async def handle_websocket(self, request):
            return Response(400)

        async def handle_http(self, request):
            started = time.perf_counter()
            try:
                if request.method == "OPTIONS":
                    return Response(200, b"", (("WebHook-Allowed-Origin", "*"),))
                if request.method == "GET" and request.path == "/stats":
                    return Response.json(200, {"handled": self.handled, "seconds": self.seconds})
                ce_type = request.header("ce-type") or ""
                if ce_type.startswith("azure.webpubsub.user."):
                    ctype = request.header("content-type") or "application/octet-stream"
                    return Response(200, request.body, (("content-type", ctype),))
                return Response(204)
            finally:
                if request.method == "POST":
                    self.handled += 1
                    self.seconds += time.perf_counter() - started

    async def main():
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(lambda task_status: serve_tcp(
                EchoApp(), "127.0.0.1", port, limits=HttpLimits(), task_status=task_status))
            print(f"PORT {bound}", flush=True)

    trio.run(main)


def serve_inprocess() -> None:
    """An embedded fabric whose hub has an in-process echo handler; prints the Endpoint line."""
    import fabric
    from fabric.core.events import EventHandler

    class Echo(EventHandler):
        async def on_user_event(self, context, event, payload):
            return payload

    async def main():
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with fabric.open_fabric(access_key=KEY, handlers={HUB: Echo()}) as fab:
                async with trio.open_nursery() as nursery:
                    await nursery.start(fab.serve, "127.0.0.1", 0)
                    print(fab.connection_string(), flush=True)
                    async for _ in signals:
                        break
                    nursery.cancel_scope.cancel()

    trio.run(main)


# ---------------------------------------------------------------------------- processes


class Proc:
    def __init__(self, cmd: list[str], ready: str, cwd: Path = ROOT) -> None:
        self.cmd = cmd
        env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True, text=True)
        deadline = time.monotonic() + READY_TIMEOUT
        self.line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if ready in line:
                self.line = line.strip()
                return
        self.stop()
        raise RuntimeError(f"{' '.join(cmd)} did not print {ready!r} within {READY_TIMEOUT} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(8)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def endpoint_of(line: str) -> str:
    return line.split("Endpoint=", 1)[1].split(";", 1)[0]


# ---------------------------------------------------------------------------- measurements


async def ws_round_trips(endpoint: str, n: int) -> list[float]:
    from fabric.core import auth
    from fabric.testing import connect_tcp

    host, port = endpoint.split("//", 1)[1].rsplit(":", 1)
    token = auth.mint_client_token(key=KEY, endpoint=endpoint, hub=HUB, user_id="bench")
    client = await connect_tcp(host, int(port), f"/client/hubs/{HUB}?access_token={token}",
                               ["json.webpubsub.azure.v1"])
    try:
        await client.receive_json()  # system/connected
        out = []
        for i in range(1, n + 1):
            frame = json.dumps({"type": "event", "event": "echo", "ackId": i, "dataType": "text",
                                "data": f"payload {i:08d} " + "x" * 40})
            start = time.perf_counter()
            await client.send(frame)
            reply = await client.receive_json()
            ack = await client.receive_json()
            out.append(time.perf_counter() - start)
            if reply.get("type") != "message" or not ack.get("success"):
                raise RuntimeError(f"unexpected answer {reply} / {ack}")
        return out
    finally:
        await client.aclose()


async def direct_round_trips(handler_base: str, n: int) -> list[float]:
    import httpx

    from specs import upstream as spec

    out = []
    async with httpx.AsyncClient(trust_env=False, headers={"Accept-Encoding": "identity"}) as client:
        for i in range(1, n + 1):
            headers = {
                spec.H_ORIGIN: "127.0.0.1", spec.H_CONTENT_TYPE: "text/plain", spec.H_SPECVERSION: "1.0",
                spec.H_TYPE: "azure.webpubsub.user.echo", spec.H_SOURCE: spec.ce_source(HUB, "direct"),
                spec.H_ID: str(i), spec.H_TIME: spec.ce_time(), spec.H_SIGNATURE: spec.signature([KEY], "direct"),
                spec.H_USER_ID: "bench", spec.H_CONNECTION_ID: "direct", spec.H_HUB: HUB,
                spec.H_EVENT_NAME: "echo", spec.H_SUBPROTOCOL: "json.webpubsub.azure.v1", spec.H_AWPS_VERSION: "1.0",
            }
            body = (f"payload {i:08d} " + "x" * 40).encode()
            start = time.perf_counter()
            response = await client.post(f"{handler_base}/eventhandler/echo", headers=headers, content=body)
            out.append(time.perf_counter() - start)
            if response.status_code != 200 or response.content != body:
                raise RuntimeError(f"the handler answered {response.status_code} {response.content[:80]!r}")
    return out


async def raw_round_trips(handler_base: str, n: int) -> list[float]:
    """The same POST from a bare h11 client on one kept-alive socket: the floor any HTTP
    client can reach, i.e. the handler's own share (its HTTP server, its code, loopback)."""
    import h11

    from specs import upstream as spec

    host, port = handler_base.split("//", 1)[1].rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    conn = h11.Connection(h11.CLIENT)
    out = []
    try:
        for i in range(1, n + 1):
            body = (f"payload {i:08d} " + "x" * 40).encode()
            headers = [
                ("Host", f"{host}:{port}"), ("Content-Length", str(len(body))),
                (spec.H_ORIGIN, "127.0.0.1"), (spec.H_CONTENT_TYPE, "text/plain"), (spec.H_SPECVERSION, "1.0"),
                (spec.H_TYPE, "azure.webpubsub.user.echo"), (spec.H_SOURCE, spec.ce_source(HUB, "raw")),
                (spec.H_ID, str(i)), (spec.H_TIME, spec.ce_time()), (spec.H_SIGNATURE, spec.signature([KEY], "raw")),
                (spec.H_USER_ID, "bench"), (spec.H_CONNECTION_ID, "raw"), (spec.H_HUB, HUB),
                (spec.H_EVENT_NAME, "echo"), (spec.H_SUBPROTOCOL, "json.webpubsub.azure.v1"), (spec.H_AWPS_VERSION, "1.0"),
            ]
            start = time.perf_counter()
            data = conn.send(h11.Request(method="POST", target="/eventhandler/echo", headers=headers))
            data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
            await stream.send_all(data)
            got = b""
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Data):
                    got += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            conn.start_next_cycle()
            out.append(time.perf_counter() - start)
            if got != body:
                raise RuntimeError(f"the handler answered {got[:80]!r}")
    finally:
        await stream.aclose()
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(samples: list[float]) -> tuple[float, float, float, float]:
    mean = statistics.fmean(samples)
    return 1.0 / mean, pct(samples, 0.5) * 1e3, pct(samples, 0.99) * 1e3, mean


def main() -> None:
    if sys.argv[1:2] == ["--fabric-httpx"]:  # child: fabric serve with httpx for plain http
        from fabric.appserver.webhook import WebhookEventHandler
        from fabric.cli import main as cli

        WebhookEventHandler.use_pool = False
        sys.exit(cli(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 events, 1 round")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--handler", choices=["python", "express"], default="python")
    parser.add_argument("--serve-handler", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-inprocess", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_handler:
        serve_handler(args.port)
        return
    if args.serve_inprocess:
        serve_inprocess()
        return
    events, rounds = (500, 1) if args.quick else (args.events, args.rounds)

    procs: list[Proc] = []
    try:
        if args.handler == "express":
            node_app = ROOT / "tests" / "js" / "express_handler.mjs"
            handler = Proc(["node", str(node_app), "--hub", HUB, "--deadline-ms", "3600000"], '"listening"',
                           cwd=node_app.parent)
            handler_port = json.loads(handler.line)["port"]
            handler_name = "@azure/web-pubsub-express 1.0.6 on express 4 (Node)"
        else:
            handler = Proc([sys.executable, __file__, "--serve-handler"], "PORT ")
            handler_port = int(handler.line.split()[1])
            handler_name = "CloudEvents echo on transport.http (h11, Python)"
        procs.append(handler)
        handler_base = f"http://127.0.0.1:{handler_port}"
        serve = ["serve", "--host", "127.0.0.1", "--port", "0", f"--access-key={KEY}", "--event-handler",
                 f"{HUB}={handler_base}/eventhandler/{{event}}"]
        webhook = Proc([sys.executable, "-m", "fabric", *serve], "Endpoint=")
        procs.append(webhook)
        webhook_httpx = Proc([sys.executable, __file__, "--fabric-httpx", *serve], "Endpoint=")
        procs.append(webhook_httpx)
        inprocess = Proc([sys.executable, __file__, "--serve-inprocess"], "Endpoint=")
        procs.append(inprocess)

        results: dict[str, list[float]] = {"webhook": [], "webhook_httpx": [], "inprocess": [], "direct": [],
                                           "raw": []}
        cpu = {"webhook": 0.0, "webhook_httpx": 0.0}
        # warm-up (connections, validation, JIT-free but cache-warm paths)
        trio.run(ws_round_trips, endpoint_of(webhook.line), 50)
        trio.run(ws_round_trips, endpoint_of(webhook_httpx.line), 50)
        trio.run(ws_round_trips, endpoint_of(inprocess.line), 50)
        trio.run(direct_round_trips, handler_base, 50)
        trio.run(raw_round_trips, handler_base, 50)
        for _ in range(rounds):
            for key, proc in (("webhook", webhook), ("webhook_httpx", webhook_httpx)):
                before = cpu_seconds(proc.proc.pid)
                results[key] += trio.run(ws_round_trips, endpoint_of(proc.line), events)
                cpu[key] += cpu_seconds(proc.proc.pid) - before
            results["inprocess"] += trio.run(ws_round_trips, endpoint_of(inprocess.line), events)
            results["direct"] += trio.run(direct_round_trips, handler_base, events)
            results["raw"] += trio.run(raw_round_trips, handler_base, events)
        handler_self = None
        if args.handler == "python":
            import httpx

            stats = httpx.get(f"{handler_base}/stats", trust_env=False).json()
            handler_self = stats["seconds"] / max(1, stats["handled"])
    finally:
        for proc in reversed(procs):
            proc.stop()

    print(f"\n## upstream echo: {events} sequential events x {rounds} round(s), one client, 127.0.0.1")
    print(f"handler: {handler_name}; 54-byte text payload; JSON subprotocol; ack awaited per event\n")
    print("| measurement | round trips/s | p50 ms | p99 ms | mean µs |")
    print("|---|---:|---:|---:|---:|")
    rows = [("fabric + webhook handler (client → fabric → handler → client), h11 pool", "webhook"),
            ("fabric + webhook handler, httpx", "webhook_httpx"),
            ("fabric + in-process handler (no HTTP hop)", "inprocess"),
            ("handler alone, bare h11 client, keep-alive (the floor)", "raw"),
            ("handler alone, httpx client, keep-alive", "direct")]
    means = {}
    for label, key in rows:
        rate, p50, p99, mean = summary(results[key])
        means[key] = mean
        print(f"| {label} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {mean * 1e6:,.0f} |")
    us = {k: v * 1e6 for k, v in means.items()}
    print()
    per = {k: cpu[k] / (events * rounds) * 1e6 for k in cpu}
    print(f"- fabric process CPU per webhook round trip: h11 pool {per['webhook']:,.0f} µs, httpx "
          f"{per['webhook_httpx']:,.0f} µs (ratio {per['webhook_httpx'] / max(per['webhook'], 1e-9):.2f}); "
          f"round-trip rate ratio pool/httpx {us['webhook_httpx'] / us['webhook']:.2f}")
    print(f"- the handler's share per event (a bare HTTP round trip to it: its HTTP server, its code, "
          f"loopback): {us['raw']:,.0f} µs"
          + (f"; its own code, self-timed: {handler_self * 1e6:,.0f} µs" if handler_self is not None else ""))
    print(f"- the fabric's own overhead per event (webhook round trip − handler's share): "
          f"{us['webhook'] - us['raw']:,.0f} µs, of which")
    print(f"  - WebSocket, JSON, dispatch, and the benchmark client (the in-process round trip): "
          f"{us['inprocess']:,.0f} µs")
    print(f"  - httpx's per-request cost (httpx round trip − bare round trip): {us['direct'] - us['raw']:,.0f} µs")
    print(f"  - the pooled upstream client's own work beyond a bare h11 exchange (CloudEvent headers, "
          f"signature, limiter, pool, answer checks): {us['webhook'] - us['inprocess'] - us['raw']:,.0f} µs")


if __name__ == "__main__":
    main()
