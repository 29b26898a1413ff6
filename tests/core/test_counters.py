"""Declared counters: no typo can invent a metric; the webhook catalogue covers every failure."""

import pytest

from fabric.core.counters import HUB_COUNTERS, WEBHOOK_COUNTERS, Counters
from specs.upstream import Failure


def test_unknown_counter_is_an_error_and_known_ones_count():
    counters = Counters(HUB_COUNTERS)
    counters["lagged"] += 2
    assert counters["lagged"] == 2 and counters.as_dict()["connections_opened"] == 0
    with pytest.raises(KeyError, match="not a declared counter"):
        counters["laggd"] += 1


def test_webhook_catalogue_has_a_row_per_failure_and_unique_names():
    names = [c.name for c in WEBHOOK_COUNTERS]
    assert {f"failed_{f.value}" for f in Failure} <= set(names)
    assert len(names) == len(set(names)) and len(HUB_COUNTERS) == len({c.name for c in HUB_COUNTERS})
    assert all(c.help for c in (*HUB_COUNTERS, *WEBHOOK_COUNTERS))
