"""The Web PubSub wire formats of a publication, as the core's ``WireFormat`` keys.

Rules this module keeps:
- Each format is encoded at most once per publication (``Publication.encoded`` caches it);
  every recipient of that format gets the same bytes.
- The reliable variants add the per-connection ``sequenceId`` to cached parts: for JSON the
  frame header plus the body up to the id is cut once per publication and id width, so each
  recipient's frame is one concatenation (``head + b"1234}"``).
- A publication's metadata and, for a stream fragment or terminal
  (``fabric.webpubsub.streams.StreamPublication``), its stream info are part of every
  PubSub format; simple clients get the payload alone.
"""

from __future__ import annotations

from fabric.core.publication import Publication, WireFormat
from fabric.webpubsub import codec_json, codec_protobuf, codec_simple
from transport.frames import encode_frame


def _json_body(publication: Publication) -> bytes:
    if publication.origin == "group":
        return codec_json.encode_group_message(publication.group, publication.payload, publication.from_user_id,
                                               metadata=publication.metadata,
                                               stream=getattr(publication, "stream", None))
    return codec_json.encode_server_message(publication.payload, metadata=publication.metadata)


def _protobuf_body(publication: Publication) -> bytes:
    if publication.origin == "group":
        return codec_protobuf.encode_group_message(publication.group, publication.payload, publication.from_user_id,
                                                   metadata=publication.metadata,
                                                   stream=getattr(publication, "stream", None))
    return codec_protobuf.encode_server_message(publication.payload, metadata=publication.metadata)


def _simple_frame(publication: Publication) -> bytes:
    is_text, data = codec_simple.frame_for(publication.payload)
    return encode_frame(data, text=is_text)


JSON_BODY = WireFormat("json.webpubsub.azure.v1/body", _json_body)
JSON_FRAME = WireFormat("json.webpubsub.azure.v1", lambda p: encode_frame(p.encoded(JSON_BODY), text=True))
PROTOBUF_BODY = WireFormat("protobuf.webpubsub.azure.v1/body", _protobuf_body)
PROTOBUF_FRAME = WireFormat("protobuf.webpubsub.azure.v1",
                            lambda p: encode_frame(p.encoded(PROTOBUF_BODY), text=False))
SIMPLE_FRAME = WireFormat("simple", _simple_frame)


def _json_head(width: int) -> WireFormat:
    """The reliable JSON frame cut just before a ``width``-byte ``<id>}`` tail."""

    def encode(publication: Publication) -> bytes:
        prefix = publication.encoded(JSON_BODY)[:-1] + b',"sequenceId":'
        return encode_frame(prefix + b"0" * width, text=True)[:-width]

    return WireFormat(f"json.reliable.webpubsub.azure.v1/head{width}", encode)


_JSON_HEADS = [_json_head(width) for width in range(22)]  # "1}" .. a 20-digit id and "}"


def json_frame(publication: Publication) -> bytes:
    return publication.encoded(JSON_FRAME)


def json_frame_with_sequence(publication: Publication, sequence_id: int) -> bytes:
    """What ``codec_json.with_sequence_id`` makes, framed, for one recipient."""
    tail = b"%d}" % sequence_id
    return publication.encoded(_JSON_HEADS[len(tail)]) + tail


def protobuf_frame(publication: Publication) -> bytes:
    return publication.encoded(PROTOBUF_FRAME)


def protobuf_frame_with_sequence(publication: Publication, sequence_id: int) -> bytes:
    plain = not publication.metadata and type(publication) is Publication  # no field after data
    body = codec_protobuf.with_sequence_id(publication.encoded(PROTOBUF_BODY), sequence_id, plain=plain)
    return encode_frame(body, text=False)


def simple_frame(publication: Publication) -> bytes:
    return publication.encoded(SIMPLE_FRAME)

