"""The client-side wire driver: WebSocket clients on trio-websocket, signed REST calls, and a
trio event loop in a background thread that a synchronous Hypothesis state machine drives.

Rules this module keeps:
- Imports nothing from ``fabric``; speaks only what Microsoft documents (see ``endpoint`` and
  ``wire``).
- Every client reads continuously into its own bounded inbox (``MAX_INBOX`` frames), so the
  endpoint never sees the checker as a slow consumer, and every frame, close and REST call is
  written to the run's ``Transcript``.
- Nothing a client or the endpoint does crashes the portal: client tasks catch their own
  failures and record them; every wait has a timeout.
- A client owns its TCP stream (``wrap_client_stream``), so ``drop()`` can end a connection
  without a close frame (a lost transport), and ``send_raw_frame`` can send what a WebSocket
  library refuses to (a text frame that is not UTF-8).
"""

from __future__ import annotations

import os
import ssl
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, wrap_client_stream

from specs.conform.endpoint import Endpoint, mint_rest_token, rest_url
from specs.conform.transcript import Transcript
from specs.conform import protowire
from specs.conform.wire import Frame, decode_frame, pb_render, render_text
from specs.webpubsub_json import Subprotocol

MAX_INBOX = 20_000
MAX_FRAME_BYTES = 16 * 1024 * 1024
CLOSE_WAIT = 2.0

# =========================================================================== the portal


class Portal:
    """A trio loop in a daemon thread. ``run(fn, *args)`` runs ``await fn(*args)`` there and
    returns its result (or raises its exception) in the calling thread."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self.nursery: trio.Nursery | None = None
        self._crash: BaseException | None = None

    def __enter__(self) -> "Portal":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._thread_main, name="conform-trio", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the checker's trio thread did not start")
        if self._crash is not None:
            raise RuntimeError(f"the checker's trio thread failed: {self._crash!r}")

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # recorded for start(); the thread must not die loudly
            self._crash = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def run(self, fn: Callable, *args):
        if self._token is None:
            raise RuntimeError("portal not started")
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def spawn(self, fn: Callable, *args) -> None:
        """Start ``fn(*args)`` as a long-lived task in the portal's nursery (from the trio thread)."""
        if self.nursery is None:
            raise RuntimeError("portal not started")
        self.nursery.start_soon(fn, *args)

    def close(self) -> None:
        if self._token is not None and self._stop is not None and self._thread is not None:
            try:
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            except trio.RunFinishedError:
                pass
            self._thread.join(10)
        self._token = None


# =========================================================================== WebSocket clients


class HandshakeFailed(Exception):
    """The upgrade did not succeed.

    Attributes:
        status: the HTTP status of a rejection, or None (no HTTP answer at all).
        body: the start of the rejection body.
    """

    def __init__(self, status: int | None, body: bytes, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass
class CloseInfo:
    code: int | None
    reason: str
    by: str  # "server", "client", "drop", "error"


def mask_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One masked client frame (RFC 6455 §5.2), built by hand."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head.append(0x80 | n)
    elif n < 65536:
        head.append(0x80 | 126)
        head += struct.pack("!H", n)
    else:
        head.append(0x80 | 127)
        head += struct.pack("!Q", n)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 65536 else _mask_big(payload, mask)
    return bytes(head) + mask + masked


def _mask_big(payload: bytes, mask: bytes) -> bytes:
    m = int.from_bytes((mask * ((len(payload) + 3) // 4))[: len(payload)], "big") if payload else 0
    return (int.from_bytes(payload, "big") ^ m).to_bytes(len(payload), "big") if payload else b""


class WireClient:
    """One WebSocket client. Methods are async and run in the portal's trio thread."""

    def __init__(self, label: str, transcript: Transcript, protocol: Subprotocol | None) -> None:
        self.label = label
        self.transcript = transcript
        self.protocol = protocol
        self.frames: list[Frame] = []
        self.closed: CloseInfo | None = None
        self.subprotocol: str | None = None
        self.overflow = False
        self._closing = False
        self.quiet_pongs = 0  # fence pongs still expected: not written to the transcript
        self.quiet_data = False  # data messages are kept but not written (a volume check summarizes)
        self._ws = None
        self._stream: trio.abc.Stream | None = None
        self._changed = trio.Event()
        self._opened = trio.Event()
        self._failure: HandshakeFailed | None = None
        self._done = trio.Event()

    # ------------------------------------------------------------------ opening

    async def open(self, nursery: trio.Nursery, endpoint: Endpoint, resource: str, subprotocols: list[str],
                   timeout: float) -> None:
        """Open the connection, or raise ``HandshakeFailed``. The reader runs in ``nursery``
        (the portal's), so the connection outlives this call."""
        self.transcript.add(self.label, "*", f"connect {resource.split('?')[0]}"
                            + (f" subprotocol={','.join(subprotocols)}" if subprotocols else " (no subprotocol)"))
        with trio.move_on_after(timeout) as scope:
            try:
                if endpoint.secure:
                    stream = await trio.open_ssl_over_tcp_stream(
                        endpoint.host, endpoint.port, ssl_context=ssl.create_default_context(), https_compatible=True)
                else:
                    stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
            except OSError as exc:
                raise HandshakeFailed(None, b"", f"cannot connect to {endpoint.host}:{endpoint.port}: {exc.strerror or exc}") from None
            self._stream = stream
            nursery.start_soon(self._run, stream, endpoint.host_header, resource, subprotocols)
            await self._opened.wait()
        if scope.cancelled_caught:
            await self._abort()
            raise HandshakeFailed(None, b"", f"no WebSocket handshake answer within {timeout:g} s")
        if self._failure is not None:
            raise self._failure

    async def _run(self, stream, host: str, resource: str, subprotocols: list[str]) -> None:
        try:
            async with trio.open_nursery() as inner:
                ws = await wrap_client_stream(inner, stream, host, resource, subprotocols=subprotocols or None,
                                              message_queue_size=64, max_message_size=MAX_FRAME_BYTES)
                self._ws = ws
                self.subprotocol = ws.subprotocol
                self._opened.set()
                try:
                    while True:
                        msg = await ws.get_message()
                        self._append(msg)
                except ConnectionClosed as exc:
                    reason = exc.reason
                    if self.closed is None:
                        code = reason.code if reason is not None else None
                        text = (reason.reason or "") if reason is not None else ""
                        by = "client" if self._closing else ("server" if code not in (None, 1006) else "drop")
                        self._set_closed(CloseInfo(code, text, by))
                with trio.move_on_after(CLOSE_WAIT):
                    await _wait_tcp_close(ws)
                inner.cancel_scope.cancel()
        except BaseException as group:  # noqa: BLE001 - everything is recorded, nothing escapes
            if isinstance(group, trio.Cancelled):
                raise
            exc = _first(group)
            if isinstance(exc, trio.Cancelled):
                raise
            if not self._opened.is_set():
                if isinstance(exc, ConnectionRejected):
                    body = bytes(exc.body or b"")
                    self._failure = HandshakeFailed(exc.status_code, body[:400],
                                                    f"upgrade refused with HTTP {exc.status_code}: {_body_line(body)}")
                else:
                    self._failure = HandshakeFailed(None, b"", f"WebSocket handshake failed: {exc!r}"[:300])
                self.transcript.add(self.label, "*", str(self._failure))
                self._opened.set()
            elif self.closed is None:
                self._set_closed(CloseInfo(None, f"client error {exc!r}"[:200], "error"))
        finally:
            self._done.set()
            if self._stream is not None:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(self._stream)

    # ------------------------------------------------------------------ inbox

    def _append(self, msg: str | bytes) -> None:
        if len(self.frames) >= MAX_INBOX:
            self.overflow = True
        else:
            frame = decode_frame(self.protocol, msg)
            self.frames.append(frame)
            if frame.kind == "pong" and self.quiet_pongs > 0:
                self.quiet_pongs -= 1
            elif frame.kind in ("message", "raw") and self.quiet_data:
                pass
            else:
                self.transcript.add(self.label, "<", frame.render)
        self._poke()

    def _set_closed(self, info: CloseInfo) -> None:
        self.closed = info
        what = {"server": "closed by the endpoint", "client": "closed", "drop": "transport lost",
                "error": "failed"}[info.by]
        self.transcript.add(self.label, "*", f"{what}" + (f" code={info.code}" if info.code is not None else "")
                            + (f" reason={info.reason!r}" if info.reason else ""))
        self._poke()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with trio.move_on_after(timeout):
            while not predicate():
                await self._changed.wait()
            return True
        return predicate()

    async def wait_closed(self, timeout: float) -> bool:
        return await self.wait_until(lambda: self.closed is not None, timeout)

    # ------------------------------------------------------------------ sending

    async def send(self, data: str | bytes, note: str | None = None, *, quiet: bool = False) -> bool:
        """Send one message; False when the connection is already closed. ``quiet``: a fence
        ping, kept out of the transcript together with its pong."""
        if quiet:
            self.quiet_pongs += 1
        else:
            self.transcript.add(self.label, ">", note or _render_sent(self.protocol, data))
        if self._ws is None or self.closed is not None:
            return False
        try:
            await self._ws.send_message(data)
        except ConnectionClosed:
            return False
        return True

    async def send_raw_frame(self, opcode: int, payload: bytes, note: str) -> bool:
        """Write one hand-built frame to the stream (the WebSocket library would refuse it)."""
        self.transcript.add(self.label, ">", note)
        if self._ws is None or self._stream is None or self.closed is not None:
            return False
        lock = getattr(self._ws, "_stream_lock", None)  # trio-websocket serializes its writes with it
        try:
            if lock is not None:
                async with lock:
                    await self._stream.send_all(mask_frame(opcode, payload))
            else:
                await self._stream.send_all(mask_frame(opcode, payload))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    # ------------------------------------------------------------------ ending

    async def close(self, code: int = 1000, reason: str = "") -> CloseInfo | None:
        """Send a close frame and wait (bounded) for the endpoint's answer."""
        if self._ws is None or self.closed is not None:
            return self.closed
        self.transcript.add(self.label, ">", f"close frame code={code}")
        self._closing = True
        with trio.move_on_after(CLOSE_WAIT):
            try:
                await self._ws.aclose(code, reason or None)
            except Exception:
                pass
        ws_closed = self._ws.closed
        if self.closed is None:
            self._set_closed(CloseInfo(ws_closed.code if ws_closed else None,
                                       (ws_closed.reason or "") if ws_closed else "no close answer", "client"))
        return self.closed

    async def drop(self) -> None:
        """End the TCP connection without a close frame."""
        self.transcript.add(self.label, "*", "drop the transport (no close frame)")
        if self.closed is None:
            self.closed = CloseInfo(None, "dropped by the checker", "drop")
        await self._abort()

    async def _abort(self) -> None:
        if self._stream is not None:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self._stream)
        self._poke()


async def _wait_tcp_close(ws) -> None:
    event = getattr(ws, "_close_handshake", None)
    if event is not None:
        await event.wait()


def _first(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _body_line(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip().replace("\n", " ")
    return render_text(text, 160) if text else "(no body)"


def _render_sent(protocol: Subprotocol | None, msg: str | bytes) -> str:
    if isinstance(msg, str):
        return render_text(msg)
    if protocol is not None and protocol.binary:
        try:
            return pb_render(protowire.decode("UpstreamMessage", msg))
        except protowire.ProtoError:
            pass
    return "bin:" + render_text(msg.hex())


# =========================================================================== REST


@dataclass
class RestResult:
    status: int | None  # None: no HTTP answer
    body: bytes
    content_type: str
    error: str = ""


class RestClient:
    """Signed data-plane calls (``Authorization: Bearer`` HS256, aud = the request URL)."""

    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False,
                                             limits=httpx.Limits(max_connections=8))
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def call(self, method: str, path: str, *, query: list[tuple[str, str]] | None = None,
                   body: bytes | None = None, content_type: str | None = None, key: str | None = None,
                   transcript: Transcript | None = None, note: str = "", signed: bool = True) -> RestResult:
        url = rest_url(self.endpoint, path, query)
        headers = {"Accept": "application/json"}
        if signed:
            headers["Authorization"] = "Bearer " + mint_rest_token(self.endpoint, url, key=key)
        if content_type is not None:
            headers["Content-Type"] = content_type
        client = await self._http()
        shown = path.split("/api/hubs/", 1)[-1]
        q = "&".join(f"{k}={v}" for k, v in (query or ()))
        if transcript is not None:
            transcript.add("rest", ">", f"{method} {shown}{'?' + q if q else ''}{' ' + note if note else ''}")
        try:
            resp = await client.request(method, url, content=body, headers=headers)
            result = RestResult(resp.status_code, resp.content[:4096], resp.headers.get("content-type", ""))
        except httpx.HTTPError as exc:
            result = RestResult(None, b"", "", f"{type(exc).__name__}: {exc}"[:200])
        if transcript is not None:
            outcome = str(result.status) if result.status is not None else result.error
            body = f" {_body_line(result.body)}" if result.body and (result.status or 0) >= 300 else ""
            transcript.add("rest", "<", f"{outcome}{body}")
        return result
