"""codec_simple: the one payload <-> frame mapping for simple WebSocket clients."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabric.core.payload import DataType, Payload
from fabric.webpubsub.codec_simple import frame_for, payload_from_frame
from specs.webpubsub_json import DATA_ENCODINGS


@pytest.mark.parametrize("data_type", list(DataType))
def test_frame_kind_matches_the_spec_table(data_type):
    is_text, data = frame_for(Payload(data_type, b"body"))
    assert is_text is (DATA_ENCODINGS[data_type].simple_frame == "text")
    assert data == b"body"


def test_reference_examples():
    # §2.6: a JSON string arrives with its quotes; binary/protobuf as binary frames
    assert frame_for(Payload.json(b'"quoted"')) == (True, b'"quoted"')
    assert frame_for(Payload.text("héllo")) == (True, "héllo".encode())
    assert frame_for(Payload(DataType.PROTOBUF, b"\x0a\x00")) == (False, b"\x0a\x00")
    assert payload_from_frame("hi") == Payload.text("hi")
    assert payload_from_frame(b"\x00\xff") == Payload.binary(b"\x00\xff")
    assert payload_from_frame(bytearray(b"x")) == Payload.binary(b"x")
    assert payload_from_frame(memoryview(b"y")) == Payload.binary(b"y")


@given(st.text())
def test_text_frames_round_trip(text):
    assert frame_for(payload_from_frame(text)) == (True, text.encode("utf-8"))


@given(st.binary())
def test_binary_frames_round_trip(data):
    payload = payload_from_frame(data)
    assert payload.data_type is DataType.BINARY
    assert frame_for(payload) == (False, data)


def test_lone_surrogate_text_does_not_raise():
    assert payload_from_frame("a\ud800").data_type is DataType.TEXT
