"""One server-side WebSocket: a reader task, a writer task, a bounded outbox.

Rules this module keeps:
- Everything queues encoded frames in the ``Outbox`` (``send_nowait``) and never waits for
  the peer. The writer task writes the socket, with one exception that cannot reorder
  anything: at the end of a reader turn (a receive worked through without yielding), if
  the writer is parked with nothing in flight, the reader sends what its turn queued with
  one non-blocking send and gives the writer whatever the kernel did not take. A request
  answered without the handler yielding (an ack, a publish delivered in place) thus costs
  one scheduler pass, not three (reader; writer woken; writer's batching checkpoint).
- The reader awaits the message handler, so a publisher that outpaces the fabric is slowed
  by TCP (point-to-point backpressure); fan-out to this socket never awaits anything.
- Control frames (pong, ping) skip ahead of queued data; the close frame goes *after*
  queued data (so a ``disconnected`` message is delivered before the close) unless the
  close discards data (slow consumer).
- The close code is recorded once, by whoever closes first: the peer's close frame, our
  close, or the transport failing (1006). ``run`` returns when the socket is finished and
  the stream is closed; it never raises for a peer's misbehaviour.
- Closing is bounded: from the moment a close frame is queued (ours, or our answer to the
  peer's), flushing what is queued before it, sending it and hearing the peer's close must
  all fit in ``close_timeout``, including when the writer is stuck in ``send_all`` because
  the peer stopped reading. Past it, reader and writer are cancelled.
- Only a completed closing handshake (our close frame sent, the peer's received) ends
  with an orderly TCP close (FIN). Any other end (close timeout, abort, cancellation,
  broken stream, protocol error) resets the connection: SO_LINGER with a zero timeout,
  then close, which sends RST and frees the kernel's send and receive buffers at once
  (a FIN close leaves an orphaned kernel socket in FIN_WAIT1, holding its unsent data
  until the kernel gives up probing a peer that stopped reading).
- Inbound messages are bounded by ``max_message_bytes`` across fragments and by
  ``max_message_fragments`` frames (1009 beyond either). The fragment cap exists because
  the cost of a message is per frame as much as per byte: 100,000 one-byte continuation
  frames are a 100 kB message but a second of parsing. The default, 1024, lets a
  maximum-size (1 MiB) message arrive in 1 KiB frames; the clients we know that fragment
  outgoing messages cut them at their write-buffer size (gorilla/websocket: 4 KiB by
  default), so real messages stay far below it. Exceeding
  it closes with 1009 ("message too big", RFC 6455 §7.4.1), not 1008: the message is too
  big to process, counted in frames instead of bytes, and RFC 6455 names 1008 as the code
  for when no more specific one (such as 1009) fits. The application hears about it
  through ``farewell`` exactly as for an oversize message. After that close the reader
  drops what the peer sends without parsing it (no honest client gets there, and the
  rest of such a flood would be the same per-frame work); the close then ends at
  ``close_timeout`` with a reset, as the peer's close frame is never looked for.
- No single peer monopolises the event loop: the reader yields to the scheduler every
  ``EVENTS_PER_YIELD`` wsproto events, so one 64 KiB receive of tiny frames (about 10,000
  events) is worked through in slices between other tasks' turns. Per-event cost is a
  counter decrement; the yield is amortised over the slice.
"""

from __future__ import annotations

import logging
import socket
import struct
import types
from typing import Awaitable, Callable

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError

from .frames import OP_BINARY, OP_PING, OP_PONG, OP_TEXT, encode_frame
from .outbox import Outbox
from .sockets import os_socket

log = logging.getLogger("transport.websocket")

MessageHandler = Callable[[str | bytes], Awaitable[None]]

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_ABNORMAL = 1006
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011

RECEIVE_SIZE = 65536
SEND_CHUNK = 16384  # progress granularity of the writer on streams without a raw socket
#: Default cap on the frames of one inbound message (see the module header).
MAX_MESSAGE_FRAGMENTS = 1024
#: The reader yields to the scheduler after this many wsproto events from one receive.
EVENTS_PER_YIELD = 64
#: Default bound on a close, from the close frame being queued to the stream closed.
CLOSE_TIMEOUT = 2.0

_LINGER_ZERO = struct.pack("ii", 1, 0)  # struct linger {l_onoff=1, l_linger=0}: close sends RST


class WebSocket:
    """A WebSocket whose opening handshake is already done (see ``transport.http``).

    Create it, then ``await run(handler)`` in the task that owns the connection.
    """

    __slots__ = (
        "_stream", "_ws", "outbox", "subprotocol", "max_message_bytes", "max_message_fragments",
        "close_timeout",
        "close_code", "close_reason", "last_received", "_final_queued", "_final_sent", "_peer_closed",
        "_cancel_scope", "messages_received", "bytes_received", "farewell", "peer_closed", "_aborted",
        "send_blocked_since", "_initial", "_raw",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        subprotocol: str | None,
        trailing_data: bytes = b"",
        max_message_bytes: int = 1 << 20,
        max_message_fragments: int = MAX_MESSAGE_FRAGMENTS,
        outbox_max_items: int = 1024,
        outbox_max_bytes: int = 4 << 20,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        if max_message_fragments < 1:
            raise ValueError("max_message_fragments must be at least 1")
        self._stream = stream
        self._raw = os_socket(stream)  # for send_now
        # wsproto's connection (~1 kB) is made when first needed (see ``_wsproto``).
        self._ws: Connection | None = None
        self.outbox = Outbox(outbox_max_items, outbox_max_bytes)
        self.subprotocol = subprotocol
        self.max_message_bytes = max_message_bytes
        self.max_message_fragments = max_message_fragments
        self.close_timeout = close_timeout
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.last_received = trio.current_time()
        #: trio time since which the writer has been waiting for the peer to take data (the
        #: kernel's send buffer is full), or None. Read by a stall check; costs nothing on
        #: the common path, where the kernel takes every batch at once.
        self.send_blocked_since: float | None = None
        self._final_queued = False
        self._final_sent = False
        self._peer_closed: trio.Event | None = None  # created when someone waits for it
        self._cancel_scope: trio.CancelScope | None = None
        self.messages_received = 0
        self.bytes_received = 0
        # Called when the transport itself closes (message too big, protocol error, handler
        # bug) so the application can queue a last message (e.g. system/disconnected).
        self.farewell: Callable[[int, str], None] | None = None
        # True once a close frame came from the peer (it started the close, or answered ours).
        self.peer_closed = False
        self._aborted = False
        #: Bytes that came with the opening handshake (a client that did not wait for the
        #: 101): the reader's first chunk, before it reads the socket.
        self._initial = trailing_data

    # ---- sending (no checkpoints; safe from any task) -------------------------------

    @property
    def closing(self) -> bool:
        return self.close_code is not None

    def send_nowait(self, frame: bytes, *, reply: bool = False, expires_at: float | None = None) -> bool:
        """Queue a frame built by ``encode_frame``. False if over the outbox bounds. With
        ``expires_at`` (trio time) the frame is dropped unsent once that time has passed."""
        return self.outbox.put_nowait(frame, reply=reply, expires_at=expires_at)

    def send_now(self, frame: bytes) -> bool:
        """``send_nowait``, but when nothing is queued or in flight (the writer parked, not
        waiting on the kernel) the frame goes out at once in the caller's task with one
        non-blocking ``send``, instead of waking the writer, which would yield once more
        before writing: two scheduler passes saved for an answer to what the client just
        sent (an ack, a reply). What the kernel does not take is queued, first in line, so
        the order is the same either way. For single frames; fan-out keeps queueing, where
        the writer's batching is worth more than the wake-up. No checkpoint."""
        raw = self._raw
        if raw is not None and not len(self.outbox) and self.send_blocked_since is None and self.close_code is None:
            try:
                sent = raw.send(frame)
            except OSError:  # EAGAIN, or the peer is gone: the writer finds out
                sent = 0
            if sent == len(frame):
                return True
            frame = frame[sent:]
        return self.outbox.put_nowait(frame)

    def send_message_nowait(self, data: str | bytes) -> bool:
        """Encode and queue one message: ``str`` as a text frame, bytes as binary."""
        if isinstance(data, str):
            return self.outbox.put_nowait(encode_frame(data.encode("utf-8"), text=True))
        return self.outbox.put_nowait(encode_frame(data, text=False))

    def ping_nowait(self, payload: bytes = b"") -> None:
        if self.closing:
            return
        ws = self._ws
        if ws is None:  # wsproto saw nothing, so the connection is open
            self.outbox.put_control(_control_frame(OP_PING, payload))
        elif ws.state is ConnectionState.OPEN:
            self.outbox.put_control(ws.send(Ping(payload)))

    def _wsproto(self) -> Connection:
        """wsproto's connection, made on first use: the opening handshake is ours (see
        ``transport.http``) and the reader decodes simple frames itself, so an idle or
        chatty client whose frames are all simple never needs one. wsproto only ever sees
        frames from a frame boundary on, so one made late is in the state one made at the
        start would be in. While there is none, pings and pongs are built without it
        (``_control_frame``). No checkpoint."""
        ws = self._ws
        if ws is None:
            ws = self._ws = Connection(ConnectionType.SERVER)
            ws._events = _EventQueue()  # memory: see _EventQueue
        return ws

    def close(self, code: int = CLOSE_NORMAL, reason: str = "", *, discard: bool = False) -> None:
        """Start the closing handshake (no checkpoint). The first close wins.

        With ``discard`` the queued data frames are dropped first (a slow consumer gets its
        close frame at once instead of after megabytes it is not reading).
        """
        if self.close_code is not None:
            return
        self.close_code = code
        self.close_reason = reason
        if discard:
            self.outbox.discard_data()
        self._queue_final(CloseConnection(code=code, reason=_truncate_reason(reason)))

    def _close_from_transport(self, code: int, reason: str) -> None:
        if self.close_code is None and self.farewell is not None:
            try:
                self.farewell(code, reason)
            except Exception:
                log.exception("farewell hook failed")
        self.close(code, reason)

    def _queue_final(self, event: CloseConnection) -> None:
        self.outbox.close_data()
        if self._final_queued:
            return
        try:
            frame = self._wsproto().send(event)
        except LocalProtocolError:
            self._abort()
            return
        self._final_queued = True
        self.outbox.put_final(frame)  # bypasses the bounds: the close frame always fits
        self._arm_close_deadline()

    def _arm_close_deadline(self) -> None:
        """The whole close (flush, close frame, peer's answer) ends within close_timeout."""
        scope = self._cancel_scope
        if scope is not None:
            scope.deadline = min(scope.deadline, trio.current_time() + self.close_timeout)

    def _set_peer_closed(self) -> None:
        if self._peer_closed is None:
            self._peer_closed = trio.Event()
        self._peer_closed.set()

    def _abort(self) -> None:
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    def _end_writer(self) -> None:
        """The peer is gone (EOF): end the writer. One parked with nothing in flight just
        returns (``Outbox.finish``); one in the middle of a send is cancelled. No checkpoint."""
        if self.outbox.writer_parked:
            self.outbox.finish()
        else:
            self._abort()

    def abort_soon(self, grace: float = 0.0) -> None:
        """Drop the connection without waiting for the peer: now, or after ``grace``
        seconds (enough to flush a close frame to a live peer). No checkpoint."""
        if self.close_code is None:
            self.close_code = CLOSE_ABNORMAL
        scope = self._cancel_scope
        if scope is None:
            self._aborted = True  # not running yet: run() will close the stream at once
        elif grace <= 0:
            scope.cancel()
        else:
            scope.deadline = min(scope.deadline, trio.current_time() + grace)

    # ---- the connection's tasks -------------------------------------------------------

    async def run(self, handler: MessageHandler) -> None:
        """Run reader and writer until the socket is done, then close the stream.

        Checkpoint: yes. Returns normally however the peer behaves; ``close_code`` tells how
        it ended. Cancelling it closes the stream without a handshake.
        """
        try:
            if self._aborted:
                return
            async with trio.open_nursery() as nursery:
                self._cancel_scope = nursery.cancel_scope
                if self._final_queued:  # closed before it ran: the clock starts now
                    self._arm_close_deadline()
                nursery.start_soon(self._reader, handler)
                await self._writer()
                if nursery.child_tasks:  # the reader is still at it (not when it ended the writer)
                    nursery.cancel_scope.cancel()
        finally:
            if self.close_code is None:
                self.close_code = CLOSE_ABNORMAL
            self.outbox.close_data()
            self.outbox.discard_data()
            if not (self._final_sent and self.peer_closed):
                _reset_on_close(self._stream)
            await close_stream(self._stream)

    async def _writer(self) -> None:
        stream = self._stream
        outbox = self.outbox
        # Fast path for real sockets: one non-blocking send() straight on the OS socket, and
        # trio's send_all only for what the kernel did not take. get_batch() already
        # checkpoints once per loop, so cancellation and fairness are unchanged.
        raw = os_socket(stream)
        try:
            while True:
                batch = await outbox.get_batch()
                if batch is None:  # the reader saw the end of the connection (_end_writer)
                    return
                data = batch[0] if len(batch) == 1 else b"".join(batch)
                if raw is not None:
                    try:
                        sent = raw.send(data)
                    except BlockingIOError:
                        sent = 0
                    except OSError as exc:
                        raise trio.BrokenResourceError from exc
                    if sent < len(data):
                        await self._send_rest(stream, raw, memoryview(data)[sent:])
                else:
                    await self._send_rest(stream, None, memoryview(data))
                if self._final_queued and not len(outbox):
                    self._final_sent = True
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if self.close_code is None:
                self.close_code = CLOSE_ABNORMAL
            return
        # Our close frame is out: wait for the peer's (the close deadline bounds the wait).
        if self._peer_closed is None:
            self._peer_closed = trio.Event()
        await self._peer_closed.wait()

    async def _send_rest(self, stream: trio.abc.Stream, raw, view: memoryview) -> None:
        """Send what the kernel did not take at once, noting when the peer last took any
        bytes (``send_blocked_since``) so a stall check can tell "not reading" from "a long
        backlog being read". Checkpoint: yes."""
        while view:
            self.send_blocked_since = trio.current_time()
            if raw is not None:
                await trio.lowlevel.wait_writable(raw)
                try:
                    sent = raw.send(view)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    raise trio.BrokenResourceError from exc
            else:  # any other stream (memory pairs in tests): progress in bounded chunks
                sent = min(len(view), SEND_CHUNK)
                await stream.send_all(view[:sent])
            view = view[sent:]
        self.send_blocked_since = None

    async def _reader(self, handler: MessageHandler) -> None:
        ws = self._ws
        stream = self._stream
        parts: list[str | bytes] = []
        size = 0
        frames = 0  # frames of the message in ``parts``
        max_fragments = self.max_message_fragments
        max_bytes = self.max_message_bytes
        checkpoint = trio.lowlevel.checkpoint
        discard = False  # past the fragment cap: read and drop, parse nothing more
        # The fast path (see ``_simple_frame``) runs while wsproto holds nothing: no buffered
        # bytes, no frame or fragmented message under way. ``held``: the start of a simple
        # frame that has not fully arrived yet (one frame: at most 65,543 bytes).
        fast = _wsproto_idle(ws)
        held: bytearray | None = None
        held_need = 0  # the held frame's whole size (0: its header is not complete either)
        # Real sockets are read with recv() on the OS socket (as the writer sends): trio's
        # receive_some costs a context manager, an async one and, when the peer has not
        # answered yet, a recv() that fails with EAGAIN and its exception, before it waits.
        # Here a read that did not fill the buffer drained the socket, so the next one
        # waits for readability first: one wait and one recv() per message of a
        # request/response exchange. A full read yields once and reads again at once.
        raw = os_socket(stream)
        wait_readable = trio.lowlevel.wait_readable
        drained = True
        outbox = self.outbox
        initial = self._initial
        self._initial = b""
        try:
            while True:
                # The turn ends here: what this turn's messages queued goes out (the reader
                # sends it itself when the writer is idle; see ``_end_turn``).
                self._end_turn(raw)
                if initial:  # what came with the handshake is worked through first
                    data, initial = initial, b""
                elif raw is not None:
                    try:
                        if drained:
                            await wait_readable(raw)
                        else:
                            await checkpoint()
                        data = raw.recv(RECEIVE_SIZE)
                    except BlockingIOError:  # readable was a false alarm
                        drained = True
                        continue
                    except (OSError, trio.ClosedResourceError, trio.BrokenResourceError):
                        data = b""
                    drained = len(data) < RECEIVE_SIZE
                else:
                    try:
                        data = await stream.receive_some(RECEIVE_SIZE)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        data = b""
                if not data:
                    if self.close_code is None:
                        self.close_code = CLOSE_ABNORMAL
                    self._end_writer()
                    return
                self.last_received = trio.current_time()
                self.bytes_received += len(data)
                if discard:
                    continue
                outbox.hold()
                budget = EVENTS_PER_YIELD
                if fast:
                    if held is not None:
                        held += data
                        if len(held) < held_need:
                            continue  # the held frame is still incomplete: nothing to parse
                        data = bytes(held)
                        held = None
                    pos = 0
                    end = len(data)
                    while pos < end:
                        frame = _simple_frame(data, pos, max_bytes)
                        if frame is None:  # not a simple frame: wsproto takes it from here
                            break
                        if type(frame) is int:  # not all here yet: hold it (one frame, bounded)
                            held = bytearray(data[pos:])
                            held_need = frame
                            pos = end
                            break
                        opcode, message, pos = frame
                        budget -= 1
                        if not budget:  # fairness: see the module header
                            budget = EVENTS_PER_YIELD
                            self._end_turn(raw)
                            await checkpoint()
                            outbox.hold()
                        if opcode == OP_PING:
                            ws = self._ws  # made meanwhile if we started closing
                            if ws is None:
                                self.outbox.put_control(_control_frame(OP_PONG, message))
                            elif ws.state is ConnectionState.OPEN:
                                self.outbox.put_control(ws.send(Pong(message)))
                            continue
                        if opcode == OP_PONG or self._final_queued:
                            continue  # closing: nothing more reaches the fabric
                        await self._deliver(handler, message)
                    if pos >= end:
                        continue
                    data = data[pos:]
                    fast = False
                ws = self._wsproto()
                try:
                    ws.receive_data(data)
                except LocalProtocolError:  # data after the close handshake
                    self._set_peer_closed()
                    return
                for event in ws.events():
                    budget -= 1
                    if not budget:  # fairness: see the module header
                        budget = EVENTS_PER_YIELD
                        self._end_turn(raw)
                        await checkpoint()
                        outbox.hold()
                    if isinstance(event, (TextMessage, BytesMessage)):
                        if self._final_queued:
                            continue  # closing: nothing more reaches the fabric
                        chunk = event.data
                        size += len(chunk)
                        if size > max_bytes:
                            self._close_from_transport(CLOSE_TOO_BIG, f"message over {max_bytes} bytes")
                            parts.clear()
                            size = frames = 0
                            continue
                        if event.message_finished and not parts:
                            message = chunk
                        else:
                            # A frame that arrives over several reads is several events but
                            # one fragment: count finished frames only.
                            if event.frame_finished:
                                frames += 1
                                if frames > max_fragments:
                                    self._close_from_transport(
                                        CLOSE_TOO_BIG, f"message in more than {max_fragments} fragments")
                                    parts.clear()
                                    discard = True
                                    break
                            parts.append(chunk)
                            if not event.message_finished:
                                continue
                            message = ("" if isinstance(chunk, str) else b"").join(parts)
                            parts.clear()
                            frames = 0
                        size = 0
                        await self._deliver(handler, message)
                    elif isinstance(event, Ping):
                        if ws.state is ConnectionState.OPEN:
                            self.outbox.put_control(ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        if ws.state in (ConnectionState.REMOTE_CLOSING, ConnectionState.CLOSED):
                            self.peer_closed = True
                        if ws.state is ConnectionState.REMOTE_CLOSING:
                            # The peer started closing: answer, then we are done.
                            if self.close_code is None:
                                self.close_code = event.code
                                self.close_reason = event.reason or ""
                            self._queue_final(event.response())
                        elif ws.state is ConnectionState.OPEN:
                            # wsproto found a protocol violation (bad opcode, bad UTF-8...).
                            self.close(event.code, event.reason or "protocol error")
                        self._set_peer_closed()
                        return
                    elif isinstance(event, Pong):
                        pass
                if not discard and not parts:
                    fast = _wsproto_idle(ws)
        finally:
            outbox.release()
            self._set_peer_closed()

    async def _deliver(self, handler: MessageHandler, message: str | bytes) -> None:
        """Hand one message to the handler; a failing handler closes the socket with 1011.

        The handler is run eagerly: its first step runs right here, inside the reader's
        turn (``Outbox.hold``), and when it finishes without yielding to trio (a publish
        delivered in place, an ack), what it queued is sent at the end of the turn with no
        task woken. If it does yield, what it queued so far is released to the writer
        first, so no frame waits on the handler's awaits. Checkpoint: if the handler has one.
        """
        self.messages_received += 1
        try:
            coro = handler(message)
            step = getattr(coro, "send", None)
            if step is None:  # an awaitable that is not a coroutine
                self.outbox.release()
                try:
                    await coro
                finally:
                    self.outbox.hold()
                return
            try:
                trap = step(None)
            except StopIteration:
                return
            self.outbox.release()
            try:
                await _resume(coro, trap)
            finally:
                self.outbox.hold()
        except trio.Cancelled:
            raise
        except Exception:
            log.exception("message handler failed; closing the socket")
            self._close_from_transport(CLOSE_INTERNAL_ERROR, "internal error")

    def _end_turn(self, raw: socket.socket | None) -> None:
        """End the reader's hold on the outbox. When the writer is parked with nothing in
        flight, send what the turn queued right here with one non-blocking send (what the
        kernel does not take goes back to the writer, ahead of everything); otherwise wake
        the writer as usual. Same bytes, same order, one task instead of two. No
        checkpoint."""
        outbox = self.outbox
        if raw is None or self._final_queued or not outbox.writer_parked or not len(outbox):
            outbox.release()
            return
        batch = outbox.take_nowait()
        data = batch[0] if len(batch) == 1 else b"".join(batch)
        try:
            sent = raw.send(data)
        except OSError:  # BlockingIOError, or a broken socket: the writer will find out
            sent = 0
        if sent < len(data):
            outbox.put_back(data[sent:])

    def statistics(self) -> dict:
        s = self.outbox.statistics()
        return {
            "subprotocol": self.subprotocol, "outbox": s, "close_code": self.close_code,
            "messages_received": self.messages_received, "bytes_received": self.bytes_received,
        }


# ---- the reader's fast path ---------------------------------------------------------------
#
# wsproto decodes a frame through a byte buffer, header and frame objects, an XOR masker and
# an incremental UTF-8 decoder per message: tens of microseconds for a 100-byte message, the
# largest single cost of a request/response round trip (profiled: Socket.IO echo). Nearly
# every frame a client sends is the same simple shape, so the reader decodes that shape
# itself and hands wsproto everything else, unchanged:
#
# - simple: FIN set, no RSV bits, opcode text, binary, ping or pong, masked, a minimal
#   7- or 16-bit length (control frames: at most 125 bytes), at most ``max_message_bytes``,
#   and text that is valid UTF-8;
# - anything else (continuations and fragments, close, bad opcodes or bits, unmasked frames,
#   non-minimal or 64-bit lengths, bad UTF-8, oversize) goes to wsproto from that byte on,
#   so its rules and close codes apply exactly as before. The reader comes back to the fast
#   path once wsproto holds nothing again (``_wsproto_idle``), so wsproto only ever sees
#   whole frames from a frame boundary on, as if the simple frames had never existed.

_DATA_OR_PING = frozenset((0x80 | OP_TEXT, 0x80 | OP_BINARY, 0x80 | OP_PING, 0x80 | OP_PONG))


def _simple_frame(data: bytes, pos: int, max_bytes: int):
    """Decode the simple frame at ``data[pos:]``: ``(opcode, payload, next_pos)`` with the
    payload a ``str`` for text and ``bytes`` otherwise; an ``int`` if it has not all arrived
    (its whole size, or 0 while even its header is incomplete); None if it is not a simple
    frame (wsproto's to decode). No checkpoint."""
    end = len(data)
    if end - pos < 2:
        return 0
    first = data[pos]
    second = data[pos + 1]
    if first not in _DATA_OR_PING or not second & 0x80:
        return None
    n = second & 0x7F
    start = pos + 6
    if n == 126:
        if first != 0x80 | OP_TEXT and first != 0x80 | OP_BINARY:
            return None
        if end - pos < 4:
            return 0
        n = (data[pos + 2] << 8) | data[pos + 3]
        if n < 126:
            return None  # non-minimal length: wsproto's error
        start = pos + 8
    elif n == 127:
        return None
    if n > max_bytes:
        return None
    stop = start + n
    if stop > end:
        return stop - pos
    if n:
        mask = data[start - 4:start]
        payload = (int.from_bytes(data[start:stop], "little")
                   ^ int.from_bytes((mask * ((n >> 2) + 1))[:n], "little")).to_bytes(n, "little")
    else:
        payload = b""
    opcode = first & 0x0F
    if opcode == OP_TEXT:
        try:
            return opcode, payload.decode("utf-8"), stop
        except UnicodeDecodeError:
            return None
    return opcode, payload, stop


@types.coroutine
def _resume(coro, trap):
    """Await the rest of a coroutine whose first step already ran and yielded ``trap`` (a
    trio trap): hand the trap to trio, then relay every answer (sent or thrown) back to the
    coroutine until it returns, exactly as ``await`` would have from the start."""
    while True:
        try:
            answer = yield trap
        except BaseException as exc:
            try:
                trap = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                trap = coro.send(answer)
            except StopIteration as stop:
                return stop.value


def _wsproto_idle(ws: Connection | None) -> bool:
    """wsproto holds nothing: none made yet, or open, no pending event, no buffered byte, no
    frame or fragmented message under way. Reads wsproto's private state; if that ever
    changes shape, the answer is False and every frame simply goes through wsproto (slower,
    same behaviour; tests/transport checks that the fast path is taken)."""
    if ws is None:
        return True
    try:
        proto = ws._proto
        decoder = proto._frame_decoder
        return (ws.state is ConnectionState.OPEN and not ws._events and decoder.header is None
                and not len(decoder.buffer) and proto._message_decoder.opcode is None)
    except AttributeError:
        return False


async def close_stream(stream: trio.abc.Stream) -> None:
    """Close ``stream`` at once. A trio ``SocketStream`` is closed synchronously, as its
    ``aclose`` does before the checkpoint that ``aclose_forcefully`` turns into a raised and
    caught ``Cancelled`` (a cancel scope, a deadline and an exception per connection, for
    nothing: the socket is closed by then); any other stream (TLS, memory pairs in tests)
    gets ``aclose_forcefully`` under a shield. Checkpoint: only for other streams."""
    if type(stream) is trio.SocketStream:
        stream.socket.close()
        return
    with trio.CancelScope(shield=True):
        await trio.aclose_forcefully(stream)


def _control_frame(opcode: int, payload: bytes) -> bytes:
    """An unmasked ping or pong frame, byte for byte as wsproto builds it. No checkpoint."""
    if len(payload) > 125:
        raise ValueError("a control frame's payload is at most 125 bytes (RFC 6455 section 5.5)")
    return bytes((0x80 | opcode, len(payload))) + payload


class _EventQueue(list):
    """wsproto's queue of pending events (``Connection._events``) as a list.

    wsproto makes it an empty ``deque``: 760 bytes per connection, a twentieth of an idle
    connection's memory. It only ever appends to it when told that the transport ended
    (``receive_data(None)``, which this module never calls) and pops from the left while
    yielding events, so an empty list (56 bytes) with ``popleft`` does the same job.
    """

    __slots__ = ()

    def popleft(self):
        return self.pop(0)


def _reset_on_close(stream: trio.abc.Stream) -> None:
    """Make the coming close of a TCP stream abortive (RST, buffers freed). No checkpoint.

    SO_LINGER with l_onoff=1 and l_linger=0 (socket(7)); the ABORT of RFC 9293 §3.10.5.
    Streams that are not sockets (in-process pipes) have nothing to free.
    """
    while not isinstance(stream, trio.SocketStream):
        inner = getattr(stream, "transport_stream", None)  # e.g. trio.SSLStream
        if inner is None:
            return
        stream = inner
    try:
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    except OSError:  # already reset by the peer, or closed
        pass


def _truncate_reason(reason: str) -> str:
    """A close reason must fit in 123 UTF-8 bytes (RFC 6455 §5.5)."""
    raw = reason.encode("utf-8")
    if len(raw) <= 123:
        return reason
    return raw[:123].decode("utf-8", "ignore")
