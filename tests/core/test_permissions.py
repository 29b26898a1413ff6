"""Group permissions: literal roles and the 2026 wildcard pattern roles."""

from __future__ import annotations

import functools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric.core.permissions import RoleSet, compile_group_pattern, compile_roles, role_grants

ACTIONS = ("joinLeaveGroup", "sendToGroup")


def test_no_roles_grant_nothing():
    for action in ACTIONS:
        assert not role_grants((), action, "g")
        assert not role_grants(["webpubsub.somethingElse"], action, "g")


@pytest.mark.parametrize("action", ACTIONS)
def test_unscoped_role_grants_every_group(action):
    assert role_grants([f"webpubsub.{action}"], action, "any.group-at all")
    other = ACTIONS[1 - ACTIONS.index(action)]
    assert not role_grants([f"webpubsub.{action}"], other, "g")


@pytest.mark.parametrize("action", ACTIONS)
def test_scoped_role_grants_that_group_only(action):
    roles = [f"webpubsub.{action}.room.1"]
    assert role_grants(roles, action, "room.1")
    assert not role_grants(roles, action, "room.2")
    assert not role_grants(roles, action, "room")
    # a literal role is literal: '*' in it is not a wildcard
    assert role_grants([f"webpubsub.{action}.a*"], action, "a*")
    assert not role_grants([f"webpubsub.{action}.a*"], action, "ab")


def test_role_names_are_case_sensitive():
    assert not role_grants(["webpubsub.sendtogroup"], "sendToGroup", "g")
    assert not role_grants(["webpubsub.sendToGroup.G"], "sendToGroup", "g")


@pytest.mark.parametrize(
    "pattern,group,expected",
    [
        # the examples of concept-wildcard-group-roles.md
        ("chat-*", "chat-1", True),
        ("chat-*", "chat-room", True),
        ("chat-*", "chat.1", False),
        ("clientA.*", "clientA.alpha.room1", False),
        ("clientA.**", "clientA.alpha.room1", True),
        ("clientA.rooms.?1", "clientA.rooms.a1", True),
        ("clientA.rooms.?1", "clientA.rooms.1", False),
        (r"literal\*star", "literal*star", True),
        (r"literal\*star", "literalXstar", False),
        # more
        ("*", "", True),
        ("*", "abc", True),
        ("*", "a.b", False),
        ("**", "a.b.c", True),
        ("?", ".", False),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a..c", True),
        ("a.*.c", "a.b.d.c", False),
        ("a.**.c", "a.b.d.c", True),
        ("a.**.c", "a.c", False),
        ("a**c", "ac", True),
        ("*.*", "x.y", True),
        ("*.*", "x.y.z", False),
        ("*a*b", "xxaxxb", True),
        ("*a*b", "xxa.xb", False),
        ("**a*b", "x.y.a-b", True),
        (r"a\\b", "a\\b", True),
        (r"q\?", "q?", True),
        (r"q\?", "qx", False),
        ("Chat-*", "chat-1", False),
    ],
)
def test_pattern_roles(pattern, group, expected):
    assert compile_group_pattern(pattern)(group) is expected
    for action, plural in (("sendToGroup", "sendToGroups"), ("joinLeaveGroup", "joinLeaveGroups")):
        assert role_grants([f"webpubsub.{plural}.{pattern}"], action, group) is expected
    # the singular prefix is literal, never a pattern
    assert role_grants([f"webpubsub.sendToGroup.{pattern}"], "sendToGroup", group) is (pattern == group)


@pytest.mark.parametrize(
    "pattern,reason",
    [
        ("", "empty"),
        ("a\\", "backslash"),
        (r"a\b", "invalid escape"),
        ("******", "at most 5"),
        ("** ** **", "at most 5"),
        ("*" * 3 + "?" + "***", "at most 5"),
        ("x" * 1025, "1024"),
    ],
)
def test_invalid_patterns_are_rejected_and_grant_nothing(pattern, reason):
    with pytest.raises(ValueError, match=reason):
        compile_group_pattern(pattern)
    role = f"webpubsub.sendToGroups.{pattern}"
    role_set = compile_roles((role, "webpubsub.joinLeaveGroup"))
    assert [r for r, _ in role_set.invalid] == [role]
    assert not role_set.grants("sendToGroup", "anything")
    assert role_set.grants("joinLeaveGroup", "anything")


def test_five_stars_is_the_limit():
    assert compile_group_pattern("**.**.*")("a.b.c.d.e")
    assert compile_group_pattern("*-*-*-*-*")("a-b-c-d-e")


def test_mixed_literal_and_pattern_roles():
    roles = compile_roles(("webpubsub.joinLeaveGroup.lobby", "webpubsub.joinLeaveGroups.team.*", "webpubsub.sendToGroups.team.**"))
    assert roles.grants("joinLeaveGroup", "lobby")
    assert roles.grants("joinLeaveGroup", "team.red")
    assert not roles.grants("joinLeaveGroup", "team.red.x")
    assert roles.grants("sendToGroup", "team.red.x")
    assert not roles.grants("sendToGroup", "lobby")
    assert role_grants(roles, "sendToGroup", "team.a")  # a RoleSet is accepted as is


def test_unknown_action():
    with pytest.raises(ValueError, match="unknown permission"):
        role_grants(["webpubsub.sendToGroup"], "send", "g")


def test_role_sets_are_cached_and_shared():
    assert compile_roles(("a", "b")) is compile_roles(("a", "b"))
    assert isinstance(compile_roles(()), RoleSet)
    assert compile_group_pattern("x.*") is compile_group_pattern("x.*")


def test_pathological_patterns_do_not_backtrack():
    # a backtracking matcher needs ~C(1024, 5) steps here; the NFA is linear in the group
    group = "a" * 1023 + "b"
    assert not compile_group_pattern("*a*a*a*a*a")(group)
    assert compile_group_pattern("*a*a*a*a*b")(group)
    assert not compile_group_pattern("**a**a*c")(group)
    dotted = ".".join(["a"] * 500)
    assert not compile_group_pattern("**a**a*b")(dotted)


def reference_match(pattern: str, group: str) -> bool:
    """Straightforward recursive definition of the documented pattern semantics."""
    tokens: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\":
            tokens.append("L" + pattern[i + 1])
            i += 2
        elif pattern.startswith("**", i):
            tokens.append("**")
            i += 2
        elif pattern[i] in "*?":
            tokens.append(pattern[i])
            i += 1
        else:
            tokens.append("L" + pattern[i])
            i += 1

    @functools.cache
    def m(t: int, g: int) -> bool:
        if t == len(tokens):
            return g == len(group)
        tok = tokens[t]
        if tok == "**":
            return any(m(t + 1, k) for k in range(g, len(group) + 1))
        if tok == "*":
            k = g
            while True:
                if m(t + 1, k):
                    return True
                if k == len(group) or group[k] == ".":
                    return False
                k += 1
        if g == len(group):
            return False
        if tok == "?":
            return group[g] != "." and m(t + 1, g + 1)
        return group[g] == tok[1] and m(t + 1, g + 1)

    return m(0, 0)


_pattern_piece = st.sampled_from(["a", "b", ".", "*", "**", "?", "\\*", "\\?", "\\\\"])


@settings(max_examples=1500, deadline=None)
@given(st.lists(_pattern_piece, min_size=1, max_size=8).map("".join), st.text(alphabet="ab.*?\\", max_size=10))
def test_pattern_matching_agrees_with_the_reference(pattern, group):
    try:
        matches = compile_group_pattern(pattern)
    except ValueError as exc:
        assert "at most 5 '*'" in str(exc)
        return
    assert matches(group) == reference_match(pattern, group)
