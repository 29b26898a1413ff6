"""Permissions: roles (literal and wildcard group patterns) and a connection's live grants.

Rules this module keeps:
- :func:`role_grants` runs on every ``sendToGroup``/``joinGroup``: role sets and wildcard
  patterns are compiled once and cached (bounded LRU caches). Wildcard matching never
  backtracks exponentially: patterns with two or more stars run on a bit-parallel NFA.
- A connection's ``Permissions`` change at once when the service API grants or revokes, and
  are read on every request (decision ``rest.permissions``): revoking one group that a
  broader role still allows denies that group; at most ``MAX_PERMISSION_ENTRIES`` entries.
- Sans-IO: no trio, no clock.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping

import attrs

# --------------------------------------------------------------------------------------------
# Permissions: literal roles and wildcard group patterns

_ACTIONS = {"joinLeaveGroup": "webpubsub.joinLeaveGroups.", "sendToGroup": "webpubsub.sendToGroups."}
MAX_PATTERN_CHARS = 1024
MAX_PATTERN_STARS = 5

_LIT, _ONE, _STAR, _DSTAR = range(4)


def _tokenize_pattern(pattern: str) -> list[tuple[int, str]]:
    if not pattern:
        raise ValueError("a group pattern must not be empty")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"a group pattern is at most {MAX_PATTERN_CHARS} characters")
    tokens: list[tuple[int, str]] = []
    stars = 0
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise ValueError("a group pattern must not end with a lone backslash")
            escaped = pattern[i + 1]
            if escaped not in "\\*?":
                raise ValueError(f"invalid escape '\\{escaped}' (only \\\\, \\* and \\? are allowed)")
            tokens.append((_LIT, escaped))
            i += 2
        elif c == "*":
            if i + 1 < n and pattern[i + 1] == "*":
                tokens.append((_DSTAR, ""))
                stars += 2
                i += 2
            else:
                tokens.append((_STAR, ""))
                stars += 1
                i += 1
        elif c == "?":
            tokens.append((_ONE, ""))
            i += 1
        else:
            tokens.append((_LIT, c))
            i += 1
    if stars > MAX_PATTERN_STARS:
        raise ValueError(f"a group pattern has at most {MAX_PATTERN_STARS} '*' characters ('**' counts two)")
    return tokens


def _regex_matcher(tokens: list[tuple[int, str]]) -> Callable[[str], bool]:
    parts = []
    for kind, char in tokens:
        if kind == _LIT:
            parts.append(re.escape(char))
        elif kind == _ONE:
            parts.append("[^.]")
        elif kind == _STAR:
            parts.append("[^.]*")
        else:
            parts.append(".*")
    compiled = re.compile("".join(parts), re.DOTALL)
    fullmatch = compiled.fullmatch
    return lambda group: fullmatch(group) is not None


def _nfa_matcher(tokens: list[tuple[int, str]]) -> Callable[[str], bool]:
    """Bit-parallel NFA: bit i set = "the first i tokens are matched". Linear in the group."""
    lit: dict[str, int] = {}
    one = star = dstar = 0
    for i, (kind, char) in enumerate(tokens):
        bit = 1 << i
        if kind == _LIT:
            lit[char] = lit.get(char, 0) | bit
        elif kind == _ONE:
            one |= bit
        elif kind == _STAR:
            star |= bit
        else:
            dstar |= bit
    anystar = star | dstar
    accept = 1 << len(tokens)
    dot_mask = lit.get(".", 0)

    def closure(state: int) -> int:
        while True:  # a star may match nothing; at most five stars, so at most five rounds
            grown = state | ((state & anystar) << 1)
            if grown == state:
                return state
            state = grown

    start = closure(1)

    def match(group: str) -> bool:
        state = start
        for c in group:
            if c == ".":
                state = closure(((state & dot_mask) << 1) | (state & dstar))
            else:
                state = closure(((state & (lit.get(c, 0) | one)) << 1) | (state & anystar))
            if not state:
                return False
        return bool(state & accept)

    return match


@functools.lru_cache(maxsize=1024)
def compile_group_pattern(pattern: str) -> Callable[[str], bool]:
    """Compile a wildcard group pattern to a predicate. Raises ValueError when invalid.

    ``?`` one character except ``.``; ``*`` zero or more characters except ``.``; ``**`` zero
    or more of any character; ``\\`` escapes ``\\``, ``*`` and ``?``; at most five ``*``;
    case-sensitive. Cached.
    """
    tokens = _tokenize_pattern(pattern)
    if all(kind == _LIT for kind, _ in tokens):
        literal = "".join(char for _, char in tokens)
        return lambda group: group == literal
    if sum(kind in (_STAR, _DSTAR) for kind, _ in tokens) <= 1:
        return _regex_matcher(tokens)  # at most one star: re cannot backtrack badly
    return _nfa_matcher(tokens)


@attrs.frozen(eq=False)
class RoleSet:
    """A precompiled set of roles; ``grants(action, group)`` is a set lookup plus patterns.

    Invalid pattern roles are kept in ``invalid`` (with the reason) and grant nothing.
    """

    roles: tuple[str, ...]
    _literal: frozenset[str] = attrs.field(alias="literal")
    _patterns: Mapping[str, tuple[Callable[[str], bool], ...]] = attrs.field(alias="patterns")
    invalid: tuple[tuple[str, str], ...] = ()

    def grants(self, action: str, group: str) -> bool:
        if action not in _ACTIONS:
            raise ValueError(f"unknown permission {action!r}; expected joinLeaveGroup or sendToGroup")
        literal = self._literal
        prefix = "webpubsub." + action
        if prefix in literal or f"{prefix}.{group}" in literal:
            return True
        for matches in self._patterns[action]:
            if matches(group):
                return True
        return False


@functools.lru_cache(maxsize=4096)
def compile_roles(roles: tuple[str, ...]) -> RoleSet:
    """Precompile a role tuple (cached: connections with the same roles share one RoleSet)."""
    patterns: dict[str, list[Callable[[str], bool]]] = {action: [] for action in _ACTIONS}
    invalid: list[tuple[str, str]] = []
    for role in roles:
        for action, prefix in _ACTIONS.items():
            if role.startswith(prefix):
                try:
                    patterns[action].append(compile_group_pattern(role[len(prefix):]))
                except ValueError as exc:
                    invalid.append((role, str(exc)))
    return RoleSet(
        roles=roles,
        literal=frozenset(roles),
        patterns={action: tuple(found) for action, found in patterns.items()},
        invalid=tuple(invalid),
    )


def role_grants(roles: Iterable[str] | RoleSet, action: str, group: str) -> bool:
    """True if ``roles`` allow ``action`` (``joinLeaveGroup`` or ``sendToGroup``) on ``group``.

    Granted by ``webpubsub.<action>`` (any group), ``webpubsub.<action>.<group>`` (that group)
    or a pattern role ``webpubsub.joinLeaveGroups.<pattern>`` /
    ``webpubsub.sendToGroups.<pattern>`` matching the group. Pass a :class:`RoleSet` (from
    :func:`compile_roles`) to skip even the cache lookup.
    """
    role_set = roles if isinstance(roles, RoleSet) else compile_roles(tuple(roles))
    return role_set.grants(action, group)


# --------------------------------------------------------------------------------------------
# A connection's live permissions

MAX_PERMISSION_ENTRIES = 1000


class TooManyPermissions(ValueError):
    """A grant or revoke would hold more than ``MAX_PERMISSION_ENTRIES`` entries."""


class Permissions:
    """A connection's roles (from its token, the connect handler, service-API grants) and
    the (action, group) pairs the service API revoked. ``may`` is read on every request."""

    __slots__ = ("_roles", "denied", "_compiled")

    def __init__(self, roles: Iterable[str] = ()) -> None:
        self._roles: set[str] = set(roles)
        #: (action, group) pairs revoked although a broader role allows them.
        self.denied: set[tuple[str, str]] | None = None
        #: The roles compiled (shared through ``compile_roles``' cache), made on the first
        #: ``may`` after a change: a request costs a lookup, not a tuple and a hash of it.
        self._compiled: RoleSet | None = None

    @property
    def roles(self) -> set[str]:
        """The roles. Change them through ``grant``/``revoke`` or by assigning a new set
        (either resets the compiled form ``may`` reads); never mutate the set in place."""
        return self._roles

    @roles.setter
    def roles(self, value: Iterable[str]) -> None:
        self._roles = set(value)
        self._compiled = None

    def may(self, action: str, group: str) -> bool:
        """Whether ``joinLeaveGroup``/``sendToGroup`` on ``group`` is allowed now."""
        denied = self.denied
        if denied and (action, group) in denied:
            return False
        compiled = self._compiled
        if compiled is None:
            compiled = self._compiled = compile_roles(tuple(sorted(self._roles)))
        return compiled.grants(action, group)

    def _check_room(self) -> None:
        if len(self.roles) + len(self.denied or ()) >= MAX_PERMISSION_ENTRIES:
            raise TooManyPermissions(f"already {MAX_PERMISSION_ENTRIES} permission entries")

    def grant(self, permission: str, target: str | None) -> None:
        """Allow ``permission`` on ``target`` (a group), or on every group."""
        role = f"webpubsub.{permission}"
        denied = self.denied
        self._compiled = None
        if target is None:
            self._roles.add(role)
            if denied:
                denied.difference_update([d for d in denied if d[0] == permission])
            return
        if denied:
            denied.discard((permission, target))
        scoped = f"{role}.{target}"
        if scoped not in self._roles:
            self._check_room()
            self._roles.add(scoped)

    def revoke(self, permission: str, target: str | None) -> None:
        """Take ``permission`` away on ``target``, or on every group (scoped and pattern roles
        included). Revoking one group that a broader role still allows denies that group."""
        role = f"webpubsub.{permission}"
        roles = self._roles
        denied = self.denied
        self._compiled = None
        if target is None:
            scoped, patterns = role + ".", f"webpubsub.{permission}s."
            for r in [r for r in roles if r == role or r.startswith(scoped) or r.startswith(patterns)]:
                roles.discard(r)
            if denied:
                denied.difference_update([d for d in denied if d[0] == permission])
            return
        roles.discard(f"{role}.{target}")
        if role_grants(roles, permission, target) and (permission, target) not in (denied or ()):
            self._check_room()
            if denied is None:
                denied = self.denied = set()
            denied.add((permission, target))

    def has(self, permission: str, target: str | None) -> bool:
        """With a target: ``may``. Without: the unscoped role, and no group revoked."""
        if target is None:
            return f"webpubsub.{permission}" in self.roles and not any(
                d[0] == permission for d in (self.denied or ()))
        return self.may(permission, target)
