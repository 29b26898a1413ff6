"""One client connection: its identity, its permissions, and its subprotocol's rules.

Rules this module keeps:
- ``deliver_nowait`` is the fan-out path: it never awaits, never encodes more than the
  per-connection part (the reliable ``sequenceId``), and applies the slow-consumer policy
  when the outbox is past its bounds: close (default, code ``SLOW_CONSUMER``) or drop and
  count ``lagged``.
- ``on_message`` is the inbound path: called by the transport's reader and awaited, so a
  client that sends faster than the fabric routes is slowed by TCP.
- Every request with an ``ackId`` gets exactly one ack; a repeated ackId gets
  ``Duplicate`` (remembered for the last ``ACK_MEMORY`` ackIds).
- A malformed frame closes the connection (Microsoft Learn's JSON subprotocol reference: the
  service "declines the client"); an invalid-but-parseable request is answered with an ack
  error (an invalid invoke with an invokeResponse, an invalid stream message with a
  streamClosed); no error of a client's making escapes this module.
- Metadata travels with the message it came with (``specs.metadata``): into the publication,
  to the handler, and from the handler's answer into the reply.
- Invocations (``specs.invocation``) run as tasks of the hub's background service
  (``fabric.webpubsub.background``), not on the reader, so a ``cancelInvocation`` can stop one;
  at most ``MAX_INVOCATIONS_PER_CONNECTION`` wait at once, and all stop when the transport ends.
- Streams (``specs.streams``) are the sans-IO ``StreamTable`` of ``fabric.webpubsub.streams``;
  this module performs its steps: publish a fragment before acking it, publish a terminal
  before ``streamClosed``, arm idle timers on the hub's timer service, and end every open
  stream (``Cancelled``) when the logical connection ends.
- Group presence: the hub changes ``groups`` on join and leave; ``_Groups`` turns a real
  change into a ``joined``/``left`` notification for a handler that wants it, queued on the
  hub's notifier with ``connected``/``disconnected`` (never awaited here), so the handler sees
  them in the order they happened.
"""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING

import trio

from fabric.core.events import UNCHANGED, ConnectionContext, call_user_event, handles_system_event
from fabric.core.payload import DataType, Payload
from fabric.core.permissions import Permissions
from fabric.core.publication import Publication
from fabric.webpubsub import codec_json, codec_protobuf, codec_simple, formats
from fabric.webpubsub.background import background_for, background_nowait
from fabric.webpubsub.reliable import ReplayBuffer, reconnection_token, valid_reconnection_token
from fabric.webpubsub.streams import Step, StreamPublication, StreamTable
from specs import errors as spec_errors
from specs import invocation as spec_invocation
from specs.streams import StreamEvent
from specs.lifecycle import Effect, Lifecycle, LifecycleEvent, State
from transport.frames import encode_frame
from transport.websocket import WebSocket

if TYPE_CHECKING:
    from fabric.core.hub import Hub

log = logging.getLogger(__name__)

ACK_MEMORY = 1024

ErrorName = spec_errors.AckError
Situation = spec_errors.CloseSituation
#: The close reason a reliable session's old socket gets when a recovery replaces it.
_REPLACED = "another socket recovered this session"
#: How long that old socket may take to be sent its close frame before it is reset.
_REPLACED_GRACE = 0.1

InvokeError = spec_invocation.InvokeErrorName
MAX_INVOCATIONS_PER_CONNECTION = spec_invocation.MAX_INVOCATIONS_PER_CONNECTION
_EMPTY_TEXT = Payload(DataType.TEXT, b"")

_TRANSPORT_MESSAGES = {
    spec_errors.CloseCode.MESSAGE_TOO_BIG: spec_errors.CLOSE_RULES[Situation.MESSAGE_TOO_BIG].message,
    spec_errors.CloseCode.INTERNAL_ERROR: spec_errors.CLOSE_RULES[Situation.INTERNAL_ERROR].message,
}


class WireProtocol(enum.Enum):
    JSON = "json.webpubsub.azure.v1"
    JSON_RELIABLE = "json.reliable.webpubsub.azure.v1"
    PROTOBUF = "protobuf.webpubsub.azure.v1"
    PROTOBUF_RELIABLE = "protobuf.reliable.webpubsub.azure.v1"
    SIMPLE = ""

    @property
    def is_binary(self) -> bool:
        """PubSub frames are binary (protobuf) rather than text (JSON)."""
        return self is WireProtocol.PROTOBUF or self is WireProtocol.PROTOBUF_RELIABLE

    @property
    def codec(self):
        """The sans-IO codec module of this subprotocol (None for simple clients)."""
        if self.is_binary:
            return codec_protobuf
        return codec_json if self is not WireProtocol.SIMPLE else None

    @property
    def is_pubsub(self) -> bool:
        return self is not WireProtocol.SIMPLE

    @property
    def is_reliable(self) -> bool:
        return self is WireProtocol.JSON_RELIABLE or self is WireProtocol.PROTOBUF_RELIABLE


def new_lifecycle(protocol: "WireProtocol") -> Lifecycle:
    """The specs' connection state machine for one connection (no history kept)."""
    return Lifecycle(subprotocol=protocol.is_pubsub, reliable=protocol.is_reliable, keep_history=False)


class DetachedTransport:
    """Stands in for the socket while a reliable session waits for its client to recover.

    Data keeps flowing into the session's replay buffer (``send_nowait`` accepts and drops
    the frame: the replay buffer has it); replies (acks, pongs) to a client that is not
    there are dropped, as on a dead socket.
    """

    __slots__ = ("farewell", "last_received")
    closing = False
    close_code = None
    close_reason = ""
    peer_closed = False

    def __init__(self, since: float) -> None:
        self.last_received = since
        self.farewell = None  # as a socket's: the connection's end clears it

    def send_nowait(self, frame: bytes, *, reply: bool = False, expires_at: float | None = None) -> bool:
        return True

    def ping_nowait(self, payload: bytes = b"") -> None:
        return None

    def statistics(self) -> dict:
        return {"detached": True}


_FRAME_OF = {
    WireProtocol.JSON: formats.json_frame,
    WireProtocol.SIMPLE: formats.simple_frame,
    WireProtocol.PROTOBUF: formats.protobuf_frame,
    WireProtocol.JSON_RELIABLE: formats.json_frame_with_sequence,
    WireProtocol.PROTOBUF_RELIABLE: formats.protobuf_frame_with_sequence,
}


class _Groups(set):
    """A connection's groups. The hub adds and discards; a real change (not a repeated join)
    is a group presence event of the owner."""

    __slots__ = ("_owner",)

    def __init__(self, owner: "ClientConnection") -> None:
        super().__init__()
        self._owner = owner

    def add(self, group: str) -> None:
        if group not in self:
            set.add(self, group)
            if self._owner is not None:  # None: the connection has ended (see ClientConnection.run)
                self._owner._presence("joined", group)

    def discard(self, group: str) -> None:
        if group in self:
            set.discard(self, group)
            if self._owner is not None:
                self._owner._presence("left", group)


class ClientConnection:
    __slots__ = (
        "hub", "connection_id", "ws", "protocol", "user_id", "permissions", "groups",
        "connection_state", "simple_mode", "simple_group", "_acked", "_acked_set",
        "replay", "lagged", "received", "delivered", "lifecycle", "pending_ws", "_wakeup",
        "codec", "_text", "deliver_nowait", "_frame_of", "invocations", "streams", "handed_over",
        "_pending_acks", "__weakref__",
    )

    def __init__(
        self,
        hub: "Hub",
        connection_id: str,
        ws: WebSocket,
        protocol: WireProtocol,
        *,
        user_id: str | None,
        roles: tuple[str, ...] = (),
        connection_state: str | None = None,
        simple_mode: str = "sendEvent",
        simple_group: str | None = None,
        lifecycle: Lifecycle | None = None,
    ) -> None:
        if lifecycle is None:
            lifecycle = new_lifecycle(protocol)
            lifecycle.handle(LifecycleEvent.AUTHENTICATED)
        self.lifecycle = lifecycle
        self.hub = hub
        self.connection_id = connection_id
        self.ws = ws
        self.protocol = protocol
        self.codec = protocol.codec  # codec_json or codec_protobuf (same API)
        self._text = not protocol.is_binary
        self.user_id = user_id
        self.permissions = Permissions(roles)
        self.groups: set[str] = _Groups(self)
        self.connection_state = connection_state
        self.simple_mode = simple_mode
        self.simple_group = simple_group
        # Created on the first ackId; a list, not a deque (an empty deque is 760 bytes, a
        # list 56; dropping the oldest of ACK_MEMORY ids moves 8 kB, once per request).
        self._acked: list[int] | None = None
        self._acked_set: set[int] | None = None
        config = hub.server_config
        self.replay = ReplayBuffer(config.reliable_buffer_count, config.reliable_buffer_bytes) \
            if protocol.is_reliable else None
        self.pending_ws: WebSocket | None = None  # a recovering client's new socket
        #: The session moved to another node (fabric.webpubsub.handover): end quietly.
        self.handed_over = False
        self._wakeup: trio.Event | None = None  # set when a detached session must act
        self.lagged = 0
        self.received = 0
        self.delivered = 0
        self._frame_of = _FRAME_OF[protocol]
        #: Running invocations by invocationId (created on the first invoke).
        self.invocations: dict[str, trio.CancelScope] | None = None
        #: Open streams (created on the first stream start).
        self.streams: StreamTable | None = None
        #: streamAcks not sent yet, by stream id (decision streams.ack-every).
        self._pending_acks: dict[str, int] | None = None
        if protocol.is_reliable:
            self.deliver_nowait = self._deliver_sequenced
        elif protocol is WireProtocol.SIMPLE:
            self.deliver_nowait = self._deliver_simple
        else:
            self.deliver_nowait = self._deliver_shared
        if protocol.is_pubsub:
            ws.farewell = self._farewell

    def __repr__(self) -> str:
        return f"<ClientConnection {self.hub.name}/{self.connection_id} user={self.user_id!r} {self.protocol.name}>"

    @property
    def context(self) -> ConnectionContext:
        return ConnectionContext(
            hub=self.hub.name, connection_id=self.connection_id, user_id=self.user_id,
            subprotocol=self.protocol.value or None, connection_state=self.connection_state,
        )

    def may(self, action: str, group: str) -> bool:
        """Whether this connection may ``joinLeaveGroup``/``sendToGroup`` on ``group`` now
        (read on every request, so grants and revocations apply to the next one)."""
        return self.permissions.may(action, group)

    # ---- outbound ------------------------------------------------------------------

    # deliver_nowait(publication) queues one publication for this client and never blocks.
    # It is bound per connection in __init__ to the plain or the sequenced variant, and
    # ``_frame_of`` to its subprotocol's frame builder (the group actor calls it once per
    # member of every publication, so no per-call dispatch on the subprotocol).

    def _deliver_shared(self, publication: Publication) -> None:
        """Every recipient of this format gets the publication's one cached frame (dropped
        from the outbox unsent if it is still queued past its TTL)."""
        expires_at = publication.expires_at
        if (self.ws.send_nowait(self._frame_of(publication)) if expires_at is None
                else self.ws.send_nowait(self._frame_of(publication), expires_at=expires_at)):
            self.delivered += 1
        else:
            self._overflow()

    def _deliver_simple(self, publication: Publication) -> None:
        """A simple client gets the payload alone; a stream's terminal (an empty text whose
        meaning is in its stream info) is not for it (decision streams.terminal)."""
        if type(publication) is not Publication and publication.stream.end_of_stream:
            return
        expires_at = publication.expires_at
        if (self.ws.send_nowait(self._frame_of(publication)) if expires_at is None
                else self.ws.send_nowait(self._frame_of(publication), expires_at=expires_at)):
            self.delivered += 1
        else:
            self._overflow()

    def _deliver_sequenced(self, publication: Publication) -> None:
        """Reliable: the next sequence id, and the publication kept until acked."""
        sequence_id = self.replay.add(publication)
        if not sequence_id:
            self.hub.counters["reliable_buffer_full"] += 1
            self.close_for(Situation.RELIABLE_BUFFER_FULL, discard=True)
        elif (self.ws.send_nowait(self._frame_of(publication, sequence_id)) if publication.expires_at is None
              else self.ws.send_nowait(self._frame_of(publication, sequence_id), expires_at=publication.expires_at)):
            self.delivered += 1
        else:
            self._overflow()

    def _queue_disconnected(self, message: str) -> None:
        """system/disconnected ahead of a close (reply allowance: it must fit)."""
        self.ws.outbox.put_nowait(self._frame(self.codec.encode_disconnected(message)), reply=True)

    def _frame(self, body: bytes) -> bytes:
        """A WebSocket frame for one protocol message of this connection's subprotocol."""
        return encode_frame(body, text=self._text)

    def send_protocol_nowait(self, body: bytes) -> None:
        """Queue a protocol message (ack, system, pong) encoded by ``self.codec``.

        These answer the client's own requests, so they use the outbox's reply allowance
        and are never dropped by the ``drop`` policy: past the allowance the client is
        closed as a slow consumer whatever the policy.
        """
        if not self.ws.send_nowait(self._frame(body), reply=True):
            self._overflow(force_close=True)

    def _overflow(self, force_close: bool = False) -> None:
        if self.ws.closing:
            return
        if self.hub.server_config.slow_consumer == "drop" and not force_close:
            if self.lagged == 0 or self.lagged % 1000 == 0:
                log.warning("%r is lagging: dropped %d messages so far", self, self.lagged + 1)
            self.lagged += 1
            self.hub.counters["lagged"] += 1
            return
        self.hub.counters["slow_consumer_closed"] += 1
        log.warning("%r closed as a slow consumer (outbox over its bounds)", self)
        self.close_for(Situation.SLOW_CLIENT, discard=True)

    def close_for(self, situation: "Situation", message: str | None = None, *, discard: bool = False) -> None:
        """Close as ``specs.errors.CLOSE_RULES`` says for this situation (no checkpoint).

        PubSub clients get ``system/disconnected`` first when the rule says so; with
        ``discard`` the data queued for the client is dropped first, so the disconnected
        message and the close frame go out at once.
        """
        rule = spec_errors.CLOSE_RULES[situation]
        self.close(rule.code, message if message is not None else rule.message,
                   discard=discard, notify=rule.send_disconnected)

    def close(self, code: int, reason: str, *, discard: bool = False, notify: bool = True) -> None:
        """Close with an explicit code (no checkpoint). PubSub clients get ``disconnected``
        first (unless ``notify`` is false)."""
        ws = self.ws
        if ws.closing or not self.lifecycle.can_handle(LifecycleEvent.SERVER_CLOSE):
            return
        self.lifecycle.handle(LifecycleEvent.SERVER_CLOSE)
        if isinstance(ws, DetachedTransport):  # a detached session is simply discarded
            self._wake()
            return
        if discard:
            ws.outbox.discard_data()
        for effect in self.lifecycle.effects:  # the table: SEND_DISCONNECTED (PubSub only), SEND_CLOSE
            if effect is Effect.SEND_DISCONNECTED and notify:
                self._queue_disconnected(reason)
            elif effect is Effect.SEND_CLOSE:
                ws.close(code, spec_errors.close_frame_reason(reason))

    def ping_timeout(self) -> None:
        """The client stopped answering keep-alives: the table decides (a reliable session
        is kept for recovery; others end)."""
        life = self.lifecycle
        if not life.can_handle(LifecycleEvent.PING_TIMEOUT) or isinstance(self.ws, DetachedTransport):
            return
        life.handle(LifecycleEvent.PING_TIMEOUT)
        rule = spec_errors.CLOSE_RULES[Situation.PING_TIMEOUT]
        ws = self.ws
        ws.outbox.discard_data()
        for effect in life.effects:
            if effect is Effect.SEND_DISCONNECTED:
                self._queue_disconnected(rule.message)
            elif effect is Effect.SEND_CLOSE:
                ws.close(rule.code, rule.message)
            elif effect is Effect.ABORT_TRANSPORT:
                ws.abort_soon(grace=0.5)

    # ---- the connection's life (its TEMPORARY task under the hub) --------------------

    async def run(self, initial_groups=(), *, resumed: trio.Event | None = None,
                  task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Own this connection for its whole life: register, say ``connected``, run the socket
        (and, for a reliable session, every socket it recovers onto), unregister.

        ``resumed``: a detached session taken over from another node (fabric.webpubsub.handover):
        register, join its groups, set the event, then wait for its socket like any detached
        session. Checkpoint. Never raises for client faults.
        """
        task_status.started()
        hub = self.hub
        await hub.register(self)
        life = self.lifecycle
        ws = self.ws
        try:
            if resumed is not None:
                for group in initial_groups:
                    await hub.join_group(self, group)
                resumed.set()
            else:
                life.handle(LifecycleEvent.CONNECT_ACCEPTED)
            for effect in life.effects if resumed is None else ():  # in the table's order: connected precedes every frame
                if effect is Effect.SEND_CONNECTED:
                    token = self.reconnection_token() if life.reliable else None
                    self.send_protocol_nowait(self.codec.encode_connected(self.connection_id, self.user_id, token))
                elif effect is Effect.JOIN_INITIAL_GROUPS:
                    for group in initial_groups:
                        await hub.join_group(self, group)
                elif effect is Effect.FIRE_CONNECTED:
                    hub.notify("connected", self)
            while True:
                if not isinstance(ws, DetachedTransport):
                    await ws.run(self.on_message)
                nxt = self.pending_ws
                if nxt is None and not life.closed:
                    if life.state is not State.DETACHED:
                        life.handle(LifecycleEvent.CLIENT_CLOSE if ws.peer_closed else LifecycleEvent.TRANSPORT_LOST)
                    if life.state is State.DETACHED and not self.handed_over:
                        nxt = await self._await_recovery()
                if nxt is None:
                    break
                ws = nxt
                self.attach(ws)
                hub.counters["sessions_recovered"] += 1
        finally:
            fire = Effect.FIRE_DISCONNECTED in life.effects and not self.handed_over
            self._stop_invocations()
            self._end_streams()
            if self.pending_ws is not None:  # recovered at the very end: refuse it
                self.pending_ws.abort_soon()
            reason = (self.ws.close_reason or _close_reason(self.ws.close_code)) if fire else None
            with trio.CancelScope(shield=True):
                await hub.unregister(self, disconnected_reason=reason)
            # Undo the references a connection holds to itself (its bound delivery method,
            # the socket's farewell hook, its group set's owner), so that a closed
            # connection, its socket and their ~20 objects are freed by reference counting
            # the moment the last holder lets go, not by a full collection later. The
            # socket is closed: a late delivery (a group actor's queue draining) is
            # dropped either way.
            self.deliver_nowait = _closed_delivery
            self.ws.farewell = None
            if isinstance(self.groups, _Groups):
                self.groups._owner = None

    async def _await_recovery(self):
        """Keep a dropped reliable session for ``reconnect_window``. The new socket, or None."""
        self.hub.counters["sessions_detached"] += 1
        wakeup = self.detach()
        with trio.move_on_after(self.hub.server_config.reconnect_window):
            await wakeup.wait()
        life = self.lifecycle
        if life.state is State.DETACHED:  # nobody came back in time
            life.handle(LifecycleEvent.TIMEOUT)
            self.hub.counters["sessions_expired"] += 1
        return self.pending_ws

    def export_session(self, token: str, protocol: str | None, timeout: float):
        """Another node claims this session (``Hub.claim_session``): fabric.webpubsub.handover."""
        from fabric.webpubsub import handover

        return handover.export_session(self, token, protocol, timeout)

    def release_session(self, claim: str):
        """Hand this session to the node that claimed it (``Hub.release_session``)."""
        from fabric.webpubsub import handover

        return handover.release_session(self, claim)

    def reconnection_token(self) -> str:
        return reconnection_token(self.hub.server_config.access_keys[0], self.hub.name, self.connection_id)

    def can_recover(self, token: str, protocol_name: str | None) -> bool:
        """Whether a recovery request with this token and subprotocol may resume this session."""
        if not self.lifecycle.reliable or self.protocol.value != protocol_name:
            return False
        if not valid_reconnection_token(token, self.hub.server_config.access_keys, self.hub.name,
                                        self.connection_id):
            return False
        return self.lifecycle.can_handle(LifecycleEvent.RECOVERED)

    def heartbeat(self, now: float, idle_timeout: float) -> bool:
        """The hub's keepalive tick: ping; act on a client silent past ``idle_timeout``;
        close as a slow consumer a client that took none of our data for ``stall_timeout``
        (specs/limits.py: a slow client is one that stopped reading, not one with a backlog)."""
        ws = self.ws
        if isinstance(ws, DetachedTransport):
            return False
        if now - ws.last_received > idle_timeout:
            self.ping_timeout()
            return True
        blocked = ws.send_blocked_since
        if blocked is not None and now - blocked > self.hub.server_config.stall_timeout and not ws.closing:
            self.hub.counters["slow_consumer_closed"] += 1
            log.warning("%r closed as a slow consumer (took no data for %.0f s)", self, now - blocked)
            self.close_for(Situation.SLOW_CLIENT, discard=True)
            return False
        ws.ping_nowait()
        return False

    # ---- reliable sessions: detach, wait, recover -----------------------------------

    def detach(self) -> trio.Event:
        """The transport is gone but the session lives on (reliable only). Invocations stop
        (decision invoke.transport-lost); streams stay open for the client to resume."""
        self._stop_invocations()
        self.ws = DetachedTransport(trio.current_time())
        self._wakeup = trio.Event()
        return self._wakeup

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def offer_transport(self, ws: WebSocket) -> bool:
        """A recovering client's new socket (no checkpoint). False if the session can't take it."""
        life = self.lifecycle
        if not life.reliable or not life.can_handle(LifecycleEvent.RECOVERED):
            return False
        if self.pending_ws is not None:
            # A second recovery before the first was taken: the first keeps the session and
            # this one is refused 1008 by the caller (decision reliable.half-open). Taking it
            # instead would cut the first off without a close frame, and two clients sharing
            # a session would then take it from each other for ever.
            return False
        old = self.ws
        life.handle(LifecycleEvent.RECOVERED)
        self.pending_ws = ws
        if Effect.ABORT_TRANSPORT in life.effects and isinstance(old, WebSocket):
            # Usually half-open: the new socket replaces it now. A close frame first, so that
            # a client still reading it hears 1008 (start a new connection), not a bare reset.
            old.close(spec_errors.CloseCode.RECOVERY_FAILED, _REPLACED, discard=True)
            old.abort_soon(grace=_REPLACED_GRACE)
        self._wake()
        return True

    def attach(self, ws: WebSocket) -> None:
        """Switch to the recovered socket: ``connected`` again, then replay the unacked."""
        self.pending_ws = None
        self._wakeup = None
        self.ws = ws
        ws.farewell = self._farewell
        for effect in self.lifecycle.effects:
            if effect is Effect.SEND_CONNECTED:
                self.send_protocol_nowait(self.codec.encode_connected(
                    self.connection_id, self.user_id, self.reconnection_token()))
            elif effect is Effect.REPLAY_UNACKED:
                for sequence_id, publication in self.replay.unacked():
                    if publication.expires_at is not None and publication.expired():
                        self.hub.counters["expired_not_replayed"] += 1
                        continue  # outlived its TTL while the client was away (a gap the SDKs accept)
                    if not ws.send_nowait(self._frame_of(publication, sequence_id)):
                        self.close_for(Situation.RELIABLE_BUFFER_FULL, discard=True)
                        return

    def _farewell(self, code: int, reason: str) -> None:
        """The transport is closing by itself (e.g. 1009): tell a PubSub client why."""
        self._queue_disconnected(_TRANSPORT_MESSAGES.get(code, reason))

    # ---- inbound -------------------------------------------------------------------

    async def on_message(self, data: str | bytes) -> None:
        """Handle one complete client message. Checkpoint: maybe (awaits routing)."""
        self.received += 1
        if self.protocol is WireProtocol.SIMPLE:
            await self._on_simple(data)
            return
        if isinstance(data, bytes) is self._text:
            self.hub.counters["malformed_frames"] += 1
            self.close_for(Situation.WRONG_FRAME_TYPE, None if self._text else
                           "The protobuf subprotocol requires binary messages.")
            return
        try:
            message = self.codec.decode_client(data)
        except codec_json.InvalidMessage as exc:
            self.hub.counters["invalid_messages"] += 1
            if exc.invocation_id is not None:
                self._invoke_error(exc.invocation_id, InvokeError.BAD_REQUEST, exc.message)
            elif exc.stream_id is not None:
                step = self._stream_table().invalid(exc.stream_id, exc.message, start=exc.stream_start)
                await self._perform_stream(step, exc.stream_id)
                self._ack_error(exc.ack_id, ErrorName.BAD_REQUEST, exc.message)
            elif exc.ack_id is not None:
                self._ack_error(exc.ack_id, ErrorName.BAD_REQUEST, exc.message)
            else:
                self.close_for(Situation.INVALID_MESSAGE, exc.message)
            return
        except codec_json.ProtocolError as exc:
            self.hub.counters["malformed_frames"] += 1
            rule_text = spec_errors.CLOSE_RULES[Situation.MALFORMED_FRAME].message
            if not self._text:
                rule_text = rule_text.replace("JSON", "protobuf")
            self.close_for(Situation.MALFORMED_FRAME, f"{rule_text} {exc.message}")
            return
        handler = _DISPATCH.get(type(message))
        if handler is None:
            self._unsupported(message)
            return
        await handler(self, message)

    def _unsupported(self, message) -> None:
        """Answer what we do not implement so the client fails fast instead of timing out."""
        self.hub.counters["unsupported_messages"] += 1
        text = spec_errors.unsupported_message(message.type, message.feature)
        if message.ack_id is not None:
            self._ack_error(message.ack_id, ErrorName.BAD_REQUEST, text)
        elif getattr(message, "invocation_id", None) is not None:
            self.send_protocol_nowait(self.codec.encode_invoke_response_error(
                message.invocation_id, ErrorName.BAD_REQUEST, text))
        elif getattr(message, "stream_id", None) is not None:
            self.send_protocol_nowait(self.codec.encode_stream_closed(message.stream_id, ErrorName.BAD_REQUEST, text))

    def _seen(self, ack_id: int | None) -> bool:
        """Record an ackId; True (and a Duplicate ack sent) if it was processed already."""
        if ack_id is None:
            return False
        if self._acked is None:
            self._acked, self._acked_set = [], set()
        if ack_id in self._acked_set:
            self.send_protocol_nowait(self.codec.encode_ack(
                ack_id, False, ErrorName.DUPLICATE, f"Message with ack-id: {ack_id} has been processed"))
            return True
        self._acked.append(ack_id)
        self._acked_set.add(ack_id)
        if len(self._acked) > ACK_MEMORY:
            self._acked_set.discard(self._acked.pop(0))
        return False

    def _ack_ok(self, ack_id: int | None) -> None:
        if ack_id is not None:
            self.send_protocol_nowait(self.codec.encode_ack(ack_id, True))

    def _ack_error(self, ack_id: int | None, name: str, message: str) -> None:
        if ack_id is not None:
            self.send_protocol_nowait(self.codec.encode_ack(ack_id, False, name, message))

    async def _join(self, msg: codec_json.JoinGroup) -> None:
        if self._seen(msg.ack_id):
            return
        if not self.may("joinLeaveGroup", msg.group):
            self._ack_error(msg.ack_id, ErrorName.FORBIDDEN, f"no permission to join group '{msg.group}'")
            return
        limit = self.hub.server_config.max_groups_per_connection
        if len(self.groups) >= limit and msg.group not in self.groups:  # decision limits.groups-per-connection
            self._ack_error(msg.ack_id, ErrorName.BAD_REQUEST, f"a connection may join at most {limit} groups")
            return
        await self.hub.join_group(self, msg.group)
        self._ack_ok(msg.ack_id)

    async def _leave(self, msg: codec_json.LeaveGroup) -> None:
        if self._seen(msg.ack_id):
            return
        if not self.may("joinLeaveGroup", msg.group):
            self._ack_error(msg.ack_id, ErrorName.FORBIDDEN, f"no permission to leave group '{msg.group}'")
            return
        await self.hub.leave_group(self, msg.group)
        self._ack_ok(msg.ack_id)

    async def _send_to_group(self, msg: codec_json.SendToGroup) -> None:
        if self._seen(msg.ack_id):
            return
        if not self.may("sendToGroup", msg.group):
            self._ack_error(msg.ack_id, ErrorName.FORBIDDEN, f"no permission to send to group '{msg.group}'")
            return
        publication = Publication(
            "group", msg.payload, group=msg.group, from_user_id=self.user_id,
            sender_id=self.connection_id, no_echo=msg.no_echo, metadata=msg.metadata,
            ttl_seconds=msg.ttl_seconds,
        )
        if self.hub.publish_may_wait(msg.group):
            # The group's mailbox is full: wait for room first, then ack, so a wait that is
            # cancelled (the connection closing) never leaves an ack for a dropped message.
            # Ours is the mailbox's last message: the ack still almost always comes first.
            await self.hub.publish(publication)
            self._ack_ok(msg.ack_id)
            return
        # The ack is queued first: a sender in the group gets it before the group message,
        # also when the hub delivers that message in place during publish().
        self._ack_ok(msg.ack_id)
        await self.hub.publish(publication)

    async def _event(self, msg: codec_json.Event) -> None:
        if self._seen(msg.ack_id):
            return
        handler = self.hub.handler
        if handler is None or not handler.handles_user_event(msg.event):
            self.hub.counters["unhandled_events"] += 1
            self._ack_error(msg.ack_id, ErrorName.NOT_FOUND,
                            f"no event handler for event '{msg.event}' in hub '{self.hub.name}'")
            return
        # Failure outcomes: specs/upstream.py (OUTCOMES, FAILURES).
        outcome = await call_user_event(handler, self.context, msg.event, msg.payload,
                                        timeout=self.hub.server_config.upstream_timeout, metadata=msg.metadata)
        error = outcome.error
        if error is not None:
            self.hub.counters["event_handler_failures"] += 1
            if msg.ack_id is not None:
                if self._acked_set is not None and msg.ack_id in self._acked_set:
                    # Only successes are remembered: the client may retry with this ackId.
                    self._acked_set.discard(msg.ack_id)
                    try:
                        self._acked.remove(msg.ack_id)
                    except ValueError:
                        pass
                self._ack_error(msg.ack_id, error.name, error.message)
            else:
                rule = spec_errors.CLOSE_RULES[Situation.EVENT_HANDLER_FAILED]
                self.close(rule.code, f"{rule.message} Event '{msg.event}': {error.message}")
            return
        if outcome.connection_state is not UNCHANGED:
            self.connection_state = outcome.connection_state
        if outcome.reply is not None or outcome.metadata:  # metadata alone: an empty text (metadata.reply)
            self.deliver_nowait(Publication("server", outcome.reply or _EMPTY_TEXT, metadata=outcome.metadata))
        self._ack_ok(msg.ack_id)

    async def _ping(self, msg: codec_json.Ping) -> None:
        self.send_protocol_nowait(self.codec.encode_pong())

    # ---- invocations (specs.invocation) ----------------------------------------------

    def _invoke_error(self, invocation_id: str, name: str, message: str) -> None:
        self.hub.counters["invocation_failures"] += 1
        self.send_protocol_nowait(self.codec.encode_invoke_response_error(invocation_id, name, message))

    async def _invoke(self, msg: codec_json.Invoke) -> None:
        hub = self.hub
        invocation_id = msg.invocation_id
        running = self.invocations
        if running is not None and invocation_id in running:  # decision invoke.duplicate-id
            hub.counters["invocations_duplicate"] += 1
            return
        handler = hub.handler
        if handler is None or not handler.handles_user_event(msg.event):
            hub.counters["unhandled_events"] += 1
            self._invoke_error(invocation_id, InvokeError.NOT_FOUND,
                               f"no event handler for event '{msg.event}' in hub '{hub.name}'")
            return
        if running is None:
            running = self.invocations = {}
        if len(running) >= MAX_INVOCATIONS_PER_CONNECTION:
            self._invoke_error(invocation_id, InvokeError.TOO_MANY_INVOCATIONS,
                               f"the connection already has {MAX_INVOCATIONS_PER_CONNECTION} invocations waiting")
            return
        background = await self._background()
        scope = trio.CancelScope()
        if background is None or not background.spawn(self._run_invocation, msg, handler, scope):
            self._invoke_error(invocation_id, InvokeError.INTERNAL_SERVER_ERROR, "the service is shutting down")
            return
        running[invocation_id] = scope
        hub.counters["invocations"] += 1

    async def _run_invocation(self, msg: codec_json.Invoke, handler, scope: trio.CancelScope) -> None:
        """One invocation, as a task of the hub's background service. Never raises (but
        Cancelled from the service itself)."""
        invocation_id = msg.invocation_id
        try:
            with scope:
                outcome = await call_user_event(
                    handler, self.context, msg.event, msg.payload, timeout=self.hub.server_config.upstream_timeout,
                    metadata=msg.metadata, invocation_id=invocation_id)
            if scope.cancel_called:  # cancelled by the client or the end of the transport: no answer
                return
            error = outcome.error
            if error is not None:
                self.hub.counters["event_handler_failures"] += 1
                self._invoke_error(invocation_id, error.name, error.message)
                return
            if outcome.connection_state is not UNCHANGED:
                self.connection_state = outcome.connection_state
            self.send_protocol_nowait(self.codec.encode_invoke_response(invocation_id, outcome.reply, outcome.metadata))
        except Exception:
            log.exception("invocation %r of %r failed", invocation_id, self)
        finally:
            running = self.invocations
            if running is not None and running.get(invocation_id) is scope:
                del running[invocation_id]

    async def _cancel_invocation(self, msg: codec_json.CancelInvocation) -> None:
        running = self.invocations
        scope = running.pop(msg.invocation_id, None) if running else None
        if scope is None:  # decision invoke.cancel-unknown
            self.hub.counters["invocation_cancels_ignored"] += 1
            return
        scope.cancel()
        self.hub.counters["invocations_cancelled"] += 1

    async def _background(self):
        """The hub's background service, started on first need; None when the hub is stopping.
        Checkpoint."""
        background = background_nowait(self.hub)
        if background is not None:
            return background
        try:
            return await background_for(self.hub)
        except Exception:
            log.debug("no background service for %r (the hub is stopping)", self)
            return None

    def _stop_invocations(self) -> None:
        running = self.invocations
        if running:
            for scope in running.values():
                scope.cancel()
            self.hub.counters["invocations_cancelled"] += len(running)
            running.clear()

    # ---- streams (specs.streams) ------------------------------------------------------

    def _stream_table(self) -> StreamTable:
        table = self.streams
        if table is None:
            table = self.streams = StreamTable()
        return table

    async def _stream_start(self, msg: codec_json.StreamStart) -> None:
        if self._seen(msg.ack_id):
            return
        await self._background()  # the idle timers run there
        step = self._stream_table().start(msg, self.may("sendToGroup", msg.group), trio.current_time())
        await self._perform_stream(step, msg.stream_id)
        if msg.ack_id is not None:
            # (a start for an id already open is a START step too, one that ends the open
            # stream and answers streamClosed: decision streams.duplicate-start; not accepted)
            if step.event is StreamEvent.START and not (step.reply and step.reply[0] == "closed"):
                self._ack_ok(msg.ack_id)
            elif step.event is StreamEvent.START_FORBIDDEN:
                self._ack_error(msg.ack_id, ErrorName.FORBIDDEN, f"no permission to send to group '{msg.group}'")
            else:
                self._ack_error(msg.ack_id, ErrorName.BAD_REQUEST, step.reply[2] if step.reply else "")

    async def _stream_data(self, msg: codec_json.StreamData) -> None:
        table = self.streams
        if table is None:
            table = self._stream_table()
        step = table.data(msg, self._may_send, trio.current_time())
        await self._perform_stream(step, msg.stream_id, msg.payload)

    def _may_send(self, group: str) -> bool:
        return self.permissions.may("sendToGroup", group)

    async def _stream_end(self, msg: codec_json.StreamEnd) -> None:
        step = self._stream_table().end(msg)
        await self._perform_stream(step, msg.stream_id)

    async def _perform_stream(self, step: Step, stream_id: str, payload: Payload | None = None) -> None:
        """Do what one stream step says, in order: answer the publisher, publish (fragment or
        terminal), arm the idle timer. The answer is queued first so that a publisher in the
        group gets it before the group message, also when the hub delivers in place (a
        fragment's ack is coalesced and goes a tick later in any case)."""
        counters = self.hub.counters
        event = step.event
        stream = step.stream
        self._reply_stream(step, stream_id)
        if step.fragment is not None:
            publication = StreamPublication(
                step.fragment, "group", payload, group=stream.group, from_user_id=self.user_id,
                sender_id=self.connection_id, no_echo=stream.no_echo, metadata=stream.metadata,
                ttl_seconds=stream.ttl_seconds)
            stream.busy += 1
            try:
                await self.hub.publish(publication)
            finally:
                stream.busy -= 1
            counters["stream_fragments"] += 1
        elif step.terminal is not None:
            if stream.timer is not None:
                stream.timer.cancel()
                stream.timer = None
            await self.hub.publish(self._terminal_publication(step))
            counters["streams_closed"] += 1
        if step.arm:
            counters["streams_opened"] += 1
        elif event is StreamEvent.DATA_DUPLICATE:
            counters["stream_duplicates"] += 1
        elif event is StreamEvent.DATA_GAP:
            counters["stream_nacks"] += 1
        elif stream is None and step.reply is not None:
            if event is StreamEvent.START_FORBIDDEN or event is StreamEvent.START_INVALID:
                counters["streams_refused"] += 1
            else:
                counters["stream_not_found"] += 1
        if step.arm:
            self._arm_stream(stream)

    def _terminal_publication(self, step: Step) -> StreamPublication:
        stream = step.stream
        return StreamPublication(
            step.terminal, "group", _EMPTY_TEXT, group=stream.group, from_user_id=self.user_id,
            sender_id=self.connection_id, no_echo=stream.no_echo, metadata=stream.metadata,
            ttl_seconds=stream.ttl_seconds)

    def _reply_stream(self, step: Step, stream_id: str) -> None:
        """Answer the publisher. Acks are coalesced: the latest expected id of each stream goes
        out once the fabric has handled what it already read (a scheduler tick later), so a
        burst of fragments costs one ack, and no ack waits for more data. Any other answer on a
        stream first sends that stream's pending ack, so the client sees them in order."""
        reply = step.reply
        if reply is None:
            return
        kind = reply[0]
        codec = self.codec
        pending = self._pending_acks
        if kind == "ack" and step.event is not StreamEvent.START:  # a start's ack goes at once
            if pending is None:
                pending = self._pending_acks = {}
            if not pending:
                trio.lowlevel.current_trio_token().run_sync_soon(self._flush_acks)
            pending[stream_id] = reply[1]
            return
        if pending:
            expected = pending.pop(stream_id, None)
            if expected is not None:
                self.send_protocol_nowait(codec.encode_stream_ack(stream_id, expected))
        if kind == "ack":
            self.send_protocol_nowait(codec.encode_stream_ack(stream_id, reply[1]))
        elif kind == "nack":
            self.send_protocol_nowait(codec.encode_stream_nack(stream_id, reply[1], reply[2], reply[3]))
        else:
            self.send_protocol_nowait(codec.encode_stream_closed(stream_id, reply[1], reply[2] if reply[1] else None))

    def _flush_acks(self) -> None:
        """Send the coalesced streamAcks (run by trio between tasks; must not raise)."""
        pending = self._pending_acks
        if not pending:
            return
        try:
            encode = self.codec.encode_stream_ack
            for stream_id, expected in pending.items():
                self.send_protocol_nowait(encode(stream_id, expected))
        except Exception:  # pragma: no cover - a bug here must not take the event loop down
            log.exception("sending stream acks of %r failed", self)
        finally:
            pending.clear()

    def _arm_stream(self, stream) -> None:
        background = background_nowait(self.hub)
        if background is None:
            return  # no timer service (the hub is stopping): the stream ends with the connection
        stream.timer = background.call_at(stream.deadline, lambda: self._stream_timer(stream.stream_id))

    def _stream_timer(self, stream_id: str) -> None:
        """An idle timer fired (in the background service's timer task; never raises)."""
        table = self.streams
        if table is None:
            return
        stream = table.get(stream_id)
        if stream is not None:
            stream.timer = None
        step = table.expire(stream_id, trio.current_time())
        if step is None:
            return
        if step.arm:
            self._arm_stream(step.stream)
            return
        self.hub.counters["streams_idle_timeout"] += 1
        self.hub.counters["streams_closed"] += 1
        self._reply_stream(step, stream_id)
        background = background_nowait(self.hub)
        if background is not None:
            background.spawn(self._publish_terminals, [self._terminal_publication(step)])

    def _end_streams(self) -> None:
        """The logical connection ended: every open stream ends Cancelled, published by the
        background service (nothing here may block)."""
        table = self.streams
        if not table:
            return
        steps = table.close_all()
        for step in steps:
            if step.stream.timer is not None:
                step.stream.timer.cancel()
        self.hub.counters["streams_closed"] += len(steps)
        background = background_nowait(self.hub)
        if background is not None:
            background.spawn(self._publish_terminals, [self._terminal_publication(step) for step in steps])

    async def _publish_terminals(self, publications: list) -> None:
        for publication in publications:
            try:
                await self.hub.publish(publication)
            except Exception:
                log.exception("publishing the end of a stream of %r failed", self)

    # ---- group presence ------------------------------------------------------------------

    def _presence(self, kind: str, group: str) -> None:
        """A real join or leave (from ``_Groups``): queued on the hub's notifier, behind and
        ahead of this hub's other notifications, for a handler that wants it."""
        hub = self.hub
        handler = hub.handler
        if handler is not None and handles_system_event(handler, kind):
            hub.notify(kind, self, group)

    async def _sequence_ack(self, msg: codec_json.SequenceAck) -> None:
        if self.replay is not None:
            self.replay.ack(msg.sequence_id)

    async def _on_simple(self, data: str | bytes) -> None:
        payload = codec_simple.payload_from_frame(data)
        if self.simple_mode == "sendToGroup":
            group = self.simple_group
            if group is None or not self.may("sendToGroup", group):
                self.close_for(Situation.SIMPLE_CLIENT_FORBIDDEN, f"no permission to send to group '{group}'")
                return
            await self.hub.publish(Publication(
                "group", payload, group=group, from_user_id=self.user_id, sender_id=self.connection_id))
            return
        handler = self.hub.handler
        if handler is None or not handler.handles_user_event("message"):
            # Azure drops a simple client whose frames nobody handles (close 1000, no reason).
            self.hub.counters["unhandled_events"] += 1
            self.close_for(Situation.NO_EVENT_HANDLER)
            return
        outcome = await call_user_event(handler, self.context, "message", payload,
                                        timeout=self.hub.server_config.upstream_timeout)
        if outcome.error is not None:  # specs/upstream.py: a simple client is closed 1011
            self.hub.counters["event_handler_failures"] += 1
            self.close_for(Situation.EVENT_HANDLER_FAILED, outcome.error.message)
            return
        if outcome.connection_state is not UNCHANGED:
            self.connection_state = outcome.connection_state
        if outcome.reply is not None:
            self.deliver_nowait(Publication("server", outcome.reply))

    def statistics(self) -> dict:
        return {
            "connection_id": self.connection_id, "user_id": self.user_id,
            "protocol": self.protocol.name, "groups": len(self.groups),
            "received": self.received, "delivered": self.delivered, "lagged": self.lagged,
            "transport": self.ws.statistics(),
            **({"close_reason": "moved_to_another_node"} if self.handed_over else {}),
        }


_DISPATCH = {
    codec_json.JoinGroup: ClientConnection._join,
    codec_json.LeaveGroup: ClientConnection._leave,
    codec_json.SendToGroup: ClientConnection._send_to_group,
    codec_json.Event: ClientConnection._event,
    codec_json.Ping: ClientConnection._ping,
    codec_json.SequenceAck: ClientConnection._sequence_ack,
    codec_json.StreamStart: ClientConnection._stream_start,
    codec_json.StreamData: ClientConnection._stream_data,
    codec_json.StreamEnd: ClientConnection._stream_end,
    codec_json.Invoke: ClientConnection._invoke,
    codec_json.CancelInvocation: ClientConnection._cancel_invocation,
}


def _closed_delivery(publication) -> None:
    """``deliver_nowait`` of a connection whose task has ended: nothing to deliver to."""


def _close_reason(code: int | None) -> str:
    if code in (None, 1006):
        return "connection lost"
    if code == 1000:
        return "Normal"
    return f"closed with code {code}"
