"""``fabric conform`` catches broken behaviour today: a proxy in front of ``fabric serve``
breaks it on the wire (``mutating_proxy.py``), and the suite must find and shrink each break.

The same mutations inside the server (``FABRIC_TEST_MUTATION``) are ``test_mutations.py``.
"""

from __future__ import annotations

import pytest

from tests.conform.mutating_proxy import MUTATIONS, MutatingProxy
from tests.conform.mutation_support import assert_catches
from tests.conform.serve_support import ACCESS_KEY

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_suite_catches_wire_mutation(fabric_serve, mutation) -> None:
    host_port = fabric_serve.endpoint.rsplit("/", 1)[-1]
    host, port = host_port.rsplit(":", 1)
    with MutatingProxy(host, int(port), mutation) as proxy:
        print(assert_catches(proxy.connection_string(ACCESS_KEY), mutation, hub=f"proxy{mutation.replace('-', '')}"))
    assert not proxy.errors, proxy.errors
