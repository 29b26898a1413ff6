"""Simple WebSocket clients (no subprotocol) and hostile input, over real sockets.

Clients are trio-websocket (`interop_support.open_raw_client` / `open_json_client`); raw HTTP
goes through h11 over a socket. Expected close codes come from the server's own spec,
`specs/errors.py` (CLOSE_RULES, INBOUND_POLICY), which follows the reference where it speaks:
- a simple client's frame with no event handler: close 1000 (reference §2.6, observed on Azure);
- a frame over `max_message_bytes` (1 MiB): `system/disconnected` (subprotocol clients), then
  close 1009;
- a frame that is not a JSON protocol message: `system/disconnected`, then close 1007
  (decision `close.malformed`; the reference leaves the code open);
- a binary frame on a JSON subprotocol: `system/disconnected`, then close 1003;
- an invalid message *with* an ackId: ack `BadRequest`, the connection stays open.
After every bad input, clients connected before it and clients connecting after it still
send and receive (`Bystanders`).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse

import jwt
import pytest
import trio
import trio_websocket

from interop_support import (
    WAIT_TIMEOUT,
    Closed,
    FabricServer,
    JsonClient,
    RawClient,
    ahttp_request,
    open_json_client,
    open_raw_client,
    unique,
    upgrade_headers,
)

MAX_MESSAGE_BYTES = 1024 * 1024  # design.md: server.max_message_bytes default
BOTH_ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")


# ------------------------------------------------------------------------------ helpers


class Bystanders:
    """Two JSON clients in a group, connected *before* a bad-input test does its damage."""

    def __init__(self, server: FabricServer, a: JsonClient, b: JsonClient, group: str) -> None:
        self.server, self.a, self.b, self.group = server, a, b, group
        self.rounds = 0

    async def check(self) -> None:
        """The old pair still talks, and a fresh pair on the same server does too."""
        self.server.check_alive()
        self.rounds += 1
        text = f"still here {self.rounds}"
        await self.a.publish(self.group, text, "text")
        msg = await self.b.next_message()
        assert (msg["group"], msg["dataType"], msg["data"]) == (self.group, "text", text), msg

        hub, group = unique("fresh"), unique("g")
        async with (
            open_json_client(self.server.client_url(hub, roles=BOTH_ROLES), label="fresh_c", server=self.server) as c,
            open_json_client(self.server.client_url(hub, roles=BOTH_ROLES), label="fresh_d", server=self.server) as d,
        ):
            await d.join(group)
            await c.publish(group, {"fresh": True}, "json")
            msg = await d.next_message()
            assert (msg["dataType"], msg["data"]) == ("json", {"fresh": True}), msg


@pytest.fixture
async def bystanders(fabric_server):
    hub, group = unique("bystander"), unique("g")
    async with (
        open_json_client(fabric_server.client_url(hub, roles=BOTH_ROLES), label="by_a", server=fabric_server) as a,
        open_json_client(fabric_server.client_url(hub, roles=BOTH_ROLES), label="by_b", server=fabric_server) as b,
    ):
        await b.join(group)
        yield Bystanders(fabric_server, a, b, group)


def simple_url(server: FabricServer, hub: str, *, query: dict[str, str] | None = None, **token_kwargs) -> str:
    url = server.client_url(hub, **token_kwargs)
    return url + ("&" + urllib.parse.urlencode(query) if query else "")


async def await_simple_subscription(publisher: JsonClient, subscriber: RawClient, group: str) -> None:
    """Publish probes until the simple subscriber (joined through its token) gets one.

    A simple client gets no `connected` frame, so nothing says when its token groups are
    joined; the probes make the test independent of that. It returns with the subscriber's
    stream positioned just after a "synced" marker, and asserts that everything before it
    was a probe (so: no system frames for simple clients).
    """
    with trio.fail_after(WAIT_TIMEOUT):
        probe = 0
        while True:
            probe += 1
            await publisher.publish(group, f"probe-{probe}", "text")
            frame = await subscriber.try_recv(0.2)
            if frame is not None:
                assert isinstance(frame, str) and frame.startswith("probe-"), frame
                break
    await publisher.publish(group, "synced", "text")
    while (frame := await subscriber.recv()) != "synced":
        assert isinstance(frame, str) and frame.startswith("probe-"), frame


async def close_after_sending(client: RawClient, data: str | bytes) -> tuple[list, Closed]:
    """Send one frame the server must reject; return the frames that followed and the close.

    The server may close while the frame is still being written; then the send fails, and
    the close it sent (if any) is still reported.
    """
    try:
        await client.send(data)
    except Closed as closed:
        return [], closed
    except (trio.BrokenResourceError, OSError) as exc:
        print(f"sending failed: {exc!r}")
    return await client.expect_close()


def assert_closed_with(frames: list, closed: Closed, code: int, record, *, disconnected: bool) -> None:
    record("close_code", closed.code)
    record("close_reason", closed.reason)
    print(f"closed with {closed.code} {closed.reason!r} after {frames!r:.300}")
    assert closed.code == code, f"expected close {code}, got {closed.code} {closed.reason!r} (frames {frames!r:.300})"
    if disconnected:
        messages = [json.loads(f) for f in frames if isinstance(f, str)]
        last = messages[-1] if messages else {}
        assert last.get("type") == "system" and last.get("event") == "disconnected", (
            f"expected a system/disconnected message just before the close, got {messages}"
        )
        assert isinstance(last.get("message"), str) and last["message"], last


# ------------------------------------------------------------------------------ simple clients: receiving


async def test_simple_client_receives_raw_frames(fabric_server):
    hub, group = unique("hub"), unique("g")
    async with (
        open_json_client(fabric_server.client_url(hub, roles=BOTH_ROLES), label="pub", server=fabric_server) as pub,
        open_raw_client(fabric_server.client_url(hub, groups=[group]), label="simple_sub", server=fabric_server) as sub,
    ):
        assert sub.ws.subprotocol is None
        await await_simple_subscription(pub, sub, group)

        await pub.publish(group, "héllo ✓", "text")
        await pub.publish(group, {"a": 1, "b": [True, None]}, "json")
        await pub.publish(group, "quoted", "json")
        await pub.publish(group, base64.b64encode(b"\x00\x01\xfe\xff").decode(), "binary")

        assert await sub.recv() == "héllo ✓"  # text -> text frame
        frame = await sub.recv()
        assert isinstance(frame, str) and json.loads(frame) == {"a": 1, "b": [True, None]}  # json -> its JSON text
        assert await sub.recv() == '"quoted"'  # a JSON string keeps its quotes
        assert await sub.recv() == b"\x00\x01\xfe\xff"  # binary -> binary frame


# ------------------------------------------------------------------------------ simple clients: sending


@pytest.mark.parametrize("frame", ["plain text", b"\x00binary\xff"], ids=["text", "binary"])
async def test_simple_client_frame_without_event_handler_is_closed(fabric_server, bystanders, frame, record_property):
    """Reference §2.6: with no handler for `message`, the service drops the connection (1000)."""
    async with open_raw_client(fabric_server.client_url(unique("hub")), label="simple", server=fabric_server) as client:
        frames, closed = await close_after_sending(client, frame)
    assert_closed_with(frames, closed, 1000, record_property, disconnected=False)
    assert frames == []
    await bystanders.check()


async def test_simple_client_in_send_to_group_mode_publishes(fabric_server):
    hub, group = unique("hub"), unique("g")
    url = simple_url(fabric_server, hub, query={"webpubsub_mode": "sendToGroup", "group": group},
                     user_id="simple_pub", roles=["webpubsub.sendToGroup"])
    async with open_json_client(fabric_server.client_url(hub, roles=BOTH_ROLES), label="sub", server=fabric_server) as sub:
        await sub.join(group)
        async with open_raw_client(url, label="simple_pub", server=fabric_server) as pub:
            await pub.send("text frame")
            await pub.send(b"\x00\xffbinary frame")
            first, second = await sub.next_message(), await sub.next_message()
    assert (first["from"], first["group"], first["dataType"], first["data"]) == ("group", group, "text", "text frame")
    assert first.get("fromUserId") == "simple_pub"
    assert (second["group"], second["dataType"]) == (group, "binary")
    assert base64.b64decode(second["data"]) == b"\x00\xffbinary frame"


async def test_simple_publisher_reaches_simple_subscriber(fabric_server):
    hub, group = unique("hub"), unique("g")
    url = simple_url(fabric_server, hub, query={"webpubsub_mode": "sendToGroup", "group": group},
                     roles=[f"webpubsub.sendToGroup.{group}"])  # a group-scoped role is enough
    async with (
        open_json_client(fabric_server.client_url(hub, roles=BOTH_ROLES), label="prober", server=fabric_server) as prober,
        open_raw_client(fabric_server.client_url(hub, groups=[group]), label="simple_sub", server=fabric_server) as sub,
        open_raw_client(url, label="simple_pub", server=fabric_server) as pub,
    ):
        await await_simple_subscription(prober, sub, group)
        await pub.send("from one simple client to another")
        await pub.send(b"\x01\x02")
        assert await sub.recv() == "from one simple client to another"
        assert await sub.recv() == b"\x01\x02"


@pytest.mark.parametrize(
    "query",
    [{"webpubsub_mode": "sendToGroup"}, {"webpubsub_mode": "noSuchMode"}],
    ids=["sendToGroup-without-group", "unknown-mode"],
)
async def test_bad_simple_mode_is_400_before_upgrade(fabric_server, query):
    target = urllib.parse.urlsplit(simple_url(fabric_server, unique("hub"), query=query, roles=BOTH_ROLES))
    resp = await ahttp_request(fabric_server.port, "GET", f"{target.path}?{target.query}", upgrade_headers(None))
    assert resp.status == 400, resp
    assert isinstance(resp.json(), dict), resp


# ------------------------------------------------------------------------------ bad input: HTTP


def _bad_token(server: FabricServer, hub: str, case: str) -> str | None:
    now = int(time.time())
    claims = {"aud": f"{server.endpoint}/client/hubs/{hub}", "iat": now, "exp": now + 600, "sub": "mallory"}
    if case == "missing":
        return None
    if case == "garbage":
        return "not-a-jwt"
    if case == "wrong-key":
        return jwt.encode(claims, "x" * 43, algorithm="HS256")
    if case == "expired":
        return jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, server.key, algorithm="HS256")
    if case == "other-hub":  # a valid token, minted for another hub
        url = server.client_url(unique("otherhub"), user_id="mallory")
        return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["access_token"][0]
    if case == "alg-none":
        return jwt.encode(claims, None, algorithm="none")
    raise ValueError(case)


@pytest.mark.parametrize("case", ["missing", "garbage", "wrong-key", "expired", "other-hub", "alg-none"])
async def test_bad_token_is_401_before_upgrade(fabric_server, bystanders, case):
    hub = unique("hub")
    token = _bad_token(fabric_server, hub, case)
    target = f"/client/hubs/{hub}" + (f"?access_token={urllib.parse.quote(token)}" if token is not None else "")
    resp = await ahttp_request(fabric_server.port, "GET", target, upgrade_headers())
    assert resp.status == 401, resp
    assert "sec-websocket-accept" not in resp.headers, resp
    await bystanders.check()


async def test_bad_token_with_a_websocket_client(fabric_server):
    hub = unique("hub")
    url = f"{fabric_server.ws_base}/client/hubs/{hub}?access_token={_bad_token(fabric_server, hub, 'wrong-key')}"
    with pytest.raises(trio_websocket.ConnectionRejected) as excinfo:
        async with open_json_client(url, server=fabric_server):
            pass
    assert excinfo.value.status_code == 401


async def test_rejections_carry_a_json_body(fabric_server):
    """design.md, Bad input: an HTTP 4xx with a JSON body saying what is wrong."""
    for target, headers, status in [
        (f"/client/hubs/{unique('hub')}", upgrade_headers(), 401),
        ("/no/such/path", [], 404),
    ]:
        resp = await ahttp_request(fabric_server.port, "GET", target, headers)
        assert resp.status == status, resp
        assert resp.headers.get("content-type", "").split(";")[0].strip() == "application/json", resp
        body = resp.json()
        assert isinstance(body, dict) and body, resp


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_unknown_path_is_404_with_json(fabric_server, method):
    resp = await ahttp_request(fabric_server.port, method, "/definitely/not/here?x=1")
    assert resp.status == 404, resp
    assert isinstance(resp.json(), dict), resp


async def test_unknown_path_upgrade_is_404(fabric_server, bystanders):
    resp = await ahttp_request(fabric_server.port, "GET", "/not/a/client/endpoint", upgrade_headers())
    assert resp.status == 404, resp
    assert isinstance(resp.json(), dict), resp
    await bystanders.check()


async def test_health(fabric_server):
    resp = await ahttp_request(fabric_server.port, "GET", "/api/health")
    assert resp.status == 200, resp


# ------------------------------------------------------------------------------ bad input: frames


def _send_to_group_frame_of(total_bytes: int, group: str, ack_id: int | None = 1) -> str:
    """A valid sendToGroup frame whose UTF-8 encoding is exactly `total_bytes` long."""
    base: dict = {"type": "sendToGroup", "group": group, "dataType": "text", "data": ""}
    if ack_id is not None:
        base["ackId"] = ack_id
    empty = len(json.dumps(base, separators=(",", ":")).encode())
    frame = json.dumps({**base, "data": "x" * (total_bytes - empty)}, separators=(",", ":"))
    assert len(frame.encode()) == total_bytes
    return frame


async def test_frame_at_the_limit_is_accepted(fabric_server, bystanders):
    async with open_json_client(fabric_server.client_url(unique("hub"), roles=BOTH_ROLES), server=fabric_server) as c:
        await c.send(_send_to_group_frame_of(MAX_MESSAGE_BYTES, unique("nobody_listens"), ack_id=1))
        assert await c.recv_json() == {"type": "ack", "ackId": 1, "success": True}
    await bystanders.check()


async def test_json_frame_over_1mib_closes_1009(fabric_server, bystanders, record_property):
    async with open_json_client(fabric_server.client_url(unique("hub"), roles=BOTH_ROLES), server=fabric_server) as c:
        frames, closed = await close_after_sending(c, _send_to_group_frame_of(MAX_MESSAGE_BYTES + 1, unique("g")))
    assert_closed_with(frames, closed, 1009, record_property, disconnected=True)
    await bystanders.check()


async def test_simple_client_frame_over_1mib_closes_1009(fabric_server, bystanders, record_property):
    hub, group = unique("hub"), unique("g")
    url = simple_url(fabric_server, hub, query={"webpubsub_mode": "sendToGroup", "group": group},
                     roles=["webpubsub.sendToGroup"])
    async with open_raw_client(url, label="simple_big", server=fabric_server) as client:
        frames, closed = await close_after_sending(client, b"\x00" * (MAX_MESSAGE_BYTES + 1))
    assert_closed_with(frames, closed, 1009, record_property, disconnected=False)
    await bystanders.check()


@pytest.mark.parametrize(
    "frame",
    ["{not json", "[1, 2, 3]", '"just a string"', '{"no_type": 1}'],
    ids=["unparseable", "array", "string", "no-type"],
)
@pytest.mark.parametrize("reliable", [False, True], ids=["json", "json_reliable"])
async def test_malformed_json_frame_closes_1007(fabric_server, bystanders, record_property, frame, reliable):
    url = fabric_server.client_url(unique("hub"), roles=BOTH_ROLES)
    async with open_json_client(url, reliable=reliable, server=fabric_server) as client:
        frames, closed = await close_after_sending(client, frame)
    assert_closed_with(frames, closed, 1007, record_property, disconnected=True)
    await bystanders.check()


async def test_binary_frame_on_json_subprotocol_closes_1003(fabric_server, bystanders, record_property):
    async with open_json_client(fabric_server.client_url(unique("hub"), roles=BOTH_ROLES), server=fabric_server) as c:
        frames, closed = await close_after_sending(c, b'{"type":"joinGroup","group":"g"}')
    assert_closed_with(frames, closed, 1003, record_property, disconnected=True)
    await bystanders.check()


async def test_invalid_message_without_ack_id_closes_1007(fabric_server, bystanders, record_property):
    async with open_json_client(fabric_server.client_url(unique("hub"), roles=BOTH_ROLES), server=fabric_server) as c:
        frames, closed = await close_after_sending(c, json.dumps({"type": "joinGroup"}))  # no group
    assert_closed_with(frames, closed, 1007, record_property, disconnected=True)
    await bystanders.check()


@pytest.mark.parametrize(
    "message",
    [
        {"type": "joinGroup"},
        {"type": "sendToGroup", "group": "g", "dataType": "nonsense", "data": "x"},
        {"type": "sendToGroup", "group": "g", "dataType": "binary", "data": "not base64!!"},
        {"type": "noSuchType"},
    ],
    ids=["joinGroup-without-group", "unknown-dataType", "bad-base64", "unknown-type"],
)
async def test_invalid_message_with_ack_id_gets_bad_request_and_keeps_the_connection(fabric_server, message):
    hub, group = unique("hub"), unique("g")
    async with open_json_client(fabric_server.client_url(hub, roles=BOTH_ROLES), server=fabric_server) as client:
        ack = await client.request(message)
        assert ack.get("success") is False, ack
        assert ack.get("error", {}).get("name") == "BadRequest" and ack["error"].get("message"), ack
        await client.join(group)  # still usable
        await client.publish(group, "after the bad one", "text")
        assert (await client.next_message())["data"] == "after the bad one"


async def test_connected_frame_shapes(fabric_server):
    """`system/connected` first; `reconnectionToken` on the reliable subprotocol only."""
    hub = unique("hub")
    async with (
        open_json_client(fabric_server.client_url(hub, user_id="shape_u"), server=fabric_server) as plain,
        open_json_client(fabric_server.client_url(hub, user_id="shape_u"), reliable=True, server=fabric_server) as reliable,
    ):
        assert plain.connected["userId"] == "shape_u" and "reconnectionToken" not in plain.connected, plain.connected
        assert reliable.connected["userId"] == "shape_u", reliable.connected
        assert isinstance(reliable.connected.get("reconnectionToken"), str) and reliable.connected["reconnectionToken"]
        assert plain.connected["connectionId"] != reliable.connected["connectionId"]


async def test_slow_consumer_is_closed_1008_and_the_group_carries_on(fabric_server, record_property):
    """design.md: fan-out never waits for a slow member; past its outbox bound the default
    policy closes it (specs/errors.py SLOW_CLIENT: 1008 after system/disconnected). A member
    that reads keeps getting every message, in order (the publisher stays within 16 messages
    of it, since publisher and reader share this process's CPU).

    The slow member's client stops reading its socket after one buffered message; 600
    messages of 64 KiB (37.5 MiB) exceed what loopback TCP buffers, the client's buffers and
    the default outbox (4 MiB) can hold together. It reads its close only after the run, so
    it sees either the 1008 close or, past close_timeout, the reset (limits.close).
    """
    hub, group = unique("hub"), unique("g")
    count, size = 600, 64 * 1024
    chunk = "x" * size
    async with (
        open_json_client(fabric_server.client_url(hub, roles=BOTH_ROLES), label="publisher", server=fabric_server) as pub,
        open_json_client(fabric_server.client_url(hub, roles=BOTH_ROLES), label="fast", server=fabric_server) as fast,
        open_json_client(fabric_server.client_url(hub, roles=BOTH_ROLES), label="slow", server=fabric_server,
                         queue_size=1) as slow,
    ):
        await fast.join(group)
        await slow.join(group)
        received: list[int] = []
        progress = trio.Condition()
        window = 16  # the reading member is never more than 1 MiB behind: well inside its outbox bound

        async def read_fast() -> None:
            while len(received) < count:
                try:
                    msg = await fast.next_message()
                except Closed as closed:
                    pytest.fail(f"the reading member was closed ({closed.code} {closed.reason!r}) after "
                                f"{len(received)} messages", pytrace=False)
                received.append(int(msg["data"].split(":", 1)[0]))
                async with progress:
                    progress.notify_all()

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_fast)
                for i in range(count):
                    async with progress:
                        while len(received) < i - window:
                            await progress.wait()
                    await pub.publish(group, f"{i}:{chunk}", "text")
        assert received == list(range(count)), "the reading member lost or reordered messages"

        frames, closed = await slow.expect_close(timeout=WAIT_TIMEOUT)
    data_frames = [f for f in frames if isinstance(f, str) and '"type":"message"' in f]
    record_property("slow_consumer_close", (closed.code, closed.reason, len(data_frames)))
    print(f"slow consumer: closed {closed.code} {closed.reason!r} after {len(data_frames)} of {count} messages")
    assert len(data_frames) < count
    if closed.code == 1006:
        # specs/limits.py limits.close: this client read nothing for longer than close_timeout
        # (2 s) after we closed it, so its TCP connection was reset instead of waiting for it.
        assert not [f for f in frames if f not in data_frames and '"disconnected"' not in f], frames[-3:]
        return
    assert_closed_with([f for f in frames if f not in data_frames], closed, 1008, record_property, disconnected=True)
