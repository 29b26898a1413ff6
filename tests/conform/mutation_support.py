"""What a caught mutation looks like: ``fabric conform`` reports a departure from the expected
rule, with a short shrunk counterexample and a short wire transcript."""

from __future__ import annotations

from specs.conform.runner import Options, Session

#: The rules each mutation must be reported under (any one of them).
EXPECTED_RULES = {
    "drop-50th": {"deliver.group"},
    "ack-before-route": {"ack.forbidden", "ack.duplicate", "deliver.group", "permission.effect"},
    "ignore-noecho": {"deliver.no-echo"},
}
MAX_STEP_LINES = 16
MAX_TRANSCRIPT_LINES = 40


def assert_catches(connection_string: str, mutation: str, *, hub: str, examples: int = 40, seed: int = 1,
                   shrink_seconds: float = 10.0) -> str:
    """Run the suite against a mutated endpoint; return the report text."""
    options = Options(connection_string=connection_string, hub=hub, examples=examples, steps=25, seed=seed,
                      subprotocols=("json", "json.reliable"), suites=("fixed", "machine"),
                      shrink_seconds=shrink_seconds, timeout=2.0)
    with Session(options) as session:
        problem = session.diagnose()
        assert problem is None, problem
        session.run_all()
        text = session.ledger.text(session.header())
    found = set(session.ledger.found) & EXPECTED_RULES[mutation]
    assert found, f"mutation {mutation} went unnoticed:\n{text}"
    best = min((session.ledger.found[r] for r in found), key=lambda f: len(f.transcript.splitlines()))
    steps = [line for line in best.steps.splitlines() if line.strip()]
    assert len(steps) <= MAX_STEP_LINES, f"counterexample not short ({len(steps)} lines):\n{best.steps}"
    assert len(best.transcript.splitlines()) <= MAX_TRANSCRIPT_LINES, f"transcript not short:\n{best.transcript}"
    return text
