"""``specs/README.md`` is rendered from the specs tables (``python -m specs.render``) and must
not go stale: change a table, re-render, commit both."""

from __future__ import annotations

from specs import render


def test_specs_readme_is_rendered_from_the_tables() -> None:
    text = render.render()
    assert render.README.exists(), "specs/README.md is missing: run python -m specs.render"
    assert render.README.read_text(encoding="utf-8") == text, \
        "specs/README.md is stale: run python -m specs.render and commit it"


def test_render_is_deterministic_and_has_the_diagrams() -> None:
    text = render.render()
    assert text == render.render()
    assert text.count("```mermaid") == 2 and "stateDiagram-v2" in text
    for title, _ in render.SECTIONS:
        assert f"\n## {title}\n" in text


def test_every_decision_is_rendered_once() -> None:
    text = render.render().split("\n## Decisions\n", 1)[1]
    ids = [d.id for _, d in render.all_decisions()]
    assert len(ids) == len(set(ids)), "decision ids must be unique across specs"
    for i in ids:
        assert text.count(f"| `{i}` |") == 1, i
