"""A group publication is delivered in place when the group's actor is idle with nothing
queued, and never overtakes one still in the actor's mailbox (per-publisher order).

The members are recording stand-ins for connections (a unit test of the hub); the hub, its
broker and its group actors are the real ones.
"""

import trio

import fabric
from fabric.config import load_config
from fabric.core import hub as hub_module
from fabric.core.payload import Payload
from fabric.core.publication import Publication
from fabric.testing import client_target, connect_tcp
from tests.webpubsub.client_support import ROLES


class Recorder:
    def __init__(self, connection_id: str) -> None:
        self.connection_id = connection_id
        self.user_id = None
        self.groups: set[str] = set()
        self.got: list[str] = []

    def deliver_nowait(self, publication: Publication) -> None:
        self.got.append(publication.payload.body.decode())


def _pub(text: str) -> Publication:
    return Publication("group", Payload.text(text), group="g", sender_id="publisher")


async def _too_many_for_in_place(hub, first: Recorder | None = None) -> list[Recorder]:
    """One member more than in-place delivery serves, joined to "g" (``first`` first, if
    given): the group's publications go through its actor."""
    members = [first or Recorder("m0")] + [Recorder(f"m{i}") for i in range(1, hub_module.INLINE_MAX_MEMBERS + 1)]
    for member in members:
        await hub.join_group(member, "g")
    return members


async def _with_hub(test) -> None:
    async with fabric.open_fabric(load_config(None, env={}), access_key="k") as fab:
        await test(await fab.get_hub("p"))


async def test_idle_actor_publication_delivered_in_place():
    async def test(hub):
        member = Recorder("m")
        await hub.join_group(member, "g")
        await hub.publish(_pub("1"))  # no checkpoint on this path: delivered before it returns
        assert member.got == ["1"]
        await hub.publish(_pub("2"))
        assert member.got == ["1", "2"]
        assert hub.groups["g"].delivered == 2 and hub.groups["g"].queued == 0

    await _with_hub(test)


async def test_publication_never_overtakes_one_queued_for_the_actor():
    async def test(hub):
        members = await _too_many_for_in_place(hub)
        first = members[0]
        await hub.publish(_pub("1"))  # too many members to deliver in place: queued
        assert first.got == [] and hub.groups["g"].queued == 1
        for member in members[1:]:
            await hub.leave_group(member, "g")
        # Small again, but "1" still waits in the mailbox: "2" must queue behind it.
        await hub.publish(_pub("2"))
        assert first.got == [] and hub.groups["g"].queued == 2
        while hub.groups["g"].queued:
            await trio.lowlevel.checkpoint()
        assert first.got == ["1", "2"]
        await hub.publish(_pub("3"))  # idle again: in place
        assert first.got == ["1", "2", "3"]

    await _with_hub(test)


async def test_flush_behind_queued_publication_then_in_place():
    async def test(hub):
        members = await _too_many_for_in_place(hub)
        await hub.publish(_pub("1"))
        await hub.flush_groups(members[0])  # returns once "1" was delivered
        assert members[0].got == ["1"] and hub.groups["g"].queued == 0

    await _with_hub(test)


async def test_sender_in_group_gets_its_ack_before_the_group_message():
    async with fabric.open_fabric(load_config(None, env={}), access_key="k") as fab:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(fab.serve, "127.0.0.1", 0)
            token = fab.hub("p").get_client_access_token(roles=ROLES)["token"]
            client = await connect_tcp("127.0.0.1", port, client_target("p", token), ["json.webpubsub.azure.v1"])
            await client.receive_json()  # connected
            await client.send_json({"type": "joinGroup", "group": "g", "ackId": 1})
            assert await client.receive_json() == {"type": "ack", "ackId": 1, "success": True}
            for ack_id in range(2, 6):
                await client.send_json({"type": "sendToGroup", "group": "g", "ackId": ack_id,
                                        "dataType": "text", "data": f"m{ack_id}"})
                assert await client.receive_json() == {"type": "ack", "ackId": ack_id, "success": True}
                message = await client.receive_json()
                assert message["type"] == "message" and message["group"] == "g"
                assert message["data"] == f"m{ack_id}"
            await client.aclose()
            nursery.cancel_scope.cancel()


class Crasher(Recorder):
    """Makes the group's actor crash on the publication "boom"."""

    def deliver_nowait(self, publication: Publication) -> None:
        if publication.payload.body == b"boom":
            raise RuntimeError("member failed")
        super().deliver_nowait(publication)


async def test_in_place_delivery_resumes_after_the_actor_crashed_with_messages_queued():
    async def test(hub):
        members = await _too_many_for_in_place(hub, first=Crasher("c"))
        local = hub.groups["g"]
        old_ref = local.handle.ref
        # Queued for the actor (too many members), the first one crashes it: the rest of its
        # mailbox dies with it, and the restarted actor starts with an empty one.
        for text in ("boom", "lost-1", "lost-2"):
            await hub.publish(_pub(text))
        with trio.fail_after(5):
            while local.handle.ref is old_ref or local.handle.ref is None:
                await trio.sleep(0.01)
        for member in members[1:]:
            await hub.leave_group(member, "g")
        assert local.queued == 0  # nothing is waiting in the new actor's mailbox
        await hub.publish(_pub("after"))  # idle and small again: delivered in place
        assert members[0].got[-1:] == ["after"]

    await _with_hub(test)


async def test_a_cancelled_wait_for_mailbox_room_leaves_the_count_right():
    async def test(hub):
        members = await _too_many_for_in_place(hub)
        local = hub.groups["g"]
        size = hub_module.GroupActor.mailbox_size
        for i in range(size):  # no checkpoint: the actor cannot drain meanwhile
            await hub.publish(_pub(str(i)))
        assert local.queued == size and hub.publish_may_wait("g")
        with trio.CancelScope() as scope:
            scope.cancel()  # the wait for room is cancelled (the actor may drain meanwhile)
            await hub.publish(_pub("dropped"))
        with trio.fail_after(5):
            while local.queued > 0:
                await trio.sleep(0.01)
        assert local.queued == 0  # the dropped one was never counted as queued
        assert not hub.publish_may_wait("g")
        for member in members[1:]:
            await hub.leave_group(member, "g")
        await hub.publish(_pub("after"))  # idle again: in place
        assert members[0].got == [str(i) for i in range(size)] + ["after"]

    await _with_hub(test)


async def test_sendtogroup_acks_after_the_publish_when_the_mailbox_is_full(monkeypatch):
    """With the group's mailbox full, the ack waits for the publish (a cancelled wait must
    not leave an ack for a dropped message); otherwise it is queued first."""
    async with fabric.open_fabric(load_config(None, env={}), access_key="k") as fab:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(fab.serve, "127.0.0.1", 0)
            hub = await fab.get_hub("p")
            token = fab.hub("p").get_client_access_token(roles=ROLES)["token"]
            client = await connect_tcp("127.0.0.1", port, client_target("p", token), ["json.webpubsub.azure.v1"])
            connected = await client.receive_json()
            conn = hub.connections[connected["connectionId"]]
            queued_at_publish: list[int] = []
            real_publish = hub.publish

            async def publish(publication):
                queued_at_publish.append(len(conn.ws.outbox))
                await real_publish(publication)

            monkeypatch.setattr(hub, "publish", publish)
            for full in (False, True):
                monkeypatch.setattr(hub, "publish_may_wait", lambda group, full=full: full)
                await client.send_json({"type": "sendToGroup", "group": "g", "ackId": 7 + full,
                                        "dataType": "text", "data": "x"})
                assert await client.receive_json() == {"type": "ack", "ackId": 7 + full, "success": True}
            assert queued_at_publish == [1, 0]  # the ack already queued / not yet
            await client.aclose()
            nursery.cancel_scope.cancel()
