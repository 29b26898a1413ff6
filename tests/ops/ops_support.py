"""Helpers for the operations tests: a Prometheus text parser and an in-process scrape."""

from __future__ import annotations

import re

from tests.appserver.rest.rest_support import RestClient

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> tuple[dict[str, dict[frozenset, float]], dict[str, str], dict[str, str]]:
    """(samples by name then label set, HELP by family, TYPE by family); raises on a bad line."""
    samples: dict[str, dict[frozenset, float]] = {}
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# HELP "):
            name, _, text_ = line[7:].partition(" ")
            assert name not in helps, f"HELP twice for {name}"
            helps[name] = text_
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("counter", "gauge", "histogram"), line
            types[name] = kind
            continue
        assert not line.startswith("#"), line
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        key = frozenset(_LABEL.findall(labels or ""))
        assert key not in samples.setdefault(name, {}), f"duplicate sample {line!r}"
        samples[name][key] = float(value)
    return samples, helps, types


def value(samples, name: str, **labels: str) -> float:
    """The sample with exactly these labels (0 if absent)."""
    return samples.get(name, {}).get(frozenset(labels.items()), 0.0)


def total(samples, name: str, **labels: str) -> float:
    """The sum of every sample whose labels include these."""
    want = set(labels.items())
    return sum(v for k, v in samples.get(name, {}).items() if want <= set(k))


async def scrape(fab, token: str | None = None):
    """GET /metrics through the real HTTP front; (status, headers, body text)."""
    headers = [("Host", "fabric.local")]
    if token is not None:
        headers.append(("Authorization", f"Bearer {token}"))
    response = await RestClient(fab).raw_request("GET", "/metrics", headers)
    return response.status, response.headers, response.body.decode()
