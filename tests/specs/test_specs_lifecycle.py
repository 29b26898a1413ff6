"""specs.lifecycle: the state table is well formed and the checker keeps its promises."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specs.lifecycle import (
    EFFECT_DESCRIPTIONS,
    EVENT_DESCRIPTIONS,
    INITIAL_STATE,
    STATE_DESCRIPTIONS,
    SUBPROTOCOL_ONLY_EFFECTS,
    TRANSITIONS,
    Effect,
    IllegalTransition,
    Lifecycle,
    LifecycleEvent,
    State,
    render_markdown,
)

E = LifecycleEvent
KINDS = [(False, False), (True, False), (True, True)]  # (subprotocol, reliable)


def _reachable(reliable: bool) -> set[State]:
    seen, todo = {INITIAL_STATE}, [INITIAL_STATE]
    while todo:
        s = todo.pop()
        for t in TRANSITIONS:
            if t.state is s and t.guard.admits(reliable) and t.target not in seen:
                seen.add(t.target)
                todo.append(t.target)
    return seen


def test_descriptions_cover_everything():
    assert set(STATE_DESCRIPTIONS) == set(State)
    assert set(EVENT_DESCRIPTIONS) == set(E)
    assert set(EFFECT_DESCRIPTIONS) == set(Effect)
    assert {e for t in TRANSITIONS for e in t.effects} == set(Effect)


def test_reachability_and_terminal_state():
    assert _reachable(True) == set(State)
    assert _reachable(False) == set(State) - {State.DETACHED}
    assert not [t for t in TRANSITIONS if t.state is State.CLOSED]
    # CLOSED is reachable from every state
    for s in State:
        if s is State.CLOSED:
            continue
        assert any(t.state is s and t.target is State.CLOSED for t in TRANSITIONS), s


def test_happy_path_for_a_reliable_client():
    lc = Lifecycle(subprotocol=True, reliable=True)
    assert lc.handle(E.AUTHENTICATED) is State.CONNECTING
    assert lc.effects == (Effect.INVOKE_CONNECT_HANDLER,)
    assert lc.handle(E.CONNECT_ACCEPTED) is State.OPEN
    assert lc.effects[:2] == (Effect.ACCEPT_UPGRADE, Effect.SEND_CONNECTED)
    assert lc.handle(E.TRANSPORT_LOST) is State.DETACHED
    assert Effect.FIRE_DISCONNECTED not in lc.effects
    assert lc.handle(E.RECOVERED) is State.OPEN
    assert lc.effects == (Effect.ACCEPT_UPGRADE, Effect.SEND_CONNECTED, Effect.REPLAY_UNACKED)
    assert lc.handle(E.SERVER_CLOSE) is State.CLOSING
    assert lc.effects == (Effect.SEND_DISCONNECTED, Effect.SEND_CLOSE)
    assert lc.handle(E.SERVER_CLOSE) is State.CLOSING and lc.effects == ()  # first close wins
    assert lc.handle(E.CLIENT_CLOSE) is State.CLOSED
    assert lc.effects == (Effect.RELEASE_SESSION, Effect.FIRE_DISCONNECTED)
    assert lc.closed


def test_simple_clients_get_no_system_frames():
    lc = Lifecycle(subprotocol=False)
    lc.handle(E.AUTHENTICATED)
    lc.handle(E.CONNECT_ACCEPTED)
    assert lc.effects == (Effect.ACCEPT_UPGRADE, Effect.JOIN_INITIAL_GROUPS, Effect.FIRE_CONNECTED)
    lc.handle(E.SERVER_CLOSE)
    assert lc.effects == (Effect.SEND_CLOSE,)
    assert lc.handle(E.TRANSPORT_LOST) is State.CLOSED


def test_illegal_transitions_raise_and_keep_the_state():
    lc = Lifecycle(subprotocol=True)
    with pytest.raises(IllegalTransition):
        lc.handle(E.CONNECT_ACCEPTED)
    assert lc.state is State.HANDSHAKING
    lc.handle(E.AUTHENTICATED)
    lc.handle(E.CONNECT_ACCEPTED)
    with pytest.raises(IllegalTransition):
        lc.handle(E.RECOVERED)  # not reliable
    lc.handle(E.TRANSPORT_LOST)
    for event in E:
        assert not lc.can_handle(event)
        with pytest.raises(IllegalTransition):
            lc.handle(event)
    with pytest.raises(ValueError):
        Lifecycle(subprotocol=False, reliable=True)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KINDS), st.lists(st.sampled_from(list(E)), max_size=30))
def test_random_event_sequences_keep_the_invariants(kind, events):
    subprotocol, reliable = kind
    lc = Lifecycle(subprotocol=subprotocol, reliable=reliable)
    all_effects: list[Effect] = []
    for event in events:
        before = lc.state
        if not lc.can_handle(event):
            with pytest.raises(IllegalTransition):
                lc.handle(event)
            assert lc.state is before
            continue
        lc.handle(event)
        all_effects.extend(lc.effects)
        if not subprotocol:
            assert not SUBPROTOCOL_ONLY_EFFECTS & set(lc.effects)
        if Effect.ACCEPT_UPGRADE in lc.effects and subprotocol:
            # system/connected is queued right after the upgrade, before anything else
            i = lc.effects.index(Effect.ACCEPT_UPGRADE)
            assert lc.effects[i + 1] is Effect.SEND_CONNECTED
        if not reliable:
            assert lc.state is not State.DETACHED
            assert Effect.REPLAY_UNACKED not in lc.effects
    connected = all_effects.count(Effect.FIRE_CONNECTED)
    disconnected = all_effects.count(Effect.FIRE_DISCONNECTED)
    assert connected <= 1 and disconnected <= connected
    if disconnected:
        assert all_effects.index(Effect.FIRE_CONNECTED) < all_effects.index(Effect.FIRE_DISCONNECTED)
    if lc.closed and connected:
        assert disconnected == 1  # a connection that opened and ended fires disconnected once
    assert all_effects.count(Effect.RELEASE_SESSION) <= 1
    assert len(lc.history) <= 64


def test_markdown_names_everything():
    md = render_markdown()
    for name in [*State.__members__, *E.__members__, *Effect.__members__]:
        assert f"`{name}`" in md
    assert md.count("\n| `") >= len(TRANSITIONS)
