"""Connections waiting in the kernel's backlog together are served in the order they were
accepted (transport.http's order rule): a client that sends two requests at once on two
connections has them handled in the order they arrived, as Node does. The official
Engine.IO suite depends on it (a long-poll GET, then the POST that closes the session)."""

from __future__ import annotations

import socket

import trio
import trio.testing

from transport.http import Response, serve_tcp

CONNECTIONS = 12
ROUNDS = 6  # trio reverses a scheduler pass's order half the time: six rounds miss 1 in 64


class Recorder:
    def __init__(self) -> None:
        self.paths: list[str] = []

    async def handle_http(self, request):
        self.paths.append(request.raw_path)
        return Response(200, b"ok", ())

    async def handle_websocket(self, request):
        return Response(404, b"", ())


async def test_a_backlog_of_connections_is_served_in_accept_order(nursery):
    app = Recorder()
    port = await nursery.start(serve_tcp, app, "127.0.0.1", 0)
    for round_ in range(ROUNDS):
        app.paths.clear()
        clients = []
        # Blocking stdlib sockets: connect() completes in the kernel's backlog and the
        # request is in the kernel before the server runs again (no checkpoint here).
        for i in range(CONNECTIONS):
            c = socket.create_connection(("127.0.0.1", port))
            c.sendall(f"GET /{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            clients.append(c)
        with trio.fail_after(10):
            while len(app.paths) < CONNECTIONS:
                await trio.sleep(0.01)
        assert app.paths == [f"/{i}" for i in range(CONNECTIONS)], f"round {round_}"
        for c in clients:
            c.close()
