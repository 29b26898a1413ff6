"""specs.webpubsub_protobuf: the catalogue matches the independently written .proto (through
protoc's descriptors), the decisions are well formed, and the codec uses the catalogue."""

from __future__ import annotations

import pytest

from fabric.core.payload import DataType
from fabric.webpubsub import codec_protobuf as cp
from specs import _decisions
from specs import webpubsub_json as js
from specs import webpubsub_protobuf as ps

_TYPE_NAMES = {
    9: "string",
    12: "bytes",
    8: "bool",
    13: "uint32",
    4: "uint64",
    3: "int64",
}


def _descriptor(pb, name: str):
    if name == "google.protobuf.Any":
        from google.protobuf import any_pb2

        return any_pb2.Any.DESCRIPTOR
    d = getattr(pb, name.split(".")[0]).DESCRIPTOR
    for part in name.split(".")[1:]:
        d = d.nested_types_by_name[part]
    return d


def _field_type(f) -> str:
    if f.message_type is not None:
        if f.message_type.GetOptions().map_entry:
            return ps.MAP_STRING_STRING
        full = f.message_type.full_name
        return full if full.startswith("google.") else full.removeprefix(ps.PACKAGE + ".")
    return _TYPE_NAMES[f.type]


def test_every_catalogued_message_matches_the_proto(pb):
    for name, message in ps.MESSAGES.items():
        d = _descriptor(pb, name)
        assert sorted(f.number for f in d.fields) == [f.number for f in message.fields], name
        for f in message.fields:
            df = d.fields_by_number[f.number]
            assert df.name == f.name, name
            assert _field_type(df) == f.type, (name, f.name)
            oneof = df.containing_oneof
            real_oneof = oneof if oneof is not None and not oneof.name.startswith("_") else None
            assert (real_oneof.name if real_oneof else None) == f.oneof, (name, f.name)
            if f.label == "repeated":
                assert df.is_repeated
            elif f.type in ps.SCALAR_WIRE_TYPES and f.oneof is None:
                # explicit presence exactly for the catalogue's optional scalars
                assert df.has_presence == (f.label == "optional"), (name, f.name)


def test_the_proto_has_no_message_the_catalogue_lacks(pb):
    seen = set()

    def walk(d, prefix):
        if d.GetOptions().map_entry:
            return
        seen.add(prefix + d.name)
        for nested in d.nested_types:
            walk(nested, prefix + d.name + ".")

    for top in pb.DESCRIPTOR.message_types_by_name.values():
        walk(top, "")
    assert seen == set(ps.OWN_MESSAGES)
    assert pb.DESCRIPTOR.package == ps.PACKAGE


def test_tags():
    assert ps.tag("UpstreamMessage", "ping_message") == 74
    assert ps.tag("DownstreamMessage.SystemMessage.DisconnectedMessage", "reason") == 0x12
    assert ps.MESSAGES["DownstreamMessage.SystemMessage.DisconnectedMessage"].fields[0].number == 2
    assert ps.tag("DownstreamMessage.DataMessage", "sequence_id") == 0x20


def test_upstream_kinds_cover_the_oneof():
    oneof = [f.name for f in ps.MESSAGES["UpstreamMessage"].fields if f.oneof == "message"]
    assert sorted(oneof) == sorted(ps.UPSTREAM_KINDS)
    supported = {k.json_type for k in ps.UPSTREAM_KINDS.values() if k.supported}
    assert supported == js.SUPPORTED_CLIENT_TYPES
    unsupported = {k.json_type for k in ps.UPSTREAM_KINDS.values() if not k.supported}
    assert unsupported <= js.KNOWN_UNSUPPORTED_CLIENT_TYPES
    assert ps.UPSTREAM_KINDS["ping_message"].number == 9


def test_data_fields_cover_every_data_type():
    assert set(ps.DATA_FIELDS) == set(DataType)
    members = {f.name for f in ps.MESSAGES["MessageData"].fields}
    assert set(ps.DATA_FIELDS.values()) == members
    # The JSON catalogue names the same members.
    for dt, enc in js.DATA_ENCODINGS.items():
        assert enc.protobuf_field == ps.DATA_FIELDS[dt]


def test_decisions_are_well_formed_and_unique_across_specs():
    ids = [d.id for d in ps.DECISIONS]
    assert len(ids) == len(set(ids))
    assert not set(ids) & {d.id for d in js.DECISIONS}
    for d in ps.DECISIONS:
        assert d.id.startswith("protobuf.")
        assert d.question and d.decision and d.reason
    table = _decisions.render_decisions_markdown(ps.DECISIONS)
    assert table.count("\n") == len(ps.DECISIONS) + 2


def test_json_data_decision_cites_both_sdks():
    decision = next(d for d in ps.DECISIONS if d.id == "protobuf.json-data")
    assert "json_data" in decision.decision
    for evidence in ("webPubSubProtobufProtocolBase.ts", "WebPubSubProtobufProtocolHelper.cs"):
        assert evidence in decision.reason


@pytest.mark.parametrize("name", sorted(ps.OWN_MESSAGES))
def test_codec_has_a_decoder_table_for_every_message(name):
    table = cp._TABLES[name]
    assert {entry[0] for entry in table.values()} == {f.name for f in ps.MESSAGES[name].fields}
