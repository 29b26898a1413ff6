"""specs.streams, specs.invocation, specs.metadata: the tables are complete and consistent, the
names are the client spec's, and the pure functions keep their rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from specs import invocation, metadata, streams
from specs.streams import ClosedName, NackName, StreamEffect, StreamEvent, StreamState, TerminalName


def test_the_stream_table_covers_every_state_and_event():
    assert set(streams.TABLE) == {(s, e) for s in StreamState for e in StreamEvent} - {
        (StreamState.ABSENT, StreamEvent.IDLE_TIMEOUT),
        (StreamState.ABSENT, StreamEvent.TRANSPORT_LOST),
        (StreamState.ABSENT, StreamEvent.CONNECTION_ENDED),
    }
    assert len(streams.TABLE) == len(streams.TRANSITIONS)
    for t in streams.TRANSITIONS:
        ends = StreamEffect.PUBLISH_TERMINAL in t.effects
        assert ends == (t.state is StreamState.OPEN and t.target is StreamState.ABSENT), t
        if ends:
            assert t.event in streams.ENDINGS and StreamEffect.DISARM_TIMER in t.effects, t
    assert "| open | data_gap | NACK |" in streams.render_markdown()


def test_stream_names_are_the_client_specs():
    assert {n.value for n in NackName} == {"InvalidSequenceId", "TransientError"}
    assert {n.value for n in ClosedName} == {"StreamNotFound", "Forbidden", "BadRequest", "InternalServerError",
                                             "IdleTimeout"}
    assert {"UserError", "IdleTimeout", "InternalServerError", "Forbidden", "Cancelled"} <= {n.value for n in TerminalName}
    assert streams.DEFAULT_IDLE_TIMEOUT_MS == 300_000


def test_the_invocation_table():
    assert len(invocation.TABLE) == len(invocation.TRANSITIONS)
    running = [t for t in invocation.TRANSITIONS if t.state is invocation.InvocationState.RUNNING]
    # a running invocation ends by exactly one of: an answer, an error, a cancel, the transport's end
    assert {t.event for t in running if t.target is invocation.InvocationState.ABSENT} == {
        invocation.InvocationEvent.HANDLER_ANSWERED, invocation.InvocationEvent.HANDLER_FAILED,
        invocation.InvocationEvent.CANCEL, invocation.InvocationEvent.TRANSPORT_ENDED}
    assert set(invocation.ERROR_WHEN) == set(invocation.InvokeErrorName)
    assert "| running | cancel |" in invocation.render_markdown()


@pytest.mark.parametrize(("value", "ok"), [("1", True), ("a" * 1024, True), ("", False), ("a" * 1025, False),
                                            ("a\x00", False), ("caf\u00e9", True), ("\ud800", False),
                                            ("a\x85b", False)])
def test_identifiers(value, ok):
    assert (invocation.identifier_problem("id", value) is None) is ok


def test_fold_headers_like_the_emulator():
    headers = [("X-WebPubSub-Metadata-A", "1"), ("x-webpubsub-metadata-a", "x, 2 "), ("X-WEBPUBSUB-METADATA-B", ""),
               ("X-WebPubSub-Metadata-", "no key"), ("X-Other", "no"), ("x-webpubsub-metadata", "no dash")]
    assert metadata.fold_headers(headers, metadata.REST_HEADER_PREFIX) == {"a": "2", "b": ""}


@given(st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=5))
def test_normalize_agrees_with_the_rule(raw):
    out, problem = metadata.normalize(raw.items())
    lowered = {}
    for k, v in raw.items():
        lowered.setdefault(k.lower(), []).append(v)
    if any(len(vs) > 1 for vs in lowered.values()):
        assert problem is not None and out is None
    elif not raw:
        assert (out, problem) == (None, None)
    elif problem is None:
        assert out == {k.lower(): v for k, v in raw.items()}
        assert metadata.metadata_problem(out) is None
    else:
        assert metadata.metadata_problem({k.lower(): v for k, v in raw.items()}) == problem


def test_header_text_reads_utf8_or_latin1():
    assert metadata.header_text("café".encode("utf-8").decode("latin-1")) == "café"
    assert metadata.header_text("caf\xe9") == "caf\xe9"  # latin-1 bytes that are not UTF-8
    assert metadata.header_text("plain") == "plain"
    assert metadata.header_text("日本") == "日本"  # not latin-1 at all: as it is
