"""Group streams of one connection (client spec §3.6), sans-IO: ``StreamTable`` performs
``specs.streams.TRANSITIONS`` and says what to send and publish; the connection does it.

Rules this module keeps:
- Never imports trio and never reads a clock: ``now`` is passed in, deadlines are returned
  (the connection arms them on the hub's timer service, ``fabric.webpubsub.background``).
- Each method classifies its message into one ``specs.streams.StreamEvent`` and returns a
  ``Step`` with the effects of that row: a reply to the publisher (``ack``/``nack``/``closed``),
  a fragment to publish, a terminal message to publish, a deadline to arm. Nothing else
  changes state, so a model of the table can check this class step by step.
- Sequence ids are exact (``specs.streams``): publish only ``expected``; lower is a duplicate
  (re-ack), higher or 0 a nack; the idle deadline moves only on accepted fragments and
  keepalives. A stream whose fragment is being published is ``busy``: its idle timer then
  re-arms instead of ending it, so a terminal can never overtake a fragment.
- Bounded: at most ``specs.streams.MAX_STREAMS_PER_CONNECTION`` open streams per connection.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import msgspec

from fabric.core.publication import Publication, register_kind
from fabric.webpubsub.codec_json import StreamData, StreamEnd, StreamInfo, StreamStart
from specs import streams as spec
from specs.streams import ClosedName, NackName, StreamEvent, TerminalName


@register_kind
class StreamPublication(Publication):
    """A group publication that is a stream fragment or terminal: ``stream`` is its
    ``StreamInfo`` (encoded by ``fabric.webpubsub.formats`` into the subscribers' message).

    It crosses processes as the publication kind ``"stream"``: the stream info travels as
    the wire form's extension and arrives as a ``StreamPublication`` again, so subscribers
    on other nodes get the same stream id, sequence id and end-of-stream (with its error) as
    local ones."""

    __slots__ = ("stream",)
    kind = "stream"

    def __init__(self, stream: StreamInfo, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stream = stream

    def wire_extension(self) -> list:
        s = self.stream
        return [s.stream_id, s.sequence_id, s.end_of_stream, s.error_name, s.error_message, s.user_error_code]

    def restore_extension(self, value: Any) -> None:
        try:
            stream_id, sequence_id, end, name, message, code = msgspec.convert(value, _StreamWire)
        except (msgspec.ValidationError, ValueError, TypeError) as exc:
            raise ValueError(f"not a publication: bad stream info: {exc}") from None
        if self.origin != "group" or not stream_id or sequence_id < 1:
            raise ValueError("not a publication: stream info needs a group, a stream id and a sequence id >= 1")
        self.stream = StreamInfo(stream_id, sequence_id, end, name, message, code)


_StreamWire = tuple[str, int, bool, str | None, str | None, str | None]


class OpenStream:
    """One open stream: where it goes and what it expects next."""

    __slots__ = ("stream_id", "group", "expected", "no_echo", "idle_seconds", "deadline", "metadata",
                 "ttl_seconds", "busy", "timer")

    def __init__(self, start: StreamStart, now: float) -> None:
        self.stream_id = start.stream_id
        self.group = start.group
        self.expected = 1
        self.no_echo = start.no_echo
        self.idle_seconds = start.idle_timeout_ms / 1000.0
        self.deadline = now + self.idle_seconds
        self.metadata: Mapping[str, str] | None = start.metadata
        self.ttl_seconds = start.ttl_seconds
        self.busy = 0
        self.timer = None  # the connection's handle on the armed idle timer

    def __repr__(self) -> str:
        return f"<OpenStream {self.stream_id!r} -> {self.group!r} expects {self.expected}>"


class Step:
    """What one stream message (or timer) does, in the order the connection performs it.

    ``event``: the table row's ``StreamEvent``. ``reply``: ``("ack", expected)``,
    ``("nack", expected, name, message)``, ``("closed", name or None, message)`` or None.
    ``fragment``: the ``StreamInfo`` to publish with the message's payload. ``terminal``: the
    ``StreamInfo`` of the terminal message to publish (empty text). ``stream``: the record
    (group, noEcho, metadata, TTL for the publication). ``arm``: True when ``stream.deadline``
    needs a (new) timer.
    """

    __slots__ = ("event", "reply", "fragment", "terminal", "stream", "arm")

    def __init__(self, event: StreamEvent, reply=None, fragment=None, terminal=None, stream=None,
                 arm: bool = False) -> None:
        self.event = event
        self.reply = reply
        self.fragment = fragment
        self.terminal = terminal
        self.stream = stream
        self.arm = arm

    def __repr__(self) -> str:
        return (f"Step({self.event.value}, reply={self.reply!r}, fragment={self.fragment!r}, "
                f"terminal={self.terminal!r}, arm={self.arm})")


def _terminal(stream: OpenStream, name: str | None, message: str | None = None,
              user_error_code: str | None = None) -> StreamInfo:
    return StreamInfo(stream.stream_id, stream.expected, True, name, message, user_error_code)


_MESSAGES = {
    ClosedName.STREAM_NOT_FOUND: "The stream does not exist on this connection.",
    ClosedName.FORBIDDEN: "The connection does not have permission to send to the group.",
    ClosedName.IDLE_TIMEOUT: "The stream was idle for longer than its idle timeout.",
}


class StreamTable:
    """The open streams of one connection (see the module's rules)."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: dict[str, OpenStream] = {}

    def __len__(self) -> int:
        return len(self._open)

    def get(self, stream_id: str) -> OpenStream | None:
        return self._open.get(stream_id)

    def _end(self, stream: OpenStream, event: StreamEvent, closed: ClosedName | None, message: str,
             terminal_name: TerminalName | None) -> Step:
        del self._open[stream.stream_id]
        terminal = _terminal(stream, terminal_name.value if terminal_name is not None else None,
                             message if terminal_name is not None else None)
        reply = ("closed", closed.value if closed is not None else None, message)
        return Step(event, reply, None, terminal, stream)

    def start(self, msg: StreamStart, permitted: bool, now: float) -> Step:
        """A stream start (its fields already valid). ``permitted``: may send to the group."""
        existing = self._open.get(msg.stream_id)
        if existing is not None:
            return self._end(existing, StreamEvent.START, ClosedName.BAD_REQUEST,
                             f"Stream '{msg.stream_id}' is already open on this connection.",
                             TerminalName.BAD_REQUEST)
        if not permitted:
            return Step(StreamEvent.START_FORBIDDEN,
                        ("closed", ClosedName.FORBIDDEN.value, _MESSAGES[ClosedName.FORBIDDEN]))
        if len(self._open) >= spec.MAX_STREAMS_PER_CONNECTION:
            return Step(StreamEvent.START_INVALID, ("closed", ClosedName.BAD_REQUEST.value,
                        f"A connection may have at most {spec.MAX_STREAMS_PER_CONNECTION} open streams."))
        stream = self._open[msg.stream_id] = OpenStream(msg, now)
        return Step(StreamEvent.START, ("ack", 1), stream=stream, arm=True)

    def invalid(self, stream_id: str, message: str, *, start: bool) -> Step:
        """An invalid stream message with a readable streamId: a start (``start``) or a
        fragment/end. An open stream with that id ends BadRequest."""
        stream = self._open.get(stream_id)
        event = StreamEvent.START_INVALID if start else StreamEvent.DATA_INVALID
        if stream is None:
            if start:
                return Step(event, ("closed", ClosedName.BAD_REQUEST.value, message))
            return Step(event, ("closed", ClosedName.STREAM_NOT_FOUND.value, _MESSAGES[ClosedName.STREAM_NOT_FOUND]))
        return self._end(stream, event, ClosedName.BAD_REQUEST, message, TerminalName.BAD_REQUEST)

    def data(self, msg: StreamData, permitted: Callable[[str], bool], now: float) -> Step:
        """A fragment or keepalive. ``permitted(group)``: may the publisher still send there
        (asked only for the next fragment)."""
        stream = self._open.get(msg.stream_id)
        if stream is None:
            event = StreamEvent.KEEPALIVE if msg.sequence_id is None else StreamEvent.DATA_NEXT
            return Step(event, ("closed", ClosedName.STREAM_NOT_FOUND.value, _MESSAGES[ClosedName.STREAM_NOT_FOUND]))
        seq = msg.sequence_id
        if seq is None:
            stream.deadline = now + stream.idle_seconds
            return Step(StreamEvent.KEEPALIVE, stream=stream)
        expected = stream.expected
        if seq == expected:
            if not permitted(stream.group):
                return self._end(stream, StreamEvent.DATA_NEXT_FORBIDDEN, ClosedName.FORBIDDEN,
                                 _MESSAGES[ClosedName.FORBIDDEN], TerminalName.FORBIDDEN)
            stream.expected = expected + 1
            stream.deadline = now + stream.idle_seconds
            return Step(StreamEvent.DATA_NEXT, ("ack", expected + 1), StreamInfo(stream.stream_id, seq), None, stream)
        if 0 < seq < expected:
            return Step(StreamEvent.DATA_DUPLICATE, ("ack", expected), stream=stream)
        return Step(StreamEvent.DATA_GAP, ("nack", expected, NackName.INVALID_SEQUENCE_ID.value,
                                           f"Expected streamSequenceId {expected}, got {seq}."), stream=stream)

    def end(self, msg: StreamEnd) -> Step:
        stream = self._open.get(msg.stream_id)
        if stream is None:
            return Step(StreamEvent.END, ("closed", ClosedName.STREAM_NOT_FOUND.value,
                                          _MESSAGES[ClosedName.STREAM_NOT_FOUND]))
        del self._open[msg.stream_id]
        if msg.has_error:
            terminal = _terminal(stream, TerminalName.USER_ERROR.value, msg.error_message, msg.user_error_code)
        else:
            terminal = _terminal(stream, None)
        return Step(StreamEvent.END, ("closed", None, ""), None, terminal, stream)

    def expire(self, stream_id: str, now: float) -> Step | None:
        """The idle timer of ``stream_id`` fired. None when there is nothing to do; a Step with
        only ``arm`` when the deadline moved (or a fragment is being published)."""
        stream = self._open.get(stream_id)
        if stream is None:
            return None
        if stream.busy or stream.deadline > now:
            if stream.busy and stream.deadline <= now:
                stream.deadline = now + min(stream.idle_seconds, 1.0)
            return Step(StreamEvent.KEEPALIVE, stream=stream, arm=True)
        return self._end(stream, StreamEvent.IDLE_TIMEOUT, ClosedName.IDLE_TIMEOUT,
                         _MESSAGES[ClosedName.IDLE_TIMEOUT], TerminalName.IDLE_TIMEOUT)

    def close_all(self) -> list[Step]:
        """The connection ended: every open stream ends Cancelled (no reply: nobody listens)."""
        steps = []
        for stream in list(self._open.values()):
            del self._open[stream.stream_id]
            steps.append(Step(StreamEvent.CONNECTION_ENDED, None, None,
                              _terminal(stream, TerminalName.CANCELLED.value, "The publisher's connection ended."),
                              stream))
        return steps
