"""``fabric conform`` / ``python -m specs.conform``: check any Web PubSub endpoint.

    python -m specs.conform --connection-string "Endpoint=...;AccessKey=...;Version=1.0;" \\
        --hub HUB [--subprotocol json ...] [--examples N] [--seed S] [--report FILE]

Prints a table of the rules checked (passes per rule) and, grouped by rule, every departure
with its source, the side at fault, the shrunk steps and the wire transcript.

Exit status: 0 no departure; 1 departures found; 2 bad arguments; 3 the endpoint cannot be
checked (unreachable, wrong key, hub rejects connections, not Web PubSub: one line says
which); 4 the checker itself failed (one line; ``--debug`` for the traceback); 130
interrupted.

Rules this module keeps:
- ``main(argv)`` never lets a traceback out without ``--debug``; every failure is one line.
- ``Session`` is the one way to run suites (the CLI and the pytest plugin both use it); each
  suite's departures land in the session's ``Ledger``, one minimal departure per rule.
- Hypothesis runs without a database (nothing is written to the working directory) and with
  the health checks that a network-bound test trips suppressed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import time
from dataclasses import dataclass, field

from hypothesis import HealthCheck, Phase, given
from hypothesis import seed as hypothesis_seed
from hypothesis import settings
from hypothesis.errors import FlakyFailure
from hypothesis.reporting import with_reporter
from hypothesis.stateful import run_state_machine_as_test

from specs.conform.diagnose import diagnose
from specs.conform.driver import Portal, RestClient
from specs.conform.endpoint import ConnectionStringError, Endpoint, parse_connection_string
from specs.conform.machine import PROTOCOLS, Context, build_machine
from specs.conform.report import Departure, Ledger
from specs.conform.rules import RULES
from specs.conform.strategies import inbound_probes, oversize_probe
from specs.conform.suites import run_fixed_checks, run_probe
from specs.names import is_valid_hub_name
from specs.webpubsub_json import SUBPROTOCOLS

ENV_CONNECTION_STRING = "WEBPUBSUB_CONNECTION_STRING"
SUITES = ("fixed", "inbound", "machine")
EXIT_OK, EXIT_DEPARTURES, EXIT_USAGE, EXIT_UNUSABLE, EXIT_CHECKER = 0, 1, 2, 3, 4

#: Full subprotocol names accepted too.
_ALIASES = {**{k: k for k in PROTOCOLS}, **{p.name: alias for alias, p in PROTOCOLS.items() if p is not None},
            "none": "simple"}


@dataclass
class Options:
    connection_string: str
    hub: str = "conform"
    subprotocols: tuple[str, ...] = tuple(PROTOCOLS)
    examples: int = 25
    steps: int = 25
    seed: int | None = None
    report: str | None = None
    timeout: float = 3.0
    only_documented: bool = False
    probe_events: bool = False
    max_message_bytes: int = 1024 * 1024
    suites: tuple[str, ...] = SUITES
    shrink: bool = True
    shrink_seconds: float = 60.0
    run_id: str = field(default_factory=lambda: "cf" + secrets.token_hex(3))


class UsageError(ValueError):
    pass


def parse_subprotocols(values: list[str] | None) -> tuple[str, ...]:
    if not values:
        return tuple(PROTOCOLS)
    out: list[str] = []
    for v in values:
        for part in v.split(","):
            part = part.strip()
            if not part:
                continue
            alias = _ALIASES.get(part)
            if alias is None:
                raise UsageError(f"unknown subprotocol {part!r}: use one of {', '.join(PROTOCOLS)} "
                                 f"or a full name ({', '.join(SUBPROTOCOLS)})")
            if alias not in out:
                out.append(alias)
    return tuple(out)


def validate(options: Options) -> Endpoint:
    """The parsed endpoint, or ``UsageError`` / ``ConnectionStringError`` with one line."""
    if not options.connection_string:
        raise UsageError(f"no connection string: pass --connection-string or set ${ENV_CONNECTION_STRING}")
    endpoint = parse_connection_string(options.connection_string)
    if not is_valid_hub_name(options.hub):
        raise UsageError(f"invalid hub name {options.hub!r}: a letter, then up to 127 of A-Z a-z 0-9 _ ` , . [ ]")
    if options.examples < 1 or options.steps < 1:
        raise UsageError("--examples and --steps must be at least 1")
    if options.timeout <= 0:
        raise UsageError("--timeout must be positive")
    unknown = set(options.suites) - set(SUITES)
    if unknown:
        raise UsageError(f"unknown suite(s) {sorted(unknown)}: use {', '.join(SUITES)}")
    return endpoint


class Session:
    """One run against one endpoint: a portal, a REST client, a ledger, the suites."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.endpoint = validate(options)
        self.portal = Portal()
        self.ledger = Ledger()
        enabled = frozenset(r for r, rule in RULES.items() if not (options.only_documented and rule.kind == "decision"))
        self.ledger.enabled = enabled
        self.rest: RestClient | None = None
        self.ctx: Context | None = None

    def __enter__(self) -> "Session":
        self.portal.start()
        self.rest = RestClient(self.endpoint, self.options.timeout)
        self.ctx = Context(portal=self.portal, endpoint=self.endpoint, hub=self.options.hub, rest=self.rest,
                           ledger=self.ledger, protocols=self.options.subprotocols, timeout=self.options.timeout,
                           run_id=self.options.run_id, enabled=self.ledger.enabled)
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.rest is not None:
                self.portal.run(self.rest.aclose)
        except Exception:
            pass
        self.portal.close()

    # ------------------------------------------------------------------ suites

    def diagnose(self) -> str | None:
        return diagnose(self.portal, self.endpoint, self.options.hub, max(self.options.timeout, 5.0))

    def _settings(self, examples: int) -> settings:
        phases = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target]
        if self.options.shrink:
            phases.append(Phase.shrink)
        return settings(max_examples=examples, stateful_step_count=self.options.steps, deadline=None, database=None,
                        suppress_health_check=list(HealthCheck), phases=phases, print_blob=False,
                        report_multiple_bugs=True)

    def _seeded(self, fn):
        return hypothesis_seed(self.options.seed)(fn) if self.options.seed is not None else fn

    def run_fixed(self) -> None:
        assert self.ctx is not None
        self._guard("fixed checks", lambda: run_fixed_checks(self.ctx))  # type: ignore[arg-type]

    def run_inbound(self) -> None:
        ctx = self.ctx
        assert ctx is not None
        families = tuple(sorted({"protobuf" if (PROTOCOLS[p] is not None and PROTOCOLS[p].binary) else "json"  # type: ignore[union-attr]
                                 for p in self.options.subprotocols if p != "simple"}))
        if not families:
            return
        strategy = inbound_probes(families, events=self.options.probe_events)

        @self._settings(self.options.examples * 2)
        @given(strategy)
        def inbound(probe):
            run_probe(ctx, probe)

        self._guard("inbound frames", self._seeded(inbound))
        if "json" in families and self.options.max_message_bytes > 0:
            self._guard("oversize frame", lambda: run_probe(ctx, oversize_probe(self.options.max_message_bytes)))

    def run_machine(self) -> None:
        assert self.ctx is not None
        machine = build_machine(self.ctx)
        if self.options.seed is not None:
            machine = hypothesis_seed(self.options.seed)(machine)
        self._guard("hub state machine", lambda: run_state_machine_as_test(
            machine, settings=self._settings(self.options.examples)))

    def run_all(self) -> None:
        suites = {"fixed": self.run_fixed, "inbound": self.run_inbound, "machine": self.run_machine}
        for name in self.options.suites:
            suites[name]()

    def _guard(self, name: str, fn) -> None:
        t0 = time.monotonic()
        before = set(self.ledger.found)
        reports: list[str] = []
        try:
            with _shrink_budget(self.options.shrink_seconds), with_reporter(reports.append):
                fn()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - departures and checker errors are both recorded
            self._collect(name, exc, flaky=False)
        took = time.monotonic() - t0
        new = sorted(set(self.ledger.found) - before)
        outcome = f"{len(new)} departure(s): {', '.join(new)}" if new else "no departure"
        if any("working to shrink" in str(r) for r in reports):
            outcome += f"; shrinking stopped at the {self.options.shrink_seconds:g} s budget (--shrink-seconds)"
        self.ledger.suites.append((name, f"{outcome} ({took:.1f} s)"))

    def _collect(self, name: str, exc: BaseException, flaky: bool) -> None:
        if isinstance(exc, BaseExceptionGroup):
            flaky = flaky or isinstance(exc, FlakyFailure)
            for sub in exc.exceptions:
                self._collect(name, sub, flaky)
            return
        if isinstance(exc, KeyboardInterrupt):
            raise exc
        if isinstance(exc, Departure):
            steps = "\n".join(n for n in getattr(exc, "__notes__", ()) if not n.startswith("You can reproduce"))
            self.ledger.record(exc, steps=steps.strip(), suite=name, flaky=flaky)
            return
        notes = " ".join(getattr(exc, "__notes__", ()))[:300]
        self.ledger.errors.append(f"{name}: {type(exc).__name__}: {str(exc)[:300]}" + (f" [{notes}]" if notes else ""))

    # ------------------------------------------------------------------ report

    def header(self) -> str:
        o = self.options
        return (f"fabric conform: {self.endpoint.endpoint} hub={o.hub} subprotocols={','.join(o.subprotocols)} "
                f"examples={o.examples} steps={o.steps} seed={o.seed if o.seed is not None else 'random'} "
                f"timeout={o.timeout:g}s" + (" (documented rules only)" if o.only_documented else ""))

    def write_report(self) -> None:
        path = self.options.report
        if not path:
            return
        if path.endswith(".json"):
            text = self.ledger.to_json({"endpoint": self.endpoint.endpoint, "hub": self.options.hub,
                                        "subprotocols": list(self.options.subprotocols),
                                        "examples": self.options.examples, "seed": self.options.seed})
        else:
            text = self.ledger.text(self.header())
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    def exit_code(self) -> int:
        if self.ledger.found:
            return EXIT_DEPARTURES
        if self.ledger.errors:
            return EXIT_CHECKER
        return EXIT_OK


@contextlib.contextmanager
def _shrink_budget(seconds: float):
    """Bound the time Hypothesis spends shrinking one failure. Against a remote endpoint every
    shrink attempt is a few network round trips, and Hypothesis's own bound is five minutes.
    There is no public setting for it, so this sets the engine's module constant for the
    duration of the run (and does nothing if a future Hypothesis renames it)."""
    from hypothesis.internal.conjecture import engine

    old = getattr(engine, "MAX_SHRINKING_SECONDS", None)
    if old is None:
        yield
        return
    engine.MAX_SHRINKING_SECONDS = max(1, int(seconds))
    try:
        yield
    finally:
        engine.MAX_SHRINKING_SECONDS = old


# =========================================================================== command line


def build_parser(prog: str = "python -m specs.conform") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Check a Web PubSub endpoint against the protocol specs "
                                "(specs/): wire formats, acks, delivery, permissions, reliable sessions, REST.")
    p.add_argument("--connection-string", default=os.environ.get(ENV_CONNECTION_STRING, ""),
                   help=f"Endpoint=...;AccessKey=...;Version=1.0; (default ${ENV_CONNECTION_STRING})")
    p.add_argument("--hub", default="conform", help="the hub to use (default: conform)")
    p.add_argument("--subprotocol", action="append", metavar="NAME",
                   help=f"repeatable or comma-separated: {', '.join(PROTOCOLS)} (default: all)")
    p.add_argument("--examples", type=int, default=25, help="Hypothesis examples per suite (default 25)")
    p.add_argument("--steps", type=int, default=25, help="steps per state-machine example (default 25)")
    p.add_argument("--seed", type=int, help="Hypothesis seed, for a reproducible run")
    p.add_argument("--report", metavar="FILE", help="also write the report to FILE (.json for JSON, else text)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for any expected frame (default 3)")
    p.add_argument("--only-documented", action="store_true",
                   help="skip rules that are the fabric's own decisions where Microsoft is silent")
    p.add_argument("--probe-events", action="store_true",
                   help="also send user events (they reach the hub's event handler, if any)")
    p.add_argument("--max-message-bytes", type=int, default=1024 * 1024,
                   help="the endpoint's message size limit for the oversize probe (0: skip it)")
    p.add_argument("--suite", action="append", choices=SUITES, help="run only these suites (repeatable)")
    p.add_argument("--no-shrink", action="store_true", help="report departures without shrinking them")
    p.add_argument("--shrink-seconds", type=float, default=60.0,
                   help="time budget for shrinking one departure (default 60)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of checker errors")
    return p


def options_from_args(args: argparse.Namespace) -> Options:
    return Options(
        connection_string=args.connection_string, hub=args.hub, subprotocols=parse_subprotocols(args.subprotocol),
        examples=args.examples, steps=args.steps, seed=args.seed, report=args.report, timeout=args.timeout,
        only_documented=args.only_documented, probe_events=args.probe_events,
        max_message_bytes=args.max_message_bytes, suites=tuple(args.suite or SUITES), shrink=not args.no_shrink,
        shrink_seconds=args.shrink_seconds,
    )


def main(argv: list[str] | None = None, *, prog: str = "python -m specs.conform") -> int:
    """Run the conformance suite; returns the exit status (see the module docstring)."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its one-line usage error
        return EXIT_USAGE if exc.code else EXIT_OK
    name = prog.split()[-1] if prog else "conform"
    try:
        options = options_from_args(args)
        session = Session(options)
    except (UsageError, ConnectionStringError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with session:
            print(session.header(), flush=True)
            problem = session.diagnose()
            if problem is not None:
                print(f"{name}: {problem}", file=sys.stderr)
                return EXIT_UNUSABLE
            session.run_all()
            text = session.ledger.text()
            print(text, end="")
            session.write_report()
            return session.exit_code()
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback (unless --debug)
        if args.debug:
            raise
        print(f"{name}: internal error in the checker: {type(exc).__name__}: {exc}"[:400], file=sys.stderr)
        return EXIT_CHECKER
