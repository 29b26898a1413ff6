"""A publication's Web PubSub frames (fabric.webpubsub.formats) equal what the codecs and the frame builder make."""

from hypothesis import given
from hypothesis import strategies as st

from fabric.core.payload import DataType, Payload
from fabric.core.publication import Publication
from fabric.webpubsub import codec_json, codec_protobuf, codec_simple, formats
from transport.frames import encode_frame

payloads = st.one_of(
    st.text(max_size=300).map(Payload.text),
    st.binary(max_size=70000).map(Payload.binary),
    st.integers().map(lambda i: Payload(DataType.JSON, str(i).encode())),
)


@given(payloads, st.integers(1, 2**64 - 1), st.booleans(), st.text(min_size=1, max_size=20))
def test_frames_match_codecs(payload, sequence_id, group_origin, group):
    pub = Publication("group", payload, group=group, from_user_id="u") if group_origin else Publication("server", payload)
    body = codec_json.encode_group_message(group, payload, "u") if group_origin else codec_json.encode_server_message(payload)
    assert formats.json_frame(pub) == encode_frame(body, text=True)
    assert formats.json_frame_with_sequence(pub, sequence_id) == encode_frame(codec_json.with_sequence_id(body, sequence_id), text=True)
    pb = codec_protobuf.encode_group_message(group, payload, "u") if group_origin else codec_protobuf.encode_server_message(payload)
    assert formats.protobuf_frame(pub) == encode_frame(pb, text=False)
    assert formats.protobuf_frame_with_sequence(pub, sequence_id) == encode_frame(codec_protobuf.with_sequence_id(pb, sequence_id), text=False)
    is_text, data = codec_simple.frame_for(payload)
    assert formats.simple_frame(pub) == encode_frame(data, text=is_text)
