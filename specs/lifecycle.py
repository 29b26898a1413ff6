"""The client connection lifecycle as a state table, plus a sans-IO checker that enforces it.

One ``Lifecycle`` per *logical* connection (for reliable subprotocols that is the session,
which may outlive several transports). The server's connection drives it with events and
performs the effects the transition returns, in order. ``render_markdown()`` turns the table
into documentation.

Rules this module keeps:
- The table is the truth: ``Lifecycle`` only looks rows up; it has no behaviour of its own
  besides filtering effects that do not apply (subprotocol-only effects for simple clients).
- ``system/connected`` is the first frame to a subprotocol client; ``connected`` fires once
  when the connection opens; ``disconnected`` fires exactly once, only if ``connected`` fired,
  when the logical connection ends (for reliable sessions: when the session is discarded, not
  when a transport drops).
- ``CLOSED`` is terminal: any event there is illegal.
- Never imports trio.

Sources: the first frame from Microsoft's integration test (Azure/azure-webpubsub
``tests/integration-tests/csharp/ClientConnectTests.cs``: "first message must be the
connected message"); the disconnected message from Microsoft Learn's
reference-json-webpubsub-subprotocol.md; recovery and 1008 from the client protocol spec
(Azure/azure-webpubsub ``protocols/client/client-spec.md`` §1.3, §1.4); the upstream events
from Microsoft Learn's reference-cloud-events.md.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

import attrs

from specs._decisions import Decision


class State(enum.Enum):
    HANDSHAKING = "handshaking"
    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    DETACHED = "detached"
    CLOSED = "closed"


STATE_DESCRIPTIONS: Mapping[State, str] = MappingProxyType(
    {
        State.HANDSHAKING: "upgrade request received; token and hub being validated",
        State.CONNECTING: "authenticated; awaiting the blocking upstream `connect` handler "
        "(skipped when none is configured)",
        State.OPEN: "101 sent; frames flow both ways",
        State.CLOSING: "the server sent its close frame; waiting for the client's (bounded)",
        State.DETACHED: "reliable only: the transport dropped, the session is kept (>= 30 s) "
        "for recovery",
        State.CLOSED: "terminal; the logical connection is gone",
    }
)


class LifecycleEvent(enum.Enum):
    AUTHENTICATED = "authenticated"
    AUTH_REJECTED = "auth_rejected"
    CONNECT_ACCEPTED = "connect_accepted"
    CONNECT_REJECTED = "connect_rejected"
    CLIENT_CLOSE = "client_close"
    SERVER_CLOSE = "server_close"
    PING_TIMEOUT = "ping_timeout"
    TRANSPORT_LOST = "transport_lost"
    RECOVERED = "recovered"
    TIMEOUT = "timeout"


EVENT_DESCRIPTIONS: Mapping[LifecycleEvent, str] = MappingProxyType(
    {
        LifecycleEvent.AUTHENTICATED: "token (or anonymous policy) accepted",
        LifecycleEvent.AUTH_REJECTED: "missing/invalid token, unknown hub, bad request",
        LifecycleEvent.CONNECT_ACCEPTED: "the connect handler answered 2xx (or there is none)",
        LifecycleEvent.CONNECT_REJECTED: "the connect handler answered 4xx/5xx or failed",
        LifecycleEvent.CLIENT_CLOSE: "a close frame arrived from the client",
        LifecycleEvent.SERVER_CLOSE: "the server ends the connection (a specs.errors close rule "
        "with session_kept=False: REST close, slow client, shutdown, bad input ...)",
        LifecycleEvent.PING_TIMEOUT: "keep-alive pings went unanswered",
        LifecycleEvent.TRANSPORT_LOST: "the socket failed or hit EOF without a close frame",
        LifecycleEvent.RECOVERED: "reliable only: a valid recovery request (connection id + "
        "reconnection token) brought a new transport",
        LifecycleEvent.TIMEOUT: "the current state's deadline passed (handshake, connect "
        "handler, close handshake, session retention)",
    }
)


class Effect(enum.Enum):
    INVOKE_CONNECT_HANDLER = "invoke_connect_handler"
    RESPOND_HTTP_ERROR = "respond_http_error"
    ACCEPT_UPGRADE = "accept_upgrade"
    SEND_CONNECTED = "send_connected"
    JOIN_INITIAL_GROUPS = "join_initial_groups"
    FIRE_CONNECTED = "fire_connected"
    SEND_DISCONNECTED = "send_disconnected"
    SEND_CLOSE = "send_close"
    REPLY_CLOSE = "reply_close"
    ABORT_TRANSPORT = "abort_transport"
    KEEP_SESSION = "keep_session"
    REPLAY_UNACKED = "replay_unacked"
    RELEASE_SESSION = "release_session"
    FIRE_DISCONNECTED = "fire_disconnected"


EFFECT_DESCRIPTIONS: Mapping[Effect, str] = MappingProxyType(
    {
        Effect.INVOKE_CONNECT_HANDLER: "call the blocking upstream `connect` event if a handler "
        "is configured (else the server reports CONNECT_ACCEPTED at once)",
        Effect.RESPOND_HTTP_ERROR: "answer the upgrade with an HTTP error: 401 auth, the "
        "handler's 4xx, 500 handler failure/timeout, 503 shutting down",
        Effect.ACCEPT_UPGRADE: "HTTP 101 echoing the chosen subprotocol",
        Effect.SEND_CONNECTED: "queue system/connected as the very first frame (subprotocol "
        "clients; with reconnectionToken on reliable ones)",
        Effect.JOIN_INITIAL_GROUPS: "join the token's webpubsub.group and the connect "
        "response's groups",
        Effect.FIRE_CONNECTED: "fire the non-blocking upstream `connected` event (once)",
        Effect.SEND_DISCONNECTED: "queue system/disconnected with the close rule's message "
        "(subprotocol clients)",
        Effect.SEND_CLOSE: "send a close frame with the close rule's code and reason",
        Effect.REPLY_CLOSE: "answer the client's close frame, echoing its code",
        Effect.ABORT_TRANSPORT: "drop the (old) TCP connection without waiting",
        Effect.KEEP_SESSION: "keep groups, permissions, user, unacked messages; start the "
        "retention timer (>= 30 s)",
        Effect.REPLAY_UNACKED: "resend every unacked message in order with its original "
        "sequenceId, before anything new",
        Effect.RELEASE_SESSION: "leave every group, remove from the registry, discard unacked "
        "messages",
        Effect.FIRE_DISCONNECTED: "fire the non-blocking upstream `disconnected` event (once)",
    }
)

#: Effects that apply to subprotocol (PubSub) clients only; dropped for simple clients.
SUBPROTOCOL_ONLY_EFFECTS = frozenset({Effect.SEND_CONNECTED, Effect.SEND_DISCONNECTED})


class Guard(enum.Enum):
    ANY = "any"
    RELIABLE = "reliable"
    NOT_RELIABLE = "not reliable"

    def admits(self, reliable: bool) -> bool:
        if self is Guard.ANY:
            return True
        return reliable is (self is Guard.RELIABLE)


@attrs.frozen(slots=True)
class Transition:
    state: State
    event: LifecycleEvent
    target: State
    effects: tuple[Effect, ...] = ()
    guard: Guard = Guard.ANY
    note: str = ""


S, E, F, G = State, LifecycleEvent, Effect, Guard
_END = (F.RELEASE_SESSION, F.FIRE_DISCONNECTED)

TRANSITIONS: tuple[Transition, ...] = (
    # ---- before the upgrade: nothing was promised, so no connected/disconnected events
    Transition(S.HANDSHAKING, E.AUTHENTICATED, S.CONNECTING, (F.INVOKE_CONNECT_HANDLER,)),
    Transition(S.HANDSHAKING, E.AUTH_REJECTED, S.CLOSED, (F.RESPOND_HTTP_ERROR,)),
    Transition(S.HANDSHAKING, E.TIMEOUT, S.CLOSED, (F.RESPOND_HTTP_ERROR,), note="408"),
    Transition(S.HANDSHAKING, E.SERVER_CLOSE, S.CLOSED, (F.RESPOND_HTTP_ERROR,), note="503"),
    Transition(S.HANDSHAKING, E.TRANSPORT_LOST, S.CLOSED),
    Transition(
        S.CONNECTING,
        E.CONNECT_ACCEPTED,
        S.OPEN,
        (F.ACCEPT_UPGRADE, F.SEND_CONNECTED, F.JOIN_INITIAL_GROUPS, F.FIRE_CONNECTED),
        note="system/connected precedes every other frame",
    ),
    Transition(S.CONNECTING, E.CONNECT_REJECTED, S.CLOSED, (F.RESPOND_HTTP_ERROR,)),
    Transition(S.CONNECTING, E.TIMEOUT, S.CLOSED, (F.RESPOND_HTTP_ERROR,), note="500"),
    Transition(S.CONNECTING, E.SERVER_CLOSE, S.CLOSED, (F.RESPOND_HTTP_ERROR,), note="503"),
    Transition(S.CONNECTING, E.TRANSPORT_LOST, S.CLOSED),
    # ---- open
    Transition(S.OPEN, E.CLIENT_CLOSE, S.CLOSED, (F.REPLY_CLOSE, *_END),
               note="a deliberate client close ends even a reliable session"),
    Transition(S.OPEN, E.SERVER_CLOSE, S.CLOSING, (F.SEND_DISCONNECTED, F.SEND_CLOSE)),
    Transition(S.OPEN, E.TRANSPORT_LOST, S.DETACHED, (F.KEEP_SESSION,), guard=G.RELIABLE),
    Transition(S.OPEN, E.TRANSPORT_LOST, S.CLOSED, _END, guard=G.NOT_RELIABLE),
    Transition(
        S.OPEN,
        E.PING_TIMEOUT,
        S.DETACHED,
        (F.SEND_DISCONNECTED, F.SEND_CLOSE, F.ABORT_TRANSPORT, F.KEEP_SESSION),
        guard=G.RELIABLE,
        note="close 1001 best effort",
    ),
    Transition(
        S.OPEN,
        E.PING_TIMEOUT,
        S.CLOSED,
        (F.SEND_DISCONNECTED, F.SEND_CLOSE, F.ABORT_TRANSPORT, *_END),
        guard=G.NOT_RELIABLE,
        note="close 1001 best effort",
    ),
    Transition(
        S.OPEN,
        E.RECOVERED,
        S.OPEN,
        (F.ABORT_TRANSPORT, F.ACCEPT_UPGRADE, F.SEND_CONNECTED, F.REPLAY_UNACKED),
        guard=G.RELIABLE,
        note="the old transport was half-open; the new one replaces it",
    ),
    # ---- closing: the first close wins
    Transition(S.CLOSING, E.SERVER_CLOSE, S.CLOSING, note="ignored: first close code wins"),
    Transition(S.CLOSING, E.CLIENT_CLOSE, S.CLOSED, _END, note="close handshake complete"),
    Transition(S.CLOSING, E.TRANSPORT_LOST, S.CLOSED, _END),
    Transition(S.CLOSING, E.PING_TIMEOUT, S.CLOSED, (F.ABORT_TRANSPORT, *_END)),
    Transition(S.CLOSING, E.TIMEOUT, S.CLOSED, (F.ABORT_TRANSPORT, *_END)),
    # ---- detached (reliable sessions only ever get here)
    Transition(
        S.DETACHED,
        E.RECOVERED,
        S.OPEN,
        (F.ACCEPT_UPGRADE, F.SEND_CONNECTED, F.REPLAY_UNACKED),
        note="no new connect/connected upstream events",
    ),
    Transition(S.DETACHED, E.TIMEOUT, S.CLOSED, _END, note="retention elapsed"),
    Transition(S.DETACHED, E.SERVER_CLOSE, S.CLOSED, _END,
               note="REST close or shutdown of a detached session"),
)

del S, E, F, G

INITIAL_STATE = State.HANDSHAKING
TERMINAL_STATES = frozenset({State.CLOSED})


def _index() -> dict[tuple[State, LifecycleEvent, bool], Transition]:
    table: dict[tuple[State, LifecycleEvent, bool], Transition] = {}
    for t in TRANSITIONS:
        for reliable in (False, True):
            if t.guard.admits(reliable):
                key = (t.state, t.event, reliable)
                if key in table:
                    raise AssertionError(f"ambiguous transition {key}")
                table[key] = t
    return table


_TABLE = _index()


class IllegalTransition(Exception):
    """An event that the table does not allow in the current state."""

    def __init__(self, state: State, event: LifecycleEvent, reliable: bool) -> None:
        kind = "reliable" if reliable else "non-reliable"
        super().__init__(f"{event.value!r} is not allowed in state {state.value!r} ({kind})")
        self.state = state
        self.event = event


class Lifecycle:
    """Sans-IO checker for one logical connection.

    ``handle(event)`` moves to the next state and sets ``effects`` to what the caller must
    do now, in order (already filtered for simple clients). No call blocks or checkpoints.

    Args:
        subprotocol: a PubSub (subprotocol) client; False for a simple WebSocket client.
        reliable: a reliable subprotocol (requires ``subprotocol``).
    """

    __slots__ = ("state", "subprotocol", "reliable", "effects", "history")

    def __init__(self, *, subprotocol: bool, reliable: bool = False, keep_history: bool = True) -> None:
        if reliable and not subprotocol:
            raise ValueError("a reliable connection always has a subprotocol")
        self.state = INITIAL_STATE
        self.subprotocol = subprotocol
        self.reliable = reliable
        self.effects: tuple[Effect, ...] = ()
        # The server keeps none (memory per connection); tests and conformance runs do.
        self.history: list[tuple[State, LifecycleEvent, State]] | None = [] if keep_history else None

    def can_handle(self, event: LifecycleEvent) -> bool:
        return (self.state, event, self.reliable) in _TABLE

    def handle(self, event: LifecycleEvent) -> State:
        """Apply ``event``; return the new state (and set ``effects``).

        Raises:
            IllegalTransition: the event is not allowed now; the state is unchanged.
        """
        t = _TABLE.get((self.state, event, self.reliable))
        if t is None:
            raise IllegalTransition(self.state, event, self.reliable)
        if self.subprotocol:
            self.effects = t.effects
        else:
            self.effects = tuple(e for e in t.effects if e not in SUBPROTOCOL_ONLY_EFFECTS)
        if self.history is not None and len(self.history) < 64:  # bounded: never a leak
            self.history.append((self.state, event, t.target))
        self.state = t.target
        return t.target

    @property
    def closed(self) -> bool:
        return self.state in TERMINAL_STATES


def render_markdown() -> str:
    """The state table (plus states, events and effects) as Markdown, for docs."""
    lines = ["### States", "", "| state | meaning |", "|---|---|"]
    lines += [f"| `{s.name}` | {STATE_DESCRIPTIONS[s]} |" for s in State]
    lines += ["", "### Events", "", "| event | meaning |", "|---|---|"]
    lines += [f"| `{e.name}` | {EVENT_DESCRIPTIONS[e]} |" for e in LifecycleEvent]
    lines += [
        "",
        "### Transitions",
        "",
        "| from | event | when | to | effects, in order | note |",
        "|---|---|---|---|---|---|",
    ]
    for t in TRANSITIONS:
        effects = ", ".join(
            f"`{e.name}`" + ("†" if e in SUBPROTOCOL_ONLY_EFFECTS else "") for e in t.effects
        )
        lines.append(
            f"| `{t.state.name}` | `{t.event.name}` | {t.guard.value} | `{t.target.name}` "
            f"| {effects or '—'} | {t.note} |"
        )
    lines += ["", "† subprotocol clients only.", "", "### Effects", "", "| effect | meaning |",
              "|---|---|"]
    lines += [f"| `{e.name}` | {EFFECT_DESCRIPTIONS[e]} |" for e in Effect]
    return "\n".join(lines) + "\n"


DECISIONS: tuple[Decision, ...] = (
    Decision(
        "lifecycle.connected-on-recovery",
        "Send system/connected again after a successful recovery? Rotate the token?",
        "Send it again (same connectionId, same reconnectionToken) before the replay.",
        "Undocumented; the client SDKs accept either and do not re-fire their callbacks "
        "[SDK]; sending it makes every (re)attached transport start the same way.",
    ),
    Decision(
        "lifecycle.recover-while-open",
        "A valid recovery request for a session whose old transport still looks open.",
        "Accept it: close the old transport (1008, reset 0.1 s later), attach the new one, replay "
        "unacked messages (decision reliable.half-open).",
        "The usual cause is a half-open TCP connection the server has not noticed yet; "
        "refusing would force clients to wait for our ping timeout.",
    ),
    Decision(
        "lifecycle.client-close",
        "Does a client close frame end a reliable session?",
        "Yes: CLIENT_CLOSE goes to CLOSED; only TRANSPORT_LOST/PING_TIMEOUT detach.",
        "Microsoft clients send a close frame only when the user stops them, and then never "
        "recover.",
    ),
    Decision(
        "lifecycle.upstream-on-recovery",
        "Upstream events around recovery.",
        "No connect/connected on recovery; disconnected only when the session is discarded "
        "(DETACHED timeout, REST close), never when a transport merely drops.",
        "[INF]: no public source specifies upstream events around recovery; a recoverable "
        "blip is not a disconnection for the app.",
    ),
    Decision(
        "lifecycle.disconnected-once",
        "When is the upstream `disconnected` event fired?",
        "Exactly once per logical connection, only if `connected` fired; never for a "
        "handshake that was rejected or abandoned.",
        "The app saw no connection, so there is nothing to end.",
    ),
    Decision(
        "lifecycle.first-close-wins",
        "A second server close while CLOSING (e.g. slow client during a REST close).",
        "Ignored: the first close code and message stand.",
        "The design brief: a connection closes once, with one recorded close code.",
    ),
)
