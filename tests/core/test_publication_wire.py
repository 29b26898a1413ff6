"""The wire form of a publication (what crosses a process boundary) round-trips exactly."""

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.appserver.odata import compile_filter
from fabric.core.payload import DataType, Payload
from fabric.core.publication import Publication

names = st.text(min_size=1, max_size=30)
payloads = st.builds(Payload, st.sampled_from(DataType), st.binary(max_size=2000))
filters = st.sampled_from([None, "userId eq 'a'", "'g1' in groups and connectionId ne 'x'", "userId eq null"])


def fields(pub: Publication) -> tuple:
    return (pub.origin, pub.group, pub.payload, pub.from_user_id, pub.sender_id, pub.no_echo, pub.excluded,
            getattr(pub.filter, "source", None), dict(pub.metadata or {}))


@settings(max_examples=300)
@given(
    group=st.none() | names, payload=payloads, user=st.none() | names, sender=st.none() | names,
    no_echo=st.booleans(), excluded=st.frozensets(names, max_size=5), source=filters,
    metadata=st.none() | st.dictionaries(names, st.text(max_size=50), max_size=4),
    ttl=st.none() | st.integers(1, 300),
)
def test_round_trip(group, payload, user, sender, no_echo, excluded, source, metadata, ttl):
    async def main():
        pub = Publication("group" if group is not None else "server", payload, group=group, from_user_id=user,
                          sender_id=sender, no_echo=no_echo, excluded=excluded,
                          filter=compile_filter(source) if source else None, ttl_seconds=ttl, metadata=metadata)
        back = Publication.from_wire(pub.to_wire(), compile_filter=compile_filter)
        assert fields(back) == fields(pub)
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
