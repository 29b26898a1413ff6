"""Hypothesis: random interleavings of joins, leaves, broadcasts and dropped clients keep
per-sender order, deliver nothing twice, lose nothing for a client that stayed in the room,
and deliver nothing to a client that was never in it."""

from __future__ import annotations

import json

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fabric
from fabric.testing import ConnectionClosed
from tests.socketio.inprocess import RawSocket, sio_config

CLIENTS = 4
ROOMS = ("a", "b")
SENDERS = 2

ops = st.lists(st.one_of(
    st.tuples(st.just("join"), st.integers(0, CLIENTS - 1), st.sampled_from(ROOMS)),
    st.tuples(st.just("leave"), st.integers(0, CLIENTS - 1), st.sampled_from(ROOMS)),
    st.tuples(st.just("emit"), st.integers(0, SENDERS - 1), st.sampled_from(ROOMS)),
    st.tuples(st.just("emit_many"), st.integers(0, SENDERS - 1), st.sampled_from(ROOMS)),
    st.tuples(st.just("drop"), st.integers(0, CLIENTS - 1), st.just("")),
    st.tuples(st.just("yield"), st.just(0), st.just("")),
), max_size=40)


async def _drain(client: RawSocket) -> list:
    out = []
    while True:
        message = await client.receive(timeout=5)
        event = json.loads(message[2:])
        if event[0] == "done":
            return out
        out.append(tuple(event[1]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=ops)
async def test_interleavings_keep_per_sender_order(script):
    async with fabric.open_fabric(sio_config(ping_interval=3600.0, ping_timeout=60.0), access_key="k") as fab:
        sio = fab.socketio()
        clients: list[RawSocket] = []
        sids: list[str] = []
        for _ in range(CLIENTS):
            c = await RawSocket.open(fab)
            sids.append((await c.connect())["sid"])
            clients.append(c)
        generation = [0] * CLIENTS  # a dropped client comes back as a new one
        member = {(i, 0): set() for i in range(CLIENTS)}  # (client, generation) -> rooms now
        ever = {(i, 0): set() for i in range(CLIENTS)}  # rooms ever joined since the emit (see below)
        emitted = []  # (sender, seq, room, members_then, snapshot index)
        history = []  # membership events in order: (key, room, "join"/"leave")
        seqs = [0] * SENDERS
        for op, who, room in script:
            if op in ("join", "leave"):
                key = (who, generation[who])
                if op == "join":
                    await sio.enter_room(sids[who], room)
                    member[key].add(room)
                else:
                    await sio.leave_room(sids[who], room)
                    member[key].discard(room)
                history.append((key, room, op))
            elif op in ("emit", "emit_many"):
                for _ in range(3 if op == "emit_many" else 1):
                    seqs[who] += 1
                    then = {k for k, rooms in member.items() if room in rooms}
                    emitted.append((who, seqs[who], room, then, len(history)))
                    await sio.emit("news", [who, seqs[who]], room=room)
            elif op == "drop":
                key = (who, generation[who])
                await clients[who].aclose()
                history.append((key, None, "drop"))
                member[key] = set()
                generation[who] += 1
                c = await RawSocket.open(fab)
                sids[who] = (await c.connect())["sid"]
                clients[who] = c
                member[(who, generation[who])] = set()
            else:
                await trio.sleep(0)
        await trio.testing.wait_all_tasks_blocked()
        received = {}
        for i, c in enumerate(clients):
            await sio.emit("done", to=sids[i])
            received[(i, generation[i])] = await _drain(c)

        for key, got in received.items():
            # per-sender order, no duplicates
            for sender in range(SENDERS):
                mine = [seq for s, seq in got if s == sender]
                assert mine == sorted(set(mine)), (key, sender, got)
            got_set = set(got)
            for sender, seq, room, then, at in emitted:
                later = [h for h in history[at:] if h[0] == key and (h[1] == room or h[2] == "drop")]
                if key in then and not later:
                    assert (sender, seq) in got_set, (key, sender, seq, room, got)  # stayed: never lost
                joined_later = any(h[2] == "join" for h in later)
                if key not in then and not joined_later:
                    assert (sender, seq) not in got_set, (key, sender, seq, room, got)  # never a member
        for c in clients:
            try:
                await c.aclose()
            except ConnectionClosed:
                pass
