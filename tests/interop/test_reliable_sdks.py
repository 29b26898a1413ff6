"""The reliable subprotocol (`json.reliable.webpubsub.azure.v1`) over real sockets: Microsoft's
SDKs through dropped connections, and hostile recovery/ack input.

What the server promises is `specs/reliable.py` (session table, GUARANTEES, DECISIONS); the
SDK behaviours relied on are the reference's §5.3 (Python) and the JS client's source:
- Subscribers connect through `chaos_proxy.ChaosProxy`, so their recovery requests go through
  it too; `abort_all()` resets their TCP connections (no close frame), and with
  `half_open=True` the server's side stays open (decision `reliable.half-open`: the recovery
  replaces it). Publishers connect to the server directly and are never disturbed.
- Pacing: the server discards a session with more than `reliable_buffer_messages` (1000, the
  default, unchanged here) unacknowledged messages, and the SDKs ack at most once a second.
  The publisher therefore never runs more than ACK_WINDOW messages ahead of the largest
  `sequenceAck` the subscriber has sent (the proxy reads it off the wire), and at most
  MAX_RATE messages a second.
- Bad recoveries (forged or foreign token, unknown connection id, a session that expired or
  was closed) must be accepted and closed with 1008 (reference §5.2); acks for ids never sent
  are clamped and acks going backwards ignored, neither closing the connection
  (GUARANTEES); clients that did nothing wrong carry on.
- The expiry tests start their own server with `[server] reconnect_window = 2.0` in a
  config file (through FABRIC_TEST_SERVER_CMD, so they are skipped when a stand-in server
  command is configured).
Every wait is bounded; a failure message carries the proxy's record of every connection.
"""

from __future__ import annotations

import base64
import functools
import itertools
import os
import queue
import secrets
import shlex
import sys
import threading
import time
import urllib.parse
from typing import Any, Callable, Iterator

import pytest
import trio

from chaos_proxy import ChaosProxy
from node_subscriber import NodeSubscriber
from interop_support import (
    JSON_RELIABLE,
    SERVER_CMD_ENV,
    WAIT_TIMEOUT,
    Closed,
    FabricServer,
    JsonClient,
    SdkClient,
    open_json_client,
    open_raw_client,
    start_server,
    stop_server,
    unique,
)

MESSAGES = 5000
ABORTS = 5
ACK_WINDOW = 600  # never more than this many messages beyond the subscriber's last sequenceAck
MAX_RATE = 600.0  # messages per second
BATCH = 20  # sendToGroup frames per publisher round trip (the last one carries an ackId)
PUBLISH_TIMEOUT = 40.0  # the whole paced run
DRAIN_TIMEOUT = 15.0  # from the last publish until the subscriber has acked everything
SHORT_WINDOW = 2.0  # reconnect_window of the expiry tests' server
BOTH_ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")


# ------------------------------------------------------------------------------ helpers


def _fail(what: str, *parts: Any) -> None:
    details = "\n".join(p if isinstance(p, str) else p.describe() for p in parts)
    pytest.fail(f"{what}\n{details}", pytrace=False)


async def wait_until(condition: Callable[[], bool], timeout: float, what: str, *diagnostics: Any) -> None:
    """Poll `condition` every 10 ms for at most `timeout` seconds; fail with diagnostics."""
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(0.01)
        return
    _fail(f"timed out after {timeout} s waiting for {what}", *diagnostics)


def recovery_url(url: str, connection_id: str, token: str) -> str:
    """What the SDKs build: the original URL plus awps_connection_id and awps_reconnection_token."""
    return url + "&" + urllib.parse.urlencode({"awps_connection_id": connection_id, "awps_reconnection_token": token})


def continue_ack_ids(recovered: JsonClient, start: int = 1000) -> JsonClient:
    """A recovered session remembers the ackIds its earlier sockets used (they are the same
    connection), so a fresh JsonClient on it must not start again at 1."""
    recovered._ack_ids = itertools.count(start)
    return recovered


def publish_frame(group: str, data: str) -> dict[str, Any]:
    return {"type": "sendToGroup", "group": group, "dataType": "text", "data": data}


async def publish_batch(pub: JsonClient, group: str, first: int, count: int) -> None:
    """Publish "m{first}".."m{first+count-1}"; only the last frame asks for an ack, which
    (the server handling one connection's frames in order) confirms the whole batch."""
    for i in range(first, first + count - 1):
        await pub.send_json(publish_frame(group, f"m{i}"))
    ack = await pub.request(publish_frame(group, f"m{first + count - 1}"))
    assert ack.get("success") is True, f"sendToGroup failed: {ack}"


def _ready_for_abort(proxy: ChaosProxy, aborts_done: int) -> bool:
    """The subscriber's newest connection is the one we expect, upgraded, and carrying data."""
    records = proxy.records()
    if len(records) != aborts_done + 1:
        return False
    last = records[-1]
    return last.status == 101 and last.ended is None and bool(last.connection_ids) and last.data_frames > 0


async def publish_through_chaos(
    pub: JsonClient,
    group: str,
    proxy: ChaosProxy,
    *,
    total: int = MESSAGES,
    aborts: int = ABORTS,
    half_open: frozenset[int] = frozenset(),
    diagnostics: tuple[Any, ...] = (),
) -> None:
    """Publish "m0".."m{total-1}", paced on the subscriber's acks, and abort the subscriber's
    connection `aborts` times, spread over the run (abort k is half-open if k in `half_open`)."""
    thresholds = [total * (k + 1) // (aborts + 1) for k in range(aborts)]
    sent = aborts_done = 0
    started = trio.current_time()
    with trio.move_on_after(PUBLISH_TIMEOUT) as scope:
        while sent < total:
            if aborts_done < aborts and sent >= thresholds[aborts_done] and _ready_for_abort(proxy, aborts_done):
                victims = await trio.to_thread.run_sync(
                    functools.partial(proxy.abort_all, half_open=aborts_done in half_open))
                assert victims == 1, f"abort {aborts_done + 1}: expected one live connection, aborted {victims}"
                aborts_done += 1
                continue
            elapsed = trio.current_time() - started
            if sent + BATCH - proxy.max_sequence_ack > ACK_WINDOW or sent > MAX_RATE * elapsed:
                await trio.sleep(0.005)
                continue
            count = min(BATCH, total - sent)
            await publish_batch(pub, group, sent, count)
            sent += count
    if scope.cancelled_caught:
        _fail(f"publishing did not finish in {PUBLISH_TIMEOUT} s: sent {sent}, aborts {aborts_done}, "
              f"max sequenceAck {proxy.max_sequence_ack}", proxy, *diagnostics)
    if aborts_done != aborts:
        _fail(f"only {aborts_done} of {aborts} aborts happened (the recoveries were too slow to carry data)",
              proxy, *diagnostics)
    await wait_until(lambda: proxy.max_sequence_ack >= total, DRAIN_TIMEOUT,
                     f"the subscriber to acknowledge all {total} messages", proxy, *diagnostics)


def check_recoveries(proxy: ChaosProxy, connection_id: str, aborts: int) -> None:
    """One fresh connection, then `aborts` recoveries of the same id, each upgraded (101),
    each answered with `connected` for that same id, and no close frame from the server.
    Call it before the client closes (that close is answered with a close frame)."""
    records = proxy.records()
    report = proxy.describe()
    assert records and records[-1].ended is None, f"the last connection must still be open:\n{report}"
    assert len(records) == aborts + 1, f"expected 1 connection + {aborts} recoveries:\n{report}"
    assert not records[0].is_recovery, report
    for rec in records[1:]:
        assert rec.query.get("awps_connection_id") == connection_id, report
        assert rec.query.get("awps_reconnection_token"), report
    for rec in records:
        assert rec.status == 101, report
        assert rec.connection_ids == [connection_id], report
        assert rec.server_close_code is None, report
    # at-least-once on the wire: every abort cost messages the client had seen but not yet
    # acked, so the replays resent some; the SDK must have dropped those (checked by the caller)
    assert sum(r.data_frames for r in records) > records[-1].max_sequence_id, f"nothing was replayed:\n{report}"


async def next_data(client: JsonClient, timeout: float = WAIT_TIMEOUT) -> tuple[int | None, Any]:
    msg = await client.next_message(timeout)
    return msg.get("sequenceId"), msg.get("data")


async def expect_refused(url: str, server: FabricServer, what: str, subprotocol: str = JSON_RELIABLE) -> None:
    """The upgrade is accepted (with the subprotocol) and then closed with 1008, nothing sent."""
    async with open_raw_client(url, subprotocol=subprotocol, label=what, server=server) as client:
        frames, closed = await client.expect_close()
    assert closed.code == 1008, f"{what}: expected close 1008, got {closed.code} {closed.reason!r} after {frames!r:.300}"
    assert not frames, f"{what}: a refused recovery must send nothing before closing, got {frames!r:.300}"


def plain_url(server: FabricServer, hub: str) -> str:
    return server.client_url(hub, roles=BOTH_ROLES)


class Bystanders:
    """A publisher and a plain JSON subscriber in their own hub, connected before the damage."""

    def __init__(self, server: FabricServer, pub: JsonClient, sub: JsonClient, group: str) -> None:
        self.server, self.pub, self.sub, self.group = server, pub, sub, group
        self.rounds = 0

    async def check(self) -> None:
        self.server.check_alive()
        self.rounds += 1
        text = f"still here {self.rounds}"
        await self.pub.publish(self.group, text, "text")
        msg = await self.sub.next_message()
        assert (msg["group"], msg["data"]) == (self.group, text), msg


@pytest.fixture
async def bystanders(fabric_server):
    hub, group = unique("bystander"), unique("g")
    async with (
        open_json_client(plain_url(fabric_server, hub), label="by_pub", server=fabric_server) as pub,
        open_json_client(plain_url(fabric_server, hub), label="by_sub", server=fabric_server) as sub,
    ):
        await sub.join(group)
        yield Bystanders(fabric_server, pub, sub, group)


@pytest.fixture(scope="module")
def short_window_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FabricServer]:
    """`fabric serve` with `[server] reconnect_window = 2.0` from a config file."""
    if os.environ.get(SERVER_CMD_ENV):
        pytest.skip(f"{SERVER_CMD_ENV} names a stand-in server; the short reconnect window needs fabric's config file")
    config = tmp_path_factory.mktemp("reliable") / "fabric.toml"
    config.write_text(f"[server]\nreconnect_window = {SHORT_WINDOW}\n", encoding="utf-8")
    template = shlex.join([sys.executable, "-m", "fabric", "serve", "--host", "127.0.0.1", "--config", str(config)])
    template = template.replace("{", "{{").replace("}", "}}") + " --port {port} --access-key={key}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SERVER_CMD_ENV, template)
        server = start_server()
    try:
        yield server
    finally:
        stop_server(server)


# ------------------------------------------------------------------------------ the proxy itself


async def test_chaos_proxy_abort_is_a_reset_without_close_frame(fabric_server):
    """What the SDK tests rely on: through the proxy the traffic is intact and seen; an abort
    gives the client no close frame (1006), and the server no close frame either."""
    hub, group = unique("chaos"), unique("g")
    with ChaosProxy(fabric_server.port, name="chaos-self") as proxy:
        async with (
            open_json_client(plain_url(fabric_server, hub), label="pub", server=fabric_server) as pub,
            open_json_client(proxy.proxied(plain_url(fabric_server, hub)), reliable=True, label="sub",
                             server=fabric_server) as sub,
        ):
            await sub.join(group)
            await pub.publish(group, "through the proxy")
            assert await next_data(sub) == (1, "through the proxy")
            await sub.send_json({"type": "sequenceAck", "sequenceId": 1})
            await wait_until(lambda: proxy.max_sequence_ack == 1, WAIT_TIMEOUT, "the sniffed sequenceAck", proxy)
            assert await trio.to_thread.run_sync(proxy.abort_all) == 1
            with pytest.raises(Closed) as closed:
                await sub.recv()
            assert closed.value.code == 1006, closed.value
    (record,) = proxy.records()
    assert record.status == 101 and record.connection_ids == [sub.connected["connectionId"]], record
    assert (record.data_frames, record.max_sequence_id, record.max_sequence_ack) == (1, 1, 1), record
    assert (record.server_close_code, record.client_close_code, record.ended) == (None, None, "aborted"), record


# ------------------------------------------------------------------------------ the Python SDK


# The SDK's ack thread does not catch send errors: an abort landing while it sends a
# sequenceAck kills that thread with ConnectionResetError (harmless: recovery starts a new one).
@pytest.mark.filterwarnings(
    r"ignore:Exception in thread .*\(sequence_id_ack_periodically\):pytest.PytestUnhandledThreadExceptionWarning")
async def test_python_sdk_gets_5000_messages_once_in_order_across_five_aborts(fabric_server):
    """azure-messaging-webpubsubclient, default protocol (json.reliable), through the proxy;
    aborts 2 and 4 leave the server's socket half-open."""
    from azure.messaging.webpubsubclient.models import CallbackType

    hub, group = unique("rel_py"), unique("g")
    with ChaosProxy(fabric_server.port, name="chaos-py") as proxy:
        url = proxy.proxied(fabric_server.client_url(hub, user_id=unique("py_sub"), roles=BOTH_ROLES))
        sdk = SdkClient(url, label="py_sub", server=fabric_server)
        connected_ids: list[str] = []
        sdk.client.subscribe(CallbackType.CONNECTED, lambda args: connected_ids.append(args.connection_id))
        try:
            await trio.to_thread.run_sync(sdk.open)
            first_id = sdk.connection_id
            await trio.to_thread.run_sync(sdk.join, group)
            async with open_json_client(plain_url(fabric_server, hub), label="py_pub", server=fabric_server) as pub:
                await publish_through_chaos(pub, group, proxy, half_open=frozenset({1, 3}),
                                            diagnostics=(fabric_server,))
            got: list[Any] = []

            def drain() -> bool:
                while True:
                    try:
                        got.append(sdk.messages.get_nowait())
                    except queue.Empty:
                        return len(got) >= MESSAGES

            await wait_until(drain, WAIT_TIMEOUT, f"{MESSAGES} SDK callbacks", proxy, fabric_server)
            await trio.sleep(0.5)  # anything delivered twice would show up now
            drain()
            connection_id_at_end = sdk.client._connection_id  # private: the id the SDK would recover with
            disconnected_before_close = sdk.disconnected.is_set()  # close() itself fires disconnected
            check_recoveries(proxy, first_id, ABORTS)
        finally:
            await trio.to_thread.run_sync(sdk.close)

    got.sort(key=lambda m: m.serial)  # callback threads may run out of order; serial is arrival order
    data = [m.data for m in got]
    assert len(got) == MESSAGES, f"{len(got)} messages, {len(set(data))} distinct\n{proxy.describe()}"
    assert data == [f"m{i}" for i in range(MESSAGES)], next(
        (f"message {i} is {d!r}" for i, d in enumerate(data) if d != f"m{i}"), "")
    assert [m.sequence_id for m in got] == list(range(1, MESSAGES + 1))
    assert {(m.kind, m.group, m.data_type) for m in got} == {("group", group, "text")}
    assert connected_ids == [first_id], f"connected fired for {connected_ids}"
    assert connection_id_at_end == first_id
    assert not disconnected_before_close, f"disconnected fired: {vars(sdk.disconnected_args)}"
    ended = [r.ended or "" for r in proxy.records()[:ABORTS]]
    assert [e.split(",")[0] for e in ended] == ["aborted", "half-open", "aborted", "half-open", "aborted"], ended


# ------------------------------------------------------------------------------ the JavaScript SDK


async def test_node_sdk_gets_5000_messages_once_in_order_across_five_aborts(fabric_server):
    """@azure/web-pubsub-client with WebPubSubJsonReliableProtocol(), through the proxy."""
    hub, group = unique("rel_js"), unique("g")
    with ChaosProxy(fabric_server.port, name="chaos-js") as proxy:
        url = proxy.proxied(fabric_server.client_url(hub, user_id=unique("js_sub"), roles=BOTH_ROLES))
        sub = NodeSubscriber(url, group, MESSAGES, deadline_s=PUBLISH_TIMEOUT + DRAIN_TIMEOUT + 20)
        try:
            ready = await trio.to_thread.run_sync(sub.next_line, "ready", WAIT_TIMEOUT * 2)
            first_id = ready["connectionId"]
            async with open_json_client(plain_url(fabric_server, hub), label="js_pub", server=fabric_server) as pub:
                await publish_through_chaos(pub, group, proxy, half_open=frozenset({2}), diagnostics=(sub, fabric_server))
            await trio.sleep(0.5)  # anything delivered twice would show up now
            check_recoveries(proxy, first_id, ABORTS)
            done, rc = await trio.to_thread.run_sync(sub.finish)
        finally:
            await trio.to_thread.run_sync(sub.kill)

    assert done["problems"] == [] and rc == 0, f"{done['problems']} (exit {rc})\n{proxy.describe()}\n{sub.describe()}"
    assert done["data"] == [f"m{i}" for i in range(MESSAGES)]
    assert done["sequenceIds"] == list(range(1, MESSAGES + 1))
    assert done["connectedEvents"] == [first_id] and done["connectionIdAtEnd"] == first_id
    assert done["disconnectedEvents"] == []


# ------------------------------------------------------------------------------ bad recoveries


async def test_forged_and_foreign_tokens_are_closed_1008_and_the_session_still_recovers(fabric_server, bystanders):
    hub, group = unique("rel_bad"), unique("g")
    with ChaosProxy(fabric_server.port, name="chaos-bad") as proxy:
        victim_url = fabric_server.client_url(hub, user_id="victim", roles=BOTH_ROLES)
        other_url = fabric_server.client_url(hub, user_id="other", roles=BOTH_ROLES)
        async with (
            open_json_client(plain_url(fabric_server, hub), label="pub", server=fabric_server) as pub,
            open_json_client(other_url, reliable=True, label="other", server=fabric_server) as other,
        ):
            await other.join(group)
            async with open_json_client(proxy.proxied(victim_url), reliable=True, label="victim",
                                        server=fabric_server) as victim:
                await victim.join(group)
                victim_id = victim.connected["connectionId"]
                victim_token = victim.connected["reconnectionToken"]
                for i in range(3):
                    await pub.publish(group, f"m{i}")
                assert [await next_data(victim) for _ in range(3)] == [(1, "m0"), (2, "m1"), (3, "m2")]
                assert await trio.to_thread.run_sync(proxy.abort_all) == 1
            for i in range(3, 5):  # published while the victim is away: buffered for it
                await pub.publish(group, f"m{i}")

            other_id, other_token = other.connected["connectionId"], other.connected["reconnectionToken"]
            forged = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
            bad = {
                "forged token": recovery_url(victim_url, victim_id, forged),
                "another connection's token": recovery_url(victim_url, victim_id, other_token),
                "empty token": recovery_url(victim_url, victim_id, ""),
                "the genuine token with its first character changed": recovery_url(
                    victim_url, victim_id, ("A" if victim_token[0] != "A" else "B") + victim_token[1:]),
                "the victim's token for the live other connection": recovery_url(other_url, other_id, victim_token),
                "the victim's token on another hub": recovery_url(
                    fabric_server.client_url(unique("elsewhere"), roles=BOTH_ROLES), victim_id, victim_token),
            }
            for what, url in bad.items():
                await expect_refused(url, fabric_server, what)
            await bystanders.check()

            # The genuine token still recovers: connected again (same id, same token), then the
            # five unacked messages with their original sequence ids, then live traffic.
            async with open_json_client(recovery_url(victim_url, victim_id, victim_token), reliable=True,
                                        label="victim-recovered", server=fabric_server) as back:
                continue_ack_ids(back)
                assert back.connected["connectionId"] == victim_id
                assert back.connected["reconnectionToken"] == victim_token
                await pub.publish(group, "m5")
                assert [await next_data(back) for _ in range(6)] == [(i + 1, f"m{i}") for i in range(6)]
                # groups survived the drop: the recovered socket can act in them
                await back.publish(group, "from the victim")
                assert await next_data(back) == (7, "from the victim")

            # the live connection whose id was attacked lost nothing
            assert [await next_data(other) for _ in range(7)] == [
                *[(i + 1, f"m{i}") for i in range(6)], (7, "from the victim")]
            await bystanders.check()


async def test_unknown_connection_id_and_a_closed_session_are_closed_1008(fabric_server, bystanders):
    hub, group = unique("rel_unknown"), unique("g")
    url = fabric_server.client_url(hub, roles=BOTH_ROLES)
    await expect_refused(recovery_url(url, "no-such-connection", "dG9rZW4"), fabric_server, "unknown id")
    await expect_refused(recovery_url(url, "", ""), fabric_server, "empty id")
    # A session the client closed deliberately (close frame) is gone: its genuine token is refused.
    async with open_json_client(url, reliable=True, label="leaver", server=fabric_server) as leaver:
        await leaver.join(group)
        leaver_id, leaver_token = leaver.connected["connectionId"], leaver.connected["reconnectionToken"]
    await bystanders.check()
    await expect_refused(recovery_url(url, leaver_id, leaver_token), fabric_server, "token of a closed session")
    await bystanders.check()


# ------------------------------------------------------------------------------ expiry


async def test_token_replayed_after_the_session_expired_is_closed_1008(short_window_server):
    server = short_window_server
    hub, group = unique("rel_exp"), unique("g")
    with ChaosProxy(server.port, name="chaos-expiry") as proxy:
        url = server.client_url(hub, user_id="expiring", roles=BOTH_ROLES)
        async with (
            open_json_client(plain_url(server, hub), label="pub", server=server) as pub,
            open_json_client(plain_url(server, hub), label="bystander", server=server) as bystander,
        ):
            await bystander.join(group)
            async with open_json_client(proxy.proxied(url), reliable=True, label="expiring", server=server) as c:
                await c.join(group)
                old_id, old_token = c.connected["connectionId"], c.connected["reconnectionToken"]
                await pub.publish(group, "before")
                assert await next_data(c) == (1, "before")
                assert await trio.to_thread.run_sync(proxy.abort_all) == 1
            await pub.publish(group, "while away")
            await trio.sleep(SHORT_WINDOW + 1.0)  # the window passes (real time: it is the server's clock)

            await expect_refused(recovery_url(url, old_id, old_token), server, "token after expiry")
            # the same URL opens a fresh session: a new id, sequence ids from 1 again
            async with open_json_client(url, reliable=True, label="fresh", server=server) as fresh:
                assert fresh.connected["connectionId"] != old_id
                await fresh.join(group)
                await pub.publish(group, "after")
                assert await next_data(fresh) == (1, "after")
            assert [(await bystander.next_message())["data"] for _ in range(3)] == ["before", "while away", "after"]


async def test_python_sdk_after_expiry_gets_1008_and_reconnects_fresh(short_window_server):
    """The SDK's recovery is held in the proxy until the session expired: the server accepts
    it and closes 1008, so the SDK stops recovering, fires `disconnected`, and (auto-reconnect
    on) opens a brand-new connection, joined to its token's groups again."""
    from azure.messaging.webpubsubclient import WebPubSubClient
    from azure.messaging.webpubsubclient.models import CallbackType

    server = short_window_server
    hub, group = unique("rel_exp_py"), unique("g")
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    with ChaosProxy(server.port, name="chaos-expiry-py") as proxy:
        url = proxy.proxied(server.client_url(hub, user_id="py_exp", roles=BOTH_ROLES, groups=[group]))
        client = WebPubSubClient(url, start_timeout=WAIT_TIMEOUT, ack_timeout=WAIT_TIMEOUT, message_retry_total=0,
                                 reconnect_retry_total=2, reconnect_retry_backoff_factor=0.2)
        client.subscribe(CallbackType.CONNECTED, lambda a: events.put(("connected", a.connection_id)))
        client.subscribe(CallbackType.DISCONNECTED, lambda a: events.put(("disconnected", a.connection_id)))
        client.subscribe(CallbackType.GROUP_MESSAGE, lambda a: events.put(("message", (a.sequence_id, a.data))))

        def next_event(kind: str, timeout: float) -> Any:
            deadline = time.monotonic() + timeout
            while (remaining := deadline - time.monotonic()) > 0:
                try:
                    got_kind, value = events.get(timeout=remaining)
                except queue.Empty:
                    break
                if got_kind == kind:
                    return value
            _fail(f"no {kind} event within {timeout} s", proxy, server)

        opener = threading.Thread(target=client.open, name="sdk-open-py_exp", daemon=True)
        try:
            opener.start()  # open() may sleep its start_timeout (the SDK's lost wake-up): do not wait for it
            first_id = await trio.to_thread.run_sync(next_event, "connected", WAIT_TIMEOUT * 2)
            async with open_json_client(plain_url(server, hub), label="pub", server=server) as pub:
                await pub.publish(group, "before")
                assert await trio.to_thread.run_sync(next_event, "message", WAIT_TIMEOUT) == (1, "before")
                await trio.to_thread.run_sync(proxy.hold, True)
                assert await trio.to_thread.run_sync(proxy.abort_all) == 1
                await pub.publish(group, "lost with the session")
                await wait_until(lambda: len(proxy.records()) >= 2, WAIT_TIMEOUT, "the SDK's recovery attempt", proxy)
                await trio.sleep(SHORT_WINDOW + 1.0)
                await trio.to_thread.run_sync(proxy.hold, False)

                assert await trio.to_thread.run_sync(next_event, "disconnected", WAIT_TIMEOUT * 2) == first_id
                second_id = await trio.to_thread.run_sync(next_event, "connected", WAIT_TIMEOUT * 3)
                assert second_id != first_id
                await pub.publish(group, "after")
                assert await trio.to_thread.run_sync(next_event, "message", WAIT_TIMEOUT) == (1, "after")
        finally:
            await trio.to_thread.run_sync(client.close)

    records = proxy.records()
    report = proxy.describe()
    recoveries = [r for r in records if r.is_recovery]
    assert recoveries and all(r.query["awps_connection_id"] == first_id for r in recoveries), report
    refused = [r for r in recoveries if r.status == 101]
    assert refused and all(r.server_close_code == 1008 and not r.connection_ids for r in refused), report
    fresh = [r for r in records[1:] if not r.is_recovery]
    assert [r.connection_ids for r in fresh][:1] == [[second_id]], report


# ------------------------------------------------------------------------------ bad acks


async def test_acks_never_sent_are_clamped_and_acks_going_backwards_ignored(fabric_server, bystanders):
    """Read through replays: which messages the server still holds after each kind of bad ack."""
    hub, group = unique("rel_acks"), unique("g")
    with ChaosProxy(fabric_server.port, name="chaos-acks") as proxy:
        url = fabric_server.client_url(hub, user_id="acker", roles=BOTH_ROLES)
        async with (
            open_json_client(plain_url(fabric_server, hub), label="pub", server=fabric_server) as pub,
            open_json_client(plain_url(fabric_server, hub), label="plain", server=fabric_server) as plain,
        ):
            await plain.join(group)
            sync_group = unique("sync")

            async def barrier(client: JsonClient) -> None:
                """An acked request after the acks: the server handled them, and kept the socket."""
                await client.join(sync_group)

            async with open_json_client(proxy.proxied(url), reliable=True, label="acker", server=fabric_server) as c:
                await c.join(group)
                cid, token = c.connected["connectionId"], c.connected["reconnectionToken"]
                for i in range(5):
                    await pub.publish(group, f"m{i}")
                assert [await next_data(c) for _ in range(5)] == [(i + 1, f"m{i}") for i in range(5)]
                await c.send_json({"type": "sequenceAck", "sequenceId": 3})
                await c.send_json({"type": "sequenceAck", "sequenceId": 1})  # backwards: ignored
                await barrier(c)
                assert await trio.to_thread.run_sync(proxy.abort_all) == 1

            # replay starts after 3, not after 1
            async with open_json_client(proxy.proxied(recovery_url(url, cid, token)), reliable=True,
                                        label="acker-2", server=fabric_server) as c:
                continue_ack_ids(c, 1000)
                assert c.connected["connectionId"] == cid
                await pub.publish(group, "m5")
                assert [await next_data(c) for _ in range(3)] == [(4, "m3"), (5, "m4"), (6, "m5")]
                await c.send_json({"type": "sequenceAck", "sequenceId": 1_000_000})  # never sent: clamped to 6
                await barrier(c)
                for i in (6, 7):
                    await pub.publish(group, f"m{i}")
                assert [await next_data(c) for _ in range(2)] == [(7, "m6"), (8, "m7")]
                # had the bogus ack been taken at face value, this one would be "backwards"
                await c.send_json({"type": "sequenceAck", "sequenceId": 7})
                await barrier(c)
                await bystanders.check()
                assert await trio.to_thread.run_sync(proxy.abort_all) == 1

            # so exactly m7 is replayed, then live traffic
            async with open_json_client(proxy.proxied(recovery_url(url, cid, token)), reliable=True,
                                        label="acker-3", server=fabric_server) as c:
                continue_ack_ids(c, 2000)
                assert c.connected["connectionId"] == cid
                await pub.publish(group, "m8")
                assert [await next_data(c) for _ in range(2)] == [(8, "m7"), (9, "m8")]

            assert [(await plain.next_message())["data"] for _ in range(9)] == [f"m{i}" for i in range(9)]
            await bystanders.check()
