"""Fixtures of the protobuf codec tests: the protoc-generated oracle from ``tests/proto``."""

from __future__ import annotations

import importlib.util
import pathlib

_PROTO_CONFTEST = pathlib.Path(__file__).resolve().parents[1] / "proto" / "conftest.py"
_spec = importlib.util.spec_from_file_location("_fabric_tests_proto_oracle", _PROTO_CONFTEST)
assert _spec is not None and _spec.loader is not None
_oracle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_oracle)

#: Session fixture: the generated module (``pb.UpstreamMessage``, ``pb.DownstreamMessage``).
pb = _oracle.pb
generate_webpubsub_pb2 = _oracle.generate_webpubsub_pb2
