"""json.reliable.webpubsub.azure.v1: sequence ids, acks, detached sessions, recovery."""

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fabric
from fabric.testing import ConnectionClosed, connect_in_process
from specs.errors import CloseCode
from tests.fabric_support import quick_config

from .client_support import ROLES

RELIABLE = "json.reliable.webpubsub.azure.v1"


def _config(**server):
    return quick_config(**server)


class Session:
    """A reliable client as the SDKs behave: dedupe by sequenceId, cumulative acks, recovery."""

    def __init__(self, fab, hub="r"):
        self.fab, self.hub = fab, hub
        self.client = None
        self.connection_id = self.token = None
        self.last_seq = 0
        self.data = []

    async def open(self):
        self.client = await connect_in_process(self.fab, self.hub, subprotocol=RELIABLE, roles=ROLES)
        connected = await self.client.receive_json()
        assert connected["event"] == "connected"
        self.connection_id, self.token = connected["connectionId"], connected["reconnectionToken"]
        assert self.token

    async def recover(self):
        self.client = await connect_in_process(
            self.fab, self.hub, subprotocol=RELIABLE, anonymous=True,
            query={"awps_connection_id": self.connection_id, "awps_reconnection_token": self.token})
        first = await self.client.receive_json()
        return first

    async def drop(self):
        """The TCP connection dies: no close frame."""
        await trio.aclose_forcefully(self.client.stream)

    async def read(self, n):
        while n:
            msg = await self.client.receive_json()
            if msg["type"] != "message":
                continue
            seq = msg["sequenceId"]
            if seq <= self.last_seq:
                continue  # a replayed duplicate: the SDKs drop these
            assert seq == self.last_seq + 1, (seq, self.last_seq)
            self.last_seq = seq
            self.data.append(msg["data"])
            n -= 1

    async def ack(self):
        await self.client.send_json({"type": "sequenceAck", "sequenceId": self.last_seq})


async def test_sequence_ids_and_recovery_replays_unacked_in_order():
    async with fabric.open_fabric(_config(), access_key="k") as fab:
        hub = fab.hub("r")
        s = Session(fab)
        await s.open()
        for i in range(5):
            await hub.send_to_connection(s.connection_id, i)
        await s.read(3)
        await s.ack()  # acks 1..3
        await s.read(2)  # 4, 5 read but not acked
        await s.drop()
        await trio.sleep(0.05)
        assert await hub.connection_exists(s.connection_id)  # the session is kept
        for i in range(5, 8):
            await hub.send_to_connection(s.connection_id, i)  # buffered while detached
        first = await s.recover()
        assert first == {"type": "system", "event": "connected", "userId": None,
                         "connectionId": s.connection_id, "reconnectionToken": s.token}
        await s.read(3)
        await hub.send_to_connection(s.connection_id, 8)  # live again
        await s.read(1)
        assert s.data == list(range(9))
        stats = fab.running_hubs()["r"].counters
        assert stats["sessions_recovered"] == 1


async def test_groups_and_user_survive_recovery():
    async with fabric.open_fabric(_config(), access_key="k") as fab:
        s = Session(fab)
        await s.open()
        await s.client.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
        assert (await s.client.receive_json())["success"]
        await s.drop()
        await trio.sleep(0.05)
        await fab.hub("r").send_to_group("g", "while away")
        await s.recover()
        await s.read(1)
        assert s.data == ["while away"]
        await s.client.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
        assert (await s.client.receive_json())["error"]["name"] == "Duplicate"  # ack memory kept


@pytest.mark.parametrize("tamper", ["token", "connection", "protocol"])
async def test_bad_recovery_is_accepted_then_closed_1008(tamper):
    async with fabric.open_fabric(_config(), access_key="k") as fab:
        s = Session(fab)
        await s.open()
        await s.drop()
        await trio.sleep(0.05)
        query = {"awps_connection_id": s.connection_id, "awps_reconnection_token": s.token}
        sub = RELIABLE
        if tamper == "token":
            query["awps_reconnection_token"] = s.token[:-2] + "AA"
        elif tamper == "connection":
            query["awps_connection_id"] = "not-a-session"
        else:
            sub = "json.webpubsub.azure.v1"
        c = await connect_in_process(fab, "r", subprotocol=sub, anonymous=True, query=query)
        assert await c.wait_closed() == CloseCode.SESSION_GONE
        # the real session is untouched by the failed attempt
        assert (await s.recover())["connectionId"] == s.connection_id


async def test_session_expires_after_the_window_and_fires_disconnected_once(autojump_clock):
    events = []

    class Handler(fabric.EventHandler):
        async def on_disconnected(self, ctx, reason):
            events.append(ctx.connection_id)

    async with fabric.open_fabric(_config(reconnect_window=30.0, keepalive_interval=5.0, idle_timeout=10.0),
                                  access_key="k", handlers={"r": Handler()}) as fab:
        s = Session(fab)
        await s.open()
        await s.drop()
        await trio.sleep(20)
        assert await fab.hub("r").connection_exists(s.connection_id) and events == []
        await trio.sleep(15)
        assert not await fab.hub("r").connection_exists(s.connection_id)
        assert events == [s.connection_id]
        c = await connect_in_process(fab, "r", subprotocol=RELIABLE, anonymous=True,
                                     query={"awps_connection_id": s.connection_id, "awps_reconnection_token": s.token})
        assert await c.wait_closed() == CloseCode.SESSION_GONE


async def test_buffer_overflow_discards_the_session():
    async with fabric.open_fabric(_config(reliable_buffer_messages=10), access_key="k") as fab:
        s = Session(fab)
        await s.open()
        for i in range(11):
            await fab.hub("r").send_to_connection(s.connection_id, i)
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await s.client.receive_json()
        assert info.value.code == CloseCode.SESSION_GONE
        c = await connect_in_process(fab, "r", subprotocol=RELIABLE, anonymous=True,
                                     query={"awps_connection_id": s.connection_id, "awps_reconnection_token": s.token})
        assert await c.wait_closed() == CloseCode.SESSION_GONE


async def test_bogus_and_backward_acks_are_harmless():
    async with fabric.open_fabric(_config(), access_key="k") as fab:
        hub = fab.hub("r")
        s = Session(fab)
        await s.open()
        for i in range(3):
            await hub.send_to_connection(s.connection_id, i)
        await s.read(3)
        await s.client.send_json({"type": "sequenceAck", "sequenceId": 99})  # never sent
        await s.client.send_json({"type": "sequenceAck", "sequenceId": 1})  # backwards
        await s.client.send_json({"type": "ping"})
        assert await s.client.receive_json() == {"type": "pong"}
        connection = fab.running_hubs()["r"].connections[s.connection_id]
        assert len(connection.replay) == 0 and connection.replay.bogus_acks == 1


async def test_client_close_ends_the_session_at_once():
    async with fabric.open_fabric(_config(), access_key="k") as fab:
        s = Session(fab)
        await s.open()
        await s.client.aclose()
        with trio.fail_after(5):
            while await fab.hub("r").connection_exists(s.connection_id):
                await trio.sleep(0.01)


step = st.one_of(
    st.tuples(st.just("publish"), st.integers(1, 5)),
    st.tuples(st.just("read_ack"), st.integers(0, 5)),
    st.tuples(st.just("drop_recover"), st.floats(0.1, 50.0)),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, min_size=1, max_size=15))
async def test_exactly_once_in_order_across_drops(steps, autojump_clock):
    """While the session lives the client sees every message once, in order, after dedupe;
    after expiry it gets a clean 1008 and can start a fresh connection."""
    window = 30.0
    if True:
        async with fabric.open_fabric(_config(reconnect_window=window, keepalive_interval=1000.0,
                                              idle_timeout=2000.0), access_key="k") as fab:
            hub = fab.hub("r")
            s = Session(fab)
            await s.open()
            sent = 0
            for kind, arg in steps:
                if kind == "publish":
                    for _ in range(arg):
                        await hub.send_to_connection(s.connection_id, sent)
                        sent += 1
                elif kind == "read_ack":
                    await s.read(min(arg, sent - len(s.data)))
                    await s.ack()
                else:
                    await s.drop()
                    await trio.sleep(arg)
                    if arg < window:
                        await s.recover()
                    else:
                        c = await connect_in_process(
                            fab, "r", subprotocol=RELIABLE, anonymous=True,
                            query={"awps_connection_id": s.connection_id, "awps_reconnection_token": s.token})
                        assert await c.wait_closed() == CloseCode.SESSION_GONE
                        s = Session(fab)
                        await s.open()
                        sent = 0
            await s.read(sent - len(s.data))
            assert s.data == list(range(sent))


def test_session_table_is_consistent_with_the_lifecycle():
    from specs import reliable

    names = {s.name for s in reliable.SESSION_STATES}
    for t in reliable.SESSION_TRANSITIONS:
        assert t.source in names and t.target in names
    md = reliable.render_markdown()
    assert "dropped-recoverable" in md and "detached" in md


async def test_messages_past_their_ttl_are_not_replayed(autojump_clock):
    async with fabric.open_fabric(_config(reconnect_window=60.0, keepalive_interval=100.0, idle_timeout=200.0),
                                  access_key="k") as fab:
        hub = fab.hub("r")
        s = Session(fab)
        await s.open()
        await s.drop()
        await trio.sleep(0.1)
        await hub.send_to_connection(s.connection_id, "short", message_ttl_seconds=5)
        await hub.send_to_connection(s.connection_id, "forever")
        await hub.send_to_connection(s.connection_id, "long", message_ttl_seconds=300)
        await trio.sleep(10)  # the client is away longer than the first message's TTL
        await s.recover()
        got = []
        for _ in range(2):
            msg = await s.client.receive_json()
            got.append((msg["sequenceId"], msg["data"]))
        assert got == [(2, "forever"), (3, "long")]  # id 1 expired: a gap, as the SDKs accept
        assert fab.running_hubs()["r"].counters["expired_not_replayed"] == 1


async def test_a_session_that_expires_ends_quietly_and_is_freed(autojump_clock, caplog):
    # Found by a fuzz run (a regression of the connection's self-reference clean-up): the end
    # of a detached session set ``farewell`` on its DetachedTransport, which had no such slot,
    # so every session that expired unrecovered crashed its task with a traceback.
    async with fabric.open_fabric(_config(reconnect_window=5.0, keepalive_interval=1000.0, idle_timeout=2000.0),
                                  access_key="k") as fab:
        s = Session(fab)
        await s.open()
        await s.drop()
        await trio.sleep(10.0)
        assert fab.running_hubs()["r"].connections == {}
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")], \
        [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


async def test_a_recovery_while_the_old_socket_is_open_closes_it_with_1008():
    # Found by a fuzz run: the old socket was reset without a close frame, so a client still
    # reading it saw 1006, recovered in turn and took the session back (two clients sharing
    # one session stole it from each other). 1008 tells the SDKs to start a new connection.
    async with fabric.open_fabric(_config(reconnect_window=30.0, keepalive_interval=1000.0, idle_timeout=2000.0),
                                  access_key="k") as fab:
        s = Session(fab)
        await s.open()
        old = s.client
        first = await s.recover()
        assert first["event"] == "connected" and first["connectionId"] == s.connection_id
        assert await old.wait_closed() == CloseCode.SESSION_GONE
        await fab.hub("r").send_to_connection(s.connection_id, "after")
        await s.read(1)
        assert s.data == ["after"]
