"""The reliable subprotocol session, as data: states, guarantees, bounds, decisions.

The per-connection state machine is ``specs.lifecycle`` (its DETACHED state and the
RECOVERED/TIMEOUT events are the reliable part); this module names the *session* view of
it that users reason about, and the guarantees the server keeps. ``fabric/webpubsub/reliable.py``
(replay buffer, tokens), ``fabric/webpubsub/connection.py`` (detach, wait) and
``fabric/webpubsub/handshake.py`` (recover) implement it;
``tests/webpubsub/test_reliable.py`` checks it, including a Hypothesis property over random
schedules of publishes, acks, drops and reconnect delays.
"""

from __future__ import annotations

import attrs

from specs._decisions import Decision
from specs.lifecycle import State


@attrs.frozen(slots=True)
class SessionState:
    name: str
    lifecycle_states: tuple[State, ...]
    meaning: str


SESSION_STATES: tuple[SessionState, ...] = (
    SessionState("connected", (State.OPEN,),
                 "a socket is attached; data messages carry sequenceId 1, 2, 3... and are kept until acked"),
    SessionState("dropped-recoverable", (State.DETACHED,),
                 "the socket died without a client close (or missed pings); groups, user, roles, "
                 "connection state and unacked messages are kept for reconnect_window seconds, and new "
                 "messages keep being sequenced and buffered"),
    SessionState("recovered", (State.OPEN,),
                 "a request with awps_connection_id + a valid awps_reconnection_token attached a new "
                 "socket: system/connected again (same connectionId and token), then every unacked "
                 "message in order with its original sequenceId, then live traffic"),
    SessionState("expired", (State.CLOSED,),
                 "the window passed, the replay buffer overflowed, the client closed deliberately, or "
                 "the app server closed it: the session is discarded, `disconnected` fires once, and "
                 "any later recovery request is accepted and closed with 1008"),
)


@attrs.frozen(slots=True)
class SessionTransition:
    source: str
    trigger: str
    target: str


SESSION_TRANSITIONS: tuple[SessionTransition, ...] = (
    SessionTransition("connected", "transport lost (no close frame) or ping timeout", "dropped-recoverable"),
    SessionTransition("connected", "client close frame", "expired"),
    SessionTransition("connected", "server close (REST, slow consumer, buffer full, shutdown)", "expired"),
    SessionTransition("connected", "recovery request while the old socket looks open", "recovered"),
    SessionTransition("dropped-recoverable", "valid recovery request", "recovered"),
    SessionTransition("dropped-recoverable", "reconnect_window elapsed", "expired"),
    SessionTransition("dropped-recoverable", "server close", "expired"),
    SessionTransition("dropped-recoverable", "replay buffer overflow", "expired"),
    SessionTransition("recovered", "(same as connected)", "connected"),
)

GUARANTEES: tuple[str, ...] = (
    "On the wire: at-least-once. After a recovery the server resends every message the client "
    "has not acknowledged, so a message the client had received but not yet acked arrives twice.",
    "At the SDK: exactly-once and in order. Sequence ids are consecutive per connection and the "
    "SDKs drop any sequenceId <= the highest they have seen.",
    "Acks are cumulative ('ack N' = everything <= N). An ack above the last id sent is clamped to "
    "it; an ack below the last ack is ignored; neither closes the connection.",
    "Bounds: at most reliable_buffer_messages (default 1000) unacked messages and "
    "reliable_buffer_bytes (default 16 MiB); past either the session is discarded with close 1008 "
    "(a recovery would have a gap).",
    "The session lives at least reconnect_window seconds (default 60 s; Azure documents >= 30 s) "
    "after its socket drops.",
    "Reconnection tokens are HMAC-SHA256(access key, hub + connection id): unforgeable, bound to "
    "one connection id, checked in constant time against every configured key.",
    "Recovery is authorised by the reconnection token alone: the original access_token may have "
    "expired meanwhile.",
)

DECISIONS: tuple[Decision, ...] = (
    Decision(
        "reliable.connected-again",
        "Does the server send system/connected again after a recovery, and rotate the token?",
        "Yes, connected again with the same connectionId and the same reconnectionToken.",
        "No public source settles it; the Python and JS client SDKs accept either and do not re-fire "
        "their connected callback [SDK]; a stable token keeps a second drop during replay recoverable.",
    ),
    Decision(
        "reliable.half-open",
        "A recovery request arrives while the old socket still looks open.",
        "The new socket replaces the old one at once: the old is sent a close 1008 and reset "
        "0.1 s later. A second recovery while the first is still being attached is refused 1008; "
        "the first keeps the session.",
        "The client would not ask to recover a socket it can still use; waiting for the old "
        "socket's keep-alive to fail would stall the client for up to idle_timeout. The close "
        "frame and the refusal make two clients sharing one session end with 1008 (which the "
        "SDKs read as 'start a new connection') instead of taking it from each other after "
        "each bare reset (found by a fuzz run).",
    ),
    Decision(
        "reliable.acks-while-detached",
        "Acks, pongs and other replies produced while no socket is attached.",
        "Dropped (only data messages are sequenced and replayed).",
        "Replies answer requests of a socket that no longer exists; the SDKs fail pending acks "
        "on a drop and do not expect them after recovery.",
    ),
)


def render_markdown() -> str:
    lines = ["| session state | lifecycle state(s) | meaning |", "|---|---|---|"]
    for st in SESSION_STATES:
        lines.append(f"| {st.name} | {', '.join(s.value for s in st.lifecycle_states)} | {st.meaning} |")
    lines += ["", "| from | trigger | to |", "|---|---|---|"]
    for t in SESSION_TRANSITIONS:
        lines.append(f"| {t.source} | {t.trigger} | {t.target} |")
    return "\n".join(lines) + "\n"
