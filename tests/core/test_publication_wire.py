"""The wire form of a publication (what crosses a process boundary) round-trips exactly,
an edge's kind of publication (a Web PubSub stream fragment or terminal) included."""

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.appserver.odata import compile_filter
from fabric.core.payload import DataType, Payload
from fabric.core.publication import _ENCODER, Publication, _WireOfKind, register_kind
from fabric.webpubsub.codec_json import StreamInfo
from fabric.webpubsub.streams import StreamPublication

names = st.text(min_size=1, max_size=30)
payloads = st.builds(Payload, st.sampled_from(DataType), st.binary(max_size=2000))
filters = st.sampled_from([None, "userId eq 'a'", "'g1' in groups and connectionId ne 'x'", "userId eq null"])
optional_text = st.none() | st.text(max_size=40)
streams = st.builds(StreamInfo, st.text(min_size=1, max_size=64), st.integers(1, 2**63 - 1), st.booleans(),
                    optional_text, optional_text, optional_text)


def fields(pub: Publication) -> tuple:
    return (pub.origin, pub.group, pub.payload, pub.from_user_id, pub.sender_id, pub.no_echo, pub.excluded,
            getattr(pub.filter, "source", None), dict(pub.metadata or {}))


@settings(max_examples=300)
@given(
    group=st.none() | names, payload=payloads, user=st.none() | names, sender=st.none() | names,
    no_echo=st.booleans(), excluded=st.frozensets(names, max_size=5), source=filters,
    metadata=st.none() | st.dictionaries(names, st.text(max_size=50), max_size=4),
    ttl=st.none() | st.integers(1, 300), stream=st.none() | streams,
)
def test_round_trip(group, payload, user, sender, no_echo, excluded, source, metadata, ttl, stream):
    async def main():
        kwargs = {"group": group, "from_user_id": user, "sender_id": sender, "no_echo": no_echo,
                  "excluded": excluded, "filter": compile_filter(source) if source else None, "ttl_seconds": ttl,
                  "metadata": metadata}
        if stream is not None and group is not None:  # a stream fragment or terminal
            pub = StreamPublication(stream, "group", payload, **kwargs)
        else:
            pub = Publication("group" if group is not None else "server", payload, **kwargs)
        back = Publication.from_wire(pub.to_wire(), compile_filter=compile_filter)
        assert type(back) is type(pub)
        assert fields(back) == fields(pub)
        assert getattr(back, "stream", None) == getattr(pub, "stream", None)
        if ttl is None:
            assert back.expires_at is None
        else:  # a wall-clock deadline in between: equal within clock-reading jitter
            assert back.expires_at == pytest.approx(pub.expires_at, abs=0.05)
        assert not back.expired()

    trio.run(main)


async def test_expiry_survives_the_trip(autojump_clock):
    pub = Publication("server", Payload.text("x"), ttl_seconds=5)
    data = pub.to_wire()
    back = Publication.from_wire(data)
    assert not back.expired()
    await trio.sleep(4.9)  # trio clock only: the wall-clock deadline was converted on arrival
    assert not back.expired()
    await trio.sleep(0.2)
    assert back.expired() and pub.expired()


@given(st.binary(max_size=200))
def test_garbage_is_a_value_error(data):
    try:
        pub = Publication.from_wire(data)
    except ValueError as exc:
        assert str(exc).startswith(("not a publication", "a filtered publication"))
    else:
        assert isinstance(pub, Publication)


def test_foreign_msgpack_and_filter_without_compiler_are_refused():
    import msgspec

    for foreign in (msgspec.msgpack.encode({"hello": "world"}), msgspec.msgpack.encode(["pub2", "group"]), b""):
        with pytest.raises(ValueError, match="not a publication"):
            Publication.from_wire(foreign)
    filtered = Publication("server", Payload.text("x"), filter=compile_filter("userId eq 'a'"))
    with pytest.raises(ValueError, match="filter compiler"):
        Publication.from_wire(filtered.to_wire())


def test_a_plain_publication_keeps_the_form_nodes_without_kinds_read():
    """12 elements, as before publication kinds existed: a node of the previous release reads
    plain publications from an upgraded one."""
    data = Publication("group", Payload.text("x"), group="g").to_wire()
    assert data[:6] == b"\x9c\xa4pub1"
    assert StreamPublication(StreamInfo("s", 1), "group", Payload.text("x"), group="g").to_wire()[:6] == b"\x9e\xa4pub1"


def wire_of_kind(kind, extension, origin="group", group="g"):
    return _ENCODER.encode(_WireOfKind(origin, "text", b"", None, group, None, None, False, None, None, None,
                                       kind, extension))


@pytest.mark.parametrize(("kind", "extension", "message"), [
    ("stream", "junk", "bad stream info"),
    ("stream", ["s", 1], "bad stream info"),
    ("stream", ["s", 1, "yes", None, None, None], "bad stream info"),
    ("stream", ["s", 0, False, None, None, None], "sequence id >= 1"),
    ("stream", ["", 1, False, None, None, None], "a stream id"),
    ("no-such-kind", None, "kind 'no-such-kind'"),
    (None, {"stream": 1}, "an extension without a kind"),
])
def test_bad_kinds_and_extensions_are_refused(kind, extension, message):
    with pytest.raises(ValueError, match=message) as caught:
        Publication.from_wire(wire_of_kind(kind, extension))
    assert str(caught.value).startswith("not a publication")


def test_a_stream_from_the_server_is_refused():
    with pytest.raises(ValueError, match="needs a group"):
        Publication.from_wire(wire_of_kind("stream", ["s", 1, False, None, None, None], origin="server", group=None))


def test_register_kind_refuses_a_nameless_or_taken_kind():
    class Nameless(Publication):
        __slots__ = ()

    class Impostor(Publication):
        __slots__ = ()
        kind = "stream"

    with pytest.raises(TypeError, match="non-empty string"):
        register_kind(Nameless)
    with pytest.raises(ValueError, match="'stream' is StreamPublication's already"):
        register_kind(Impostor)
    assert register_kind(StreamPublication) is StreamPublication  # idempotent for its own class
