"""A tiny record type for the choices we made where Microsoft's sources are silent or disagree.

Every ``specs`` module keeps a ``DECISIONS`` tuple of these next to the data it governs, so
a reader (or a conformance report) can see *what* we chose, *why*, and what the evidence
was. ``render_decisions_markdown`` turns any collection of them into a Markdown table.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs


@attrs.frozen(slots=True)
class Decision:
    """One recorded decision.

    Attributes:
        id: stable short identifier (``json.missing-data``), unique across ``specs``.
        question: what the reference leaves open.
        decision: what we do.
        reason: why, including the evidence tags of the reference
            (``[DOC]``, ``[SDK]``, ``[EMU]`` ...) where there is some.
    """

    id: str
    question: str
    decision: str
    reason: str


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render_decisions_markdown(decisions: Iterable[Decision]) -> str:
    """Render decisions as a Markdown table (one row each, in the given order)."""
    lines = ["| id | question | decision | reason |", "|---|---|---|---|"]
    for d in decisions:
        lines.append(
            f"| `{d.id}` | {_cell(d.question)} | {_cell(d.decision)} | {_cell(d.reason)} |"
        )
    return "\n".join(lines) + "\n"
