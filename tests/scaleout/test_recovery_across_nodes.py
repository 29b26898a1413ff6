"""A reliable session recovers on another node (fabric.webpubsub.handover): same connection
id, groups, user, ack memory and every unacked message, while a publisher keeps sending;
and an unknown session or a wrong token is still the documented 1008."""

import pytest
import trio

from fabric.testing import connect_in_process
from specs.errors import CloseCode
from tests.webpubsub.client_support import ROLES

RELIABLE = "json.reliable.webpubsub.azure.v1"
pytestmark = pytest.mark.slow


class Session:
    """A reliable client as the SDKs behave (dedupe by sequenceId, cumulative acks), whose
    recoveries may go to any node."""

    def __init__(self, hub="r"):
        self.hub = hub
        self.client = None
        self.connection_id = self.token = None
        self.last_seq = 0
        self.data = []

    async def open(self, fab, user_id="alice"):
        self.client = await connect_in_process(fab, self.hub, subprotocol=RELIABLE, roles=ROLES, user_id=user_id)
        connected = await self.client.receive_json()
        assert connected["event"] == "connected"
        self.connection_id, self.token = connected["connectionId"], connected["reconnectionToken"]

    async def recover(self, fab):
        self.client = await connect_in_process(
            fab, self.hub, subprotocol=RELIABLE, anonymous=True,
            query={"awps_connection_id": self.connection_id, "awps_reconnection_token": self.token})
        return await self.client.receive_json()

    async def drop(self):
        await trio.aclose_forcefully(self.client.stream)

    async def read(self, n, timeout=10.0):
        with trio.fail_after(timeout):
            while n:
                msg = await self.client.receive_json()
                if msg["type"] != "message":
                    continue
                seq = msg["sequenceId"]
                if seq <= self.last_seq:
                    continue
                assert seq == self.last_seq + 1, (seq, self.last_seq, msg)
                self.last_seq = seq
                self.data.append(msg["data"])
                n -= 1

    async def ack(self):
        await self.client.send_json({"type": "sequenceAck", "sequenceId": self.last_seq})


async def test_recovery_on_another_node_keeps_everything(nodes):
    async with nodes(2) as (a, b):
        s = Session()
        await s.open(a)
        await s.client.send_json({"type": "joinGroup", "group": "g", "ackId": 7})
        assert (await s.client.receive_json())["success"]
        rest = b.hub("r")
        await rest.send_to_group("g", 0)
        await s.read(1)
        await s.ack()
        await rest.send_to_group("g", 1)
        await s.read(1)  # read, not acked: replayed after the move
        await s.drop()
        await trio.sleep(0.05)
        await rest.send_to_group("g", 2)  # buffered on A while detached
        await rest.send_to_user("alice", 3)
        first = await s.recover(b)
        assert first == {"type": "system", "event": "connected", "userId": "alice",
                         "connectionId": s.connection_id, "reconnectionToken": s.token}
        await s.read(2)
        assert s.data[:2] == [0, 1] and sorted(s.data[2:]) == [2, 3]  # a group and a user send: no order between them
        assert a.hub("r").statistics()["counters"]["sessions_handed_over"] == 1
        assert b.hub("r").statistics()["counters"]["sessions_taken_over"] == 1
        assert await a.hub("r").list_connections_in_group("g") == [{"connectionId": s.connection_id, "userId": "alice"}]
        await a.hub("r").send_to_group("g", 4)  # now on B: reached from anywhere
        await s.read(1)
        await s.client.send_json({"type": "joinGroup", "group": "g", "ackId": 7})
        assert (await s.client.receive_json())["error"]["name"] == "Duplicate"  # ack memory moved too
        assert s.connection_id not in a.running_hubs()["r"].connections


async def test_twenty_moves_under_a_steady_stream(nodes):
    async with nodes(3) as fabs:
        s = Session()
        await s.open(fabs[0])
        await s.client.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
        assert (await s.client.receive_json())["success"]
        publisher = fabs[1].hub("r")
        sent = 0
        done = trio.Event()

        async def publish():
            nonlocal sent
            while not done.is_set():
                await publisher.send_to_group("g", sent)
                sent += 1
                await trio.sleep(0.002)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish)
            for move in range(20):
                await s.read(5)
                if move % 2:
                    await s.ack()
                await s.drop()
                await trio.sleep(0.01)
                first = await s.recover(fabs[(move + 1) % 3])
                assert first["event"] == "connected" and first["connectionId"] == s.connection_id, first
            done.set()
        await publisher.send_to_group("g", "end")
        while not s.data or s.data[-1] != "end":
            await s.read(1)
        assert s.data == [*range(sent), "end"]


@pytest.mark.parametrize("tamper", ["token", "connection", "protocol"])
async def test_bad_recovery_on_another_node_is_1008(nodes, tamper):
    async with nodes(2) as (a, b):
        s = Session()
        await s.open(a)
        await s.drop()
        await trio.sleep(0.05)
        query = {"awps_connection_id": s.connection_id, "awps_reconnection_token": s.token}
        subprotocol = RELIABLE
        if tamper == "token":
            query["awps_reconnection_token"] = "forged"
        elif tamper == "connection":
            query["awps_connection_id"] = "not-a-session"
        else:
            subprotocol = "protobuf.reliable.webpubsub.azure.v1"
        client = await connect_in_process(b, "r", subprotocol=subprotocol, anonymous=True, query=query)
        assert await client.wait_closed() == CloseCode.POLICY_VIOLATION
        # the real session is untouched: it still recovers (on B) afterwards
        first = await s.recover(b)
        assert first["connectionId"] == s.connection_id
