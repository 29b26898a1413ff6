"""Fixtures for the interop tests; the machinery lives in `interop_support.py` (read its header)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

# Test modules here `import interop_support`; make that work in any pytest import mode.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from interop_support import FabricServer, SdkClient, start_server, stop_server, unique  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).resolve().parent == Path(_HERE):
            item.add_marker(pytest.mark.interop)


@pytest.fixture(scope="module")
def fabric_server() -> Iterator[FabricServer]:
    """One server per test module; tests use distinct hubs/groups so they do not interfere."""
    server = start_server()
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def sdk_clients(fabric_server: FabricServer) -> Iterator[Callable[..., SdkClient]]:
    """Factory: `sdk_clients(hub, user_id=..., roles=..., groups=..., protocol=..., open=True)`.

    Default roles: joinLeaveGroup and sendToGroup. Every client made is closed at teardown.
    """
    made: list[SdkClient] = []

    def make(
        hub: str,
        *,
        user_id: str | None = None,
        roles: tuple[str, ...] | list[str] = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"),
        groups: tuple[str, ...] | list[str] = (),
        protocol: Any = None,
        open: bool = True,
    ) -> SdkClient:
        user_id = user_id or unique("user")
        url = fabric_server.client_url(hub, user_id=user_id, roles=roles, groups=groups)
        client = SdkClient(url, protocol=protocol, label=user_id, server=fabric_server)
        made.append(client)
        if open:
            client.open()
        return client

    try:
        yield make
    finally:
        for client in made:
            try:
                client.close()
            except Exception as exc:  # a close failure must not hide the test's own result
                print(f"closing {client.label} failed: {exc!r}", file=sys.stderr)
