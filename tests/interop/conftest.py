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

from interop_support import (  # noqa: E402
    FabricServer,
    NodeClient,
    SdkClient,
    start_server,
    stop_server,
    unique,
)


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


@pytest.fixture(scope="module")
def echo_server() -> Iterator[FabricServer]:
    """`embedded_echo_server.py`: hub `echo` answers user events echo/broadcast/fail."""
    server = start_server("echo")
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def sdk_clients(fabric_server: FabricServer) -> Iterator[Callable[..., SdkClient]]:
    """Factory: `sdk_clients(hub, user_id=..., roles=..., groups=..., protocol=..., open=True)`.

    Default roles: joinLeaveGroup and sendToGroup. Every client made is closed at teardown.
    Pass `server=` to use another server fixture (e.g. `echo_server`).
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
        server: FabricServer | None = None,
    ) -> SdkClient:
        server = server or fabric_server
        user_id = user_id or unique("user")
        url = server.client_url(hub, user_id=user_id, roles=roles, groups=groups)
        client = SdkClient(url, protocol=protocol, label=user_id, server=server)
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


@pytest.fixture
def node_clients(fabric_server: FabricServer) -> Iterator[Callable[..., NodeClient]]:
    """Factory of started `NodeClient`s (see interop_support). Teardown ends every driver and
    fails if one did not exit 0.

    `node_clients(hub, user_id=..., roles=..., groups=..., protocol="json"|"reliable",
    mint="js"|"python", server=..., start=True)`: with mint="js" (default) the JavaScript
    service SDK mints the token from the connection string; with "python", the Python one.
    """
    made: list[NodeClient] = []

    def make(
        hub: str,
        *,
        user_id: str | None = None,
        roles: tuple[str, ...] | list[str] = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"),
        groups: tuple[str, ...] | list[str] = (),
        protocol: str = "reliable",
        mint: str = "js",
        server: FabricServer | None = None,
        start: bool = True,
    ) -> NodeClient:
        server = server or fabric_server
        user_id = user_id or unique("node")
        if mint == "python":
            url = server.client_url(hub, user_id=user_id, roles=roles, groups=groups)
            client = NodeClient(server, url=url, protocol=protocol, label=user_id)
        else:
            client = NodeClient(server, hub=hub, user_id=user_id, roles=roles, groups=groups,
                                protocol=protocol, label=user_id)
        made.append(client)
        if start:
            client.start()
        return client

    yield make
    failures = []
    for client in made:
        rc = client.close()
        if rc != 0:
            failures.append(f"node driver {client.label} exited with {rc}\n{client.describe()}")
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)
