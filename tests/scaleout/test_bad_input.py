"""Bad input to a fabric of several nodes: a bad Redis URL, refused credentials, a Redis too
old for RESP3 (clear errors before binding, never a crash); foreign, forged or malformed
messages on our channels (counted drops, the nodes carry on); and nothing of one hub leaks
into another."""

import socket
import subprocess
import sys
import threading

import pytest
import trio

from fabric.core.broker_redis import channel_name
from fabric.core.commands import Command, Reply, decode_message, encode_message
from fabric.core.payload import Payload
from fabric.core.publication import Publication
from tests.webpubsub.client_support import ROLES, connect

FABRIC = [sys.executable, "-m", "fabric", "serve", "--host", "127.0.0.1", "--port", "0"]


def serve_fails(*args, timeout=30):
    out = subprocess.run([*FABRIC, *args], capture_output=True, text=True, timeout=timeout, check=False,
                         env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert "Endpoint=" not in out.stdout, "it must fail before it listens"
    return out.returncode, out.stderr


@pytest.mark.parametrize("url, words", [
    ("http://127.0.0.1:6379", "redis://, rediss:// or unix://"),
    ("redis://127.0.0.1:notaport/0", "bad Redis URL"),
    ("redis://127.0.0.1:6379/zero", "the db must be a number"),
    ("redis://127.0.0.1:6379/0?timeout=3", "unknown parameter"),
])
def test_bad_redis_url_is_a_configuration_error(url, words):
    code, err = serve_fails("--redis", url)
    assert code == 2 and words in err, err


def test_workers_without_a_broker_is_a_clear_error():
    code, err = serve_fails("--workers", "2")
    assert code == 2 and "--workers > 1 needs a broker" in err, err


def test_unreachable_redis_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    code, err = serve_fails("--redis", f"redis://127.0.0.1:{port}/0")
    assert code == 1 and "cannot use the broker" in err and "cannot connect to Redis" in err, err


def test_refused_credentials_are_a_clear_error_without_the_password(redis_server_factory):
    redis = redis_server_factory(password="s3cret-pw")
    code, err = serve_fails("--redis", f"redis://:wrong-pw@127.0.0.1:{redis.port}/0")
    assert code == 1 and "refused the credentials" in err and "wrong-pw" not in err, err
    code, err = serve_fails("--redis", f"redis://127.0.0.1:{redis.port}/0")
    assert code == 1 and "requires a password" in err, err


def test_a_redis_without_resp3_is_a_clear_error():
    """What Redis 5 answers to HELLO."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def answer():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                conn.sendall(b"-ERR unknown command `HELLO`, with args beginning with: `3`, \r\n")

    threading.Thread(target=answer, daemon=True).start()
    try:
        code, err = serve_fails("--redis", f"redis://127.0.0.1:{port}/0")
    finally:
        listener.close()
    assert code == 1 and "Redis 6 or later" in err, err


def test_wire_forms_refuse_what_is_not_ours():
    assert type(decode_message(encode_message(Command("join", ("c", "g"), request_id=3, reply_to="n\x00h\x00x")))) \
        is Command
    reply = decode_message(encode_message(Reply(3, [["c", None]], "n\x00h\x00x")))
    assert reply.value == [["c", None]]
    publication = Publication("group", Payload.text("x"), group="g")
    publication.wire_id = b"0123456789abcdef"
    back = decode_message(encode_message(Reply(1, {"entries": [publication]})))
    assert back.value["entries"][0].wire_id == b"0123456789abcdef"
    for junk in (b"", b"\x93\xa4cmd1\x01", b"\x96\xa4cmd1\xa4nope\x90\xc0\x01\xc0", b"\x82\xa1a\x01\xa1b\x02",
                 b"\x93\xa4rep1\xc0", b"hello", encode_message(Command("join", ()))[:-1]):
        with pytest.raises(ValueError):
            decode_message(junk)


async def test_foreign_and_forged_messages_are_counted_drops(redis_server):
    from tests.scaleout.conftest import open_nodes

    async with open_nodes(2, "redis", redis_server) as (a, b):
        c = await connect(a, user_id="u", roles=ROLES)
        hub = b.hub("chat")
        assert await hub.add_connection_to_group("g", c.connection_id)
        prefix = a.bus.prefix
        magic_forged = b"fab2" + b"X" * 16
        for topic in ("g\x00chat\x00g", f"c\x00chat\x00{c.connection_id}", "h\x00chat", "u\x00chat\x00u"):
            channel = channel_name(prefix, topic)
            for data in (b"another app's message", magic_forged + b"\xc1garbage",
                         magic_forged + encode_message(Command("join", ())),  # wrong arity: a failed command
                         magic_forged + b"\x96\xa4cmd1\xa7explode\x90\xc0\x01\xc0",  # unknown op
                         magic_forged + encode_message(Reply(99999, "forged", None))):  # nobody asked
                await trio.to_thread.run_sync(redis_server.command, "PUBLISH", channel, data)
        await hub.send_to_group("g", "still fine")
        while True:
            msg = await c.receive_json()
            if msg.get("data") == "still fine":
                break
        stats = a.bus.statistics()
        assert stats["drops"].get("foreign", 0) >= 4 and stats["drops"].get("malformed", 0) >= 8, stats
        assert await hub.connection_exists(c.connection_id)
        assert a.hub("chat").statistics()["counters"]["commands_failed"] >= 1


async def test_nothing_of_one_hub_leaks_into_another(nodes):
    async with nodes(2) as (a, b):
        one = await connect(a, "one", user_id="u", roles=ROLES)
        two = await connect(a, "two", user_id="u", roles=ROLES)
        h1, h2 = b.hub("one"), b.hub("two")
        assert await h1.add_user_to_group("g", "u")
        assert not await h2.group_exists("g")
        assert await h2.list_connections_in_group("g") == []
        await h1.send_to_group("g", "for one")
        await h1.send_to_user("u", "user of one")
        await h1.send_to_all("all of one")
        assert not await h2.connection_exists(one.connection_id)
        assert not await h2.add_connection_to_group("g", one.connection_id)
        assert not await h2.grant_permission("sendToGroup", one.connection_id)
        await h2.close_connection(one.connection_id)
        await h1.close_all_connections(excluded=[one.connection_id])
        got = sorted([(await one.receive_json())["data"] for _ in range(3)])  # three topics: no order between them
        assert got == ["all of one", "for one", "user of one"]
        await h2.send_to_connection(two.connection_id, "two is alive")
        assert (await two.receive_json())["data"] == "two is alive"
        assert await h1.connection_exists(one.connection_id)
