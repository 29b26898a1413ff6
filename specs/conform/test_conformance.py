"""The conformance suites as pytest tests (see ``conftest.py`` for the options)."""

from __future__ import annotations

import pytest


def _run(session, suite) -> None:
    before = set(session.ledger.found)
    errors = len(session.ledger.errors)
    suite()
    new = sorted(set(session.ledger.found) - before)
    problems = session.ledger.errors[errors:]
    if new or problems:
        found = {rid: session.ledger.found[rid] for rid in new}
        text = []
        for rid, f in found.items():
            text.append(f"[{rid}] {f.rule.title}\n  at fault: {f.rule.fault}\n  {f.detail}\n"
                        + (f"  steps:\n{f.steps}\n" if f.steps else "") + (f"  transcript:\n{f.transcript}" if f.transcript else ""))
        text += [f"checker error: {e}" for e in problems]
        pytest.fail("\n\n".join(text), pytrace=False)


def test_handshake_auth_and_rest(conform_session) -> None:
    """Authentication, recovery refusal and the REST operation table."""
    _run(conform_session, conform_session.run_fixed)


def test_inbound_frames(conform_session) -> None:
    """Valid client messages and near misses, one frame per fresh connection."""
    _run(conform_session, conform_session.run_inbound)


def test_hub_state_machine(conform_session) -> None:
    """Connections, groups, permissions, acks, deliveries and reliable sessions against the model."""
    _run(conform_session, conform_session.run_machine)
