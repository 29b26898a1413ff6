"""Departures, the ledger of checks, and the report a run prints.

Rules this module keeps:
- A departure is raised as an exception of a class made per rule (``departure_class``), so
  Hypothesis treats departures from different rules as different bugs and shrinks each one.
- The ``Ledger`` counts checks passed per rule and keeps one minimal departure per rule (the
  shortest transcript wins); it is bounded by the number of rules.
- The report groups by rule: title, source, kind, the one-sentence fault, the detail, the
  Hypothesis steps and the wire transcript.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from specs.conform.rules import RULES, Rule


class Departure(AssertionError):
    """An observation that departs from a rule."""

    rule: Rule

    def __init__(self, detail: str, transcript: str = "") -> None:
        super().__init__(f"[{self.rule.id}] {detail}" + (f"\n--- wire transcript ---\n{transcript}" if transcript else ""))
        self.detail = detail
        self.transcript = transcript


_CLASSES: dict[str, type[Departure]] = {}


def departure_class(rule_id: str) -> type[Departure]:
    cls = _CLASSES.get(rule_id)
    if cls is None:
        rule = RULES[rule_id]
        name = "Departure_" + rule_id.replace(".", "_").replace("-", "_")
        cls = type(name, (Departure,), {"rule": rule, "__module__": __name__})
        _CLASSES[rule_id] = cls
    return cls


def departure(rule_id: str, detail: str, transcript: str = "") -> Departure:
    return departure_class(rule_id)(detail, transcript)


@dataclass
class Found:
    rule: Rule
    detail: str
    transcript: str
    steps: str = ""
    suite: str = ""
    flaky: bool = False


@dataclass
class Ledger:
    passed: Counter = field(default_factory=Counter)
    found: dict[str, Found] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # rule id -> why
    suites: list[tuple[str, str]] = field(default_factory=list)  # (suite, outcome)
    enabled: frozenset[str] = frozenset(RULES)

    def ok(self, rule_id: str, n: int = 1) -> None:
        if rule_id not in RULES:
            raise KeyError(rule_id)
        self.passed[rule_id] += n

    def record(self, exc: Departure, *, steps: str = "", suite: str = "", flaky: bool = False) -> None:
        f = Found(exc.rule, exc.detail, exc.transcript, steps, suite, flaky)
        old = self.found.get(exc.rule.id)
        if old is None or (old.flaky and not flaky) or len(f.transcript) + len(f.steps) < len(old.transcript) + len(old.steps):
            self.found[exc.rule.id] = f

    @property
    def departures(self) -> int:
        return len(self.found)

    # ------------------------------------------------------------------ rendering

    def table(self) -> str:
        rows = [("rule", "kind", "passed", "result")]
        for rid, rule in RULES.items():
            if rid not in self.enabled:
                continue
            n = self.passed.get(rid, 0)
            if rid in self.found:
                result = "DEPARTS" + (" (flaky)" if self.found[rid].flaky else "")
            elif n:
                result = "ok"
            else:
                result = "not exercised" + (f": {self.skipped[rid]}" if rid in self.skipped else "")
            rows.append((rid, rule.kind, str(n), result))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        out = []
        for i, r in enumerate(rows):
            out.append(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}")
            if i == 0:
                out.append("-" * (sum(widths) + 6 + 14))
        return "\n".join(out)

    def departures_text(self) -> str:
        if not self.found:
            return "No departures found."
        parts = []
        for rid, f in sorted(self.found.items()):
            r = f.rule
            parts.append("\n".join([
                f"== {rid}: {r.title}",
                f"   kind: {r.kind}; source: {r.source}",
                f"   at fault: {r.fault}",
                f"   found by: {f.suite}" + ("  (did not reproduce every time)" if f.flaky else ""),
                f"   what happened: {f.detail}",
                *(["   steps (shrunk by Hypothesis):", _indent(f.steps, 6)] if f.steps else []),
                *(["   wire transcript:", _indent(f.transcript, 6)] if f.transcript else []),
            ]))
        return "\n\n".join(parts)

    def text(self, header: str = "") -> str:
        out = [header] if header else []
        out += [self.table(), ""]
        for suite, outcome in self.suites:
            out.append(f"suite {suite}: {outcome}")
        if self.errors:
            out.append("")
            out += [f"checker error: {e}" for e in self.errors]
        out += ["", self.departures_text()]
        total = sum(self.passed.values())
        out += ["", f"{total} checks passed, {self.departures} rule(s) departed from."]
        return "\n".join(out) + "\n"

    def to_json(self, header: dict | None = None) -> str:
        return json.dumps({
            **(header or {}),
            "passed": dict(self.passed),
            "departures": [
                {"rule": rid, "kind": f.rule.kind, "title": f.rule.title, "source": f.rule.source,
                 "decision": f.rule.decision, "fault": f.rule.fault, "detail": f.detail,
                 "steps": f.steps, "transcript": f.transcript, "suite": f.suite, "flaky": f.flaky}
                for rid, f in sorted(self.found.items())
            ],
            "errors": self.errors,
            "suites": [{"suite": s, "outcome": o} for s, o in self.suites],
        }, indent=2)


def _indent(text: str, n: int) -> str:
    pad = " " * n
    return "\n".join(pad + line for line in text.splitlines())
