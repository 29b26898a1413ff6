"""The delivery contract, as a Hypothesis property over random schedules.

Operations: connect, join, leave, concurrent bursts from several publishers, disconnect.
After each operation settles we know exactly who is a member; a burst must reach every
member in each publisher's order, once, and nobody else (noEcho honoured). Runs through
the in-process client and through real TCP sockets.
"""

import itertools

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fabric
from fabric.config import load_config
from fabric.testing import client_target, connect_in_process, connect_tcp
from tests.webpubsub.client_support import ROLES

GROUPS = ("g0", "g1")
MAX_CLIENTS = 5

op = st.one_of(
    st.tuples(st.just("connect")),
    st.tuples(st.just("join"), st.integers(0, MAX_CLIENTS - 1), st.sampled_from(GROUPS)),
    st.tuples(st.just("leave"), st.integers(0, MAX_CLIENTS - 1), st.sampled_from(GROUPS)),
    st.tuples(st.just("disconnect"), st.integers(0, MAX_CLIENTS - 1)),
    st.tuples(st.just("burst"), st.lists(
        st.tuples(st.integers(0, MAX_CLIENTS - 1), st.sampled_from(GROUPS), st.integers(1, 6), st.booleans()),
        min_size=1, max_size=3)),
)


async def _run_schedule(ops, transport):
    async with fabric.open_fabric(load_config(None, env={}), access_key="k") as fab:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(fab.serve, "127.0.0.1", 0) if transport == "tcp" else None
            clients: dict[int, object] = {}
            membership: dict[int, set[str]] = {}
            counter = itertools.count()

            async def open_client():
                if transport == "tcp":
                    token = fab.hub("p").get_client_access_token(roles=ROLES)["token"]
                    c = await connect_tcp("127.0.0.1", port, client_target("p", token), ["json.webpubsub.azure.v1"])
                else:
                    c = await connect_in_process(fab, "p", roles=ROLES)
                c.cid = (await c.receive_json())["connectionId"]
                return c

            async def request(c, msg):
                ack_id = next(counter)
                await c.send_json({**msg, "ackId": ack_id})
                reply = await c.receive_json()
                # settled schedules leave nothing else in flight
                assert reply == {"type": "ack", "ackId": ack_id, "success": True}, reply

            next_id = 0
            for o in ops:
                kind = o[0]
                if kind == "connect":
                    if len(clients) < MAX_CLIENTS:
                        clients[next_id] = await open_client()
                        membership[next_id] = set()
                        next_id += 1
                    continue
                live = sorted(clients)
                if not live:
                    continue
                if kind in ("join", "leave"):
                    k = live[o[1] % len(live)]
                    await request(clients[k], {"type": f"{kind}Group", "group": o[2]})
                    (membership[k].add if kind == "join" else membership[k].discard)(o[2])
                elif kind == "disconnect":
                    k = live[o[1] % len(live)]
                    await clients.pop(k).aclose()
                    del membership[k]
                elif kind == "burst":
                    sends = [(live[p % len(live)], g, n, no_echo) for p, g, n, no_echo in o[1]]
                    expected: dict[int, dict[tuple[int, str], list[int]]] = {k: {} for k in clients}
                    seq = itertools.count()
                    plan = []
                    for pub, g, n, no_echo in sends:
                        msgs = [next(seq) for _ in range(n)]
                        plan.append((pub, g, msgs, no_echo))
                        for k in clients:
                            if g in membership[k] and not (no_echo and k == pub):
                                expected[k].setdefault((pub, g), []).extend(msgs)
                    # publishers sending concurrently; each one's own messages in order
                    by_pub: dict[int, list] = {}
                    for pub, g, msgs, no_echo in plan:
                        by_pub.setdefault(pub, []).append((g, msgs, no_echo))

                    async def publish(pub, items):
                        for g, msgs, no_echo in items:
                            for m in msgs:
                                await clients[pub].send_json({"type": "sendToGroup", "group": g, "noEcho": no_echo,
                                                              "dataType": "json", "data": {"p": pub, "m": m}})

                    async with trio.open_nursery() as n2:
                        for pub, items in by_pub.items():
                            n2.start_soon(publish, pub, items)
                    for k, c in clients.items():
                        want = sum(len(v) for v in expected[k].values())
                        got: dict[tuple[int, str], list[int]] = {}
                        for _ in range(want):
                            msg = await c.receive_json(timeout=10)
                            assert msg["type"] == "message", msg
                            got.setdefault((msg["data"]["p"], msg["group"]), []).append(msg["data"]["m"])
                        assert got == expected[k]
            # nothing extra is pending for anyone: a ping is answered next
            for c in clients.values():
                await c.send_json({"type": "ping"})
                assert await c.receive_json() == {"type": "pong"}
            for c in clients.values():
                await c.aclose()
            nursery.cancel_scope.cancel()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=25))
async def test_delivery_contract_in_process(ops):
    await _run_schedule([("connect",), ("connect",), *ops], "memory")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=20))
async def test_delivery_contract_over_tcp(ops):
    await _run_schedule([("connect",), ("connect",), *ops], "tcp")
