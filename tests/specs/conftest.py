"""Fixtures of the spec-table tests: ``pb``, the protoc-generated protobuf oracle."""

from tests.webpubsub.proto.oracle import pb  # noqa: F401 (fixture)
