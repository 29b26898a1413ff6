"""The HTTP front's two hooks for long-held and size-checked requests: ``request.disconnected``
(a handler learns that its client went away) and ``body_limit`` (an application answers its own,
smaller body bound)."""

import trio
import trio.testing

from transport.http import HttpLimits, Request, Response, serve_connection
from transport.memory import memory_stream_pair


class ParkingApp:
    """``/park`` waits until its client goes away (or ``release`` is set); others answer at once."""

    def __init__(self, *, limit: int | None = None):
        self.limit = limit
        self.requests: list[Request] = []
        self.gone = trio.Event()
        self.release = trio.Event()
        self.woken = 0

    def body_limit(self, request: Request) -> int | None:
        return self.limit if request.path.startswith("/limited") else None

    async def handle_http(self, request: Request) -> Response:
        self.requests.append(request)
        if request.path == "/park":
            event = request.watch_disconnect(self._wake)
            assert event is request.disconnected  # one watch, one event
            with trio.move_on_after(5):
                while not event.is_set() and not self.release.is_set():
                    await trio.sleep(0.01)
            if event.is_set():
                self.gone.set()
            return Response(200, b"released")
        if request.body_over_limit:
            return Response(413, b"mine")
        return Response(200, b"body=" + request.body)

    def _wake(self) -> None:
        self.woken += 1

    async def handle_websocket(self, request):
        return Response(404)


async def _read_all(stream, until: bytes | None = None) -> bytes:
    out = bytearray()
    with trio.fail_after(5):
        while until is None or until not in out:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            out += chunk
    return bytes(out)


async def test_disconnected_is_set_when_the_client_leaves_a_parked_request(nursery):
    app = ParkingApp()
    client, server = memory_stream_pair()
    nursery.start_soon(serve_connection, server, app, HttpLimits())
    await client.send_all(b"GET /park HTTP/1.1\r\nHost: h\r\n\r\n")
    with trio.fail_after(5):
        while not app.requests:
            await trio.sleep(0.01)
    await client.aclose()
    with trio.fail_after(5):
        await app.gone.wait()
    assert app.woken == 1


async def test_watching_loses_no_pipelined_request(nursery):
    app = ParkingApp()
    client, server = memory_stream_pair()
    nursery.start_soon(serve_connection, server, app, HttpLimits())
    # The second request arrives while the first is parked and watched: h11 keeps it.
    await client.send_all(b"GET /park HTTP/1.1\r\nHost: h\r\n\r\nPOST /next HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi")
    with trio.fail_after(5):
        while not app.requests:
            await trio.sleep(0.01)
    await trio.sleep(0.05)
    app.release.set()
    data = await _read_all(client, b"body=hi")
    assert data.count(b"HTTP/1.1 200") == 2 and b"released" in data and data.endswith(b"body=hi")
    assert not app.gone.is_set()


async def test_unwatched_requests_and_requests_made_elsewhere(nursery):
    app = ParkingApp()
    client, server = memory_stream_pair()
    nursery.start_soon(serve_connection, server, app, HttpLimits())
    for i in range(3):  # no watch started: keep-alive as before
        await client.send_all(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n\r\n%d" % i)
        assert (await _read_all(client, b"body=%d" % i)).startswith(b"HTTP/1.1 200")
    assert all(r.peer is not None and r.peer.event is None for r in app.requests)
    assert Request("GET", "/", "/", "/", {}, ()).disconnected is None


async def test_body_limit_below_the_front_lets_the_application_answer(nursery):
    app = ParkingApp(limit=10)
    client, server = memory_stream_pair()
    nursery.start_soon(serve_connection, server, app, HttpLimits(max_body_bytes=1000))
    await client.send_all(b"POST /limited HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nsmall")
    assert (await _read_all(client, b"body=small")).startswith(b"HTTP/1.1 200")
    await client.send_all(b"POST /limited HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n" + b"x" * 100)
    data = await _read_all(client)  # answered, then closed: the rest of the body is unread
    assert data.startswith(b"HTTP/1.1 413") and data.endswith(b"mine") and b"connection: close" in data.lower()
    assert app.requests[-1].body_over_limit and app.requests[-1].body == b""


async def test_body_limit_above_the_front_changes_nothing(nursery):
    app = ParkingApp(limit=10_000)
    client, server = memory_stream_pair()
    nursery.start_soon(serve_connection, server, app, HttpLimits(max_body_bytes=50))
    await client.send_all(b"POST /limited HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n" + b"x" * 100)
    data = await _read_all(client)
    assert data.startswith(b"HTTP/1.1 413") and b"PayloadTooLarge" in data
    assert not app.requests  # the front answered
