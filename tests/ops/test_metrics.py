"""GET /metrics: after a scripted workload, every family says what the workload did."""

from __future__ import annotations

import attrs
import pytest
import trio

import fabric
from fabric.config import MetricsConfig
from fabric.core import metrics as m
from fabric.core.counters import HUB_COUNTERS, WEBHOOK_COUNTERS
from fabric.operations import SOCKETIO_FAMILIES
from tests.appserver.rest.rest_support import KEY, RestClient, connect
from tests.fabric_support import quick_config

from .ops_support import parse, scrape, total, value

ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")


def config(**metrics):
    return attrs.evolve(quick_config(), metrics=MetricsConfig(**{"min_interval": 0.0, **metrics}))


async def test_families_after_a_scripted_workload():
    async with fabric.open_fabric(config(), access_key=KEY) as fab:
        rest = RestClient(fab)
        a = await connect(fab, "m", user_id="ua", roles=ROLES)
        b = await connect(fab, "m", user_id="ub", roles=ROLES)
        c = await connect(fab, "m", user_id="uc", roles=ROLES, subprotocol="protobuf.webpubsub.azure.v1")
        for i, client in enumerate((a, b)):
            await client.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
            assert (await client.receive_json())["success"]
        # five 9-byte messages to a group of two (a and b): 10 deliveries, 90 bytes
        for i in range(5):
            await a.send_json({"type": "sendToGroup", "group": "g", "dataType": "text", "data": f"message-{i}"})
        for _ in range(5):
            await a.receive_json()
            await b.receive_json()
        # one noEcho message: delivered to b only
        await a.send_json({"type": "sendToGroup", "group": "g", "dataType": "text", "data": "message-x", "noEcho": True})
        await b.receive_json()
        # REST: two sends to all (3 recipients each), one to a user, one bad request
        for _ in range(2):
            assert (await rest.send("/api/hubs/m/:send", "hello")).status == 202
        assert (await rest.send("/api/hubs/m/users/ub/:send", "hi")).status == 202
        assert (await rest.send("/api/hubs/m/:send", "x", authorization="Bearer nope")).status == 401
        for client in (a, b, b):
            await client.receive()
        await a.aclose()
        with trio.fail_after(5):
            while len(fab.running_hubs()["m"].connections) > 2:
                await trio.sleep(0.01)

        status, headers, text = await scrape(fab)
        assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
        samples, helps, types = parse(text)

        assert value(samples, "fabric_connections", hub="m", protocol="json") == 1
        assert value(samples, "fabric_connections", hub="m", protocol="protobuf") == 1
        assert value(samples, "fabric_connections_opened_total", hub="m", protocol="json") == 2
        assert value(samples, "fabric_connections_closed_total", hub="m", protocol="json", reason="1000") == 1
        assert value(samples, "fabric_users", hub="m") == 2
        assert value(samples, "fabric_groups", hub="m") == 1
        assert value(samples, "fabric_publications_total", hub="m", kind="group") == 6
        assert value(samples, "fabric_publications_total", hub="m", kind="hub") == 2
        assert value(samples, "fabric_publications_total", hub="m", kind="user") == 1
        assert value(samples, "fabric_published_bytes_total", hub="m", kind="group") == 54
        assert value(samples, "fabric_deliveries_total", hub="m", kind="group") == 11
        assert value(samples, "fabric_delivered_bytes_total", hub="m", kind="group") == 99
        assert value(samples, "fabric_deliveries_total", hub="m", kind="hub") == 6
        assert value(samples, "fabric_deliveries_total", hub="m", kind="user") == 1
        # a sent a join and 6 messages before closing, b a join: closed and open connections both count
        assert total(samples, "fabric_client_messages_received_total", hub="m") == 8
        assert total(samples, "fabric_client_bytes_received_total", hub="m") > 0
        assert value(samples, "fabric_rest_requests_total", operation="sendToAll", status="202") == 2
        assert value(samples, "fabric_rest_requests_total", operation="sendToUser", status="202") == 1
        assert value(samples, "fabric_rest_requests_total", operation="sendToAll", status="401") == 1
        assert value(samples, "fabric_rest_request_seconds_count", operation="sendToAll") == 3
        assert value(samples, "fabric_rest_request_seconds_bucket", operation="sendToAll", le="+Inf") == 3
        assert value(samples, "fabric_hub_connections_opened_total", hub="m") == 3
        assert value(samples, "fabric_outbox_queued_messages", hub="m") >= 0
        assert value(samples, "fabric_mailbox_queued", hub="m") == 0
        assert value(samples, "fabric_broker_received_total", hub="m", broker="memory") >= 9
        # every sample belongs to a family with HELP and TYPE
        for name in samples:
            family = name
            for suffix in ("_bucket", "_sum", "_count"):
                if name.endswith(suffix) and name[: -len(suffix)] in types:
                    family = name[: -len(suffix)]
            assert family in helps and family in types, name
        await b.aclose()
        await c.aclose()


def test_every_counter_catalogue_has_families():
    for catalogue, prefix in ((HUB_COUNTERS, "fabric_hub_"), (WEBHOOK_COUNTERS, "fabric_upstream_")):
        families = m.counter_families(prefix, catalogue)
        for spec in catalogue:
            assert families[spec.name].help == spec.help
            assert families[spec.name].name == f"{prefix}{spec.name}_total"
    assert SOCKETIO_FAMILIES
    names = [f.name for f in m.FAMILIES.values()]
    for families in (m.counter_families("fabric_hub_", HUB_COUNTERS), m.counter_families("fabric_upstream_", WEBHOOK_COUNTERS),
                     SOCKETIO_FAMILIES):
        names += [f.name for f in families.values()]
    assert len(names) == len(set(names)), "two families share a name"


def test_undeclared_family_or_wrong_labels_fail():
    with pytest.raises(KeyError, match="not a declared metric family"):
        m.counter("fabric_typo_total")
    series = m.counter("fabric_rest_requests_total")
    with pytest.raises(ValueError):
        series.inc(("only-one-label",))


def test_series_are_bounded():
    series = m.counter("fabric_rest_requests_total")
    for i in range(m.MAX_SERIES + 50):
        series.inc((f"op{i}", "200"))
    assert len(series.values) == m.MAX_SERIES + 1
    assert series.get((m.OVERFLOW, m.OVERFLOW)) == 50
    exposition = m.Exposition()
    exposition.add_counter(series)
    samples, _, _ = parse(exposition.render().decode())
    assert value(samples, "fabric_metrics_series_overflow_total", family="fabric_rest_requests_total") == 50


def test_label_values_are_escaped():
    exposition = m.Exposition()
    exposition.sample(m.FAMILIES["fabric_groups"], ('we"ird\\hub\nname',), 1)
    text = exposition.render().decode()
    assert 'fabric_groups{hub="we\\"ird\\\\hub\\nname"} 1' in text


async def test_bearer_token_protects_metrics():
    token = "metrics-token-0123456789"
    async with fabric.open_fabric(config(token=token), access_key=KEY) as fab:
        assert (await scrape(fab))[0] == 401
        assert (await scrape(fab, "wrong-token-0123456789"))[0] == 401
        status, headers, _ = await scrape(fab)
        assert status == 401
        status, _, text = await scrape(fab, token)
        assert status == 200 and "fabric_metrics_render_seconds" in text


async def test_disabled_metrics_answer_404_and_count_nothing():
    async with fabric.open_fabric(config(enabled=False), access_key=KEY) as fab:
        assert (await scrape(fab))[0] == 404
        client = await connect(fab, "m", roles=ROLES)
        await client.send_json({"type": "joinGroup", "group": "g"})
        await client.send_json({"type": "sendToGroup", "group": "g", "data": "x", "dataType": "text"})
        await client.receive_json()
        assert fab.running_hubs()["m"].telemetry.fanout is None
        await client.aclose()


async def test_a_scrape_flood_renders_once_per_interval():
    async with fabric.open_fabric(config(min_interval=60.0), access_key=KEY) as fab:
        client = await connect(fab, "m")
        results = []

        async def one():
            results.append(await scrape(fab))

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(one)
        assert all(status == 200 for status, _, _ in results)
        assert len({text for _, _, text in results}) == 1
        assert fab.ops.scraper.renders == 1 and fab.ops.scraper.served == 50
        # the connection carried on meanwhile
        await client.send_json({"type": "ping"})
        assert (await client.receive_json())["type"] == "pong"
        await client.aclose()


async def test_collection_yields_between_chunks_of_connections(monkeypatch):
    monkeypatch.setattr(m, "CHUNK", 2)
    async with fabric.open_fabric(config(), access_key=KEY) as fab:
        clients = [await connect(fab, "m", user_id=f"u{i}") for i in range(5)]
        status, _, text = await scrape(fab)
        samples, _, _ = parse(text)
        assert value(samples, "fabric_connections", hub="m", protocol="json") == 5
        for client in clients:
            await client.aclose()
