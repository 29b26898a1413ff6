"""Render the protocol tables of ``specs`` into ``specs/README.md``: Markdown tables and Mermaid
state diagrams, generated from the data and never edited by hand.

    python -m specs.render           # rewrite specs/README.md
    python -m specs.render --check   # exit 1 (and say so) if specs/README.md is stale

Rules this module keeps:
- Reads only ``specs`` data; the output is deterministic (table order, no timestamps), so a
  test can compare it with the committed file.
- Every ``specs`` module is listed, and every ``Decision`` of every module is rendered, found
  by walking the package (``spec_modules``): a new module appears without editing this file;
  the known tables get their own sections.
- Cells are single-line and escape ``|``.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import specs
from specs._decisions import Decision, render_decisions_markdown

README = Path(__file__).resolve().parent / "README.md"
_SKIP = {"specs.render", "specs._decisions", "specs.__main__"}


def spec_modules() -> list[ModuleType]:
    """Every module of the ``specs`` package except this one and the conformance suite."""
    out = []
    for info in sorted(pkgutil.iter_modules(specs.__path__, "specs."), key=lambda i: i.name):
        if info.name in _SKIP or info.ispkg:
            continue
        out.append(importlib.import_module(info.name))
    return out


def all_decisions() -> list[tuple[str, Decision]]:
    """(module name, decision) for every ``DECISIONS`` entry of every spec module."""
    found = []
    for module in spec_modules():
        for d in getattr(module, "DECISIONS", ()):
            if isinstance(d, Decision):
                found.append((module.__name__, d))
    return found


# =========================================================================== helpers


def cell(value: object) -> str:
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    return " ".join(text.split()).replace("|", "\\|")


def table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def code(value: object) -> str:
    return f"`{value}`" if value not in (None, "") else ""


def first_line(module: ModuleType) -> str:
    doc = (module.__doc__ or "").strip()
    return doc.split("\n\n", 1)[0].replace("\n", " ") if doc else ""


def _id(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)


# =========================================================================== sections


def section_subprotocols() -> str:
    from specs import webpubsub_json as wj

    rows = [(code(p.name), "yes" if p.reliable else "no", p.frame_kind) for p in wj.SUBPROTOCOLS.values()]
    text = table(("subprotocol", "reliable", "frames"), rows)
    text += "\nAny other offered name, or none, makes the connection a *simple WebSocket client*.\n"
    rows = [(code(e.data_type.value), e.json_data, e.simple_frame, code(e.protobuf_field))
            for e in wj.DATA_ENCODINGS.values()]
    return text + "\n### Data types\n\n" + table(("dataType", "JSON `data`", "simple client frame", "protobuf member"), rows)


def section_json_messages() -> str:
    from specs import webpubsub_json as wj

    parts = ["### Client → service\n"]
    for m in wj.CLIENT_MESSAGES.values():
        flags = [] if m.supported else ["not implemented: answered as Unsupported"]
        if m.reliable_only:
            flags.append("reliable subprotocols only")
        head = f"**`{m.type}`**" + (f" ({'; '.join(flags)})" if flags else "") + (f": {cell(m.notes)}" if m.notes else "")
        parts.append(head + "\n")
        if m.fields:
            parts.append(table(("field", "type", "required", "default", "constraints", "also accepted"),
                               ((code(f.name), f.json_type, "yes" if f.required else "no",
                                 code(f.default) if f.default is not None else "", f.constraints, f.lenient)
                                for f in m.fields)))
        else:
            parts.append("No fields.\n")
    parts.append("### Service → client (exact key order)\n")
    rows = []
    for m in wj.SERVER_MESSAGES.values():
        keys = ", ".join(f"`{k}`" + ("?" if k in m.optional else "") + ("∅" if k in m.nullable else "") for k in m.keys)
        consts = ", ".join(f"{k}={v!r}" for k, v in m.constants.items())
        rows.append((code(m.name), keys, consts, m.notes))
    parts.append(table(("message", "keys (? optional, ∅ may be null)", "constants", "notes"), rows))
    return "\n".join(parts)


def section_protobuf() -> str:
    from specs import webpubsub_protobuf as wp

    parts = [f"Package `{wp.PACKAGE}`; field numbers are exact.\n"]
    for m in wp.MESSAGES.values():
        parts.append(f"**`{m.name}`**\n")
        if not m.fields:
            parts.append("No fields.\n")
            continue
        parts.append(table(("#", "field", "type", "label", "oneof"),
                           ((f.number, code(f.name), code(f.type), f.label, code(f.oneof)) for f in m.fields)))
    rows = [(code(k.field), k.number, code(k.json_type), "yes" if k.supported else "no")
            for k in wp.UPSTREAM_KINDS.values()]
    parts.append("**Upstream kinds** (`UpstreamMessage.message`)\n")
    parts.append(table(("member", "#", "JSON type", "implemented"), rows))
    return "\n".join(parts)


def lifecycle_mermaid() -> str:
    from specs import lifecycle as lc

    lines = ["```mermaid", "stateDiagram-v2", f"    [*] --> {lc.INITIAL_STATE.name}"]
    for t in lc.TRANSITIONS:
        guard = "" if t.guard is lc.Guard.ANY else f" [{t.guard.value}]"
        lines.append(f"    {t.state.name} --> {t.target.name}: {t.event.name}{guard}")
    for s in lc.TERMINAL_STATES:
        lines.append(f"    {s.name} --> [*]")
    lines.append("```")
    return "\n".join(lines) + "\n"


def section_lifecycle() -> str:
    from specs import lifecycle as lc

    return lifecycle_mermaid() + "\n" + lc.render_markdown()


def section_reliable() -> str:
    from specs import reliable as rl

    lines = ["```mermaid", "stateDiagram-v2"]
    for st in rl.SESSION_STATES:
        lines.append(f'    state "{st.name}" as {_id(st.name)}')
    lines.append(f"    [*] --> {_id(rl.SESSION_STATES[0].name)}")
    for t in rl.SESSION_TRANSITIONS:
        lines.append(f"    {_id(t.source)} --> {_id(t.target)}: {t.trigger.replace(':', ' -')}")
    lines += ["```", ""]
    text = "\n".join(lines) + "\n" + rl.render_markdown()
    text += "\n**Guarantees**\n\n" + "\n".join(f"- {cell(g)}" for g in rl.GUARANTEES) + "\n"
    return text


def section_errors() -> str:
    from specs import errors as er

    parts = ["### Ack errors\n"]
    parts.append(table(("name", "when", "default message", "source", "ours", "emitted"),
                       ((code(r.name.value), r.when, r.default_message, r.source, "yes" if r.ours else "",
                         "yes" if r.emitted else "no") for r in er.ACK_ERRORS.values())))
    parts.append("### Close codes, grouped by what a client does next\n")
    groups = (
        ("The session survives: reliable clients recover", lambda r: r.session_kept),
        ("Clients recover (refused with 1008), then reconnect", lambda r: not r.session_kept and r.client_recovers),
        ("1008: clients do not recover; they reconnect if enabled", lambda r: not r.session_kept and not r.client_recovers),
    )
    for title, keep in groups:
        rows = [(code(r.situation.value), int(r.code), code(r.reason.value), r.message,
                 "yes" if r.send_disconnected else "no", r.when, r.why)
                for r in er.CLOSE_RULES.values() if keep(r)]
        if rows:
            parts.append(f"**{title}**\n")
            parts.append(table(("situation", "code", "reason", "message", "system/disconnected first", "when", "why"),
                               rows))
    parts.append("### Problematic client messages\n")
    parts.append(table(("outcome", "with an ackId", "without an ackId", "ack error", "close"),
                       ((code(o.key), o.with_ack_id, o.without_ack_id, code(o.ack_error.value if o.ack_error else ""),
                         code(o.close.value if o.close else "")) for o in er.INBOUND_POLICY.values())))
    return "\n".join(parts)


def section_rest() -> str:
    from specs import rest as rs

    text = (f"api-version: {', '.join(code(v) for v in rs.GA_API_VERSIONS)} (GA), "
            f"{', '.join(code(v) for v in rs.PREVIEW_API_VERSIONS)} (preview); default {code(rs.DEFAULT_API_VERSION)}.\n\n")
    rows = []
    for op in rs.OPERATIONS:
        query = ", ".join(f"`{p.name}`" + ("*" if p.kind == "list" else "") for p in op.query)
        rows.append((code(op.name), op.method, code(op.path), op.success, query, op.body or "", op.not_found or "",
                     code(op.sdk) if op.sdk else "", "ours" if op.extension else ""))
    text += table(("operation", "method", "path", "success", "query (* repeated)", "body", "404", "Python SDK", ""), rows)
    text += "\nPermissions: " + ", ".join(code(p) for p in rs.PERMISSIONS) + ". Send bodies: "
    text += ", ".join(f"{code(ct)} → {dt}" for ct, dt in rs.MESSAGE_CONTENT_TYPES.items())
    text += f"; none means {code(rs.DEFAULT_CONTENT_TYPE)}.\n"
    return text


def section_upstream() -> str:
    from specs import upstream as up

    text = "Request headers, in order: " + ", ".join(code(h) for h in up.REQUEST_HEADERS) + ".\n\n"
    text += table(("event", "on failure"), ((k, v) for k, v in up.OUTCOMES.items()))
    return text + "\n" + attrs_table(list(up.FAILURES.values()))


def attrs_table(records: list) -> str:
    """A table with one column per attrs field of the records (so new fields show up by
    themselves); enum members are shown by value."""
    import attrs

    if not records:
        return ""
    names = [f.name for f in attrs.fields(type(records[0]))]

    def show(v: object) -> str:
        v = getattr(v, "value", v)
        return code(v) if isinstance(v, (int, str)) and not isinstance(v, bool) and len(str(v)) < 40 else cell(v)

    return table(names, ((show(getattr(r, n)) for n in names) for r in records))


def section_conformance() -> str:
    from specs.conform.rules import RULES

    text = ("`python -m specs.conform` (`fabric conform`) checks any endpoint against these rules; "
            "`kind` says where a rule comes from: `doc` Microsoft's documents or SDK behaviour, `table` a row of "
            "these tables, `decision` the fabric's own choice where Microsoft is silent (skipped with "
            "`--only-documented`).\n\n")
    return text + table(("rule", "kind", "checks", "source", "decision"),
                        ((code(r.id), r.kind, r.title, r.source, code(r.decision)) for r in RULES.values()))


def section_modules() -> str:
    return table(("module", "what it holds"),
                 ((code(m.__name__), first_line(m)) for m in spec_modules()))


def section_decisions() -> str:
    parts = []
    by_module: dict[str, list[Decision]] = {}
    for name, d in all_decisions():
        by_module.setdefault(name, []).append(d)
    for name, decisions in by_module.items():
        parts.append(f"### `{name}`\n")
        parts.append(render_decisions_markdown(decisions))
    return "\n".join(parts)


SECTIONS = (
    ("Modules", section_modules),
    ("Subprotocols", section_subprotocols),
    ("JSON subprotocol messages", section_json_messages),
    ("Protobuf subprotocol schema", section_protobuf),
    ("Client connection lifecycle", section_lifecycle),
    ("Reliable sessions", section_reliable),
    ("Ack errors and close codes", section_errors),
    ("REST data plane", section_rest),
    ("Upstream event handlers", section_upstream),
    ("Conformance rules", section_conformance),
    ("Decisions", section_decisions),
)


def render() -> str:
    head = ("# specs: the protocols as data\n\n"
            "<!-- Generated by `python -m specs.render` from the specs modules; do not edit by hand. "
            "tests/conform/test_specs_readme.py fails when this file is stale. -->\n\n"
            "Everything below is rendered from the tables in this package: the server imports them, "
            "`specs/conform` checks any endpoint against them.\n\n")
    toc = "".join(f"- [{title}](#{title.lower().replace(' ', '-')})\n" for title, _ in SECTIONS)
    body = "".join(f"\n## {title}\n\n{fn()}" for title, fn in SECTIONS)
    return head + toc + body


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in args:
        if not README.exists() or README.read_text(encoding="utf-8") != text:
            print(f"{README} is stale: run python -m specs.render", file=sys.stderr)
            return 1
        return 0
    README.write_text(text, encoding="utf-8")
    print(f"wrote {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
