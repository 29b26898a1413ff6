"""``[server] gc_young_threshold``: applied while a fabric runs, restored after it, and 0
leaves the interpreter's collector alone (docs/design.md "Garbage collection")."""

from __future__ import annotations

import gc

import pytest

import fabric
from fabric.config import ConfigError, loads_config


async def test_the_threshold_applies_while_the_fabric_runs_and_is_restored():
    before = gc.get_threshold()
    config = loads_config('[server]\ngc_young_threshold = 12345\n', source="test", env={})
    async with fabric.open_fabric(config):
        assert gc.get_threshold() == (12345, *before[1:])
    assert gc.get_threshold() == before


async def test_the_default_raises_it_and_zero_leaves_it_alone():
    before = gc.get_threshold()
    async with fabric.open_fabric(loads_config("", source="test", env={})):
        assert gc.get_threshold()[0] == 10_000
    config = loads_config('[server]\ngc_young_threshold = 0\n', source="test", env={})
    async with fabric.open_fabric(config):
        assert gc.get_threshold() == before
    assert gc.get_threshold() == before


def test_a_negative_threshold_is_refused():
    with pytest.raises(ConfigError, match="gc_young_threshold"):
        loads_config('[server]\ngc_young_threshold = -1\n', source="test", env={})
