"""Fixtures of the Web PubSub edge's tests: ``fab`` (an in-process fabric) and ``pb`` (the
protoc-generated protobuf oracle, ``tests/webpubsub/proto``)."""

from tests.fabric_support import fab  # noqa: F401 (fixture)
from tests.webpubsub.proto.oracle import pb  # noqa: F401 (fixture)
