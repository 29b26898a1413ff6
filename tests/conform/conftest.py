"""Fixtures of the conformance tests: a ``fabric serve`` process and the protobuf oracle."""

from __future__ import annotations

import pytest

from tests.conform.serve_support import ServerProcess, start_fabric, stop
from tests.webpubsub.proto.oracle import pb  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def fabric_serve() -> ServerProcess:
    server = start_fabric()
    try:
        yield server
    finally:
        stop(server)
