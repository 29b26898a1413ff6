"""A stream's publisher in its own group gets the answer to its streamEnd before the stream's
terminal group message, also now that the hub may deliver a group publication in place."""

from __future__ import annotations

from .test_streams import ack, data, joined, start


async def test_publisher_in_group_gets_stream_closed_before_the_terminal(fab):
    pub = await joined(fab)
    await pub.send_json(start())
    assert await pub.receive_json() == ack("s", 1)
    await pub.send_json(data("s", 1, "part1"))
    got = [await pub.receive_json(), await pub.receive_json()]  # its own fragment and the ack
    assert ack("s", 2) in got
    assert any(m.get("type") == "message" and m["data"] == "part1" for m in got)
    await pub.send_json({"type": "streamEnd", "streamId": "s"})
    assert await pub.receive_json() == {"type": "streamClosed", "streamId": "s"}
    terminal = await pub.receive_json()
    assert terminal["type"] == "message" and terminal["stream"]["endOfStream"] is True
