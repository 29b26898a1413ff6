"""The reliability harness (benchmarks/reliability.py, `./dev bench --reliability`) at CI size:
REST nesting, HTTP framing and token audience (issue 16's findings 2, 5 and 6) and reliable
clients across 50 socket aborts, each against a real `fabric serve` subprocess, through the
harness's Python API. The bursts, the fragment flood, the slow consumers and the churn soak
need Node or take minutes: they run in the harness itself. One server serves all four
(`shared_server=True`, with `public_endpoint` set to itself)."""

from __future__ import annotations

import pytest

from benchmarks import reliability

SCENARIOS = ["rest_nesting", "http_framing", "token_audience", "aborts"]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    outcomes = reliability.run(SCENARIOS, "tiny", out_dir=tmp_path_factory.mktemp("reliability"), progress=False,
                               shared_server=True)  # one server start (~1-4 s each) for all four
    return {o.key: o for o in outcomes}


@pytest.mark.parametrize("key", SCENARIOS)
def test_scenario_passes(outcomes, key):
    o = outcomes[key]
    assert o.error is None, f"{key} raised: {o.error}\n{o.raw.get('traceback', '')}"
    assert o.rows, f"{key} produced no rows"
    failed = [f"{r.scenario}: {r.figure}" for r in o.rows if r.ok is False]
    assert not failed, "\n".join(failed)
    assert not o.server_notes, f"the server printed tracebacks during {key}: {o.server_notes}"


def test_aborts_counted_and_nothing_lost(outcomes):
    raw = outcomes["aborts"].raw
    assert sum(c["aborts"] for c in raw["clients"]) >= reliability.SIZES["tiny"].aborts
    assert all(c["got"] == raw["published"] and c["dups"] == 0 for c in raw["clients"])
